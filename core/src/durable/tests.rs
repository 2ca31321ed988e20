//! The log's records: round trips, replay order, hostile bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use ringmq_proto::message::{Message, Origin};
use ringmq_proto::mqtt::{PublishProperties, QoS, RetainHandling, Str, SubscriptionOptions, Will};
use ringmq_proto::session::{InFlight, Queued, SessionState, Stage, Subscription};

use super::*;

/// A clock based now, at a fixed unix time.
pub(super) fn clock() -> Clock {
    Clock {
        base: (Instant::now(), 1_700_000_000_000),
    }
}

fn message(topic: &str, payload: &'static [u8], clock: &Clock) -> SharedMessage {
    Arc::new(Message {
        topic: Str::from(topic),
        payload: Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            response_topic: Some(Str::from("reply/x")),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![(Str::from("k"), Str::from("v"))],
            content_type: Some(Str::from("application/json")),
            ..PublishProperties::default()
        },
        // Whole milliseconds: what a record keeps.
        expires_at: Some(clock.instant(1_700_000_060_000)),
        publisher: Str::from("pub-1"),
        origin: Origin(77),
        namespace: Some(Str::from("ns")),
        device: None,
    })
}

fn queued(m: SharedMessage) -> Queued {
    Queued {
        message: m,
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![3, 9],
    }
}

fn session(clock: &Clock, version: u64) -> SessionRecord {
    let mut state = SessionState {
        expiry_interval_secs: 3600,
        next_packet_id: 41,
        owner: 0xABCD,
        ..SessionState::default()
    };
    state.subscriptions.insert(
        Str::from("\0o2\0a/+"),
        Subscription {
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
            identifier: Some(12),
        },
    );
    state.inflight.push_back(InFlight {
        packet_id: 40,
        item: queued(message("a/1", b"in flight", clock)),
        stage: Stage::AwaitPubRec,
    });
    state
        .queue
        .push_back(queued(message("a/2", b"queued", clock)));
    state.incoming_qos2.push(7);
    SessionRecord {
        client_id: Str::from("\0o2\0device-1"),
        version,
        org: 2,
        offline_since_ms: 1_700_000_001_000,
        will: Some((
            Will {
                topic: Str::from("a/will"),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: true,
                delay_interval: Some(30),
                properties: PublishProperties::default(),
            },
            1_700_000_031_000,
        )),
        state,
    }
}

fn round_trip(record: &Record, clock: &Clock) -> Record {
    let mut out = Vec::new();
    record.encode(clock, &mut out);
    Record::decode(&out, clock).expect("decodes")
}

#[test]
fn a_session_comes_back_whole() {
    let clock = clock();
    let original = session(&clock, 5);
    let Record::Session(back) = round_trip(&Record::Session(Box::new(original.clone())), &clock)
    else {
        panic!("not a session");
    };
    assert_eq!(back.client_id, original.client_id);
    assert_eq!((back.version, back.org), (5, 2));
    assert_eq!(back.offline_since_ms, original.offline_since_ms);
    assert_eq!(back.state.owner, 0xABCD);
    assert_eq!(back.state.next_packet_id, 41);
    assert_eq!(back.state.expiry_interval_secs, 3600);
    assert_eq!(back.state.subscriptions, original.state.subscriptions);
    let flight = back.state.inflight.iter().next().expect("in flight");
    assert_eq!((flight.packet_id, flight.stage), (40, Stage::AwaitPubRec));
    assert_eq!(&flight.item.message.payload[..], b"in flight");
    assert_eq!(flight.item.subscription_ids, vec![3, 9]);
    let waiting = back.state.queue.front().expect("queued");
    let before = original.state.queue.front().expect("queued");
    assert_eq!(waiting.message.topic, before.message.topic);
    assert_eq!(waiting.message.properties, before.message.properties);
    assert_eq!(waiting.message.expires_at, before.message.expires_at);
    assert_eq!(waiting.message.namespace, before.message.namespace);
    assert_eq!(
        waiting.message.origin,
        Origin::BROKER,
        "no connection of this run"
    );
    assert_eq!(&back.state.incoming_qos2[..], &[7]);
    let (will, due) = back.will.expect("will");
    assert_eq!((will.topic.as_str(), due), ("a/will", 1_700_000_031_000));
    assert_eq!(will.delay_interval, Some(30));
}

