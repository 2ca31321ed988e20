//! QoS 1/2 across the nodes of a cluster: the PUBACK (or PUBREC) of a message another node
//! wants leaves only once every such node has taken it.
//!
//! The shard cannot know which nodes want a message (the bridge keeps their filters), so it
//! numbers every QoS 1/2 message a client publishes here with a *ticket*, in order, and hands
//! the ticket to the bridge with the message ([`Output::ClusterPublish`]). The bridge answers
//! [`Input::ClusterDone`] with the tickets every node that wanted their message has taken (at
//! once for a message no other node wants), in any order. Meanwhile the acknowledgement waits
//! here, as `sync` durability's do in its commit (and after it, when both apply); a
//! connection's acknowledgements leave in the order of its PUBLISHes, but one connection
//! waiting for a slow node holds up no other. A ticket the bridge never got (its queue to NATS was full) is
//! [`Input::ClusterFailed`]: the publisher's connection is closed without the acknowledgement,
//! so the client sends the message again, as after any lost connection; nothing is
//! acknowledged that did not reach the other nodes.
//!
//! [`Output::ClusterPublish`]: super::Output::ClusterPublish
//! [`Input::ClusterDone`]: super::Input::ClusterDone
//! [`Input::ClusterFailed`]: super::Input::ClusterFailed

use std::collections::VecDeque;
use std::time::Instant;

use bytes::BytesMut;
use ringmq_proto::mqtt::ReasonCode;

use super::{ConnAt, Shard, Slot};

/// The cluster side of a shard's acknowledgements.
#[derive(Debug, Default)]
pub(super) struct ClusterAcks {
    /// The last ticket handed out (tickets start at 1; 0 is "no ticket").
    issued: u64,
    /// The connection whose QoS 1/2 PUBLISH is being handled (and the packet id of a QoS 2
    /// one): its message gets a ticket.
    acking: Option<(ConnAt, Option<u16>)>,
    /// The ticket the packet being handled got.
    current: Option<u64>,
    /// The tickets not done yet, in ticket order, with who published each (to close it on a
    /// failure) and the packet id of a QoS 2 PUBLISH.
    owners: VecDeque<(u64, ConnAt, Option<u16>)>,
    /// Acknowledgements waiting for their tickets (every one of them), per connection in the
    /// order of its PUBLISHes.
    held: ahash::AHashMap<ConnAt, VecDeque<(Vec<u64>, BytesMut)>>,
    /// How many acknowledgements `held` holds.
    held_count: usize,
}

impl ClusterAcks {
    /// True when an acknowledgement for these tickets must still wait.
    pub(super) fn waits_for(&self, tickets: &[u64]) -> bool {
        any_pending(&self.owners, tickets)
    }

    /// True while an acknowledgement of `at` waits for the other nodes.
    pub(super) fn holds(&self, at: ConnAt) -> bool {
        self.held.contains_key(&at)
    }

    fn hold(&mut self, at: ConnAt, tickets: Vec<u64>, bytes: BytesMut) {
        self.held.entry(at).or_default().push_back((tickets, bytes));
        self.held_count += 1;
    }

    /// Takes `ticket` off the tickets not done; its owner, if it was not done yet.
    fn finish(&mut self, ticket: u64) -> Option<(ConnAt, Option<u16>)> {
        let index = self
            .owners
            .binary_search_by_key(&ticket, |(t, _, _)| *t)
            .ok()?;
        self.owners.remove(index).map(|(_, at, id)| (at, id))
    }
}

/// True when one of `tickets` is among `owners` (the tickets not done, in order).
fn any_pending(owners: &VecDeque<(u64, ConnAt, Option<u16>)>, tickets: &[u64]) -> bool {
    tickets
        .iter()
        .any(|ticket| *ticket != 0 && owners.binary_search_by_key(ticket, |(t, _, _)| *t).is_ok())
}

