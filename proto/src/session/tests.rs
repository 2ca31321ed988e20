//! Session state machine tests with a simulated clock: every rule without a socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::connect::{connack_accepted, negotiate};
use super::*;
use crate::mqtt::{
    decode_packet, Connect, ConnectProperties, PublishProperties, RetainHandling, SubscribeFilter,
    SubscriptionOptions,
};

fn connect_packet(version: ProtocolVersion, client_id: &str, clean: bool) -> Connect {
    Connect {
        version,
        clean_start: clean,
        keep_alive: 10,
        client_id: Str::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn attached(connect: &Connect, rules: &Rules, now: Instant) -> Session {
    let n = negotiate(connect, rules, now, || "assigned".to_owned()).expect("accepted");
    let mut session = Session::new(n.client_id.clone(), n.expiry_interval_secs);
    let ack = connack_accepted(&n, false, rules);
    session.write_packet(&Packet::ConnAck(ack), connect.version);
    session.attach(n.link, false, now, rules);
    session.out.clear();
    session
}

fn drain(session: &mut Session, version: ProtocolVersion) -> Vec<Packet> {
    let mut buf = session.out.split();
    let mut packets = Vec::new();
    while let Some(packet) = decode_packet(&mut buf, version, u32::MAX).expect("valid output") {
        packets.push(packet);
    }
    assert!(buf.is_empty(), "trailing bytes in the outbox");
    packets
}

fn message(topic: &str, qos: QoS, expiry: Option<Instant>) -> SharedMessage {
    Arc::new(Message {
        topic: Str::from(topic),
        payload: Bytes::from_static(b"hello"),
        qos,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: expiry,
        publisher: Str::from("publisher"),
        origin: crate::message::Origin::BROKER,
        namespace: None,
        device: None,
    })
}

fn queued(msg: SharedMessage, qos: QoS) -> Queued {
    Queued {
        message: msg,
        qos,
        retain: false,
        subscription_ids: Vec::new(),
    }
}

fn publish_packet(topic: &str, qos: QoS, packet_id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: Str::from(topic),
        packet_id,
        payload: Bytes::from_static(b"x"),
        properties: PublishProperties::default(),
    })
}

#[test]
fn keep_alive_deadline_is_one_and_a_half_times() {
    let rules = Rules::default();
    let t0 = Instant::now();
    let mut session = attached(
        &connect_packet(ProtocolVersion::V311, "c", true),
        &rules,
        t0,
    );
    assert_eq!(
        session.keep_alive_deadline(),
        Some(t0 + Duration::from_secs(15))
    );
    let mut actions = Vec::new();
    let t1 = t0 + Duration::from_secs(9);
    assert_eq!(
        session.handle(Packet::PingReq, t1, &rules, &mut actions),
        Flow::Continue
    );
    assert_eq!(
        session.keep_alive_deadline(),
        Some(t1 + Duration::from_secs(15))
    );
    assert!(matches!(
        drain(&mut session, ProtocolVersion::V311)[..],
        [Packet::PingResp]
    ));
}

#[test]
fn v5_keep_alive_is_capped_with_server_keep_alive() {
    let rules = Rules {
        keep_alive_max_secs: 60,
        ..Rules::default()
    };
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.keep_alive = 120;
    let n = negotiate(&connect, &rules, Instant::now(), String::new).expect("accepted");
    assert_eq!(n.keep_alive_secs, 60);
    let ack = connack_accepted(&n, false, &rules);
    assert_eq!(ack.properties.server_keep_alive, Some(60));
}

