//! The shard core's unit tests: shards on a test mesh (inboxes moved by hand, so a test
//! chooses every interleaving), connections as ids, effects read from the outputs.

use super::*;
pub(crate) use crate::test_util::test_message;
use ringmq_proto::mqtt::{RetainHandling, Will};
use ringmq_proto::session::Rules;

/// `count` shards of one test mesh, with small settings and an empty snapshot.
pub(crate) fn shard(count: usize) -> Vec<Shard> {
    let settings = ShardSettings {
        mesh_batch_max: 64,
        read_buffer_bytes: 4096,
        read_budget_bytes: 4096,
        write_batch_bytes: 4096,
        retained_messages_max: 100,
        org_retained_bytes_max: 1 << 20,
        org_offline_bytes_max: 1 << 20,
        connections_max: 100,
        connect_timeout: Duration::from_secs(1),
        packet_size_max: 1024,
        mesh_backlog_max: 64,
        login_failures_per_minute_max: 10,
    };
    (0..count)
        .map(|id| {
            Shard::new(
                (id as u16, count as u16),
                Rules::default(),
                settings.clone(),
                Arc::new(ShardStats::default()),
                Arc::new(Snapshot::empty_default()),
                (Instant::now(), 1_700_000_000_000),
            )
        })
        .collect()
}

/// Everything the core asked of its driver so far.
/// `shards`, each made part of a cluster.
pub(crate) fn clustered(mut shards: Vec<Shard>) -> Vec<Shard> {
    for s in &mut shards {
        s.enable_cluster();
    }
    shards
}

pub(crate) fn outputs(s: &mut Shard) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// Shard `at` reads what the others sent it (the outgoing lanes are the test mesh's FIFO
/// lanes), at most `mesh_batch_max` messages from each, then ends its round.
pub(crate) fn poll_mesh(shards: &mut [Shard], at: usize, now: Instant) {
    let batch = shards[at].settings.mesh_batch_max;
    for from in 0..shards.len() {
        if from == at {
            continue;
        }
        let lane = &mut shards[from].outgoing()[at];
        let taken: Vec<MeshMsg> = lane.drain(..batch.min(lane.len())).collect();
        for msg in taken {
            shards[at].handle_mesh(from as u16, msg, now);
        }
    }
    shards[at].flush(now);
}

/// Rounds of every shard ending its round and reading its lanes, until all is said.
pub(crate) fn pump(shards: &mut [Shard], now: Instant) {
    for _ in 0..4 {
        for at in 0..shards.len() {
            poll_mesh(shards, at, now);
        }
    }
}

/// Regression: a claim whose takeover lands on the claiming connection's own shard, where the
/// old session already ended, must be granted, not parked behind itself forever.
#[test]
fn stale_owner_takeover_grants_the_claiming_connection() {
    let mut shards = shard(1);
    let s = &mut shards[0];
    let now = Instant::now();
    let client_id = Str::from("device-1");
    // The registry still names an ended connection (its Release not yet processed).
    s.handle_mesh(
        0,
        MeshMsg::Claim {
            client_id: client_id.clone(),
            shard: 0,
            token: 999,
            clean_start: true,
            owner: 0,
        },
        now,
    );
    s.flush(now);
    let token = s.begin_connect(client_id, true, 0);
    s.flush(now);
    let pending = s
        .pending
        .get(&token)
        .expect("still pending until the task takes it");
    assert!(pending.grant.is_some(), "the claim was never granted");
    assert!(pending.superseded.is_none());
}

/// An origin names its shard and its publisher's slot and generation exactly; the shard's
/// own names no publisher, and a slot's next connection is another publisher.
#[test]
fn origins_round_trip() {
    for (shard, slot, generation) in [
        (0, 0, 0),
        (0, 1, 7),
        (3, 42, 0x1_2345),
        (u16::MAX, u32::MAX - 1, u32::MAX),
    ] {
        let (back_shard, key) = origin_parts(origin_of(shard, slot, generation));
        assert_eq!(back_shard, shard);
        assert_ne!(key, 0, "a connection is never the shard itself");
        assert_eq!(publisher_of(key), (slot, generation & 0xFFFF));
    }
    assert_eq!(shard_origin(0), Origin::BROKER);
    assert_eq!(origin_parts(shard_origin(9)), (9, 0));
    assert_ne!(origin_of(1, 7, 1), origin_of(7, 1, 1));
    assert_ne!(origin_of(1, 7, 1), origin_of(1, 7, 2));
}

/// A client id's session belongs to the principal that claimed it: another principal's
/// claim is refused at the home shard and the holder is not touched; the same principal
/// takes it over.
#[test]
fn a_claim_by_another_principal_is_refused() {
    let mut shards = shard(1);
    let s = &mut shards[0];
    let now = Instant::now();
    let id = Str::from("device-1");
    let alice = s.begin_connect(id.clone(), false, 7);
    s.flush(now);
    assert!(s.pending.get(&alice).is_some_and(|p| p.grant.is_some()));
    let mallory = s.begin_connect(id.clone(), false, 8);
    s.flush(now);
    let refused = s.pending.get(&mallory).expect("pending");
    assert!(refused.refused && refused.grant.is_none());
    let anonymous = s.begin_connect(id.clone(), false, 0);
    s.flush(now);
    assert!(s.pending.get(&anonymous).is_some_and(|p| p.refused));
    // The registry still names alice's claim: her own reconnect is a takeover.
    assert_eq!(s.owners.get(&id).map(|(token, _)| *token), Some(alice));
    let again = s.begin_connect(id.clone(), false, 7);
    s.flush(now);
    assert!(s.pending.get(&again).is_some_and(|p| !p.refused));
    assert_eq!(s.owners.get(&id).map(|(token, _)| *token), Some(again));
}

