//! The outbound QoS 1/2 window: messages holding a packet id, in send order.
//!
//! Packet ids are handed out in increasing order (wrapping at 65535, skipping 0), so while no
//! message stays in flight long enough for the ids to come around to it, the window is sorted
//! by id counted from its oldest entry, and finding an id (to allocate a free one, or for an
//! acknowledgement) is a binary search. A linear scan over a 512-message window was a quarter
//! of a shard's time in `ringmq-loadgen fanin -q 1`. Once the ids have come around to an
//! entry still in flight the order no longer holds; lookups scan until the window empties.

use std::collections::VecDeque;

use super::state::InFlight;

/// In-flight messages in send order, with packet-id lookup.
#[derive(Debug, Clone, Default)]
pub struct InFlightWindow {
    entries: VecDeque<InFlight>,
    /// Set once an id was allocated that is not after every id in flight (the ids came around
    /// to an entry still in flight): lookups scan. Cleared when the window empties.
    scattered: bool,
}

/// How far `id` comes after `base` in allocation order.
fn distance(base: u16, id: u16) -> u16 {
    id.wrapping_sub(base)
}

impl InFlightWindow {
    /// An empty window (usable in a `static`).
    pub const fn new() -> Self {
        InFlightWindow {
            entries: VecDeque::new(),
            scattered: false,
        }
    }

    /// Messages in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &InFlight> {
        self.entries.iter()
    }

    /// Adds a message sent with a packet id not in flight.
    pub fn push_back(&mut self, flight: InFlight) {
        if let (Some(front), Some(back)) = (self.entries.front(), self.entries.back()) {
            let base = front.packet_id;
            if distance(base, flight.packet_id) <= distance(base, back.packet_id) {
                self.scattered = true;
            }
        }
        self.entries.push_back(flight);
    }

    /// Takes out the message at `index`.
    pub fn remove(&mut self, index: usize) -> Option<InFlight> {
        let removed = self.entries.remove(index);
        if self.entries.is_empty() {
            self.scattered = false;
        }
        removed
    }

    /// Forgets every message.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.scattered = false;
    }

    /// Index of the message with this packet id.
    pub fn position(&self, packet_id: u16) -> Option<usize> {
        if self.scattered {
            return self.entries.iter().position(|f| f.packet_id == packet_id);
        }
        let base = self.entries.front()?.packet_id;
        let wanted = distance(base, packet_id);
        self.entries
            .binary_search_by_key(&wanted, |f| distance(base, f.packet_id))
            .ok()
    }

    /// True when a message holds this packet id.
    pub fn contains(&self, packet_id: u16) -> bool {
        self.position(packet_id).is_some()
    }
}

impl std::ops::Index<usize> for InFlightWindow {
    type Output = InFlight;

    fn index(&self, index: usize) -> &InFlight {
        &self.entries[index]
    }
}

impl std::ops::IndexMut<usize> for InFlightWindow {
    fn index_mut(&mut self, index: usize) -> &mut InFlight {
        &mut self.entries[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::state::{Queued, SessionState, Stage};
    use proptest::prelude::*;

    fn flight(packet_id: u16) -> InFlight {
        let message = std::sync::Arc::new(crate::message::Message {
            topic: crate::mqtt::Str::from("t"),
            payload: bytes::Bytes::new(),
            qos: crate::mqtt::QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            publisher: crate::mqtt::Str::from("p"),
            origin: crate::message::Origin::BROKER,
            namespace: None,
            device: None,
        });
        InFlight {
            packet_id,
            item: Queued {
                message,
                qos: crate::mqtt::QoS::AtLeastOnce,
                retain: false,
                subscription_ids: Vec::new(),
            },
            stage: Stage::AwaitPubAck,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Against a plain list: allocation never hands out an id in flight, lookups agree,
        /// through wrap-arounds, out-of-order acknowledgements and entries that stay in flight
        /// while the ids come around.
        #[test]
        fn lookups_match_a_linear_model(ops in proptest::collection::vec((0u8..4, any::<u16>()), 1..400)) {
            // Start near the wrap so it is crossed.
            let mut state = SessionState {
                next_packet_id: 65000,
                ..SessionState::default()
            };
            let mut model: Vec<u16> = Vec::new();
            for (op, pick) in ops {
                match op {
                    0 | 1 if model.len() < 2000 => {
                        // Allocate a burst so that the ids come around within a run.
                        for _ in 0..(1 + usize::from(pick % 300)) {
                            let id = state.allocate_packet_id();
                            prop_assert!(id != 0);
                            prop_assert!(!model.contains(&id), "id {} handed out twice", id);
                            state.inflight.push_back(flight(id));
                            model.push(id);
                        }
                    }
                    2 if !model.is_empty() => {
                        // Acknowledge the oldest most of the time, any one otherwise.
                        let index = if pick % 4 == 0 { usize::from(pick) % model.len() } else { 0 };
                        let id = model.remove(index);
                        let pos = state.inflight.position(id);
                        prop_assert_eq!(pos, Some(index));
                        prop_assert_eq!(state.inflight.remove(index).map(|f| f.packet_id), Some(id));
                    }
                    _ => {
                        prop_assert_eq!(state.inflight.contains(pick), model.contains(&pick));
                    }
                }
                let ids: Vec<u16> = state.inflight.iter().map(|f| f.packet_id).collect();
                prop_assert_eq!(&ids, &model);
                for &id in &model {
                    prop_assert!(state.inflight.contains(id));
                }
            }
        }
    }

    #[test]
    fn an_entry_left_behind_as_ids_come_around_is_never_reused() {
        let mut state = SessionState::default();
        let stuck = state.allocate_packet_id();
        state.inflight.push_back(flight(stuck));
        for _ in 0..140_000 {
            let id = state.allocate_packet_id();
            assert_ne!(id, stuck);
            state.inflight.push_back(flight(id));
            assert_eq!(state.inflight.position(id), Some(1));
            state.inflight.remove(1);
        }
        assert_eq!(state.inflight.position(stuck), Some(0));
        assert_eq!(state.inflight.len(), 1);
    }
}
