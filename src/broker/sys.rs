//! `$SYS/broker/…` statistics, published retained by shard 0 every `sys_interval_secs`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::shard::Shard;
use super::stats::Totals;
use crate::message::Message;
use crate::mqtt::{PublishProperties, QoS, Str};

/// Publishes the statistics topics through the normal routing path.
pub fn publish(shard: &mut Shard, totals: &Totals, started: Instant, now: Instant) {
    let uptime = now.duration_since(started).as_secs();
    let entries: [(&'static str, String); 9] = [
        (
            "$SYS/broker/version",
            format!("ringmq {}", env!("CARGO_PKG_VERSION")),
        ),
        ("$SYS/broker/uptime", format!("{uptime} seconds")),
        (
            "$SYS/broker/clients/connected",
            totals.clients_connected.to_string(),
        ),
        ("$SYS/broker/sessions/count", totals.sessions.to_string()),
        (
            "$SYS/broker/messages/received",
            totals.messages_received.to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            totals.messages_sent.to_string(),
        ),
        (
            "$SYS/broker/messages/dropped",
            totals.messages_dropped.to_string(),
        ),
        (
            "$SYS/broker/subscriptions/count",
            totals.subscriptions.to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            totals.retained.to_string(),
        ),
    ];
    for (topic, value) in entries {
        let message = Message {
            topic: Str::from_static(topic),
            payload: Bytes::from(value),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at: None,
            publisher: Str::from_static("$SYS"),
            origin: (0, 0),
            namespace: None,
            device: None,
        };
        shard.publish(Arc::new(message), now);
    }
}
