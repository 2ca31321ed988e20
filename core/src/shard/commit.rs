//! `sync` durability's group commit: the acknowledgement of a QoS 1/2 publish (PUBACK,
//! PUBREC, the REST `qos: 1` answer) leaves only once every shard that may hold a copy of the
//! message has synced its log past it.
//!
//! A publish changes several shards: the publisher's own (its QoS 2 receipt, local
//! subscribers), every shard a copy was routed to, and the topic's home (a retained message).
//! The publisher's shard takes the acknowledgement out of the session's outbox as the session
//! writes it, and, at the end of the round, sends one `CommitFence` to every other shard. Mesh
//! lanes are FIFO, so a shard reads the fence after the copies sent before it; it answers
//! `CommitAck` once its next sync is done. With its own next sync done too and every answer
//! in, the held acknowledgements go back into their outboxes, in order.
//!
//! Only acknowledgements wait: deliveries to the same client go on, and while one round's
//! commit syncs the next round's publishes are already read and routed (their commit is the
//! next sync). One fence covers every connection of the shard that got an acknowledgement in
//! that round, and a shard's one sync answers every fence that reached it before the sync
//! began: a sync per shard per round, whatever the number of connections and publishes (group
//! commit). The driver runs its log as soon as [`Output::Commit`] asks, not on its interval.

use std::collections::VecDeque;

use bytes::BytesMut;

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
#[derive(Debug)]
enum Waiter {
    /// Acknowledgements (encoded PUBACKs and PUBRECs, in order) for a connection's outbox.
    Acks(ConnAt, BytesMut),
    /// A counted REST publish (one more answer to its count).
    Count(u64),
    /// A connection's writer, held whole ([`Shard::hold_writer`]).
    Fence(ConnAt),
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

