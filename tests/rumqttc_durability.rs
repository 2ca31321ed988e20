//! Durability through rumqttc (MQTT 3.1.1 and 5.0): a persistent session's subscriptions and
//! queued messages, and retained messages, survive a SIGTERM restart (periodic mode, the
//! default); so do QoS 2 messages in flight to a subscriber, delivered once; in `sync` mode a
//! kill -9 loses no acknowledged message; `memory` mode forgets sessions and retained messages.

mod common;

use std::time::Duration;

use common::{unique, Broker, Client, Opts, Version};

/// A broker with this configuration overlay, answering CONNECTs (`Broker::wait_connack`).
fn start(config: &str) -> Broker {
    let broker = Broker::start_with_config(config);
    broker.wait_connack();
    broker
}

/// SIGTERM, start again, and wait until it answers CONNECTs.
fn restart(broker: &mut Broker) {
    broker.restart();
    broker.wait_connack();
}

/// Leaves a persistent session `id` subscribed to `filter` at QoS 1, offline.
async fn subscribe_offline(broker: &Broker, version: Version, id: &str, filter: &str) {
    let mut sub = Client::connect(broker, Opts::new(version, id).persistent()).await;
    sub.subscribe(filter, 1).await;
    sub.disconnect().await;
}

/// Connects to persistent session `id` again, which must be present.
async fn resume(broker: &Broker, version: Version, id: &str) -> Client {
    let back = Client::connect(broker, Opts::new(version, id).persistent()).await;
    assert!(back.session_present, "{version:?}: session present");
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_and_retained_messages_survive_a_restart() {
    let mut broker = start("");
    let mut ids = Vec::new();
    for version in [Version::V311, Version::V5] {
        let id = unique("keep");
        subscribe_offline(&broker, version, &id, &format!("rd/{id}/#")).await;
        let mut publisher = Client::connect(&broker, Opts::new(version, &unique("pub"))).await;
        for i in 0..3 {
            let payload = format!("{i}");
            publisher
                .publish(&format!("rd/{id}/q"), 1, false, payload.as_bytes())
                .await;
        }
        publisher
            .publish(&format!("rdr/{id}"), 1, true, b"retained")
            .await;
        publisher.disconnect().await;
        ids.push((version, id));
    }

    restart(&mut broker);

    for (version, id) in ids {
        let mut back = resume(&broker, version, &id).await;
        for i in 0..3 {
            let m = back.recv().await;
            assert_eq!(m.payload, format!("{i}").as_bytes(), "{version:?}");
        }
        back.expect_none(Duration::from_millis(200)).await;
        back.subscribe(&format!("rdr/{id}"), 1).await;
        let m = back.recv().await;
        assert_eq!((m.payload.as_slice(), m.retain), (&b"retained"[..], true));
        back.disconnect().await;
    }
}

/// `sync` mode: every QoS 1 message whose PUBACK arrived (a pipelined window, the publisher
/// connected at the kill) survives a SIGKILL straight after the last PUBACK, queued for an
/// offline persistent subscriber, and comes back in order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_loses_no_acknowledged_message_in_a_kill_9() {
    const N: usize = 200;
    let mut broker = start("[durability]\nmode = \"sync\"\n");
    let mut ids = Vec::new();
    for version in [Version::V311, Version::V5] {
        let id = unique("sync");
        subscribe_offline(&broker, version, &id, &format!("sk/{id}")).await;
        ids.push((version, id));
    }
    // Both publishers still connected, their last PUBACKs just in, when the broker is killed.
    let mut publishers = Vec::new();
    for (version, id) in &ids {
        let mut publisher = Client::connect(&broker, Opts::new(*version, &unique("spub"))).await;
        for i in 0..N {
            publisher
                .publish_nowait(&format!("sk/{id}"), 1, false, format!("{i}").as_bytes())
                .await;
        }
        publisher.wait_acks(N).await;
        publishers.push(publisher);
    }

    broker.kill_and_restart();
    drop(publishers);

    for (version, id) in ids {
        let mut back = resume(&broker, version, &id).await;
        for i in 0..N {
            let m = back.recv().await;
            assert_eq!(
                (m.topic.as_str(), m.payload.as_slice(), m.qos),
                (format!("sk/{id}").as_str(), format!("{i}").as_bytes(), 1),
                "{version:?}: message {i}"
            );
        }
        back.expect_none(Duration::from_millis(300)).await;
        back.disconnect().await;
    }
}