/// What an org's disconnected sessions queue is bounded by its bytes quota on the shard;
/// the bytes come back when the session ends.
#[test]
fn offline_queue_bytes_are_bounded_per_org() {
    let mut shards = shard(1);
    let s = &mut shards[0];
    let now = Instant::now();
    s.settings.org_offline_bytes_max = 30;
    // The first connection claims the id (the registry then names it), then connects.
    let first = s.begin_connect(Str::from("sleeper"), false, 0);
    s.flush(now);
    s.pending.remove(&first);
    let (slot, _conn) = connect(s, "sleeper", v5_connect("sleeper", 0, 600), now);
    subscribe(s, slot, "q/#", now);
    s.end_connection(slot, None, true, now);
    let msg = |payload: &'static [u8]| test_message("q/1", payload, QoS::AtLeastOnce, false);
    for _ in 0..5 {
        s.publish(msg(b"0123456789"), now);
    }
    let queued = s
        .entry_mut(slot)
        .expect("session")
        .session
        .state
        .queue
        .len();
    assert_eq!(queued, 2, "two messages of 13 bytes fit in 30");
    assert_eq!(s.offline_bytes.get(&0).copied(), Some(26));
    s.end_session(slot, now);
    assert_eq!(s.offline_bytes.get(&0), None);
}

/// A retained set on one shard reaches the other through the topic's home, in one order.
#[test]
fn retained_replicates_through_home() {
    let mut shards = shard(2);
    let now = Instant::now();
    let message = test_message("a/b", b"v1", QoS::AtLeastOnce, true);
    shards[0].publish(message, now);
    shards[0].flush(now);
    pump(&mut shards, now);
    for s in &shards {
        assert_eq!(s.retained_count(), 1);
    }
}

/// Connects a session on `s` the way a connection task does, with a fake socket.
pub(crate) fn connect(
    s: &mut Shard,
    client_id: &str,
    connect: ringmq_proto::mqtt::Connect,
    now: Instant,
) -> (Slot, ConnId) {
    let token = s.next_token();
    let (slot, conn, _present) = install(s, client_id, connect, token, None, now);
    (slot, conn)
}

/// Installs and attaches a session the way a connection task does once its claim `token`
/// was granted (`pending`: the grant's state and in-place resume); the third value is
/// session-present.
fn install(
    s: &mut Shard,
    client_id: &str,
    connect: ringmq_proto::mqtt::Connect,
    token: u64,
    pending: Option<PendingConnect>,
    now: Instant,
) -> (Slot, ConnId, bool) {
    let rules = Rc::clone(&s.rules);
    let n = ringmq_proto::session::connect::negotiate(&connect, &rules, now, String::new)
        .expect("accepted");
    // A connection id of its own shard (a token carries its shard in the top bits).
    let conn: ConnId = token & 0xFFFF_FFFF;
    let (state, resume) = pending.map_or((None, None), |p| (p.grant.flatten(), p.resume));
    let (slot, present) = s.install_session(
        NewSession {
            client_id: Str::from(client_id),
            token,
            state,
            clean_start: n.clean_start,
            expiry_interval_secs: n.expiry_interval_secs,
            conn,
            org: 0,
            principal: None,
            resume,
        },
        now,
    );
    let entry = s.entry_mut(slot).expect("installed");
    entry.session.attach(n.link, present, now, &rules);
    s.arm_keep_alive(slot, conn);
    (slot, conn, present)
}

pub(crate) fn v5_connect(
    client_id: &str,
    keep_alive: u16,
    expiry: u32,
) -> ringmq_proto::mqtt::Connect {
    let mut connect = ringmq_proto::mqtt::Connect {
        version: ringmq_proto::mqtt::ProtocolVersion::V5,
        clean_start: true,
        keep_alive,
        client_id: Str::from(client_id),
        ..Default::default()
    };
    connect.properties.session_expiry_interval = Some(expiry);
    connect
}

pub(crate) fn subscribe(s: &mut Shard, slot: Slot, filter: &str, now: Instant) {
    use ringmq_proto::mqtt::{Packet, Subscribe, SubscribeFilter, SubscriptionOptions};
    let packet = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: Str::from(filter),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::SendAtSubscribe,
            },
        }],
        subscription_identifier: None,
        user_properties: Vec::new(),
    });
    s.handle_packet(slot, packet, now);
    s.flush(now);
}

