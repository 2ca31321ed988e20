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
//!
//! A round whose every acknowledgement is a PUBACK of a non-retained QoS 1 message may also
//! complete before its sync, once every copy of those messages is consumed: each subscriber
//! acknowledged its copy (or it was dropped as it would have been after the sync), so no
//! session, queue or lane holds the message any more and a crash now loses nothing the
//! sync would have kept. RabbitMQ confirms a persistent message the same way ("as soon as it
//! is persisted to disk, or when it is consumed on every queue"). The test is the message's
//! reference count: every holder of a copy (a session's queue or window, a mesh lane to
//! another shard, a stream's ring) holds the shared message, so a count of one (the wait's
//! own) means nobody does; a holder the test does not know of only delays the
//! acknowledgement to the sync. Such a round asks for no sync at once: it gives its copies a
//! grace ([`Shard::enable_commit`]) to be consumed, and only then sends its fences and asks
//! for the sync; a fast subscriber thus saves the write its acknowledgement would have
//! waited for, and an offline or slow one costs its publisher one grace more.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use ringmq_proto::message::SharedMessage;

use super::{ConnAt, Output, Shard, Slot};
use crate::mesh_msg::MeshMsg;

/// The group-commit side of a shard in `sync` mode.
#[derive(Debug)]
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
    /// This round may complete when its copies are consumed (every waiter so far is a
    /// consumable PUBACK).
    round_consumable: bool,
    /// The messages this round's PUBACKs acknowledge.
    round_messages: Vec<SharedMessage>,
    /// The PUBACK just held is consumable: its message joins `round_messages`.
    watching: bool,
    /// How long a consumable round waits for its copies to be consumed before it asks for
    /// the sync (zero: it asks at once).
    grace: Duration,
    /// A copy of this round went to an offline session: no grace for it.
    round_offline: bool,
}

impl Commit {
    /// A copy went to an offline session's queue in this round: its consumption is not near,
    /// so the round asks for its sync at once (no grace).
    pub(super) fn copy_kept_offline(&mut self) {
        self.round_offline = true;
    }
}

impl Default for Commit {
    fn default() -> Self {
        Commit {
            taken: 0,
            synced: 0,
            round: Vec::new(),
            next_id: 0,
            waits: VecDeque::new(),
            answers: VecDeque::new(),
            round_consumable: true,
            round_messages: Vec::new(),
            watching: false,
            grace: Duration::ZERO,
            round_offline: false,
        }
    }
}

/// What waits for a commit.
#[derive(Debug)]
enum Waiter {
    /// Acknowledgements (encoded PUBACKs and PUBRECs, in order) for a connection's outbox, and
    /// the cluster tickets of their messages (see `cluster_acks.rs`).
    Acks(ConnAt, BytesMut, Vec<u64>),
    /// A counted REST publish (one more answer to its count).
    Count(u64),
    /// A connection's writer, held whole ([`Shard::hold_writer`]).
    Fence(ConnAt),
    /// Another node's message routed here: its receipt goes to the bridge (`cluster.rs`).
    Receipt(u64),
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
    /// It may complete before its sync once no copy of `messages` is held (see the module).
    consumable: bool,
    /// The messages its PUBACKs acknowledge, while `consumable`.
    messages: Vec<SharedMessage>,
    /// How many of `messages` were seen consumed (a consumed message stays consumed).
    consumed: usize,
    /// Until when it gives its copies to be consumed: no fence sent, no sync asked yet.
    grace_until: Option<Instant>,
}

impl Wait {
    /// True once every copy of its messages is consumed, when that is enough.
    fn copies_consumed(&mut self) -> bool {
        if !self.consumable {
            return false;
        }
        while let Some(message) = self.messages.get(self.consumed) {
            if SharedMessage::strong_count(message) > 1 {
                return false;
            }
            self.consumed += 1;
        }
        true
    }
}

