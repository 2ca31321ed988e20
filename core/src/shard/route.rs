//! Routing a publish: the retained store, local subscribers (one copy per session), one mesh
//! message per other shard with a match, one member per shared group; delivery into a
//! session's window or queue, and the flow control that pauses publishers feeding a slow
//! subscriber instead of reading and dropping.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringmq_proto::message::SharedMessage;
use ringmq_proto::mqtt::{QoS, ReasonCode, Str};
use ringmq_proto::session::{Delivered, Queued, Rules};

use super::*;
use crate::mesh_msg::MeshMsg;

impl Entry {
    /// True when this connected session is behind: its outbox or queue passed the high-water mark.
    fn congested(&self, rules: &Rules) -> bool {
        self.conn().is_some()
            && (self.session.out.len() >= outbox_high_water(rules)
                || self.session.state.queue.len() >= queue_high_water(rules))
    }

    /// True once it has caught up (below half of both high-water marks).
    fn caught_up(&self, rules: &Rules) -> bool {
        self.session.out.len() < outbox_high_water(rules) / 2
            && self.session.state.queue.len() < queue_high_water(rules) / 2
    }
}

impl Shard {
    /// Routes a message published on this shard: retained store, local subscribers, one mesh
    /// message per other shard with a match, and one member per shared group.
    pub fn publish(&mut self, message: SharedMessage, now: Instant) {
        self.route(message, None, now);
    }

    /// Routes like [`Shard::publish`]; with `counted`, every other shard with a match answers
    /// [`MeshMsg::Counted`] with its deliveries under that token (REST publish at QoS 1 waits for
    /// them). Returns the deliveries made here plus one per shared group picked, and the shards
    /// asked to count.
    pub fn route(
        &mut self,
        message: SharedMessage,
        counted: Option<u64>,
        now: Instant,
    ) -> (u64, u64) {
        self.export(&message);
        self.route_here(message, counted, true, now)
    }

    /// Routes on this node only (a message another node published, or one already exported);
    /// `keep_retained`: a retained message is also set in the store (not for one from another
    /// node: the cluster's key-value bucket sets every node's store, in one order).
    pub(super) fn route_here(
        &mut self,
        message: SharedMessage,
        counted: Option<u64>,
        keep_retained: bool,
        now: Instant,
    ) -> (u64, u64) {
        if message.retain && keep_retained {
            self.keep_retained(&message);
        }
        self.deliver_routed_copies(message, counted, now)
    }

    /// Sets (or, empty, clears) the retained message on its topic here and at the topic's home,
    /// which records it and tells every replica.
    pub(super) fn keep_retained(&mut self, message: &SharedMessage) {
        // One stored copy, set here and sent to the topic's home: every replica shares its
        // payload.
        let stored = stored_retained(message);
        self.replica.retained.set(&message.topic, stored.clone());
        let home = self.home_of(&message.topic);
        self.send(
            home,
            MeshMsg::RetainRequest {
                topic: message.topic.clone(),
                message: stored,
            },
        );
    }

    /// The deliveries of a routed message: this shard's subscribers, one mesh message per
    /// other shard with a match, one member per shared group (one node: see `Shard::cluster`).
    fn deliver_routed_copies(
        &mut self,
        message: SharedMessage,
        counted: Option<u64>,
        now: Instant,
    ) -> (u64, u64) {
        // One shard has no other shard to ask: skip the index walk (its trie match was a fifth
        // of the routing work per publish in a QoS 0 fan-in profile).
        let shards = if self.count == 1 {
            1 << self.id
        } else {
            self.replica.index.matching_shards(&message.topic)
        };
        let mut mask = shards;
        let mut local = 0;
        let mut asked = 0;
        while mask != 0 {
            let shard = mask.trailing_zeros() as u16;
            mask &= mask - 1;
            if shard == self.id {
                local += self.deliver_local(&message, now);
            } else if let Some(token) = counted {
                asked |= 1 << shard;
                self.send(
                    shard,
                    MeshMsg::DeliverCounted {
                        message: message.clone(),
                        reply_to: self.id,
                        token,
                    },
                );
            } else {
                self.send(shard, MeshMsg::Deliver(message.clone()));
            }
        }
        if self.cluster {
            // Shared groups span the cluster: NATS's queue group picks the node (this one
            // included), which hands the message to one of its members
            // (`Shard::shared_from_cluster`).
            return (local, asked);
        }
        let mut picks: Vec<(Str, Str, u16)> = Vec::new();
        self.replica
            .shared_index
            .route(&message.topic, |group, filter, shard| {
                picks.push((Str::from(group), Str::from(filter), shard));
            });
        for (group, filter, shard) in picks {
            local += 1;
            self.send_shared(shard, &message, group, filter, 0, now);
        }
        (local, asked)
    }

