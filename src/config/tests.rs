use super::load::merge_table;
use super::*;

/// Loads with only a profile set.
fn load_profile(profile: &str) -> Result<Config, ConfigError> {
    Config::load(&ServeOverrides {
        profile: Some(profile.to_string()),
        ..ServeOverrides::default()
    })
}

/// A scratch directory unique to one test.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringmq-config-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

#[test]
fn every_embedded_profile_loads_and_validates() {
    for (name, _) in embedded_profiles() {
        let config = load_profile(name).unwrap_or_else(|error| panic!("{name}: {error}"));
        config.validate().expect("validated");
    }
    let names: Vec<&str> = embedded_profiles().iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "default",
            "latency",
            "throughput",
            "small-device-fleet",
            "conformance"
        ]
    );
}

#[test]
fn default_sets_every_knob_with_documented_values() {
    let config = Config::load(&ServeOverrides::default()).expect("default loads");
    assert_eq!(config, Config::embedded_default());
    assert_eq!(config.listeners.mqtt, "127.0.0.1:1883".parse().unwrap());
    assert_eq!(config.listeners.http, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.listeners.placement, Placement::ReusePort);
    assert_eq!(config.shards.count, ShardCount::Auto);
    assert_eq!(config.limits.packet_size_max, 262_144);
    assert_eq!(config.limits.session_expiry_max_secs, 7 * 86_400);
    assert_eq!(
        config.delivery.qos0_slow_consumer,
        SlowConsumerPolicy::DropNew
    );
    assert!(config.mqtt.refused_topics.is_empty());
    // Memory per idle connection is the fleet figure: no huge pages unless asked for.
    assert!(!config.shards.huge_pages);
    assert!(load_profile("throughput").expect("loads").shards.huge_pages);
    assert!(
        !load_profile("small-device-fleet")
            .expect("loads")
            .shards
            .huge_pages
    );
    assert_eq!(config.data_dir, PathBuf::from("./ringmq-data"));
    assert!(config.shard_count() >= 1 && config.shard_count() <= SHARD_COUNT_MAX);
}