#[test]
fn empty_client_id_rules() {
    let rules = Rules::default();
    let now = Instant::now();
    let v3 = connect_packet(ProtocolVersion::V311, "", false);
    let refusal = negotiate(&v3, &rules, now, || "x".into()).expect_err("refused");
    assert_eq!(
        refusal.reason.to_connack_v3(),
        crate::mqtt::connack_v3::IDENTIFIER_REJECTED
    );
    let v3_clean = connect_packet(ProtocolVersion::V311, "", true);
    assert!(negotiate(&v3_clean, &rules, now, || "x".into()).is_ok());
    let v5 = connect_packet(ProtocolVersion::V5, "", false);
    let n = negotiate(&v5, &rules, now, || "assigned-1".into()).expect("accepted");
    assert!(n.assigned);
    let ack = connack_accepted(&n, false, &rules);
    assert_eq!(
        ack.properties.assigned_client_identifier.as_deref(),
        Some("assigned-1")
    );
}

#[test]
fn qos1_publish_is_acked_and_routed() {
    let rules = Rules::default();
    let now = Instant::now();
    let mut session = attached(
        &connect_packet(ProtocolVersion::V311, "c", true),
        &rules,
        now,
    );
    let mut actions = Vec::new();
    let flow = session.handle(
        publish_packet("a/b", QoS::AtLeastOnce, 7),
        now,
        &rules,
        &mut actions,
    );
    assert_eq!(flow, Flow::Continue);
    assert!(matches!(&actions[..], [Action::Publish(m)] if m.topic.as_str() == "a/b"));
    assert!(
        matches!(&drain(&mut session, ProtocolVersion::V311)[..], [Packet::PubAck(a)] if a.packet_id == 7)
    );
}

#[test]
fn qos2_duplicate_publish_is_not_routed_twice() {
    let rules = Rules::default();
    let now = Instant::now();
    let mut session = attached(&connect_packet(ProtocolVersion::V5, "c", true), &rules, now);
    let mut actions = Vec::new();
    session.handle(
        publish_packet("t", QoS::ExactlyOnce, 3),
        now,
        &rules,
        &mut actions,
    );
    session.handle(
        publish_packet("t", QoS::ExactlyOnce, 3),
        now,
        &rules,
        &mut actions,
    );
    assert_eq!(actions.len(), 1);
    let rel = Packet::PubRel(PubResp {
        packet_id: 3,
        reason: ReasonCode::SUCCESS,
        properties: AckProperties::default(),
    });
    session.handle(rel, now, &rules, &mut actions);
    let out = drain(&mut session, ProtocolVersion::V5);
    assert!(
        matches!(&out[..], [Packet::PubRec(_), Packet::PubRec(_), Packet::PubComp(c)] if c.packet_id == 3)
    );
    // After PUBREL the id is free: the same id is a new message.
    session.handle(
        publish_packet("t", QoS::ExactlyOnce, 3),
        now,
        &rules,
        &mut actions,
    );
    assert_eq!(actions.len(), 2);
}

