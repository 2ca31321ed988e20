//! The simulated world: shard cores on one mesh, the connections between them and the clients,
//! a simulated clock, and the faults. It drives each shard exactly as a shard's connection tasks
//! do (handshake, claim, install, read rounds, writes), but from one thread, in an order chosen
//! by the seed.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_core::control::snapshot::Snapshot;
use ringmq_core::durable::{frame, Record, Replay};
use ringmq_core::shard::{Input, Shard, ShardSettings};
use ringmq_core::stats::ShardStats;
use ringmq_proto::mqtt::{ProtocolVersion, Str};
use ringmq_proto::session::{Access, Authorizer, Rules};

use crate::client::{SimClient, Spec};
use crate::oracle::{LiveSub, Oracle};
use crate::rng::Rng;
use crate::trace::Trace;

mod driver;

use driver::{Link, Phase, SimConn, SimMesh};

/// Rounds the quiet phase runs at most.
const QUIET_ROUNDS_MAX: u32 = 100_000;

/// Filters clients subscribe to. Shared groups only cover `s/`, plain filters never do, so a
/// receipt on `s/` is a shared one.
const FILTERS: &[&str] = &["t/a", "t/+", "t/#", "secret/#", "$share/g1/s/#"];
/// Topics clients publish to.
const TOPICS: &[&str] = &["t/a", "t/b", "t/b/c", "secret/x", "s/a", "s/b"];

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Seed of every choice.
    pub seed: u64,
    /// Steps to run before the quiet phase.
    pub steps: u64,
    /// Shard cores.
    pub shards: usize,
    /// Clients.
    pub clients: usize,
    /// Inject faults (mesh delays, clock jumps, abrupt drops, stuck readers, small queues).
    pub faults: bool,
    /// Shards log their changes and acknowledge only what their logs hold (`sync`
    /// durability, with a write in flight per shard that completes at a random later round);
    /// with faults, the whole broker crashes now and then and starts again from its logs.
    pub durable: bool,
}

/// The ACL the simulation's users have: `secret/` is for admins only.
#[derive(Debug)]
struct SimAcl {
    admin: bool,
}

impl Authorizer for SimAcl {
    fn may_publish(&self, topic: &str, _client_id: &str) -> bool {
        self.admin || !topic.starts_with("secret/")
    }
    fn may_subscribe(&self, filter: &str, _client_id: &str) -> bool {
        self.admin || !filter.starts_with("secret/")
    }
}

/// Everything in one run.
pub struct World {
    setup: Setup,
    rng: Rng,
    /// The shard cores.
    pub shards: Vec<Shard>,
    mesh: SimMesh,
    conns: Vec<SimConn>,
    /// The clients.
    pub clients: Vec<SimClient>,
    /// The promises' bookkeeping.
    pub oracle: Oracle,
    /// The event trace.
    pub trace: Trace,
    rules: Rc<Rules>,
    start: Instant,
    now: Instant,
    /// Per shard: steps its mesh inbox stays unread (a delayed mesh).
    mesh_delay: Vec<u32>,
    next_conn_id: u64,
    /// The current step.
    pub step: u64,
    /// Bytes moved between clients and shards (the quiet phase waits for it to stop growing).
    moved: u64,
    /// Counts of what happened, for the summary.
    pub counts: Counts,
    /// `durable`: what each shard's log holds (synced: survives a crash).
    logs: Vec<Vec<u8>>,
    /// `durable`: each shard's batch being written (lost in a crash), with its number.
    writing: Vec<Option<(Vec<u8>, u64)>>,
    settings: ShardSettings,
}

/// What a run did, for the summary line.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Connections opened.
    pub connects: u64,
    /// Publishes sent.
    pub publishes: u64,
    /// Connections dropped abruptly.
    pub drops: u64,
    /// Takeovers (a new connection while the old one lived).
    pub takeovers: u64,
    /// Clock jumps.
    pub clock_jumps: u64,
    /// Mesh delays injected.
    pub mesh_delays: u64,
    /// Crashes of the whole broker, each followed by a start from the logs.
    pub restarts: u64,
}

