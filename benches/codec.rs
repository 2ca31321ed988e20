//! Codec throughput: decode and encode per packet type (`cargo bench --bench codec`).
//!
//! Decoding runs over a buffer of `BATCH` back-to-back packets, as the shard loop sees them
//! after one read; the buffer is rebuilt outside the timed section.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringmq::mqtt::{
    decode_packet, encode_packet, encode_pub_resp, encode_publish, Connect, OutgoingPublish,
    Packet, ProtocolVersion, PubRespKind, Publish, PublishProperties, QoS, ReasonCode, Str, SubAck,
    Subscribe, SubscribeFilter, SubscriptionOptions,
};
use std::time::Duration;

/// Packets per decode iteration.
const BATCH: usize = 1000;

fn samples() -> Vec<(&'static str, Packet)> {
    let publish = |qos: QoS, size: usize| {
        Packet::Publish(Publish {
            qos,
            packet_id: if qos == QoS::AtMostOnce { 0 } else { 7 },
            topic: Str::from("site/42/device/1234/telemetry"),
            payload: Bytes::from(vec![0xab; size]),
            ..Publish::default()
        })
    };
    vec![
        ("publish_qos0_64B", publish(QoS::AtMostOnce, 64)),
        ("publish_qos1_64B", publish(QoS::AtLeastOnce, 64)),
        ("publish_qos0_1KiB", publish(QoS::AtMostOnce, 1024)),
        (
            "puback",
            Packet::PubAck(ringmq::mqtt::PubResp {
                packet_id: 7,
                ..Default::default()
            }),
        ),
        (
            "connect",
            Packet::Connect(Box::new(Connect {
                version: ProtocolVersion::V5,
                clean_start: true,
                keep_alive: 60,
                client_id: Str::from("device-000123"),
                username: Some(Str::from("user@org")),
                password: Some(Bytes::from_static(b"secret")),
                ..Connect::default()
            })),
        ),
        (
            "subscribe",
            Packet::Subscribe(Subscribe {
                packet_id: 3,
                filters: vec![SubscribeFilter {
                    filter: Str::from("site/+/device/#"),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..SubscriptionOptions::default()
                    },
                }],
                subscription_identifier: None,
                user_properties: Vec::new(),
            }),
        ),
        (
            "suback",
            Packet::SubAck(SubAck {
                packet_id: 3,
                reasons: vec![ReasonCode(1)],
                ..SubAck::default()
            }),
        ),
        ("pingreq", Packet::PingReq),
    ]
}

fn decode(c: &mut Criterion) {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut group = c.benchmark_group(format!("decode_v{}", version.level()));
        group.throughput(Throughput::Elements(BATCH as u64));
        for (name, packet) in samples() {
            let mut one = BytesMut::new();
            encode_packet(&packet, version, &mut one).expect("sample encodes");
            let mut many = BytesMut::with_capacity(one.len() * BATCH);
            for _ in 0..BATCH {
                many.extend_from_slice(&one);
            }
            let many = many.freeze();
            group.bench_function(name, |b| {
                b.iter_batched(
                    || BytesMut::from(&many[..]),
                    |mut buf| {
                        let mut count = 0;
                        while let Ok(Some(packet)) = decode_packet(&mut buf, version, 1 << 20) {
                            std::hint::black_box(&packet);
                            count += 1;
                        }
                        assert_eq!(count, BATCH);
                    },
                    BatchSize::LargeInput,
                )
            });
        }
        group.finish();
    }
}

fn encode(c: &mut Criterion) {
    let version = ProtocolVersion::V311;
    let mut group = c.benchmark_group("encode_v4");
    group.throughput(Throughput::Elements(1));
    let mut buf = BytesMut::with_capacity(1 << 20);
    for (name, packet) in samples() {
        group.bench_function(name, |b| {
            b.iter(|| {
                if buf.len() > (1 << 19) {
                    buf.clear();
                }
                encode_packet(std::hint::black_box(&packet), version, &mut buf)
                    .expect("sample encodes");
            })
        });
    }
    // The fan-out path: a borrowed view, no Publish built per subscriber.
    let payload = vec![0xab; 64];
    let properties = PublishProperties::default();
    group.bench_function("encode_publish_view_64B", |b| {
        b.iter(|| {
            if buf.len() > (1 << 19) {
                buf.clear();
            }
            let view = OutgoingPublish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                packet_id: 9,
                topic: "site/42/device/1234/telemetry",
                topic_alias: None,
                subscription_identifiers: &[],
                message_expiry_interval: None,
                properties: &properties,
                payload: &payload,
            };
            encode_publish(std::hint::black_box(&view), version, &mut buf).expect("encodes");
        })
    });
    group.bench_function("encode_pub_resp", |b| {
        b.iter(|| {
            if buf.len() > (1 << 19) {
                buf.clear();
            }
            encode_pub_resp(
                PubRespKind::PubAck,
                9,
                ReasonCode::SUCCESS,
                version,
                &mut buf,
            );
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = decode, encode
}
criterion_main!(benches);