#[test]
fn profile_files_name_only_known_keys() {
    // Every knob in every profile exists in default.toml (the loader enforces it too, but
    // this names the file directly when someone adds a key to one profile only).
    let default: toml::Table = DEFAULT_TOML.parse().unwrap();
    for (name, text) in embedded_profiles() {
        let table: toml::Table = text.parse().unwrap();
        let mut base = default.clone();
        merge_table(&mut base, table, "").unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn conformance_profile_sets_operator_policy() {
    let config = load_profile("conformance").unwrap();
    assert_eq!(config.mqtt.refused_topics, ["test/nosubscribe"]);
    assert_eq!(config.limits.keep_alive_max_secs, 60);
    // Knobs the profile does not name keep the default.
    assert_eq!(config.limits.inflight_max, 1024);
}

#[test]
fn small_device_fleet_is_small() {
    let fleet = load_profile("small-device-fleet").unwrap();
    let default = Config::embedded_default();
    assert!(fleet.delivery.read_buffer_bytes < default.delivery.read_buffer_bytes);
    assert!(fleet.limits.outbox_bytes_max < default.limits.outbox_bytes_max);
    assert!(fleet.limits.connections_max > default.limits.connections_max);
}

#[test]
fn overlay_order_is_default_profile_config_flags() {
    let dir = scratch_dir("order");
    let config_path = dir.join("site.toml");
    std::fs::write(
        &config_path,
        "[limits]\ninflight_max = 7\n[listeners]\nmqtt = \"0.0.0.0:1999\"\n",
    )
    .unwrap();
    let overrides = ServeOverrides {
        profile: Some("latency".into()),
        config: Some(config_path),
        mqtt_listen: Some("127.0.0.1:2883".parse().unwrap()),
        shards: Some(ShardCount::Fixed(2)),
        placement: Some(Placement::RoundRobin),
        data_dir: Some("/tmp/ringmq-test-data".into()),
        http_listen: None,
        mqtts_listen: None,
        https_listen: None,
        durability: Some(DurabilityMode::Memory),
        repair: true,
        cluster: Some("nats://127.0.0.1:4222".into()),
        node_id: Some("n-1".into()),
        store: Some("postgres://ringmq@127.0.0.1:5432/ringmq".into()),
    };
    let config = Config::load(&overrides).unwrap();
    assert_eq!(
        config.control.store,
        "postgres://ringmq@127.0.0.1:5432/ringmq"
    );
    assert_eq!(config.cluster.nats, "nats://127.0.0.1:4222");
    assert_eq!(config.cluster.node_id, "n-1");
    assert_eq!(config.durability.mode, DurabilityMode::Memory);
    assert!(config.durability.repair);
    assert_eq!(
        config.durability.sync_interval_ms, 1000,
        "the profile's, untouched"
    );
    // From the profile (not overridden later).
    assert_eq!(config.shards.mesh_batch_max, 32);
    assert_eq!(
        config.delivery.qos0_slow_consumer,
        SlowConsumerPolicy::DropOldest
    );
    // The config file beats the profile (latency sets inflight_max = 32).
    assert_eq!(config.limits.inflight_max, 7);
    // Flags beat the config file.
    assert_eq!(config.listeners.mqtt, "127.0.0.1:2883".parse().unwrap());
    assert_eq!(config.shards.count, ShardCount::Fixed(2));
    assert_eq!(config.shard_count(), 2);
    assert_eq!(config.listeners.placement, Placement::RoundRobin);
    assert_eq!(config.data_dir, PathBuf::from("/tmp/ringmq-test-data"));
    // Untouched knobs keep the default.
    assert_eq!(config.listeners.http, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.limits.topic_levels_max, 32);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unknown_key_error_names_key_and_file() {
    let dir = scratch_dir("unknown");
    let path = dir.join("typo.toml");
    std::fs::write(&path, "[limits]\ninflight_maxx = 10\n").unwrap();
    let error = Config::load(&ServeOverrides {
        config: Some(path.clone()),
        ..ServeOverrides::default()
    })
    .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("limits.inflight_maxx"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("inflight_max"), "{message}");

    std::fs::write(&path, "[limitz]\ninflight_max = 10\n").unwrap();
    let error = load_profile(path.to_str().unwrap()).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("`limitz`"), "{message}");
    assert!(message.contains("profile file"), "{message}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn wrong_types_and_shapes_name_the_file() {
    let dir = scratch_dir("types");
    let path = dir.join("bad.toml");
    for (text, expected) in [
        ("[limits]\ninflight_max = \"many\"\n", "inflight_max"),
        (
            "[delivery]\nqos0_slow_consumer = \"drop-everything\"\n",
            "drop-everything",
        ),
        ("limits = 3\n", "`limits` must be a table"),
        ("[listeners.mqtt]\nport = 1\n", "single value"),
        ("[shards]\ncount = \"many\"\n", "auto"),
        ("[listeners]\nmqtt = \"not an address\"\n", "address"),
        ("[limits\n", "bad.toml"),
    ] {
        std::fs::write(&path, text).unwrap();
        let error = Config::load(&ServeOverrides {
            config: Some(path.clone()),
            ..ServeOverrides::default()
        })
        .unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, ConfigError::Parse { .. }),
            "{text}: {message}"
        );
        assert!(message.contains("bad.toml"), "{text}: {message}");
        assert!(message.contains(expected), "{text}: {message}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn invalid_values_are_rejected_with_the_key() {
    /// Breaks one knob of a valid configuration.
    type Mutation = fn(&mut Config);
    let cases: &[(Mutation, &str)] = &[
        (
            |c| c.limits.inflight_max = 0,
            "limits.inflight_max must be between 1 and 65535",
        ),
        (|c| c.shards.count = ShardCount::Fixed(0), "shards.count"),
        (|c| c.shards.count = ShardCount::Fixed(65), "shards.count"),
        (|c| c.shards.ring_entries = 1000, "power of two"),
        (|c| c.shards.mesh_batch_max = 5000, "shards.mesh_batch_max"),
        (
            |c| c.limits.packet_size_max = 300_000_000,
            "limits.packet_size_max",
        ),
        (
            |c| c.limits.outbox_bytes_max = 1000,
            "limits.outbox_bytes_max",
        ),
        (
            |c| c.limits.keep_alive_max_secs = 0,
            "limits.keep_alive_max_secs",
        ),
        (
            |c| c.limits.client_id_bytes_max = 8,
            "limits.client_id_bytes_max",
        ),
        (
            |c| c.limits.session_expiry_max_secs = u32::MAX,
            "session_expiry",
        ),
        (|c| c.mqtt.maximum_qos = 3, "mqtt.maximum_qos"),
        (|c| c.mqtt.sys_interval_secs = 0, "mqtt.sys_interval_secs"),
        (
            |c| c.mqtt.refused_topics = vec!["a/#/b".into()],
            "refused_topics",
        ),
        (
            |c| c.mqtt.refused_topics = vec!["a+/b".into()],
            "refused_topics",
        ),
        (
            |c| c.mqtt.refused_topics = vec![String::new()],
            "refused_topics",
        ),
        (
            |c| c.http.allowed_origins = vec!["null".into()],
            "http.allowed_origins",
        ),
        (
            |c| c.http.allowed_origins = vec!["https://app.example:99999".into()],
            "http.allowed_origins",
        ),
        (
            |c| c.http.allowed_origins = vec!["https://app.example/page".into()],
            "http.allowed_origins",
        ),
        (
            |c| c.delivery.read_buffer_bytes = 0,
            "delivery.read_buffer_bytes",
        ),
        (|c| c.listeners.backlog = 0, "listeners.backlog"),
        (|c| c.listeners.http = c.listeners.mqtt, "both"),
        (|c| c.data_dir = PathBuf::new(), "data_dir"),
        (
            |c| c.durability.sync_interval_ms = 5,
            "durability.sync_interval_ms",
        ),
        (
            |c| c.durability.compact_log_bytes = 1000,
            "durability.compact_log_bytes",
        ),
        (
            |c| c.durability.max_log_bytes = c.durability.compact_log_bytes - 1,
            "durability.max_log_bytes",
        ),
        (
            |c| c.listeners.mqtts = OptionalAddr(Some(c.listeners.http)),
            "listeners.http and listeners.mqtts",
        ),
        (
            |c| c.listeners.https = OptionalAddr(Some("127.0.0.1:8443".parse().unwrap())),
            "tls.cert_path",
        ),
        (
            |c| c.tls.client_auth = TlsClientAuth::Required,
            "tls.client_ca_path",
        ),
        (
            |c| c.tls.handshake_timeout_ms = 0,
            "tls.handshake_timeout_ms",
        ),
        (
            |c| c.durability.consume_grace_us = 100_001,
            "durability.consume_grace_us",
        ),
        (|c| c.cluster.node_id = "n1".into(), "cluster.node_id"),
        (
            |c| c.cluster.nats = "http://127.0.0.1:4222".into(),
            "cluster.nats",
        ),
        (
            |c| c.cluster.nats = "nats://u:secret@h:1 x".into(),
            "nats://***@h:1 x",
        ),
        (
            |c| {
                c.cluster.nats = "nats://127.0.0.1:4222".into();
                c.cluster.node_id = "a.b".into();
            },
            "cluster.node_id",
        ),
        (
            |c| c.cluster.subject_prefix = "a.b".into(),
            "cluster.subject_prefix",
        ),
        (|c| c.cluster.outbound_queue = 1, "cluster.outbound_queue"),
        (|c| c.control.store = "mysql://h/db".into(), "control.store"),
        (
            |c| c.control.store = "postgres://u:hunter2@h:port/db".into(),
            "postgres://***@h:port/db",
        ),
        (
            |c| c.control.reload_interval_ms = 0,
            "control.reload_interval_ms",
        ),
    ];
    for (mutate, expected) in cases {
        let mut config = Config::embedded_default();
        mutate(&mut config);
        let error = config.validate().unwrap_err();
        assert!(matches!(error, ConfigError::Invalid(_)));
        assert!(error.to_string().contains(expected), "{error}");
    }
    // Valid edge values pass.
    let mut config = Config::embedded_default();
    config.mqtt.refused_topics = vec!["test/nosubscribe".into(), "+/x/#".into(), "#".into()];
    config.limits.topic_alias_max = 0;
    config.listeners.mqtt = "127.0.0.1:0".parse().unwrap();
    config.listeners.http = "127.0.0.1:0".parse().unwrap();
    config.validate().unwrap();
}

#[test]
fn invalid_values_in_files_fail_load() {
    let dir = scratch_dir("invalid");
    let path = dir.join("zero.toml");
    std::fs::write(&path, "[limits]\ninflight_max = 0\n").unwrap();
    let error = load_profile(path.to_str().unwrap()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid configuration: limits.inflight_max must be between 1 and 65535, got 0"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn path_profile_works_and_unknown_name_is_reported() {
    let dir = scratch_dir("path");
    let path = dir.join("site.toml");
    std::fs::write(&path, "[shards]\ncount = 3\npin_cores = false\n").unwrap();
    let config = load_profile(path.to_str().unwrap()).unwrap();
    assert_eq!(config.shards.count, ShardCount::Fixed(3));
    assert!(!config.shards.pin_cores);

    let error = load_profile("turbo").unwrap_err();
    assert!(matches!(error, ConfigError::UnknownProfile { .. }));
    assert!(error.to_string().contains("small-device-fleet"), "{error}");

    // Looks like a path (ends in .toml), so it is read and the read fails.
    let error = load_profile("missing.toml").unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn to_toml_round_trips_through_a_layer() {
    for (name, _) in embedded_profiles() {
        let config = load_profile(name).unwrap();
        let text = config.to_toml();
        let dir = scratch_dir(&format!("roundtrip-{name}"));
        let path = dir.join("effective.toml");
        std::fs::write(&path, &text).unwrap();
        let reloaded = Config::load(&ServeOverrides {
            config: Some(path),
            ..ServeOverrides::default()
        })
        .unwrap();
        assert_eq!(reloaded, config, "{text}");
        std::fs::remove_dir_all(dir).ok();
    }
    let mut config = Config::embedded_default();
    config.shards.count = ShardCount::Fixed(4);
    assert!(config.to_toml().contains("count = 4"));
}

#[test]
fn shard_count_parses_from_text() {
    assert_eq!("auto".parse::<ShardCount>(), Ok(ShardCount::Auto));
    assert_eq!("AUTO".parse::<ShardCount>(), Ok(ShardCount::Auto));
    assert_eq!("8".parse::<ShardCount>(), Ok(ShardCount::Fixed(8)));
    assert!("0".parse::<ShardCount>().is_err());
    assert!("65".parse::<ShardCount>().is_err());
    assert!("-1".parse::<ShardCount>().is_err());
    assert!("many".parse::<ShardCount>().is_err());
}