impl World {
    /// A world for `setup`, with every client disconnected.
    pub fn new(setup: Setup) -> World {
        let start = Instant::now();
        let rules = Rules {
            inflight_max: 8,
            // Long enough that no QoS 1/2 message is dropped for a full queue in a run: the
            // oracle counts a dropped acknowledged message as lost.
            queue_messages_max: 1 << 20,
            outbox_bytes_max: if setup.faults { 2048 } else { 1 << 16 },
            ..Rules::default()
        };
        let mesh = SimMesh {
            lanes: (0..setup.shards)
                .map(|_| (0..setup.shards).map(|_| VecDeque::new()).collect())
                .collect(),
            capacity: if setup.faults { 4 } else { 1024 },
        };
        let settings = ShardSettings {
            mesh_batch_max: 16,
            read_buffer_bytes: 4096,
            read_budget_bytes: 4096,
            write_batch_bytes: 4096,
            retained_messages_max: 10_000,
            org_retained_bytes_max: 1 << 30,
            org_offline_bytes_max: 1 << 30,
            connections_max: 100_000,
            connect_timeout: Duration::from_secs(10),
            packet_size_max: 64 * 1024,
            mesh_backlog_max: 64,
            login_failures_per_minute_max: 1000,
        };
        let shards = new_shards(&setup, &rules, &settings, start);
        let clients = (0..setup.clients)
            .map(|i| {
                let spec = Spec {
                    org: (i % 2) as u32,
                    client_id: format!("dev-{i}"),
                    username: format!("user-{i}"),
                    admin: i % 4 == 0,
                    version: if (i / 2) % 2 == 0 {
                        ProtocolVersion::V5
                    } else {
                        ProtocolVersion::V311
                    },
                    persistent: i % 3 != 2,
                };
                SimClient::new(i, spec, start)
            })
            .collect();
        World {
            rng: Rng::new(setup.seed),
            oracle: Oracle::new(setup.clients),
            mesh_delay: vec![0; setup.shards],
            shards,
            mesh,
            conns: Vec::new(),
            clients,
            trace: Trace::default(),
            rules: Rc::new(rules),
            start,
            now: start,
            next_conn_id: 1,
            step: 0,
            moved: 0,
            counts: Counts::default(),
            logs: vec![Vec::new(); setup.shards],
            writing: vec![None; setup.shards],
            settings,
            setup,
        }
    }

    /// Milliseconds of simulated time so far.
    pub fn elapsed_ms(&self) -> u128 {
        self.now.duration_since(self.start).as_millis()
    }

    fn event(&mut self, line: String) {
        self.trace.event(self.step, line);
    }

    /// One step: a few client actions, maybe a fault, then every shard and connection runs a round.
    pub fn step(&mut self) {
        self.step += 1;
        self.now += Duration::from_millis(self.rng.below(20));
        if self.setup.faults {
            self.inject_faults();
        }
        for _ in 0..=self.rng.below(3) {
            let client = self.rng.below(self.clients.len() as u64) as usize;
            self.act(client);
        }
        self.run_round(true);
        self.check_bounds();
    }

    fn inject_faults(&mut self) {
        if self.rng.chance(2) {
            let jump = 1 + self.rng.below(40);
            self.now += Duration::from_secs(jump);
            self.counts.clock_jumps += 1;
            self.event(format!("clock +{jump}s"));
        }
        if self.rng.chance(20) {
            let shard = self.rng.below(self.shards.len() as u64) as usize;
            let steps = 1 + self.rng.below(30) as u32;
            self.mesh_delay[shard] = self.mesh_delay[shard].max(steps);
            self.counts.mesh_delays += 1;
            self.event(format!("mesh of shard {shard} delayed {steps} steps"));
        }
        if self.rng.chance(10) {
            let client = self.rng.below(self.clients.len() as u64) as usize;
            let stuck = !self.clients[client].stuck;
            self.clients[client].stuck = stuck;
            self.event(format!("c{client} stuck={stuck}"));
        }
        if self.setup.durable && self.rng.chance(2) {
            self.restart();
        }
    }

