//! A session's life on its shard: the client-id claim, the install of a granted session, its
//! connection's end (will, expiry), the session's end, and the timers that drive them.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringmq_proto::message::Message;
use ringmq_proto::mqtt::{ReasonCode, Str, Will};
use ringmq_proto::session::{Authorizer, Session, Subscription};

use super::*;
use crate::mesh_msg::MeshMsg;
use crate::timers::TimerKind;

impl Shard {
    /// Registers a pending CONNECT and claims the client id at its home shard for the principal
    /// `owner` ([`owner_tag`]).
    pub fn begin_connect(&mut self, client_id: Str, clean_start: bool, owner: u64) -> u64 {
        let token = self.next_token();
        self.pending.insert(
            token,
            PendingConnect {
                client_id: client_id.clone(),
                grant: None,
                superseded: None,
                refused: false,
                resume: None,
            },
        );
        let home = self.home_of(&client_id);
        self.send(
            home,
            MeshMsg::Claim {
                client_id,
                shard: self.id,
                token,
                clean_start,
                owner,
            },
        );
        token
    }

    /// Installs a granted session for a new connection; returns its slot and session-present.
    pub fn install_session(&mut self, new: NewSession, now: Instant) -> (Slot, bool) {
        let NewSession {
            client_id,
            token,
            state,
            clean_start,
            expiry_interval_secs,
            conn,
            org,
            principal,
            resume,
        } = new;
        let in_place = resume
            .filter(|_| !clean_start)
            .and_then(|place| self.unseat(place));
        let kept_in_place = in_place.is_some();
        let (slot, present) = match in_place {
            Some((slot, mut session)) => {
                // Its subscriptions never left the trie: only the entry is renewed.
                session.state.expiry_interval_secs = expiry_interval_secs;
                let entry = self.attached_entry(session, conn, token, org, principal, now);
                if let Some(held) = self.entries.get_mut(slot) {
                    *held = entry;
                }
                (slot, true)
            }
            None => {
                let (mut session, present) = match state {
                    Some(state) if !clean_start => {
                        (Session::from_state(client_id.clone(), *state), true)
                    }
                    _ => (Session::new(client_id.clone(), expiry_interval_secs), false),
                };
                session.state.expiry_interval_secs = expiry_interval_secs;
                let entry = self.attached_entry(session, conn, token, org, principal, now);
                let slot = self.entries.insert(entry);
                self.by_client_id.insert(&self.entries, slot);
                (slot, present)
            }
        };
        let shard = self.id;
        if let Some(entry) = self.entries.get_mut(slot) {
            entry.session.origin = origin_of(shard, slot, entry.generation);
        }
        if present {
            // The rules may have changed while the session was away: it resumes only what its
            // user may still subscribe to and read.
            self.refilter_session(slot);
        }
        if !kept_in_place {
            let restored: Vec<(Str, Subscription)> = self
                .entries
                .get(slot)
                .map(|entry| {
                    entry
                        .session
                        .state
                        .subscriptions
                        .iter()
                        .map(|(f, s)| (f.clone(), *s))
                        .collect()
                })
                .unwrap_or_default();
            for (filter, subscription) in restored {
                // A resumed session's CONNACK is not fenced: its subscriptions were live before.
                self.add_subscription(slot, &filter, subscription);
            }
        }
        self.stats.add_connection(1);
        self.count_org_connection(org, 1);
        self.cluster_claim(&client_id, clean_start);
        if let Some(entry) = self.entries.get_mut(slot) {
            // Who may claim it later, also after a move or a restart.
            entry.session.state.owner = entry.principal.as_ref().map_or(0, |p| p.owner());
            // A session that existed before may be in the log (its end must be recorded).
            entry.persisted |= present;
        }
        self.touch(slot);
        if !present {
            // `sync`: a new session's CONNACK waits for the logs: the session, if the log
            // keeps it, and the end of any session this clean start discarded (recorded by
            // whichever shard held it, which answers the commit's fence after its sync).
            // Found by ringmq-sim's crashes: without it a discarded session came back after a
            // kill -9 and, a member of a shared group, took messages meant for live members.
            self.hold_writer(slot);
        }
        (slot, present)
    }

    /// A session's entry with `conn` attached, in a new generation (so timers armed for an
    /// earlier connection or for the offline session are void).
    pub(super) fn attached_entry(
        &mut self,
        mut session: Session,
        conn: ConnId,
        token: u64,
        org: u32,
        principal: Option<Rc<Principal>>,
        now: Instant,
    ) -> Entry {
        debug_assert_ne!(conn, 0, "connection ids start at 1");
        self.generation_counter = self.generation_counter.wrapping_add(1);
        // The origin names the slot, set once the entry is placed (`install_session`).
        session.origin = Origin::BROKER;
        Entry {
            conn: NonZeroU64::new(conn),
            principal,
            connected_at: self.unix_secs(now),
            ..Entry::offline(session, self.generation_counter, token, org, now)
        }
    }

