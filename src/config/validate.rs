//! Range and cross-field checks on the merged configuration, each error naming its key.

use std::fmt;

use super::{
    Config, ConfigError, ShardCount, TlsClientAuth, MQTT_PACKET_SIZE_MAX, SHARD_COUNT_MAX,
};

impl Config {
    /// Checks ranges and cross-field consistency, naming the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let listeners = &self.listeners;
        // Port 0 asks the kernel for a free port, so two port-0 listeners do not collide.
        if listeners.mqtt == listeners.http && listeners.mqtt.port() != 0 {
            return invalid(format!(
                "listeners.mqtt and listeners.http are both {}",
                listeners.mqtt
            ));
        }
        check_range("listeners.backlog", listeners.backlog, 1, 65535)?;
        let named = [
            ("listeners.mqtt", Some(listeners.mqtt)),
            ("listeners.http", Some(listeners.http)),
            ("listeners.mqtts", listeners.mqtts.0),
            ("listeners.https", listeners.https.0),
        ];
        for (i, (name, addr)) in named.iter().enumerate() {
            for (other, other_addr) in &named[i + 1..] {
                if let (Some(a), Some(b)) = (addr, other_addr) {
                    if a == b && a.port() != 0 {
                        return invalid(format!("{name} and {other} are both {a}"));
                    }
                }
            }
        }
        let tls = &self.tls;
        if self.tls_enabled()
            && (tls.cert_path.as_os_str().is_empty() || tls.key_path.as_os_str().is_empty())
        {
            return invalid(
                "listeners.mqtts or listeners.https is set, so tls.cert_path and tls.key_path \
                 must name the certificate and key files"
                    .to_string(),
            );
        }
        if tls.client_auth != TlsClientAuth::None && tls.client_ca_path.as_os_str().is_empty() {
            return invalid(
                "tls.client_auth asks for client certificates, so tls.client_ca_path must name \
                 the CA file that signs them"
                    .to_string(),
            );
        }
        check_range(
            "tls.handshake_timeout_ms",
            tls.handshake_timeout_ms,
            100,
            600_000,
        )?;

        let shards = &self.shards;
        if let ShardCount::Fixed(count) = shards.count {
            check_range("shards.count", count, 1, SHARD_COUNT_MAX)?;
        }
        check_range("shards.ring_entries", shards.ring_entries, 8, 32768)?;
        if !shards.ring_entries.is_power_of_two() {
            return invalid(format!(
                "shards.ring_entries must be a power of two, got {}",
                shards.ring_entries
            ));
        }
        check_range(
            "shards.mesh_queue_capacity",
            shards.mesh_queue_capacity,
            1,
            1 << 20,
        )?;
        check_range(
            "shards.mesh_batch_max",
            shards.mesh_batch_max,
            1,
            shards.mesh_queue_capacity,
        )?;

        let limits = &self.limits;
        check_range(
            "limits.packet_size_max",
            limits.packet_size_max,
            64,
            MQTT_PACKET_SIZE_MAX,
        )?;
        check_range(
            "limits.connections_max",
            limits.connections_max,
            1,
            10_000_000,
        )?;
        check_range("limits.inflight_max", limits.inflight_max, 1, u16::MAX)?;
        // An outbox smaller than one packet could never deliver a maximum-size message.
        let packet_size_max = limits.packet_size_max as usize;
        check_range(
            "limits.outbox_bytes_max",
            limits.outbox_bytes_max,
            packet_size_max,
            1 << 32,
        )
        .map_err(|_| {
            ConfigError::Invalid(format!(
                "limits.outbox_bytes_max must be between limits.packet_size_max ({packet_size_max}) and {}, got {}",
                1u64 << 32,
                limits.outbox_bytes_max
            ))
        })?;
        check_range(
            "limits.offline_queue_max",
            limits.offline_queue_max,
            1,
            10_000_000,
        )?;
        check_range("limits.topic_levels_max", limits.topic_levels_max, 1, 1024)?;
        check_range(
            "limits.subscriptions_per_client_max",
            limits.subscriptions_per_client_max,
            1,
            1_000_000,
        )?;
        check_range(
            "limits.keep_alive_max_secs",
            limits.keep_alive_max_secs,
            1,
            u16::MAX,
        )?;
        check_range(
            "limits.connect_timeout_ms",
            limits.connect_timeout_ms,
            100,
            600_000,
        )?;
        // u32::MAX is MQTT's "never expires", which a bounded broker does not grant.
        check_range(
            "limits.session_expiry_max_secs",
            limits.session_expiry_max_secs,
            0,
            u32::MAX - 1,
        )?;
        check_range("limits.rest_batch_max", limits.rest_batch_max, 1, 10_000)?;
        check_range(
            "limits.stream_ring_frames",
            limits.stream_ring_frames,
            1,
            1_000_000,
        )?;
        check_range(
            "limits.retained_messages_max",
            limits.retained_messages_max,
            1,
            100_000_000,
        )?;
        // MQTT requires servers to accept client identifiers of at least 23 bytes.
        check_range(
            "limits.client_id_bytes_max",
            limits.client_id_bytes_max,
            23,
            65535,
        )?;

