//! A minimal HTTP/1.1 server on ringmq's runtime and parser: the ceiling for REST publish.
//!
//! One monoio shard (`ringmq_io::spawn_shards`, so the same io_uring/epoll driver selection
//! and `RINGMQ_DRIVER` override as the broker), keep-alive and pipelining, the request head
//! parsed with `ringmq_http::parse_head` and the body read with `BodyDecoder` — then every
//! request is answered `202` with a small JSON body. No authentication, no JSON parsing, no
//! routing, no rate limiting: what is left is the cost of the runtime and the HTTP framing,
//! which `scripts/rest-bench.sh` compares `POST /v1/publish` against.
//!
//! ```text
//! cargo run --release --example minimal_http -- --listen 127.0.0.1:8080
//! ```

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use ringmq_http::{parse_head, BodyDecoder, BodyEvent, Limits, Response};
use ringmq_io::monoio;

/// What `POST /v1/publish` answers at QoS 0, so both servers write the same amount.
const ACCEPTED: &[u8] = br#"{"status":"accepted","topic":"bench/rest","qos":0}"#;

// The broker binary's allocator, so allocation costs compare like for like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let listen = parse_args()?;
    // One pinned shard, as `ringmq serve --shards 1`: under `taskset -c N` the shard pins
    // itself to the first allowed core, N.
    let config = ringmq_io::ShardConfig {
        shard_count: 1,
        ..ringmq_io::ShardConfig::default()
    };
    let handles = ringmq_io::spawn_shards(&config, move |context| async move {
        eprintln!(
            "minimal_http listening on {listen} (driver {}, core {:?})",
            context.driver, context.core
        );
        // Backlog as the broker's default listener config, reuse_port as the broker.
        let listener = match ringmq_io::bind_tcp(listen, true, 1024) {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("cannot listen on {listen}: {error}");
                return;
            }
        };
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = ringmq_io::tune_accepted(&stream);
                    monoio::spawn(serve(stream));
                }
                Err(error) => eprintln!("accept: {error}"),
            }
        }
    })?;
    for handle in handles {
        let _ = handle.join();
    }
    Ok(())
}

fn parse_args() -> anyhow::Result<SocketAddr> {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = "127.0.0.1:8080".parse()?;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--listen needs an address"))?;
                listen = value.parse()?;
            }
            "-h" | "--help" => {
                println!("usage: minimal_http [--listen ADDR] (default 127.0.0.1:8080)");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    Ok(listen)
}

/// Serves one connection until it closes; the read/parse/write loop mirrors
/// `src/broker/http.rs` without its timeouts, routes and streams.
async fn serve(mut stream: TcpStream) {
    let limits = Limits::default();
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::with_capacity(1024);
    loop {
        let head = loop {
            match parse_head(&buf, &limits) {
                Ok(Some((head, used))) => {
                    buf.advance(used);
                    break head;
                }
                Ok(None) => {}
                Err(error) => {
                    Response::from_error(&error).encode(false, &mut out);
                    let _ = stream.write_all(out.split()).await;
                    return;
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            // read_append, not monoio's BytesMut read: that one writes at the buffer start and
            // would overwrite a partially received head.
            match ringmq_io::read_append(&mut stream, buf).await {
                (Ok(0), _) | (Err(_), _) => return,
                (Ok(_), back) => buf = back,
            }
        };
        if head.has_body() {
            let mut decoder = match BodyDecoder::for_head(&head, &limits) {
                Ok(decoder) => decoder,
                Err(error) => {
                    Response::from_error(&error).encode(false, &mut out);
                    let _ = stream.write_all(out.split()).await;
                    return;
                }
            };
            // The body is consumed and dropped: the broker copies it into one buffer before
            // parsing, this server only frames it.
            loop {
                match decoder.decode(&mut buf) {
                    Ok(BodyEvent::Done) => break,
                    Ok(BodyEvent::Data(_)) => {}
                    Ok(BodyEvent::NeedMore) => {
                        buf.reserve(4096);
                        match ringmq_io::read_append(&mut stream, buf).await {
                            (Ok(0), _) | (Err(_), _) => return,
                            (Ok(_), back) => buf = back,
                        }
                    }
                    Err(error) => {
                        Response::from_error(&error).encode(false, &mut out);
                        let _ = stream.write_all(out.split()).await;
                        return;
                    }
                }
            }
        }
        let keep_alive = head.keep_alive;
        Response::json(202, ACCEPTED).encode(keep_alive, &mut out);
        // Pipelined requests already buffered are answered in the same write, as the broker does.
        if !keep_alive || !matches!(parse_head(&buf, &limits), Ok(Some(_))) {
            let (result, _) = stream.write_all(out.split()).await;
            if result.is_err() || !keep_alive {
                return;
            }
        }
    }
}