    /// Takes what the session in `slot` wrote into its outbox since `from` (the PUBACK or
    /// PUBREC of a QoS 1/2 PUBLISH, granted or refused: the order of acknowledgements is the
    /// order of the PUBLISHes) and holds it for this round's commit. While the disk is full
    /// nothing is held: a refusal must reach the client, and no commit completes meanwhile.
    pub(super) fn hold_ack(&mut self, slot: Slot, from: usize) {
        if !self.commits() || self.storage_full() {
            return;
        }
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };
        let Some(conn) = entry.conn() else {
            return;
        };
        if entry.session.out.len() <= from {
            return;
        }
        let acks = entry.session.out.split_off(from);
        let at = ConnAt { slot, conn };
        let Some(commit) = self.commit_mut() else {
            return;
        };
        // A connection's packets of one round come together: one entry holds them all.
        match commit.round.last_mut() {
            Some(Waiter::Acks(last, held)) if *last == at => held.extend_from_slice(&acks),
            _ => commit.round.push(Waiter::Acks(at, acks)),
        }
    }

    /// Holds the writer of `slot` until this round's commit: its CONNACK of a new session or
    /// its SUBACK / UNSUBACK acknowledge session state that a kill -9 must not take back,
    /// so nothing the connection is sent goes out before the logs hold that state (a fence,
    /// as a SUBACK waits for the other replicas: the order of what it is sent stays).
    pub(super) fn hold_writer(&mut self, slot: Slot) {
        if !self.commits() || self.storage_full() {
            return;
        }
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };
        let Some(conn) = entry.conn() else {
            return;
        };
        entry.fences += 1;
        let at = ConnAt { slot, conn };
        self.emit_urgent(Output::Fence { at, count: 1 });
        if let Some(commit) = self.commit_mut() {
            commit.round.push(Waiter::Fence(at));
        }
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
                    Waiter::Acks(at, acks) => self.release_acks(at, &acks),
                    Waiter::Count(token) => self.counted(token, 0),
                    Waiter::Fence(at) => self.fence_ack(at),
                }
            }
        }
    }

    /// Puts committed acknowledgements into their connection's outbox (dropped if it left:
    /// not acknowledged, so its client sends the PUBLISH again).
    fn release_acks(&mut self, at: ConnAt, acks: &[u8]) {
        let Some(entry) = self.entries.get_mut(at.slot) else {
            return;
        };
        if entry.conn() != Some(at.conn) {
            return;
        }
        entry.session.out.extend_from_slice(acks);
        self.want_write(at.slot);
    }

    fn commit_mut(&mut self) -> Option<&mut Commit> {
        self.journal.as_mut().and_then(|j| j.commit.as_mut())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;
    use ringmq_proto::mqtt::{decode_packet, Packet, ProtocolVersion, Publish, QoS, Str};

    use super::super::tests::{connect, outputs, poll_mesh, pump, shard, subscribe, v5_connect};
    use super::*;
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

    /// The acknowledgements (PUBACK, PUBREC) in the outbox of `slot`, by packet id, taken out.
    fn acks(s: &mut Shard, slot: Slot) -> Vec<u16> {
        let entry = s.entry_mut(slot).expect("the session");
        let mut out = std::mem::take(&mut entry.session.out);
        let mut ids = Vec::new();
        while let Ok(Some(packet)) = decode_packet(&mut out, ProtocolVersion::V5, 1 << 20) {
            if let Packet::PubAck(ack) | Packet::PubRec(ack) = packet {
                ids.push(ack.packet_id);
            }
        }
        ids
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
        let (publisher, _) = connect(&mut shards[1], "pub", v5_connect("pub", 0, 0), now);
        outputs(&mut shards[1]);
        publish(&mut shards[1], publisher, "t/1", QoS::AtLeastOnce, 1, now);
        assert!(
            acks(&mut shards[1], publisher).is_empty(),
            "the PUBACK is held"
        );
        assert!(outputs(&mut shards[1])
            .iter()
            .any(|o| matches!(o, Output::Commit)));
        assert!(shards[1].commit_wanted());
        sync(&mut shards[1], now);
        assert!(
            acks(&mut shards[1], publisher).is_empty(),
            "shard 0 has not synced the copy"
        );
        // Shard 0 reads the copy, then the fence: it answers after its next sync only.
        poll_mesh(&mut shards, 0, now);
        assert!(shards[0].commit_wanted());
        poll_mesh(&mut shards, 1, now);
        assert!(
            acks(&mut shards[1], publisher).is_empty(),
            "answered before the sync"
        );
        let records = sync(&mut shards[0], now);
        assert!(
            !records.is_empty(),
            "the batch holds the subscriber's session and its copy"
        );
        assert!(!shards[0].commit_wanted());
        poll_mesh(&mut shards, 1, now);
        assert_eq!(
            acks(&mut shards[1], publisher),
            [1],
            "every log holds it: the PUBACK goes"
        );
        assert!(outputs(&mut shards[1])
            .iter()
            .any(|o| matches!(o, Output::Write { slot, .. } if *slot == publisher)));
    }

    /// One commit covers every publish of a round, and a later round waits for its own
    /// (later) batch: a sync taken before a publish never releases its acknowledgement.
    #[test]
    fn a_batch_taken_before_a_publish_does_not_release_it() {
        let mut shards = committing(1);
        let s = &mut shards[0];
        let now = Instant::now();
        let (publisher, _) = connect(s, "pub", v5_connect("pub", 0, 0), now);
        publish(s, publisher, "t/1", QoS::AtLeastOnce, 1, now);
        publish(s, publisher, "t/2", QoS::ExactlyOnce, 2, now);
        assert!(acks(s, publisher).is_empty());
        // The driver took its batch before the third round... and reports it after.
        s.checkpoint(now);
        let mut records = Vec::new();
        let first = s.take_records(&mut records);
        publish(s, publisher, "t/3", QoS::AtLeastOnce, 3, now);
        s.synced(first);
        assert_eq!(
            acks(s, publisher),
            [1, 2],
            "in order; the third waits for the next batch"
        );
        sync(s, now);
        assert_eq!(acks(s, publisher), [3]);
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

    /// Without `sync` durability nothing is held, nor while the disk is full (a refusal must
    /// reach the client); a connection that left before its commit is not acknowledged.
    #[test]
    fn what_is_never_held_and_what_is_dropped() {
        let now = Instant::now();
        let mut plain = shard(1);
        let (slot, _) = connect(&mut plain[0], "p", v5_connect("p", 0, 0), now);
        publish(&mut plain[0], slot, "t/1", QoS::AtLeastOnce, 1, now);
        assert_eq!(acks(&mut plain[0], slot), [1]);
        let mut shards = committing(1);
        let s = &mut shards[0];
        let (slot, _) = connect(s, "p", v5_connect("p", 0, 600), now);
        // (A new session's CONNACK waits for a commit: see `hold_writer`.)
        s.flush(now);
        sync(s, now);
        publish(s, slot, "t/1", QoS::AtMostOnce, 0, now);
        assert!(!s.commit_wanted(), "QoS 0 asks for no commit");
        s.set_storage_full(true);
        publish(s, slot, "t/2", QoS::AtLeastOnce, 2, now);
        assert_eq!(acks(s, slot), [2], "the 0x97 refusal goes at once");
        s.set_storage_full(false);
        publish(s, slot, "t/3", QoS::AtLeastOnce, 3, now);
        s.end_connection(slot, None, false, now);
        let (again, _) = connect(s, "p", v5_connect("p", 0, 600), now);
        sync(s, now);
        assert!(
            acks(s, slot).is_empty(),
            "the offline session's outbox gets nothing"
        );
        assert!(acks(s, again).is_empty(), "nor the new connection");
    }
}