#[test]
fn retained_set_and_clear_round_trip() {
    let clock = clock();
    let set = Record::Retained {
        topic: Str::from("\0o2\0a/1"),
        message: Some(message("\0o2\0a/1", b"v", &clock)),
    };
    let Record::Retained { topic, message } = round_trip(&set, &clock) else {
        panic!("not retained");
    };
    assert_eq!(topic.as_str(), "\0o2\0a/1");
    assert_eq!(&message.expect("set").payload[..], b"v");
    let clear = Record::Retained {
        topic: Str::from("t"),
        message: None,
    };
    assert!(matches!(
        round_trip(&clear, &clock),
        Record::Retained { message: None, .. }
    ));
}

#[test]
fn replay_keeps_the_newest_of_each_key() {
    let clock = clock();
    let mut replay = Replay::default();
    let id = Str::from("\0o2\0device-1");
    // A session moved: its newer checkpoint is in another log, read first.
    replay.apply(Record::Session(Box::new(session(&clock, 20))));
    let mut old = session(&clock, 10);
    old.state.next_packet_id = 1;
    replay.apply(Record::Session(Box::new(old)));
    // An end older than the state does not remove it.
    replay.apply(Record::SessionEnded {
        client_id: id.clone(),
        version: 15,
    });
    replay.apply(Record::Retained {
        topic: Str::from("t"),
        message: Some(message("t", b"1", &clock)),
    });
    replay.apply(Record::Retained {
        topic: Str::from("t"),
        message: Some(message("t", b"2", &clock)),
    });
    replay.apply(Record::Retained {
        topic: Str::from("gone"),
        message: Some(message("gone", b"x", &clock)),
    });
    replay.apply(Record::Retained {
        topic: Str::from("gone"),
        message: None,
    });
    let recovered = replay.finish();
    assert_eq!(recovered.sessions.len(), 1);
    assert_eq!(recovered.sessions[0].version, 20);
    assert_eq!(recovered.sessions[0].state.next_packet_id, 41);
    assert_eq!(recovered.retained.len(), 1);
    assert_eq!(&recovered.retained[0].1.payload[..], b"2");

    let mut replay = Replay::default();
    replay.apply(Record::Session(Box::new(session(&clock, 20))));
    replay.apply(Record::SessionEnded {
        client_id: id,
        version: 21,
    });
    assert!(replay.finish().sessions.is_empty(), "a newer end wins");
}

/// Regression (found by ringmq-sim with crash restarts): a clean start ends the old session
/// and checkpoints the new one at the same version; the end used to win, and the new session
/// was gone after a restart. At the same version the later record of the log wins.
#[test]
fn at_the_same_version_the_later_record_wins() {
    let clock = clock();
    let id = Str::from("\0o2\0device-1");
    let mut replay = Replay::default();
    replay.apply(Record::SessionEnded {
        client_id: id.clone(),
        version: 20,
    });
    replay.apply(Record::Session(Box::new(session(&clock, 20))));
    assert_eq!(
        replay.finish().sessions.len(),
        1,
        "begun again after its end"
    );
    let mut replay = Replay::default();
    replay.apply(Record::Session(Box::new(session(&clock, 20))));
    replay.apply(Record::SessionEnded {
        client_id: id,
        version: 20,
    });
    assert!(
        replay.finish().sessions.is_empty(),
        "ended after its checkpoint"
    );
}