#[test]
fn qos2_beyond_receive_maximum_disconnects_with_0x93() {
    let rules = Rules {
        inflight_max: 2,
        ..Rules::default()
    };
    let now = Instant::now();
    let mut session = attached(&connect_packet(ProtocolVersion::V5, "c", true), &rules, now);
    let mut actions = Vec::new();
    for id in 1..=2 {
        let flow = session.handle(
            publish_packet("t", QoS::ExactlyOnce, id),
            now,
            &rules,
            &mut actions,
        );
        assert_eq!(flow, Flow::Continue);
    }
    let flow = session.handle(
        publish_packet("t", QoS::ExactlyOnce, 3),
        now,
        &rules,
        &mut actions,
    );
    assert!(
        matches!(flow, Flow::Close(CloseReason::Violation { reason, .. }) if reason == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
    );
}

#[test]
fn outbound_window_respects_client_receive_maximum_and_keeps_order() {
    let rules = Rules::default();
    let now = Instant::now();
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.receive_maximum = Some(2);
    let mut session = attached(&connect, &rules, now);
    for _ in 0..5 {
        session.deliver(
            queued(message("t", QoS::AtLeastOnce, None), QoS::AtLeastOnce),
            now,
            &rules,
        );
    }
    let sent = drain(&mut session, ProtocolVersion::V5);
    assert_eq!(sent.len(), 2);
    assert_eq!(session.state.queue.len(), 3);
    let first_id = match &sent[0] {
        Packet::Publish(p) => p.packet_id,
        other => panic!("unexpected {other:?}"),
    };
    let mut actions = Vec::new();
    let ack = Packet::PubAck(PubResp {
        packet_id: first_id,
        reason: ReasonCode::SUCCESS,
        properties: AckProperties::default(),
    });
    session.handle(ack, now, &rules, &mut actions);
    assert_eq!(drain(&mut session, ProtocolVersion::V5).len(), 1);
    assert_eq!(session.state.inflight.len(), 2);
}

#[test]
fn reconnect_resends_inflight_with_dup_and_pubrel() {
    let rules = Rules::default();
    let now = Instant::now();
    let connect = connect_packet(ProtocolVersion::V311, "c", false);
    let mut session = attached(&connect, &rules, now);
    session.deliver(
        queued(message("a", QoS::AtLeastOnce, None), QoS::AtLeastOnce),
        now,
        &rules,
    );
    session.deliver(
        queued(message("b", QoS::ExactlyOnce, None), QoS::ExactlyOnce),
        now,
        &rules,
    );
    let sent = drain(&mut session, ProtocolVersion::V311);
    let qos2_id = match &sent[1] {
        Packet::Publish(p) => p.packet_id,
        other => panic!("unexpected {other:?}"),
    };
    let mut actions = Vec::new();
    let rec = Packet::PubRec(PubResp {
        packet_id: qos2_id,
        reason: ReasonCode::SUCCESS,
        properties: AckProperties::default(),
    });
    session.handle(rec, now, &rules, &mut actions);
    drain(&mut session, ProtocolVersion::V311);
    assert!(session.detach(now).is_none());
    let n = negotiate(&connect, &rules, now, String::new).expect("accepted");
    session.attach(n.link, true, now, &rules);
    let resent = drain(&mut session, ProtocolVersion::V311);
    assert!(matches!(&resent[0], Packet::Publish(p) if p.dup && p.topic.as_str() == "a"));
    assert!(matches!(&resent[1], Packet::PubRel(r) if r.packet_id == qos2_id));
}

#[test]
fn offline_queue_is_bounded_and_expiry_applies() {
    let rules = Rules {
        queue_messages_max: 2,
        ..Rules::default()
    };
    let t0 = Instant::now();
    let connect = connect_packet(ProtocolVersion::V5, "c", false);
    let mut session = attached(&connect, &rules, t0);
    session.detach(t0);
    let short = message("t", QoS::AtLeastOnce, Some(t0 + Duration::from_secs(1)));
    let long = message("t", QoS::AtLeastOnce, Some(t0 + Duration::from_secs(100)));
    assert_eq!(
        session.deliver(queued(short, QoS::AtLeastOnce), t0, &rules),
        Delivered::Queued
    );
    assert_eq!(
        session.deliver(queued(long, QoS::AtLeastOnce), t0, &rules),
        Delivered::Queued
    );
    let extra = message("t", QoS::AtLeastOnce, None);
    assert_eq!(
        session.deliver(queued(extra, QoS::AtLeastOnce), t0, &rules),
        Delivered::Overflow
    );
    let qos0 = message("t", QoS::AtMostOnce, None);
    assert_eq!(
        session.deliver(queued(qos0, QoS::AtMostOnce), t0, &rules),
        Delivered::Dropped
    );
    let t1 = t0 + Duration::from_secs(10);
    let n = negotiate(&connect, &rules, t1, String::new).expect("accepted");
    session.attach(n.link, true, t1, &rules);
    let out = drain(&mut session, ProtocolVersion::V5);
    assert_eq!(out.len(), 1, "the expired message is dropped");
    match &out[0] {
        Packet::Publish(p) => assert_eq!(p.properties.message_expiry_interval, Some(90)),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn outbound_topic_alias_is_assigned_then_reused() {
    let rules = Rules::default();
    let now = Instant::now();
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.topic_alias_maximum = Some(1);
    let mut session = attached(&connect, &rules, now);
    for _ in 0..2 {
        session.deliver(
            queued(
                message("long/topic", QoS::AtMostOnce, None),
                QoS::AtMostOnce,
            ),
            now,
            &rules,
        );
    }
    session.deliver(
        queued(message("other", QoS::AtMostOnce, None), QoS::AtMostOnce),
        now,
        &rules,
    );
    let mut buf = session.out.split();
    let mut topics = Vec::new();
    while let Some(Packet::Publish(p)) =
        decode_packet(&mut buf, ProtocolVersion::V5, u32::MAX).expect("valid")
    {
        topics.push((p.topic.to_string(), p.properties.topic_alias));
    }
    assert_eq!(
        topics,
        vec![
            ("long/topic".to_owned(), Some(1)),
            (String::new(), Some(1)),
            ("other".to_owned(), None)
        ]
    );
}

#[test]
fn inbound_topic_alias_resolves_and_rejects_unknown() {
    let rules = Rules::default();
    let now = Instant::now();
    let mut session = attached(&connect_packet(ProtocolVersion::V5, "c", true), &rules, now);
    let mut actions = Vec::new();
    let with_alias = |topic: &str, alias: u16| {
        let properties = PublishProperties {
            topic_alias: Some(alias),
            ..PublishProperties::default()
        };
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: Str::from(topic),
            packet_id: 0,
            payload: Bytes::new(),
            properties,
        })
    };
    assert_eq!(
        session.handle(with_alias("a/b", 1), now, &rules, &mut actions),
        Flow::Continue
    );
    assert_eq!(
        session.handle(with_alias("", 1), now, &rules, &mut actions),
        Flow::Continue
    );
    assert!(matches!(&actions[1], Action::Publish(m) if m.topic.as_str() == "a/b"));
    let flow = session.handle(with_alias("", 2), now, &rules, &mut actions);
    assert!(
        matches!(flow, Flow::Close(CloseReason::Violation { reason, .. }) if reason == ReasonCode::PROTOCOL_ERROR)
    );
    let flow = session.handle(with_alias("x", 1000), now, &rules, &mut actions);
    assert!(
        matches!(flow, Flow::Close(CloseReason::Violation { reason, .. }) if reason == ReasonCode::TOPIC_ALIAS_INVALID)
    );
}

#[test]
fn wildcard_publish_topic_closes_with_0x90() {
    let rules = Rules::default();
    let now = Instant::now();
    let mut session = attached(&connect_packet(ProtocolVersion::V5, "c", true), &rules, now);
    let mut actions = Vec::new();
    let flow = session.handle(
        publish_packet("a/+", QoS::AtMostOnce, 0),
        now,
        &rules,
        &mut actions,
    );
    assert!(
        matches!(flow, Flow::Close(CloseReason::Violation { reason, .. }) if reason == ReasonCode::TOPIC_NAME_INVALID)
    );
    assert!(actions.is_empty());
}

#[test]
fn subscribe_grants_refuses_and_caps() {
    let rules = Rules {
        refused_topics: vec!["test/nosubscribe".to_owned()],
        maximum_qos: QoS::AtLeastOnce,
        ..Rules::default()
    };
    let now = Instant::now();
    let mut session = attached(
        &connect_packet(ProtocolVersion::V311, "c", true),
        &rules,
        now,
    );
    let options = |qos| SubscriptionOptions {
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: RetainHandling::SendAtSubscribe,
    };
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![
            SubscribeFilter {
                filter: Str::from("a/#"),
                options: options(QoS::ExactlyOnce),
            },
            SubscribeFilter {
                filter: Str::from("test/nosubscribe"),
                options: options(QoS::AtMostOnce),
            },
            SubscribeFilter {
                filter: Str::from("bad/#/x"),
                options: options(QoS::AtMostOnce),
            },
            SubscribeFilter {
                filter: Str::from("$share/g/s/+"),
                options: options(QoS::AtMostOnce),
            },
        ],
        subscription_identifier: None,
        user_properties: Vec::new(),
    });
    let mut actions = Vec::new();
    session.handle(subscribe, now, &rules, &mut actions);
    assert_eq!(actions.len(), 2);
    let out = drain(&mut session, ProtocolVersion::V311);
    match &out[..] {
        [Packet::SubAck(ack)] => assert_eq!(
            ack.reasons,
            vec![
                ReasonCode(1),
                ReasonCode(0x80),
                ReasonCode(0x80),
                ReasonCode(0)
            ]
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn disconnect_clears_will_unless_0x04() {
    let rules = Rules::default();
    let now = Instant::now();
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.will = Some(Will {
        topic: Str::from("will"),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtMostOnce,
        retain: false,
        delay_interval: None,
        properties: PublishProperties::default(),
    });
    let mut actions = Vec::new();
    let mut session = attached(&connect, &rules, now);
    let normal = Packet::Disconnect(Disconnect {
        reason: ReasonCode::SUCCESS,
        properties: DisconnectProperties::default(),
    });
    session.handle(normal, now, &rules, &mut actions);
    assert!(session.detach(now).is_none());

    let mut session = attached(&connect, &rules, now);
    let with_will = Packet::Disconnect(Disconnect {
        reason: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        properties: DisconnectProperties::default(),
    });
    session.handle(with_will, now, &rules, &mut actions);
    assert!(session.detach(now).is_some());
}

#[test]
fn session_expiry_cannot_be_revived_on_disconnect() {
    let rules = Rules::default();
    let now = Instant::now();
    let mut session = attached(&connect_packet(ProtocolVersion::V5, "c", true), &rules, now);
    let properties = DisconnectProperties {
        session_expiry_interval: Some(30),
        ..DisconnectProperties::default()
    };
    let flow = session.handle(
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::SUCCESS,
            properties,
        }),
        now,
        &rules,
        &mut Vec::new(),
    );
    assert!(
        matches!(flow, Flow::Close(CloseReason::Violation { reason, .. }) if reason == ReasonCode::PROTOCOL_ERROR)
    );
}

