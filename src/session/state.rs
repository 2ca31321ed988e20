//! The part of a session that outlives its connection.
//!
//! Everything here is owned, `Send` data (messages are `Arc`s), so a persistent session can move
//! to another shard through the mesh on takeover, and can later be serialized to disk as is.

use std::collections::VecDeque;

use crate::message::SharedMessage;
use crate::mqtt::{QoS, Str, SubscriptionOptions};

/// One subscription as the client asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// Options from the SUBSCRIBE (granted QoS already applied).
    pub options: SubscriptionOptions,
    /// v5 Subscription Identifier sent back with every matching message.
    pub identifier: Option<u32>,
}

/// A message waiting for (or in) the outbound window, with its delivery parameters.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The shared message.
    pub message: SharedMessage,
    /// QoS of this delivery (minimum of published and granted).
    pub qos: QoS,
    /// RETAIN flag on this delivery (Retain As Published / retained on subscribe).
    pub retain: bool,
    /// Subscription identifiers of every matching subscription.
    pub subscription_ids: Vec<u32>,
}

/// Where an outbound QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// QoS 1 sent, waiting for PUBACK.
    AwaitPubAck,
    /// QoS 2 sent, waiting for PUBREC.
    AwaitPubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitPubComp,
}

/// An outbound message holding a packet id.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// Packet id in use until the flow completes.
    pub packet_id: u16,
    /// The delivery.
    pub item: Queued,
    /// Progress of the QoS flow.
    pub stage: Stage,
}

/// A session's subscriptions by filter. The hasher has fixed keys, so the map holds no 32-byte
/// random state (every session carries one: memory per idle connection); its size is bounded
/// by the per-session subscription limit, so colliding filters cost only their own session.
pub type SubscriptionMap =
    std::collections::HashMap<Str, Subscription, std::hash::BuildHasherDefault<ahash::AHasher>>;

/// Persistent session state: subscriptions, queued and in-flight messages, QoS 2 receipts.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    /// Subscriptions by their full filter text (including any `$share/group/` prefix).
    pub subscriptions: SubscriptionMap,
    /// QoS 1/2 messages not yet sent, oldest first (bounded by `Rules::queue_messages_max`).
    pub queue: VecDeque<Queued>,
    /// QoS 0 messages waiting for outbox room under the drop-oldest policy (bounded like `queue`).
    pub qos0_queue: VecDeque<Queued>,
    /// Messages holding a packet id, in send order (bounded by the inflight window).
    pub inflight: VecDeque<InFlight>,
    /// Inbound QoS 2 packet ids received and not yet released (bounded by our Receive Maximum).
    pub incoming_qos2: Vec<u16>,
    /// Next packet id to try.
    pub next_packet_id: u16,
    /// Session Expiry Interval in seconds after the connection closes (0: ends with it).
    pub expiry_interval_secs: u32,
    /// Messages dropped because the queue was full.
    pub dropped_queue_full: u64,
}

impl SessionState {
    /// Allocates a packet id not in use by an in-flight message.
    pub fn allocate_packet_id(&mut self) -> u16 {
        // The window is far below 65535, so a free id exists within a few steps.
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if self.next_packet_id == 0 {
                self.next_packet_id = 1;
            }
            let id = self.next_packet_id;
            if !self.inflight.iter().any(|f| f.packet_id == id) {
                return id;
            }
        }
    }

    /// Index of the in-flight entry with this packet id.
    pub fn inflight_position(&self, packet_id: u16) -> Option<usize> {
        self.inflight.iter().position(|f| f.packet_id == packet_id)
    }
}
