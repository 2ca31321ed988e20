//! The null sink: a minimal MQTT server that acknowledges everything and keeps nothing.
//!
//! It answers CONNECT with CONNACK, SUBSCRIBE with SUBACK, PUBLISH with PUBACK/PUBREC,
//! PUBREL with PUBCOMP and PINGREQ with PINGRESP, and discards messages, so a `pub` run
//! against it measures the loadgen alone. It counts PUBLISH packets and prints the rate.
//!
//! With `--tls` (and `--ca` for client certificates) and `--ws` it serves the transports the
//! clients speak, so a run against it shows what TLS or WebSocket costs the loadgen itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::net::TcpStream;
use ringmq_io::{bind_tcp, spawn_shards, ShardConfig};
use ringmq_proto::mqtt::{
    encode_packet, AckProperties, ConnAck, Packet, ProtocolVersion, PubRespKind, ReasonCode,
    SubAck, UnsubAck,
};
use rustls::ServerConfig;

use crate::cli::SinkArgs;
use crate::client::{append_pub_resp, ClientError, ReadBuffer, READ_CHUNK_BYTES};
use crate::report::thousands;
use crate::run::{raise_file_limit, restrict_cpus};
use crate::transport::Connection;

/// The transport the sink serves.
#[derive(Clone)]
struct Serving {
    tls: Option<Arc<ServerConfig>>,
    ws: bool,
}

/// Pending connections per listener.
const BACKLOG: i32 = 4096;

/// Runs the sink until `--duration` elapses (or forever).
pub fn run(args: &SinkArgs) -> anyhow::Result<i32> {
    restrict_cpus(&args.cpus)?;
    raise_file_limit();
    let address = SocketAddr::new(args.host, args.port);
    let tls = match (args.tls, &args.cert, &args.key) {
        (true, Some(cert), Some(key)) => {
            Some(crate::tls::server_config(cert, key, args.ca.as_deref())?)
        }
        (true, _, _) => anyhow::bail!("sink --tls needs --cert and --key"),
        (false, _, _) => None,
    };
    let serving = Serving { tls, ws: args.ws };
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let config = ShardConfig {
        shard_count: args.threads,
        pin_cores: true,
        ring_entries: 4096,
        thread_name_prefix: "sink".to_owned(),
    };
    let thread_received = Arc::clone(&received);
    let thread_stop = Arc::clone(&stop);
    let thread_serving = serving.clone();
    let handles = spawn_shards(&config, move |_context| {
        let received = Arc::clone(&thread_received);
        let stop = Arc::clone(&thread_stop);
        let serving = thread_serving.clone();
        async move { serve(address, received, stop, serving).await }
    })?;
    let transport = match (serving.tls.is_some(), serving.ws) {
        (false, false) => "MQTT",
        (true, false) => "MQTT over TLS",
        (false, true) => "MQTT over WebSocket",
        (true, true) => "MQTT over WebSocket over TLS",
    };
    eprintln!("ringmq-loadgen sink: {transport} on {address}");
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = (Instant::now(), received.load(Ordering::Relaxed));
        if !args.quiet {
            eprintln!(
                "[{:>6.1}s] sink received {:>12}/s (total {})",
                started.elapsed().as_secs_f64(),
                thousands((now.1 - last.1) as f64 / now.0.duration_since(last.0).as_secs_f64()),
                thousands(now.1 as f64)
            );
        }
        last = now;
        if handles.iter().any(|handle| handle.is_finished()) {
            anyhow::bail!("a sink thread stopped (could not listen on {address}?)");
        }
        if args
            .duration
            .is_some_and(|seconds| started.elapsed().as_secs_f64() >= seconds)
        {
            stop.store(true, Ordering::Relaxed);
            // Threads block in accept; the process exit closes everything.
            return Ok(0);
        }
    }
}

async fn serve(
    address: SocketAddr,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    serving: Serving,
) {
    let listener = match bind_tcp(address, true, BACKLOG) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("ringmq-loadgen sink: {error}");
            return;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(connection(stream, Arc::clone(&received), serving.clone()));
            }
            Err(error) => {
                eprintln!("ringmq-loadgen sink: accept: {error}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, received: Arc<AtomicU64>, serving: Serving) {
    let Ok(mut stream) = Connection::server(stream, serving.tls.as_ref(), serving.ws).await else {
        return;
    };
    let mut reader = ReadBuffer::with_capacity(READ_CHUNK_BYTES);
    let mut out = BytesMut::with_capacity(4096);
    let mut version = ProtocolVersion::V311;
    loop {
        match reader.fill_from(&mut stream.read).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        match answer(&mut reader, &mut version, &mut out) {
            Ok((count, open)) => {
                if count > 0 {
                    received.fetch_add(count, Ordering::Relaxed);
                }
                if !out.is_empty() && stream.write.write_all(&mut out).await.is_err() {
                    return;
                }
                if !open {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Answers every complete packet; returns (PUBLISH count, whether the connection stays open).
fn answer(
    reader: &mut ReadBuffer,
    version: &mut ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(u64, bool), ClientError> {
    let mut count = 0;
    while let Some(frame) = reader.next_frame()? {
        let body = reader.bytes(frame.body.clone());
        let packet_id = match body {
            [high, low, ..] => u16::from_be_bytes([*high, *low]),
            _ => 0,
        };
        match frame.first_byte >> 4 {
            3 => {
                count += 1;
                let qos = (frame.first_byte >> 1) & 0b11;
                let topic_len = usize::from(packet_id);
                let id = match body.get(2 + topic_len..4 + topic_len) {
                    Some([high, low]) => u16::from_be_bytes([*high, *low]),
                    _ => 0,
                };
                match qos {
                    1 => append_pub_resp(PubRespKind::PubAck, id, *version, out),
                    2 => append_pub_resp(PubRespKind::PubRec, id, *version, out),
                    _ => {}
                }
            }
            6 => append_pub_resp(PubRespKind::PubComp, packet_id, *version, out),
            12 => out.extend_from_slice(&[0xd0, 0x00]),
            14 => return Ok((count, false)),
            1 | 8 | 10 => {
                let reply = match reader.decode(&frame, *version)? {
                    Packet::Connect(connect) => {
                        *version = connect.version;
                        Packet::ConnAck(ConnAck::default())
                    }
                    Packet::Subscribe(subscribe) => Packet::SubAck(SubAck {
                        packet_id: subscribe.packet_id,
                        reasons: subscribe
                            .filters
                            .iter()
                            .map(|filter| ReasonCode(filter.options.qos as u8))
                            .collect(),
                        properties: AckProperties::default(),
                    }),
                    Packet::Unsubscribe(unsubscribe) => Packet::UnsubAck(UnsubAck {
                        packet_id: unsubscribe.packet_id,
                        reasons: if version.is_v5() {
                            vec![ReasonCode::SUCCESS; unsubscribe.filters.len()]
                        } else {
                            Vec::new()
                        },
                        properties: AckProperties::default(),
                    }),
                    _ => continue,
                };
                encode_packet(&reply, *version, out)
                    .map_err(|error| ClientError::Protocol(error.to_string()))?;
            }
            _ => {}
        }
    }
    Ok((count, true))
}