/// Regression (found by ringmq-sim): a shared subscription of an org other than the
/// default one was acknowledged but never joined its group (the scope's U+0000 failed a
/// client-input check), so nothing published to it was delivered.
#[test]
fn a_shared_subscription_in_another_org_receives() {
    let mut shards = shard(1);
    let s = &mut shards[0];
    let now = Instant::now();
    let (slot, _conn) = connect(s, "member", v5_connect("member", 0, 60), now);
    let link = s.entry_mut(slot).and_then(|e| e.session.link.as_mut());
    link.expect("connected").access = ringmq_proto::session::Access::org(1, None);
    subscribe(s, slot, "$share/g/s/#", now);
    s.entry_mut(slot).expect("member").session.out.clear();
    let topic = ringmq_router::scoped(&ringmq_router::org_scope(1), "s/a");
    s.publish(
        test_message(&topic, b"for-the-group", QoS::AtLeastOnce, false),
        now,
    );
    s.flush(now);
    let out = &s.entry_mut(slot).expect("member").session.out;
    assert!(
        out.windows(13).any(|w| w == b"for-the-group"),
        "not delivered"
    );
}

/// Regression (found by ringmq-sim): a persistent session reconnecting on its own shard was
/// moved out of the trie at the grant and back at the install; a QoS 1 message routed in
/// between was acknowledged to its publisher and lost. It now stays in place and queues.
#[test]
fn a_message_routed_while_a_session_resumes_on_its_shard_is_kept() {
    let mut shards = shard(1);
    let s = &mut shards[0];
    let now = Instant::now();
    // The first connection claims the id (the registry then names it), then connects.
    let first = s.begin_connect(Str::from("sleeper"), false, 0);
    s.flush(now);
    s.pending.remove(&first);
    let (slot, _conn) = connect(s, "sleeper", v5_connect("sleeper", 0, 600), now);
    subscribe(s, slot, "q/#", now);
    s.end_connection(slot, None, true, now);
    let token = s.begin_connect(Str::from("sleeper"), false, 0);
    s.flush(now);
    let pending = s.pending.remove(&token).expect("pending");
    assert!(pending.grant.is_some(), "granted");
    assert!(pending.resume.is_some(), "the session stays in place");
    // Routed after the grant, before the new connection installs the session.
    s.publish(
        test_message("q/1", b"in-between", QoS::AtLeastOnce, false),
        now,
    );
    s.flush(now);
    let mut again = v5_connect("sleeper", 0, 600);
    again.clean_start = false;
    let (resumed, _conn, present) = install(s, "sleeper", again, token, Some(pending), now);
    assert!(present);
    assert_eq!(resumed, slot);
    let out = &s.entry_mut(resumed).expect("resumed").session.out;
    assert!(
        out.windows(10).any(|w| w == b"in-between"),
        "the message was lost"
    );
}

/// Regression (found by ringmq-sim): a persistent session whose client reconnected on
/// another shard lost the QoS 1/2 messages routed to its old shard while it moved. The old
/// shard now forwards them until every replica routes to the new one.
#[test]
fn a_message_routed_while_a_session_moves_to_another_shard_is_kept() {
    let mut shards = shard(2);
    let now = Instant::now();
    let mut connect_packet = v5_connect("mover", 0, 600);
    connect_packet.clean_start = false;
    let claim =
        |shards: &mut Vec<Shard>, on: usize| shards[on].begin_connect(Str::from("mover"), false, 0);
    let first = claim(&mut shards, 0);
    pump(&mut shards, now);
    let pending = shards[0].pending.remove(&first);
    let (slot, _conn, _) = install(
        &mut shards[0],
        "mover",
        connect_packet.clone(),
        first,
        pending,
        now,
    );
    subscribe(&mut shards[0], slot, "q/#", now);
    pump(&mut shards, now);
    shards[0].end_connection(slot, None, true, now);
    // The client comes back on shard 1: once shard 0 has handed the session over, a publish
    // there still finds it (its index still names shard 0).
    let token = claim(&mut shards, 1);
    for _ in 0..8 {
        if shards[0].moves.counts().0 > 0 {
            break;
        }
        for at in 0..shards.len() {
            shards[at].flush(now);
            poll_mesh(&mut shards, at, now);
        }
    }
    assert!(
        shards[0].moves.counts().0 > 0,
        "shard 0 forwards while the session moves"
    );
    shards[0].publish(
        test_message("q/1", b"on-the-way", QoS::AtLeastOnce, false),
        now,
    );
    pump(&mut shards, now);
    let pending = shards[1].pending.remove(&token).expect("pending");
    let (moved, _conn, present) = install(
        &mut shards[1],
        "mover",
        connect_packet,
        token,
        Some(pending),
        now,
    );
    assert!(present);
    let out = &shards[1].entry_mut(moved).expect("moved").session.out;
    assert!(
        out.windows(10).any(|w| w == b"on-the-way"),
        "the message was lost"
    );
    pump(&mut shards, now);
    assert!(
        shards[0].moves.counts() == (0, 0),
        "the forwarder ends once every replica routes to shard 1"
    );
    assert_eq!(shards[1].moves.counts(), (0, 0));
    assert_eq!(shards[0].session_count() + shards[1].session_count(), 1);
}

