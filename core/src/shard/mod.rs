//! One shard's state machine: its sessions, its replica of the subscription index, retained
//! messages, the client-id registry for the ids homed here, tenancy, streams, and the routing
//! of publishes.
//!
//! Sans IO, in the quinn-proto manner: the driver hands it inputs with `now` (a decoded packet
//! of a connection, a mesh message, a timer tick, a new control snapshot, a REST publish) and
//! takes its outputs ([`Shard::poll_output`]: bytes to write, pauses, fences, closes, grants)
//! and its mesh messages for other shards ([`Shard::outgoing`]). No socket, waker, thread or
//! clock is touched here; wall-clock time is derived from `now` ([`Shard::unix_secs`]).

use std::collections::VecDeque;

use bytes::BytesMut;
use std::num::NonZeroU64;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use ringmq_router::{LocalFilterCounts, LocalGroups, ShardIndex, SharedIndex, SubscriptionTrie};

use crate::retained;
use crate::timers::Timers;

mod client_ids;
mod cluster;
mod cluster_acks;
mod cluster_sessions;
mod commit;
mod counted;
mod durability;
mod input;
mod mesh;
mod moves;
mod output;
mod route;
mod sessions;
mod streams;
mod subscriptions;
mod tenancy;

pub use counted::CountWait;
pub use durability::{encode_retained, RestoredSessions};
pub use input::Input;
pub use output::{ConnAt, ConnId, Output};
pub use streams::{
    key_may_stream, EventId, ResumeToken, StreamEnd, StreamEntry, StreamFilter, StreamItem,
    StreamOwner, StreamRefused, StreamState, DETACHED_KEEP, DETACHED_MAX,
};
pub use tenancy::{owner_tag, password_digest, Admitted, AuthState, Principal};

use crate::control::snapshot::Snapshot;
use crate::mesh_msg::MeshMsg;
use crate::stats::ShardStats;
use ringmq_proto::message::{Message, Origin, SharedMessage};
use ringmq_proto::mqtt::{QoS, Str, Will};
use ringmq_proto::session::{Action, Rules, Session, SessionState, Subscription};

/// Slot index of a session in the shard's table.
pub type Slot = u32;

/// A session and the connection attached to it, if any.
pub struct Entry {
    /// The sans-IO session.
    pub session: Session,
    /// Bumped each time the slot is reused, so stale timers are recognised.
    pub generation: u32,
    /// The live connection (a niche, not an `Option<u64>`: 8 bytes less per session, and
    /// connection ids start at 1).
    conn: Option<NonZeroU64>,
    /// An [`Output::Write`] for this slot waits in the output queue.
    write_queued: bool,
    /// Changed since its last checkpoint (listed in the journal's dirty list).
    dirty: bool,
    /// A checkpoint of it is in the log (its end must be recorded too).
    persisted: bool,
    /// Registry token of the connection that owns the client id.
    pub token: u64,
    /// A will waiting for its delay (or for the session to end).
    pub pending_will: Option<Box<(Will, Instant)>>,
    /// Publishers (shard, connection id) paused until this session catches up.
    pub blocked: Blocked,
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
    /// Pauses asked of the attached connection (by slow subscribers on any shard); kept here
    /// rather than in a map by connection id, which cost every connection a hash-map slot.
    pauses: u32,
    /// Fence answers the attached connection's held SUBACK still waits for.
    fences: u32,
}

/// Publishers (shard, connection id) a session holds paused: empty for almost every session,
/// so one pointer instead of a `Vec`'s three words (16 bytes less per session).
// The box is the point: `Option<Box<Vec>>` is one word where empty, a `Vec` three.
#[allow(clippy::box_collection)]
#[derive(Debug, Default)]
pub struct Blocked(Option<Box<Vec<(u16, u64)>>>);

impl Blocked {
    /// True when it holds no publisher.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|v| v.is_empty())
    }

    /// True when it holds `origin`.
    pub fn contains(&self, origin: &(u16, u64)) -> bool {
        self.0.as_ref().is_some_and(|v| v.contains(origin))
    }

    /// Adds a publisher.
    pub fn push(&mut self, origin: (u16, u64)) {
        self.0.get_or_insert_with(Box::default).push(origin);
    }

    /// Takes every publisher out (freeing the list).
    pub fn take(&mut self) -> Vec<(u16, u64)> {
        self.0.take().map(|v| *v).unwrap_or_default()
    }
}

