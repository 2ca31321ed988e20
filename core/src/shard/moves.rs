//! A persistent session moving to another shard, without losing what is routed to it meanwhile.
//!
//! When a client reconnects on another shard, its session moves there (a takeover). Other
//! shards route by their replicas of the subscription index, which learn of the move over the
//! mesh, each at its own pace, so for a while a publisher may still send to the old shard, or
//! to both. The move therefore runs in four steps:
//!
//! 1. The old shard turns the session's entry into a **forwarder**: it keeps the slot and its
//!    subscriptions in the trie (so the index still names it), sends the state in the `Grant`,
//!    and from then on sends every delivery that reaches the slot to the new shard as a
//!    `Forward`.
//! 2. The new shard **seats** the state at once, as an offline session with its subscriptions
//!    (announcing them), opens a **transit** for it, and sends `MoveFence` to every shard. A
//!    shard answers the old one (`MoveFenceAck`) after applying everything the new shard sent
//!    before, so once all have answered, every replica routes to the new shard.
//! 3. Meanwhile the new shard holds the deliveries that reach the session directly and passes
//!    on the forwarded ones at once, dropping a copy of a message that came both ways (a
//!    publisher that routed to both shards), or that the session brought queued. Per topic,
//!    forwarded messages are older than those held (a publisher's route for a topic goes from
//!    the old shard, to both, to the new one), so each publisher's order is kept. QoS 0 comes
//!    by the old shard's lane only until the move settles: that shard may have dropped a copy
//!    whose direct twin would come out of order.
//! 4. With every answer in, the old shard drops its forwarder (and the subscriptions, which it
//!    announces) and sends `ForwardEnd`; the new shard then releases what it held. If it passed
//!    forwarded messages on, it fences once more: until every shard has answered, a direct copy
//!    of one of them (from a publisher whose lane to this shard is slower than the old
//!    shard's) is dropped as the duplicate it is.
//!
//! A session already in place on the claiming connection's shard does not move at all (see
//! `PendingConnect::resume`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::timers::TimerKind;
use ahash::AHashMap;

use super::{Entry, MeshMsg, Shard, Slot};
use ringmq_proto::message::SharedMessage;
use ringmq_proto::mqtt::{QoS, Str};
use ringmq_proto::session::{Queued, Session, SessionState};

/// The moves a shard takes part in, old side and new side, indexed both ways (a reconnect
/// storm can put thousands in flight; a delivery looks its slot up once).
#[derive(Debug, Default)]
pub(super) struct Moves {
    /// Old side: slots whose sessions left, by slot.
    forwarders: AHashMap<Slot, Forwarder>,
    /// Old side: the same, by the token of the connection they moved to.
    forwarder_slots: AHashMap<u64, Slot>,
    /// New side: sessions that arrived, by slot.
    transits: AHashMap<Slot, Transit>,
    /// New side: the same, by token.
    transit_slots: AHashMap<u64, Slot>,
}

impl Moves {
    /// True when no move is under way (the delivery path's one check).
    pub(super) fn is_empty(&self) -> bool {
        self.forwarders.is_empty() && self.transits.is_empty()
    }

    /// Forwarders and transits under way (for tests and gauges).
    #[cfg(test)]
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.forwarders.len(), self.transits.len())
    }
}

/// The old shard's side of a move: where deliveries to the slot go now.
#[derive(Debug)]
struct Forwarder {
    /// The session's new shard.
    to: u16,
    /// Token of the connection it moved to.
    token: u64,
    /// `MoveFenceAck`s received.
    acks: u16,
}

/// The new shard's side of a move, until the old shard's `ForwardEnd`.
#[derive(Debug)]
struct Transit {
    /// Token of the connection it moved to.
    token: u64,
    /// Deliveries that reached it directly, released at `ForwardEnd` (bounded by the session's
    /// queue limit).
    held: VecDeque<Queued>,
    /// Messages already passed on from the forwarder: the direct copy of one of them (a
    /// publisher that routed to both shards, its direct copy late) is a duplicate. Holding the
    /// `Arc`s keeps their addresses from being reused while compared.
    passed: VecDeque<SharedMessage>,
    /// Set once the forwarder ended: answers to the settling fence so far. Until every shard
    /// answered, a direct copy of a message already forwarded may still arrive (its publisher's
    /// lane to this shard can be slower than the old shard's).
    settle_acks: Option<u16>,
}