    /// Whether the org of `topic` (scoped) may keep a retained message of `payload` bytes
    /// there: the broker's count bound for a new topic, and the org's byte quota, counted on
    /// this replica. A publish past either is refused to its publisher (0x97), so one org
    /// filling the store never silently costs another org its retained messages.
    pub fn retained_room(&self, topic: &str, payload: usize) -> bool {
        self.replica.retained.room(topic, payload)
    }

    /// Drops every retained message of `org` from this replica (the org was deleted).
    pub(super) fn forget_org_retained(&mut self, org: u32) {
        let dropped = self.replica.retained.forget_org(org);
        if !dropped.is_empty() {
            tracing::info!(
                org,
                retained = dropped.len(),
                "org deleted; its retained messages dropped"
            );
        }
        for topic in dropped {
            if self.home_of(&topic) == self.id {
                self.record_retained(&topic, &None);
            }
        }
    }

    /// Delivers to every local non-shared subscription matching the topic, once per session.
    pub(super) fn deliver_local(&mut self, message: &SharedMessage, now: Instant) -> u64 {
        self.deliver_streams(message);
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        self.replica
            .subscriptions
            .for_each_match(&message.topic, |slot, sub| matches.push((slot, *sub)));
        if matches.len() > 1 {
            matches.sort_unstable_by_key(|(slot, _)| *slot);
        }
        let mut index = 0;
        let mut delivered = 0;
        while index < matches.len() {
            let (slot, first) = matches[index];
            let mut qos = first.options.qos;
            let mut retain_as_published = first.options.retain_as_published;
            let mut no_local = first.options.no_local;
            let mut ids: Vec<u32> = first.identifier.into_iter().collect();
            let mut next = index + 1;
            // Overlapping subscriptions of one session: one copy, highest QoS, every identifier.
            while next < matches.len() && matches[next].0 == slot {
                let other = matches[next].1;
                qos = qos.max(other.options.qos);
                retain_as_published |= other.options.retain_as_published;
                no_local &= other.options.no_local;
                ids.extend(other.identifier);
                next += 1;
            }
            index = next;
            if no_local {
                let own = self
                    .entry_mut(slot)
                    .is_some_and(|e| e.session.client_id == message.publisher);
                if own {
                    continue;
                }
            }
            let item = Queued {
                message: message.clone(),
                qos: message.qos.min(qos),
                retain: message.retain && retain_as_published,
                subscription_ids: ids,
            };
            self.deliver_to(slot, item, now);
            delivered += 1;
        }
        self.matches = matches;
        if delivered > 0 {
            self.count_out(ringmq_router::strip_scope(&message.topic).0, delivered);
        }
        delivered
    }

    /// Delivers to the member shard `shard` picked for (`group`, `filter`) (this one included).
    pub(super) fn send_shared(
        &mut self,
        shard: u16,
        message: &SharedMessage,
        group: Str,
        filter: Str,
        tried: u64,
        now: Instant,
    ) {
        if shard == self.id {
            self.deliver_shared(message, group, filter, tried, now);
        } else {
            self.send(
                shard,
                MeshMsg::DeliverShared {
                    message: message.clone(),
                    group,
                    filter,
                    tried,
                },
            );
        }
    }