impl Entry {
    /// An offline entry for `session` (no connection, nothing queued or held), persisted or
    /// not; callers set what differs.
    fn offline(session: Session, generation: u32, token: u64, org: u32, now: Instant) -> Entry {
        Entry {
            session,
            generation,
            conn: None,
            write_queued: false,
            dirty: false,
            persisted: false,
            token,
            pending_will: None,
            blocked: Blocked::default(),
            last_progress: now,
            lossy: false,
            org,
            offline_bytes: 0,
            principal: None,
            connected_at: 0,
            pauses: 0,
            fences: 0,
        }
    }

    /// The live connection, if one is attached.
    #[inline]
    pub fn conn(&self) -> Option<ConnId> {
        self.conn.map(NonZeroU64::get)
    }

    /// Detaches the live connection, with the pauses and fences that were its own.
    fn take_conn(&mut self) -> Option<ConnId> {
        self.pauses = 0;
        self.fences = 0;
        self.conn.take().map(NonZeroU64::get)
    }
}

/// A connection waiting for the client id's home shard to grant it the session.
pub struct PendingConnect {
    /// Client id claimed.
    pub client_id: Str,
    /// Set when the grant arrives.
    pub grant: Option<Option<Box<SessionState>>>,
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
    pub conn: ConnId,
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

/// The shard's replica: the local subscriptions (by filter, the sessions of this shard), how
/// many of them each filter has here, which shards have a filter (the index every shard keeps
/// of every shard), shared-group members here and everywhere, and the retained messages.
struct Replica {
    subscriptions: SubscriptionTrie<Slot, Subscription>,
    filter_counts: LocalFilterCounts,
    index: ShardIndex,
    shared_index: SharedIndex,
    groups: LocalGroups<Slot>,
    retained: retained::RetainedReplica,
}

/// The shard's stream subscribers: their entries, their org-scoped filters, and the resume
/// tokens and per-org counts.
#[derive(Default)]
struct Streams {
    entries: AHashMap<u32, StreamEntry>,
    trie: SubscriptionTrie<u32, ()>,
    book: streams::StreamBook,
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
    entries: crate::slots::Slots<Entry>,
    generation_counter: u32,
    by_client_id: client_ids::ClientIds,
    /// This shard's replica of what every shard subscribes to, and of the retained messages.
    replica: Replica,
    /// Bytes queued for disconnected sessions while they were away, per org (this shard's).
    offline_bytes: AHashMap<u32, u64>,
    /// Claim tokens of the client ids homed here, by id (the claiming shard is in the token),
    /// with the owner tag of the principal whose session holds the id.
    owners: AHashMap<Str, (u64, u64)>,
    /// Connections waiting for a grant, by token.
    pub pending: AHashMap<u64, PendingConnect>,
    outgoing: Vec<VecDeque<MeshMsg>>,
    local_inbox: VecDeque<MeshMsg>,
    outputs: VecDeque<Output>,
    /// An output the driver must apply before the connection's next packet (a pause, a fence,
    /// a close) was queued since [`Shard::take_urgent`] last looked.
    urgent: bool,
    timers: Timers,
    /// Unix time in milliseconds at `clock_base` (wall time is derived, never read here).
    clock_base: (Instant, u64),
    next_token: u64,
    /// Counters read by `$SYS` and metrics.
    pub stats: Arc<ShardStats>,
    matches: Vec<(Slot, Subscription)>,
    actions: Vec<Action>,
    /// Set once shutdown begins.
    pub shutting_down: bool,
    /// Part of a cluster: published messages and filter interest go out as outputs.
    cluster: bool,
    /// Acknowledgements waiting for the other nodes of the cluster.
    cluster_acks: cluster_acks::ClusterAcks,
    /// Claims waiting for another node's session (by token).
    parked: AHashMap<u64, cluster_sessions::ParkedClaim>,
    /// Connections that ended while a SUBACK of theirs waited for its fence: their last bytes
    /// wait here (with the answers still due) so "SUBACK received" keeps meaning "in force on
    /// every shard" even for a client that disconnects at once (found by ringmq-sim).
    fenced_closes: AHashMap<ConnId, (Slot, BytesMut, u32)>,
    /// The log side, when durability is on.
    journal: Option<durability::Journal>,
    /// Sessions holding paused publishers, checked for stalls by housekeeping.
    congested: Vec<(Slot, u32)>,
    /// The control-plane snapshot logins and ACLs are checked against.
    pub snapshot: Arc<Snapshot>,
    /// Password cache, failed-login throttle, per-org counters.
    auth: AuthState,
    /// Requests waiting for answers from other shards, by token.
    count_waits: AHashMap<u64, CountWait>,
    /// WebSocket and SSE stream subscribers.
    streams: Streams,
    /// Sessions moving to or from this shard (forwarders and transits).
    moves: moves::Moves,
}

impl Shard {
    /// Shard `id` of `count`, with `snapshot` in force. `clock` is `now` and the unix time in
    /// milliseconds at that instant: it starts the timer clock, and wall time is derived from it
    /// (the simulator passes its own).
    pub fn new(
        (id, count): (u16, u16),
        rules: Rules,
        settings: ShardSettings,
        stats: Arc<ShardStats>,
        snapshot: Arc<Snapshot>,
        clock: (Instant, u64),
    ) -> Self {
        let now = clock.0;
        let retained = retained::RetainedReplica::new(
            settings.retained_messages_max,
            settings.org_retained_bytes_max,
        );
        Shard {
            id,
            count,
            rules: Rc::new(rules),
            settings,
            entries: crate::slots::Slots::default(),
            generation_counter: 0,
            by_client_id: client_ids::ClientIds::default(),
            replica: Replica {
                subscriptions: SubscriptionTrie::new(),
                filter_counts: LocalFilterCounts::new(),
                index: ShardIndex::new(),
                shared_index: SharedIndex::new(),
                groups: LocalGroups::new(),
                retained,
            },
            owners: AHashMap::new(),
            offline_bytes: AHashMap::new(),
            pending: AHashMap::new(),
            outgoing: (0..count).map(|_| VecDeque::new()).collect(),
            local_inbox: VecDeque::new(),
            cluster: false,
            cluster_acks: Default::default(),
            parked: AHashMap::new(),
            outputs: VecDeque::new(),
            urgent: false,
            timers: Timers::new(now),
            clock_base: clock,
            next_token: 0,
            stats,
            matches: Vec::new(),
            actions: Vec::new(),
            shutting_down: false,
            fenced_closes: AHashMap::new(),
            journal: None,
            congested: Vec::new(),
            snapshot,
            auth: AuthState::default(),
            count_waits: AHashMap::new(),
            streams: Streams::default(),
            moves: moves::Moves::default(),
        }
    }