    /// `durable`: each shard's log side, as the broker's journal task does it: a write in
    /// flight completes (at a random later round, with faults), then the shard is told it is
    /// synced; a shard that wants a commit (or every 16th step, the interval) hands over its
    /// records (its changed sessions checkpointed first) for the next write.
    fn run_journals(&mut self) {
        if !self.setup.durable {
            return;
        }
        let now = self.now;
        for i in 0..self.shards.len() {
            if let Some((bytes, batch)) = self.writing[i].take() {
                if !self.setup.faults || self.rng.chance(600) {
                    self.logs[i].extend_from_slice(&bytes);
                    self.shards[i].synced(batch);
                    self.shards[i].flush(now);
                    self.apply(i);
                } else {
                    self.writing[i] = Some((bytes, batch));
                }
            }
            if self.writing[i].is_none() && (self.shards[i].commit_wanted() || self.step & 15 == 0)
            {
                let mut bytes = Vec::new();
                self.shards[i].checkpoint(now);
                let batch = self.shards[i].take_records(&mut bytes);
                self.writing[i] = Some((bytes, batch));
            }
        }
    }

    /// The whole broker dies (kill -9): writes in flight are lost, every socket breaks, the
    /// mesh's lanes are gone. It starts again: every log is replayed and each new shard core
    /// restores its part, logging what the restore changes after the old records (as a start
    /// that carries its logs on does). The oracle's promise still holds: every acknowledged
    /// QoS 1/2 message reaches every subscriber whose session lived on.
    fn restart(&mut self) {
        let now = self.now;
        self.counts.restarts += 1;
        self.writing.iter_mut().for_each(|w| *w = None);
        for sc in &mut self.conns {
            if sc.client != usize::MAX {
                self.clients[sc.client].connection_ended(&mut self.oracle, now);
            }
        }
        self.conns.clear();
        for client in &mut self.clients {
            client.conn = None;
        }
        for lanes in &mut self.mesh.lanes {
            lanes.iter_mut().for_each(VecDeque::clear);
        }
        self.mesh_delay.iter_mut().for_each(|d| *d = 0);
        let mut shards = new_shards(&self.setup, &self.rules, &self.settings, self.start);
        let clock = shards[0].wall_clock();
        let mut replay = Replay::default();
        for (i, log) in self.logs.iter().enumerate() {
            let end = frame::scan(log, |_, payload| {
                replay.apply(Record::decode(payload, &clock)?);
                Ok::<(), ringmq_core::durable::DecodeError>(())
            });
            if !matches!(end, Ok(frame::End::Clean)) {
                self.oracle.violate(
                    "logs replay",
                    format!("shard {i}'s log does not read to its end: {end:?}"),
                );
            }
        }
        let recovered = replay.finish();
        let mut ids: Vec<String> = recovered
            .sessions
            .iter()
            .map(|s| {
                format!(
                    "{}:{}+{}{}",
                    s.client_id.to_string().replace('\0', "~"),
                    s.state.inflight.len(),
                    s.state.queue.len(),
                    s.state
                        .subscriptions
                        .keys()
                        .filter(|f| f.starts_with("$share"))
                        .map(|_| "[g]")
                        .collect::<String>()
                )
            })
            .collect();
        ids.sort();
        self.event(format!("restored sessions: {}", ids.join(" ")));
        let mut sessions = 0;
        for s in &mut shards {
            sessions += s.restore(&recovered, now);
        }
        self.shards = shards;
        for i in 0..self.shards.len() {
            self.shards[i].flush(now);
            self.apply(i);
        }
        self.event(format!(
            "crash and restart: {sessions} sessions, {} retained restored",
            recovered.retained.len()
        ));
        self.check_shared_index();
    }

