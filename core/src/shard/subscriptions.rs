//! A connection's packets and what they do to the shard: publishes go to routing, SUBSCRIBE and
//! UNSUBSCRIBE change the local index and every replica (fenced, so a SUBACK means "every
//! later publish on any shard reaches me"), and retained messages answer a new subscription.

use std::rc::Rc;
use std::time::Instant;

use ringmq_proto::mqtt::{ReasonCode, RetainHandling};
use ringmq_proto::session::{Action, Queued, Subscription};
use ringmq_router::split_shared;

use super::*;
use crate::mesh_msg::MeshMsg;

impl Shard {
    /// Handles the session's actions after a packet.
    pub fn handle_packet(
        &mut self,
        slot: Slot,
        packet: ringmq_proto::mqtt::Packet,
        now: Instant,
    ) -> ringmq_proto::session::Flow {
        // What the log keeps of a session changes with every packet but a QoS 0/1 PUBLISH
        // (which leaves no receipt) and PINGREQ: those never mark it dirty, so a publishing
        // persistent session is not rewritten at every checkpoint (every commit, in `sync`).
        let changes = match &packet {
            ringmq_proto::mqtt::Packet::PingReq => false,
            ringmq_proto::mqtt::Packet::Publish(p) => p.qos == QoS::ExactlyOnce,
            _ => true,
        };
        // Acknowledgements that `sync` durability holds until the logs hold what they
        // acknowledge: PUBACK / PUBREC of a QoS 1/2 PUBLISH, and PUBCOMP (the QoS 2 receipt
        // released: were it forgotten by a crash, a new PUBLISH reusing the packet id would
        // be taken for a duplicate and dropped).
        let acknowledged = matches!(&packet,
            ringmq_proto::mqtt::Packet::Publish(p) if p.qos != QoS::AtMostOnce)
            || matches!(&packet, ringmq_proto::mqtt::Packet::PubRel(_));
        // A PUBACK that may go before the sync once every copy of its message is consumed
        // (see `commit.rs`): QoS 1, and not retained (a retained message, or the clearing of
        // one, lives in the store, not in a copy anyone acknowledges).
        let consumable = matches!(&packet,
            ringmq_proto::mqtt::Packet::Publish(p) if p.qos == QoS::AtLeastOnce && !p.retain);
        let subscribes = matches!(
            &packet,
            ringmq_proto::mqtt::Packet::Subscribe(_) | ringmq_proto::mqtt::Packet::Unsubscribe(_)
        );
        self.cluster_ack_begin(
            slot,
            match &packet {
                ringmq_proto::mqtt::Packet::Publish(p) if p.qos == QoS::AtLeastOnce => Some(None),
                ringmq_proto::mqtt::Packet::Publish(p) if p.qos == QoS::ExactlyOnce => {
                    Some(Some(p.packet_id))
                }
                _ => None,
            },
        );
        let mut actions = std::mem::take(&mut self.actions);
        let rules = Rc::clone(&self.rules);
        let retained = &self.replica.retained;
        let retained_room = |topic: &str, payload: usize| retained.room(topic, payload);
        let room = ringmq_proto::session::Room {
            retained: &retained_room,
            storage_full: self.storage_full(),
        };
        let (flow, before) = match self.entries.get_mut(slot) {
            Some(entry) => {
                let before = entry.session.out.len();
                let flow = entry
                    .session
                    .handle_with(packet, now, &rules, &mut actions, &room);
                (flow, before)
            }
            None => (
                ringmq_proto::session::Flow::Close(ringmq_proto::session::CloseReason::Violation {
                    reason: ReasonCode::UNSPECIFIED_ERROR,
                    text: "session gone",
                }),
                0,
            ),
        };
        if acknowledged && flow == ringmq_proto::session::Flow::Continue {
            // `sync` durability: the PUBACK or PUBREC just written waits for the logs.
            self.hold_ack(slot, before, consumable);
        }
        // Where the acknowledgement ends in the outbox (`before` when the commit took it); only
        // a cluster needs it.
        let ack_end = if self.cluster {
            self.entries
                .get(slot)
                .map_or(before, |e| e.session.out.len())
        } else {
            before
        };
        if changes {
            self.touch(slot);
        }
        if subscribes && self.entries.get(slot).is_some_and(|e| e.dirty) {
            // `sync`: a kept session's SUBACK / UNSUBACK waits for the log (see hold_writer).
            self.hold_writer(slot);
        }
        let mut fence = false;
        let mut subscribed = false;
        for action in actions.drain(..) {
            match action {
                Action::Publish(message) => {
                    if consumable {
                        self.watch_copies(&message);
                    }
                    self.stats.messages_received.inc();
                    self.count_in(ringmq_router::strip_scope(&message.topic).0);
                    self.publish(message, now);
                }
                Action::Subscribe {
                    filter,
                    subscription,
                    is_new,
                } => {
                    let held = !is_new && self.replica.subscriptions.get(&filter, slot).is_some();
                    if held {
                        // A SUBSCRIBE of a filter it holds replaces the options in place: taken
                        // out and put back, the filter would leave the other replicas for a
                        // moment, and a message routed then would miss it (found by ringmq-sim).
                        self.replica
                            .subscriptions
                            .insert(&filter, slot, subscription);
                    } else {
                        // (Joining a shared group it is in already changes nothing: a member's
                        // options are read from its session at delivery.)
                        self.add_subscription(slot, &filter, subscription);
                    }
                    if !fence {
                        // Hold the SUBACK until every replica has the filter, so "SUBACK
                        // received" means "every later publish on any shard reaches me". Also
                        // when this shard already held the filter: the announcement that made
                        // it known (another session's, or a moved one's) may still be on its
                        // way (found by ringmq-sim).
                        fence = self.fence(slot);
                    }
                    self.send_retained(slot, &filter, subscription, is_new, now);
                    subscribed = true;
                }
                Action::Unsubscribe { filter } => self.remove_subscription(slot, &filter),
            }
        }
        self.actions = actions;
        if subscribed {
            self.cluster_fence(slot);
        }
        // A cluster: the acknowledgement waits for the other nodes that want the message.
        self.cluster_ack_end(slot, before, ack_end);
        self.want_write(slot);
        flow
    }

