//! One shard's state: its sessions, its replica of the subscription index, retained messages,
//! the client-id registry for the ids homed here, and the routing of publishes.
//!
//! Everything here runs on the shard's own thread behind one `RefCell`; no borrow is held across
//! an `.await`. Cross-shard effects leave through [`Shard::send`] and are flushed once per round.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::{Bytes, BytesMut};
use ringmq_core::retained;
use ringmq_core::timers::{TimerKind, Timers};
use ringmq_io::MeshEndpoint;
use ringmq_router::{
    split_shared, LocalFilterCounts, LocalGroups, ShardIndex, SharedIndex, SubscriptionTrie,
};

mod client_ids;
mod counted;
mod moves;

mod streams;
mod tenancy;

pub use counted::{wait_counts, CountWait};
pub use streams::{
    key_may_stream, EventId, StreamEnd, StreamEntry, StreamFilter, StreamItem, StreamOwner,
    StreamRefused, StreamState,
};
pub use tenancy::{authenticate, owner_tag, Admitted, AuthState, Principal};

use super::conn::ConnShared;
use super::control::ControlHandle;
use super::mesh_msg::MeshMsg;
use super::stats::ShardStats;
use crate::control::snapshot::Snapshot;
use crate::message::{Message, Origin, SharedMessage};
use crate::mqtt::{QoS, ReasonCode, RetainHandling, Str, Will};
use crate::session::{
    Action, Authorizer, Delivered, Queued, Rules, Session, SessionState, Subscription,
};

/// Slot index of a session in the shard's table.
pub type Slot = u32;

/// A session and the connection attached to it, if any.
pub struct Entry {
    /// The sans-IO session.
    pub session: Session,
    /// Bumped each time the slot is reused, so stale timers are recognised.
    pub generation: u32,
    /// The live connection.
    pub conn: Option<Rc<ConnShared>>,
    /// Registry token of the connection that owns the client id.
    pub token: u64,
    /// A will waiting for its delay (or for the session to end).
    pub pending_will: Option<Box<(Will, Instant)>>,
    /// Publishers (shard, connection id) paused until this session catches up.
    pub blocked: Vec<(u16, u64)>,
    /// When the writer last completed a write (a subscriber that makes no progress for
    /// `STALL_GRACE` is stuck, not slow).
    pub last_progress: Instant,
    /// Set for a stuck subscriber: it no longer pauses publishers; its bounds and the
    /// slow-consumer policy apply instead. Cleared once it drains.
    pub lossy: bool,
    /// The org the session belongs to (0: default).
    pub org: u32,
    /// Bytes queued for this session while it was disconnected, counted against its org's
    /// `offline_queue_bytes_max` on this shard until the session leaves or ends.
    pub offline_bytes: u32,
    /// Who logged in (kept for revocation); `None` for anonymous clients.
    pub principal: Option<Rc<Principal>>,
    /// When the current connection was made (unix seconds; 0 while none is attached).
    pub connected_at: u64,
}

impl Entry {
    /// True when this connected session is behind: its outbox or queue passed the high-water mark.
    fn congested(&self, rules: &Rules) -> bool {
        self.conn.is_some()
            && (self.session.out.len() >= outbox_high_water(rules)
                || self.session.state.queue.len() >= queue_high_water(rules))
    }

    /// True once it has caught up (below half of both high-water marks).
    fn caught_up(&self, rules: &Rules) -> bool {
        self.session.out.len() < outbox_high_water(rules) / 2
            && self.session.state.queue.len() < queue_high_water(rules) / 2
    }
}

/// A connection waiting for the client id's home shard to grant it the session.
pub struct PendingConnect {
    /// Client id claimed.
    pub client_id: Str,
    /// Set when the grant arrives.
    pub grant: Option<Option<Box<SessionState>>>,
    /// Wakes the waiting connection task.
    pub notify: Rc<super::local_notify::LocalNotify>,
    /// A later connection took the id before our grant arrived: forward to it.
    pub superseded: Option<(u16, u64, bool)>,
    /// The id's session belongs to another principal: the connection is refused.
    pub refused: bool,
    /// The granted session stayed in place on this shard, in this slot of this generation:
    /// the connection resumes it there instead of receiving its state (set with a `Grant` of
    /// no state). Until then it keeps its subscriptions and queues what arrives, so nothing
    /// routed to it while the new connection is being set up is lost.
    pub resume: Option<(Slot, u32)>,
}

/// A connection whose CONNECT was accepted and whose client id was granted.
pub struct NewSession {
    /// Client id as registered (in the org's scope).
    pub client_id: Str,
    /// Registry token of the claim.
    pub token: u64,
    /// The session moved here from its previous owner, if any.
    pub state: Option<Box<SessionState>>,
    /// Clean start asked.
    pub clean_start: bool,
    /// Negotiated session expiry.
    pub expiry_interval_secs: u32,
    /// The connection.
    pub conn: Rc<ConnShared>,
    /// The org (0: default).
    pub org: u32,
    /// Who logged in; `None` for anonymous clients.
    pub principal: Option<Rc<Principal>>,
    /// The session to resume in place ([`PendingConnect::resume`]).
    pub resume: Option<(Slot, u32)>,
}

/// Settings the shard loop needs beyond the session rules.
#[derive(Debug, Clone)]
pub struct ShardSettings {
    /// Items drained from the mesh per round.
    pub mesh_batch_max: usize,
    /// Initial read buffer of a connection.
    pub read_buffer_bytes: usize,
    /// Room reserved for one read call: the most one connection is read per round.
    pub read_budget_bytes: usize,
    /// Most bytes handed to one write call.
    pub write_batch_bytes: usize,
    /// Retained messages kept at most.
    pub retained_messages_max: usize,
    /// Retained topic + payload bytes one org keeps at most (`org_limits.retained_bytes_max`).
    pub org_retained_bytes_max: u64,
    /// Bytes one org's disconnected sessions may have queued on one shard
    /// (`org_limits.offline_queue_bytes_max`).
    pub org_offline_bytes_max: u64,
    /// Connections accepted at most (this shard's share).
    pub connections_max: usize,
    /// How long a socket may take to send CONNECT.
    pub connect_timeout: Duration,
    /// Packet size limit for the decoder.
    pub packet_size_max: u32,
    /// Messages parked for a full mesh queue before publishers stop being read.
    pub mesh_backlog_max: usize,
    /// Failed MQTT logins per source address and minute before that address is refused.
    pub login_failures_per_minute_max: u32,
}