#[test]
fn message_larger_than_client_maximum_is_dropped() {
    let rules = Rules::default();
    let now = Instant::now();
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.maximum_packet_size = Some(20);
    let mut session = attached(&connect, &rules, now);
    let big = Arc::new(Message {
        payload: Bytes::from(vec![0u8; 100]),
        ..Message::clone(&message("t", QoS::AtLeastOnce, None))
    });
    assert_eq!(
        session.deliver(queued(big, QoS::AtLeastOnce), now, &rules),
        Delivered::Dropped
    );
    assert!(session.state.inflight.is_empty());
    assert_eq!(
        session.deliver(
            queued(message("t", QoS::AtLeastOnce, None), QoS::AtLeastOnce),
            now,
            &rules
        ),
        Delivered::Sent
    );
    let _ = BytesMut::new();
}

#[derive(Debug)]
struct OwnTopicsOnly;

impl Authorizer for OwnTopicsOnly {
    fn may_publish(&self, topic: &str, client_id: &str) -> bool {
        topic.starts_with(&format!("{client_id}/"))
    }
    fn may_subscribe(&self, filter: &str, client_id: &str) -> bool {
        filter.starts_with(&format!("{client_id}/"))
    }
}

fn attached_with_access(connect: &Connect, rules: &Rules, now: Instant, access: Access) -> Session {
    let mut n = negotiate(connect, rules, now, || "assigned".to_owned()).expect("accepted");
    n.link.access = access;
    let mut session = Session::new(n.client_id.clone(), n.expiry_interval_secs);
    session.attach(n.link, false, now, rules);
    session
}