#[test]
fn clock_round_trips_milliseconds_and_orders_nanoseconds() {
    let clock = clock();
    let at = clock.base.0 + Duration::from_millis(1500);
    assert_eq!(clock.unix_ms(at), 1_700_000_001_500);
    assert_eq!(clock.instant(1_700_000_001_500), at);
    let later = at + Duration::from_nanos(1);
    assert!(clock.unix_nanos(later) > clock.unix_nanos(at));
    let before = clock.instant(1_699_999_999_000);
    assert_eq!(clock.unix_ms(before), 1_699_999_999_000);
}

#[test]
fn a_record_cut_short_is_an_error_never_a_panic() {
    let clock = clock();
    let mut out = Vec::new();
    Record::Session(Box::new(session(&clock, 1))).encode(&clock, &mut out);
    for len in 0..out.len() {
        assert!(Record::decode(&out[..len], &clock).is_err(), "cut at {len}");
    }
}

proptest! {
    /// Bytes that passed a frame's checksum but hold anything at all: an error or a record.
    #[test]
    fn hostile_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let clock = clock();
        let _ = Record::decode(&bytes, &clock);
        let mut kinds = bytes.clone();
        for kind in [0x11u8, 0x12, 0x13] {
            if let Some(first) = kinds.first_mut() {
                *first = kind;
            }
            let _ = Record::decode(&kinds, &clock);
        }
    }
}

/// An idempotency key's first answer comes back whole, and the replay keeps the first of two
/// records for one key (a compaction writes it again later; another org's key is another key).
#[test]
fn idempotent_answers_round_trip_and_the_first_stands() {
    let clock = clock();
    let answer = |org: u32, status: u16, at_ms: u64| IdempotentAnswer {
        org,
        key: Str::from("order-17"),
        fingerprint: [7; 32],
        status,
        body: Bytes::from_static(b"{\"status\":\"queued\"}"),
        at_ms,
    };
    let first = Record::Idempotent(Box::new(answer(3, 200, 1_000)));
    assert_eq!(
        match round_trip(&first, &clock) {
            Record::Idempotent(back) => *back,
            other => panic!("{other:?}"),
        },
        answer(3, 200, 1_000)
    );
    let mut replay = Replay::default();
    replay.apply(Record::Idempotent(Box::new(answer(3, 200, 1_000))));
    replay.apply(Record::Idempotent(Box::new(answer(3, 409, 5_000))));
    replay.apply(Record::Idempotent(Box::new(answer(4, 202, 2_000))));
    let recovered = replay.finish();
    let kept: Vec<(u32, u16)> = recovered
        .idempotent
        .iter()
        .map(|a| (a.org, a.status))
        .collect();
    assert_eq!(kept, [(3, 200), (4, 202)]);
}

/// A cluster envelope's body: a message alone round-trips; any cut or extra byte is refused
/// (the bytes come from the network), and a plain 64-byte message costs what docs/cluster.md
/// says.
#[test]
fn a_message_alone_round_trips_and_hostile_bytes_are_refused() {
    let clock = clock();
    let full = message("fleet/site1/dev-0007/temp", b"payload", &clock);
    let mut bytes = Vec::new();
    encode_message(&full, &clock, &mut bytes);
    let back = decode_message(&bytes, &clock).expect("decodes");
    assert_eq!(back.topic, full.topic);
    assert_eq!(back.payload, full.payload);
    assert_eq!(back.properties, full.properties);
    assert_eq!(back.publisher, full.publisher);
    for cut in 0..bytes.len() {
        assert!(
            decode_message(&bytes[..cut], &clock).is_err(),
            "cut at {cut}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode_message(&longer, &clock).is_err());
    let plain = Arc::new(Message {
        topic: Str::from("fleet/site1/dev-0007/tem"),
        payload: Bytes::from_static(&[7; 64]),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: None,
        publisher: Str::from("device-00007"),
        origin: Origin::BROKER,
        namespace: None,
        device: None,
    });
    let mut plain_bytes = Vec::new();
    encode_message(&plain, &clock, &mut plain_bytes);
    assert_eq!(
        plain_bytes.len(),
        137,
        "24-byte topic, 64-byte payload, 12-byte client id"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_as_a_message(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_message(&bytes, &clock());
    }
}
