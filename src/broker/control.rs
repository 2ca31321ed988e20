//! The control thread and the way shards talk to it.
//!
//! SQLite and argon2 are slow and blocking, so neither runs on a shard. Shards send
//! [`ControlJob`]s over one bounded channel and await a [`Reply`]; the control thread owns the
//! [`Api`] (and with it the store) and answers. Password checks go to separate verifier threads
//! so a burst of logins does not hold up the management API. Every change to users, keys or
//! rules yields a new [`Snapshot`]; the control thread publishes it in [`ControlHandle`] and
//! wakes every shard, which swaps it in and closes connections whose credentials went away.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;
use ringmq_io::{CrossNotify, Mesh};

use super::mesh_msg::MeshMsg;
use crate::control::api::{Api, ApiRequest, ApiResponse, LiveView, Outcome, SessionsOp, Usage};
use crate::control::jwt::Providers;
use crate::control::snapshot::{OrgNum, Snapshot};
use crate::control::store::Store;

/// Jobs waiting for the control thread at most; a full queue answers 503.
const CONTROL_QUEUE_MAX: usize = 1024;

/// Password checks waiting at most; a full queue refuses the login (server busy).
const VERIFY_QUEUE_MAX: usize = 4096;

/// Threads hashing passwords: argon2 costs tens of milliseconds per check by design.
const VERIFIER_THREADS: usize = 2;

/// Queries waiting in one shard's control inbox at most.
const SHARD_INBOX_MAX: usize = 64;

/// How long the control thread waits for every shard to answer a sessions query.
const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Sessions returned by one listing at most.
const SESSIONS_PAGE_MAX: usize = 1000;

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The database could not be opened, migrated or bootstrapped.
    #[error("control-plane store at {path}: {source}")]
    Store {
        /// Database path.
        path: String,
        /// Underlying error.
        source: crate::control::store::StoreError,
    },
    /// A token-exchange provider in the config is invalid.
    #[error("auth provider: {0}")]
    Provider(#[from] crate::control::jwt::JwtError),
    /// The bootstrap key could not be written.
    #[error("cannot write the bootstrap key to {path}: {source}")]
    BootstrapKey {
        /// File path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start the control thread: {0}")]
    Thread(std::io::Error),
}

/// A one-shot answer from another thread to a task on a shard.
pub struct Reply<T> {
    slot: Mutex<Option<T>>,
    notify: CrossNotify,
}

impl<T> Reply<T> {
    /// An empty reply slot.
    pub fn new() -> Arc<Reply<T>> {
        Arc::new(Reply {
            slot: Mutex::new(None),
            notify: CrossNotify::new(),
        })
    }

    /// Fills the slot and wakes the waiting task.
    pub fn send(&self, value: T) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some(value);
        }
        self.notify.notify();
    }

    /// Waits for the answer, at most `timeout`.
    pub async fn recv(&self, timeout: Duration) -> Option<T> {
        let wait = async {
            loop {
                if let Some(value) = self.slot.lock().ok().and_then(|mut slot| slot.take()) {
                    return value;
                }
                self.notify.notified().await;
            }
        };
        monoio::time::timeout(timeout, wait).await.ok()
    }
}

use ringmq_io::monoio;

/// Work for the control thread.
pub enum ControlJob {
    /// A management API request.
    Api {
        /// The request (boxed: it is large and travels through a queue).
        request: Box<ApiRequest>,
        /// Where the response goes.
        reply: Arc<Reply<ApiResponse>>,
    },
}

/// A password check for the verifier threads.
pub struct VerifyJob {
    /// The stored argon2 PHC string.
    pub hash: String,
    /// The password the client sent.
    pub password: Vec<u8>,
    /// Where the verdict goes.
    pub reply: Arc<Reply<bool>>,
}

/// A question from the control thread to one shard.
pub enum ShardQuery {
    /// The sessions of an org (list, get, disconnect, delete).
    Sessions {
        /// Org asked about.
        org: OrgNum,
        /// What to do.
        op: SessionsOp,
        /// Where the shard answers.
        answer: mpsc::Sender<ShardAnswer>,
    },
}

pub use ringmq_core::control::sessions::{OrgCounters, SessionInfo, ShardAnswer, SubscriptionInfo};