impl Shard {
    /// Step 1, on the old shard: the session in `slot` moves to `to` for the connection `token`;
    /// returns its state for the `Grant`.
    pub(super) fn make_forwarder(
        &mut self,
        slot: Slot,
        to: u16,
        token: u64,
    ) -> Option<Box<SessionState>> {
        // It may itself have just arrived, its transit still open: what that holds stays held
        // and follows, forwarded, once the transit's own forwarding ends (put into the state
        // now, it would go ahead of older messages still being forwarded to it).
        self.generation_counter = self.generation_counter.wrapping_add(1);
        let generation = self.generation_counter;
        let entry = self.entries.get_mut(slot)?;
        // Void its timers, and keep what the trie and the shared groups read of it (its
        // subscriptions stay in the trie until the forwarder goes).
        entry.generation = generation;
        entry.principal = None;
        let mut stand_in = Session::new(entry.session.client_id.clone(), 0);
        stand_in.origin = entry.session.origin;
        stand_in.state.subscriptions = entry.session.state.subscriptions.clone();
        let session = std::mem::replace(&mut entry.session, stand_in);
        let (org, bytes) = (entry.org, entry.offline_bytes);
        entry.offline_bytes = 0;
        let blocked = entry.blocked.take();
        self.uncount_offline(org, bytes);
        self.release(blocked);
        self.by_client_id.remove(session.client_id.as_bytes(), slot);
        self.moves.forwarder_slots.insert(token, slot);
        self.moves
            .forwarders
            .insert(slot, Forwarder { to, token, acks: 0 });
        Some(Box::new(session.state))
    }

    /// Step 2, on the new shard: the moved state becomes an offline session here, with its
    /// subscriptions in force; returns its slot, its generation and the messages it brought.
    pub(super) fn seat(
        &mut self,
        client_id: Str,
        state: SessionState,
        token: u64,
        now: Instant,
    ) -> (Slot, u32, VecDeque<SharedMessage>) {
        let org = ringmq_router::unscoped(&client_id).0;
        // What it brings queued or in flight: a direct copy of one of these is a duplicate.
        let limit = self.rules.queue_messages_max;
        let brought: VecDeque<SharedMessage> = state
            .inflight
            .iter()
            .map(|f| &f.item)
            .chain(state.queue.iter())
            .map(|item| Arc::clone(&item.message))
            .take(limit)
            .collect();
        let expiry = state.expiry_interval_secs;
        let mut session = Session::from_state(client_id, state);
        session.disconnected_at = Some(now);
        self.generation_counter = self.generation_counter.wrapping_add(1);
        let generation = self.generation_counter;
        let subscriptions: Vec<_> = session
            .state
            .subscriptions
            .iter()
            .map(|(f, s)| (f.clone(), *s))
            .collect();
        // It came from another shard, where it may have been checkpointed.
        let slot = self.entries.insert(Entry {
            persisted: true,
            ..Entry::offline(session, generation, token, org, now)
        });
        self.by_client_id.insert(&self.entries, slot);
        for (filter, subscription) in subscriptions {
            self.add_subscription(slot, &filter, subscription);
        }
        self.touch(slot);
        // If its connection never attaches, it expires like any offline session.
        let at = now + Duration::from_secs(u64::from(expiry));
        self.timers
            .push(at, TimerKind::SessionExpiry, slot, generation, 0);
        (slot, generation, brought)
    }

    /// Step 2, on the new shard: opens the transit for `token` (seated in `slot`, if it could
    /// be) and asks every shard to answer the old one, `from`, once it routes here.
    pub(super) fn begin_transit(
        &mut self,
        from: u16,
        token: u64,
        seated: Option<(Slot, VecDeque<SharedMessage>)>,
    ) {
        if let Some((slot, brought)) = seated {
            self.moves.transit_slots.insert(token, slot);
            self.moves.transits.insert(
                slot,
                Transit {
                    token,
                    held: VecDeque::new(),
                    passed: brought,
                    settle_acks: None,
                },
            );
        }
        self.broadcast(|| MeshMsg::MoveFence {
            ghost_shard: from,
            token,
        });
    }

    /// Where a delivery to `slot` goes while a move involves it: forwarded (old shard), held
    /// (new shard), or, when neither, back to the caller to deliver.
    pub(super) fn divert(&mut self, slot: Slot, item: Queued) -> Option<Queued> {
        let limit = self.rules.queue_messages_max;
        if let Some(transit) = self.moves.transits.get_mut(&slot) {
            if let Some(i) = transit
                .passed
                .iter()
                .position(|m| Arc::ptr_eq(m, &item.message))
            {
                // Its forwarded copy went already.
                transit.passed.remove(i);
                return None;
            }
            // (Also when it moved on meanwhile: released at `ForwardEnd`, the held ones are
            // forwarded behind everything forwarded to it before.)
            if item.qos == QoS::AtMostOnce {
                // QoS 0 comes by one lane only until the move settles, the old shard's: that
                // shard may have dropped a copy (its session was offline) whose direct twin,
                // delivered here, would come out after newer ones. At most once allows the
                // loss; the order is kept.
                self.stats.messages_dropped.inc();
                return None;
            }
            if transit.settle_acks.is_none() {
                if transit.held.len() >= limit {
                    // As a full session queue would: counted, never silent.
                    self.stats.messages_dropped.inc();
                    tracing::warn!(
                        slot,
                        "a moving session's held deliveries are full; message dropped"
                    );
                } else {
                    transit.held.push_back(item);
                }
                return None;
            }
        }
        self.forward_if_moved(slot, item)
    }