    /// The next effect for the driver, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.outputs.pop_front()?;
        if let Output::Write { slot, .. } = output {
            if let Some(entry) = self.entries.get_mut(slot) {
                entry.write_queued = false;
            }
        }
        Some(output)
    }

    /// True (once) when an output queued since the last call must be applied before the
    /// connection's next packet is read: a pause, a fence or a close. Writers to wake, grants
    /// and stream entries can wait for the end of the driver's round, where one
    /// [`Output::Write`] per session covers everything the round delivered to it.
    pub fn take_urgent(&mut self) -> bool {
        std::mem::take(&mut self.urgent)
    }

    /// Holds the writer of `slot`'s connection until `count` more [`Output::FenceDone`]s
    /// arrived; the connection held, if the slot has one attached.
    pub(super) fn fence_writer(&mut self, slot: Slot, count: u32) -> Option<ConnAt> {
        let entry = self.entries.get_mut(slot)?;
        let conn = entry.conn()?;
        entry.fences += count;
        let at = ConnAt { slot, conn };
        self.emit_urgent(Output::Fence { at, count });
        Some(at)
    }

    /// Queues an output the driver must apply before reading on.
    fn emit_urgent(&mut self, output: Output) {
        self.urgent = true;
        self.outputs.push_back(output);
    }

    /// The mesh messages waiting for each shard (index: the shard), for the driver to move onto
    /// the mesh; what the mesh cannot take stays queued, in order.
    pub fn outgoing(&mut self) -> &mut [VecDeque<MeshMsg>] {
        &mut self.outgoing
    }

