//! Durability through rumqttc (MQTT 3.1.1 and 5.0): a persistent session's subscriptions and
//! queued messages, and retained messages, survive a SIGTERM restart (periodic mode, the
//! default).

mod common;

use std::time::Duration;

use common::{unique, Broker, Client, Opts, Version};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_and_retained_messages_survive_a_restart() {
    let mut broker = Broker::start();
    let mut ids = Vec::new();
    for version in [Version::V311, Version::V5] {
        let id = unique("keep");
        let mut sub = Client::connect(&broker, Opts::new(version, &id).persistent()).await;
        sub.subscribe(&format!("rd/{id}/#"), 1).await;
        sub.disconnect().await;
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

    broker.restart();

    for (version, id) in ids {
        let mut back = Client::connect(&broker, Opts::new(version, &id).persistent()).await;
        assert!(back.session_present, "{version:?}: session present");
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