    /// Adds a subscription to the local index, telling the other replicas when it is this
    /// shard's first on the filter (or first member of the group here).
    pub(super) fn add_subscription(
        &mut self,
        slot: Slot,
        filter: &str,
        subscription: Subscription,
    ) {
        // The session validated the client's filter before putting it into its org's scope;
        // `parse_shared` would refuse the scope's U+0000 (it did: every shared subscription
        // of an org other than the default one was acknowledged and never joined its group).
        match split_shared(filter) {
            Some(shared) => {
                if self.replica.groups.join(shared.group, shared.filter, slot) {
                    self.announce_shared(shared.group, shared.filter, true);
                    self.cluster_shared(shared.group, shared.filter, true);
                }
            }
            None => {
                self.replica
                    .subscriptions
                    .insert(filter, slot, subscription);
                self.filter_added(filter);
            }
        }
    }

    /// Holds the writer of `slot` until every other shard answers a fence sent after the index
    /// updates just queued (mesh lanes are FIFO, so the answer proves they were applied).
    pub(super) fn fence(&mut self, slot: Slot) -> bool {
        if self.count < 2 {
            return false;
        }
        let others = u32::from(self.count) - 1;
        let Some(at) = self.fence_writer(slot, others) else {
            return false;
        };
        for shard in 0..self.count {
            if shard != self.id {
                self.send(
                    shard,
                    MeshMsg::Fence {
                        reply_to: self.id,
                        at,
                    },
                );
            }
        }
        true
    }

    pub(super) fn remove_subscription(&mut self, slot: Slot, filter: &str) {
        match split_shared(filter) {
            Some(shared) => {
                if self.replica.groups.leave(shared.group, shared.filter, slot) {
                    self.announce_shared(shared.group, shared.filter, false);
                    self.cluster_shared(shared.group, shared.filter, false);
                }
            }
            None => {
                if self.replica.subscriptions.remove(filter, slot).is_some() {
                    self.filter_removed(filter);
                }
            }
        }
    }

    pub(super) fn send_retained(
        &mut self,
        slot: Slot,
        filter: &str,
        subscription: Subscription,
        is_new: bool,
        now: Instant,
    ) {
        let wanted = match subscription.options.retain_handling {
            RetainHandling::SendAtSubscribe => true,
            RetainHandling::SendIfNew => is_new,
            RetainHandling::DoNotSend => false,
        };
        // Shared subscriptions never receive retained messages (MQTT 5, 4.8.2).
        if !wanted || filter.starts_with("$share/") {
            return;
        }
        let mut found = Vec::new();
        self.replica
            .retained
            .for_each_match(filter, |message| found.push(message.clone()));
        // In topic order, not the store's hash order: the same state sends the same bytes
        // (which the simulator's replay relies on), at the cost of a sort per SUBSCRIBE.
        found.sort_unstable_by(|a, b| a.topic.cmp(&b.topic));
        for message in found {
            let item = Queued {
                qos: message.qos.min(subscription.options.qos),
                retain: true,
                subscription_ids: subscription.identifier.into_iter().collect(),
                message,
            };
            self.deliver_to(slot, item, now);
        }
    }
}