    pub(super) fn deliver_shared(
        &mut self,
        message: &SharedMessage,
        group: Str,
        filter: Str,
        tried: u64,
        now: Instant,
    ) {
        let entries = &self.entries;
        let connected = |slot: Slot| entries.get(slot).is_some_and(|e| e.conn().is_some());
        let pick = self
            .replica
            .groups
            .pick_where(&group, &filter, connected)
            .or_else(|| self.replica.groups.pick(&group, &filter));
        let Some(slot) = pick else {
            // The publisher's replica still counted a member that has left this shard: another
            // member shard gets it (each shard is tried once, so this ends).
            let tried = tried | 1u64.checked_shl(u32::from(self.id)).unwrap_or(0);
            match self.replica.shared_index.pick_other(&group, &filter, tried) {
                Some(next) if next != self.id => {
                    self.send_shared(next, message, group, filter, tried, now);
                }
                _ => {
                    self.stats.messages_dropped.inc();
                    tracing::debug!(%group, %filter, "no member left for a shared message");
                }
            }
            return;
        };
        let key = format!("$share/{group}/{filter}");
        let Some(subscription) = self
            .entry_mut(slot)
            .and_then(|e| e.session.state.subscriptions.get(&Str::from(key)).copied())
        else {
            return;
        };
        let item = Queued {
            message: message.clone(),
            qos: message.qos.min(subscription.options.qos),
            retain: message.retain && subscription.options.retain_as_published,
            subscription_ids: subscription.identifier.into_iter().collect(),
        };
        self.deliver_to(slot, item, now);
    }

    /// Hands one delivery to a session and wakes its writer.
    pub(super) fn deliver_to(&mut self, slot: Slot, item: Queued, now: Instant) {
        // A session moving between shards is reached through its forwarder or its transit.
        if self.moves.is_empty() {
            self.deliver_now(slot, item, now);
        } else if let Some(item) = self.divert(slot, item) {
            self.deliver_now(slot, item, now);
        }
    }