/// Periodic mode, SIGTERM: QoS 2 messages delivered to a persistent subscriber that never
/// answered (no PUBREC: rumqttc's manual acks, never given) are sent again after the restart
/// with DUP and their packet ids, before the messages queued while it was offline; each comes
/// once, and once the flows are complete another restart sends nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_in_flight_and_queued_messages_survive_a_restart_exactly_once() {
    let mut broker = start("");
    let mut sessions = Vec::new();
    for version in [Version::V311, Version::V5] {
        let id = unique("q2");
        let topic = format!("q2/{id}");
        let mut sub =
            Client::connect(&broker, Opts::new(version, &id).persistent().unacking()).await;
        assert_eq!(
            sub.subscribe(&topic, 2).await,
            2,
            "{version:?}: granted QoS"
        );
        let mut publisher = Client::connect(&broker, Opts::new(version, &unique("q2pub"))).await;
        for i in 0..3 {
            publisher
                .publish(&topic, 2, false, format!("flight {i}").as_bytes())
                .await;
        }
        let mut pkids = Vec::new();
        for i in 0..3 {
            let m = sub.recv().await;
            assert_eq!(
                (m.payload.as_slice(), m.qos, m.dup),
                (format!("flight {i}").as_bytes(), 2, false),
                "{version:?}"
            );
            pkids.push(m.pkid);
        }
        sub.disconnect().await;
        for i in 0..2 {
            publisher
                .publish(&topic, 2, false, format!("queued {i}").as_bytes())
                .await;
        }
        publisher.disconnect().await;
        sessions.push((version, id, topic, pkids));
    }

    restart(&mut broker);

    for (version, id, topic, pkids) in &sessions {
        let mut back = Client::connect(&broker, Opts::new(*version, id).persistent()).await;
        assert!(back.session_present, "{version:?}: session present");
        for (i, pkid) in pkids.iter().enumerate() {
            let m = back.recv().await;
            assert_eq!(
                (m.topic.as_str(), m.payload.as_slice(), m.qos, m.dup, m.pkid),
                (
                    topic.as_str(),
                    format!("flight {i}").as_bytes(),
                    2,
                    true,
                    *pkid
                ),
                "{version:?}: the unanswered message {i} again, with DUP and its packet id"
            );
        }
        for i in 0..2 {
            let m = back.recv().await;
            assert_eq!(
                (m.payload.as_slice(), m.qos),
                (format!("queued {i}").as_bytes(), 2),
                "{version:?}: queued message {i}"
            );
        }
        back.expect_none(Duration::from_millis(300)).await;
        back.disconnect().await;
    }

    // The completed flows are completed for good.
    restart(&mut broker);

    for (version, id, _, _) in sessions {
        let mut back = resume(&broker, version, &id).await;
        back.expect_none(Duration::from_millis(300)).await;
        back.disconnect().await;
    }
}

/// `memory` mode: sessions and retained messages live while the broker runs and are gone after
/// a restart (no session present, no queued message, no retained message), and nothing is
/// logged under the data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_mode_forgets_sessions_and_retained_messages_on_restart() {
    let mut broker = start("[durability]\nmode = \"memory\"\n");
    let mut ids = Vec::new();
    for version in [Version::V311, Version::V5] {
        let id = unique("mem");
        subscribe_offline(&broker, version, &id, &format!("mf/{id}/#")).await;
        let mut publisher = Client::connect(&broker, Opts::new(version, &unique("mpub"))).await;
        publisher
            .publish(&format!("mf/{id}/q"), 1, false, b"queued")
            .await;
        publisher
            .publish(&format!("mfr/{id}"), 1, true, b"retained")
            .await;
        publisher.disconnect().await;
        // While it runs the broker keeps both, as in any mode.
        // (Before the restart.)
        let mut sub = resume(&broker, version, &id).await;
        let m = sub.recv().await;
        assert_eq!(m.payload, b"queued", "{version:?}");
        sub.disconnect().await;
        let mut look = Client::connect(&broker, Opts::new(version, &unique("mlook"))).await;
        look.subscribe(&format!("mfr/{id}"), 1).await;
        let m = look.recv().await;
        assert_eq!((m.payload.as_slice(), m.retain), (&b"retained"[..], true));
        look.disconnect().await;
        // Queued again for the restart to forget.
        let mut publisher = Client::connect(&broker, Opts::new(version, &unique("mpub"))).await;
        publisher
            .publish(&format!("mf/{id}/q"), 1, false, b"queued again")
            .await;
        publisher.disconnect().await;
        ids.push((version, id));
    }

    restart(&mut broker);

    for (version, id) in ids {
        let mut back = Client::connect(&broker, Opts::new(version, &id).persistent()).await;
        assert!(
            !back.session_present,
            "{version:?}: no session after restart"
        );
        back.subscribe(&format!("mfr/{id}"), 1).await;
        back.expect_none(Duration::from_millis(300)).await;
        back.disconnect().await;
    }
    assert!(
        !broker.dir.join("data").join("journal").exists(),
        "memory mode wrote a journal"
    );
}