    /// Client `c` does one thing that fits its state.
    fn act(&mut self, c: usize) {
        let now = self.now;
        let Some(conn) = self.clients[c].conn else {
            if self.rng.chance(600) {
                self.open(c);
            }
            return;
        };
        if !self.clients[c].connected {
            return;
        }
        let roll = self.rng.below(100);
        let mut out = std::mem::take(&mut self.conns[conn].to_broker);
        let client = &mut self.clients[c];
        let said = match roll {
            0..=14 => {
                let filter = *self.rng.pick(FILTERS);
                let qos = self.rng.below(3) as u8;
                Some(client.subscribe(&mut out, filter, qos, &mut self.oracle, now))
            }
            15..=19 if !client.subs.is_empty() => {
                let filters = client.live_filters();
                let filter = self.rng.pick(&filters).clone();
                Some(client.unsubscribe(&mut out, &filter, &mut self.oracle, now))
            }
            20..=79 => {
                let mut topic = *self.rng.pick(TOPICS);
                if topic.starts_with("secret/") && !client.spec.admin && !self.rng.chance(300) {
                    topic = "t/a";
                }
                let qos = self.rng.below(3) as u8;
                let retain = self.rng.chance(100);
                let (id, said) = client.publish(&mut out, topic, qos, retain, now);
                self.counts.publishes += 1;
                let subs = self.live_subs();
                let client = &self.clients[c];
                let authorized = client.spec.admin || !topic.starts_with("secret/");
                self.oracle.published(
                    id,
                    client.spec.org,
                    topic,
                    qos,
                    authorized,
                    &subs,
                    self.step,
                );
                Some(said)
            }
            80..=83 => {
                let with_will = self.rng.chance(500);
                Some(client.disconnect(&mut out, with_will, now))
            }
            84..=86 if self.setup.faults => {
                // Dropped mid-stream: half a packet, then the socket goes.
                client.ping(&mut out, now);
                let cut = out.len().saturating_sub(1);
                out.truncate(cut);
                self.conns[conn].to_broker = out;
                self.drop_conn(conn);
                self.counts.drops += 1;
                self.event(format!("c{c} dropped"));
                return;
            }
            87..=88 => {
                // A second connection for the same client id, maybe on another shard.
                self.conns[conn].to_broker = out;
                self.counts.takeovers += 1;
                self.event(format!("c{c} takes over its own session"));
                self.abandon(conn);
                self.open(c);
                return;
            }
            _ => None,
        };
        self.conns[conn].to_broker = out;
        if let Some(said) = said {
            self.event(said);
        }
    }

    /// Every subscription the broker may hold, of every client, for the oracle.
    fn live_subs(&self) -> Vec<LiveSub> {
        self.clients
            .iter()
            .flat_map(|c| {
                c.sub_view()
                    .into_iter()
                    .map(move |(filter, qos, uncertain)| LiveSub {
                        client: c.index,
                        org: c.spec.org,
                        filter,
                        qos,
                        uncertain,
                    })
            })
            .collect()
    }

    /// Opens a connection for client `c` on a shard the seed picks, and sends CONNECT.
    fn open(&mut self, c: usize) {
        let shard = self.rng.below(self.shards.len() as u64) as usize;
        let clean = !self.clients[c].spec.persistent || self.rng.chance(100);
        let keep_alive = if self.rng.chance(500) { 30 } else { 0 };
        let will = self.rng.chance(200);
        let said = self.open_on(c, shard, clean, keep_alive, will);
        self.counts.connects += 1;
        self.event(format!("{said} on shard {shard}"));
    }

    /// A new socket from client `c` to `shard`, with its CONNECT sent; what the client said.
    fn open_on(
        &mut self,
        c: usize,
        shard: usize,
        clean: bool,
        keep_alive: u16,
        will: bool,
    ) -> String {
        let mut out = BytesMut::new();
        let client = &mut self.clients[c];
        let said = client.connect(&mut out, clean, keep_alive, will, self.now);
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        self.conns.push(SimConn {
            client: c,
            shard,
            id,
            link: Link::default(),
            phase: Phase::Handshake,
            to_broker: out,
            version: client.spec.version,
        });
        client.conn = Some(self.conns.len() - 1);
        said
    }

    /// The client walks away from a live connection without closing it (it stays open at the
    /// broker until a takeover or keep-alive ends it).
    fn abandon(&mut self, conn: usize) {
        let c = self.conns[conn].client;
        let now = self.now;
        self.clients[c].connection_ended(&mut self.oracle, now);
        self.conns[conn].client = usize::MAX;
    }