    /// Delivers to the session in `slot`: its window, its queue or its offline queue.
    pub(super) fn deliver_now(&mut self, slot: Slot, item: Queued, now: Instant) {
        let rules = Rc::clone(&self.rules);
        let stats = Arc::clone(&self.stats);
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };
        let origin = origin_parts(item.message.origin);
        // A disconnected session's QoS 1/2 queue is bounded per session by count, and per org
        // by bytes, so one tenant's offline devices cannot spend the memory another's need.
        let offline = if entry.conn().is_none() && item.qos != QoS::AtMostOnce {
            let size = item.message.topic.len() + item.message.payload.len();
            let held = self.offline_bytes.get(&entry.org).copied().unwrap_or(0);
            if held + size as u64 > self.settings.org_offline_bytes_max
                || u32::try_from(entry.offline_bytes as usize + size).is_err()
            {
                stats.messages_dropped.inc();
                tracing::warn!(client_id = %entry.session.client_id, org = entry.org,
                    "the org's offline queue quota is used up; message not queued for this session");
                return;
            }
            Some(size)
        } else {
            None
        };
        let durable = item.qos != QoS::AtMostOnce;
        let outcome = entry.session.deliver(item, now, &rules);
        if let (Some(size), Delivered::Queued) = (offline, &outcome) {
            entry.offline_bytes += size as u32;
            *self.offline_bytes.entry(entry.org).or_insert(0) += size as u64;
            // Nobody will acknowledge this copy soon: the round's PUBACKs wait for the sync
            // without a grace first.
            if let Some(commit) = self.journal.as_mut().and_then(|j| j.commit.as_mut()) {
                commit.copy_kept_offline();
            }
        }
        match outcome {
            Delivered::Sent => {
                stats.messages_sent.inc();
                if let (Some(conn), false) = (entry.conn(), entry.write_queued) {
                    entry.write_queued = true;
                    self.outputs.push_back(Output::Write { slot, conn });
                }
            }
            Delivered::Queued => {}
            Delivered::Dropped => stats.messages_dropped.inc(),
            Delivered::Overflow => {
                stats.messages_dropped.inc();
                if entry.conn().is_some() {
                    tracing::warn!(client_id = %entry.session.client_id, "queue full; disconnecting slow consumer");
                    self.end_connection(
                        slot,
                        Some((ReasonCode::QUOTA_EXCEEDED, "message queue full")),
                        true,
                        now,
                    );
                }
                return;
            }
        }
        // A connected subscriber falling behind pauses the publisher feeding it (TCP pushes back
        // on that publisher) long before anything overflows: reading and then dropping is what
        // makes brokers collapse under overload. A stuck subscriber (`lossy`) pauses no one.
        if origin.1 != 0
            && !entry.lossy
            && entry.congested(&rules)
            && !entry.blocked.contains(&origin)
        {
            let first = entry.blocked.is_empty();
            let generation = entry.generation;
            entry.blocked.push(origin);
            if first {
                self.congested.push((slot, generation));
            }
            self.pause_publisher(origin);
        }
        if durable {
            self.touch(slot);
        }
    }

    /// After the writer flushed: move queued messages into the window.
    pub fn after_write(&mut self, slot: Slot, conn: ConnId, now: Instant) {
        let rules = Rc::clone(&self.rules);
        let Some(entry) = self.entry_for_conn(slot, conn) else {
            return;
        };
        entry.last_progress = now;
        let pumped = !entry.session.state.queue.is_empty();
        if pumped || !entry.session.state.qos0_queue.is_empty() {
            entry.session.pump(now, &rules);
        }
        if entry.caught_up(&rules) {
            entry.lossy = false;
            if !entry.blocked.is_empty() {
                let blocked = entry.blocked.take();
                self.release(blocked);
            }
        }
        if pumped {
            self.touch(slot);
        }
    }

    /// Releases the publishers of subscribers that made no progress for `STALL_GRACE`: a stuck
    /// client must not stall its publishers forever; its own bounds apply to it instead.
    pub fn check_stalls(&mut self, now: Instant) {
        let mut congested = std::mem::take(&mut self.congested);
        let mut stalled = Vec::new();
        congested.retain(|&(slot, generation)| {
            let Some(entry) = self.entries.get_mut(slot) else {
                return false;
            };
            if entry.generation != generation || entry.blocked.is_empty() {
                return false;
            }
            if now.saturating_duration_since(entry.last_progress) < STALL_GRACE {
                return true;
            }
            tracing::warn!(client_id = %entry.session.client_id, "subscriber stalled; releasing its publishers");
            entry.lossy = true;
            stalled.extend(entry.blocked.take());
            false
        });
        self.release(stalled);
        self.congested = congested;
    }

    /// Pauses reading a publisher, on this shard or (through the mesh) on its own.
    pub(super) fn pause_publisher(&mut self, (shard, publisher): (u16, u64)) {
        if shard == self.id {
            self.pause_local(publisher, true);
        } else {
            self.send(
                shard,
                MeshMsg::Pause {
                    publisher,
                    pause: true,
                },
            );
        }
    }

    /// Resumes every publisher in `blocked` (each was paused once for this session).
    pub(super) fn release(&mut self, blocked: Vec<(u16, u64)>) {
        for (shard, publisher) in blocked {
            if shard == self.id {
                self.pause_local(publisher, false);
            } else {
                self.send(
                    shard,
                    MeshMsg::Pause {
                        publisher,
                        pause: false,
                    },
                );
            }
        }
    }

    /// Pauses (or resumes) reading the publisher of this shard that `publisher` (the local part
    /// of its origin) names, if that connection is still attached.
    pub(super) fn pause_local(&mut self, publisher: u64, pause: bool) {
        let (slot, _) = publisher_of(publisher);
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };
        let Some(conn) = entry.conn() else {
            return;
        };
        if publisher_key(slot, entry.generation) != publisher {
            return;
        }
        let at = ConnAt { slot, conn };
        if pause {
            entry.pauses += 1;
            self.emit_urgent(Output::Pause(at));
        } else if entry.pauses > 0 {
            entry.pauses -= 1;
            self.emit_urgent(Output::Resume(at));
        }
    }
}

/// Queue length at which a connected subscriber pauses the publishers feeding it.
fn queue_high_water(rules: &Rules) -> usize {
    (rules.queue_messages_max / 2).max(1)
}

/// Outbox bytes at which a connected subscriber pauses the publishers feeding it.
fn outbox_high_water(rules: &Rules) -> usize {
    (rules.outbox_bytes_max / 2).max(1)
}

/// A subscriber whose writer completes nothing for this long is stuck: its publishers go on.
const STALL_GRACE: Duration = Duration::from_secs(5);