    /// Unix seconds at `now`, from the clock base the shard was made with.
    pub fn unix_secs(&self, now: Instant) -> u64 {
        self.unix_millis(now) / 1000
    }

    /// Unix milliseconds at `now`.
    pub fn unix_millis(&self, now: Instant) -> u64 {
        let (base, base_ms) = self.clock_base;
        match now.checked_duration_since(base) {
            Some(ahead) => base_ms.saturating_add(ahead.as_millis() as u64),
            None => base_ms.saturating_sub(base.duration_since(now).as_millis() as u64),
        }
    }

    /// Asks the driver to run the writer of `slot`'s connection when it has packets to send,
    /// once until it takes the ask.
    fn want_write(&mut self, slot: Slot) {
        if let Some(entry) = self.entries.get_mut(slot) {
            if entry.session.out.is_empty() {
                return;
            }
            if let (Some(conn), false) = (entry.conn(), entry.write_queued) {
                entry.write_queued = true;
                self.outputs.push_back(Output::Write { slot, conn });
            }
        }
    }

    /// True while reading `conn` (attached to `slot`) is paused for a slow subscriber.
    pub fn is_paused(&self, slot: Slot, conn: ConnId) -> bool {
        self.entries
            .get(slot)
            .is_some_and(|e| e.conn() == Some(conn) && e.pauses > 0)
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
            .add(self.replica.retained.len() as i64 - stats.retained.get());
    }

