//! The part of a session that outlives its connection.
//!
//! Everything here is owned, `Send` data (messages are `Arc`s), so a persistent session can move
//! to another shard through the mesh on takeover, and can later be serialized to disk as is.

use std::collections::VecDeque;

use super::window::InFlightWindow;
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
    pub queue: Lazy<VecDeque<Queued>>,
    /// QoS 0 messages waiting for outbox room under the drop-oldest policy (bounded like `queue`).
    pub qos0_queue: Lazy<VecDeque<Queued>>,
    /// Messages holding a packet id, in send order (bounded by the inflight window).
    pub inflight: Lazy<InFlightWindow>,
    /// Inbound QoS 2 packet ids received and not yet released (bounded by our Receive Maximum).
    pub incoming_qos2: Lazy<Vec<u16>>,
    /// Next packet id to try.
    pub next_packet_id: u16,
    /// Session Expiry Interval in seconds after the connection closes (0: ends with it).
    pub expiry_interval_secs: u32,
    /// Messages dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Tag of the principal the session belongs to (0: anonymous); it moves with the session
    /// and is stored with it, so after a move or a restart another login is still refused.
    pub owner: u64,
}

impl SessionState {
    /// Frees the queues that are empty (a quiet connection's session then holds a pointer
    /// each instead of a collection header each).
    pub fn release_empty(&mut self) {
        self.queue.release_if_empty();
        self.qos0_queue.release_if_empty();
        self.inflight.release_if_empty();
        self.incoming_qos2.release_if_empty();
    }

    /// Allocates a packet id not in use by an in-flight message.
    pub fn allocate_packet_id(&mut self) -> u16 {
        // The window is far below 65535, so a free id exists within a few steps.
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if self.next_packet_id == 0 {
                self.next_packet_id = 1;
            }
            let id = self.next_packet_id;
            if !self.inflight.contains(id) {
                return id;
            }
        }
    }

    /// Index of the in-flight entry with this packet id.
    pub fn inflight_position(&self, packet_id: u16) -> Option<usize> {
        self.inflight.position(packet_id)
    }
}

/// A collection allocated on first mutable use: idle sessions have empty queues, and a boxed
/// one costs a pointer instead of a 24–32 byte header in every session (memory per idle
/// connection). Reads of an unallocated one see a shared empty collection.
#[derive(Debug, Clone, Default)]
pub struct Lazy<T>(Option<Box<T>>);

/// Collections [`Lazy`] can hold: they have a shared empty value and know when they are empty.
pub trait LazyCollection: Default + 'static {
    /// The shared empty value.
    fn empty() -> &'static Self;
    /// True when nothing is in it.
    fn is_empty_collection(&self) -> bool;
}

impl LazyCollection for VecDeque<Queued> {
    fn empty() -> &'static Self {
        static EMPTY: VecDeque<Queued> = VecDeque::new();
        &EMPTY
    }
    fn is_empty_collection(&self) -> bool {
        self.is_empty()
    }
}

impl LazyCollection for InFlightWindow {
    fn empty() -> &'static Self {
        static EMPTY: InFlightWindow = InFlightWindow::new();
        &EMPTY
    }
    fn is_empty_collection(&self) -> bool {
        self.is_empty()
    }
}

impl LazyCollection for Vec<u16> {
    fn empty() -> &'static Self {
        static EMPTY: Vec<u16> = Vec::new();
        &EMPTY
    }
    fn is_empty_collection(&self) -> bool {
        self.is_empty()
    }
}

impl<T: LazyCollection> Lazy<T> {
    /// Frees the collection if it holds nothing.
    pub fn release_if_empty(&mut self) {
        if self.0.as_deref().is_some_and(T::is_empty_collection) {
            self.0 = None;
        }
    }

    /// True while no collection is allocated.
    pub fn is_released(&self) -> bool {
        self.0.is_none()
    }
}

impl<T: LazyCollection> std::ops::Deref for Lazy<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self.0.as_deref() {
            Some(collection) => collection,
            None => T::empty(),
        }
    }
}

impl<T: LazyCollection> std::ops::DerefMut for Lazy<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.get_or_insert_with(Box::default)
    }
}

#[cfg(test)]
mod lazy_tests {
    use super::*;

    #[test]
    fn lazy_queues_allocate_on_write_and_release_when_empty() {
        let mut state = SessionState::default();
        assert!(state.inflight.is_empty() && state.inflight.is_released());
        assert!(state.queue.iter().next().is_none());
        state.incoming_qos2.push(7);
        assert!(!state.incoming_qos2.is_released());
        state.release_empty();
        assert_eq!(&state.incoming_qos2[..], [7], "a non-empty queue is kept");
        state.incoming_qos2.clear();
        state.release_empty();
        assert!(state.incoming_qos2.is_released());
        assert!(state.incoming_qos2.is_empty());
    }
}