#[test]
fn unauthorized_publish_is_refused_with_0x87_in_v5_and_dropped_in_v3() {
    let rules = Rules::default();
    let now = Instant::now();
    let access = Access::org(0, Some(std::rc::Rc::new(OwnTopicsOnly)));
    for version in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let connect = connect_packet(version, "dev1", true);
        let mut session = attached_with_access(&connect, &rules, now, access.clone());
        let mut actions = Vec::new();
        let flow = session.handle(
            publish_packet("other/x", QoS::AtLeastOnce, 7),
            now,
            &rules,
            &mut actions,
        );
        assert_eq!(flow, Flow::Continue);
        assert!(actions.is_empty(), "a refused publish is never routed");
        let expected = if version == ProtocolVersion::V5 {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode::SUCCESS
        };
        match drain(&mut session, version).as_slice() {
            [Packet::PubAck(ack)] => {
                assert_eq!(ack.packet_id, 7);
                assert_eq!(ack.reason, expected);
            }
            other => panic!("expected one PUBACK, got {other:?}"),
        }
        session.handle(
            publish_packet("dev1/x", QoS::AtMostOnce, 0),
            now,
            &rules,
            &mut actions,
        );
        assert!(matches!(actions.as_slice(), [Action::Publish(_)]));
    }
}

