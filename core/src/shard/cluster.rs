//! A shard's side of a cluster (issue 14): the messages published here go to the other nodes,
//! and this shard's filters say what it wants of theirs. The shard only says so, as outputs;
//! the driver's bridge speaks NATS.
//!
//! A message is exported once, by the shard it was published on ([`Shard::route`]); what
//! another node published comes in as [`super::Input::FromCluster`] and is routed on this node
//! only, never exported again. `$` topics (`$SYS`) are each node's own and stay home.

use std::time::Instant;

use ringmq_proto::message::SharedMessage;
use ringmq_proto::mqtt::Str;

use super::{Output, Shard, Slot};

impl Shard {
    /// Makes this shard part of a cluster. Call before restoring from the log, so the filters
    /// restored are announced too.
    pub fn enable_cluster(&mut self) {
        self.cluster = true;
    }

    /// True when this shard is part of a cluster.
    pub fn in_cluster(&self) -> bool {
        self.cluster
    }

    /// Sends a message published on this node to the other nodes.
    pub(super) fn export(&mut self, message: &SharedMessage) {
        if !self.cluster {
            return;
        }
        let (_, topic) = ringmq_router::strip_scope(&message.topic);
        if topic.starts_with('$') {
            return;
        }
        let ticket = self.cluster_ticket(message.qos != ringmq_proto::mqtt::QoS::AtMostOnce);
        self.outputs.push_back(Output::ClusterPublish {
            message: SharedMessage::clone(message),
            ticket,
        });
    }

    /// This shard's first or last local subscription on `filter` (scoped) came or went.
    pub(super) fn cluster_interest(&mut self, filter: &str, add: bool) {
        if self.cluster {
            self.outputs.push_back(Output::ClusterInterest {
                filter: Str::from(filter),
                add,
            });
        }
    }

    /// A SUBACK of `slot` just written waits for NATS to have this node's subscriptions (the
    /// writer is held, so retained messages sent after it keep their place behind it).
    pub(super) fn cluster_fence(&mut self, slot: Slot) {
        if !self.cluster {
            return;
        }
        if let Some(at) = self.fence_writer(slot, 1) {
            self.outputs.push_back(Output::ClusterFence(at));
        }
    }

    /// This shard's first or last member of a shared group came or went.
    pub(super) fn cluster_shared(&mut self, group: &str, filter: &str, add: bool) {
        if self.cluster {
            self.outputs.push_back(Output::ClusterShared {
                group: Str::from(group),
                filter: Str::from(filter),
                add,
            });
        }
    }

    /// A client id connected here (its session installed).
    pub(super) fn cluster_claim(&mut self, client_id: &Str, clean_start: bool) {
        if self.cluster {
            self.outputs.push_back(Output::ClusterClaim {
                client_id: client_id.clone(),
                clean_start,
            });
        }
    }

    /// A client id's session ended here.
    pub(super) fn cluster_release(&mut self, client_id: &Str) {
        if self.cluster {
            self.outputs
                .push_back(Output::ClusterRelease(client_id.clone()));
        }
    }

    /// A client id connected on another node after it did here: the connection here ends
    /// with 0x8E (its will published, as for a takeover on one node), and the session too
    /// when the new connection asked for a clean start. (A kept session stays here, offline,
    /// until it expires: sessions do not move between nodes yet.)
    pub fn taken_over_by_another_node(&mut self, client_id: &Str, clean_start: bool, now: Instant) {
        let Some(slot) = self.by_client_id.get(&self.entries, client_id.as_bytes()) else {
            return;
        };
        self.end_for_another_node(slot, true, now);
        if clean_start {
            self.end_session(slot, now);
        }
    }

    /// Ends the connection of `slot`, if it has one, with v5 DISCONNECT 0x8E: its client id
    /// connected on another node.
    pub(super) fn end_for_another_node(
        &mut self,
        slot: super::Slot,
        publish_will: bool,
        now: Instant,
    ) {
        if self.entries.get(slot).is_some_and(|e| e.conn().is_some()) {
            self.end_connection(
                slot,
                Some((
                    ringmq_proto::mqtt::ReasonCode::SESSION_TAKEN_OVER,
                    "session taken over on another node",
                )),
                publish_will,
                now,
            );
        }
    }