/// Regression (found by ringmq-sim): a shared message sent to a member shard whose last
/// member had just left (the publisher's replica not yet told) was dropped, though a member
/// on another shard was there. That shard now passes it on.
#[test]
fn a_shared_message_for_a_shard_whose_member_left_reaches_another_member() {
    use ringmq_proto::mqtt::{Packet, Unsubscribe};
    let mut shards = shard(2);
    let now = Instant::now();
    let (a, _a_conn) = connect(&mut shards[0], "a", v5_connect("a", 0, 0), now);
    let (b, _b_conn) = connect(&mut shards[1], "b", v5_connect("b", 0, 0), now);
    subscribe(&mut shards[0], a, "$share/g/jobs/#", now);
    subscribe(&mut shards[1], b, "$share/g/jobs/#", now);
    pump(&mut shards, now);
    // b leaves; shard 0 has not heard of it yet when it routes.
    let unsubscribe = Packet::Unsubscribe(Unsubscribe {
        packet_id: 2,
        filters: vec![Str::from("$share/g/jobs/#")],
        user_properties: Vec::new(),
    });
    shards[1].handle_packet(b, unsubscribe, now);
    shards[1].flush(now);
    shards[0].entry_mut(a).expect("a").session.out.clear();
    for payload in [&b"job-1"[..], b"job-2"] {
        let message = Arc::new(Message {
            payload: Bytes::from_static(payload),
            ..(*test_message("jobs/x", b"", QoS::AtLeastOnce, false)).clone()
        });
        shards[0].publish(message, now);
    }
    pump(&mut shards, now);
    let out = &shards[0].entry_mut(a).expect("a").session.out;
    for job in [b"job-1", b"job-2"] {
        assert!(
            out.windows(5).any(|w| w == job),
            "{} lost",
            String::from_utf8_lossy(job)
        );
    }
}

/// Regressions (found by ringmq-sim): a SUBACK was not held when the shard already held the
/// filter, though the announcement that made it known elsewhere could still be on its way;
/// and a SUBSCRIBE of a filter a session held took it out of the index and put it back, so a
/// message routed by another shard in between missed a subscription that never lapsed.
#[test]
fn subscriptions_are_fenced_and_a_resubscribe_never_lapses() {
    let mut shards = shard(2);
    let now = Instant::now();
    let (a, _a_conn) = connect(&mut shards[1], "a", v5_connect("a", 0, 0), now);
    subscribe(&mut shards[1], a, "t/#", now);
    pump(&mut shards, now);
    // A second session on the same shard and filter: its SUBACK still waits for shard 0.
    let (b, b_conn) = connect(&mut shards[1], "b", v5_connect("b", 0, 0), now);
    subscribe(&mut shards[1], b, "t/#", now);
    let fences = |outputs: &[Output]| {
        outputs.iter().fold(0i64, |held, output| match output {
            Output::Fence { at, count } if at.conn == b_conn => held + i64::from(*count),
            Output::FenceDone(at) if at.conn == b_conn => held - 1,
            _ => held,
        })
    };
    let mut seen = outputs(&mut shards[1]);
    assert!(fences(&seen) > 0, "the SUBACK waits for every replica");
    pump(&mut shards, now);
    seen.extend(outputs(&mut shards[1]));
    assert_eq!(fences(&seen), 0, "every replica answered");
    shards[1].end_connection(b, None, false, now);
    pump(&mut shards, now);
    // a subscribes to t/# again; shard 0 reads what shard 1 said one message at a time and
    // routes between them: a is reached at every point.
    subscribe(&mut shards[1], a, "t/#", now);
    shards[0].settings.mesh_batch_max = 1;
    shards[1].entry_mut(a).expect("a").session.out.clear();
    for round in 0..4 {
        poll_mesh(&mut shards, 0, now);
        let payload: &'static [u8] = [&b"again-0"[..], b"again-1", b"again-2", b"again-3"][round];
        let message = Arc::new(Message {
            payload: Bytes::from_static(payload),
            ..(*test_message("t/x", b"", QoS::AtLeastOnce, false)).clone()
        });
        shards[0].publish(message, now);
        shards[0].flush(now);
        poll_mesh(&mut shards, 1, now);
        let out = &shards[1].entry_mut(a).expect("a").session.out;
        assert!(
            out.windows(7).any(|w| w == payload),
            "round {round}: missed"
        );
    }
}