    /// Sends `item` on to the session's new shard if `slot` is a forwarder; otherwise gives
    /// it back.
    fn forward_if_moved(&mut self, slot: Slot, item: Queued) -> Option<Queued> {
        let Some(forwarder) = self.moves.forwarders.get(&slot) else {
            return Some(item);
        };
        let (to, token) = (forwarder.to, forwarder.token);
        self.send(
            to,
            MeshMsg::Forward {
                token,
                item: Box::new(item),
            },
        );
        None
    }

    /// Step 3, on the new shard: a delivery forwarded by the old one.
    pub(super) fn forwarded(&mut self, token: u64, item: Queued, now: Instant) {
        let transit = self
            .moves
            .transit_slots
            .get(&token)
            .and_then(|slot| Some((*slot, self.moves.transits.get_mut(slot)?)));
        let Some((slot, transit)) = transit else {
            // The session is gone (its connection left before it was seated).
            self.stats.messages_dropped.inc();
            return;
        };
        // A publisher that routed to both shards: the forwarded copy goes now, in its order;
        // the one held is a duplicate.
        let limit = self.rules.queue_messages_max;
        if let Some(i) = transit
            .held
            .iter()
            .position(|held| Arc::ptr_eq(&held.message, &item.message))
        {
            transit.held.remove(i);
        } else if transit.passed.len() < limit {
            // Its direct copy may still come.
            transit.passed.push_back(Arc::clone(&item.message));
        }
        self.deliver_routed(slot, item, now);
    }

    /// Step 4, on the new shard: nothing more is forwarded; release what was held.
    pub(super) fn forward_end(&mut self, token: u64, now: Instant) {
        let Some(&slot) = self.moves.transit_slots.get(&token) else {
            return;
        };
        let Some(transit) = self.moves.transits.get_mut(&slot) else {
            return;
        };
        let held = std::mem::take(&mut transit.held);
        let settle = !transit.passed.is_empty();
        transit.settle_acks = Some(0);
        for item in held {
            self.deliver_routed(slot, item, now);
        }
        if settle {
            // Direct copies of what was forwarded may still be on their way: they are dropped
            // until every shard has answered a fence sent after this point.
            let id = self.id;
            self.broadcast(|| MeshMsg::MoveFence {
                ghost_shard: id,
                token,
            });
        } else {
            self.end_transit(slot);
        }
    }

    /// The transit in `slot` is over; a forwarder this shard made for the session meanwhile
    /// may go now.
    fn end_transit(&mut self, slot: Slot) {
        self.forget_transit(slot);
        self.retire_if_done(slot);
    }

    /// Step 4, on the old shard: one more shard routes to the new one.
    /// On the old shard, for its forwarder; on the new one, for a transit settling after
    /// `ForwardEnd` (the token tells them apart: a forwarder's is the connection the session
    /// left for, a transit's the one it came for).
    pub(super) fn move_fence_ack(&mut self, token: u64) {
        let count = self.count;
        if let Some(&slot) = self.moves.forwarder_slots.get(&token) {
            if let Some(forwarder) = self.moves.forwarders.get_mut(&slot) {
                forwarder.acks += 1;
            }
            self.retire_if_done(slot);
        } else if let Some(&slot) = self.moves.transit_slots.get(&token) {
            let settled = self.moves.transits.get_mut(&slot).is_some_and(|t| {
                if let Some(acks) = t.settle_acks.as_mut() {
                    *acks += 1;
                }
                t.settle_acks.is_some_and(|acks| acks >= count)
            });
            if settled {
                self.end_transit(slot);
            }
        }
    }

    /// Drops the forwarder in `slot` once every shard answered and nothing is still forwarded
    /// to it from an earlier move.
    fn retire_if_done(&mut self, slot: Slot) {
        let count = self.count;
        let done = self
            .moves
            .forwarders
            .get(&slot)
            .is_some_and(|f| f.acks >= count)
            && !self.moves.transits.contains_key(&slot);
        if !done {
            return;
        }
        let Some(forwarder) = self.moves.forwarders.remove(&slot) else {
            return;
        };
        self.moves.forwarder_slots.remove(&forwarder.token);
        // Its filters are still in this shard's trie: the stand-in session keeps their list.
        if let Some(entry) = self.entries.take(slot) {
            for filter in entry.session.state.subscriptions.keys() {
                self.remove_subscription(slot, filter);
            }
        }
        self.send(
            forwarder.to,
            MeshMsg::ForwardEnd {
                token: forwarder.token,
            },
        );
    }

    /// Delivers past the new shard's hold (forwarded or released items), still forwarding if
    /// the session has moved on again.
    fn deliver_routed(&mut self, slot: Slot, item: Queued, now: Instant) {
        if let Some(item) = self.forward_if_moved(slot, item) {
            self.deliver_now(slot, item, now);
        }
    }

    /// True for a slot that only forwards (not a session: lists and counts skip it).
    pub(super) fn is_forwarder(&self, slot: Slot) -> bool {
        self.moves.forwarders.contains_key(&slot)
    }

    /// A session ended: a transit for it ends too (what it held goes with the session).
    pub(super) fn forget_transit(&mut self, slot: Slot) {
        if let Some(transit) = self.moves.transits.remove(&slot) {
            self.moves.transit_slots.remove(&transit.token);
        }
    }
}
