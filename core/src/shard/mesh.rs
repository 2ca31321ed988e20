//! What other shards say: deliveries, replica updates (index, shared groups, retained), the
//! client-id registry's claims, grants and takeovers, fences, pauses and counts.

use std::time::Instant;

use ringmq_proto::mqtt::{ReasonCode, Str};

use super::*;
use crate::mesh_msg::MeshMsg;

impl Shard {
    /// Handles one message from another shard (or from this one, via the local inbox).
    pub fn handle_mesh(&mut self, from: u16, msg: MeshMsg, now: Instant) {
        match msg {
            MeshMsg::Deliver(message) => {
                self.deliver_local(&message, now);
            }
            MeshMsg::DeliverCounted {
                message,
                reply_to,
                token,
            } => {
                let count = self.deliver_local(&message, now);
                self.send(reply_to, MeshMsg::Counted { token, count });
            }
            MeshMsg::Ping { reply_to, token } => {
                self.send(reply_to, MeshMsg::Counted { token, count: 0 });
            }
            MeshMsg::Counted { token, count } => self.counted(token, count),
            MeshMsg::DeliverShared {
                message,
                group,
                filter,
                tried,
            } => self.deliver_shared(&message, group, filter, tried, now),
            MeshMsg::IndexUpdate { filter, shard, add } => {
                if add {
                    self.replica.index.add(&filter, shard);
                } else {
                    self.replica.index.remove(&filter, shard);
                }
            }
            MeshMsg::SharedUpdate {
                group,
                filter,
                shard,
                add,
            } => {
                if add {
                    self.replica.shared_index.add_member(&group, &filter, shard);
                } else {
                    self.replica
                        .shared_index
                        .remove_member(&group, &filter, shard);
                }
            }
            MeshMsg::RetainRequest { topic, message } => {
                // This is the topic's home: its order is the order every replica applies, and
                // the one its log keeps.
                // Recorded only if kept: a message the full store refused must not come back
                // at the next start (past the bound, with every other replica without it).
                if self.replica.retained.set(&topic, message.clone()) {
                    self.record_retained(&topic, &message);
                }
                for shard in 0..self.count {
                    if shard != self.id {
                        self.send(
                            shard,
                            MeshMsg::RetainSet {
                                topic: topic.clone(),
                                message: message.clone(),
                            },
                        );
                    }
                }
            }
            MeshMsg::RetainSet { topic, message } => {
                self.replica.retained.set(&topic, message);
            }
            MeshMsg::Claim {
                client_id,
                shard,
                token,
                clean_start,
                owner,
            } => {
                tracing::debug!(%client_id, shard, token, "claim");
                debug_assert_eq!(
                    Self::token_shard(token),
                    shard,
                    "a claim's token names its shard"
                );
                if !clean_start && self.cluster && !self.owners.contains_key(&client_id) {
                    // The session may be on another node: fetched first (cluster_sessions.rs).
                    self.fetch_from_cluster(client_id, shard, token, owner);
                    return;
                }
                self.claim(client_id, shard, token, clean_start, owner);
            }
            MeshMsg::Takeover {
                client_id,
                to_shard,
                token,
                clean_start,
            } => self.takeover(client_id, to_shard, token, clean_start, now),
            MeshMsg::Grant { token, state } => {
                let Some(pending) = self.pending.get_mut(&token) else {
                    tracing::debug!(token, "grant for a connection that is gone");
                    if state.is_some() {
                        // The session is lost with it (as before moves were fenced); the old
                        // shard's forwarder must still end.
                        self.begin_transit(from, token, None);
                    }
                    return;
                };
                tracing::debug!(token, client_id = %pending.client_id, "grant");
                let client_id = pending.client_id.clone();
                // A moved session is seated here at once, so what is routed to it from now on
                // finds it (a state in a grant always comes from a forwarder at `from`).
                let seated = state.map(|state| {
                    let (slot, generation, brought) =
                        self.seat(client_id.clone(), *state, token, now);
                    self.begin_transit(from, token, Some((slot, brought)));
                    (slot, generation)
                });
                let Some(pending) = self.pending.get_mut(&token) else {
                    return;
                };
                if let Some((to_shard, next_token, clean_start)) = pending.superseded {
                    // A later connection already owns the id: the session (seated or in place
                    // here) is taken over from here; the superseded connection's task ends.
                    self.pending.remove(&token);
                    self.outputs.push_back(Output::Connect(token));
                    self.takeover(client_id, to_shard, next_token, clean_start, now);
                    return;
                }
                if seated.is_some() {
                    pending.resume = seated;
                }
                pending.grant = Some(None);
                self.outputs.push_back(Output::Connect(token));
            }
            MeshMsg::Forward { token, item } => self.forwarded(token, *item, now),
            MeshMsg::MoveFence { ghost_shard, token } => {
                self.send(ghost_shard, MeshMsg::MoveFenceAck { token });
            }
            MeshMsg::MoveFenceAck { token } => self.move_fence_ack(token),
            MeshMsg::ForwardEnd { token } => self.forward_end(token, now),
            MeshMsg::Fence { reply_to, at } => {
                self.send(reply_to, MeshMsg::FenceAck { at });
            }
            MeshMsg::FenceAck { at } => self.fence_ack(at),
            MeshMsg::CommitFence { reply_to, id } => self.commit_fence(reply_to, id),
            MeshMsg::CommitAck { id } => self.commit_ack(id),
            MeshMsg::Pause { publisher, pause } => self.pause_local(publisher, pause),
            MeshMsg::Refused { token } => {
                if let Some(pending) = self.pending.get_mut(&token) {
                    pending.refused = true;
                    self.outputs.push_back(Output::Connect(token));
                }
            }
            MeshMsg::Release { client_id, token } => {
                if self
                    .owners
                    .get(&client_id)
                    .is_some_and(|(held, _)| *held == token)
                {
                    self.owners.remove(&client_id);
                }
            }
        }
    }