    /// The socket breaks: the shard sees the connection lost.
    fn drop_conn(&mut self, conn: usize) {
        let now = self.now;
        let c = self.conns[conn].client;
        if c != usize::MAX {
            self.clients[c].connection_ended(&mut self.oracle, now);
            self.conns[conn].client = usize::MAX;
        }
        self.lose(conn);
    }

    /// Every shard polls its mesh (unless delayed) and runs its timers; every connection reads
    /// and writes a round; every client reads. `random`: in the seed's order (else in index order).
    pub fn run_round(&mut self, random: bool) {
        for i in 0..self.shards.len() {
            // Time moves on between causally ordered events, as a real clock does: a record
            // made after a mesh message (an end, then the session begun after it) has a later
            // version than the one before it (with one instant for a whole step, a clean start
            // over another shard's session tied its end, and replay kept the end).
            self.now += Duration::from_micros(1);
            let now = self.now;
            let shard = &mut self.shards[i];
            if self.mesh_delay[i] > 0 {
                self.mesh_delay[i] -= 1;
            } else {
                let max = shard.settings.mesh_batch_max;
                self.mesh.receive(i, shard, max, now);
            }
            shard.handle(Input::Tick, now);
            shard.flush(now);
            self.apply(i);
        }
        self.now += Duration::from_micros(1);
        let count = self.conns.len();
        let offset = if random && count > 0 {
            self.rng.below(count as u64) as usize
        } else {
            0
        };
        for k in 0..count {
            let conn = (offset + k) % count;
            self.read_side(conn);
            self.write_side(conn);
        }
        for c in 0..self.clients.len() {
            self.client_reads(c);
        }
        self.now += Duration::from_micros(1);
        self.run_journals();
        self.check_shared_index();
        self.conns.retain(|c| !matches!(c.phase, Phase::Dead));
        // Indices moved: point clients at their connections again.
        for client in &mut self.clients {
            client.conn = None;
        }
        for (i, conn) in self.conns.iter().enumerate() {
            if conn.client != usize::MAX {
                self.clients[conn.client].conn = Some(i);
            }
        }
    }

    fn client_reads(&mut self, c: usize) {
        if self.clients[c].stuck || self.clients[c].inbox.is_empty() {
            return;
        }
        let Some(conn) = self.clients[c].conn else {
            self.clients[c].inbox.clear();
            return;
        };
        let mut out = std::mem::take(&mut self.conns[conn].to_broker);
        let (now, step) = (self.now, self.step);
        self.clients[c].read(&mut out, &mut self.oracle, &mut self.trace, step, now);
        let client = &mut self.clients[c];
        if client.connected
            && client.keep_alive > 0
            && now.saturating_duration_since(client.last_sent) > Duration::from_secs(10)
        {
            client.ping(&mut out, now);
        }
        self.conns[conn].to_broker = out;
    }

    /// Memory per connection stays bounded: the outbox and the queue within their limits.
    fn check_bounds(&mut self) {
        let rules = Rc::clone(&self.rules);
        for sc in &self.conns {
            let Phase::Live { slot } = sc.phase else {
                continue;
            };
            let Some(entry) = self.shards[sc.shard].entry_for_conn(slot, sc.id) else {
                continue;
            };
            let out = entry.session.out.len();
            let queued = entry.session.state.queue.len();
            if out > rules.outbox_bytes_max + 65536 {
                self.oracle.violate(
                    "bounded memory",
                    format!("client {}'s outbox holds {out} bytes", sc.client),
                );
            }
            if queued > rules.queue_messages_max + rules.queue_overshoot_max {
                self.oracle.violate(
                    "bounded memory",
                    format!("client {}'s queue holds {queued} messages", sc.client),
                );
            }
        }
    }

