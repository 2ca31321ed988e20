//! `sync` durability's group commit: the acknowledgement of a QoS 1/2 publish (PUBACK,
//! PUBREC, the REST `qos: 1` answer) leaves only once every shard that may hold a copy of the
//! message has synced its log past it.
//!
//! A publish changes several shards: the publisher's own (its QoS 2 receipt, local
//! subscribers), every shard a copy was routed to, and the topic's home (a retained message).
//! The publisher's shard holds the connection's writer (a fence, as for a SUBACK) and, at the
//! end of the round, sends one `CommitFence` to every other shard. Mesh lanes are FIFO, so a
//! shard reads the fence after the copies sent before it; it answers `CommitAck` once its next
//! sync is done. With its own next sync done too and every answer in, the writer goes on.
//!
//! One fence covers every connection of the shard that got an acknowledgement in that round,
//! and a shard's one sync answers every fence that reached it before the sync began: a sync
//! per shard per round, whatever the number of connections and publishes (group commit).
//! The driver runs its log as soon as [`Output::Commit`] asks, not on its interval.

use std::collections::VecDeque;

use super::{ConnAt, Output, Shard, Slot};
use crate::mesh_msg::MeshMsg;

/// The group-commit side of a shard in `sync` mode.
#[derive(Debug, Default)]
pub(super) struct Commit {
    /// Record batches the driver has taken ([`Shard::take_records`] returns the number).
    taken: u64,
    /// The last batch the driver reported synced.
    synced: u64,
    /// Waiters that got an acknowledgement this round (a fence leaves at the round's end).
    round: Vec<Waiter>,
    /// Ids of this shard's waits, counted.
    next_id: u64,
    /// Open waits of this shard, oldest first.
    waits: VecDeque<Wait>,
    /// Fences of other shards, answered once the batch `needs` is synced: (needs, shard, id).
    answers: VecDeque<(u64, u16, u64)>,
}

/// What waits for a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiter {
    /// A connection's writer (its acknowledgements are in its outbox).
    Conn(ConnAt),
    /// A counted REST publish (one more answer to its count).
    Count(u64),
}

/// One round's commit, until its batch is synced here and every other shard answered.
#[derive(Debug)]
struct Wait {
    /// Id in the fences sent for it.
    id: u64,
    /// The batch of this shard that covers the round.
    needs: u64,
    /// Answers of other shards still due.
    acks: u16,
    /// Who goes on when it completes.
    waiters: Vec<Waiter>,
}

impl Shard {
    /// Turns the group commit on (`sync` durability): acknowledgements wait for the logs.
    pub fn enable_commit(&mut self) {
        if let Some(journal) = self.journal.as_mut() {
            journal.commit.get_or_insert_with(Default::default);
        }
    }