/// What shards share with the control plane.
pub struct ControlHandle {
    jobs: SyncSender<ControlJob>,
    verify: SyncSender<VerifyJob>,
    snapshot: RwLock<Arc<Snapshot>>,
    version: AtomicU64,
    inboxes: Vec<ArrayQueue<ShardQuery>>,
    mesh: Arc<Mesh<MeshMsg>>,
    /// Per-shard, per-org counters since start, refreshed by each shard's housekeeping.
    usage: Vec<Mutex<ahash::AHashMap<OrgNum, OrgCounters>>>,
    /// The part of those counters already added to the store's monthly usage.
    persisted: Mutex<ahash::AHashMap<OrgNum, OrgCounters>>,
    /// Connected clients per org (orgs other than `default`, whose bound is the broker-wide
    /// `limits.connections_max`), for the org's `connections_max` setting.
    org_connections: RwLock<ahash::AHashMap<OrgNum, Arc<std::sync::atomic::AtomicI64>>>,
    /// REST publish state shared by the shards: rate limits, quotas, idempotency keys.
    pub front: super::front_door::FrontDoor,
    /// MQTT login attempts per source address, over all shards (a guesser spreads over them).
    login_attempts: LoginThrottle,
    /// Whether the control thread's last look at a shared store (PostgreSQL) reached it.
    store_reachable: std::sync::atomic::AtomicBool,
    /// Unix milliseconds at which the control thread took up its current work (0: idle): a
    /// store call nothing times out (a stopped database server that still ACKs) shows here.
    busy_since_ms: AtomicU64,
}

/// Login attempts per source address in the current minute: failures, and checks still running.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    attempts: Mutex<ahash::AHashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
}

impl LoginThrottle {
    /// Counts a login attempt from `peer` as it starts, before any password check; false (refuse
    /// it unchecked) when `peer` already has `max` attempts counted in the current minute. A
    /// login whose credentials pass gives its count back ([`LoginThrottle::give_back`]), so what
    /// stays counted is failures and checks still running: a burst of parallel CONNECTs gets at
    /// most `max` password checks, where counting failures only once argon2 had finished let
    /// every attempt of the burst through.
    pub fn begin(&self, peer: std::net::IpAddr, max: u32, now: std::time::Instant) -> bool {
        let Ok(mut attempts) = self.attempts.lock() else {
            return true;
        };
        if attempts.len() >= FAILURE_SOURCES_MAX && !attempts.contains_key(&peer) {
            attempts.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
            if attempts.len() >= FAILURE_SOURCES_MAX {
                // Under a spread-out attack, forgetting is better than unbounded memory.
                attempts.clear();
            }
        }
        let entry = attempts.entry(peer).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_WINDOW {
            *entry = (0, now);
        }
        if entry.0 >= max {
            return false;
        }
        entry.0 += 1;
        true
    }

    /// Gives back one attempt of `peer`: its credentials passed, or were never checked.
    pub fn give_back(&self, peer: std::net::IpAddr) {
        let Ok(mut attempts) = self.attempts.lock() else {
            return;
        };
        if let Some(entry) = attempts.get_mut(&peer) {
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 == 0 {
                attempts.remove(&peer);
            }
        }
    }
}

impl ControlHandle {
    /// Whether the control-plane store answered the last time the control thread asked (always
    /// true for SQLite); `/readyz` reports it.
    pub fn store_reachable(&self) -> bool {
        self.store_reachable.load(Ordering::Relaxed)
    }

    /// Whether the control thread has been on one piece of work for longer than `limit` (a store
    /// call that does not return); `/readyz` reports it.
    pub fn stuck(&self, limit: Duration) -> bool {
        let since = self.busy_since_ms.load(Ordering::Relaxed);
        since != 0
            && unix_ms().saturating_sub(since)
                > u64::try_from(limit.as_millis()).unwrap_or(u64::MAX)
    }

