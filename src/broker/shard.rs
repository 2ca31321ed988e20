//! The IO side of one shard: the sans-IO core (`ringmq_core::shard`) with what it cannot hold
//! itself — the mesh endpoint, the connections' shared halves, the wakers of tasks waiting for
//! a grant, a count or a stream entry, the park set, the control plane.
//!
//! Every effect of the core arrives as an [`Output`] and is applied by [`Shard::apply_outputs`]
//! (also at the end of each round, in [`Shard::flush`], which then moves the core's outgoing
//! mesh messages onto the mesh and wakes the shards that got some).

use super::cluster::SessionEvent;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;
use ringmq_io::MeshEndpoint;

pub use ringmq_core::shard::{
    key_may_stream, origin_of, owner_tag, password_digest, shard_origin, Admitted, AuthState,
    ConnAt, ConnId, CountWait, Entry, EventId, Input, NewSession, Output, PendingConnect,
    Principal, ResumeToken, ShardSettings, Slot, StreamEnd, StreamFilter, StreamItem, StreamOwner,
    StreamRefused, DETACHED_KEEP, DETACHED_MAX,
};

use super::answer::Answer;
use super::conn::link::ConnShared;
use super::conn::parked::Parked;
use super::conn_table::ConnTable;
use super::control::ControlHandle;
use super::facts::ShardFacts;
use super::mesh_msg::MeshMsg;
use super::stats::ShardStats;
use super::stream_ring::StreamRing;
use crate::session::Rules;

/// The sans-IO shard state machine this driver runs.
pub type Core = ringmq_core::shard::Shard;

/// One shard: its core and the IO it is wired to.
pub struct Shard {
    core: Core,
    mesh: Rc<MeshEndpoint<MeshMsg>>,
    /// Connections with a session attached, by slot: what the core's outputs name.
    conns: ConnTable,
    /// Tasks waiting for the grant of a pending CONNECT, by token.
    grants: AHashMap<u64, Rc<Answer<Granted>>>,
    /// Tasks waiting for counts from other shards, by token.
    counts: AHashMap<u64, Rc<Answer<u64>>>,
    /// Stream rings by stream id.
    rings: AHashMap<u32, Rc<StreamRing>>,
    /// Shards to wake after the mesh messages of this round went out.
    wake_mask: u64,
    /// Reused by [`Shard::poll_mesh`].
    mesh_scratch: Vec<(usize, MeshMsg)>,
    /// What the shard's tasks read without a job.
    facts: Rc<ShardFacts>,
    /// Quiet connections waiting for data (`None`: no epoll instance, so none park).
    pub parks: Option<super::park::ParkSet<Parked>>,
    /// The control plane (absent in unit tests).
    control: Option<Arc<ControlHandle>>,
}

impl Deref for Shard {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl DerefMut for Shard {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.core
    }
}

/// How a pending CONNECT ended.
#[derive(Debug)]
pub enum Granted {
    /// The session (or nothing) is the connection's: install it. The second part is the
    /// session left in place on this shard ([`PendingConnect::resume`]).
    Session(
        Option<Box<crate::session::SessionState>>,
        Option<(Slot, u32)>,
    ),
    /// The client id's session belongs to another principal.
    Refused,
    /// A later connection took the id first.
    Superseded,
}

impl Shard {
    /// A shard on `mesh`'s endpoint; `clock` (an instant and its unix ms, the same for every
    /// shard: record versions compare across shards) starts its timer clock. Its tasks read
    /// `facts`.
    pub fn new(
        mesh: MeshEndpoint<MeshMsg>,
        rules: Rules,
        stats: Arc<ShardStats>,
        control: Option<Arc<ControlHandle>>,
        clock: (Instant, u64),
        facts: Rc<ShardFacts>,
    ) -> Self {
        let settings = facts.settings.clone();
        let snapshot = facts.snapshot();
        let ids = (mesh.shard_id() as u16, mesh.shard_count() as u16);
        Shard {
            core: Core::new(ids, rules, settings, stats, snapshot, clock),
            mesh: Rc::new(mesh),
            conns: ConnTable::default(),
            grants: AHashMap::new(),
            counts: AHashMap::new(),
            rings: AHashMap::new(),
            wake_mask: 0,
            mesh_scratch: Vec::new(),
            facts,
            parks: match super::park::ParkSet::new() {
                Ok(parks) => Some(parks),
                Err(error) => {
                    tracing::warn!(%error, "no epoll instance; quiet connections keep reading");
                    None
                }
            },
            control,
        }
    }