/// Will delay 3 s with session expiry 5 s: the will is published at 3 s, not before
/// (simulated clock; MQTT 5 3.1.3.2.2).
#[test]
fn will_delay_fires_on_the_simulated_clock() {
    let mut shards = shard(1);
    let s = &mut shards[0];
    let t0 = Instant::now();
    let (watcher, _watch_conn) = connect(s, "watcher", v5_connect("watcher", 0, 60), t0);
    subscribe(s, watcher, "wills/#", t0);
    s.entry_mut(watcher).expect("watcher").session.out.clear();
    let mut connect_packet = v5_connect("device", 0, 5);
    connect_packet.will = Some(Will {
        topic: Str::from("wills/device"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        delay_interval: Some(3),
        properties: Default::default(),
    });
    let (device, _conn) = connect(s, "device", connect_packet, t0);
    s.end_connection(device, None, true, t0);
    s.flush(t0);
    s.run_timers(t0 + Duration::from_millis(2900));
    assert!(
        s.entry_mut(watcher)
            .expect("watcher")
            .session
            .out
            .is_empty(),
        "will too early"
    );
    s.run_timers(t0 + Duration::from_millis(3100));
    s.flush(t0 + Duration::from_millis(3100));
    assert!(
        !s.entry_mut(watcher)
            .expect("watcher")
            .session
            .out
            .is_empty(),
        "no will"
    );
    // The session itself expires at 5 s and leaves the shard.
    assert_eq!(s.session_count(), 2);
    s.run_timers(t0 + Duration::from_millis(5100));
    assert_eq!(s.session_count(), 1);
}

/// Keep-alive 10 s: the connection is closed at 15 s, not at 14.
#[test]
fn keep_alive_closes_at_one_and_a_half() {
    let mut shards = shard(1);
    let s = &mut shards[0];
    let t0 = Instant::now();
    let (slot, conn) = connect(s, "sleepy", v5_connect("sleepy", 10, 0), t0);
    s.run_timers(t0 + Duration::from_secs(14));
    let closed = |s: &mut Shard| {
        outputs(s)
            .iter()
            .any(|output| matches!(output, Output::Close { at, .. } if at.conn == conn))
    };
    assert!(!closed(s));
    s.run_timers(t0 + Duration::from_millis(15_100));
    assert!(closed(s));
    assert!(
        s.entry_mut(slot).is_none(),
        "a clean session ends with its connection"
    );
}

/// A round's many deliveries to one session ask its writer once; a close is urgent (the
/// driver applies it before the connection's next packet), a writer to wake is not.
#[test]
fn one_write_per_session_per_round_and_closes_are_urgent() {
    let mut shards = shard(1);
    let s = &mut shards[0];
    let now = Instant::now();
    let (slot, conn) = connect(s, "sub", v5_connect("sub", 0, 0), now);
    subscribe(s, slot, "t/#", now);
    outputs(s);
    s.take_urgent();
    for _ in 0..10 {
        s.handle(
            Input::Publish(test_message("t/x", b"m", QoS::AtMostOnce, false)),
            now,
        );
    }
    let writes = outputs(s)
        .iter()
        .filter(|output| matches!(output, Output::Write { slot: at, .. } if *at == slot))
        .count();
    assert_eq!(writes, 1, "one Write covers the round");
    assert!(
        !s.take_urgent(),
        "waking a writer can wait for the round's end"
    );
    s.handle(Input::Lost { slot, conn }, now);
    assert!(s.take_urgent(), "a close cannot wait");
    assert!(outputs(s)
        .iter()
        .any(|output| matches!(output, Output::Close { at, .. } if at.conn == conn)));
}

/// Regression (found by ringmq-sim, seed 4014 on 4 shards): a client that subscribed and
/// disconnected at once got its SUBACK with the close, before the other replicas had the
/// filter, so a publish on a shard that had not heard of it yet missed its persistent
/// session. The close now waits for the fence: the SUBACK leaves only once every replica has
/// the subscription.
#[test]
fn a_close_waits_for_the_fence_of_its_suback() {
    let mut shards = shard(2);
    let now = Instant::now();
    let (b, b_conn) = connect(&mut shards[1], "b", v5_connect("b", 0, 600), now);
    outputs(&mut shards[1]);
    subscribe(&mut shards[1], b, "t/#", now);
    shards[1].end_connection(b, None, false, now);
    let closed = |outputs: &[Output]| {
        outputs.iter().find_map(|output| match output {
            Output::Close { at, rest } if at.conn == b_conn => Some(rest.clone()),
            _ => None,
        })
    };
    let early = outputs(&mut shards[1]);
    assert!(closed(&early).is_none(), "no close before shard 0 answered");
    // Shard 0 has the filter before it answers: a publish there now reaches b's session.
    poll_mesh(&mut shards, 0, now);
    poll_mesh(&mut shards, 1, now);
    let late = outputs(&mut shards[1]);
    let rest = closed(&late).expect("closed with the last answer");
    assert!(
        rest.first().is_some_and(|b| b >> 4 == 9),
        "the SUBACK goes out with the close: {rest:?}"
    );
    let done = late
        .iter()
        .position(|o| matches!(o, Output::FenceDone(at) if at.conn == b_conn));
    let close = late
        .iter()
        .position(|o| matches!(o, Output::Close { at, .. } if at.conn == b_conn));
    assert!(
        done < close,
        "the driver's fence is released before the close"
    );
    shards[0].publish(test_message("t/x", b"after", QoS::AtLeastOnce, false), now);
    shards[0].flush(now);
    poll_mesh(&mut shards, 1, now);
    let entry = shards[1].entry_mut(b).expect("b's session lives on");
    assert_eq!(
        entry.session.state.queue.len(),
        1,
        "queued for the offline session"
    );
}

/// A close that waits for its SUBACK's fence still reaches its own connection when the
/// client resumed the session in the same slot meanwhile (the driver keeps connections by
/// slot): the old connection gets its close, the new one keeps the slot and owes no fence.
#[test]
fn a_fenced_close_reaches_its_connection_after_the_slot_is_resumed() {
    let mut shards = shard(2);
    let now = Instant::now();
    let id = (0..)
        .map(|i| format!("r{i}"))
        .find(|id| shards[1].home_of(id) == 1)
        .expect("some id is homed on shard 1");
    let first = shards[1].begin_connect(Str::from(id.as_str()), false, 0);
    shards[1].flush(now);
    shards[1].pending.remove(&first);
    let (slot, old) = connect(&mut shards[1], &id, v5_connect(&id, 0, 600), now);
    subscribe(&mut shards[1], slot, "t/#", now);
    shards[1].end_connection(slot, None, false, now);
    outputs(&mut shards[1]);
    // Resumed in place before shard 0 answered the fence.
    let token = shards[1].begin_connect(Str::from(id.as_str()), false, 0);
    shards[1].flush(now);
    let pending = shards[1].pending.remove(&token).expect("pending");
    assert!(pending.resume.is_some(), "the session stays in place");
    let mut again = v5_connect(&id, 0, 600);
    again.clean_start = false;
    let (resumed, new, _) = install(&mut shards[1], &id, again, token, Some(pending), now);
    assert_eq!(resumed, slot);
    assert_ne!(new, old);
    poll_mesh(&mut shards, 0, now);
    poll_mesh(&mut shards, 1, now);
    let late = outputs(&mut shards[1]);
    let old_at = ConnAt { slot, conn: old };
    assert!(
        late.iter()
            .any(|o| matches!(o, Output::Close { at, .. } if *at == old_at)),
        "the old connection is closed once the fence is answered: {late:?}"
    );
    assert!(
        !late.iter().any(|o| matches!(o,
            Output::Close { at, .. } | Output::FenceDone(at) if at.conn == new)),
        "nothing of the old connection's lands on the new one: {late:?}"
    );
    assert_eq!(
        shards[1].entry_for_conn(slot, new).map(|e| e.fences),
        Some(0)
    );
}

/// A pause names its publisher by slot and generation: it reaches the connection it was
/// meant for, and a late pause or resume for a publisher that left does nothing to the
/// next connection in its slot.
#[test]
fn a_pause_reaches_its_publisher_and_not_the_next_in_its_slot() {
    let mut shards = shard(1);
    let s = &mut shards[0];
    let now = Instant::now();
    let (slot, first) = connect(s, "p1", v5_connect("p1", 0, 0), now);
    let key = origin_parts(s.entry_mut(slot).expect("p1").session.origin).1;
    outputs(s);
    s.pause_local(key, true);
    assert!(s.is_paused(slot, first));
    let at = ConnAt { slot, conn: first };
    assert!(outputs(s)
        .iter()
        .any(|o| matches!(o, Output::Pause(p) if *p == at)));
    s.end_connection(slot, None, false, now);
    let (again, second) = connect(s, "p2", v5_connect("p2", 0, 0), now);
    assert_eq!(again, slot, "the freed slot is reused");
    outputs(s);
    s.pause_local(key, true);
    s.pause_local(key, false);
    assert!(!s.is_paused(slot, second));
    assert!(
        outputs(s).is_empty(),
        "nothing reached the second connection"
    );
}

/// Reads what shards recorded, as a restart would: every log into one replay.
fn replay_of(shards: &mut [Shard]) -> crate::durable::Recovered {
    let mut replay = crate::durable::Replay::default();
    for s in shards.iter_mut() {
        let clock = s.wall_clock();
        let mut log = Vec::new();
        s.take_records(&mut log);
        let end = crate::durable::frame::scan(&log, |_, payload| {
            replay.apply(crate::durable::Record::decode(payload, &clock)?);
            Ok::<(), crate::durable::DecodeError>(())
        })
        .expect("records decode");
        assert_eq!(end, crate::durable::frame::End::Clean);
    }
    replay.finish()
}

/// A persistent session with a subscription and queued messages, and a retained message,
/// survive a restart through the log, also onto another shard count; a session that ended
/// does not come back.
#[test]
fn what_the_log_keeps_comes_back_on_any_shard_count() {
    let mut shards = shard(2);
    for s in shards.iter_mut() {
        s.enable_journal();
    }
    let now = Instant::now();
    let (keeper, _) = connect(&mut shards[1], "keeper", v5_connect("keeper", 0, 3600), now);
    subscribe(&mut shards[1], keeper, "t/#", now);
    let (gone, _) = connect(&mut shards[0], "gone", v5_connect("gone", 0, 3600), now);
    subscribe(&mut shards[0], gone, "t/#", now);
    pump(&mut shards, now);
    shards[1].end_connection(keeper, None, false, now);
    let retained = Arc::new(Message {
        retain: true,
        ..(*test_message("t/r", b"kept", QoS::AtLeastOnce, true)).clone()
    });
    shards[0].publish(retained, now);
    for payload in [&b"one"[..], b"two"] {
        let message = Arc::new(Message {
            payload: Bytes::from_static(payload),
            ..(*test_message("t/q", b"", QoS::AtLeastOnce, false)).clone()
        });
        shards[0].publish(message, now);
    }
    shards[0].flush(now);
    pump(&mut shards, now);
    // "gone" ends: its end is recorded after its checkpoint.
    for s in shards.iter_mut() {
        s.checkpoint(now);
    }
    shards[0].end_connection(gone, None, false, now);
    shards[0].end_session(gone, now);
    pump(&mut shards, now);
    let later = now + Duration::from_secs(5);
    for s in shards.iter_mut() {
        s.checkpoint(later);
    }
    let recovered = replay_of(&mut shards);
    assert_eq!(
        recovered.sessions.len(),
        1,
        "only the live persistent session"
    );
    assert_eq!(recovered.retained.len(), 1);
    // The retained message and the two others, queued while it was away.
    let queued = recovered.sessions[0].state.queue.len();
    assert_eq!(queued, 3);

    for count in [1, 3] {
        let mut fresh = shard(count);
        let restart = later + Duration::from_secs(10);
        let restored: usize = fresh
            .iter_mut()
            .map(|s| s.restore(&recovered, restart))
            .sum();
        assert_eq!(restored, 1, "{count} shards");
        let home = fresh[0].home_of("keeper") as usize;
        let slot = fresh[home]
            .by_client_id
            .get(&fresh[home].entries, b"keeper")
            .expect("seated on its home");
        let entry = fresh[home].entry_mut(slot).expect("entry");
        assert_eq!(
            entry.session.state.queue.len(),
            queued,
            "queued messages kept"
        );
        assert!(entry.conn().is_none());
        // Every shard routes a new publish to it, and has the retained message.
        for (i, s) in fresh.iter_mut().enumerate() {
            let mut got = Vec::new();
            s.replica
                .retained
                .for_each_match("t/#", |m| got.push(m.payload.clone()));
            assert_eq!(got, vec![Bytes::from_static(b"kept")], "shard {i}");
            // (One shard routes without the index and keeps none.)
            assert!(
                count == 1 || s.replica.index.matching_shards("t/new") & (1 << home) != 0,
                "shard {i} routes to the session's home"
            );
        }
        if count == 1 {
            // Neither the filter counts nor the index: a copy of every filter, twice.
            assert_eq!(fresh[0].replica.index.filter_count(), 0);
            assert_eq!(fresh[0].replica.filter_counts.filter_count(), 0);
        }
        let publisher = (home + 1) % count;
        fresh[publisher].publish(
            test_message("t/new", b"3", QoS::AtLeastOnce, false),
            restart,
        );
        fresh[publisher].flush(restart);
        pump(&mut fresh, restart);
        let entry = fresh[home].entry_mut(slot).expect("entry");
        assert_eq!(
            entry.session.state.queue.len(),
            queued + 1,
            "{count} shards"
        );
    }
}

/// Every session pays for its entry, connected or not (the pauses and fences of a connection
/// live in it, instead of a map by connection id): it must not grow unnoticed.
#[test]
fn an_entry_stays_small() {
    let size = std::mem::size_of::<Entry>();
    assert!(size <= 344, "Entry is {size} bytes");
}

/// A full disk is the broker's, not one shard's: a shard that cannot write its log makes every
/// shard sharing its counter refuse what needs storing, until it can write again.
#[test]
fn a_full_log_on_one_shard_is_full_for_every_shard() {
    let mut shards = shard(2);
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for s in &mut shards {
        s.enable_journal();
        s.share_storage_health(std::sync::Arc::clone(&failing));
    }
    shards[1].set_storage_full(true);
    shards[1].set_storage_full(true);
    assert!(shards[0].storage_full() && shards[1].storage_full());
    shards[0].set_storage_full(true);
    shards[1].set_storage_full(false);
    assert!(shards[1].storage_full(), "shard 0 still cannot write");
    shards[0].set_storage_full(false);
    assert!(!shards[0].storage_full() && !shards[1].storage_full());
}

/// Replays `log` (framed records) into the state it describes.
fn replay_bytes(log: &[u8], clock: &crate::durable::Clock) -> crate::durable::Recovered {
    let mut replay = crate::durable::Replay::default();
    let end = crate::durable::frame::scan(log, |_, payload| {
        replay.apply(crate::durable::Record::decode(payload, clock)?);
        Ok::<(), crate::durable::DecodeError>(())
    })
    .expect("records decode");
    assert_eq!(end, crate::durable::frame::End::Clean);
    replay.finish()
}

/// Queued messages per client id, sorted, of a recovered state.
fn queues_of(recovered: &crate::durable::Recovered) -> Vec<(String, usize)> {
    let mut queues: Vec<(String, usize)> = recovered
        .sessions
        .iter()
        .map(|s| (s.client_id.to_string(), s.state.queue.len()))
        .collect();
    queues.sort();
    queues
}

/// A compaction encodes sessions a few slots per step while the shard goes on: sessions that
/// change between its steps (before or after their own step), sessions that end and begin,
/// all replay from the stepped snapshot plus the records made meanwhile to the live state.
#[test]
fn a_snapshot_taken_in_steps_replays_to_the_live_state() {
    let mut shards = shard(1);
    let s = &mut shards[0];
    s.enable_journal();
    let now = Instant::now();
    let mut slots = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let (slot, _) = connect(s, name, v5_connect(name, 0, 3600), now);
        subscribe(s, slot, &format!("{name}/#"), now);
        s.end_connection(slot, None, false, now);
        slots.push(slot);
    }
    let queue = |s: &mut Shard, topic: &str| {
        s.publish(test_message(topic, b"m", QoS::AtLeastOnce, false), now);
        s.flush(now);
    };
    queue(s, "a/1");
    queue(s, "d/1");
    s.checkpoint(now);
    let mut old = Vec::new();
    s.take_records(&mut old);

    // The snapshot's first step: slot of "a" (and any before it) only.
    let mut snapshot = Vec::new();
    let first = slots[0] + 1;
    let mut next = s.session_records_from(0, first, now, &mut snapshot);
    assert_eq!(next, Some(first));
    // Meanwhile: "a" (already in the snapshot) and "d" (not yet) get a message, "b" ends,
    // and a new "e" begins; the log records all of it after the snapshot.
    let later = now + Duration::from_millis(5);
    queue(s, "a/2");
    queue(s, "d/2");
    s.end_session(slots[1], later);
    let (e, _) = connect(s, "e", v5_connect("e", 0, 3600), later);
    s.end_connection(e, None, false, later);
    s.checkpoint(later);
    let mut carry = Vec::new();
    s.take_records(&mut carry);
    // The rest of the steps, one slot at a time.
    let end = now + Duration::from_millis(10);
    while let Some(from) = next {
        next = s.session_records_from(from, 1, end, &mut snapshot);
    }
    let mut compacted = snapshot;
    compacted.extend_from_slice(&carry);
    let clock = s.wall_clock();
    let stepped = replay_bytes(&compacted, &clock);
    let mut whole = Vec::new();
    s.session_records(end, &mut whole);
    let live = replay_bytes(&whole, &clock);
    assert_eq!(queues_of(&stepped), queues_of(&live));
    assert_eq!(
        queues_of(&live),
        vec![
            ("a".into(), 2),
            ("c".into(), 0),
            ("d".into(), 2),
            ("e".into(), 0)
        ]
    );
}

