//! Writes a durable-state fixture for the recovery benchmark (`scripts/recovery-bench.sh`): a
//! complete journal generation under DATA_DIR holding RETAINED retained messages (32 B payloads,
//! topics like `fleet/site7/dev107/state`) and SESSIONS persistent sessions with SUBS
//! subscriptions each, as a broker would have left them.
//!
//! Usage: cargo run --release --example journal_fixture -- DATA_DIR [RETAINED] [SESSIONS] [SUBS]
//! (defaults 1000000, 100000, 10).

use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ringmq_core::durable::{encode_session, frame, Clock, Record, SessionView};
use ringmq_proto::message::{Message, Origin};
use ringmq_proto::mqtt::{PublishProperties, QoS, RetainHandling, Str, SubscriptionOptions};
use ringmq_proto::session::{SessionState, Subscription};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(data_dir) = args.first() else {
        eprintln!("usage: journal_fixture DATA_DIR [RETAINED] [SESSIONS] [SUBS]");
        std::process::exit(2);
    };
    let number = |i: usize, default: usize| {
        args.get(i)
            .map(|a| a.parse::<usize>().expect("a number"))
            .unwrap_or(default)
    };
    let (retained, sessions, subs) = (number(1, 1_000_000), number(2, 100_000), number(3, 10));
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let clock = Clock {
        base: (Instant::now(), now_ms),
    };
    let dir = std::path::Path::new(data_dir).join("journal/gen-00000001");
    std::fs::create_dir_all(&dir)?;
    let mut log = std::io::BufWriter::new(std::fs::File::create(dir.join("shard-0.log"))?);
    let mut out = Vec::new();
    for i in 0..retained {
        let topic = Str::from(format!("fleet/site{}/dev{}/state", i / 1000, i % 1000));
        let message = std::sync::Arc::new(Message {
            topic: topic.clone(),
            payload: Bytes::from(format!("{{\"t\":21.5,\"n\":{i:012}}}")),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at: None,
            publisher: Str::from("fixture"),
            origin: Origin::BROKER,
            namespace: None,
            device: None,
        });
        out.clear();
        frame::append_with(&mut out, |buf| {
            Record::Retained {
                topic,
                message: Some(message),
            }
            .encode(&clock, buf)
        });
        log.write_all(&out)?;
    }
    for s in 0..sessions {
        let mut state = SessionState {
            expiry_interval_secs: 86_400,
            ..SessionState::default()
        };
        for f in 0..subs {
            state.subscriptions.insert(
                Str::from(format!("fleet/site{}/dev{}/cmd/{f}", s % 997, s)),
                Subscription {
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: RetainHandling::SendAtSubscribe,
                    },
                    identifier: None,
                },
            );
        }
        let client_id = Str::from(format!("device-{s:08}"));
        out.clear();
        frame::append_with(&mut out, |buf| {
            encode_session(
                &SessionView {
                    client_id: &client_id,
                    version: 1,
                    org: 0,
                    offline_since_ms: now_ms,
                    will: None,
                    state: &state,
                },
                &clock,
                buf,
            )
        });
        log.write_all(&out)?;
    }
    log.flush()?;
    std::fs::write(dir.join("COMPLETE"), b"")?;
    println!(
        "wrote {retained} retained messages and {sessions} sessions x {subs} subscriptions to {}",
        dir.display()
    );
    Ok(())
}