#[test]
fn unauthorized_subscribe_gets_0x87_and_is_not_indexed() {
    let rules = Rules::default();
    let now = Instant::now();
    let access = Access::org(0, Some(std::rc::Rc::new(OwnTopicsOnly)));
    let connect = connect_packet(ProtocolVersion::V5, "dev1", true);
    let mut session = attached_with_access(&connect, &rules, now, access);
    let mut actions = Vec::new();
    let filters = ["dev1/#", "#", "$share/g/dev1/+"]
        .into_iter()
        .map(|filter| SubscribeFilter {
            filter: Str::from(filter),
            options: SubscriptionOptions::default(),
        })
        .collect();
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 3,
        filters,
        subscription_identifier: None,
        user_properties: Vec::new(),
    });
    session.handle(subscribe, now, &rules, &mut actions);
    assert_eq!(actions.len(), 2);
    match drain(&mut session, ProtocolVersion::V5).as_slice() {
        [Packet::SubAck(ack)] => assert_eq!(
            ack.reasons,
            vec![
                ReasonCode::SUCCESS,
                ReasonCode::NOT_AUTHORIZED,
                ReasonCode::SUCCESS
            ]
        ),
        other => panic!("expected one SUBACK, got {other:?}"),
    }
}

#[test]
fn org_scope_is_added_for_routing_and_removed_on_delivery() {
    let rules = Rules::default();
    let now = Instant::now();
    let connect = connect_packet(ProtocolVersion::V5, "dev1", true);
    let mut session = attached_with_access(&connect, &rules, now, Access::org(5, None));
    let mut actions = Vec::new();
    session.handle(
        publish_packet("a/b", QoS::AtMostOnce, 0),
        now,
        &rules,
        &mut actions,
    );
    let routed = match actions.as_slice() {
        [Action::Publish(message)] => message.clone(),
        other => panic!("expected a publish, got {other:?}"),
    };
    assert_eq!(&*routed.topic, "$\u{0}5/a/b");
    session.deliver(queued(routed, QoS::AtMostOnce), now, &rules);
    match drain(&mut session, ProtocolVersion::V5).as_slice() {
        [Packet::Publish(publish)] => assert_eq!(&*publish.topic, "a/b"),
        other => panic!("expected one PUBLISH, got {other:?}"),
    }
}