/// Regression: a retained message the full store refused (the broker's own `$SYS` topics set
/// at the bound, which skip the publish path's room check) was recorded all the same, so the
/// next start restored more than the bound, with every topic after it refused.
#[test]
fn a_retained_message_the_full_store_refuses_is_not_logged() {
    let mut shards = shard(1);
    let s = &mut shards[0];
    s.enable_journal();
    let now = Instant::now();
    for i in 0..101 {
        let message = Arc::new(Message {
            retain: true,
            ..(*test_message(&format!("r/{i}"), b"v", QoS::AtMostOnce, true)).clone()
        });
        s.publish(message, now);
        s.flush(now);
    }
    assert_eq!(s.replica.retained.len(), 100);
    let recovered = replay_of(&mut shards);
    assert_eq!(recovered.retained.len(), 100);
}

/// Regression (found by ringmq-sim's crash restarts): the shared index counts members, and a
/// restore counted the members of a group homed on another shard once per shard; the first of
/// them to leave then took that shard out of the group's routing while others remained there.
#[test]
fn a_restore_counts_every_member_of_a_shared_group() {
    let mut shards = shard(2);
    for s in shards.iter_mut() {
        s.enable_journal();
    }
    let now = Instant::now();
    let homed: Vec<String> = (0..)
        .map(|i| format!("member-{i}"))
        .filter(|id| shards[0].home_of(id) == 1)
        .take(2)
        .collect();
    for id in &homed {
        let (slot, _) = connect(&mut shards[1], id, v5_connect(id, 0, 3600), now);
        subscribe(&mut shards[1], slot, "$share/g1/t/#", now);
        shards[1].end_connection(slot, None, false, now);
    }
    pump(&mut shards, now);
    for s in shards.iter_mut() {
        s.checkpoint(now);
    }
    let recovered = replay_of(&mut shards);
    let mut fresh = shard(2);
    for s in fresh.iter_mut() {
        s.restore(&recovered, now);
    }
    for (i, s) in fresh.iter().enumerate() {
        assert_eq!(
            s.replica.shared_index.shard_member_count("g1", "t/#", 1),
            2,
            "shard {i} counts both members on shard 1"
        );
    }
}

/// A session connected at a crash is not expired by the time since its last checkpoint (an
/// idle connection is not checkpointed again): its expiry counts from the start. One that was
/// offline at its checkpoint counts the time down.
#[test]
fn a_session_connected_at_a_crash_expires_from_the_start() {
    let mut shards = shard(1);
    shards[0].enable_journal();
    let now = Instant::now();
    let (_, _) = connect(&mut shards[0], "live", v5_connect("live", 0, 60), now);
    let (away, _) = connect(&mut shards[0], "away", v5_connect("away", 0, 60), now);
    shards[0].end_connection(away, None, false, now);
    // (A session that went offline in the checkpoint's very millisecond reads as connected:
    // it gets the time down as extra life, never less.)
    let checkpoint = now + Duration::from_secs(5);
    shards[0].checkpoint(checkpoint);
    let recovered = replay_of(&mut shards);
    assert_eq!(recovered.sessions.len(), 2);
    let mut fresh = shard(1);
    let restored = fresh[0].restore(&recovered, now + Duration::from_secs(120));
    assert_eq!(
        restored, 1,
        "the live one is kept, the one away for 120 s of 60 is not"
    );
    assert!(fresh[0]
        .by_client_id
        .get(&fresh[0].entries, b"live")
        .is_some());
}