impl Shard {
    /// Starts the handling of a packet of `slot`: a QoS 1/2 PUBLISH's message gets a ticket when
    /// it goes to the cluster.
    /// `publish`: the packet is a QoS 1/2 PUBLISH (with its packet id when QoS 2).
    pub(super) fn cluster_ack_begin(&mut self, slot: Slot, publish: Option<Option<u16>>) {
        let Some(qos2_id) = publish.filter(|_| self.cluster) else {
            return;
        };
        let conn = self.entries.get(slot).and_then(|e| e.conn());
        self.cluster_acks.acking = conn.map(|conn| (ConnAt { slot, conn }, qos2_id));
    }

    /// The ticket for a message going to the cluster now (0: nobody waits for it).
    pub(super) fn cluster_ticket(&mut self, qos_at_least_once: bool) -> u64 {
        let acks = &mut self.cluster_acks;
        match acks.acking {
            Some((at, qos2_id)) if qos_at_least_once => {
                acks.issued += 1;
                acks.owners.push_back((acks.issued, at, qos2_id));
                acks.current = Some(acks.issued);
                acks.issued
            }
            _ => 0,
        }
    }

    /// Ends the handling of the packet of `slot`: the acknowledgement it wrote in its outbox
    /// from `from` to `to` (or that the commit holds) waits for the ticket its message got.
    pub(super) fn cluster_ack_end(&mut self, slot: Slot, from: usize, to: usize) {
        let acks = &mut self.cluster_acks;
        let Some((at, _)) = acks.acking.take() else {
            return;
        };
        let Some(ticket) = acks.current.take() else {
            return;
        };
        if to > from {
            let Some(entry) = self.entries.get_mut(slot) else {
                return;
            };
            let out = &mut entry.session.out;
            if out.len() < to {
                return;
            }
            // Anything written after the acknowledgement (a delivery of its own message to a
            // subscribed publisher) stays in the outbox.
            let rest = out.split_off(to);
            let held = out.split_off(from);
            out.unsplit(rest);
            self.cluster_acks.hold(at, vec![ticket], held);
        } else {
            // `sync`: the commit holds it; it asks for the ticket when it lets it go.
            self.commit_wants_ticket(at, ticket);
        }
    }

    /// Acknowledgements the commit let go, for a message whose ticket is not done: they wait
    /// on here.
    pub(super) fn hold_for_cluster(&mut self, at: ConnAt, tickets: Vec<u64>, acks: &[u8]) {
        self.cluster_acks.hold(at, tickets, BytesMut::from(acks));
    }

    /// How many acknowledgements wait for the other nodes.
    pub fn cluster_acks_waiting(&self) -> usize {
        self.cluster_acks.held_count
    }

    /// The bridge says these tickets are done: the acknowledgements that waited only for them
    /// go, each connection's in order.
    pub fn cluster_done(&mut self, tickets: &[u64]) {
        // Only the connections that published these tickets can have something to let go.
        let mut touched: Vec<ConnAt> = Vec::new();
        for ticket in tickets {
            if let Some((at, _)) = self.cluster_acks.finish(*ticket) {
                if !touched.contains(&at) {
                    touched.push(at);
                }
            }
        }
        for at in touched {
            let acks = &mut self.cluster_acks;
            let Some(queue) = acks.held.get_mut(&at) else {
                continue;
            };
            let mut released = BytesMut::new();
            // A connection's later acknowledgements wait behind its earlier ones.
            while queue
                .front()
                .is_some_and(|(tickets, _)| !any_pending(&acks.owners, tickets))
            {
                if let Some((_, bytes)) = queue.pop_front() {
                    released.extend_from_slice(&bytes);
                    acks.held_count -= 1;
                }
            }
            if queue.is_empty() {
                acks.held.remove(&at);
            }
            if released.is_empty() {
                continue;
            }
            let Some(entry) = self.entries.get_mut(at.slot) else {
                continue;
            };
            // A connection that left gets nothing: not acknowledged, its client sends again.
            if entry.conn() != Some(at.conn) {
                continue;
            }
            entry.session.out.extend_from_slice(&released);
            self.want_write(at.slot);
        }
    }

