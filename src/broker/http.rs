//! The HTTP listener on the shards. In this issue it answers `GET /healthz`; REST publish,
//! streams and the management API build on the same loop.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use ringmq_http::{parse_head, BodyDecoder, BodyEvent, Limits, Method, RequestHead, Response};
use ringmq_io::monoio;

/// A request head must arrive within this time (slowloris).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves one HTTP/1.1 connection (keep-alive and pipelining) until it closes.
pub async fn serve(mut stream: TcpStream) {
    let limits = Limits::default();
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::with_capacity(1024);
    loop {
        // Read until a whole head is buffered, within the deadline.
        let started = Instant::now();
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
            let limit = if buf.is_empty() {
                IDLE_TIMEOUT
            } else {
                HEAD_TIMEOUT
            };
            let Some(left) = limit.checked_sub(started.elapsed()) else {
                return;
            };
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            let partial = !buf.is_empty();
            match monoio::time::timeout(left, ringmq_io::read_append(&mut stream, buf)).await {
                Err(_) => {
                    if partial {
                        Response::text(408, "request head timeout\n").encode(false, &mut out);
                        let _ = stream.write_all(out.split()).await;
                    }
                    return;
                }
                Ok((Ok(0), _)) | Ok((Err(_), _)) => return,
                Ok((Ok(_), back)) => buf = back,
            }
        };
        if head.expect_continue {
            out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        // Bodies are read and discarded here: no route of this issue takes one.
        if head.has_body() {
            let mut decoder = match BodyDecoder::for_head(&head, &limits) {
                Ok(decoder) => decoder,
                Err(error) => {
                    Response::from_error(&error).encode(false, &mut out);
                    let _ = stream.write_all(out.split()).await;
                    return;
                }
            };
            loop {
                match decoder.decode(&mut buf) {
                    Ok(BodyEvent::Done) => break,
                    Ok(BodyEvent::NeedMore) => {
                        if !out.is_empty() {
                            let (result, _) = stream.write_all(out.split()).await;
                            if result.is_err() {
                                return;
                            }
                        }
                        buf.reserve(4096);
                        match monoio::time::timeout(
                            HEAD_TIMEOUT,
                            ringmq_io::read_append(&mut stream, buf),
                        )
                        .await
                        {
                            Err(_) | Ok((Ok(0), _)) | Ok((Err(_), _)) => return,
                            Ok((Ok(_), back)) => buf = back,
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        Response::from_error(&error).encode(false, &mut out);
                        let _ = stream.write_all(out.split()).await;
                        return;
                    }
                }
            }
        }
        let keep_alive = head.keep_alive;
        route(&head).encode(keep_alive, &mut out);
        // Pipelined requests already buffered are answered in the same write.
        if !keep_alive || !matches!(parse_head(&buf, &limits), Ok(Some(_))) {
            let (result, _) = stream.write_all(out.split()).await;
            if result.is_err() || !keep_alive {
                return;
            }
        }
    }
}

fn route(head: &RequestHead) -> Response {
    match (&head.method, head.path.as_str()) {
        (Method::Get | Method::Head, "/healthz") => Response::text(200, "ok\n"),
        (_, "/healthz") => {
            Response::text(405, "method not allowed\n").with_header("Allow", "GET, HEAD")
        }
        _ => Response::json(
            404,
            &br#"{"error":"not_found","detail":"no such route"}"#[..],
        ),
    }
}