    /// Takes the session out of the offline entry left in place in `slot` (same generation) by
    /// a takeover on this shard, leaving the slot (and the trie's references to it) for the
    /// resuming connection; `None` when that session is gone.
    pub(super) fn unseat(&mut self, (slot, generation): (Slot, u32)) -> Option<(Slot, Session)> {
        let entry = self.entries.get_mut(slot)?;
        if entry.generation != generation || entry.conn().is_some() {
            return None;
        }
        let (org, bytes) = (entry.org, entry.offline_bytes);
        entry.offline_bytes = 0;
        let session = std::mem::replace(&mut entry.session, Session::new(Str::default(), 0));
        self.uncount_offline(org, bytes);
        Some((slot, session))
    }

    /// Schedules the keep-alive check of a newly attached connection, and marks its session
    /// for the log (the link is attached now: its will must survive a crash).
    pub fn arm_keep_alive(&mut self, slot: Slot, conn_id: u64) {
        self.touch(slot);
        let Some(entry) = self.entry_mut(slot) else {
            return;
        };
        if let Some(at) = entry.session.keep_alive_deadline() {
            let generation = entry.generation;
            self.timers
                .push(at, TimerKind::KeepAlive, slot, generation, conn_id);
        }
    }

    /// Ends the connection attached to `slot`: final bytes go to the writer, the session
    /// detaches (will, expiry) or ends. `violation` writes a v5 DISCONNECT first.
    pub fn end_connection(
        &mut self,
        slot: Slot,
        disconnect: Option<(ReasonCode, &'static str)>,
        publish_will: bool,
        now: Instant,
    ) {
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };
        let fences = entry.fences;
        let Some(conn) = entry.take_conn() else {
            return;
        };
        let blocked = entry.blocked.take();
        if let Some((reason, text)) = disconnect {
            entry.session.write_disconnect(reason, text);
        }
        let rest = entry.session.out.split();
        match fences {
            0 => {
                self.urgent = true;
                let at = ConnAt { slot, conn };
                self.outputs.push_back(Output::Close { at, rest });
            }
            // A SUBACK in `rest` waits for its fence: the close goes out with the last answer.
            fences => {
                self.fenced_closes.insert(conn, (slot, rest, fences));
            }
        }
        // The will was allowed at CONNECT; the rules may have changed since.
        let will = entry
            .session
            .detach(now)
            .filter(|will| will_allowed(entry, will));
        self.release(blocked);
        self.touch(slot);
        let Some(entry) = self.entry_mut(slot) else {
            return;
        };
        let expiry = entry.session.state.expiry_interval_secs;
        let generation = entry.generation;
        let org = entry.org;
        self.stats.add_connection(-1);
        self.count_org_connection(org, -1);
        if let Some(will) = will.filter(|_| publish_will) {
            let delay = will.delay_interval.unwrap_or(0).min(expiry);
            if delay == 0 {
                self.publish_will(will, now);
            } else {
                let at = now + Duration::from_secs(u64::from(delay));
                if let Some(entry) = self.entry_mut(slot) {
                    entry.pending_will = Some(Box::new((*will, at)));
                }
                self.timers
                    .push(at, TimerKind::WillDelay, slot, generation, 0);
            }
        }
        if expiry == 0 {
            self.end_session(slot, now);
        } else {
            let at = now + Duration::from_secs(u64::from(expiry));
            self.timers
                .push(at, TimerKind::SessionExpiry, slot, generation, 0);
        }
    }

    /// Removes a session: publishes a pending will, drops subscriptions, releases the client id.
    pub(super) fn end_session(&mut self, slot: Slot, now: Instant) {
        let Some(mut entry) = self.entries.take(slot) else {
            return;
        };
        self.cluster_release(&entry.session.client_id);
        self.forget_transit(slot);
        self.uncount_offline(entry.org, entry.offline_bytes);
        self.release(entry.blocked.take());
        if let Some(conn) = entry.conn() {
            self.emit_urgent(Output::Close {
                at: ConnAt { slot, conn },
                rest: bytes::BytesMut::new(),
            });
            self.stats.add_connection(-1);
            self.count_org_connection(entry.org, -1);
        }
        if let Some(pending) = entry.pending_will {
            let (will, _) = *pending;
            self.publish_will(Box::new(will), now);
        }
        for filter in entry.session.state.subscriptions.keys() {
            self.remove_subscription(slot, filter);
        }
        self.by_client_id
            .remove(entry.session.client_id.as_bytes(), slot);
        let persisted = entry.persisted || entry.session.state.expiry_interval_secs > 0;
        self.record_session_end(&entry.session.client_id, persisted, now);
        let home = self.home_of(&entry.session.client_id);
        self.send(
            home,
            MeshMsg::Release {
                client_id: entry.session.client_id.clone(),
                token: entry.token,
            },
        );
    }