/// All state of one shard.
pub struct Shard {
    /// This shard's id.
    pub id: u16,
    /// Number of shards.
    pub count: u16,
    /// Protocol rules (shared so a session can read them while the shard lends it out).
    pub rules: Rc<Rules>,
    /// Loop settings.
    pub settings: ShardSettings,
    mesh: Rc<MeshEndpoint<MeshMsg>>,
    entries: crate::broker::slots::Slots<Entry>,
    generation_counter: u32,
    by_client_id: client_ids::ClientIds,
    subscriptions: SubscriptionTrie<Slot, Subscription>,
    filter_counts: LocalFilterCounts,
    index: ShardIndex,
    shared_index: SharedIndex,
    groups: LocalGroups<Slot>,
    retained: retained::RetainedReplica,
    /// Bytes queued for disconnected sessions while they were away, per org (this shard's).
    offline_bytes: AHashMap<u32, u64>,
    /// Claim tokens of the client ids homed here, by id (the claiming shard is in the token),
    /// with the owner tag of the principal whose session holds the id.
    owners: AHashMap<Str, (u64, u64)>,
    /// Connections waiting for a grant, by token.
    pub pending: AHashMap<u64, PendingConnect>,
    outgoing: Vec<VecDeque<MeshMsg>>,
    local_inbox: VecDeque<MeshMsg>,
    wake_mask: u64,
    timers: Timers,
    next_token: u64,
    /// Counters read by `$SYS` and metrics.
    pub stats: Arc<ShardStats>,
    matches: Vec<(Slot, Subscription)>,
    actions: Vec<Action>,
    /// Set once shutdown begins.
    pub shutting_down: bool,
    /// Live connection tasks (for the shutdown drain).
    pub live_connections: usize,
    /// Open HTTP connections (streams and MQTT over WebSocket included).
    pub http_connections: usize,
    /// Woken when the mesh backlog drains, to resume reading publishers.
    pub backlog_notify: Rc<super::local_notify::LocalNotify>,
    /// Live connections by id, so a pause or resume from any shard finds its publisher.
    live_conns: AHashMap<u64, Rc<ConnShared>>,
    /// Reused by [`Shard::poll_mesh`].
    mesh_scratch: Vec<(usize, MeshMsg)>,
    /// Sessions holding paused publishers, checked for stalls by housekeeping.
    congested: Vec<(Slot, u32)>,
    /// The control plane (absent in unit tests).
    control: Option<Arc<ControlHandle>>,
    /// The control-plane snapshot logins and ACLs are checked against.
    pub snapshot: Arc<Snapshot>,
    /// Password cache, failed-login throttle, per-org counters.
    auth: AuthState,
    /// Requests waiting for answers from other shards, by token.
    count_waits: AHashMap<u64, CountWait>,
    /// WebSocket and SSE stream subscribers, by id.
    streams: AHashMap<u32, StreamEntry>,
    /// Their org-scoped filters.
    stream_trie: SubscriptionTrie<u32, ()>,
    /// Stream ids, resume tokens and per-org counts.
    stream_book: streams::StreamBook,
    /// Sessions moving to or from this shard (forwarders and transits).
    moves: moves::Moves,
    /// Quiet connections waiting for data (`None`: no epoll instance, so none park).
    pub parks: Option<crate::broker::park::ParkSet<super::conn::Parked>>,
}

impl Shard {
    /// A fresh shard; `now` starts its timer clock (the simulator passes its own).
    pub fn new(
        mesh: MeshEndpoint<MeshMsg>,
        rules: Rules,
        settings: ShardSettings,
        stats: Arc<ShardStats>,
        control: Option<Arc<ControlHandle>>,
        now: Instant,
    ) -> Self {
        let id = mesh.shard_id() as u16;
        let snapshot = control
            .as_ref()
            .map_or_else(|| Arc::new(Snapshot::empty_default()), |c| c.snapshot());
        let count = mesh.shard_count() as u16;
        let retained = retained::RetainedReplica::new(
            settings.retained_messages_max,
            settings.org_retained_bytes_max,
        );
        Shard {
            id,
            count,
            rules: Rc::new(rules),
            settings,
            mesh: Rc::new(mesh),
            entries: crate::broker::slots::Slots::default(),
            generation_counter: 0,
            by_client_id: client_ids::ClientIds::default(),
            subscriptions: SubscriptionTrie::new(),
            filter_counts: LocalFilterCounts::new(),
            index: ShardIndex::new(),
            shared_index: SharedIndex::new(),
            groups: LocalGroups::new(),
            retained,
            owners: AHashMap::new(),
            offline_bytes: AHashMap::new(),
            pending: AHashMap::new(),
            outgoing: (0..count).map(|_| VecDeque::new()).collect(),
            local_inbox: VecDeque::new(),
            wake_mask: 0,
            timers: Timers::new(now),
            next_token: 0,
            stats,
            matches: Vec::new(),
            actions: Vec::new(),
            shutting_down: false,
            live_connections: 0,
            http_connections: 0,
            backlog_notify: Rc::new(Default::default()),
            live_conns: AHashMap::new(),
            mesh_scratch: Vec::new(),
            congested: Vec::new(),
            control,
            snapshot,
            auth: AuthState::default(),
            count_waits: AHashMap::new(),
            streams: AHashMap::new(),
            stream_trie: SubscriptionTrie::new(),
            stream_book: streams::StreamBook::default(),
            moves: moves::Moves::default(),
            parks: match crate::broker::park::ParkSet::new() {
                Ok(parks) => Some(parks),
                Err(error) => {
                    tracing::warn!(%error, "no epoll instance; quiet connections keep reading");
                    None
                }
            },
        }
    }

    /// The mesh endpoint, shared so a task can await it without borrowing the shard.
    pub fn mesh_handle(&self) -> Rc<MeshEndpoint<MeshMsg>> {
        Rc::clone(&self.mesh)
    }

    /// Refreshes the gauges housekeeping reports.
    pub fn refresh_gauges(&self) {
        let stats = &self.stats;
        stats
            .sessions
            .add(self.by_client_id.len() as i64 - stats.sessions.get());
        let subscriptions = self.subscription_count() as i64;
        stats
            .subscriptions
            .add(subscriptions - stats.subscriptions.get());
        stats
            .retained
            .add(self.retained.len() as i64 - stats.retained.get());
    }

    /// A token unique across shards for a connection attempt.
    pub fn next_token(&mut self) -> u64 {
        self.next_token += 1;
        (u64::from(self.id) << 48) | self.next_token
    }

    /// The shard that made `token` (so the client-id registry need not store it beside).
    fn token_shard(token: u64) -> u16 {
        (token >> 48) as u16
    }

    /// The entry in `slot`, if it exists.
    pub fn entry_mut(&mut self, slot: Slot) -> Option<&mut Entry> {
        self.entries.get_mut(slot)
    }

    /// The entry in `slot` if `conn` is still the connection attached to it.
    pub fn entry_for_conn(&mut self, slot: Slot, conn: &Rc<ConnShared>) -> Option<&mut Entry> {
        self.entry_mut(slot)
            .filter(|e| e.conn.as_ref().is_some_and(|c| Rc::ptr_eq(c, conn)))
    }