    /// The mesh endpoint, shared so a task can await it without borrowing the shard.
    pub fn mesh_handle(&self) -> Rc<MeshEndpoint<MeshMsg>> {
        Rc::clone(&self.mesh)
    }

    /// Applies every effect the core asked for so far.
    pub fn apply_outputs(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Write { slot, conn } => {
                    if let Some(conn) = self.conns.get(ConnAt { slot, conn }) {
                        conn.wake_writer();
                    }
                }
                Output::Pause(at) => {
                    if let Some(conn) = self.conns.get(at) {
                        conn.pause();
                    }
                }
                Output::Resume(at) => {
                    if let Some(conn) = self.conns.get(at) {
                        conn.resume();
                    }
                }
                Output::Fence { at, count } => {
                    if let Some(conn) = self.conns.get(at) {
                        conn.fence_add(count);
                    }
                }
                Output::FenceDone(at) => {
                    if let Some(conn) = self.conns.get(at) {
                        conn.fence_done();
                    }
                }
                Output::Close { at, rest } => {
                    if let Some(conn) = self.conns.remove(at) {
                        conn.unfence();
                        conn.finish(rest);
                    }
                }
                Output::Commit => self.facts.commit_wanted.notify(),
                Output::ClusterPublish { message, ticket } => {
                    if let Some(link) = &self.facts.cluster {
                        // Full: not sent to the other nodes (counted); a shard never waits. A
                        // message whose publisher waits for the other nodes closes it instead,
                        // unacknowledged (it sends again).
                        if !link.publish(message, self.core.id, ticket) && ticket != 0 {
                            self.core
                                .handle(Input::ClusterFailed(ticket), Instant::now());
                        }
                    }
                }
                Output::ClusterClaim {
                    client_id,
                    clean_start,
                } => {
                    if let Some(link) = &self.facts.cluster {
                        link.claim(client_id, clean_start);
                    }
                }
                Output::ClusterFetch {
                    client_id,
                    token,
                    home,
                } => {
                    if let Some(link) = &self.facts.cluster {
                        link.session_event(SessionEvent::Fetch {
                            client_id,
                            token,
                            home,
                        });
                    }
                }
                Output::ClusterReceipt(receipt) => {
                    if let Some(link) = &self.facts.cluster {
                        link.receipt(self.core.id, receipt);
                    }
                }
                Output::ClusterSessionOut { request, record } => {
                    if let Some(link) = &self.facts.cluster {
                        link.session_event(SessionEvent::Out { request, record });
                    }
                }
                Output::ClusterRelease(client_id) => {
                    if let Some(link) = &self.facts.cluster {
                        link.release(client_id);
                    }
                }
                Output::ClusterFence(at) => {
                    // Without a bridge to ask (none, or it gave up on the NATS address), the
                    // SUBACK waits for nothing.
                    let asked = self
                        .facts
                        .cluster
                        .as_ref()
                        .is_some_and(|link| link.fence(self.core.id, at));
                    if !asked {
                        self.core
                            .handle(Input::ClusterFenceDone(at), Instant::now());
                    }
                }
                Output::ClusterInterest { filter, add } => {
                    if let Some(link) = &self.facts.cluster {
                        link.interest(filter, add);
                    }
                }
                Output::ClusterShared { group, filter, add } => {
                    if let Some(link) = &self.facts.cluster {
                        link.shared(group, filter, add);
                    }
                }
                Output::Connect(token) => {
                    let pending = self.core.pending.get_mut(&token);
                    let outcome = match pending {
                        None => Some(Granted::Superseded),
                        Some(pending) if pending.refused => Some(Granted::Refused),
                        Some(pending) => {
                            let resume = pending.resume;
                            pending
                                .grant
                                .take()
                                .map(|grant| Granted::Session(grant, resume))
                        }
                    };
                    if let Some(outcome) = outcome {
                        self.core.pending.remove(&token);
                        if let Some(waiting) = self.grants.remove(&token) {
                            waiting.fill(outcome);
                        }
                    }
                }
                Output::Counted(token) => {
                    if let Some(count) = self.core.take_count(token) {
                        if let Some(waiting) = self.counts.remove(&token) {
                            waiting.fill(count);
                        }
                    }
                }
                Output::StreamItem {
                    id,
                    message,
                    retained,
                } => {
                    if let Some(ring) = self.rings.get(&id) {
                        ring.push(&message, retained);
                    }
                }
                Output::StreamEnded { id, why } => {
                    if let Some(ring) = self.rings.get(&id) {
                        ring.end(why);
                    }
                }
                Output::StreamRemoved(id) => {
                    self.rings.remove(&id);
                }
                Output::OrgConnections { org, delta } => {
                    if let Some(control) = &self.control {
                        control
                            .org_connections(org)
                            .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Ends a round: handles messages to self, applies the core's outputs, pushes the mesh
    /// messages waiting for other shards (what a full lane cannot take stays queued, in
    /// order), and wakes each shard that got some once.
    pub fn flush(&mut self, now: Instant) {
        self.core.flush(now);
        self.apply_outputs();
        if self.facts.journal_ready.get() && self.core.commit_wanted() {
            // `sync` durability: the round's records go to the waiting journal task here,
            // not through a job of its (one turn of the mailbox less per commit).
            self.facts.journal_ready.set(false);
            let mut records = self.facts.journal_spare.take();
            self.core.checkpoint(now);
            let batch = self.core.take_records(&mut records);
            self.facts.journal_batch.set(Some((records, batch)));
            self.facts.commit_wanted.notify();
        }
        if let Some(at) = self.core.commit_deadline() {
            // A round ends when it runs out even if no connection ends one (commit_grace.rs).
            if !matches!(self.facts.commit_grace_at.get(), Some(armed) if armed <= at) {
                self.facts.commit_grace_at.set(Some(at));
                self.facts.commit_grace_armed.notify();
            }
        }
        let mesh = Rc::clone(&self.mesh);
        for (to, queue) in self.core.outgoing().iter_mut().enumerate() {
            while let Some(msg) = queue.pop_front() {
                match mesh.try_send(to, msg) {
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
            mesh.wake(to);
        }
        let backlog = self.core.mesh_backlog();
        self.facts.backlog.set(backlog);
        if backlog < self.core.settings.mesh_backlog_max {
            self.facts.backlog_drained.notify();
        }
    }

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
            .try_recv_batch(&mut batch, self.core.settings.mesh_batch_max)
            > 0
        {
            for (from, msg) in batch.drain(..) {
                self.core.handle_mesh(from as u16, msg, now);
            }
            self.flush(now);
        } else {
            self.apply_outputs();
        }
        self.mesh_scratch = batch;
    }

    // ----- connections ----------------------------------------------------------------------

    /// Registers a pending CONNECT (see [`Core::begin_connect`]); the answer is filled in
    /// when the grant (or a refusal) arrives.
    pub fn begin_connect(
        &mut self,
        client_id: crate::mqtt::Str,
        clean_start: bool,
        owner: u64,
        now: Instant,
    ) -> (u64, Rc<Answer<Granted>>) {
        let token = self.core.begin_connect(client_id, clean_start, owner);
        let answer = Rc::new(Answer::default());
        self.grants.insert(token, Rc::clone(&answer));
        self.flush(now);
        (token, answer)
    }

    /// Forgets the pending CONNECT under `token` (granted, refused, or given up).
    pub fn end_pending(&mut self, token: u64) {
        self.core.pending.remove(&token);
        self.grants.remove(&token);
    }

    /// Installs a granted session for `conn` (see [`Core::install_session`]).
    pub fn install_session(
        &mut self,
        new: NewSession,
        conn: &Rc<ConnShared>,
        now: Instant,
    ) -> (Slot, bool) {
        let installed = self.core.install_session(new, now);
        // Before the outputs: those of the install name the new connection.
        self.conns.insert(installed.0, conn);
        self.apply_outputs();
        installed
    }

    /// The entry in `slot` if `conn` is still the connection attached to it.
    pub fn entry_for_conn(&mut self, slot: Slot, conn: &Rc<ConnShared>) -> Option<&mut Entry> {
        self.core.entry_for_conn(slot, conn.id)
    }

    /// Handles one input (see [`Core::handle`]); a pause, a fence or a close it caused is
    /// applied before this returns, writers to wake at the end of the round ([`Shard::flush`]).
    #[inline(always)]
    pub fn handle(&mut self, input: Input, now: Instant) -> crate::session::Flow {
        let flow = self.core.handle(input, now);
        if self.core.take_urgent() {
            self.apply_outputs();
        }
        flow
    }

    /// Ends the connection attached to `slot` (see [`Core::end_connection`]); its writer is
    /// told before this returns.
    pub fn end_connection(
        &mut self,
        slot: Slot,
        disconnect: Option<(crate::mqtt::ReasonCode, &'static str)>,
        publish_will: bool,
        now: Instant,
    ) {
        self.core
            .end_connection(slot, disconnect, publish_will, now);
        self.apply_outputs();
    }

    /// After `conn`'s writer flushed (see [`Core::after_write`]).
    pub fn after_write(&mut self, slot: Slot, conn: &Rc<ConnShared>, now: Instant) {
        self.core.after_write(slot, conn.id, now);
        self.apply_outputs();
    }

    // ----- waits on other shards ------------------------------------------------------------

    /// Publishes `message` and counts its deliveries on every shard (see
    /// [`Core::publish_counted`]); the asks leave at once. Await the count with `ShardHandle::wait_counts`.
    pub fn publish_counted(
        &mut self,
        message: crate::message::SharedMessage,
        now: Instant,
    ) -> (u64, Rc<Answer<u64>>) {
        let token = self.core.publish_counted(message, now);
        self.counted(token, now)
    }

    /// Asks every other shard to answer through the mesh (see [`Core::ping_all`]).
    pub fn ping_all(&mut self, now: Instant) -> (u64, Rc<Answer<u64>>) {
        let token = self.core.ping_all(now);
        self.counted(token, now)
    }

    /// The answer of counted request `token`, filled in once every shard asked answered.
    fn counted(&mut self, token: u64, now: Instant) -> (u64, Rc<Answer<u64>>) {
        let answer = Rc::new(Answer::default());
        self.counts.insert(token, Rc::clone(&answer));
        self.flush(now);
        (token, answer)
    }

    /// Records the first answer to a REST request with an `Idempotency-Key` in the log; in
    /// `sync` mode returns the wait for its commit (see [`Core::record_idempotent`]).
    pub fn remember_idempotent(
        &mut self,
        answer: Box<ringmq_core::durable::IdempotentAnswer>,
        now: Instant,
    ) -> Option<(u64, Rc<Answer<u64>>)> {
        let token = self.core.record_idempotent(answer, now)?;
        Some(self.counted(token, now))
    }

    /// Appends, framed, this shard's log snapshot: the core's live state and the idempotency
    /// answers whose keys are homed here (by the hash that homes client ids and topics).
    pub fn log_snapshot(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.core.session_records(now, out);
        self.snapshot_start(now, out);
        let retained = self.core.homed_retained();
        ringmq_core::shard::encode_retained(&retained, &self.core.wall_clock(), out);
    }

    /// A compaction's first step: the idempotency answers into `out`. The sessions follow in
    /// bounded steps ([`Core::session_records_from`]); the retained messages are taken from
    /// the log itself, off the shard.
    pub fn snapshot_start(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.dump_idempotency(now, out);
    }

    /// Appends the REST idempotency answers homed on this shard.
    fn dump_idempotency(&self, now: Instant, out: &mut Vec<u8>) {
        let Some(control) = &self.control else {
            return;
        };
        let Ok(cache) = control.front.idempotency.lock() else {
            return;
        };
        let core = &self.core;
        cache.dump(
            |key| core.home_of(key) == core.id,
            &core.wall_clock(),
            now,
            out,
        );
    }

    /// Forgets counted request `token` (its task gave up).
    pub fn forget_count(&mut self, token: u64) {
        self.core.forget_count(token);
        self.counts.remove(&token);
    }

    /// What the shard's tasks read without a job.
    pub fn facts(&self) -> &Rc<ShardFacts> {
        &self.facts
    }

    // ----- streams --------------------------------------------------------------------------

    /// Opens a stream (see [`Core::open_stream`]) with a ring of `capacity` entries; retained
    /// messages are in it already.
    pub fn open_stream(
        &mut self,
        filter: &StreamFilter,
        owner: &StreamOwner,
        capacity: usize,
        streams_max: u64,
    ) -> Result<Rc<StreamRing>, StreamRefused> {
        let now = Instant::now();
        let state = self.core.open_stream(filter, owner, streams_max, now)?;
        let ring = Rc::new(StreamRing::new(
            state,
            capacity,
            Arc::clone(&self.core.stats),
        ));
        self.rings.insert(state.id, Rc::clone(&ring));
        self.flush(now);
        Ok(ring)
    }

    /// A kept stream reattached for a reconnecting client (see [`Core::reattach_stream`]).
    pub fn reattach_stream(
        &mut self,
        token: ResumeToken,
        filter: &StreamFilter,
        owner: &StreamOwner,
    ) -> Option<Rc<StreamRing>> {
        let ring = self
            .rings
            .get(&self.core.reattach_stream(token, filter, owner)?.id)?;
        Some(Rc::clone(ring))
    }

    /// The client of stream `id` went away: drop it now, or (`keep`) after [`DETACHED_KEEP`].
    pub fn close_stream(&mut self, id: u32, keep: bool) {
        let now = Instant::now();
        self.core.close_stream(id, keep, now);
        self.flush(now);
    }

    /// Wakes every stream's connection task (shutdown: they send their close and end).
    pub fn wake_streams(&self) {
        for ring in self.rings.values() {
            ring.notify.notify();
        }
    }

    // ----- the control plane ----------------------------------------------------------------

    /// Puts the control plane's newest snapshot in force, if it is newer than the core's.
    pub fn refresh_snapshot(&mut self, now: Instant) {
        let Some(control) = &self.control else { return };
        if control.version() == self.core.snapshot.version {
            return;
        }
        let snapshot = control.snapshot();
        self.facts.set_snapshot(Arc::clone(&snapshot));
        self.core.set_snapshot(snapshot, now);
        self.flush(now);
    }

    /// Routes what other nodes of the cluster published, bounded per round (the rest wait for
    /// the next; the bridge wakes the shard through the mesh).
    pub fn take_cluster(&mut self, now: Instant) {
        let Some(link) = self.facts.cluster.clone() else {
            return;
        };
        let id = usize::from(self.core.id);
        // Failures first: a ticket that failed must be known failed before a later ticket's
        // "done" would let its acknowledgement go.
        let mut answered = false;
        while let Some(ticket) = link.take_failed(id) {
            self.core.handle(Input::ClusterFailed(ticket), now);
            answered = true;
        }
        let done = link.take_done(id);
        if !done.is_empty() {
            self.core.handle(Input::ClusterDone(done), now);
            answered = true;
        }
        let mut taken = 0;
        while taken < super::cluster::INBOUND_PER_ROUND {
            let input = match link.take(id) {
                None => break,
                Some(super::cluster::ClusterIn::Plain(message)) => Input::FromCluster(message),
                Some(super::cluster::ClusterIn::Retained(message)) => {
                    Input::RetainedFromCluster(message)
                }
                Some(super::cluster::ClusterIn::PlainAcked { message, receipt }) => {
                    Input::FromClusterAcked { message, receipt }
                }
                Some(super::cluster::ClusterIn::Adopt { token, record }) => {
                    Input::ClusterAdopt { token, record }
                }
                Some(super::cluster::ClusterIn::GiveUp { client_id, request }) => {
                    Input::ClusterGiveUp { client_id, request }
                }
                Some(super::cluster::ClusterIn::TakenOver {
                    client_id,
                    clean_start,
                }) => Input::ClusterTakenOver {
                    client_id,
                    clean_start,
                },
                Some(super::cluster::ClusterIn::Shared {
                    message,
                    group,
                    filter,
                }) => Input::FromClusterShared {
                    message,
                    group,
                    filter,
                },
                Some(super::cluster::ClusterIn::FenceDone(at)) => Input::ClusterFenceDone(at),
            };
            self.core.handle(input, now);
            taken += 1;
        }
        if taken > 0 || answered {
            self.flush(now);
        }
    }

    /// Answers the control thread's questions waiting in this shard's inbox.
    pub fn answer_control(&mut self, now: Instant) {
        let Some(control) = self.control.clone() else {
            return;
        };
        while let Some(query) = control.next_query(usize::from(self.core.id)) {
            match query {
                super::control::ShardQuery::Sessions { org, op, answer } => {
                    let mut reply = self.core.sessions_op(org, &op, now);
                    self.flush(now);
                    for info in &mut reply.sessions {
                        let conn = info.conn.and_then(|at| self.conns.get(at));
                        info.address = conn
                            .and_then(|conn| super::peer::peer_address(conn.fd()))
                            .map(|addr| addr.to_string());
                    }
                    let _ = answer.send(reply);
                }
            }
        }
    }

    /// Hands this shard's per-org counters to the control plane (for `GET /v1/org`).
    pub fn report_usage(&mut self) {
        if let Some(control) = &self.control {
            control.report_usage(usize::from(self.core.id), &self.core.usage());
        }
    }

    /// The control plane, when there is one.
    pub fn control(&self) -> Option<&Arc<ControlHandle>> {
        self.control.as_ref()
    }
}