    /// The current snapshot's version: shards compare it with theirs on every mesh poll.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Hands a management request to the control thread; `Err` gives it back when the queue
    /// is full (answer 503) or the thread is gone.
    pub fn submit(&self, job: ControlJob) -> Result<(), ControlJob> {
        self.jobs.try_send(job).map_err(|error| match error {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }

    /// Hands a password check to a verifier thread; `Err` when they are saturated.
    pub fn verify(&self, job: VerifyJob) -> Result<(), VerifyJob> {
        self.verify.try_send(job).map_err(|error| match error {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }

    /// The next query for `shard`, if any.
    pub fn next_query(&self, shard: usize) -> Option<ShardQuery> {
        self.inboxes.get(shard)?.pop()
    }

    /// Replaces one shard's per-org counters.
    pub fn report_usage(&self, shard: usize, counters: &ahash::AHashMap<OrgNum, OrgCounters>) {
        if let Some(slot) = self.usage.get(shard) {
            if let Ok(mut slot) = slot.lock() {
                slot.clone_from(counters);
            }
        }
    }

    fn publish_snapshot(&self, snapshot: Arc<Snapshot>) {
        let version = snapshot.version;
        // Org settings reach the rate-limit buckets here, once per change, rather than with
        // a store per request on a bucket every shard shares.
        for org in snapshot.orgs() {
            let rate = u32::try_from(org.settings.rate_limit_per_sec).unwrap_or(u32::MAX);
            let burst = u32::try_from(org.settings.rate_burst).unwrap_or(u32::MAX);
            self.front.rate_limits.update(org.num, rate, burst);
        }
        match self.snapshot.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
        self.version.store(version, Ordering::Release);
        for shard in 0..self.inboxes.len() {
            self.mesh.wake(shard);
        }
    }
}

/// Source addresses tracked for failed logins at most.
const FAILURE_SOURCES_MAX: usize = 16_384;

/// The window failed logins are counted in.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

impl ControlHandle {
    /// The connected-clients counter of `org`.
    pub fn org_connections(&self, org: OrgNum) -> Arc<std::sync::atomic::AtomicI64> {
        if let Some(counter) = self
            .org_connections
            .read()
            .ok()
            .and_then(|map| map.get(&org).cloned())
        {
            return counter;
        }
        match self.org_connections.write() {
            Ok(mut map) => Arc::clone(map.entry(org).or_default()),
            Err(_) => Arc::default(),
        }
    }

    /// Counts a login attempt from `peer` as it starts; see [`LoginThrottle::begin`].
    pub fn login_begin(&self, peer: std::net::IpAddr, max: u32) -> bool {
        self.login_attempts
            .begin(peer, max, std::time::Instant::now())
    }

    /// Gives back the count of a login from `peer` whose credentials passed (or that was never
    /// checked because the verifiers were busy).
    pub fn login_give_back(&self, peer: std::net::IpAddr) {
        self.login_attempts.give_back(peer);
    }

    /// Every org's counters summed over the shards (since start).
    pub(crate) fn totals(&self) -> ahash::AHashMap<OrgNum, OrgCounters> {
        let mut totals: ahash::AHashMap<OrgNum, OrgCounters> = ahash::AHashMap::new();
        for shard in &self.usage {
            if let Ok(map) = shard.lock() {
                for (org, counters) in map.iter() {
                    let total = totals.entry(*org).or_default();
                    total.connections += counters.connections;
                    total.messages_in += counters.messages_in;
                    total.messages_out += counters.messages_out;
                    total.rest_publishes += counters.rest_publishes;
                }
            }
        }
        totals
    }
}

impl LiveView for ControlHandle {
    /// Live connections, plus the messages counted since the last time they were stored (the
    /// API adds the stored monthly figures).
    fn usage(&self, org: OrgNum) -> Usage {
        let total = self.totals().get(&org).copied().unwrap_or_default();
        let stored = self
            .persisted
            .lock()
            .ok()
            .and_then(|map| map.get(&org).copied())
            .unwrap_or_default();
        Usage {
            connections: total.connections,
            messages_in: total.messages_in.saturating_sub(stored.messages_in),
            messages_out: total.messages_out.saturating_sub(stored.messages_out),
            rest_publishes: total.rest_publishes.saturating_sub(stored.rest_publishes),
        }
    }
}

/// REST publishes this node added to the store's usage since it started, per org: (`YYYYMM`,
/// count) of the month they went to.
type AddedThisRun = ahash::AHashMap<OrgNum, (u64, u64)>;

/// Adds what the shards counted since the last call to the store's monthly usage.
fn persist_usage(api: &mut Api, handle: &ControlHandle, now: u64, added: &mut AddedThisRun) {
    let month = crate::control::store::month_number(now);
    let totals = handle.totals();
    let Ok(mut persisted) = handle.persisted.lock() else {
        return;
    };
    for (org, total) in totals {
        let stored = persisted.entry(org).or_default();
        let add = crate::control::store::UsageCounters {
            messages_in: total.messages_in.saturating_sub(stored.messages_in),
            messages_out: total.messages_out.saturating_sub(stored.messages_out),
            rest_publishes: total.rest_publishes.saturating_sub(stored.rest_publishes),
        };
        if add.messages_in == 0 && add.messages_out == 0 && add.rest_publishes == 0 {
            continue;
        }
        match api.record_usage(org, now, add) {
            Ok(()) => {
                *stored = total;
                let entry = added.entry(org).or_insert((month, 0));
                if entry.0 != month {
                    *entry = (month, 0);
                }
                entry.1 += add.rest_publishes;
            }
            Err(error) => tracing::warn!(%error, org, "could not store usage"),
        }
    }
}

/// Tells each org's quota what the store counted this month beyond this node's own count since
/// it started: earlier runs, and on a shared store every other node (so a monthly quota holds
/// cluster-wide, within a housekeeping interval of each node's traffic).
fn share_quotas(api: &Api, handle: &ControlHandle, now: u64, added: &AddedThisRun) {
    let month = crate::control::store::month_number(now);
    match api.month_usage(now) {
        Ok(usage) => {
            for (org, stored) in usage {
                let mine = added
                    .get(&org)
                    .filter(|(m, _)| *m == month)
                    .map_or(0, |(_, n)| *n);
                let others = stored.rest_publishes.saturating_sub(mine);
                handle.front.set_quota_others(org, month, others);
            }
        }
        Err(error) => tracing::warn!(%error, "could not read the month's usage for quotas"),
    }
}

/// Opens the store in `data_dir`, bootstraps it on first start, and starts the control and
/// verifier threads.
pub fn start(
    config: &crate::config::Config,
    mesh: Arc<Mesh<MeshMsg>>,
    shard_count: usize,
) -> Result<Arc<ControlHandle>, ControlError> {
    let data_dir = config.data_dir.as_path();
    make_dir_private(data_dir);
    let path = data_dir.join("ringmq.db");
    let shared = &config.control.store;
    let shown = if shared.is_empty() {
        path.display().to_string()
    } else {
        crate::control::store::redact_url(shared)
    };
    let store_error = |source| ControlError::Store {
        path: shown.clone(),
        source,
    };
    let mut store = if shared.is_empty() {
        Store::open(&path)
    } else {
        Store::open_postgres(shared)
    }
    .map_err(store_error)?;
    if store.shared() {
        tracing::info!(store = %shown, tls = store.encrypted(), "control plane on PostgreSQL, shared by the cluster's nodes");
    }
    if let Some(root_key) = store.bootstrap().map_err(store_error)? {
        let key_path = data_dir.join("bootstrap-key");
        crate::control::store::write_bootstrap_key(&key_path, &root_key).map_err(|source| {
            ControlError::BootstrapKey {
                path: key_path.display().to_string(),
                source,
            }
        })?;
        // The log names the file, never the key.
        tracing::info!(path = %key_path.display(), "first start: the root API key was written to this file (mode 0600)");
    }
    let providers = Providers::new(&config.auth.providers)?;
    // Orgs come and go at run time, so a provider of an org that does not exist (yet) is no
    // reason to refuse to start: its exchanges are refused (no key of that org can ask).
    for (name, org_id) in providers.orgs() {
        if store.org_num(org_id).is_err() {
            tracing::warn!(
                provider = name,
                org_id,
                "auth provider serves an org that does not exist: its tokens cannot be exchanged"
            );
        }
    }
    let api = Api::new(store, providers, config.org_limits.clone()).map_err(store_error)?;
    let snapshot = api.snapshot();
    let (jobs_tx, jobs_rx) = mpsc::sync_channel(CONTROL_QUEUE_MAX);
    let (verify_tx, verify_rx) = mpsc::sync_channel(VERIFY_QUEUE_MAX);
    let handle = Arc::new(ControlHandle {
        jobs: jobs_tx,
        verify: verify_tx,
        version: AtomicU64::new(snapshot.version),
        snapshot: RwLock::new(snapshot),
        inboxes: (0..shard_count)
            .map(|_| ArrayQueue::new(SHARD_INBOX_MAX))
            .collect(),
        mesh,
        usage: (0..shard_count).map(|_| Mutex::default()).collect(),
        persisted: Mutex::default(),
        login_attempts: LoginThrottle::default(),
        front: super::front_door::FrontDoor::default(),
        org_connections: RwLock::default(),
        store_reachable: std::sync::atomic::AtomicBool::new(true),
        busy_since_ms: AtomicU64::new(0),
    });
    let for_thread = Arc::clone(&handle);
    let reload_every = Duration::from_millis(config.control.reload_interval_ms);
    std::thread::Builder::new()
        .name("ringmq-control".to_owned())
        .spawn(move || control_loop(api, jobs_rx, for_thread, reload_every))
        .map_err(ControlError::Thread)?;
    let verify_rx = Arc::new(Mutex::new(verify_rx));
    for index in 0..VERIFIER_THREADS {
        let verify_rx = Arc::clone(&verify_rx);
        std::thread::Builder::new()
            .name(format!("ringmq-verify-{index}"))
            .spawn(move || verify_loop(&verify_rx))
            .map_err(ControlError::Thread)?;
    }
    Ok(handle)
}

/// Narrows the data dir to mode 0700: it holds the control database (argon2 hashes, key
/// digests), the bootstrap key and the shards' stored messages. A dir the operator made wider is
/// narrowed with a warning; one we may not change (another owner) is left with a warning, since
/// the files in it are 0600 anyway.
fn make_dir_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(dir) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot read the data dir's mode");
            return;
        }
    };
    if mode & 0o077 == 0 {
        return;
    }
    match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700)) {
        Ok(()) => tracing::warn!(
            dir = %dir.display(),
            old_mode = format!("{mode:o}"),
            "the data dir was readable by other users; narrowed it to 0700"
        ),
        Err(error) => tracing::warn!(
            dir = %dir.display(),
            old_mode = format!("{mode:o}"),
            %error,
            "the data dir is readable by other users and could not be narrowed to 0700"
        ),
    }
}