    /// Faults stop; stuck clients read again; every client with a session reconnects; the
    /// world runs until nothing moves. Then the final checks.
    pub fn quiesce(&mut self) {
        self.mesh_delay.iter_mut().for_each(|d| *d = 0);
        for c in 0..self.clients.len() {
            self.clients[c].stuck = false;
        }
        // Until nothing moves for a while (a stuck client's backlog drains a window at a
        // time), bounded so a livelock ends the run instead of hanging it.
        let mut quiet = 0;
        for round in 0..QUIET_ROUNDS_MAX {
            self.step += 1;
            self.now += Duration::from_millis(5);
            if round % 50 == 0 {
                for c in 0..self.clients.len() {
                    let client = &self.clients[c];
                    if client.conn.is_none() && client.spec.persistent && client.has_session {
                        self.open_persistent(c);
                    }
                }
            }
            let before = self.moved;
            self.run_round(false);
            quiet = if self.moved == before { quiet + 1 } else { 0 };
            if quiet >= 100 {
                break;
            }
        }
        if quiet < 100 {
            self.oracle
                .violate("progress", "the world never went quiet".to_owned());
        }
        let clients = &self.clients;
        self.oracle
            .final_check(&|c: usize| clients[c].live_filters());
        self.check_replicas();
    }

    fn open_persistent(&mut self, c: usize) {
        let shard = (c + self.step as usize) % self.shards.len();
        let said = self.open_on(c, shard, false, 0, false);
        self.event(format!("{said} on shard {shard} (quiet phase)"));
    }

    /// Whenever no mesh message is in flight, every shard's shared index names exactly the
    /// shards that have members of each group (else a message is sent to a shard with no
    /// member, or never to one with members).
    fn check_shared_index(&mut self) {
        let in_flight = self.shards.iter().any(|s| s.mesh_backlog() > 0)
            || self
                .mesh
                .lanes
                .iter()
                .flatten()
                .any(|lane| !lane.is_empty());
        if in_flight {
            return;
        }
        for (group, plain) in FILTERS.iter().filter_map(|f| crate::oracle::shared(f)) {
            for org in 0..2u32 {
                let filter = if org == 0 {
                    plain.to_owned()
                } else {
                    format!("{}{plain}", ringmq_router_scope(org))
                };
                let members = self
                    .shards
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.shared_view(group, &filter).1)
                    .fold(0u64, |mask, (i, _)| mask | 1 << i);
                for (i, shard) in self.shards.iter().enumerate() {
                    let (routes, _) = shard.shared_view(group, &filter);
                    if routes != members {
                        let detail = format!(
                            "org {org}: shard {i} routes group {group} to shards {routes:#b}, members are on {members:#b}"
                        );
                        self.oracle.violate("shared index agrees", detail);
                        return;
                    }
                }
            }
        }
    }

    /// Every replica holds the same retained set once quiet.
    fn check_replicas(&mut self) {
        for org in 0..2u32 {
            let filter = if org == 0 {
                "#".to_owned()
            } else {
                let scope = ringmq_router_scope(org);
                format!("{scope}#")
            };
            let first = self.shards[0].retained_matching(&filter);
            for (i, shard) in self.shards.iter().enumerate().skip(1) {
                let other = shard.retained_matching(&filter);
                if other != first {
                    self.oracle.violate(
                        "retained replicas equal",
                        format!(
                            "org {org}: shard 0 holds {} retained, shard {i} holds {}",
                            first.len(),
                            other.len()
                        ),
                    );
                }
            }
        }
    }
}

/// The shard cores of a run (`durable`: logging, acknowledging after their logs).
fn new_shards(
    setup: &Setup,
    rules: &Rules,
    settings: &ShardSettings,
    start: Instant,
) -> Vec<Shard> {
    (0..setup.shards)
        .map(|id| {
            let mut shard = Shard::new(
                (id as u16, setup.shards as u16),
                rules.clone(),
                settings.clone(),
                Arc::new(ShardStats::default()),
                Arc::new(Snapshot::empty_default()),
                // A fixed wall clock: the same seed gives the same bytes.
                (start, 1_700_000_000_000),
            );
            if setup.durable {
                shard.enable_journal();
                // A grace of a few steps: rounds consumed within it and rounds that ran out.
                shard.enable_commit(Duration::from_millis(5));
            }
            shard
        })
        .collect()
}

/// The org scope prefix of org `org` (how the broker scopes topics), via a client id.
fn ringmq_router_scope(org: u32) -> String {
    let access = Access::org(org, None);
    let scoped = access.scope_topic(Str::from(""));
    scoped.to_string()
}