/// A retained PUBLISH the org's quota cannot take is refused with 0x97 (v5) and never routed;
/// v3 has no negative PUBACK (acknowledged and dropped, logged). A non-retained PUBLISH and a
/// retained clear (empty payload, which frees room) are not asked about.
#[test]
fn retained_publish_over_the_org_quota_is_refused_with_0x97() {
    let rules = Rules::default();
    let now = Instant::now();
    for version in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let connect = connect_packet(version, "dev1", true);
        let mut session = attached(&connect, &rules, now);
        let asked = std::cell::Cell::new(0);
        let no_room = |_: &str, _: usize| {
            asked.set(asked.get() + 1);
            false
        };
        let full = Room {
            retained: &no_room,
            storage_full: false,
        };
        let mut actions = Vec::new();
        let mut retained = publish_packet("r/1", QoS::AtLeastOnce, 9);
        if let Packet::Publish(p) = &mut retained {
            p.retain = true;
        }
        let flow = session.handle_with(retained, now, &rules, &mut actions, &full);
        assert_eq!(flow, Flow::Continue);
        assert!(actions.is_empty(), "a refused publish is never routed");
        let expected = if version == ProtocolVersion::V5 {
            ReasonCode::QUOTA_EXCEEDED
        } else {
            ReasonCode::SUCCESS
        };
        match drain(&mut session, version).as_slice() {
            [Packet::PubAck(ack)] => assert_eq!((ack.packet_id, ack.reason), (9, expected)),
            other => panic!("expected one PUBACK, got {other:?}"),
        }
        let plain = publish_packet("r/1", QoS::AtLeastOnce, 10);
        session.handle_with(plain, now, &rules, &mut actions, &full);
        let mut clear = publish_packet("r/1", QoS::AtLeastOnce, 11);
        if let Packet::Publish(p) = &mut clear {
            p.retain = true;
            p.payload = Bytes::new();
        }
        session.handle_with(clear, now, &rules, &mut actions, &full);
        assert_eq!(actions.len(), 2, "plain and clearing publishes are routed");
        assert_eq!(asked.get(), 1, "only the retained set asked for room");
    }
}

/// A full disk: a QoS 1/2 PUBLISH is refused with 0x97 on v5 and closes a v3 connection
/// (acknowledging it would promise what cannot be kept); QoS 0 goes on, not kept as retained.
#[test]
fn a_full_store_refuses_what_it_cannot_keep() {
    let rules = Rules::default();
    let now = Instant::now();
    let full = Room {
        retained: &|_, _| true,
        storage_full: true,
    };
    for version in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let connect = connect_packet(version, "dev1", true);
        let mut session = attached(&connect, &rules, now);
        let mut actions = Vec::new();
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let flow = session.handle_with(
                publish_packet("d/1", qos, 9),
                now,
                &rules,
                &mut actions,
                &full,
            );
            assert!(actions.is_empty(), "nothing unstorable is routed");
            if version == ProtocolVersion::V5 {
                assert_eq!(flow, Flow::Continue);
                match drain(&mut session, version).as_slice() {
                    [Packet::PubAck(a)] | [Packet::PubRec(a)] => {
                        assert_eq!((a.packet_id, a.reason), (9, ReasonCode::QUOTA_EXCEEDED))
                    }
                    other => panic!("expected one negative acknowledgement, got {other:?}"),
                }
            } else {
                assert!(matches!(flow, Flow::Close(_)), "v3 is closed: {flow:?}");
                assert!(
                    drain(&mut session, version).is_empty(),
                    "and never acknowledged"
                );
            }
        }
        let mut retained = publish_packet("d/2", QoS::AtMostOnce, 0);
        if let Packet::Publish(p) = &mut retained {
            p.retain = true;
        }
        session.handle_with(retained, now, &rules, &mut actions, &full);
        match actions.as_slice() {
            [Action::Publish(m)] => assert!(!m.retain, "QoS 0 goes on, not retained"),
            other => panic!("expected the QoS 0 publish routed, got {other:?}"),
        }
    }
}