fn verify_loop(jobs: &Mutex<Receiver<VerifyJob>>) {
    loop {
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let verdict = crate::control::secrets::verify_password(&job.hash, &job.password);
        job.reply.send(verdict);
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How often usage is stored and expired token-exchange users are swept.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(5);

fn control_loop(
    mut api: Api,
    jobs: Receiver<ControlJob>,
    handle: Arc<ControlHandle>,
    reload_every: Duration,
) {
    let mut next_housekeeping = std::time::Instant::now() + HOUSEKEEPING_INTERVAL;
    let mut next_reload = std::time::Instant::now() + reload_every;
    let shared = api.shared_store();
    let mut added = AddedThisRun::new();
    loop {
        let due = if shared {
            next_housekeeping.min(next_reload)
        } else {
            next_housekeeping
        };
        let wait = due.saturating_duration_since(std::time::Instant::now());
        handle.busy_since_ms.store(0, Ordering::Relaxed);
        let job = match jobs.recv_timeout(wait) {
            Ok(job) => Some(job),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        handle.busy_since_ms.store(unix_ms(), Ordering::Relaxed);
        if shared && std::time::Instant::now() >= next_reload {
            next_reload =
                std::time::Instant::now() + reload_shared(&mut api, &handle, reload_every);
        }
        if std::time::Instant::now() >= next_housekeeping {
            next_housekeeping = std::time::Instant::now() + HOUSEKEEPING_INTERVAL;
            let now = now_unix();
            persist_usage(&mut api, &handle, now, &mut added);
            share_quotas(&api, &handle, now, &added);
            if let Err(error) = api.sweep(now) {
                tracing::warn!(%error, "could not sweep expired credentials");
            }
            if let Some(snapshot) = api.take_changed() {
                handle.publish_snapshot(snapshot);
            }
        }
        let Some(job) = job else { continue };
        match job {
            ControlJob::Api { request, reply } => {
                let response = match api.handle(&request, handle.as_ref(), now_unix()) {
                    Outcome::Done(response) => response,
                    Outcome::Sessions { org, op } => sessions(&handle, org, op),
                };
                // Publish the new snapshot before answering, so a client that got its 2xx
                // finds the change on every shard.
                if let Some(snapshot) = api.take_changed() {
                    handle.publish_snapshot(snapshot);
                }
                reply.send(response);
            }
        }
    }
}

/// Milliseconds since the Unix epoch (at least 1, so 0 can mean "idle").
fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

/// How long to wait before asking an unreachable shared store again (each try may take the
/// connect timeout).
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Loads what other nodes changed in the shared store, if anything; returns when to look again.
/// The snapshot in force stays while the store cannot be reached: logins and ACLs go on from
/// memory, and only changes wait.
fn reload_shared(api: &mut Api, handle: &ControlHandle, every: Duration) -> Duration {
    match api.reload_if_changed() {
        Ok(()) => {
            if !handle.store_reachable.swap(true, Ordering::Relaxed) {
                tracing::info!("control-plane store reachable again");
            }
            if let Some(snapshot) = api.take_changed() {
                handle.publish_snapshot(snapshot);
            }
            every
        }
        Err(error) => {
            if handle.store_reachable.swap(false, Ordering::Relaxed) {
                tracing::warn!(%error, "control-plane store unreachable: serving the last snapshot, retrying");
            }
            every.max(STORE_RETRY)
        }
    }
}

/// Asks every shard about an org's sessions and builds the API response.
fn sessions(handle: &ControlHandle, org: OrgNum, op: SessionsOp) -> ApiResponse {
    let (answer_tx, answer_rx) = mpsc::channel();
    let mut asked = 0;
    for shard in 0..handle.inboxes.len() {
        let query = ShardQuery::Sessions {
            org,
            op: op.clone(),
            answer: answer_tx.clone(),
        };
        if handle.inboxes[shard].push(query).is_ok() {
            handle.mesh.wake(shard);
            asked += 1;
        }
    }
    drop(answer_tx);
    if asked < handle.inboxes.len() {
        return Api::error(
            503,
            "unavailable",
            "a shard is too busy to answer; try again",
        );
    }
    let deadline = std::time::Instant::now() + SHARD_ANSWER_TIMEOUT;
    let mut sessions = Vec::new();
    let mut found = false;
    for _ in 0..asked {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match answer_rx.recv_timeout(left) {
            Ok(answer) => {
                found |= answer.found;
                sessions.extend(answer.sessions);
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                return Api::error(503, "unavailable", "a shard did not answer in time");
            }
        }
    }
    match op {
        SessionsOp::List { limit, cursor, .. } => {
            sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
            let start = match &cursor {
                Some(cursor) => {
                    sessions.partition_point(|s| s.client_id.as_str() <= cursor.as_str())
                }
                None => 0,
            };
            let limit = limit.clamp(1, SESSIONS_PAGE_MAX);
            let page: Vec<&SessionInfo> = sessions.iter().skip(start).take(limit).collect();
            let next_cursor = (start + page.len() < sessions.len())
                .then(|| page.last().map(|s| s.client_id.clone()))
                .flatten();
            json_response(
                200,
                &serde_json::json!({ "items": page, "next_cursor": next_cursor }),
            )
        }
        SessionsOp::Get { .. } => match sessions.first() {
            Some(session) => json_response(200, &serde_json::json!(session)),
            None => Api::error(404, "not_found", "no session with this client id"),
        },
        SessionsOp::Disconnect { .. } | SessionsOp::Delete { .. } => {
            if found {
                ApiResponse {
                    status: 204,
                    headers: Vec::new(),
                    body: Vec::new(),
                }
            } else {
                Api::error(404, "not_found", "no session with this client id")
            }
        }
    }
}

fn json_response(status: u16, value: &serde_json::Value) -> ApiResponse {
    ApiResponse {
        status,
        headers: Vec::new(),
        body: serde_json::to_vec(value).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn login_attempts_are_counted_when_they_start() {
        let throttle = LoginThrottle::default();
        let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let t0 = std::time::Instant::now();
        // A burst: ten begin before any finishes, the eleventh is refused unchecked.
        assert!((0..10).all(|_| throttle.begin(peer, 10, t0)));
        assert!(!throttle.begin(peer, 10, t0));
        assert!(throttle.begin(other, 10, t0));
        // A success gives its place back; failures keep theirs for the minute.
        throttle.give_back(peer);
        assert!(throttle.begin(peer, 10, t0));
        assert!(!throttle.begin(peer, 10, t0 + Duration::from_secs(59)));
        assert!(throttle.begin(peer, 10, t0 + FAILURE_WINDOW));
    }
}
