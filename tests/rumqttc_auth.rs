//! Users and ACLs from the management API, enforced on rumqttc connections (MQTT 3.1.1 and 5.0)
//! on both shards of a `--shards 2 --placement round-robin` broker.

mod common;

use std::time::Duration;

use common::{unique, Broker, Client, Opts, Version};

const PASSWORD: &str = "rumqttc-password";

fn root_key(broker: &Broker) -> String {
    let path = broker.dir.join("data").join("bootstrap-key");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn post(broker: &Broker, key: &str, path: &str, body: serde_json::Value) -> u16 {
    let url = format!("http://127.0.0.1:{}{path}", broker.http_port);
    match ureq::post(&url)
        .set("Authorization", &format!("Bearer {key}"))
        .send_json(body)
    {
        Ok(response) => response.status(),
        Err(ureq::Error::Status(status, _)) => status,
        Err(error) => panic!("POST {path}: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_acls_apply_to_rumqttc_on_both_shards() {
    let broker = Broker::start();
    let key = root_key(&broker);
    let rule =
        serde_json::json!({"topic": "fleet/{username}/#", "action": "all", "permission": "allow"});
    assert_eq!(post(&broker, &key, "/v1/acl/rules", rule), 201);
    let user = serde_json::json!({"username": "truck-9", "password": PASSWORD});
    assert_eq!(post(&broker, &key, "/v1/users", user), 201);

    for version in [Version::V311, Version::V5] {
        let login = |prefix: &str| Opts::new(version, &unique(prefix)).login("truck-9", PASSWORD);
        // Two connections: one per shard.
        let mut sub = Client::connect(&broker, login("sub")).await;
        let mut publisher = Client::connect(&broker, login("pub")).await;
        assert_eq!(sub.subscribe("fleet/truck-9/#", 1).await, 1);
        publisher
            .publish("fleet/truck-9/gps", 1, false, b"52.1,4.3")
            .await;
        let m = sub.recv().await;
        assert_eq!(m.topic, "fleet/truck-9/gps");
        // QoS 0: a v5 PUBACK 0x87 would make rumqttc end the connection by itself.
        publisher
            .publish("fleet/truck-8/gps", 0, false, b"spoof")
            .await;
        sub.expect_none(Duration::from_millis(300)).await;
        // Refused with 0x80 (v3) / 0x87 (v5; rumqttc then ends the connection by itself).
        let mut other = Client::connect(&broker, login("other")).await;
        match (version, other.try_subscribe("fleet/truck-8/#", 1).await) {
            (Version::V311, Ok(code)) => assert_eq!(code, 0x80),
            (Version::V5, Err(why)) => assert!(why.contains("NotAuthorized"), "{why}"),
            (_, outcome) => panic!("{version:?}: unexpected SUBACK outcome {outcome:?}"),
        }

        let wrong = Opts::new(version, &unique("bad")).login("truck-9", "wrong-password");
        let refused = Client::try_connect(&broker, wrong).await;
        assert!(refused.is_err(), "a wrong password must be refused");
        let anonymous_ok = Client::try_connect(&broker, Opts::new(version, &unique("anon"))).await;
        assert!(
            anonymous_ok.is_ok(),
            "anonymous clients are allowed on a loopback-only broker"
        );
        publisher.disconnect().await;
        sub.disconnect().await;
        if let Ok(anonymous) = anonymous_ok {
            anonymous.disconnect().await;
        }
    }
}
