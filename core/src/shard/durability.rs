//! What the shard writes to its log, and how it comes back at start.
//!
//! Retained messages are recorded at their topic's home shard as they are set (the home's
//! order is every replica's order). Persistent sessions are *checkpointed*: a change marks a
//! session dirty, and [`Shard::checkpoint`] (the driver calls it every sync interval, and at
//! shutdown) writes each dirty session's whole state once, so a subscriber that takes 100k
//! messages a second costs one record a second, not 100k. A record's version is the wall
//! clock in nanoseconds from a clock base every shard shares: a session that moved has its
//! newer checkpoint on its new shard, and replay keeps the newest.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashSet;
use ringmq_proto::message::SharedMessage;
use ringmq_proto::mqtt::{QoS, Str, Will};
use ringmq_proto::session::Session;
use ringmq_router::split_shared;

use super::*;
use crate::durable::{encode_session, frame, Clock, Record, Recovered, SessionRecord, SessionView};
use crate::retained::RetainedReplica;
use crate::timers::TimerKind;

/// The shard's log side, while durability is on.
#[derive(Debug, Default)]
pub(super) struct Journal {
    /// Framed records the driver has not taken yet.
    pending: Vec<u8>,
    /// Sessions changed since their last checkpoint (slot, generation).
    dirty: Vec<(Slot, u32)>,
    /// `sync` durability's group commit, when on.
    pub(super) commit: Option<super::commit::Commit>,
    /// This shard's log cannot be written (disk full).
    full: bool,
    /// Shards whose log cannot be written, shared by every shard of the broker (they share the
    /// disk): while any cannot, every shard refuses what would need storing.
    failing: Arc<AtomicUsize>,
}

impl Shard {
    /// Turns the log side on: from now on changes are recorded for [`Shard::take_records`].
    pub fn enable_journal(&mut self) {
        self.journal.get_or_insert_with(Journal::default);
    }