    /// The message of `ticket` never reached the bridge: its publisher's connection closes
    /// without the acknowledgement (the client sends it again on its next connection).
    pub fn cluster_failed(&mut self, ticket: u64, now: Instant) {
        let acks = &mut self.cluster_acks;
        let Some((at, qos2_id)) = acks.finish(ticket) else {
            return;
        };
        // Its acknowledgement must never go, even once later tickets are done.
        if let Some(gone) = acks.held.remove(&at) {
            acks.held_count -= gone.len();
        }
        self.stats.messages_dropped.inc();
        let Some(entry) = self.entries.get_mut(at.slot) else {
            return;
        };
        if let Some(id) = qos2_id {
            // The QoS 2 receipt goes too: the PUBLISH sent again is routed again (to this
            // node's subscribers a second time, rather than to the other nodes never).
            entry.session.state.incoming_qos2.retain(|held| *held != id);
        }
        if entry.conn() == Some(at.conn) {
            tracing::warn!(
                ticket,
                "the queue to the other nodes is full: closing the publisher unacknowledged"
            );
            self.end_connection(
                at.slot,
                Some((
                    ReasonCode::SERVER_BUSY,
                    "the cluster could not take the message",
                )),
                true,
                now,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ringmq_proto::mqtt::QoS;

    use super::super::commit::tests::{acks, committing, publish, sync};
    use super::super::tests::{clustered, connect, outputs, shard, subscribe, v5_connect};
    use super::super::{Input, Output};
    use super::*;
    use crate::test_util::test_message;

    fn tickets(s: &mut Shard) -> Vec<(String, u64)> {
        outputs(s)
            .into_iter()
            .filter_map(|o| match o {
                Output::ClusterPublish { message, ticket } => {
                    Some((message.topic.to_string(), ticket))
                }
                _ => None,
            })
            .collect()
    }

    fn closed(seen: &[Output], slot: Slot) -> bool {
        seen.iter()
            .any(|o| matches!(o, Output::Close { at, .. } if at.slot == slot))
    }

    /// A QoS 1/2 PUBLISH's message gets the next ticket and its acknowledgement waits for it,
    /// in order; QoS 0 and messages nobody acknowledges (the broker's own) get none.
    #[test]
    fn acknowledgements_wait_for_their_ticket_in_order() {
        let now = Instant::now();
        let mut shards = clustered(shard(1));
        let s = &mut shards[0];
        let (p, _) = connect(s, "p", v5_connect("p", 0, 0), now);
        outputs(s);
        publish(s, p, "t/1", QoS::AtLeastOnce, 1, now);
        publish(s, p, "t/0", QoS::AtMostOnce, 0, now);
        publish(s, p, "t/2", QoS::ExactlyOnce, 2, now);
        s.publish(test_message("t/3", b"x", QoS::AtLeastOnce, false), now);
        assert_eq!(
            tickets(s),
            [
                ("t/1".to_owned(), 1),
                ("t/0".to_owned(), 0),
                ("t/2".to_owned(), 2),
                ("t/3".to_owned(), 0)
            ]
        );
        assert!(acks(s, p).is_empty(), "no node said yes yet");
        assert_eq!(s.cluster_acks_waiting(), 2);
        s.handle(Input::ClusterDone(vec![1]), now);
        assert_eq!(acks(s, p), [1]);
        s.handle(Input::ClusterDone(vec![2]), now);
        assert_eq!(acks(s, p), [2], "the PUBREC");
        assert_eq!(s.cluster_acks_waiting(), 0);
        // Later tickets keep counting; a second answer for a done ticket changes nothing.
        publish(s, p, "t/4", QoS::AtLeastOnce, 3, now);
        s.handle(Input::ClusterDone(vec![2]), now);
        assert!(acks(s, p).is_empty());
        s.handle(Input::ClusterDone(vec![3]), now);
        assert_eq!(acks(s, p), [3]);
    }

    /// Without a cluster nothing waits and nothing is numbered.
    #[test]
    fn a_single_node_acknowledges_at_once() {
        let now = Instant::now();
        let mut shards = shard(1);
        let s = &mut shards[0];
        let (p, _) = connect(s, "p", v5_connect("p", 0, 0), now);
        publish(s, p, "t/1", QoS::AtLeastOnce, 1, now);
        assert_eq!(acks(s, p), [1]);
        assert!(tickets(s).is_empty());
    }

    /// A publisher subscribed to its own topic gets its copy at once; only the PUBACK waits.
    #[test]
    fn only_the_acknowledgement_waits() {
        let now = Instant::now();
        let mut shards = clustered(shard(1));
        let s = &mut shards[0];
        let (p, _) = connect(s, "p", v5_connect("p", 0, 0), now);
        subscribe(s, p, "t/#", now);
        acks(s, p);
        publish(s, p, "t/1", QoS::AtLeastOnce, 7, now);
        let out = std::mem::take(&mut s.entry_mut(p).expect("session").session.out);
        assert!(!out.is_empty(), "its own copy went out");
        assert_eq!(acks(s, p), Vec::<u16>::new());
        s.handle(Input::ClusterDone(vec![1]), now);
        assert_eq!(acks(s, p), [7]);
    }

    /// A ticket that never reached the bridge closes its publisher unacknowledged (0x89), and
    /// no later answer lets its PUBACK out; other publishers are not touched.
    #[test]
    fn a_failed_ticket_closes_its_publisher_unacknowledged() {
        let now = Instant::now();
        let mut shards = clustered(shard(1));
        let s = &mut shards[0];
        let (p, _) = connect(s, "p", v5_connect("p", 0, 0), now);
        let (q, _) = connect(s, "q", v5_connect("q", 0, 0), now);
        outputs(s);
        publish(s, p, "t/1", QoS::AtLeastOnce, 1, now);
        publish(s, q, "t/2", QoS::AtLeastOnce, 1, now);
        s.handle(Input::ClusterFailed(1), now);
        let seen = outputs(s);
        assert!(closed(&seen, p));
        assert!(!closed(&seen, q));
        let rest = seen
            .iter()
            .find_map(|o| match o {
                Output::Close { at, rest } if at.slot == p => Some(rest.clone()),
                _ => None,
            })
            .expect("closed");
        // Nothing before it (no PUBACK): a v5 DISCONNECT, Server busy.
        assert_eq!((rest[0], rest[2]), (0xE0, 0x89), "{rest:?}");
        s.handle(Input::ClusterDone(vec![2]), now);
        assert_eq!(acks(s, q), [1]);
        assert_eq!(s.cluster_acks_waiting(), 0);
    }

    /// With `sync` durability the acknowledgement waits for both, whichever comes last.
    #[test]
    fn with_sync_durability_it_waits_for_the_commit_and_the_nodes() {
        let now = Instant::now();
        let mut shards = clustered(committing(1));
        let s = &mut shards[0];
        let (p, _) = connect(s, "p", v5_connect("p", 0, 0), now);
        sync(s, now);
        outputs(s);
        publish(s, p, "t/1", QoS::AtLeastOnce, 1, now);
        s.close_commit_round(now);
        sync(s, now);
        assert!(acks(s, p).is_empty(), "synced, the nodes not yet");
        s.handle(Input::ClusterDone(vec![1]), now);
        assert_eq!(acks(s, p), [1]);
        // The other way round: the nodes first, then the sync.
        publish(s, p, "t/2", QoS::AtLeastOnce, 2, now);
        s.handle(Input::ClusterDone(vec![2]), now);
        assert!(acks(s, p).is_empty(), "the nodes have it, the log not yet");
        s.close_commit_round(now);
        sync(s, now);
        assert_eq!(acks(s, p), [2]);
    }

    /// A failed QoS 2 message leaves no receipt: the PUBLISH sent again is routed (and sent to
    /// the other nodes) again instead of being taken for a duplicate.
    #[test]
    fn a_failed_qos2_message_leaves_no_receipt() {
        let now = Instant::now();
        let mut shards = clustered(shard(1));
        let s = &mut shards[0];
        let (p, _) = connect(s, "p", v5_connect("p", 0, 600), now);
        publish(s, p, "t/1", QoS::ExactlyOnce, 5, now);
        publish(s, p, "t/2", QoS::ExactlyOnce, 6, now);
        let receipts = |s: &mut Shard| {
            s.entry_mut(p)
                .expect("kept")
                .session
                .state
                .incoming_qos2
                .to_vec()
        };
        assert_eq!(receipts(s), [5, 6]);
        s.handle(Input::ClusterFailed(1), now);
        assert_eq!(receipts(s), [6], "only the failed one's");
    }

    /// Another node's message waited for: its receipt goes once it is routed here, and with
    /// `sync` durability once the logs hold it.
    #[test]
    fn a_receipt_follows_the_routing_and_the_commit() {
        let now = Instant::now();
        let receipts = |s: &mut Shard| {
            outputs(s)
                .into_iter()
                .filter_map(|o| match o {
                    Output::ClusterReceipt(r) => Some(r),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let mut plain = clustered(shard(1));
        plain[0].handle(
            Input::FromClusterAcked {
                message: test_message("t/1", b"x", QoS::AtLeastOnce, false),
                receipt: 4,
            },
            now,
        );
        assert_eq!(receipts(&mut plain[0]), [4]);
        let mut synced = clustered(committing(1));
        let s = &mut synced[0];
        let (sub, _) = connect(s, "sub", v5_connect("sub", 0, 600), now);
        subscribe(s, sub, "t/#", now);
        sync(s, now);
        outputs(s);
        s.handle(
            Input::FromClusterAcked {
                message: test_message("t/1", b"x", QoS::AtLeastOnce, false),
                receipt: 5,
            },
            now,
        );
        assert!(receipts(s).is_empty(), "not in the log yet");
        s.close_commit_round(now);
        sync(s, now);
        assert_eq!(receipts(s), [5]);
    }

    /// A connection waiting for a slow node holds up no other connection, and its own
    /// acknowledgements stay in the order of its PUBLISHes.
    #[test]
    fn one_slow_ticket_holds_up_only_its_connection() {
        let now = Instant::now();
        let mut shards = clustered(shard(1));
        let s = &mut shards[0];
        let (p, _) = connect(s, "p", v5_connect("p", 0, 0), now);
        let (q, _) = connect(s, "q", v5_connect("q", 0, 0), now);
        outputs(s);
        publish(s, p, "slow/1", QoS::AtLeastOnce, 1, now);
        publish(s, q, "t/1", QoS::AtLeastOnce, 1, now);
        publish(s, p, "t/2", QoS::AtLeastOnce, 2, now);
        s.handle(Input::ClusterDone(vec![2, 3]), now);
        assert_eq!(acks(s, q), [1], "q's message needed nobody slow");
        assert!(acks(s, p).is_empty(), "p's second waits behind its first");
        s.handle(Input::ClusterDone(vec![1]), now);
        assert_eq!(acks(s, p), [1, 2]);
        assert_eq!(s.cluster_acks_waiting(), 0);
    }

    /// With `sync`, a later acknowledgement whose nodes are done while an earlier one of the
    /// same connection still waits for its nodes does not overtake it.
    #[test]
    fn a_committed_acknowledgement_keeps_its_connections_order() {
        let now = Instant::now();
        let mut shards = clustered(committing(1));
        let s = &mut shards[0];
        let (p, _) = connect(s, "p", v5_connect("p", 0, 0), now);
        sync(s, now);
        outputs(s);
        publish(s, p, "slow/1", QoS::AtLeastOnce, 1, now);
        s.close_commit_round(now);
        sync(s, now);
        publish(s, p, "t/2", QoS::AtLeastOnce, 2, now);
        s.handle(Input::ClusterDone(vec![2]), now);
        s.close_commit_round(now);
        sync(s, now);
        assert!(acks(s, p).is_empty(), "2 waits behind 1");
        s.handle(Input::ClusterDone(vec![1]), now);
        assert_eq!(acks(s, p), [1, 2]);
        assert_eq!(s.cluster_acks_waiting(), 0);
    }
}