impl Shard {
    /// Turns the group commit on (`sync` durability): acknowledgements wait for the logs.
    /// `grace`: how long a round of PUBACKs gives its messages' copies to be consumed before
    /// it asks for a sync (see the module).
    pub fn enable_commit(&mut self, grace: Duration) {
        if let Some(journal) = self.journal.as_mut() {
            journal.commit.get_or_insert_with(Default::default).grace = grace;
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
    /// `consumable`: a PUBACK that may go once its message's copies are consumed (the
    /// message follows, [`Shard::watch_copies`]).
    pub(super) fn hold_ack(&mut self, slot: Slot, from: usize, consumable: bool) {
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
        commit.watching = consumable;
        commit.round_consumable &= consumable;
        // A connection's packets of one round come together: one entry holds them all.
        match commit.round.last_mut() {
            Some(Waiter::Acks(last, held, _)) if *last == at => held.extend_from_slice(&acks),
            _ => commit.round.push(Waiter::Acks(at, acks, Vec::new())),
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
        let Some(at) = self.fence_writer(slot, 1) else {
            return;
        };
        if let Some(commit) = self.commit_mut() {
            commit.round.push(Waiter::Fence(at));
            commit.round_consumable = false;
        }
    }

    /// The message of the consumable PUBACK just held: the round's wait watches its copies.
    pub(super) fn watch_copies(&mut self, message: &SharedMessage) {
        if let Some(commit) = self.commit_mut() {
            if std::mem::take(&mut commit.watching) {
                commit.round_messages.push(SharedMessage::clone(message));
            }
        }
    }

    /// Makes the receipt of another node's message wait for this round's commit; false when
    /// commits are off (or the disk is full: nothing waits then).
    pub(super) fn receipt_commit(&mut self, receipt: u64) -> bool {
        if self.storage_full() {
            return false;
        }
        match self.commit_mut() {
            Some(commit) => {
                commit.round.push(Waiter::Receipt(receipt));
                commit.round_consumable = false;
                true
            }
            None => false,
        }
    }

    /// Makes the counted publish under `token` wait for this round's commit too (its count
    /// gets one more answer, given when the commit completes); false when commits are off.
    pub(super) fn count_commit(&mut self, token: u64) -> bool {
        match self.commit_mut() {
            Some(commit) => {
                commit.round.push(Waiter::Count(token));
                commit.round_consumable = false;
                true
            }
            None => false,
        }
    }

    /// Ends the round: its waiters wait for this shard's next batch and every other shard's
    /// (a consumable round first for its grace, [`Shard::commit_deadline`]).
    pub(super) fn close_commit_round(&mut self, now: Instant) {
        if !self.commits() {
            return;
        }
        // A subscriber's PUBACK in this round may have consumed an earlier round's copies.
        self.complete_commits();
        self.end_graces(now);
        let count = self.count;
        let Some(commit) = self.commit_mut() else {
            return;
        };
        commit.watching = false;
        let offline = std::mem::take(&mut commit.round_offline);
        if commit.round.is_empty() {
            commit.round_messages.clear();
            commit.round_consumable = true;
            return;
        }
        commit.next_id += 1;
        let id = commit.next_id;
        let waiters = std::mem::take(&mut commit.round);
        let messages = std::mem::take(&mut commit.round_messages);
        let consumable = std::mem::replace(&mut commit.round_consumable, true);
        let grace_until =
            (consumable && !offline && !commit.grace.is_zero()).then(|| now + commit.grace);
        commit.waits.push_back(Wait {
            id,
            needs: commit.taken + 1,
            acks: count - 1,
            waiters,
            consumable,
            messages,
            consumed: 0,
            grace_until,
        });
        // Consumed already (no copy was made, or every one went out at QoS 0): no sync asked.
        self.complete_commits();
        let waiting = self
            .commit_mut()
            .and_then(|c| c.waits.back())
            .is_some_and(|w| w.id == id && w.grace_until.is_none());
        if waiting {
            self.ask_commit(id);
        }
    }

    /// Sends the fences of wait `id` and asks the driver for a sync.
    fn ask_commit(&mut self, id: u64) {
        let me = self.id;
        for shard in 0..self.count {
            if shard != me {
                self.send(shard, MeshMsg::CommitFence { reply_to: me, id });
            }
        }
        self.outputs.push_back(Output::Commit);
    }

    /// Rounds whose grace ran out unconsumed wait for the sync from now on.
    fn end_graces(&mut self, now: Instant) {
        let mut ended = Vec::new();
        if let Some(commit) = self.commit_mut() {
            for wait in &mut commit.waits {
                if wait.grace_until.is_some_and(|at| at <= now) {
                    wait.grace_until = None;
                    ended.push(wait.id);
                }
            }
        }
        for id in ended {
            self.ask_commit(id);
        }
    }

    /// When the earliest grace of a consumable round runs out: the driver ends a round then
    /// ([`Shard::flush`]) if none ended before.
    pub fn commit_deadline(&self) -> Option<Instant> {
        let commit = self.journal.as_ref()?.commit.as_ref()?;
        commit.waits.iter().filter_map(|w| w.grace_until).min()
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
            .is_some_and(|c| {
                !c.answers.is_empty()
                    || c.waits
                        .iter()
                        .any(|w| w.needs > c.synced && w.grace_until.is_none())
            })
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
            let synced = commit.synced;
            let done = commit
                .waits
                .front_mut()
                .is_some_and(|w| (w.acks == 0 && w.needs <= synced) || w.copies_consumed());
            if !done {
                return;
            }
            let Some(wait) = commit.waits.pop_front() else {
                return;
            };
            for waiter in wait.waiters {
                match waiter {
                    Waiter::Acks(at, acks, tickets) => self.release_acks(at, &acks, tickets),
                    Waiter::Count(token) => self.counted(token, 0),
                    Waiter::Fence(at) => self.fence_ack(at),
                    Waiter::Receipt(receipt) => {
                        self.outputs.push_back(Output::ClusterReceipt(receipt))
                    }
                }
            }
        }
    }

    /// Puts committed acknowledgements into their connection's outbox (dropped if it left:
    /// not acknowledged, so its client sends the PUBLISH again).
    fn release_acks(&mut self, at: ConnAt, acks: &[u8], tickets: Vec<u64>) {
        let Some(entry) = self.entries.get_mut(at.slot) else {
            return;
        };
        if entry.conn() != Some(at.conn) {
            return;
        }
        if self.cluster_acks.waits_for(&tickets) || self.cluster_acks.holds(at) {
            // Committed here; the other nodes have not all taken the message yet (or an
            // earlier acknowledgement of the connection still waits for them: order holds).
            self.hold_for_cluster(at, tickets, acks);
            return;
        }
        let Some(entry) = self.entries.get_mut(at.slot) else {
            return;
        };
        entry.session.out.extend_from_slice(acks);
        self.want_write(at.slot);
    }

    /// The acknowledgement this round holds for `at` also waits for cluster ticket `ticket`.
    pub(super) fn commit_wants_ticket(&mut self, at: ConnAt, ticket: u64) {
        let Some(commit) = self.commit_mut() else {
            return;
        };
        match commit.round.last_mut() {
            Some(Waiter::Acks(last, _, wanted)) if *last == at => wanted.push(ticket),
            // Not held by the commit after all (the disk is full): the ticket goes unwaited,
            // as the acknowledgement already went out.
            _ => {}
        }
    }

    fn commit_mut(&mut self) -> Option<&mut Commit> {
        self.journal.as_mut().and_then(|j| j.commit.as_mut())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Instant;

    use bytes::Bytes;
    use ringmq_proto::mqtt::{decode_packet, Packet, ProtocolVersion, Publish, QoS, Str};

    use super::super::tests::{connect, outputs, poll_mesh, pump, shard, subscribe, v5_connect};
    use super::*;
    use crate::test_util::test_message;

    pub(in crate::shard) fn committing(count: usize) -> Vec<Shard> {
        let mut shards = shard(count);
        for s in &mut shards {
            s.enable_journal();
            s.enable_commit(Duration::ZERO);
        }
        shards
    }

    pub(in crate::shard) fn publish(
        s: &mut Shard,
        slot: Slot,
        topic: &str,
        qos: QoS,
        id: u16,
        now: Instant,
    ) {
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
    pub(in crate::shard) fn acks(s: &mut Shard, slot: Slot) -> Vec<u16> {
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
    pub(in crate::shard) fn sync(s: &mut Shard, now: Instant) -> Vec<u8> {
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
        let sub = persistent_subscriber(s, "sub", "t/#", now);
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
        assert_eq!(
            delivered(s, sub).len(),
            3,
            "the subscriber never acknowledged"
        );
    }

    /// A persistent v5 subscriber of `filter`, its SUBACK committed and taken out.
    fn persistent_subscriber(s: &mut Shard, id: &str, filter: &str, now: Instant) -> Slot {
        let (slot, _) = connect(s, id, v5_connect(id, 0, 600), now);
        subscribe(s, slot, filter, now);
        sync(s, now);
        outputs(s);
        delivered(s, slot);
        slot
    }

    /// The packet ids of the QoS 1/2 PUBLISHes in the outbox of `slot`, taken out.
    fn delivered(s: &mut Shard, slot: Slot) -> Vec<u16> {
        let entry = s.entry_mut(slot).expect("the session");
        let mut out = std::mem::take(&mut entry.session.out);
        let mut ids = Vec::new();
        while let Ok(Some(packet)) = decode_packet(&mut out, ProtocolVersion::V5, 1 << 20) {
            if let Packet::Publish(p) = packet {
                ids.push(p.packet_id);
            }
        }
        ids
    }

    /// Every shard syncs and reads its lanes until every fence so far is answered.
    fn settle(shards: &mut [Shard], now: Instant) {
        for _ in 0..3 {
            for at in 0..shards.len() {
                sync(&mut shards[at], now);
                poll_mesh(shards, at, now);
            }
        }
    }

    /// `slot` acknowledges every QoS 1 delivery in its outbox, as its client would.
    fn consume(s: &mut Shard, slot: Slot, now: Instant) {
        for id in delivered(s, slot) {
            puback(s, slot, id, now);
        }
    }

    /// `slot` acknowledges the QoS 1 delivery `id`, as its client would.
    fn puback(s: &mut Shard, slot: Slot, id: u16, now: Instant) {
        let ack = Packet::PubAck(ringmq_proto::mqtt::PubResp {
            packet_id: id,
            reason: ringmq_proto::mqtt::ReasonCode::SUCCESS,
            properties: Default::default(),
        });
        s.handle_packet(slot, ack, now);
        s.flush(now);
    }

    /// A QoS 1 PUBACK whose every copy was acknowledged by its subscribers goes before the
    /// sync (delivered is as good as stored); with no copy at all it goes at once, and asks
    /// for no sync.
    #[test]
    fn a_puback_goes_before_the_sync_once_every_copy_is_consumed() {
        let mut shards = committing(1);
        let s = &mut shards[0];
        let now = Instant::now();
        let a = persistent_subscriber(s, "a", "t/#", now);
        let b = persistent_subscriber(s, "b", "t/1", now);
        let (publisher, _) = connect(s, "pub", v5_connect("pub", 0, 0), now);
        s.flush(now);
        sync(s, now);
        publish(s, publisher, "t/1", QoS::AtLeastOnce, 1, now);
        assert!(acks(s, publisher).is_empty(), "two copies held");
        let (to_a, to_b) = (delivered(s, a), delivered(s, b));
        puback(s, a, to_a[0], now);
        assert!(acks(s, publisher).is_empty(), "b holds its copy");
        puback(s, b, to_b[0], now);
        assert_eq!(
            acks(s, publisher),
            [1],
            "consumed everywhere: no sync needed"
        );
        assert!(outputs(s)
            .iter()
            .any(|o| matches!(o, Output::Write { slot, .. } if *slot == publisher)));
        // Nobody subscribed: nothing to keep, the PUBACK goes with the round.
        outputs(s);
        publish(s, publisher, "x/1", QoS::AtLeastOnce, 2, now);
        assert_eq!(acks(s, publisher), [2]);
        assert!(!outputs(s).iter().any(|o| matches!(o, Output::Commit)));
    }

    /// With a grace, a consumable round asks for no sync until the grace runs out: consumed
    /// within it, its PUBACK goes without one; not consumed, it asks then (and a two-shard
    /// round sends its fences then).
    #[test]
    fn a_grace_saves_the_sync_of_a_round_consumed_within_it() {
        let grace = Duration::from_millis(1);
        let mut shards = committing(2);
        for s in &mut shards {
            s.enable_commit(grace);
        }
        let now = Instant::now();
        let sub = persistent_subscriber(&mut shards[1], "sub", "t/#", now);
        let (publisher, _) = connect(&mut shards[1], "pub", v5_connect("pub", 0, 0), now);
        shards[1].flush(now);
        settle(&mut shards, now);
        outputs(&mut shards[1]);
        let s = &mut shards[1];
        publish(s, publisher, "t/1", QoS::AtLeastOnce, 1, now);
        assert_eq!(s.commit_deadline(), Some(now + grace));
        assert!(!s.commit_wanted());
        assert!(!outputs(s).iter().any(|o| matches!(o, Output::Commit)));
        assert!(s.outgoing()[0].is_empty(), "no fence yet");
        let ids = delivered(s, sub);
        puback(s, sub, ids[0], now + grace / 2);
        assert_eq!(acks(s, publisher), [1], "consumed within the grace");
        assert_eq!(s.commit_deadline(), None);
        assert!(!outputs(s).iter().any(|o| matches!(o, Output::Commit)));
        // Not consumed: the end of the grace asks for the sync, fences included.
        publish(s, publisher, "t/2", QoS::AtLeastOnce, 2, now);
        delivered(s, sub);
        s.flush(now + grace / 2);
        assert!(!s.commit_wanted());
        s.flush(now + grace);
        assert!(s.commit_wanted());
        assert!(outputs(s).iter().any(|o| matches!(o, Output::Commit)));
        assert!(!s.outgoing()[0].is_empty(), "the fence goes now");
        assert!(acks(s, publisher).is_empty());
        sync(&mut shards[1], now + grace);
        poll_mesh(&mut shards, 0, now + grace);
        sync(&mut shards[0], now + grace);
        poll_mesh(&mut shards, 1, now + grace);
        assert_eq!(acks(&mut shards[1], publisher), [2]);
        // A copy queued for an offline session will not be consumed soon: no grace.
        let s = &mut shards[1];
        s.end_connection(sub, None, false, now);
        s.flush(now);
        publish(s, publisher, "t/3", QoS::AtLeastOnce, 3, now + grace);
        assert_eq!(s.commit_deadline(), None);
        assert!(s.commit_wanted(), "asked at once");
    }

    /// A copy routed to a subscriber on another shard counts too: consumed there, the
    /// PUBACK goes at the publisher's shard's next round, before either sync.
    #[test]
    fn a_copy_consumed_on_another_shard_releases_the_puback() {
        let mut shards = committing(2);
        let now = Instant::now();
        let sub = persistent_subscriber(&mut shards[0], "sub", "t/#", now);
        pump(&mut shards, now);
        sync(&mut shards[0], now);
        let (publisher, _) = connect(&mut shards[1], "pub", v5_connect("pub", 0, 0), now);
        shards[1].flush(now);
        // Every fence so far answered: nothing older waits in front of the publish.
        settle(&mut shards, now);
        assert!(!shards[0].commit_wanted() && !shards[1].commit_wanted());
        outputs(&mut shards[1]);
        publish(&mut shards[1], publisher, "t/1", QoS::AtLeastOnce, 1, now);
        poll_mesh(&mut shards, 0, now);
        let ids = delivered(&mut shards[0], sub);
        assert_eq!(ids.len(), 1);
        shards[1].flush(now);
        assert!(
            acks(&mut shards[1], publisher).is_empty(),
            "not consumed yet"
        );
        puback(&mut shards[0], sub, ids[0], now);
        shards[1].flush(now);
        assert_eq!(acks(&mut shards[1], publisher), [1]);
        // The other shard's late answer to the fence finds no wait, and breaks nothing.
        sync(&mut shards[0], now);
        poll_mesh(&mut shards, 1, now);
        assert!(!shards[1].commit_wanted());
    }

    /// What the copies' consumption never releases: a retained message (the store holds
    /// it), a QoS 2 PUBREC (its receipt), a round that also holds a CONNACK or SUBACK, a copy
    /// queued for an offline session; and a consumed round never overtakes an earlier one.
    #[test]
    fn what_waits_for_the_sync_even_when_consumed() {
        let mut shards = committing(1);
        let s = &mut shards[0];
        let now = Instant::now();
        let sub = persistent_subscriber(s, "sub", "t/#", now);
        let (publisher, _) = connect(s, "pub", v5_connect("pub", 0, 0), now);
        s.flush(now);
        sync(s, now);
        let packet = Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: Str::from("t/r"),
            packet_id: 1,
            payload: Bytes::from_static(b"m"),
            ..Default::default()
        });
        s.handle_packet(publisher, packet, now);
        s.flush(now);
        consume(s, sub, now);
        assert!(
            acks(s, publisher).is_empty(),
            "retained: the store must hold it"
        );
        sync(s, now);
        assert_eq!(acks(s, publisher), [1]);
        // QoS 2: the receipt is state.
        publish(s, publisher, "t/2", QoS::ExactlyOnce, 2, now);
        consume(s, sub, now);
        assert!(acks(s, publisher).is_empty(), "a PUBREC waits");
        // A later consumed round waits behind it.
        publish(s, publisher, "t/3", QoS::AtLeastOnce, 3, now);
        consume(s, sub, now);
        assert!(
            acks(s, publisher).is_empty(),
            "never before an earlier round"
        );
        sync(s, now);
        assert_eq!(acks(s, publisher), [2, 3]);
        // A new session's CONNACK in the same round as a consumable PUBACK.
        let packet = Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: Str::from("x/4"),
            packet_id: 4,
            payload: Bytes::from_static(b"m"),
            ..Default::default()
        });
        s.handle_packet(publisher, packet, now);
        let (_late, _) = connect(s, "late", v5_connect("late", 0, 600), now);
        s.flush(now);
        assert!(
            acks(s, publisher).is_empty(),
            "the round holds a new session"
        );
        sync(s, now);
        assert_eq!(acks(s, publisher), [4]);
        // An offline persistent subscriber holds its queued copy until the sync.
        s.end_connection(sub, None, false, now);
        s.flush(now);
        sync(s, now);
        publish(s, publisher, "t/5", QoS::AtLeastOnce, 5, now);
        assert!(
            acks(s, publisher).is_empty(),
            "queued for the offline session"
        );
        sync(s, now);
        assert_eq!(acks(s, publisher), [5]);
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