    /// The driver could not write the log (`true`), or could again (`false`). While it cannot,
    /// QoS 1/2 publishes are refused (v5 0x97, v3 closed, REST 507) and QoS 0 ones are not
    /// kept as retained: nothing is acknowledged that could not be kept.
    pub fn set_storage_full(&mut self, full: bool) {
        if let Some(journal) = self.journal.as_mut() {
            if journal.full != full {
                journal.full = full;
                if full {
                    journal.failing.fetch_add(1, Ordering::Relaxed);
                } else {
                    journal.failing.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Shares the count of shards whose log cannot be written with the other shards (the
    /// driver gives every shard the same counter).
    pub fn share_storage_health(&mut self, failing: Arc<AtomicUsize>) {
        if let Some(journal) = self.journal.as_mut() {
            journal.failing = failing;
        }
    }

    /// True while the log of any shard sharing this one's counter cannot be written.
    pub fn storage_full(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|j| j.failing.load(Ordering::Relaxed) > 0)
    }

    /// True when changes are recorded.
    pub fn journaling(&self) -> bool {
        self.journal.is_some()
    }

    /// The clock that turns `Instant`s into the wall time records hold.
    pub fn wall_clock(&self) -> Clock {
        Clock {
            base: self.clock_base,
        }
    }

    /// Appends the records made since the last call to `out` (framed, ready to write);
    /// returns the batch's number, which [`Shard::synced`] reports back once it is on disk.
    pub fn take_records(&mut self, out: &mut Vec<u8>) -> u64 {
        if let Some(journal) = self.journal.as_mut() {
            if out.is_empty() {
                std::mem::swap(out, &mut journal.pending);
            } else {
                out.append(&mut journal.pending);
            }
        }
        self.batch_taken()
    }

    /// Bytes of records waiting for the driver (it writes early when they pile up).
    pub fn records_waiting(&self) -> usize {
        self.journal.as_ref().map_or(0, |j| j.pending.len())
    }

    /// Marks `slot`'s session changed, if it is one the log keeps (persistent, or persisted
    /// before and now ending).
    pub(super) fn touch(&mut self, slot: Slot) {
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };
        if entry.dirty || !(kept(entry) || entry.persisted) {
            return;
        }
        entry.dirty = true;
        journal.dirty.push((slot, entry.generation));
    }

    /// Writes every session changed since the last checkpoint.
    pub fn checkpoint(&mut self, now: Instant) {
        let Some(mut journal) = self.journal.take() else {
            return;
        };
        let clock = self.wall_clock();
        let version = clock.unix_nanos(now);
        let mut dirty = std::mem::take(&mut journal.dirty);
        for (slot, _) in dirty.drain(..) {
            if self.is_forwarder(slot) {
                // Moved away: its new shard writes it (with a later version).
                if let Some(entry) = self.entries.get_mut(slot) {
                    entry.dirty = false;
                }
                continue;
            }
            let Some(entry) = self.entries.get_mut(slot) else {
                continue;
            };
            if !entry.dirty {
                continue;
            }
            entry.dirty = false;
            if kept(entry) {
                entry.persisted = true;
                let view = session_view(entry, version, now, &clock);
                frame::append_with(&mut journal.pending, |out| {
                    encode_session(&view, &clock, out)
                });
            } else if entry.persisted {
                // A reconnect made it non-persistent: the stored one must not come back.
                entry.persisted = false;
                let ended = Record::SessionEnded {
                    client_id: entry.session.client_id.clone(),
                    version,
                };
                frame::append_with(&mut journal.pending, |out| ended.encode(&clock, out));
            }
        }
        journal.dirty = dirty;
        self.journal = Some(journal);
    }

    /// Records the first answer to a REST request with an `Idempotency-Key`; in `sync` mode
    /// returns a token whose count ([`Output::Counted`]) says the log holds it (the answer
    /// waits for it, as a publish's does).
    pub fn record_idempotent(
        &mut self,
        answer: Box<crate::durable::IdempotentAnswer>,
        now: Instant,
    ) -> Option<u64> {
        let clock = self.wall_clock();
        let journal = self.journal.as_mut()?;
        let record = Record::Idempotent(answer);
        frame::append_with(&mut journal.pending, |out| record.encode(&clock, out));
        self.commit_wait(now)
    }

    /// Records that the session of `entry` ended (at `now`).
    pub(super) fn record_session_end(&mut self, client_id: &Str, persisted: bool, now: Instant) {
        if !persisted {
            return;
        }
        let clock = self.wall_clock();
        if let Some(journal) = self.journal.as_mut() {
            let ended = Record::SessionEnded {
                client_id: client_id.clone(),
                version: clock.unix_nanos(now),
            };
            frame::append_with(&mut journal.pending, |out| ended.encode(&clock, out));
        }
    }

    /// Records a retained message set (or cleared) at its home.
    pub(super) fn record_retained(&mut self, topic: &Str, message: &Option<SharedMessage>) {
        let clock = self.wall_clock();
        if let Some(journal) = self.journal.as_mut() {
            let record = Record::Retained {
                topic: topic.clone(),
                message: message.clone(),
            };
            frame::append_with(&mut journal.pending, |out| record.encode(&clock, out));
        }
    }

    /// Everything this shard holds that the log keeps, as records: its persistent sessions and
    /// the retained messages homed here (a compacted log is this and nothing else).
    pub fn full_records(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.session_records(now, out);
        let retained = self.homed_retained();
        encode_retained(&retained, &self.wall_clock(), out);
    }

    /// The persistent sessions part of [`Shard::full_records`], as records.
    pub fn session_records(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.session_records_from(0, u32::MAX, now, out);
    }

    /// [`Shard::session_records`] in bounded steps, for a compaction that must not stall the
    /// shard: the sessions in slots from `from` on, until `max` slots are looked at; returns
    /// the slot to go on from, `None` when every slot was. A session that changes between
    /// steps is checkpointed in the log after the snapshot too, and replay keeps the highest
    /// version, so steps taken at different times make a consistent snapshot.
    pub fn session_records_from(
        &mut self,
        from: u32,
        max: u32,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Option<u32> {
        let clock = self.wall_clock();
        let version = clock.unix_nanos(now);
        let bound = self.entries.bound();
        let end = from.saturating_add(max).min(bound);
        for slot in from..end {
            if self.is_forwarder(slot) {
                continue;
            }
            let Some(entry) = self.entries.get_mut(slot) else {
                continue;
            };
            if entry.session.state.expiry_interval_secs == 0 {
                continue;
            }
            entry.persisted = true;
            let view = session_view(entry, version, now, &clock);
            frame::append_with(out, |buf| encode_session(&view, &clock, buf));
        }
        (end < bound).then_some(end)
    }

    /// The retained messages homed here (every replica holds them all), to encode with
    /// [`encode_retained`]: they share their payloads with the replica and need nothing else
    /// of the shard, so a compaction encodes them on a thread of its own.
    pub fn homed_retained(&self) -> Vec<(Str, SharedMessage)> {
        let mut homed = Vec::new();
        self.replica.retained.for_each(|topic, message| {
            if self.home_of(topic) == self.id {
                homed.push((Str::from(topic), message.clone()));
            }
        });
        homed
    }

    /// Rebuilds this shard's part of `recovered` before any connection: the sessions homed
    /// here (offline, expiring from when they went down), every retained message and every
    /// subscription into the replica (each shard computes the same placement, so no mesh
    /// message is needed). Returns the sessions restored here.
    pub fn restore(&mut self, recovered: &Recovered, now: Instant) -> usize {
        let mut retained = self.take_retained();
        retained.restore(recovered, now);
        let sessions = self.restore_sessions(recovered, now);
        self.finish_restore(retained, sessions, now)
    }

    /// Takes the retained replica out (empty, to fill with [`RetainedReplica::restore`], which
    /// needs nothing else of the shard: the driver runs it beside [`Shard::restore_sessions`]).
    pub fn take_retained(&mut self) -> RetainedReplica {
        let empty = self.replica.retained.emptied();
        std::mem::replace(&mut self.replica.retained, empty)
    }

    /// The sessions and subscriptions part of [`Shard::restore`]; the wills it found due wait
    /// for [`Shard::finish_restore`], when the retained replica is back.
    pub fn restore_sessions(&mut self, recovered: &Recovered, now: Instant) -> RestoredSessions {
        let clock = self.wall_clock();
        let mut announced: AHashSet<(Str, u16)> = AHashSet::new();
        let mut restored = RestoredSessions::default();
        if self.count > 1 {
            let filters: usize = recovered
                .sessions
                .iter()
                .filter(|record| self.home_of(&record.client_id) == self.id)
                .map(|record| record.state.subscriptions.len())
                .sum();
            self.replica.filter_counts.reserve(filters);
        }
        for record in &recovered.sessions {
            let home = self.home_of(&record.client_id);
            // A session connected when its checkpoint was written (offline time 0): the crash
            // came later, when is unknown (an idle connection is not checkpointed again).
            // Counted from that checkpoint, a long-lived connection's session could expire at
            // once; it counts from this start instead (late, never early). A session offline
            // at its checkpoint counts the time down exactly.
            let offline_since = if record.offline_since_ms == CONNECTED {
                now
            } else {
                clock.instant(record.offline_since_ms)
            };
            let expiry = Duration::from_secs(u64::from(record.state.expiry_interval_secs));
            let expired = offline_since + expiry <= now;
            if home == self.id {
                if expired {
                    // Expired while the broker was down: its will (a delayed one still
                    // pending) goes now, as it would have at expiry.
                    if let Some((will, _)) = &record.will {
                        restored.wills.push(will.clone());
                    }
                    // A log carried on from the last run still holds the session.
                    self.record_session_end(&record.client_id, true, now);
                    continue;
                }
                self.restore_session(record, offline_since, now, false);
                restored.count += 1;
            } else if !expired {
                for filter in record.state.subscriptions.keys() {
                    // The shared index counts members (a member's join and leave are each
                    // announced), the plain index only whether a shard has the filter: a
                    // shared filter counts once per session. (Counted once per shard, the
                    // first member to leave a shard after a restart took the shard out of the
                    // group's routing while others remained: found by ringmq-sim.)
                    if split_shared(filter).is_some() || announced.insert((filter.clone(), home)) {
                        self.index_remote(filter, home);
                    }
                }
            }
        }
        restored
    }

    /// Puts the restored retained replica back and publishes the wills that fell due while
    /// the broker was down (once every session and filter is back, so each reaches its
    /// subscribers). Returns the sessions restored.
    pub fn finish_restore(
        &mut self,
        retained: RetainedReplica,
        sessions: RestoredSessions,
        now: Instant,
    ) -> usize {
        self.replica.retained = retained;
        for will in sessions.wills {
            self.publish_will(Box::new(will), now);
        }
        sessions.count
    }

    /// Puts a remote shard's filter into this replica's index (what its announcement does).
    fn index_remote(&mut self, filter: &str, home: u16) {
        match split_shared(filter) {
            Some(shared) => self
                .replica
                .shared_index
                .add_member(shared.group, shared.filter, home),
            None => self.replica.index.add(filter, home),
        }
    }

    /// Seats a session from its record, offline, at this shard (its client id's home).
    /// `announce`: its subscriptions are announced to the other shards (a session taken from
    /// another node at run time); at start every shard reads them from the log itself.
    pub(super) fn restore_session(
        &mut self,
        record: &SessionRecord,
        offline_since: Instant,
        now: Instant,
        announce: bool,
    ) -> Slot {
        let client_id = record.client_id.clone();
        let mut session = Session::from_state(client_id.clone(), record.state.clone());
        session.disconnected_at = Some(offline_since);
        let queued: usize = session
            .state
            .queue
            .iter()
            .chain(session.state.inflight.iter().map(|f| &f.item))
            .filter(|item| item.qos != QoS::AtMostOnce)
            .map(|item| item.message.topic.len() + item.message.payload.len())
            .sum();
        let offline_bytes = u32::try_from(queued).unwrap_or(u32::MAX);
        self.generation_counter = self.generation_counter.wrapping_add(1);
        let generation = self.generation_counter;
        let token = self.next_token();
        let owner = session.state.owner;
        let subscriptions: Vec<_> = session
            .state
            .subscriptions
            .iter()
            .map(|(f, s)| (f.clone(), *s))
            .collect();
        let pending_will = record.will.as_ref().map(|(will, due)| {
            let at = self.wall_clock().instant(*due).max(now);
            Box::new((will.clone(), at))
        });
        let will_at = pending_will.as_ref().map(|p| p.1);
        let slot = self.entries.insert(Entry {
            // From another node, the session is not in this node's log yet.
            persisted: !announce,
            pending_will,
            offline_bytes,
            ..Entry::offline(session, generation, token, record.org, now)
        });
        *self.offline_bytes.entry(record.org).or_insert(0) += u64::from(offline_bytes);
        self.by_client_id.insert(&self.entries, slot);
        self.owners.insert(client_id, (token, owner));
        for (filter, subscription) in subscriptions {
            if announce {
                self.add_subscription(slot, &filter, subscription);
                continue;
            }
            // Quietly: every other shard puts this filter into its index itself.
            match split_shared(&filter) {
                Some(shared) => {
                    if self.replica.groups.join(shared.group, shared.filter, slot) {
                        self.replica
                            .shared_index
                            .add_member(shared.group, shared.filter, self.id);
                        self.cluster_shared(shared.group, shared.filter, true);
                    }
                }
                None => {
                    self.replica
                        .subscriptions
                        .insert(&filter, slot, subscription);
                    // (Quietly, as above; one shard keeps no index: see `filter_added`.)
                    if (self.count > 1 || self.cluster)
                        && self.replica.filter_counts.increment(&filter)
                    {
                        if self.count > 1 {
                            self.replica.index.add(&filter, self.id);
                        }
                        // The node's interest is its own: no other shard hears it.
                        self.cluster_interest(&filter, true);
                    }
                }
            }
        }
        let expiry = Duration::from_secs(u64::from(record.state.expiry_interval_secs));
        self.timers.push(
            offline_since + expiry,
            TimerKind::SessionExpiry,
            slot,
            generation,
            0,
        );
        if let Some(at) = will_at {
            self.timers
                .push(at, TimerKind::WillDelay, slot, generation, 0);
        }
        if announce {
            self.touch(slot);
        }
        slot
    }
}

/// Appends the records of retained messages (from [`Shard::homed_retained`]).
pub fn encode_retained(retained: &[(Str, SharedMessage)], clock: &Clock, out: &mut Vec<u8>) {
    for (topic, message) in retained {
        frame::append_with(out, |buf| {
            Record::encode_retained(topic, Some(message), clock, buf)
        });
    }
}

/// What [`Shard::restore_sessions`] leaves for [`Shard::finish_restore`].
#[derive(Debug, Default)]
pub struct RestoredSessions {
    /// Sessions restored on this shard.
    count: usize,
    /// Wills of sessions that ended while the broker was down.
    wills: Vec<Will>,
}

/// The offline time a checkpoint gives a session that is connected (never a real unix time).
const CONNECTED: u64 = 0;

/// A live session as checkpoint `version` writes it.
/// True for a session the log keeps: a persistent one, or one whose live connection has a
/// will (a crash ends that connection without DISCONNECT: the will goes out at restart).
fn kept(entry: &Entry) -> bool {
    entry.session.state.expiry_interval_secs > 0 || live_will(entry).is_some()
}

/// The will of the session's live connection, if it has one.
fn live_will(entry: &Entry) -> Option<&Will> {
    entry.conn()?;
    entry.session.link.as_ref()?.will.as_deref()
}

pub(super) fn session_view<'a>(
    entry: &'a Entry,
    version: u64,
    now: Instant,
    clock: &Clock,
) -> SessionView<'a> {
    let offline_since = entry
        .session
        .disconnected_at
        .filter(|_| entry.conn().is_none());
    SessionView {
        client_id: &entry.session.client_id,
        version,
        org: entry.org,
        offline_since_ms: offline_since.map_or(CONNECTED, |at| clock.unix_ms(at)),
        // A live connection's will is kept as if the connection ended at this checkpoint:
        // after a crash it goes out at its delay (or at once, with the session, at expiry 0).
        will: entry
            .pending_will
            .as_ref()
            .map(|pending| (&pending.0, clock.unix_ms(pending.1)))
            .or_else(|| {
                live_will(entry).map(|will| {
                    let delay = will
                        .delay_interval
                        .unwrap_or(0)
                        .min(entry.session.state.expiry_interval_secs);
                    (will, clock.unix_ms(now) + u64::from(delay) * 1000)
                })
            }),
        state: &entry.session.state,
    }
}
