//! Broker-wide protocol settings a session enforces, derived once from the configuration.

use crate::mqtt::QoS;

/// What to do with a QoS 0 message for a subscriber whose outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos0Overflow {
    /// Drop the new message (the subscriber keeps what it already has queued).
    DropNew,
    /// Hold QoS 0 messages in a bounded ring beside the outbox and drop the oldest when it is
    /// full, so a slow subscriber gets the freshest data once it catches up.
    DropOldest,
    /// Disconnect the subscriber (v5 reason 0x97 Quota exceeded).
    Disconnect,
}

/// The limits and capabilities every session on every shard applies.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Our Receive Maximum: QoS 2 publishes a client may have unreleased, and the outbound window cap.
    pub inflight_max: u16,
    /// QoS 1/2 messages a session queues beyond its inflight window (online or offline).
    pub queue_messages_max: usize,
    /// Extra messages a connected session may hold beyond `queue_messages_max`: what can still be
    /// in flight from other shards after its publishers were paused (bounded by the mesh).
    pub queue_overshoot_max: usize,
    /// Encoded bytes a connection's outbox holds before QoS 0 overflows and QoS 1/2 wait in the queue.
    pub outbox_bytes_max: usize,
    /// Largest packet we accept (and announce as Maximum Packet Size).
    pub packet_size_max: u32,
    /// Topic aliases a v5 client may use towards us.
    pub topic_alias_max: u16,
    /// Levels a topic or filter may have.
    pub topic_levels_max: usize,
    /// Subscriptions one session may hold.
    pub subscriptions_per_client_max: usize,
    /// Keep-alive cap in seconds; v5 clients asking for more get Server Keep Alive.
    pub keep_alive_max_secs: u16,
    /// Session expiry cap in seconds (also the lifetime of a v3 persistent session).
    pub session_expiry_max_secs: u32,
    /// Filters whose SUBSCRIBE is refused with 0x80 / 0x87 (operator policy).
    pub refused_topics: Vec<String>,
    /// Highest QoS we grant.
    pub maximum_qos: QoS,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Whether wildcard filters are supported.
    pub wildcard_subscriptions: bool,
    /// Whether `$share/` filters are supported.
    pub shared_subscriptions: bool,
    /// Whether subscription identifiers are supported.
    pub subscription_identifiers: bool,
    /// QoS 0 slow-consumer policy.
    pub qos0_overflow: Qos0Overflow,
    /// Longest client id accepted, in bytes.
    pub client_id_bytes_max: usize,
    /// Accept clients without credentials (until the control plane holds users, every client).
    pub allow_anonymous: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            inflight_max: 64,
            queue_messages_max: 1000,
            queue_overshoot_max: 0,
            outbox_bytes_max: 1 << 20,
            packet_size_max: 256 * 1024,
            topic_alias_max: 64,
            topic_levels_max: 32,
            subscriptions_per_client_max: 100,
            keep_alive_max_secs: u16::MAX,
            session_expiry_max_secs: 7 * 24 * 3600,
            refused_topics: Vec::new(),
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcard_subscriptions: true,
            shared_subscriptions: true,
            subscription_identifiers: true,
            qos0_overflow: Qos0Overflow::DropNew,
            client_id_bytes_max: 256,
            allow_anonymous: true,
        }
    }
}