        let org = &self.org_limits;
        check_range(
            "org_limits.retained_bytes_max",
            org.retained_bytes_max,
            1,
            1 << 40,
        )?;
        check_range(
            "org_limits.offline_queue_bytes_max",
            org.offline_queue_bytes_max,
            1,
            1 << 40,
        )?;
        check_range("org_limits.users_max", org.users_max, 1, 100_000_000)?;
        check_range("org_limits.acl_rules_max", org.acl_rules_max, 1, 10_000_000)?;
        check_range("org_limits.keys_max", org.keys_max, 1, 10_000_000)?;
        check_range("org_limits.streams_max", org.streams_max, 1, 10_000_000)?;
        check_range(
            "org_limits.token_exchanges_per_minute_max",
            org.token_exchanges_per_minute_max,
            1,
            1_000_000,
        )?;
        for origin in &self.http.allowed_origins {
            // The same parser judges the requests' Origin headers: an entry it could not read
            // would silently allow nothing.
            if let Err(error) = ringmq_http::origin::Origin::parse(origin) {
                return invalid(format!(
                    "http.allowed_origins: {origin:?} is not an origin (scheme://host[:port], no path): {error}"
                ));
            }
        }
        check_range(
            "http.body_timeout_ms",
            self.http.body_timeout_ms,
            100,
            600_000,
        )?;
        check_range(
            "durability.sync_interval_ms",
            self.durability.sync_interval_ms,
            10,
            60_000,
        )?;
        self.validate_cluster()?;
        self.validate_control()?;
        check_range(
            "durability.consume_grace_us",
            self.durability.consume_grace_us,
            0,
            100_000,
        )?;
        check_range(
            "durability.compact_log_bytes",
            self.durability.compact_log_bytes,
            1 << 20,
            u64::MAX,
        )?;
        check_range(
            "durability.max_log_bytes",
            self.durability.max_log_bytes,
            self.durability.compact_log_bytes,
            u64::MAX,
        )?;

        let delivery = &self.delivery;
        check_range(
            "delivery.read_buffer_bytes",
            delivery.read_buffer_bytes,
            128,
            16 << 20,
        )?;
        if delivery.read_buffer_bytes > delivery.read_budget_bytes {
            return Err(ConfigError::Invalid(format!(
                "delivery.read_buffer_bytes ({}) must not exceed delivery.read_budget_bytes ({})",
                delivery.read_buffer_bytes, delivery.read_budget_bytes
            )));
        }
        check_range(
            "delivery.read_budget_bytes",
            delivery.read_budget_bytes,
            512,
            64 << 20,
        )?;
        check_range(
            "delivery.write_batch_bytes",
            delivery.write_batch_bytes,
            512,
            16 << 20,
        )?;