    /// A claim of `client_id` at its home: granted, refused, or the holder asked to hand the
    /// session over.
    pub(super) fn claim(
        &mut self,
        client_id: Str,
        shard: u16,
        token: u64,
        clean_start: bool,
        owner: u64,
    ) {
        // A session belongs to the principal that created it: another login with the
        // same client id is refused, and the session (queued messages, subscriptions)
        // and its connection are not touched. Deleting the session (the sessions API)
        // or its expiry frees the id.
        if let Some(&(_, held_owner)) = self.owners.get(&client_id) {
            if held_owner != owner {
                tracing::info!(%client_id, "client id held by another principal's session; refused");
                self.send(shard, MeshMsg::Refused { token });
                return;
            }
        }
        match self
            .owners
            .insert(client_id.clone(), (token, owner))
            .map(|(held, _)| held)
        {
            None => self.send(shard, MeshMsg::Grant { token, state: None }),
            Some(held) => self.send(
                Self::token_shard(held),
                MeshMsg::Takeover {
                    client_id,
                    to_shard: shard,
                    token,
                    clean_start,
                },
            ),
        }
    }

    /// One more shard has the filters a connection's SUBACK waits for: the SUBACK may go once
    /// every shard answered (and a connection that ended meanwhile closes then).
    pub(super) fn fence_ack(&mut self, at: ConnAt) {
        if let Some(entry) = self.entries.get_mut(at.slot) {
            if entry.conn() == Some(at.conn) {
                entry.fences = entry.fences.saturating_sub(1);
                self.emit_urgent(Output::FenceDone(at));
                return;
            }
        }
        let Some((slot, _, fences)) = self.fenced_closes.get_mut(&at.conn) else {
            return;
        };
        let at = ConnAt {
            slot: *slot,
            conn: at.conn,
        };
        *fences = fences.saturating_sub(1);
        let last = *fences == 0;
        self.emit_urgent(Output::FenceDone(at));
        if last {
            if let Some((_, rest, _)) = self.fenced_closes.remove(&at.conn) {
                self.emit_urgent(Output::Close { at, rest });
            }
        }
    }

    pub(super) fn takeover(
        &mut self,
        client_id: Str,
        to_shard: u16,
        token: u64,
        clean_start: bool,
        now: Instant,
    ) {
        if let Some(slot) = self.by_client_id.get(&self.entries, client_id.as_bytes()) {
            let connected = self.entry_mut(slot).is_some_and(|e| e.conn().is_some());
            if connected {
                self.end_connection(
                    slot,
                    Some((ReasonCode::SESSION_TAKEN_OVER, "session taken over")),
                    true,
                    now,
                );
            }
            // A reconnect within the will delay cancels the will (MQTT 5, 3.1.3.2.2), unless
            // the new connection ends the session, which publishes it.
            if !clean_start && to_shard == self.id {
                // The new connection is on this shard: the session stays where it is, with its
                // subscriptions, and queues what arrives until the connection resumes it.
                // (Moved out, what was routed to it meanwhile was lost.)
                if let Some(entry) = self.entry_mut(slot) {
                    entry.pending_will = None;
                    let generation = entry.generation;
                    if let Some(pending) = self.pending.get_mut(&token) {
                        pending.resume = Some((slot, generation));
                    }
                }
                self.send(to_shard, MeshMsg::Grant { token, state: None });
                return;
            }
            let state = if clean_start {
                self.end_session(slot, now);
                None
            } else {
                if let Some(entry) = self.entry_mut(slot) {
                    entry.pending_will = None;
                }
                // Another shard: this one forwards what still reaches it (see `moves`).
                self.make_forwarder(slot, to_shard, token)
            };
            self.send(to_shard, MeshMsg::Grant { token, state });
            return;
        }
        // The id may belong to a connection of ours still waiting for its own grant.
        // (Never the claiming connection itself: it may be waiting here too, for this grant.)
        let waiting = self
            .pending
            .iter_mut()
            .find(|(t, p)| **t != token && p.client_id == client_id && p.superseded.is_none());
        if let Some((waiting_token, pending)) = waiting {
            pending.superseded = Some((to_shard, token, clean_start));
            self.outputs.push_back(Output::Connect(*waiting_token));
            return;
        }
        self.send(to_shard, MeshMsg::Grant { token, state: None });
    }
}