    /// True when acknowledgements wait for the logs.
    pub fn commits(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| j.commit.is_some())
    }

    /// Holds the writer of the connection in `slot` until this round's commit: an
    /// acknowledgement for a QoS 1/2 publish was just put in its outbox.
    pub(super) fn hold_for_commit(&mut self, slot: Slot) {
        if !self.commits() {
            return;
        }
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };
        let Some(conn) = entry.conn() else {
            return;
        };
        let at = ConnAt { slot, conn };
        let Some(commit) = self.commit_mut() else {
            return;
        };
        // A connection's packets of one round come together: one fence covers them all.
        if commit.round.last() == Some(&Waiter::Conn(at)) {
            return;
        }
        commit.round.push(Waiter::Conn(at));
        if let Some(entry) = self.entries.get_mut(slot) {
            entry.fences += 1;
        }
        self.emit_urgent(Output::Fence { at, count: 1 });
    }

    /// Makes the counted publish under `token` wait for this round's commit too (its count
    /// gets one more answer, given when the commit completes); false when commits are off.
    pub(super) fn count_commit(&mut self, token: u64) -> bool {
        match self.commit_mut() {
            Some(commit) => {
                commit.round.push(Waiter::Count(token));
                true
            }
            None => false,
        }
    }

    /// Ends the round: its waiters wait for this shard's next batch and every other shard's.
    pub(super) fn close_commit_round(&mut self) {
        let (count, me) = (self.count, self.id);
        let Some(commit) = self.commit_mut() else {
            return;
        };
        if commit.round.is_empty() {
            return;
        }
        commit.next_id += 1;
        let id = commit.next_id;
        let waiters = std::mem::take(&mut commit.round);
        commit.waits.push_back(Wait {
            id,
            needs: commit.taken + 1,
            acks: count - 1,
            waiters,
        });
        for shard in 0..count {
            if shard != me {
                self.send(shard, MeshMsg::CommitFence { reply_to: me, id });
            }
        }
        self.outputs.push_back(Output::Commit);
    }

    /// Another shard's fence: everything it sent before is applied here, so the next batch
    /// covers it; answered once that batch is synced.
    pub(super) fn commit_fence(&mut self, reply_to: u16, id: u64) {
        let Some(commit) = self.commit_mut() else {
            // Commits off here (they are on everywhere or nowhere): nothing to wait for.
            self.send(reply_to, MeshMsg::CommitAck { id });
            return;
        };
        let needs = commit.taken + 1;
        commit.answers.push_back((needs, reply_to, id));
        self.outputs.push_back(Output::Commit);
    }

    /// Another shard synced past the fence `id` of ours.
    pub(super) fn commit_ack(&mut self, id: u64) {
        if let Some(commit) = self.commit_mut() {
            if let Some(wait) = commit.waits.iter_mut().find(|w| w.id == id) {
                wait.acks = wait.acks.saturating_sub(1);
            }
        }
        self.complete_commits();
    }

    /// The driver synced every batch up to `batch`: fences are answered, waits complete.
    pub fn synced(&mut self, batch: u64) {
        let Some(commit) = self.commit_mut() else {
            return;
        };
        commit.synced = commit.synced.max(batch);
        let synced = commit.synced;
        let mut answers = Vec::new();
        while commit.answers.front().is_some_and(|a| a.0 <= synced) {
            answers.extend(commit.answers.pop_front());
        }
        for (_, shard, id) in answers {
            self.send(shard, MeshMsg::CommitAck { id });
        }
        self.complete_commits();
    }

    /// True while something waits for a sync (the driver runs its log without waiting for
    /// the interval).
    pub fn commit_wanted(&self) -> bool {
        self.journal
            .as_ref()
            .and_then(|j| j.commit.as_ref())
            .is_some_and(|c| !c.answers.is_empty() || c.waits.iter().any(|w| w.needs > c.synced))
    }

    /// Counts a batch taken by the driver; returns its number.
    pub(super) fn batch_taken(&mut self) -> u64 {
        match self.commit_mut() {
            Some(commit) => {
                commit.taken += 1;
                commit.taken
            }
            None => 0,
        }
    }

    /// Releases the waiters of every complete wait (in order: a later round never overtakes).
    fn complete_commits(&mut self) {
        loop {
            let Some(commit) = self.commit_mut() else {
                return;
            };
            let done = commit
                .waits
                .front()
                .is_some_and(|w| w.acks == 0 && w.needs <= commit.synced);
            if !done {
                return;
            }
            let Some(wait) = commit.waits.pop_front() else {
                return;
            };
            for waiter in wait.waiters {
                match waiter {
                    Waiter::Conn(at) => self.fence_ack(at),
                    Waiter::Count(token) => self.counted(token, 0),
                }
            }
        }
    }

    fn commit_mut(&mut self) -> Option<&mut Commit> {
        self.journal.as_mut().and_then(|j| j.commit.as_mut())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;
    use ringmq_proto::mqtt::{Packet, Publish, QoS, Str};

    use super::super::tests::{connect, outputs, poll_mesh, pump, shard, subscribe, v5_connect};
    use super::*;
    use crate::shard::ConnId;
    use crate::test_util::test_message;

    fn committing(count: usize) -> Vec<Shard> {
        let mut shards = shard(count);
        for s in &mut shards {
            s.enable_journal();
            s.enable_commit();
        }
        shards
    }

    fn publish(s: &mut Shard, slot: Slot, topic: &str, qos: QoS, id: u16, now: Instant) {
        let packet = Packet::Publish(Publish {
            qos,
            topic: Str::from(topic),
            packet_id: id,
            payload: Bytes::from_static(b"m"),
            ..Default::default()
        });
        s.handle_packet(slot, packet, now);
        s.flush(now);
    }

    /// Fence answers `conn`'s writer still waits for, by the outputs seen.
    fn held(seen: &[Output], conn: ConnId) -> i64 {
        seen.iter().fold(0, |held, output| match output {
            Output::Fence { at, count } if at.conn == conn => held + i64::from(*count),
            Output::FenceDone(at) if at.conn == conn => held - 1,
            _ => held,
        })
    }

    /// What the driver's journal task does: checkpoint, take, (write, sync,) report.
    fn sync(s: &mut Shard, now: Instant) -> Vec<u8> {
        s.checkpoint(now);
        let mut records = Vec::new();
        let batch = s.take_records(&mut records);
        s.synced(batch);
        s.flush(now);
        records
    }

    /// The PUBACK of a publish whose copy went to a persistent subscriber on another shard
    /// leaves only after the publisher's shard synced and the other shard synced the copy.
    #[test]
    fn an_ack_waits_for_the_sync_of_every_shard_that_got_a_copy() {
        let mut shards = committing(2);
        let now = Instant::now();
        let (sub, _) = connect(&mut shards[0], "sub", v5_connect("sub", 0, 600), now);
        subscribe(&mut shards[0], sub, "t/#", now);
        pump(&mut shards, now);
        sync(&mut shards[0], now);
        let (publisher, conn) = connect(&mut shards[1], "pub", v5_connect("pub", 0, 0), now);
        outputs(&mut shards[1]);
        publish(&mut shards[1], publisher, "t/1", QoS::AtLeastOnce, 1, now);
        let mut seen = outputs(&mut shards[1]);
        assert_eq!(held(&seen, conn), 1, "the PUBACK is held");
        assert!(seen.iter().any(|o| matches!(o, Output::Commit)));
        assert!(shards[1].commit_wanted());
        sync(&mut shards[1], now);
        seen.extend(outputs(&mut shards[1]));
        assert_eq!(held(&seen, conn), 1, "shard 0 has not synced the copy");
        // Shard 0 reads the copy, then the fence: it answers after its next sync only.
        poll_mesh(&mut shards, 0, now);
        assert!(shards[0].commit_wanted());
        poll_mesh(&mut shards, 1, now);
        seen.extend(outputs(&mut shards[1]));
        assert_eq!(held(&seen, conn), 1, "answered before the sync");
        let records = sync(&mut shards[0], now);
        assert!(
            !records.is_empty(),
            "the batch holds the subscriber's session and its copy"
        );
        assert!(!shards[0].commit_wanted());
        poll_mesh(&mut shards, 1, now);
        seen.extend(outputs(&mut shards[1]));
        assert_eq!(held(&seen, conn), 0, "every log holds it: the PUBACK goes");
    }

    /// One commit covers every publish of a round, and a later round waits for its own
    /// (later) batch: a sync taken before a publish never releases its acknowledgement.
    #[test]
    fn a_batch_taken_before_a_publish_does_not_release_it() {
        let mut shards = committing(1);
        let s = &mut shards[0];
        let now = Instant::now();
        let (publisher, conn) = connect(s, "pub", v5_connect("pub", 0, 0), now);
        outputs(s);
        publish(s, publisher, "t/1", QoS::AtLeastOnce, 1, now);
        publish(s, publisher, "t/2", QoS::ExactlyOnce, 2, now);
        let mut seen = outputs(s);
        assert_eq!(held(&seen, conn), 2, "one fence per round");
        // The driver took its batch before the second round's fence... and reports it late.
        s.checkpoint(now);
        let mut records = Vec::new();
        let first = s.take_records(&mut records);
        publish(s, publisher, "t/3", QoS::AtLeastOnce, 3, now);
        seen.extend(outputs(s));
        s.synced(first);
        seen.extend(outputs(s));
        assert_eq!(
            held(&seen, conn),
            1,
            "the third publish waits for the next batch"
        );
        sync(s, now);
        seen.extend(outputs(s));
        assert_eq!(held(&seen, conn), 0);
    }

    /// A REST `qos: 1` publish is answered once the logs hold its copies.
    #[test]
    fn a_counted_publish_is_answered_after_the_commit() {
        let mut shards = committing(1);
        let s = &mut shards[0];
        let now = Instant::now();
        let message = test_message("t/x", b"m", QoS::AtLeastOnce, false);
        let token = s.publish_counted(message, now);
        let counted = |seen: &[Output]| {
            seen.iter()
                .any(|o| matches!(o, Output::Counted(t) if *t == token))
        };
        assert!(!counted(&outputs(s)));
        assert_eq!(s.take_count(token), None, "not before the sync");
        sync(s, now);
        assert!(counted(&outputs(s)));
        assert_eq!(s.take_count(token), Some(0));
    }

    /// Without `sync` durability nothing is held (and QoS 0 never is).
    #[test]
    fn nothing_is_held_without_commits_or_at_qos_0() {
        let mut plain = shard(1);
        let now = Instant::now();
        let (slot, conn) = connect(&mut plain[0], "p", v5_connect("p", 0, 0), now);
        outputs(&mut plain[0]);
        publish(&mut plain[0], slot, "t/1", QoS::AtLeastOnce, 1, now);
        assert_eq!(held(&outputs(&mut plain[0]), conn), 0);
        let mut shards = committing(1);
        let (slot, conn) = connect(&mut shards[0], "p", v5_connect("p", 0, 0), now);
        outputs(&mut shards[0]);
        publish(&mut shards[0], slot, "t/1", QoS::AtMostOnce, 0, now);
        assert_eq!(held(&outputs(&mut shards[0]), conn), 0);
        assert!(!shards[0].commit_wanted());
    }
}
