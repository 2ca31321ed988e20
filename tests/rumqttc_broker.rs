//! End-to-end tests through a third-party Rust client (rumqttc 0.24), MQTT 3.1.1 and 5.0, against a
//! `ringmq serve --shards 2 --placement round-robin` child process. Subscribers connect first and
//! publishers second, so with round-robin placement they sit on different shards.

mod common;

use std::time::{Duration, Instant};

use common::{unique, Broker, Client, Opts, Version};

const BOTH: [Version; 2] = [Version::V311, Version::V5];

async fn client(broker: &Broker, version: Version, prefix: &str) -> Client {
    Client::connect(broker, Opts::new(version, &unique(prefix))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_qos_0_1_2_across_shards() {
    let broker = Broker::start();
    for version in BOTH {
        for sub_qos in 0..=2u8 {
            let mut sub = client(&broker, version, "sub").await;
            assert_eq!(sub.subscribe("rs/qos", sub_qos).await, sub_qos);
            let mut publisher = client(&broker, version, "pub").await;
            for pub_qos in 0..=2u8 {
                let payload = format!("{version:?}-{sub_qos}-{pub_qos}");
                publisher
                    .publish("rs/qos", pub_qos, false, payload.as_bytes())
                    .await;
                let m = sub.recv().await;
                assert_eq!(m.topic, "rs/qos");
                assert_eq!(m.payload, payload.as_bytes());
                assert_eq!(
                    m.qos,
                    pub_qos.min(sub_qos),
                    "delivered at min(publish, granted) QoS"
                );
                assert!(!m.retain);
            }
            sub.expect_none(Duration::from_millis(200)).await;
            publisher.disconnect().await;
            sub.disconnect().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_publisher_order_qos1() {
    let broker = Broker::start();
    for version in BOTH {
        let mut sub = client(&broker, version, "osub").await;
        sub.subscribe("rs/order", 1).await;
        let mut publisher = client(&broker, version, "opub").await;
        let n = 500;
        for i in 0..n {
            publisher
                .publish_nowait("rs/order", 1, false, format!("{i:06}").as_bytes())
                .await;
        }
        publisher.wait_acks(n).await;
        for i in 0..n {
            let m = sub.recv().await;
            assert_eq!(
                m.payload,
                format!("{i:06}").as_bytes(),
                "message {i} out of order"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_and_dollar_topics() {
    let broker = Broker::start();
    for version in BOTH {
        let mut plus = client(&broker, version, "plus").await;
        plus.subscribe("rw/+/c", 1).await;
        let mut hash = client(&broker, version, "hash").await;
        hash.subscribe("#", 1).await;
        let mut publisher = client(&broker, version, "wpub").await;
        publisher.publish("rw/b/c", 1, false, b"1").await;
        publisher.publish("$rw/b/c", 1, false, b"dollar").await;
        publisher.publish("rw/b/c/d", 1, false, b"2").await;
        assert_eq!(plus.recv().await.payload, b"1");
        plus.expect_none(Duration::from_millis(300)).await;
        let got: Vec<Vec<u8>> = vec![hash.recv().await.payload, hash.recv().await.payload];
        assert_eq!(
            got,
            vec![b"1".to_vec(), b"2".to_vec()],
            "# must not match $-topics"
        );
        hash.expect_none(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_set_replace_clear() {
    let broker = Broker::start();
    for version in BOTH {
        let topic = format!("rs/ret/{version:?}");
        let mut publisher = client(&broker, version, "rpub").await;
        publisher.publish(&topic, 1, true, b"first").await;
        publisher.publish(&topic, 1, true, b"second").await;

        let mut sub = client(&broker, version, "rsub").await;
        sub.subscribe(&topic, 1).await;
        let m = sub.recv().await;
        assert_eq!((m.payload.as_slice(), m.retain), (&b"second"[..], true));
        sub.expect_none(Duration::from_millis(200)).await;

        publisher.publish(&topic, 1, true, b"").await;
        // the empty retained publish itself is forwarded live to the existing subscriber
        let live = sub.recv().await;
        assert!(live.payload.is_empty());

        let mut late = client(&broker, version, "rlate").await;
        late.subscribe(&topic, 1).await;
        late.expect_none(Duration::from_millis(400)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_on_abrupt_close_not_on_disconnect() {
    let broker = Broker::start();
    for version in BOTH {
        let topic = format!("rs/will/{version:?}");
        let mut watcher = client(&broker, version, "watch").await;
        watcher.subscribe(&topic, 1).await;

        let polite = Client::connect(
            &broker,
            Opts::new(version, &unique("polite")).will(&topic, b"polite", 1),
        )
        .await;
        polite.disconnect().await;
        watcher.expect_none(Duration::from_millis(500)).await;

        let abrupt = Client::connect(
            &broker,
            Opts::new(version, &unique("abrupt")).will(&topic, b"gone", 1),
        )
        .await;
        abrupt.drop_connection().await;
        let m = watcher.recv().await;
        assert_eq!(
            (m.topic.as_str(), m.payload.as_slice()),
            (topic.as_str(), &b"gone"[..])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_offline_queue() {
    let broker = Broker::start();
    for version in BOTH {
        let id = unique("persist");
        let mut sub = Client::connect(&broker, Opts::new(version, &id).persistent()).await;
        assert!(!sub.session_present);
        sub.subscribe("rs/offline", 2).await;
        sub.disconnect().await;

        let mut publisher = client(&broker, version, "ppub").await;
        for i in 0..5u8 {
            publisher
                .publish("rs/offline", 1 + i % 2, false, &[b'0' + i])
                .await;
        }
        publisher.publish("rs/offline", 0, false, b"qos0").await;

        let mut back = Client::connect(&broker, Opts::new(version, &id).persistent()).await;
        assert!(
            back.session_present,
            "{version:?}: session should be present"
        );
        for i in 0..5u8 {
            let m = back.recv().await;
            assert_eq!(m.payload, vec![b'0' + i]);
            assert_eq!(m.qos, 1 + i % 2);
        }
        // QoS 0 messages need not be queued for an offline session. The QoS 0 publish may
        // still reach the session after this reconnect (publishes on another connection have
        // no order with our CONNECT), so it may come once; nothing else may arrive.
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut qos0_seen = false;
        while let Some(m) = back
            .next_message(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            assert!(
                m.payload == b"qos0" && m.qos == 0 && !qos0_seen,
                "{version:?}: unexpected message {m:?}"
            );
            qos0_seen = true;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_splits_between_shards() {
    let broker = Broker::start();
    let mut m1 = client(&broker, Version::V5, "m1").await;
    let mut m2 = client(&broker, Version::V5, "m2").await;
    m1.subscribe("$share/grp/rs/shared", 1).await;
    m2.subscribe("$share/grp/rs/shared", 1).await;
    let mut publisher = client(&broker, Version::V5, "spub").await;
    let n = 100;
    for i in 0..n {
        publisher
            .publish_nowait("rs/shared", 1, false, format!("{i}").as_bytes())
            .await;
    }
    publisher.wait_acks(n).await;
    let mut a = Vec::new();
    let mut b = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.len() + b.len() < n && Instant::now() < deadline {
        tokio::select! {
            m = m1.recv() => a.push(m.payload),
            m = m2.recv() => b.push(m.payload),
        }
    }
    m1.expect_none(Duration::from_millis(200)).await;
    m2.expect_none(Duration::from_millis(100)).await;
    assert_eq!(a.len() + b.len(), n, "each message to exactly one member");
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both members get some: {} / {}",
        a.len(),
        b.len()
    );
    let mut all: Vec<Vec<u8>> = a.into_iter().chain(b).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "no duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_across_shards() {
    let broker = Broker::start();
    for version in BOTH {
        let id = unique("take");
        let topic = format!("rs/take/{version:?}");
        let mut first = Client::connect(&broker, Opts::new(version, &id).persistent()).await;
        first.subscribe(&topic, 1).await;
        let mut second = Client::connect(&broker, Opts::new(version, &id).persistent()).await;
        assert!(
            second.session_present,
            "the session follows the client to its new shard"
        );
        let reason = first.wait_closed().await;
        if version == Version::V5 {
            assert_eq!(reason, Some(0x8E), "v5: DISCONNECT Session taken over");
        }
        let mut publisher = client(&broker, version, "tpub").await;
        publisher.publish(&topic, 1, false, b"to-second").await;
        assert_eq!(second.recv().await.payload, b"to-second");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_disconnects_v5_with_0x8b() {
    let mut broker = Broker::start();
    let mut c = client(&broker, Version::V5, "shut").await;
    let status = tokio::task::block_in_place(|| broker.stop()).expect("exited within 10s");
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        c.wait_closed().await,
        Some(0x8B),
        "DISCONNECT Server shutting down"
    );
}