    /// Home shard of a client id or topic (stable hash, so every shard agrees).
    pub fn home_of(&self, key: &str) -> u16 {
        // FNV-1a: stable across processes and shards, unlike a randomly seeded hasher.
        let mut hash: u64 = 0xcbf29ce484222325;
        for byte in key.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x100000001b3);
        }
        (hash % u64::from(self.count)) as u16
    }

    /// Queues a message for another shard (or this one); flushed by [`Shard::flush`].
    pub fn send(&mut self, to: u16, msg: MeshMsg) {
        if to == self.id {
            self.local_inbox.push_back(msg);
            return;
        }
        let queue = &mut self.outgoing[usize::from(to)];
        if queue.is_empty() {
            match self.mesh.try_send(usize::from(to), msg) {
                Ok(()) => self.wake_mask |= 1 << to,
                Err(msg) => queue.push_back(msg),
            }
        } else {
            queue.push_back(msg);
        }
    }

    /// Sends one message to every shard, this one included (replica updates).
    fn broadcast(&mut self, make: impl Fn() -> MeshMsg) {
        for shard in 0..self.count {
            self.send(shard, make());
        }
    }

    /// Tells every replica that this shard's first (`add`) or last local subscription on a
    /// filter came or went.
    fn announce_filter(&mut self, filter: &str, add: bool) {
        let (filter, id) = (Str::from(filter), self.id);
        self.broadcast(|| MeshMsg::IndexUpdate {
            filter: filter.clone(),
            shard: id,
            add,
        });
    }

    /// Tells every replica that a member of a shared group joined (`add`) or left on this shard.
    fn announce_shared(&mut self, group: &str, filter: &str, add: bool) {
        let (group, filter, id) = (Str::from(group), Str::from(filter), self.id);
        self.broadcast(|| MeshMsg::SharedUpdate {
            group: group.clone(),
            filter: filter.clone(),
            shard: id,
            add,
        });
    }

    /// Messages parked for full mesh queues.
    pub fn mesh_backlog(&self) -> usize {
        self.outgoing.iter().map(VecDeque::len).sum()
    }

    /// Ends a round: handles messages to self, pushes parked mesh messages, wakes peers once.
    pub fn flush(&mut self, now: Instant) {
        let mut rounds = 0;
        while let Some(msg) = self.local_inbox.pop_front() {
            self.handle_mesh(self.id, msg, now);
            rounds += 1;
            if rounds > 100_000 {
                break;
            }
        }
        for to in 0..self.count {
            let queue = &mut self.outgoing[usize::from(to)];
            while let Some(msg) = queue.pop_front() {
                match self.mesh.try_send(usize::from(to), msg) {
                    Ok(()) => self.wake_mask |= 1 << to,
                    Err(msg) => {
                        queue.push_front(msg);
                        break;
                    }
                }
            }
        }
        let mut mask = std::mem::take(&mut self.wake_mask);
        while mask != 0 {
            let to = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            self.mesh.wake(to);
        }
        if self.mesh_backlog() < self.settings.mesh_backlog_max {
            self.backlog_notify.notify();
        }
    }

    // ----- connections and sessions ---------------------------------------------------------

    /// Registers a pending CONNECT and claims the client id at its home shard for the principal
    /// `owner` ([`owner_tag`]).
    pub fn begin_connect(
        &mut self,
        client_id: Str,
        clean_start: bool,
        owner: u64,
        notify: Rc<super::local_notify::LocalNotify>,
    ) -> u64 {
        let token = self.next_token();
        self.pending.insert(
            token,
            PendingConnect {
                client_id: client_id.clone(),
                grant: None,
                notify,
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
        (slot, present)
    }

    /// A session's entry with `conn` attached, in a new generation (so timers armed for an
    /// earlier connection or for the offline session are void).
    fn attached_entry(
        &mut self,
        mut session: Session,
        conn: Rc<ConnShared>,
        token: u64,
        org: u32,
        principal: Option<Rc<Principal>>,
        now: Instant,
    ) -> Entry {
        self.generation_counter = self.generation_counter.wrapping_add(1);
        session.origin = origin_of(self.id, conn.id);
        self.live_conns.insert(conn.id, Rc::clone(&conn));
        Entry {
            session,
            generation: self.generation_counter,
            conn: Some(conn),
            token,
            pending_will: None,
            blocked: Vec::new(),
            last_progress: now,
            lossy: false,
            org,
            offline_bytes: 0,
            principal,
            connected_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Takes the session out of the offline entry left in place in `slot` (same generation) by
    /// a takeover on this shard, leaving the slot (and the trie's references to it) for the
    /// resuming connection; `None` when that session is gone.
    fn unseat(&mut self, (slot, generation): (Slot, u32)) -> Option<(Slot, Session)> {
        let entry = self.entries.get_mut(slot)?;
        if entry.generation != generation || entry.conn.is_some() {
            return None;
        }
        let (org, bytes) = (entry.org, entry.offline_bytes);
        entry.offline_bytes = 0;
        let session = std::mem::replace(&mut entry.session, Session::new(Str::default(), 0));
        self.uncount_offline(org, bytes);
        Some((slot, session))
    }

    /// Schedules the keep-alive check of a newly attached connection.
    pub fn arm_keep_alive(&mut self, slot: Slot, conn_id: u64) {
        let Some(entry) = self.entry_mut(slot) else {
            return;
        };
        if let Some(at) = entry.session.keep_alive_deadline() {
            let generation = entry.generation;
            self.timers
                .push(at, TimerKind::KeepAlive, slot, generation, conn_id);
        }
    }

    /// Handles the session's actions after a packet.
    pub fn handle_packet(
        &mut self,
        slot: Slot,
        packet: crate::mqtt::Packet,
        now: Instant,
    ) -> crate::session::Flow {
        let mut actions = std::mem::take(&mut self.actions);
        let rules = Rc::clone(&self.rules);
        let retained = &self.retained;
        let room = |topic: &str, payload: usize| retained.room(topic, payload);
        let flow = match self.entries.get_mut(slot) {
            Some(entry) => entry
                .session
                .handle_with(packet, now, &rules, &mut actions, &room),
            None => crate::session::Flow::Close(crate::session::CloseReason::Violation {
                reason: ReasonCode::UNSPECIFIED_ERROR,
                text: "session gone",
            }),
        };
        let mut fence = false;
        for action in actions.drain(..) {
            match action {
                Action::Publish(message) => {
                    self.stats.messages_received.inc();
                    self.count_in(ringmq_router::strip_scope(&message.topic).0);
                    self.publish(message, now);
                }
                Action::Subscribe {
                    filter,
                    subscription,
                    is_new,
                } => {
                    let held = !is_new && self.subscriptions.get(&filter, slot).is_some();
                    if held {
                        // A SUBSCRIBE of a filter it holds replaces the options in place: taken
                        // out and put back, the filter would leave the other replicas for a
                        // moment, and a message routed then would miss it (found by ringmq-sim).
                        self.subscriptions.insert(&filter, slot, subscription);
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
                }
                Action::Unsubscribe { filter } => self.remove_subscription(slot, &filter),
            }
        }
        self.actions = actions;
        if let Some(entry) = self.entry_mut(slot) {
            if let Some(conn) = &entry.conn {
                if !entry.session.out.is_empty() {
                    conn.wake_writer();
                }
            }
        }
        flow
    }

    /// Adds a subscription to the local index, telling the other replicas when it is this
    /// shard's first on the filter (or first member of the group here).
    fn add_subscription(&mut self, slot: Slot, filter: &str, subscription: Subscription) {
        // The session validated the client's filter before putting it into its org's scope;
        // `parse_shared` would refuse the scope's U+0000 (it did: every shared subscription
        // of an org other than the default one was acknowledged and never joined its group).
        match split_shared(filter) {
            Some(shared) => {
                if self.groups.join(shared.group, shared.filter, slot) {
                    self.announce_shared(shared.group, shared.filter, true);
                }
            }
            None => {
                self.subscriptions.insert(filter, slot, subscription);
                if self.filter_counts.increment(filter) {
                    self.announce_filter(filter, true);
                }
            }
        }
    }

    /// Holds the writer of `slot` until every other shard answers a fence sent after the index
    /// updates just queued (mesh lanes are FIFO, so the answer proves they were applied).
    fn fence(&mut self, slot: Slot) -> bool {
        if self.count < 2 {
            return false;
        }
        let Some(conn) = self.entry_mut(slot).and_then(|e| e.conn.clone()) else {
            return false;
        };
        conn.fence_add(u32::from(self.count) - 1);
        for shard in 0..self.count {
            if shard != self.id {
                self.send(
                    shard,
                    MeshMsg::Fence {
                        reply_to: self.id,
                        conn_id: conn.id,
                    },
                );
            }
        }
        true
    }

    fn remove_subscription(&mut self, slot: Slot, filter: &str) {
        match split_shared(filter) {
            Some(shared) => {
                if self.groups.leave(shared.group, shared.filter, slot) {
                    self.announce_shared(shared.group, shared.filter, false);
                }
            }
            None => {
                if self.subscriptions.remove(filter, slot).is_some()
                    && self.filter_counts.decrement(filter)
                {
                    self.announce_filter(filter, false);
                }
            }
        }
    }

    fn send_retained(
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
        self.retained
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

    /// Ends the connection attached to `slot`: final bytes go to the writer, the session
    /// detaches (will, expiry) or ends. `violation` writes a v5 DISCONNECT first.
    pub fn end_connection(
        &mut self,
        slot: Slot,
        disconnect: Option<(ReasonCode, &'static str)>,
        publish_will: bool,
        now: Instant,
    ) {
        let Some(entry) = self.entry_mut(slot) else {
            return;
        };
        let Some(conn) = entry.conn.take() else {
            return;
        };
        let blocked = std::mem::take(&mut entry.blocked);
        if let Some((reason, text)) = disconnect {
            entry.session.write_disconnect(reason, text);
        }
        conn.finish(entry.session.out.split());
        // The will was allowed at CONNECT; the rules may have changed since.
        let will = entry
            .session
            .detach(now)
            .filter(|will| will_allowed(entry, will));
        self.live_conns.remove(&conn.id);
        self.release(blocked);
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
    fn end_session(&mut self, slot: Slot, now: Instant) {
        let Some(mut entry) = self.entries.take(slot) else {
            return;
        };
        self.forget_transit(slot);
        self.uncount_offline(entry.org, entry.offline_bytes);
        self.release(std::mem::take(&mut entry.blocked));
        if let Some(conn) = &entry.conn {
            conn.finish(BytesMut::new());
            self.live_conns.remove(&conn.id);
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
    fn uncount_offline(&mut self, org: u32, bytes: u32) {
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

    fn publish_will(&mut self, will: Box<Will>, now: Instant) {
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
            origin: origin_of(self.id, 0),
            namespace: None,
            device: None,
        };
        self.publish(Arc::new(message), now);
    }

    /// Runs due timers: keep-alive, will delay, session expiry.
    pub fn run_timers(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            let Some(entry) = self.entry_mut(timer.slot) else {
                continue;
            };
            if entry.generation != timer.generation {
                continue;
            }
            match timer.kind {
                TimerKind::KeepAlive => {
                    let current = entry.conn.as_ref().map(|c| c.id);
                    if current.map(|id| id as u32) != Some(timer.conn) {
                        continue;
                    }
                    if entry.conn.as_ref().is_some_and(|c| c.is_paused()) {
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
                            }
                        }
                    }
                }
                TimerKind::SessionExpiry => {
                    if entry.conn.is_none() {
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
            let connected = self.entry_mut(slot).is_some_and(|e| e.conn.is_some());
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

    // ----- routing --------------------------------------------------------------------------

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
        if message.retain {
            // One stored copy, set here and sent to the topic's home: every replica shares its
            // payload.
            let stored = stored_retained(&message);
            self.retained.set(&message.topic, stored.clone());
            let home = self.home_of(&message.topic);
            self.send(
                home,
                MeshMsg::RetainRequest {
                    topic: message.topic.clone(),
                    message: stored,
                },
            );
        }
        // One shard has no other shard to ask: skip the index walk (its trie match was a fifth
        // of the routing work per publish in a QoS 0 fan-in profile).
        let shards = if self.count == 1 {
            1 << self.id
        } else {
            self.index.matching_shards(&message.topic)
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
        let mut picks: Vec<(Str, Str, u16)> = Vec::new();
        self.shared_index
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
        self.retained.room(topic, payload)
    }

    /// Drops every retained message of `org` from this replica (the org was deleted).
    pub(super) fn forget_org_retained(&mut self, org: u32) {
        let dropped = self.retained.forget_org(org);
        if dropped > 0 {
            tracing::info!(
                org,
                retained = dropped,
                "org deleted; its retained messages dropped"
            );
        }
    }

    /// Delivers to every local non-shared subscription matching the topic, once per session.
    fn deliver_local(&mut self, message: &SharedMessage, now: Instant) -> u64 {
        self.deliver_streams(message);
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        self.subscriptions
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
    fn send_shared(
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

    fn deliver_shared(
        &mut self,
        message: &SharedMessage,
        group: Str,
        filter: Str,
        tried: u64,
        now: Instant,
    ) {
        let entries = &self.entries;
        let connected = |slot: Slot| entries.get(slot).is_some_and(|e| e.conn.is_some());
        let pick = self
            .groups
            .pick_where(&group, &filter, connected)
            .or_else(|| self.groups.pick(&group, &filter));
        let Some(slot) = pick else {
            // The publisher's replica still counted a member that has left this shard: another
            // member shard gets it (each shard is tried once, so this ends).
            let tried = tried | 1u64.checked_shl(u32::from(self.id)).unwrap_or(0);
            match self.shared_index.pick_other(&group, &filter, tried) {
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
    fn deliver_to(&mut self, slot: Slot, item: Queued, now: Instant) {
        // A session moving between shards is reached through its forwarder or its transit.
        if self.moves.is_empty() {
            self.deliver_now(slot, item, now);
        } else if let Some(item) = self.divert(slot, item) {
            self.deliver_now(slot, item, now);
        }
    }

    /// Delivers to the session in `slot`: its window, its queue or its offline queue.
    fn deliver_now(&mut self, slot: Slot, item: Queued, now: Instant) {
        let rules = Rc::clone(&self.rules);
        let stats = Arc::clone(&self.stats);
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };
        let origin = origin_parts(item.message.origin);
        // A disconnected session's QoS 1/2 queue is bounded per session by count, and per org
        // by bytes, so one tenant's offline devices cannot spend the memory another's need.
        let offline = if entry.conn.is_none() && item.qos != QoS::AtMostOnce {
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
        let outcome = entry.session.deliver(item, now, &rules);
        if let (Some(size), Delivered::Queued) = (offline, &outcome) {
            entry.offline_bytes += size as u32;
            *self.offline_bytes.entry(entry.org).or_insert(0) += size as u64;
        }
        match outcome {
            Delivered::Sent => {
                stats.messages_sent.inc();
                if let Some(conn) = &entry.conn {
                    conn.wake_writer();
                }
            }
            Delivered::Queued => {}
            Delivered::Dropped => stats.messages_dropped.inc(),
            Delivered::Overflow => {
                stats.messages_dropped.inc();
                if entry.conn.is_some() {
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
    }

    /// After the writer flushed: move queued messages into the window.
    pub fn after_write(&mut self, slot: Slot, conn: &Rc<ConnShared>, now: Instant) {
        let rules = Rc::clone(&self.rules);
        let Some(entry) = self.entry_for_conn(slot, conn) else {
            return;
        };
        entry.last_progress = now;
        if !entry.session.state.queue.is_empty() || !entry.session.state.qos0_queue.is_empty() {
            entry.session.pump(now, &rules);
        }
        if entry.caught_up(&rules) {
            entry.lossy = false;
            if !entry.blocked.is_empty() {
                let blocked = std::mem::take(&mut entry.blocked);
                self.release(blocked);
            }
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
            stalled.append(&mut entry.blocked);
            false
        });
        self.release(stalled);
        self.congested = congested;
    }

    /// Pauses reading a publisher, on this shard or (through the mesh) on its own.
    fn pause_publisher(&mut self, (shard, conn_id): (u16, u64)) {
        if shard == self.id {
            if let Some(conn) = self.live_conns.get(&conn_id) {
                conn.pause();
            }
        } else {
            self.send(
                shard,
                MeshMsg::Pause {
                    conn_id,
                    pause: true,
                },
            );
        }
    }

    /// Resumes every publisher in `blocked` (each was paused once for this session).
    fn release(&mut self, blocked: Vec<(u16, u64)>) {
        for (shard, conn_id) in blocked {
            if shard == self.id {
                if let Some(conn) = self.live_conns.get(&conn_id) {
                    conn.resume();
                }
            } else {
                self.send(
                    shard,
                    MeshMsg::Pause {
                        conn_id,
                        pause: false,
                    },
                );
            }
        }
    }

    // ----- the mesh -------------------------------------------------------------------------

    /// Drains what other shards sent, without waiting. Busy readers call this between rounds:
    /// monoio delivers cross-thread wake-ups only when the runtime parks, which a shard with
    /// work to do may not do for a long time, and pauses from slow subscribers must not wait.
    pub fn poll_mesh(&mut self, now: Instant) {
        self.refresh_snapshot(now);
        self.answer_control(now);
        let mut batch = std::mem::take(&mut self.mesh_scratch);
        batch.clear();
        if self
            .mesh
            .try_recv_batch(&mut batch, self.settings.mesh_batch_max)
            > 0
        {
            for (from, msg) in batch.drain(..) {
                self.handle_mesh(from as u16, msg, now);
            }
            self.flush(now);
        }
        self.mesh_scratch = batch;
    }

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
                    self.index.add(&filter, shard);
                } else {
                    self.index.remove(&filter, shard);
                }
            }
            MeshMsg::SharedUpdate {
                group,
                filter,
                shard,
                add,
            } => {
                if add {
                    self.shared_index.add_member(&group, &filter, shard);
                } else {
                    self.shared_index.remove_member(&group, &filter, shard);
                }
            }
            MeshMsg::RetainRequest { topic, message } => {
                // This is the topic's home: its order is the order every replica applies.
                self.retained.set(&topic, message.clone());
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
            MeshMsg::RetainSet { topic, message } => self.retained.set(&topic, message),
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
                    // here) is taken over from here.
                    self.pending.remove(&token);
                    self.takeover(client_id, to_shard, next_token, clean_start, now);
                    return;
                }
                if seated.is_some() {
                    pending.resume = seated;
                }
                pending.grant = Some(None);
                pending.notify.notify();
            }
            MeshMsg::Forward { token, item } => self.forwarded(token, *item, now),
            MeshMsg::MoveFence { ghost_shard, token } => {
                self.send(ghost_shard, MeshMsg::MoveFenceAck { token });
            }
            MeshMsg::MoveFenceAck { token } => self.move_fence_ack(token),
            MeshMsg::ForwardEnd { token } => self.forward_end(token, now),
            MeshMsg::Fence { reply_to, conn_id } => {
                self.send(reply_to, MeshMsg::FenceAck { conn_id });
            }
            MeshMsg::FenceAck { conn_id } => {
                if let Some(conn) = self.live_conns.get(&conn_id) {
                    conn.fence_done();
                }
            }
            MeshMsg::Pause { conn_id, pause } => {
                if let Some(conn) = self.live_conns.get(&conn_id) {
                    if pause {
                        conn.pause();
                    } else {
                        conn.resume();
                    }
                }
            }
            MeshMsg::Refused { token } => {
                if let Some(pending) = self.pending.get_mut(&token) {
                    pending.refused = true;
                    pending.notify.notify();
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

    fn takeover(
        &mut self,
        client_id: Str,
        to_shard: u16,
        token: u64,
        clean_start: bool,
        now: Instant,
    ) {
        if let Some(slot) = self.by_client_id.get(&self.entries, client_id.as_bytes()) {
            let connected = self.entry_mut(slot).is_some_and(|e| e.conn.is_some());
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
        if let Some((_, pending)) = waiting {
            pending.superseded = Some((to_shard, token, clean_start));
            pending.notify.notify();
            return;
        }
        self.send(to_shard, MeshMsg::Grant { token, state: None });
    }

    /// Number of sessions (connected or not) on this shard.
    pub fn session_count(&self) -> usize {
        self.by_client_id.len()
    }

    /// The retained topics and payloads of this replica that `filter` matches, sorted (the
    /// simulator compares replicas with it).
    pub fn retained_matching(&self, filter: &str) -> Vec<(Str, Bytes)> {
        let mut found = Vec::new();
        self.retained
            .for_each_match(filter, |m| found.push((m.topic.clone(), m.payload.clone())));
        found.sort();
        found
    }

    /// Number of retained messages in this replica.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Number of local subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len() + self.groups.len()
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

/// The retained copy of a message: `None` clears (empty payload); else a copy whose payload no
/// longer pins the publisher's whole read buffer.
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

/// Bits of an [`Origin`] that carry the connection id; the shard id sits above them
/// (connection ids are counted from 1 by one process: 2^48 of them are never reached).
const ORIGIN_CONN_BITS: u32 = 48;

/// The origin of connection `conn_id` of shard `shard` (connection 0: the shard itself).
pub fn origin_of(shard: u16, conn_id: u64) -> Origin {
    debug_assert!(
        conn_id < 1 << ORIGIN_CONN_BITS,
        "connection id {conn_id} out of range"
    );
    Origin((u64::from(shard) << ORIGIN_CONN_BITS) | (conn_id & ((1 << ORIGIN_CONN_BITS) - 1)))
}

/// The shard and connection id an origin names.
fn origin_parts(origin: Origin) -> (u16, u64) {
    (
        (origin.0 >> ORIGIN_CONN_BITS) as u16,
        origin.0 & ((1 << ORIGIN_CONN_BITS) - 1),
    )
}

fn stored_retained(message: &SharedMessage) -> Option<SharedMessage> {
    if message.payload.is_empty() {
        return None;
    }
    let mut copy = Message::clone(message);
    copy.payload = Bytes::copy_from_slice(&message.payload);
    copy.qos = message.qos.min(QoS::ExactlyOnce);
    Some(Arc::new(copy))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::broker::local_notify::LocalNotify;

    /// `count` shards on one mesh, with small settings and no control plane.
    pub(crate) fn shard(count: usize) -> Vec<Shard> {
        let mesh = ringmq_io::Mesh::new(count, 64);
        let settings = ShardSettings {
            mesh_batch_max: 64,
            read_buffer_bytes: 4096,
            read_budget_bytes: 4096,
            write_batch_bytes: 4096,
            retained_messages_max: 100,
            org_retained_bytes_max: 1 << 20,
            org_offline_bytes_max: 1 << 20,
            connections_max: 100,
            connect_timeout: Duration::from_secs(1),
            packet_size_max: 1024,
            mesh_backlog_max: 64,
            login_failures_per_minute_max: 10,
        };
        (0..count)
            .map(|id| {
                Shard::new(
                    mesh.endpoint(id),
                    Rules::default(),
                    settings.clone(),
                    Arc::new(ShardStats::default()),
                    None,
                    Instant::now(),
                )
            })
            .collect()
    }

    /// Regression: a claim whose takeover lands on the claiming connection's own shard, where the
    /// old session already ended, must be granted, not parked behind itself forever.
    #[test]
    fn stale_owner_takeover_grants_the_claiming_connection() {
        let mut shards = shard(1);
        let s = &mut shards[0];
        let now = Instant::now();
        let client_id = Str::from("device-1");
        // The registry still names an ended connection (its Release not yet processed).
        s.handle_mesh(
            0,
            MeshMsg::Claim {
                client_id: client_id.clone(),
                shard: 0,
                token: 999,
                clean_start: true,
                owner: 0,
            },
            now,
        );
        s.flush(now);
        let token = s.begin_connect(client_id, true, 0, Rc::new(LocalNotify::default()));
        s.flush(now);
        let pending = s
            .pending
            .get(&token)
            .expect("still pending until the task takes it");
        assert!(pending.grant.is_some(), "the claim was never granted");
        assert!(pending.superseded.is_none());
    }

    /// A message on `topic` from client `p` of shard 0.
    pub(crate) fn test_message(
        topic: &str,
        payload: &'static [u8],
        qos: QoS,
        retain: bool,
    ) -> SharedMessage {
        Arc::new(Message {
            topic: Str::from(topic),
            payload: Bytes::from_static(payload),
            qos,
            retain,
            properties: Default::default(),
            expires_at: None,
            publisher: Str::from("p"),
            origin: Origin::BROKER,
            namespace: None,
            device: None,
        })
    }

    /// An origin names its shard and connection exactly; the broker's own is connection 0.
    #[test]
    fn origins_round_trip() {
        for (shard, conn) in [(0, 0), (0, 1), (3, 42), (u16::MAX, (1 << 48) - 1)] {
            assert_eq!(origin_parts(origin_of(shard, conn)), (shard, conn));
        }
        assert_eq!(origin_of(0, 0), Origin::BROKER);
        assert_ne!(origin_of(1, 7), origin_of(7, 1));
    }

    /// A client id's session belongs to the principal that claimed it: another principal's
    /// claim is refused at the home shard and the holder is not touched; the same principal
    /// takes it over.
    #[test]
    fn a_claim_by_another_principal_is_refused() {
        let mut shards = shard(1);
        let s = &mut shards[0];
        let now = Instant::now();
        let id = Str::from("device-1");
        let alice = s.begin_connect(id.clone(), false, 7, Rc::new(LocalNotify::default()));
        s.flush(now);
        s.poll_mesh(now);
        assert!(s.pending.get(&alice).is_some_and(|p| p.grant.is_some()));
        let mallory = s.begin_connect(id.clone(), false, 8, Rc::new(LocalNotify::default()));
        s.flush(now);
        s.poll_mesh(now);
        let refused = s.pending.get(&mallory).expect("pending");
        assert!(refused.refused && refused.grant.is_none());
        let anonymous = s.begin_connect(id.clone(), false, 0, Rc::new(LocalNotify::default()));
        s.flush(now);
        s.poll_mesh(now);
        assert!(s.pending.get(&anonymous).is_some_and(|p| p.refused));
        // The registry still names alice's claim: her own reconnect is a takeover.
        assert_eq!(s.owners.get(&id).map(|(token, _)| *token), Some(alice));
        let again = s.begin_connect(id.clone(), false, 7, Rc::new(LocalNotify::default()));
        s.flush(now);
        s.poll_mesh(now);
        assert!(s.pending.get(&again).is_some_and(|p| !p.refused));
        assert_eq!(s.owners.get(&id).map(|(token, _)| *token), Some(again));
    }

    /// What an org's disconnected sessions queue is bounded by its bytes quota on the shard;
    /// the bytes come back when the session ends.
    #[test]
    fn offline_queue_bytes_are_bounded_per_org() {
        let mut shards = shard(1);
        let s = &mut shards[0];
        let now = Instant::now();
        s.settings.org_offline_bytes_max = 30;
        // The first connection claims the id (the registry then names it), then connects.
        let first = s.begin_connect(
            Str::from("sleeper"),
            false,
            0,
            Rc::new(LocalNotify::default()),
        );
        s.flush(now);
        s.pending.remove(&first);
        let (slot, _conn) = connect(s, "sleeper", v5_connect("sleeper", 0, 600), now);
        subscribe(s, slot, "q/#", now);
        s.end_connection(slot, None, true, now);
        let msg = |payload: &'static [u8]| test_message("q/1", payload, QoS::AtLeastOnce, false);
        for _ in 0..5 {
            s.publish(msg(b"0123456789"), now);
        }
        let queued = s
            .entry_mut(slot)
            .expect("session")
            .session
            .state
            .queue
            .len();
        assert_eq!(queued, 2, "two messages of 13 bytes fit in 30");
        assert_eq!(s.offline_bytes.get(&0).copied(), Some(26));
        s.end_session(slot, now);
        assert_eq!(s.offline_bytes.get(&0), None);
    }

    /// A retained set on one shard reaches the other through the topic's home, in one order.
    #[test]
    fn retained_replicates_through_home() {
        let mut shards = shard(2);
        let now = Instant::now();
        let message = test_message("a/b", b"v1", QoS::AtLeastOnce, true);
        shards[0].publish(message, now);
        shards[0].flush(now);
        for _ in 0..3 {
            for s in shards.iter_mut() {
                s.poll_mesh(now);
            }
        }
        for s in &shards {
            assert_eq!(s.retained_count(), 1);
        }
    }

    /// Connects a session on `s` the way a connection task does, with a fake socket.
    fn connect(
        s: &mut Shard,
        client_id: &str,
        connect: crate::mqtt::Connect,
        now: Instant,
    ) -> (Slot, Rc<ConnShared>) {
        let token = s.next_token();
        let (slot, conn, _present) = install(s, client_id, connect, token, None, now);
        (slot, conn)
    }

    /// Installs and attaches a session the way a connection task does once its claim `token`
    /// was granted (`pending`: the grant's state and in-place resume); the third value is
    /// session-present.
    fn install(
        s: &mut Shard,
        client_id: &str,
        connect: crate::mqtt::Connect,
        token: u64,
        pending: Option<PendingConnect>,
        now: Instant,
    ) -> (Slot, Rc<ConnShared>, bool) {
        let rules = Rc::clone(&s.rules);
        let n = crate::session::connect::negotiate(&connect, &rules, now, String::new)
            .expect("accepted");
        // A connection id of its own shard (a token carries its shard in the top bits).
        let conn = Rc::new(ConnShared::new(token & 0xFFFF_FFFF, -1));
        let (state, resume) = pending.map_or((None, None), |p| (p.grant.flatten(), p.resume));
        let (slot, present) = s.install_session(
            NewSession {
                client_id: Str::from(client_id),
                token,
                state,
                clean_start: n.clean_start,
                expiry_interval_secs: n.expiry_interval_secs,
                conn: Rc::clone(&conn),
                org: 0,
                principal: None,
                resume,
            },
            now,
        );
        let entry = s.entry_mut(slot).expect("installed");
        entry.session.attach(n.link, present, now, &rules);
        s.arm_keep_alive(slot, conn.id);
        (slot, conn, present)
    }

    fn v5_connect(client_id: &str, keep_alive: u16, expiry: u32) -> crate::mqtt::Connect {
        let mut connect = crate::mqtt::Connect {
            version: crate::mqtt::ProtocolVersion::V5,
            clean_start: true,
            keep_alive,
            client_id: Str::from(client_id),
            ..Default::default()
        };
        connect.properties.session_expiry_interval = Some(expiry);
        connect
    }

    fn subscribe(s: &mut Shard, slot: Slot, filter: &str, now: Instant) {
        use crate::mqtt::{Packet, Subscribe, SubscribeFilter, SubscriptionOptions};
        let packet = Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter {
                filter: Str::from(filter),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::SendAtSubscribe,
                },
            }],
            subscription_identifier: None,
            user_properties: Vec::new(),
        });
        s.handle_packet(slot, packet, now);
        s.flush(now);
    }

    /// Regression (found by ringmq-sim): a shared subscription of an org other than the
    /// default one was acknowledged but never joined its group (the scope's U+0000 failed a
    /// client-input check), so nothing published to it was delivered.
    #[test]
    fn a_shared_subscription_in_another_org_receives() {
        let mut shards = shard(1);
        let s = &mut shards[0];
        let now = Instant::now();
        let (slot, _conn) = connect(s, "member", v5_connect("member", 0, 60), now);
        let link = s.entry_mut(slot).and_then(|e| e.session.link.as_mut());
        link.expect("connected").access = crate::session::Access::org(1, None);
        subscribe(s, slot, "$share/g/s/#", now);
        s.entry_mut(slot).expect("member").session.out.clear();
        let topic = ringmq_router::scoped(&ringmq_router::org_scope(1), "s/a");
        s.publish(
            test_message(&topic, b"for-the-group", QoS::AtLeastOnce, false),
            now,
        );
        s.flush(now);
        let out = &s.entry_mut(slot).expect("member").session.out;
        assert!(
            out.windows(13).any(|w| w == b"for-the-group"),
            "not delivered"
        );
    }

    /// Regression (found by ringmq-sim): a persistent session reconnecting on its own shard was
    /// moved out of the trie at the grant and back at the install; a QoS 1 message routed in
    /// between was acknowledged to its publisher and lost. It now stays in place and queues.
    #[test]
    fn a_message_routed_while_a_session_resumes_on_its_shard_is_kept() {
        let mut shards = shard(1);
        let s = &mut shards[0];
        let now = Instant::now();
        // The first connection claims the id (the registry then names it), then connects.
        let first = s.begin_connect(
            Str::from("sleeper"),
            false,
            0,
            Rc::new(LocalNotify::default()),
        );
        s.flush(now);
        s.pending.remove(&first);
        let (slot, _conn) = connect(s, "sleeper", v5_connect("sleeper", 0, 600), now);
        subscribe(s, slot, "q/#", now);
        s.end_connection(slot, None, true, now);
        let token = s.begin_connect(
            Str::from("sleeper"),
            false,
            0,
            Rc::new(LocalNotify::default()),
        );
        s.flush(now);
        let pending = s.pending.remove(&token).expect("pending");
        assert!(pending.grant.is_some(), "granted");
        assert!(pending.resume.is_some(), "the session stays in place");
        // Routed after the grant, before the new connection installs the session.
        s.publish(
            test_message("q/1", b"in-between", QoS::AtLeastOnce, false),
            now,
        );
        s.flush(now);
        let mut again = v5_connect("sleeper", 0, 600);
        again.clean_start = false;
        let (resumed, _conn, present) = install(s, "sleeper", again, token, Some(pending), now);
        assert!(present);
        assert_eq!(resumed, slot);
        let out = &s.entry_mut(resumed).expect("resumed").session.out;
        assert!(
            out.windows(10).any(|w| w == b"in-between"),
            "the message was lost"
        );
    }

    /// Regression (found by ringmq-sim): a persistent session whose client reconnected on
    /// another shard lost the QoS 1/2 messages routed to its old shard while it moved. The old
    /// shard now forwards them until every replica routes to the new one.
    #[test]
    fn a_message_routed_while_a_session_moves_to_another_shard_is_kept() {
        let mut shards = shard(2);
        let now = Instant::now();
        let pump = |shards: &mut Vec<Shard>| {
            for _ in 0..4 {
                for s in shards.iter_mut() {
                    s.flush(now);
                    s.poll_mesh(now);
                }
            }
        };
        let mut connect_packet = v5_connect("mover", 0, 600);
        connect_packet.clean_start = false;
        let claim = |shards: &mut Vec<Shard>, on: usize| {
            let notify = Rc::new(LocalNotify::default());
            shards[on].begin_connect(Str::from("mover"), false, 0, notify)
        };
        let first = claim(&mut shards, 0);
        pump(&mut shards);
        let pending = shards[0].pending.remove(&first);
        let (slot, _conn, _) = install(
            &mut shards[0],
            "mover",
            connect_packet.clone(),
            first,
            pending,
            now,
        );
        subscribe(&mut shards[0], slot, "q/#", now);
        pump(&mut shards);
        shards[0].end_connection(slot, None, true, now);
        // The client comes back on shard 1: once shard 0 has handed the session over, a publish
        // there still finds it (its index still names shard 0).
        let token = claim(&mut shards, 1);
        for _ in 0..8 {
            if shards[0].moves.counts().0 > 0 {
                break;
            }
            for s in shards.iter_mut() {
                s.flush(now);
                s.poll_mesh(now);
            }
        }
        assert!(
            shards[0].moves.counts().0 > 0,
            "shard 0 forwards while the session moves"
        );
        shards[0].publish(
            test_message("q/1", b"on-the-way", QoS::AtLeastOnce, false),
            now,
        );
        pump(&mut shards);
        let pending = shards[1].pending.remove(&token).expect("pending");
        let (moved, _conn, present) = install(
            &mut shards[1],
            "mover",
            connect_packet,
            token,
            Some(pending),
            now,
        );
        assert!(present);
        let out = &shards[1].entry_mut(moved).expect("moved").session.out;
        assert!(
            out.windows(10).any(|w| w == b"on-the-way"),
            "the message was lost"
        );
        pump(&mut shards);
        assert!(
            shards[0].moves.counts() == (0, 0),
            "the forwarder ends once every replica routes to shard 1"
        );
        assert_eq!(shards[1].moves.counts(), (0, 0));
        assert_eq!(shards[0].session_count() + shards[1].session_count(), 1);
    }

    /// Regression (found by ringmq-sim): a shared message sent to a member shard whose last
    /// member had just left (the publisher's replica not yet told) was dropped, though a member
    /// on another shard was there. That shard now passes it on.
    #[test]
    fn a_shared_message_for_a_shard_whose_member_left_reaches_another_member() {
        use crate::mqtt::{Packet, Unsubscribe};
        let mut shards = shard(2);
        let now = Instant::now();
        let pump = |shards: &mut Vec<Shard>| {
            for _ in 0..4 {
                for s in shards.iter_mut() {
                    s.flush(now);
                    s.poll_mesh(now);
                }
            }
        };
        let (a, _a_conn) = connect(&mut shards[0], "a", v5_connect("a", 0, 0), now);
        let (b, _b_conn) = connect(&mut shards[1], "b", v5_connect("b", 0, 0), now);
        subscribe(&mut shards[0], a, "$share/g/jobs/#", now);
        subscribe(&mut shards[1], b, "$share/g/jobs/#", now);
        pump(&mut shards);
        // b leaves; shard 0 has not heard of it yet when it routes.
        let unsubscribe = Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            filters: vec![Str::from("$share/g/jobs/#")],
            user_properties: Vec::new(),
        });
        shards[1].handle_packet(b, unsubscribe, now);
        shards[1].flush(now);
        shards[0].entry_mut(a).expect("a").session.out.clear();
        for payload in [&b"job-1"[..], b"job-2"] {
            let message = Arc::new(Message {
                payload: Bytes::from_static(payload),
                ..(*test_message("jobs/x", b"", QoS::AtLeastOnce, false)).clone()
            });
            shards[0].publish(message, now);
        }
        pump(&mut shards);
        let out = &shards[0].entry_mut(a).expect("a").session.out;
        for job in [b"job-1", b"job-2"] {
            assert!(
                out.windows(5).any(|w| w == job),
                "{} lost",
                String::from_utf8_lossy(job)
            );
        }
    }

    /// Regressions (found by ringmq-sim): a SUBACK was not held when the shard already held the
    /// filter, though the announcement that made it known elsewhere could still be on its way;
    /// and a SUBSCRIBE of a filter a session held took it out of the index and put it back, so a
    /// message routed by another shard in between missed a subscription that never lapsed.
    #[test]
    fn subscriptions_are_fenced_and_a_resubscribe_never_lapses() {
        let mut shards = shard(2);
        let now = Instant::now();
        let pump = |shards: &mut Vec<Shard>| {
            for _ in 0..4 {
                for s in shards.iter_mut() {
                    s.flush(now);
                    s.poll_mesh(now);
                }
            }
        };
        let (a, _a_conn) = connect(&mut shards[1], "a", v5_connect("a", 0, 0), now);
        subscribe(&mut shards[1], a, "t/#", now);
        pump(&mut shards);
        // A second session on the same shard and filter: its SUBACK still waits for shard 0.
        let (b, b_conn) = connect(&mut shards[1], "b", v5_connect("b", 0, 0), now);
        subscribe(&mut shards[1], b, "t/#", now);
        assert!(b_conn.is_fenced(), "the SUBACK waits for every replica");
        pump(&mut shards);
        assert!(!b_conn.is_fenced());
        shards[1].end_connection(b, None, false, now);
        pump(&mut shards);
        // a subscribes to t/# again; shard 0 reads what shard 1 said one message at a time and
        // routes between them: a is reached at every point.
        subscribe(&mut shards[1], a, "t/#", now);
        shards[0].settings.mesh_batch_max = 1;
        shards[1].entry_mut(a).expect("a").session.out.clear();
        for round in 0..4 {
            shards[0].poll_mesh(now);
            let payload: &'static [u8] =
                [&b"again-0"[..], b"again-1", b"again-2", b"again-3"][round];
            let message = Arc::new(Message {
                payload: Bytes::from_static(payload),
                ..(*test_message("t/x", b"", QoS::AtLeastOnce, false)).clone()
            });
            shards[0].publish(message, now);
            shards[0].flush(now);
            shards[1].poll_mesh(now);
            let out = &shards[1].entry_mut(a).expect("a").session.out;
            assert!(
                out.windows(7).any(|w| w == payload),
                "round {round}: missed"
            );
        }
    }

    /// Will delay 3 s with session expiry 5 s: the will is published at 3 s, not before
    /// (simulated clock; MQTT 5 3.1.3.2.2).
    #[test]
    fn will_delay_fires_on_the_simulated_clock() {
        let mut shards = shard(1);
        let s = &mut shards[0];
        let t0 = Instant::now();
        let (watcher, _watch_conn) = connect(s, "watcher", v5_connect("watcher", 0, 60), t0);
        subscribe(s, watcher, "wills/#", t0);
        s.entry_mut(watcher).expect("watcher").session.out.clear();
        let mut connect_packet = v5_connect("device", 0, 5);
        connect_packet.will = Some(Will {
            topic: Str::from("wills/device"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            delay_interval: Some(3),
            properties: Default::default(),
        });
        let (device, _conn) = connect(s, "device", connect_packet, t0);
        s.end_connection(device, None, true, t0);
        s.flush(t0);
        s.run_timers(t0 + Duration::from_millis(2900));
        assert!(
            s.entry_mut(watcher)
                .expect("watcher")
                .session
                .out
                .is_empty(),
            "will too early"
        );
        s.run_timers(t0 + Duration::from_millis(3100));
        s.flush(t0 + Duration::from_millis(3100));
        assert!(
            !s.entry_mut(watcher)
                .expect("watcher")
                .session
                .out
                .is_empty(),
            "no will"
        );
        // The session itself expires at 5 s and leaves the shard.
        assert_eq!(s.session_count(), 2);
        s.run_timers(t0 + Duration::from_millis(5100));
        assert_eq!(s.session_count(), 1);
    }

    /// Keep-alive 10 s: the connection is closed at 15 s, not at 14.
    #[test]
    fn keep_alive_closes_at_one_and_a_half() {
        let mut shards = shard(1);
        let s = &mut shards[0];
        let t0 = Instant::now();
        let (slot, conn) = connect(s, "sleepy", v5_connect("sleepy", 10, 0), t0);
        s.run_timers(t0 + Duration::from_secs(14));
        assert!(!conn.is_closing());
        s.run_timers(t0 + Duration::from_millis(15_100));
        assert!(conn.is_closing());
        assert!(
            s.entry_mut(slot).is_none(),
            "a clean session ends with its connection"
        );
    }
}
