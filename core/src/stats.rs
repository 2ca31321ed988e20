//! Per-shard counters: written only by their shard, read by `$SYS` and metrics.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A counter with one writer (its shard): a load and a store, no locked read-modify-write.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge with one writer.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds `delta` (may be negative).
    pub fn add(&self, delta: i64) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + delta, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one shard.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Connected MQTT clients (CONNACK sent, not yet closed).
    pub clients_connected: Gauge,
    /// Open sockets, including those not yet past CONNECT.
    pub sockets_open: Gauge,
    /// PUBLISH packets received from clients.
    pub messages_received: Counter,
    /// PUBLISH packets written to subscribers.
    pub messages_sent: Counter,
    /// Deliveries dropped (expired, too large, QoS 0 overflow, full queue).
    pub messages_dropped: Counter,
    /// Sessions on this shard (connected or persistent), refreshed by housekeeping.
    pub sessions: Gauge,
    /// Local subscriptions, refreshed by housekeeping.
    pub subscriptions: Gauge,
    /// Retained messages in this shard's replica, refreshed by housekeeping.
    pub retained: Gauge,
    /// REST publish requests answered, by status (see [`REST_STATUSES`]).
    pub rest_publishes: [Counter; REST_STATUSES.len()],
    /// REST requests refused by the per-org rate limit or monthly quota.
    pub rate_limited: Counter,
    /// Open WebSocket and SSE stream subscribers.
    pub stream_subscribers: Gauge,
    /// Frames dropped from stream subscribers' rings (drop-oldest when a client falls behind).
    pub stream_frames_dropped: Counter,
    /// QoS 1/2 deliveries sent and not yet acknowledged, refreshed once a second.
    pub inflight: Gauge,
}

/// The statuses REST publish answers with, in the order of [`ShardStats::rest_publishes`].
pub const REST_STATUSES: [u16; 11] = [200, 202, 400, 401, 403, 409, 413, 422, 429, 500, 503];

impl ShardStats {
    /// Counts one REST publish answered with `status` (others count as 503's neighbour: 500s
    /// are not expected and show up in the logs).
    pub fn count_rest(&self, status: u16) {
        if let Some(index) = REST_STATUSES.iter().position(|s| *s == status) {
            self.rest_publishes[index].inc();
        }
    }
}

impl ShardStats {
    /// Adjusts the connected-clients gauge.
    pub fn add_connection(&self, delta: i64) {
        self.clients_connected.add(delta);
    }
}

/// Sums over every shard.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Connected clients.
    pub clients_connected: i64,
    /// Messages received.
    pub messages_received: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages dropped.
    pub messages_dropped: u64,
    /// Sessions.
    pub sessions: i64,
    /// Subscriptions.
    pub subscriptions: i64,
    /// Retained messages (one replica's count).
    pub retained: i64,
}

/// Adds up the counters of all shards.
pub fn totals(all: &[std::sync::Arc<ShardStats>]) -> Totals {
    let mut t = Totals::default();
    for s in all {
        t.clients_connected += s.clients_connected.get();
        t.messages_received += s.messages_received.get();
        t.messages_sent += s.messages_sent.get();
        t.messages_dropped += s.messages_dropped.get();
        t.sessions += s.sessions.get();
        t.subscriptions += s.subscriptions.get();
        t.retained = t.retained.max(s.retained.get());
    }
    t
}