        let mqtt = &self.mqtt;
        check_range("mqtt.sys_interval_secs", mqtt.sys_interval_secs, 1, 86_400)?;
        check_range("mqtt.maximum_qos", mqtt.maximum_qos, 0, 2)?;
        for filter in &mqtt.refused_topics {
            if let Err(reason) = check_filter(filter, limits.topic_levels_max) {
                return invalid(format!(
                    "mqtt.refused_topics entry {filter:?} is not a valid topic filter: {reason}"
                ));
            }
        }

        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir must not be empty".to_string());
        }
        if self.data_dir.to_str().is_none() {
            return invalid(format!(
                "data_dir must be valid UTF-8, got {}",
                self.data_dir.display()
            ));
        }
        Ok(())
    }
}

/// Checks that a refused-topics entry is a well-formed MQTT topic filter.
fn check_filter(filter: &str, levels_max: usize) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("it is empty");
    }
    if filter.len() > usize::from(u16::MAX) {
        return Err("it is longer than 65535 bytes");
    }
    if filter.contains('\0') {
        return Err("it contains a NUL character");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    if levels.len() > levels_max {
        return Err("it has more levels than limits.topic_levels_max");
    }
    let last = levels.len() - 1;
    for (index, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || index != last) {
            return Err("`#` must be a whole level and the last one");
        }
        if level.contains('+') && *level != "+" {
            return Err("`+` must be a whole level");
        }
    }
    Ok(())
}

/// Fails with `NAME must be between LOW and HIGH, got VALUE` when `value` is out of range.
fn check_range<T>(name: &str, value: T, low: T, high: T) -> Result<(), ConfigError>
where
    T: PartialOrd + fmt::Display,
{
    if value < low || value > high {
        return invalid(format!(
            "{name} must be between {low} and {high}, got {value}"
        ));
    }
    Ok(())
}

/// Shorthand for an `Invalid` error.
pub(super) fn invalid<T>(message: String) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid(message))
}

impl Config {
    /// `[cluster]`: a NATS URL we can use, a node id and a subject prefix NATS accepts.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        let token_ok = |text: &str, max: usize| {
            !text.is_empty()
                && text.len() <= max
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !token_ok(&cluster.subject_prefix, 32) {
            return invalid(format!(
                "cluster.subject_prefix must be 1 to 32 letters, digits, `-` or `_`, got {:?}",
                cluster.subject_prefix
            ));
        }
        check_range(
            "cluster.outbound_queue",
            cluster.outbound_queue,
            16,
            1 << 22,
        )?;
        check_range("cluster.inbound_queue", cluster.inbound_queue, 16, 1 << 22)?;
        if cluster.nats.is_empty() {
            if !cluster.node_id.is_empty() {
                return invalid(
                    "cluster.node_id (--node-id) is set but cluster.nats (--cluster) is not".into(),
                );
            }
            return Ok(());
        }
        let scheme_ok = ["nats://", "tls://"]
            .iter()
            .any(|scheme| cluster.nats.starts_with(scheme));
        if !scheme_ok || cluster.nats.len() > 2048 || cluster.nats.contains(char::is_whitespace) {
            return invalid(format!(
                "cluster.nats (--cluster) must be a nats:// or tls:// URL such as nats://127.0.0.1:4222, got {:?}",
                redact(&cluster.nats)
            ));
        }
        if !token_ok(&cluster.node_id, 64) {
            return invalid(format!(
                "cluster.node_id (--node-id) must be 1 to 64 letters, digits, `-` or `_` when cluster.nats is set, got {:?}",
                cluster.node_id
            ));
        }
        Ok(())
    }
}

impl Config {
    /// `[control]`: a PostgreSQL URL we can parse (reaching it is checked at start).
    fn validate_control(&self) -> Result<(), ConfigError> {
        check_range(
            "control.reload_interval_ms",
            self.control.reload_interval_ms,
            10,
            60_000,
        )?;
        let url = &self.control.store;
        if url.is_empty() {
            return Ok(());
        }
        if url.len() > 2048 {
            return invalid("control.store (--store) is longer than 2048 bytes".into());
        }
        if let Err(error) = crate::control::store::check_postgres_url(url) {
            return invalid(format!(
                "control.store (--store) must be a PostgreSQL URL such as \
                 postgres://ringmq@127.0.0.1:5432/ringmq, got {:?}: {error}",
                crate::control::store::redact_url(url)
            ));
        }
        Ok(())
    }
}

/// A NATS URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