    /// Gives back what a leaving session counted against its org's offline-queue quota.
    pub(super) fn uncount_offline(&mut self, org: u32, bytes: u32) {
        if bytes == 0 {
            return;
        }
        if let Some(held) = self.offline_bytes.get_mut(&org) {
            *held = held.saturating_sub(u64::from(bytes));
            if *held == 0 {
                self.offline_bytes.remove(&org);
            }
        }
    }

    pub(super) fn publish_will(&mut self, will: Box<Will>, now: Instant) {
        let mut will = *will;
        if will.retain
            && !will.payload.is_empty()
            && !self.retained_room(&will.topic, will.payload.len())
        {
            // Nobody is left to be told 0x97: the will is delivered, but not kept.
            tracing::warn!(topic = %will.topic, "the org's retained quota is used up; will not retained");
            will.retain = false;
        }
        let expires_at = will
            .properties
            .message_expiry_interval
            .map(|secs| now + Duration::from_secs(u64::from(secs)));
        let message = Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: will.properties,
            expires_at,
            publisher: Str::from_static(""),
            origin: shard_origin(self.id),
            namespace: None,
            device: None,
        };
        self.publish(Arc::new(message), now);
    }

    /// Runs due timers: keep-alive, will delay, session expiry.
    pub fn run_timers(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            let Some(entry) = self.entries.get_mut(timer.slot) else {
                continue;
            };
            if entry.generation != timer.generation {
                continue;
            }
            match timer.kind {
                TimerKind::KeepAlive => {
                    let current = entry.conn();
                    if current.map(|id| id as u32) != Some(timer.conn) {
                        continue;
                    }
                    if current.is_some() && entry.pauses > 0 {
                        // We stopped reading this client, so its silence is ours: look again later.
                        self.timers.rearm(timer, now + Duration::from_secs(1));
                        continue;
                    }
                    match entry.session.keep_alive_deadline() {
                        Some(at) if at <= now => {
                            tracing::debug!(client_id = %entry.session.client_id, "keep-alive timeout");
                            self.end_connection(
                                timer.slot,
                                Some((ReasonCode::KEEP_ALIVE_TIMEOUT, "keep-alive timeout")),
                                true,
                                now,
                            );
                        }
                        Some(at) => self.timers.rearm(timer, at),
                        None => {}
                    }
                }
                TimerKind::WillDelay => {
                    if let Some(pending) = &entry.pending_will {
                        if pending.1 <= now {
                            if let Some(pending) = entry.pending_will.take() {
                                let (will, _) = *pending;
                                self.publish_will(Box::new(will), now);
                                self.touch(timer.slot);
                            }
                        }
                    }
                }
                TimerKind::SessionExpiry => {
                    if entry.conn().is_none() {
                        if let Some(at) = entry.session.expiry_deadline() {
                            if at <= now {
                                self.end_session(timer.slot, now);
                            } else {
                                self.timers.rearm(timer, at);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The earliest timer, to bound the housekeeping sleep.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Closes every connection for shutdown (v5 clients get DISCONNECT 0x8B).
    pub fn shutdown_connections(&mut self, now: Instant) {
        self.shutting_down = true;
        for slot in 0..self.entries.bound() {
            let connected = self.entry_mut(slot).is_some_and(|e| e.conn().is_some());
            if connected {
                // A shutdown is not the client's fault: wills of persistent sessions stay pending.
                self.end_connection(
                    slot,
                    Some((ReasonCode::SERVER_SHUTTING_DOWN, "server shutting down")),
                    false,
                    now,
                );
            }
        }
    }
}

/// Whether the session's user may still publish its will (anonymous clients may publish
/// anything in their org).
fn will_allowed(entry: &Entry, will: &Will) -> bool {
    let Some(principal) = &entry.principal else {
        return true;
    };
    let client_id = ringmq_router::strip_scope(&entry.session.client_id).1;
    let topic = ringmq_router::strip_scope(&will.topic).1;
    let allowed = principal.may_publish(topic, client_id);
    if !allowed {
        tracing::info!(%topic, client_id, "will no longer allowed by the ACL; not published");
    }
    allowed
}