    /// Refreshes the in-flight gauge: QoS 1/2 deliveries of every session awaiting their
    /// acknowledgement (a walk over the sessions, so housekeeping runs it once a second).
    pub fn refresh_inflight(&self) {
        let inflight: usize = self
            .entries
            .iter()
            .map(|(_, entry)| entry.session.state.inflight.len())
            .sum();
        let stats = &self.stats;
        stats.inflight.add(inflight as i64 - stats.inflight.get());
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
    pub fn entry_for_conn(&mut self, slot: Slot, conn: ConnId) -> Option<&mut Entry> {
        self.entry_mut(slot).filter(|e| e.conn() == Some(conn))
    }

    /// Home shard of a client id or topic (stable hash, so every shard agrees).
    pub fn home_of(&self, key: &str) -> u16 {
        let hash = ringmq_router::fnv1a(ringmq_router::FNV_OFFSET, key.as_bytes());
        (hash % u64::from(self.count)) as u16
    }

    /// Queues a message for another shard (taken by the driver through [`Shard::outgoing`]) or
    /// for this one (handled by [`Shard::flush`]).
    pub fn send(&mut self, to: u16, msg: MeshMsg) {
        if to == self.id {
            self.local_inbox.push_back(msg);
            return;
        }
        self.outgoing[usize::from(to)].push_back(msg);
    }

    /// Sends one message to every shard, this one included (replica updates).
    fn broadcast(&mut self, make: impl Fn() -> MeshMsg) {
        for shard in 0..self.count {
            self.send(shard, make());
        }
    }

    /// Counts a local subscription (or stream) on `filter`, telling every replica when it is
    /// this shard's first. One shard has no replica to tell and routes without the index, so
    /// it keeps neither count nor index (a copy of every filter, twice).
    fn filter_added(&mut self, filter: &str) {
        if (self.count > 1 || self.cluster) && self.replica.filter_counts.increment(filter) {
            if self.count > 1 {
                self.announce_filter(filter, true);
            }
            self.cluster_interest(filter, true);
        }
    }

    /// Counts one local subscription (or stream) less on `filter`, telling every replica when
    /// it was this shard's last (see [`Shard::filter_added`]).
    fn filter_removed(&mut self, filter: &str) {
        if (self.count > 1 || self.cluster) && self.replica.filter_counts.decrement(filter) {
            if self.count > 1 {
                self.announce_filter(filter, false);
            }
            self.cluster_interest(filter, false);
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

    /// Mesh messages waiting for other shards.
    pub fn mesh_backlog(&self) -> usize {
        self.outgoing.iter().map(VecDeque::len).sum()
    }

    /// Ends a round's work on this shard: handles the messages it sent itself (bounded, so a
    /// loop of messages cannot hold the shard).
    pub fn flush(&mut self, now: Instant) {
        let mut rounds = 0;
        while let Some(msg) = self.local_inbox.pop_front() {
            self.handle_mesh(self.id, msg, now);
            rounds += 1;
            if rounds > 100_000 {
                break;
            }
        }
        self.close_commit_round(now);
    }

    /// Number of sessions (connected or not) on this shard.
    pub fn session_count(&self) -> usize {
        self.by_client_id.len()
    }

    /// The retained topics and payloads of this replica that `filter` matches, sorted (the
    /// simulator compares replicas with it).
    pub fn retained_matching(&self, filter: &str) -> Vec<(Str, Bytes)> {
        let mut found = Vec::new();
        self.replica
            .retained
            .for_each_match(filter, |m| found.push((m.topic.clone(), m.payload.clone())));
        found.sort();
        found
    }

    /// For (`group`, `filter`) (scoped): the shards this replica's shared index routes to,
    /// and whether this shard has members of its own (the simulator checks the two agree
    /// across shards whenever no mesh message is in flight).
    pub fn shared_view(&self, group: &str, filter: &str) -> (u64, bool) {
        let mut shards = 0u64;
        for shard in 0..self.count {
            if self
                .replica
                .shared_index
                .shard_member_count(group, filter, shard)
                > 0
            {
                shards |= 1 << shard;
            }
        }
        let local = !self.replica.groups.members(group, filter).is_empty();
        (shards, local)
    }

    /// Number of retained messages in this replica.
    pub fn retained_count(&self) -> usize {
        self.replica.retained.len()
    }

    /// Number of local subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.replica.subscriptions.len() + self.replica.groups.len()
    }
}

/// Bits of an [`Origin`] that name the publisher on its shard; the shard id sits above them.
const ORIGIN_LOCAL_BITS: u32 = 48;

/// Bits of the local part that carry the publisher's generation (the slot sits above them).
const ORIGIN_GENERATION_BITS: u32 = 16;

/// The origin of the connection attached to `slot` in `generation` on shard `shard`.
///
/// It names the publisher by its session's slot (plus one, so that 0 stays the shard itself)
/// and the low bits of the generation, not by connection id: a pause from another shard then
/// finds its publisher's entry directly, with no map from connection ids to slots. A slot
/// reused 65,536 attaches later could match a stale pause's generation bits; the worst that
/// does is resume another publisher early (flow control only: every queue keeps its bound).
pub fn origin_of(shard: u16, slot: Slot, generation: u32) -> Origin {
    let local = publisher_key(slot, generation);
    debug_assert!(local < 1 << ORIGIN_LOCAL_BITS, "slot {slot} out of range");
    Origin((u64::from(shard) << ORIGIN_LOCAL_BITS) | (local & ((1 << ORIGIN_LOCAL_BITS) - 1)))
}

/// The origin of shard `shard` itself (wills, REST publishes): it names no connection, so
/// nothing pauses it.
pub fn shard_origin(shard: u16) -> Origin {
    Origin(u64::from(shard) << ORIGIN_LOCAL_BITS)
}

/// The shard and local publisher key an origin names (key 0: the shard itself).
fn origin_parts(origin: Origin) -> (u16, u64) {
    (
        (origin.0 >> ORIGIN_LOCAL_BITS) as u16,
        origin.0 & ((1 << ORIGIN_LOCAL_BITS) - 1),
    )
}

/// The local part of the origin of the connection attached to `slot` in `generation`.
fn publisher_key(slot: Slot, generation: u32) -> u64 {
    ((u64::from(slot) + 1) << ORIGIN_GENERATION_BITS)
        | u64::from(generation & ((1 << ORIGIN_GENERATION_BITS) - 1))
}

/// The slot and generation bits a nonzero local publisher key names.
fn publisher_of(key: u64) -> (Slot, u32) {
    (
        ((key >> ORIGIN_GENERATION_BITS) as Slot).wrapping_sub(1),
        (key & ((1 << ORIGIN_GENERATION_BITS) - 1)) as u32,
    )
}

/// The retained copy of a message: `None` clears (empty payload); else a copy whose payload no
/// longer pins the publisher's whole read buffer.
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
pub(crate) mod tests;