    /// A message NATS's queue group picked this node for: to one member of the group here
    /// (on whichever shard holds one), or dropped and counted when the last one just left.
    pub fn shared_from_cluster(
        &mut self,
        message: SharedMessage,
        group: Str,
        filter: Str,
        now: Instant,
    ) {
        self.stats.messages_received.inc();
        // The group's weighted turn over this node's member shards, as for a local publish.
        let mut picked = None;
        self.replica
            .shared_index
            .route(&message.topic, |g, f, shard| {
                if g == &*group && f == &*filter {
                    picked = Some(shard);
                }
            });
        let picked = picked.or_else(|| self.replica.shared_index.pick_other(&group, &filter, 0));
        match picked {
            Some(shard) => self.send_shared(shard, &message, group, filter, 0, now),
            None => {
                self.stats.messages_dropped.inc();
                tracing::debug!(%group, %filter, "no member left here for a shared message from the cluster");
            }
        }
    }

    /// A message another node published: to this node's subscribers (a retained one is not
    /// stored from here: [`Shard::retained_from_cluster`] does, in the bucket's order).
    pub fn publish_from_cluster(&mut self, message: SharedMessage, now: Instant) {
        self.stats.messages_received.inc();
        self.route_here(message, None, false, now);
    }

    /// The cluster's retained message on a topic changed (set, or cleared by an empty one):
    /// into this node's store, delivered to nobody (live subscribers got it when it was
    /// published).
    pub fn retained_from_cluster(&mut self, message: SharedMessage) {
        if message.retain {
            self.keep_retained(&message);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ringmq_proto::mqtt::QoS;

    use super::super::tests::{clustered, connect, outputs, pump, shard, subscribe, v5_connect};
    use super::super::ConnAt;
    use super::*;
    use crate::test_util::test_message;

    fn interest(seen: &[Output]) -> Vec<(String, bool)> {
        seen.iter()
            .filter_map(|o| match o {
                Output::ClusterInterest { filter, add } => Some((filter.to_string(), *add)),
                _ => None,
            })
            .collect()
    }

    fn exported(seen: &[Output]) -> Vec<String> {
        seen.iter()
            .filter_map(|o| match o {
                Output::ClusterPublish { message, .. } => Some(message.topic.to_string()),
                _ => None,
            })
            .collect()
    }

    /// A SUBACK waits for NATS: the writer is held (one more fence) and the bridge is asked
    /// after the interest change it waits for; its answer releases the writer. Without a
    /// cluster nothing waits for NATS.
    #[test]
    fn a_suback_waits_for_nats_to_have_the_subscription() {
        let now = Instant::now();
        let mut shards = clustered(shard(1));
        let s = &mut shards[0];
        let (a, _) = connect(s, "a", v5_connect("a", 0, 0), now);
        outputs(s);
        subscribe(s, a, "t/#", now);
        let seen = outputs(s);
        let at = |o: &Output| match o {
            Output::ClusterFence(at) | Output::Fence { at, count: 1 } => Some(*at),
            _ => None,
        };
        let interest_at = seen
            .iter()
            .position(|o| matches!(o, Output::ClusterInterest { add: true, .. }))
            .expect("interest");
        let fence_at = seen
            .iter()
            .position(|o| matches!(o, Output::ClusterFence(_)))
            .expect("asks the bridge");
        assert!(interest_at < fence_at, "after the change it waits for");
        let held: Vec<ConnAt> = seen.iter().filter_map(at).collect();
        assert_eq!(held.len(), 2, "a fence and the bridge's question: {seen:?}");
        assert_eq!(held[0], held[1]);
        assert_eq!(s.entry_mut(a).expect("session").fences, 1);
        s.handle(super::super::Input::ClusterFenceDone(held[0]), now);
        assert!(outputs(s)
            .iter()
            .any(|o| matches!(o, Output::FenceDone(at) if *at == held[0])));
        assert_eq!(s.entry_mut(a).expect("session").fences, 0);

        let mut alone = shard(1);
        let s = &mut alone[0];
        let (b, _) = connect(s, "b", v5_connect("b", 0, 0), now);
        outputs(s);
        subscribe(s, b, "t/#", now);
        assert!(!outputs(s)
            .iter()
            .any(|o| matches!(o, Output::ClusterFence(_) | Output::Fence { .. })));
    }

    /// A shard says when its first subscription on a filter comes and its last goes, once per
    /// filter whatever the number of sessions; without a cluster it says nothing.
    #[test]
    fn interest_follows_the_first_and_last_subscription() {
        let now = Instant::now();
        let mut shards = clustered(shard(2));
        let (a, _) = connect(&mut shards[0], "a", v5_connect("a", 0, 0), now);
        let (b, _) = connect(&mut shards[0], "b", v5_connect("b", 0, 0), now);
        subscribe(&mut shards[0], a, "t/#", now);
        subscribe(&mut shards[0], b, "t/#", now);
        pump(&mut shards, now);
        assert_eq!(
            interest(&outputs(&mut shards[0])),
            [("t/#".to_owned(), true)]
        );
        assert!(
            interest(&outputs(&mut shards[1])).is_empty(),
            "the node's interest is per shard"
        );
        shards[0].end_connection(a, None, false, now);
        assert!(
            interest(&outputs(&mut shards[0])).is_empty(),
            "b still wants it"
        );
        shards[0].end_connection(b, None, false, now);
        assert_eq!(
            interest(&outputs(&mut shards[0])),
            [("t/#".to_owned(), false)]
        );
        let mut single = shard(1);
        let (c, _) = connect(&mut single[0], "c", v5_connect("c", 0, 0), now);
        subscribe(&mut single[0], c, "t/#", now);
        assert!(interest(&outputs(&mut single[0])).is_empty());
    }

    /// In a cluster a shared group spans the nodes: a message published here goes to no local
    /// member (NATS's queue group picks the node, this one included), and one NATS picked this
    /// node for goes to exactly one member here; membership comes and goes per shard.
    #[test]
    fn shared_groups_are_left_to_the_cluster() {
        let now = Instant::now();
        let mut shards = clustered(shard(2));
        let (a, _) = connect(&mut shards[0], "a", v5_connect("a", 0, 0), now);
        let (b, _) = connect(&mut shards[1], "b", v5_connect("b", 0, 0), now);
        subscribe(&mut shards[0], a, "$share/g/t/#", now);
        subscribe(&mut shards[1], b, "$share/g/t/#", now);
        pump(&mut shards, now);
        let joined = |seen: &[Output]| {
            seen.iter()
                .filter(|o| {
                    matches!(o, Output::ClusterShared { group, filter, add: true }
                    if &**group == "g" && &**filter == "t/#")
                })
                .count()
        };
        assert_eq!(joined(&outputs(&mut shards[0])), 1);
        assert_eq!(joined(&outputs(&mut shards[1])), 1);
        let delivered = |s: &mut Shard, slot| {
            let entry = s.entry_mut(slot).expect("session");
            usize::from(!std::mem::take(&mut entry.session.out).is_empty())
        };
        // (The SUBACKs.)
        delivered(&mut shards[0], a);
        delivered(&mut shards[1], b);
        shards[0].publish(test_message("t/1", b"x", QoS::AtLeastOnce, false), now);
        pump(&mut shards, now);
        assert_eq!(
            delivered(&mut shards[0], a) + delivered(&mut shards[1], b),
            0
        );
        assert_eq!(exported(&outputs(&mut shards[0])), ["t/1"], "NATS decides");
        for _ in 0..4 {
            shards[1].handle(
                super::super::Input::FromClusterShared {
                    message: test_message("t/2", b"y", QoS::AtLeastOnce, false),
                    group: Str::from("g"),
                    filter: Str::from("t/#"),
                },
                now,
            );
            pump(&mut shards, now);
            assert_eq!(
                delivered(&mut shards[0], a) + delivered(&mut shards[1], b),
                1,
                "one member of the node's group"
            );
        }
        shards[1].end_connection(b, None, false, now);
        pump(&mut shards, now);
        assert!(outputs(&mut shards[1])
            .iter()
            .any(|o| matches!(o, Output::ClusterShared { add: false, .. })));
    }

    /// A retained message from another node is delivered live but stored only when the
    /// cluster's bucket says so, and then delivered to nobody (a new subscription gets it).
    #[test]
    fn retained_messages_are_stored_in_the_buckets_order() {
        let now = Instant::now();
        let mut shards = clustered(shard(2));
        shards[0].handle(
            super::super::Input::FromCluster(test_message("r/1", b"live", QoS::AtMostOnce, true)),
            now,
        );
        pump(&mut shards, now);
        assert!(
            shards[1].retained_matching("r/#").is_empty(),
            "not from the live copy"
        );
        shards[1].handle(
            super::super::Input::RetainedFromCluster(test_message(
                "r/1",
                b"kept",
                QoS::AtMostOnce,
                true,
            )),
            now,
        );
        pump(&mut shards, now);
        for s in &shards {
            assert_eq!(s.retained_matching("r/#").len(), 1, "every replica");
        }
        assert!(exported(&outputs(&mut shards[1])).is_empty());
        shards[0].handle(
            super::super::Input::RetainedFromCluster(test_message(
                "r/1",
                b"",
                QoS::AtMostOnce,
                true,
            )),
            now,
        );
        pump(&mut shards, now);
        assert!(shards[1].retained_matching("r/#").is_empty(), "cleared");
    }

    /// A message published here is exported once (not by the shards it is routed to); one
    /// from another node is delivered here and never exported again; `$` topics stay home.
    #[test]
    fn a_message_crosses_to_the_cluster_once() {
        let now = Instant::now();
        let mut shards = clustered(shard(2));
        let (sub, _) = connect(&mut shards[1], "sub", v5_connect("sub", 0, 0), now);
        subscribe(&mut shards[1], sub, "t/#", now);
        pump(&mut shards, now);
        outputs(&mut shards[0]);
        outputs(&mut shards[1]);
        shards[0].publish(test_message("t/1", b"x", QoS::AtLeastOnce, false), now);
        shards[0].publish(test_message("$SYS/x", b"x", QoS::AtMostOnce, false), now);
        pump(&mut shards, now);
        assert_eq!(exported(&outputs(&mut shards[0])), ["t/1"]);
        assert!(exported(&outputs(&mut shards[1])).is_empty());
        let delivered = |s: &mut Shard| {
            let entry = s.entry_mut(sub).expect("session");
            std::mem::take(&mut entry.session.out).len()
        };
        assert!(delivered(&mut shards[1]) > 0);
        shards[0].handle(
            super::super::Input::FromCluster(test_message("t/2", b"y", QoS::AtMostOnce, false)),
            now,
        );
        pump(&mut shards, now);
        assert!(
            exported(&outputs(&mut shards[0])).is_empty(),
            "never sent on"
        );
        assert!(delivered(&mut shards[1]) > 0, "delivered on this node");
    }

    /// A client id connecting here is claimed (and released when its session ends); one that
    /// connected on another node since is taken over here: 0x8E, the session kept unless the
    /// other CONNECT asked for a clean start.
    #[test]
    fn client_ids_are_claimed_and_taken_over() {
        let now = Instant::now();
        let mut shards = clustered(shard(1));
        let s = &mut shards[0];
        let (a, _) = connect(s, "a", v5_connect("a", 0, 600), now);
        let claimed = |seen: &[Output]| {
            seen.iter()
                .filter_map(|o| match o {
                    Output::ClusterClaim { client_id, .. } => {
                        Some(ringmq_router::strip_scope(client_id).1.to_owned())
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(claimed(&outputs(s)), ["a"]);
        let scoped = s.entry_mut(a).expect("session").session.client_id.clone();
        s.handle(
            super::super::Input::ClusterTakenOver {
                client_id: scoped.clone(),
                clean_start: false,
            },
            now,
        );
        let seen = outputs(s);
        let rest = seen
            .iter()
            .find_map(|o| match o {
                Output::Close { rest, .. } => Some(rest.clone()),
                _ => None,
            })
            .expect("closed");
        assert_eq!(
            (rest[0], rest[2]),
            (0xE0, 0x8E),
            "DISCONNECT, Session taken over"
        );
        assert!(s.entry_mut(a).is_some(), "a kept session stays, offline");
        s.handle(
            super::super::Input::ClusterTakenOver {
                client_id: scoped.clone(),
                clean_start: true,
            },
            now,
        );
        assert!(s.entry_mut(a).is_none(), "a clean start elsewhere ends it");
        assert!(outputs(s)
            .iter()
            .any(|o| matches!(o, Output::ClusterRelease(id) if *id == scoped)));
        // Without a cluster nothing is claimed.
        let mut single = shard(1);
        connect(&mut single[0], "b", v5_connect("b", 0, 0), now);
        assert!(claimed(&outputs(&mut single[0])).is_empty());
    }
}
