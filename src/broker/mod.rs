//! The broker: shard threads wired to listeners, the mesh, timers and shutdown.
//!
//! - [`shard`]: one shard's state and routing (sessions, index replica, retained, registry).
//! - [`conn`]: an MQTT connection's reader and writer tasks.
//! - [`mesh_msg`]: what shards send each other.
//! - [`http`]: the HTTP listener (`/healthz`).
//! - [`sys`]: `$SYS/` statistics.
//! - [`stats`]: per-shard counters.
//!
//! [`mesh_msg`], [`stats`] and [`slots`] (session entries in fixed pages) live in `ringmq-core`
//! and are re-exported here, so their paths stay `crate::broker::…`.

pub mod answer;
pub mod cluster;
pub mod cluster_clients;
pub mod cluster_peers;
pub mod commit_grace;
pub mod conn;
pub mod conn_table;
pub mod console;
pub mod control;
pub mod error;
pub mod facts;
pub mod front_door;
pub mod http;
pub mod journal;
pub mod local_notify;
pub mod login;
pub mod mailbox;
pub mod ops;
pub mod park;
pub mod peer;
pub mod rest;
pub mod shard;
pub mod shared;
pub mod stream;
pub mod stream_ring;
pub mod sys;
pub mod web;
pub mod ws_transport;

pub use ringmq_core::{mesh_msg, slots, stats};

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use ringmq_io::tls::ReloadableTls;
use ringmq_io::{monoio, ConnStream, CrossNotify, Mesh, ShardConfig, ShardContext};

use crate::config::{Config, DurabilityMode, Placement, SlowConsumerPolicy};
use crate::mqtt::QoS;
use crate::session::{Qos0Overflow, Rules};
pub use error::BrokerError;
use mailbox::ShardHandle;
use shard::{Shard, ShardSettings};
pub use shared::ShutdownHandle;
use shared::{Handoff, Shared};
use stats::ShardStats;

/// Connections handed from the round-robin acceptor to one shard, at most this many waiting.
const HANDOFF_CAPACITY: usize = 4096;

/// How long shutdown waits for outboxes to flush.
const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Derives the session rules from the configuration.
pub fn rules_from(config: &Config) -> Rules {
    let limits = &config.limits;
    let mqtt = &config.mqtt;
    Rules {
        inflight_max: limits.inflight_max,
        queue_messages_max: limits.offline_queue_max,
        // Publishers are paused at half the queue; what other shards already sent still
        // arrives: at most a full mesh queue plus a parked backlog of the same size per shard.
        queue_overshoot_max: config.shard_count().saturating_sub(1)
            * 2
            * config.shards.mesh_queue_capacity,
        outbox_bytes_max: limits.outbox_bytes_max,
        packet_size_max: limits.packet_size_max,
        topic_alias_max: limits.topic_alias_max,
        topic_levels_max: limits.topic_levels_max,
        subscriptions_per_client_max: limits.subscriptions_per_client_max,
        keep_alive_max_secs: limits.keep_alive_max_secs,
        session_expiry_max_secs: limits.session_expiry_max_secs,
        refused_topics: mqtt.refused_topics.clone(),
        maximum_qos: QoS::from_u8(mqtt.maximum_qos).unwrap_or(QoS::ExactlyOnce),
        retain_available: mqtt.retain_available,
        wildcard_subscriptions: mqtt.wildcard_subscriptions,
        shared_subscriptions: mqtt.shared_subscriptions,
        subscription_identifiers: mqtt.subscription_identifiers,
        qos0_overflow: match config.delivery.qos0_slow_consumer {
            SlowConsumerPolicy::DropNew => Qos0Overflow::DropNew,
            SlowConsumerPolicy::DropOldest => Qos0Overflow::DropOldest,
            SlowConsumerPolicy::Disconnect => Qos0Overflow::Disconnect,
        },
        client_id_bytes_max: limits.client_id_bytes_max,
        allow_anonymous: config.anonymous_allowed(),
    }
}

/// A started broker.
pub struct Broker {
    handles: Vec<std::thread::JoinHandle<()>>,
    shutdown: Arc<ShutdownHandle>,
    tls: Option<Arc<ReloadableTls>>,
}

impl Broker {
    /// Starts the shards and listeners; returns once every shard listens (or one failed).
    pub fn start(config: Config) -> Result<Broker, BrokerError> {
        // Certificates first: a missing or mismatched file stops the start before any listener.
        let tls = if config.tls_enabled() {
            Some(Arc::new(ReloadableTls::load(config.tls.files())?))
        } else {
            None
        };
        // Shards bind with SO_REUSEPORT, which would silently share a port with another process
        // of the same user: probe each address without it first, so a clash is an error.
        for addr in config.listen_addrs() {
            if addr.port() != 0 {
                ringmq_io::retry_in_use(|| ringmq_io::probe_bind(addr))
                    .map_err(|source| BrokerError::Bind { addr, source })?;
            }
        }
        let shard_count = config.shard_count();
        let mesh = Mesh::new(shard_count, config.shards.mesh_queue_capacity);
        let stats = (0..shard_count)
            .map(|_| Arc::new(ShardStats::default()))
            .collect();
        let shutdown = Arc::new(ShutdownHandle {
            requested: AtomicBool::new(false),
            notifies: (0..shard_count).map(|_| CrossNotify::new()).collect(),
        });
        std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let control = control::start(&config, Arc::clone(&mesh), shard_count)?;
        let clock = (
            Instant::now(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        );
        // Before any listener: every replica is rebuilt before the first client.
        let journal = match config.durability.mode {
            DurabilityMode::Memory => None,
            DurabilityMode::Periodic | DurabilityMode::Sync => Some(journal::recover(
                &config.data_dir,
                &config.durability,
                shard_count,
                ringmq_core::durable::Clock { base: clock },
            )?),
        };
        // REST idempotency keys answered before the restart answer the same again.
        if let Some(recovered) = journal
            .as_ref()
            .and_then(|startup| startup.recovered.lock().ok()?.clone())
        {
            if let Ok(mut cache) = control.front.idempotency.lock() {
                let clock = ringmq_core::durable::Clock { base: clock };
                cache.load(&recovered.idempotent, &clock, Instant::now());
            }
        }
        let cluster = if config.cluster.nats.is_empty() {
            None
        } else {
            // Each node enforces its share of every org's rate limit (ratelimit.rs).
            let limits = Arc::clone(&control);
            Some(cluster::start(
                &config,
                Arc::clone(&mesh),
                clock,
                shard_count,
                Box::new(move |nodes| limits.front.rate_limits.set_share(nodes)),
            )?)
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            cluster,
            control,
            rules: rules_from(&config),
            mesh,
            stats,
            shutdown: Arc::clone(&shutdown),
            handoff: (0..shard_count)
                .map(|_| Handoff {
                    queue: ArrayQueue::new(HANDOFF_CAPACITY),
                    notify: CrossNotify::new(),
                })
                .collect(),
            started: Instant::now(),
            ready: std::sync::Mutex::new(ready_tx),
            conn_ids: AtomicU64::new(1),
            storage_failing: Arc::default(),
            tls: tls.clone(),
            clock,
            journal,
            config,
        });
        if !shared.config.shards.huge_pages {
            // Before the shards allocate: memory per idle connection is the fleet figure.
            if let Err(error) = ringmq_io::disable_transparent_huge_pages() {
                tracing::warn!(%error, "could not disable transparent huge pages");
            }
        }
        let shard_config = ShardConfig {
            shard_count,
            pin_cores: shared.config.shards.pin_cores,
            ring_entries: shared.config.shards.ring_entries,
            thread_name_prefix: "ringmq-shard".to_owned(),
        };
        let for_shards = Arc::clone(&shared);
        let handles = ringmq_io::spawn_shards(&shard_config, move |ctx| {
            shard_main(ctx, Arc::clone(&for_shards))
        })?;
        let broker = Broker {
            handles,
            shutdown,
            tls,
        };
        let mut ready = 0;
        while ready < shard_count {
            // A shard that dies before it reports (a panic) would leave this wait, and the
            // broker, hanging forever: the sender lives on in `shared`.
            let failed = match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(())) => {
                    ready += 1;
                    None
                }
                Ok(Err(error)) => Some(error),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => broker
                    .handles
                    .iter()
                    .position(|h| h.is_finished())
                    .map(BrokerError::ShardPanicked),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    Some(BrokerError::ShardPanicked(0))
                }
            };
            if let Some(error) = failed {
                broker.shutdown.shutdown();
                broker.join();
                return Err(error);
            }
        }
        if shared.config.listeners.placement == Placement::RoundRobin {
            spawn_acceptor(Arc::clone(&shared))?;
        }
        tracing::info!(
            mqtt = %shared.config.listeners.mqtt,
            http = %shared.config.listeners.http,
            mqtts = ?shared.config.listeners.mqtts.0,
            https = ?shared.config.listeners.https.0,
            shards = shard_count,
            placement = ?shared.config.listeners.placement,
            "ringmq is ready"
        );
        Ok(broker)
    }

    /// A handle to stop the broker.
    pub fn shutdown_handle(&self) -> Arc<ShutdownHandle> {
        Arc::clone(&self.shutdown)
    }

    /// The reloadable TLS configuration, when a TLS listener is on.
    pub fn tls(&self) -> Option<Arc<ReloadableTls>> {
        self.tls.clone()
    }

    /// Waits for every shard to finish.
    pub fn join(self) {
        for handle in self.handles {
            let _ = handle.join();
        }
    }
}

/// Runs the broker until SIGINT or SIGTERM, then shuts down gracefully; SIGHUP reloads the
/// TLS certificates.
pub fn run(config: Config) -> Result<(), BrokerError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(BrokerError::Signals)?;
    let broker = Broker::start(config)?;
    let shutdown = broker.shutdown_handle();
    let tls = broker.tls();
    std::thread::Builder::new()
        .name("ringmq-signals".to_owned())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reload_tls(tls.as_deref());
                    continue;
                }
                tracing::info!(signal, "shutting down");
                shutdown.shutdown();
                break;
            }
        })
        .map_err(BrokerError::Signals)?;
    broker.join();
    tracing::info!("ringmq stopped");
    Ok(())
}

/// SIGHUP: re-reads the certificate, key and client CA; on error the old ones stay.
fn reload_tls(tls: Option<&ReloadableTls>) {
    let Some(tls) = tls else {
        tracing::info!("SIGHUP: no TLS listener, nothing to reload");
        return;
    };
    match tls.reload() {
        Ok(()) => tracing::info!(version = tls.version(), "SIGHUP: TLS certificates reloaded"),
        Err(error) => {
            tracing::error!(%error, "SIGHUP: TLS reload failed; the previous certificates stay")
        }
    }
}

fn spawn_acceptor(shared: Arc<Shared>) -> Result<(), BrokerError> {
    let addr = shared.config.listeners.mqtt;
    let listener = ringmq_io::retry_in_use(|| std::net::TcpListener::bind(addr))
        .map_err(|source| BrokerError::Bind { addr, source })?;
    std::thread::Builder::new()
        .name("ringmq-acceptor".to_owned())
        .spawn(move || {
            let shard_count = shared.handoff.len();
            let mut next = 0usize;
            for stream in listener.incoming() {
                if shared.shutdown.is_requested() {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let handoff = &shared.handoff[next % shard_count];
                next = next.wrapping_add(1);
                if handoff.queue.push(stream).is_err() {
                    tracing::warn!("handoff queue full; connection dropped");
                }
                handoff.notify.notify();
            }
        })
        .map_err(BrokerError::Signals)?;
    Ok(())
}

async fn shard_main(ctx: ShardContext, shared: Arc<Shared>) {
    let id = ctx.shard_id;
    let config = &shared.config;
    let settings = ShardSettings {
        mesh_batch_max: config.shards.mesh_batch_max,
        read_buffer_bytes: config.delivery.read_buffer_bytes,
        read_budget_bytes: config.delivery.read_budget_bytes,
        write_batch_bytes: config.delivery.write_batch_bytes,
        retained_messages_max: config.limits.retained_messages_max,
        org_retained_bytes_max: config.org_limits.retained_bytes_max,
        org_offline_bytes_max: config.org_limits.offline_queue_bytes_max,
        connections_max: config.limits.connections_max.div_ceil(ctx.shard_count),
        connect_timeout: Duration::from_millis(config.limits.connect_timeout_ms),
        packet_size_max: config.limits.packet_size_max,
        mesh_backlog_max: config.shards.mesh_queue_capacity,
        login_failures_per_minute_max: config.auth.login_failures_per_minute_max,
    };
    let mut facts = facts::ShardFacts::new(
        id as u16,
        (settings, Rc::new(shared.rules.clone())),
        Arc::clone(&shared.stats[id]),
        Some(Arc::clone(&shared.control)),
    );
    facts.cluster = shared.cluster.clone();
    let facts = Rc::new(facts);
    let shard = Rc::new(ShardHandle::new(Rc::clone(&facts)));
    // The loop task owns the shard's state; every other task reaches it through the mailbox.
    let mut state = Shard::new(
        shared.mesh.endpoint(id),
        shared.rules.clone(),
        Arc::clone(&shared.stats[id]),
        Some(Arc::clone(&shared.control)),
        shared.clock,
        facts,
    );
    let report = |result: Result<(), BrokerError>| {
        if let Ok(tx) = shared.ready.lock() {
            let _ = tx.send(result);
        }
    };
    if shared.cluster.is_some() {
        // Before the restore: the filters it brings back are the node's interest too.
        state.enable_cluster();
    }
    // Durable state first, before any listener: this shard's sessions, and every retained
    // message and subscription in its replica.
    let log = match &shared.journal {
        Some(startup) => match journal::open(&mut state, startup, id) {
            Ok(log) => {
                state.share_storage_health(Arc::clone(&shared.storage_failing));
                if config.durability.mode == DurabilityMode::Sync {
                    state.enable_commit(Duration::from_micros(config.durability.consume_grace_us));
                }
                Some(log)
            }
            Err(error) => {
                report(Err(error.into()));
                return;
            }
        },
        None => None,
    };

    // Listeners: each shard binds its own with SO_REUSEPORT, unless one acceptor hands out.
    let mqtt_listener = if config.listeners.placement == Placement::ReusePort {
        match ringmq_io::bind_tcp(config.listeners.mqtt, true, config.listeners.backlog) {
            Ok(listener) => Some(listener),
            Err(error) => {
                report(Err(bind_error(config.listeners.mqtt, error)));
                return;
            }
        }
    } else {
        None
    };
    let http_listener =
        match ringmq_io::bind_tcp(config.listeners.http, true, config.listeners.backlog) {
            Ok(listener) => listener,
            Err(error) => {
                report(Err(bind_error(config.listeners.http, error)));
                return;
            }
        };

    let mut tls_listeners = Vec::new();
    if let Some(tls) = &shared.tls {
        let cache = Rc::new(TlsCache::new(Arc::clone(tls)));
        for (addr, kind) in [
            (config.listeners.mqtts.0, TlsKind::Mqtt),
            (config.listeners.https.0, TlsKind::Http),
        ] {
            let Some(addr) = addr else { continue };
            match ringmq_io::bind_tcp(addr, true, config.listeners.backlog) {
                Ok(listener) => tls_listeners.push((listener, kind, Rc::clone(&cache))),
                Err(error) => {
                    report(Err(bind_error(addr, error)));
                    return;
                }
            }
        }
    }

    let stop = Rc::new(local_notify::LocalStop::default());
    for (listener, kind, cache) in tls_listeners {
        monoio::spawn(accept_tls(
            Rc::clone(&shard),
            Arc::clone(&shared),
            listener,
            (kind, cache),
            Rc::clone(&stop),
        ));
    }
    if let Some(listener) = mqtt_listener {
        monoio::spawn(accept_mqtt(
            Rc::clone(&shard),
            Arc::clone(&shared),
            listener,
            Rc::clone(&stop),
        ));
    } else {
        monoio::spawn(receive_handoff(
            Rc::clone(&shard),
            Arc::clone(&shared),
            id,
            Rc::clone(&stop),
        ));
    }
    let http_context = Rc::new(http::HttpContext {
        shard: Rc::clone(&shard),
        shared: Arc::clone(&shared),
    });
    monoio::spawn(accept_http(http_listener, Rc::clone(&stop), http_context));
    let loop_stop = Rc::new(local_notify::LocalStop::default());
    let shard_loop = monoio::spawn(shard_loop(state, Rc::clone(&shard), Rc::clone(&loop_stop)));
    let parks_stop = Rc::new(local_notify::LocalStop::default());
    let unpark = monoio::spawn(conn::unpark_loop(Rc::clone(&shard), Rc::clone(&parks_stop)));
    monoio::spawn(housekeeping(Rc::clone(&shard), Arc::clone(&shared), id));
    let journal_stop = Rc::new(local_notify::LocalStop::default());
    if config.durability.mode == DurabilityMode::Sync && config.durability.consume_grace_us > 0 {
        monoio::spawn(commit_grace::grace_loop(
            Rc::clone(&shard),
            Rc::clone(&journal_stop),
        ));
    }
    let journal = log.map(|(file, len)| {
        let settings = journal::JournalSettings {
            interval: Duration::from_millis(shared.config.durability.sync_interval_ms),
            compact_bytes: shared.config.durability.compact_log_bytes,
            max_bytes: shared.config.durability.max_log_bytes,
            path: file.1,
            write_through: shared.config.durability.mode == DurabilityMode::Sync,
        };
        monoio::spawn(journal::journal_loop(
            Rc::clone(&shard),
            file.0,
            len,
            settings,
            Rc::clone(&journal_stop),
        ))
    });
    report(Ok(()));

    // Run until shutdown is asked for.
    while !shared.shutdown.is_requested() {
        shared.shutdown.notifies[id].notified().await;
    }
    stop.stop();
    shared.handoff[id].notify.notify();
    shard.shutting_down.set(true);
    let _ = shard
        .call(|s| {
            let now = Instant::now();
            s.shutdown_connections(now);
            s.flush(now);
            s.wake_streams();
        })
        .await;
    let deadline = Instant::now() + SHUTDOWN_FLUSH_TIMEOUT;
    while Instant::now() < deadline {
        let streams = shard.call(|s| s.attached_streams()).await.unwrap_or(0);
        if shard.live_connections.get() == 0 && streams == 0 {
            break;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    // Parked connections needed the unpark loop through the drain. Its poll on the epoll
    // instance must be cancelled before the runtime ends: a poll still in flight when the
    // process exits kept the HTTP port bound for a moment, and a quick restart failed.
    parks_stop.stop();
    unpark.await;
    // The last checkpoint (every session is offline now) and sync, while the loop still runs.
    journal_stop.stop();
    if let Some(journal) = journal {
        journal.await;
    }
    loop_stop.stop();
    shard_loop.await;
}

fn bind_error(addr: SocketAddr, error: ringmq_io::IoError) -> BrokerError {
    match error {
        ringmq_io::IoError::Bind { source, .. } => BrokerError::Bind { addr, source },
        other => BrokerError::Io(other),
    }
}

async fn accept_mqtt(
    shard: Rc<ShardHandle>,
    shared: Arc<Shared>,
    listener: monoio::net::TcpListener,
    stop: Rc<local_notify::LocalStop>,
) {
    loop {
        let accepted = monoio::select! {
            accepted = listener.accept() => Some(accepted),
            _ = stop.wait() => None,
        };
        let Some(accepted) = accepted else { break };
        match accepted {
            Ok((stream, _peer)) => {
                let _ = ringmq_io::tune_accepted(&stream);
                start_connection(&shard, &shared, ConnStream::Tcp(stream));
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn start_connection(shard: &Rc<ShardHandle>, shared: &Arc<Shared>, stream: ConnStream) {
    if shard.full() {
        tracing::warn!("connections_max reached; connection refused");
        return;
    }
    let conn_id = shared.conn_ids.fetch_add(1, Ordering::Relaxed);
    monoio::spawn(conn::serve(Rc::clone(shard), stream, conn_id, false));
}

async fn receive_handoff(
    shard: Rc<ShardHandle>,
    shared: Arc<Shared>,
    id: usize,
    stop: Rc<local_notify::LocalStop>,
) {
    let handoff = &shared.handoff[id];
    loop {
        while let Some(stream) = handoff.queue.pop() {
            match ringmq_io::adopt_stream(stream) {
                Ok(stream) => start_connection(&shard, &shared, ConnStream::Tcp(stream)),
                Err(error) => tracing::warn!(%error, "cannot adopt connection"),
            }
        }
        if stop.is_stopped() {
            break;
        }
        handoff.notify.notified().await;
    }
}

async fn accept_http(
    listener: monoio::net::TcpListener,
    stop: Rc<local_notify::LocalStop>,
    context: Rc<http::HttpContext>,
) {
    loop {
        let accepted = monoio::select! {
            accepted = listener.accept() => Some(accepted),
            _ = stop.wait() => None,
        };
        match accepted {
            Some(Ok((stream, _))) => {
                let _ = ringmq_io::tune_accepted(&stream);
                monoio::spawn(http::serve(ConnStream::Tcp(stream), Rc::clone(&context)));
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "HTTP accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
            None => break,
        }
    }
}

/// What a TLS listener serves.
#[derive(Clone, Copy, Debug)]
enum TlsKind {
    Mqtt,
    Http,
}

/// A shard's copy of the shared TLS configuration, refreshed when a reload bumps the version
/// (handshakes take no lock unless the certificates changed).
struct TlsCache {
    shared: Arc<ReloadableTls>,
    version: std::cell::Cell<u64>,
    config: RefCell<Arc<ringmq_io::rustls::ServerConfig>>,
}

impl TlsCache {
    fn new(shared: Arc<ReloadableTls>) -> Self {
        TlsCache {
            version: std::cell::Cell::new(shared.version()),
            config: RefCell::new(shared.current()),
            shared,
        }
    }

    /// The configuration for the next handshake.
    fn current(&self) -> Arc<ringmq_io::rustls::ServerConfig> {
        let version = self.shared.version();
        if version != self.version.get() {
            *self.config.borrow_mut() = self.shared.current();
            self.version.set(version);
        }
        Arc::clone(&self.config.borrow())
    }
}

/// Accepts TLS connections: each handshake runs in its own task under the handshake timeout,
/// then the connection is served exactly as a plain one.
async fn accept_tls(
    shard: Rc<ShardHandle>,
    shared: Arc<Shared>,
    listener: monoio::net::TcpListener,
    (kind, cache): (TlsKind, Rc<TlsCache>),
    stop: Rc<local_notify::LocalStop>,
) {
    let timeout = Duration::from_millis(shared.config.tls.handshake_timeout_ms);
    loop {
        let accepted = monoio::select! {
            accepted = listener.accept() => Some(accepted),
            _ = stop.wait() => None,
        };
        let Some(accepted) = accepted else { break };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "TLS accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if matches!(kind, TlsKind::Mqtt) && shard.full() {
            tracing::warn!("connections_max reached; connection refused");
            continue;
        }
        let _ = ringmq_io::tune_accepted(&stream);
        let config = cache.current();
        let shard = Rc::clone(&shard);
        let shared = Arc::clone(&shared);
        monoio::spawn(async move {
            let stream = match monoio::time::timeout(
                timeout,
                ringmq_io::tls::accept(stream, config),
            )
            .await
            {
                Ok(Ok(stream)) => ConnStream::Tls(Box::new(stream)),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            match kind {
                TlsKind::Mqtt => start_connection(&shard, &shared, stream),
                TlsKind::Http => {
                    let context = Rc::new(http::HttpContext {
                        shard: Rc::clone(&shard),
                        shared: Arc::clone(&shared),
                    });
                    http::serve(stream, context).await
                }
            }
        });
    }
}

/// The shard's loop: it owns the shard's state and runs, in rounds, what the other shards sent
/// (in lane order) and at most [`mailbox::JOBS_PER_ROUND`] jobs of the shard's tasks, then
/// flushes the outputs once. Idle, it waits for a job or a mesh message.
async fn shard_loop(mut shard: Shard, handle: Rc<ShardHandle>, stop: Rc<local_notify::LocalStop>) {
    let mesh = shard.mesh_handle();
    let batch_max = handle.settings.mesh_batch_max;
    let mut batch = Vec::with_capacity(batch_max);
    let mut round = Vec::with_capacity(mailbox::JOBS_PER_ROUND);
    loop {
        if !handle.has_jobs() {
            // Idle: the mesh is this loop's alone to read (lane order is the order of effects).
            let arrived = std::future::poll_fn(|cx| {
                if handle.arrived.take() || handle.has_jobs() {
                    std::task::Poll::Ready(())
                } else {
                    handle.arrived.register(cx.waker());
                    std::task::Poll::Pending
                }
            });
            monoio::select! {
                _ = arrived => {},
                _ = mesh.recv_batch(&mut batch, batch_max) => {},
                _ = stop.wait() => break,
            }
            let now = Instant::now();
            // The control thread wakes shards through the mesh: a new snapshot or a question.
            shard.refresh_snapshot(now);
            shard.answer_control(now);
            for (from, msg) in batch.drain(..) {
                shard.handle(
                    shard::Input::Mesh {
                        from: from as u16,
                        msg,
                    },
                    now,
                );
            }
        }
        // Apply what other shards already said (a subscription made on another shard just
        // before a publish, a pause) before the jobs of this round.
        shard.poll_mesh(Instant::now());
        shard.take_cluster(Instant::now());
        handle.take_round(&mut round);
        for job in round.drain(..) {
            job(&mut shard);
        }
        shard.flush(Instant::now());
        if handle.has_jobs() {
            // Let the tasks this round woke (writers, readers) run before the next one.
            local_notify::yield_now().await;
        }
    }
    handle.close();
}

/// Timers (keep-alive, will delay, session expiry), gauges and `$SYS` publication.
async fn housekeeping(shard: Rc<ShardHandle>, shared: Arc<Shared>, id: usize) {
    let tick = Duration::from_millis(100);
    let sys_every = Duration::from_secs(u64::from(shared.config.mqtt.sys_interval_secs.max(1)));
    let next_sys = Rc::new(std::cell::Cell::new(
        Instant::now() + Duration::from_millis(500),
    ));
    let next_second = Rc::new(std::cell::Cell::new(
        Instant::now() + Duration::from_secs(1),
    ));
    let doze_cursor = Rc::new(std::cell::Cell::new(0));
    let sys_cursor = Rc::new(std::cell::Cell::new(0));
    loop {
        monoio::time::sleep(tick).await;
        let (next_sys, next_second) = (Rc::clone(&next_sys), Rc::clone(&next_second));
        let (doze_cursor, sys_cursor) = (Rc::clone(&doze_cursor), Rc::clone(&sys_cursor));
        let shared = Arc::clone(&shared);
        let round = move |s: &mut Shard| {
            let now = Instant::now();
            s.handle(shard::Input::Tick, now);
            let mut cursor = doze_cursor.get();
            conn::doze_parked(s, &mut cursor, now);
            doze_cursor.set(cursor);
            s.refresh_gauges();
            // An idle shard's loop is the only other place that looks for a new snapshot.
            s.refresh_snapshot(now);
            if now >= next_second.get() {
                next_second.set(now + Duration::from_secs(1));
                s.expire_credentials(now);
                s.expire_streams(now);
                s.report_usage();
                s.refresh_inflight();
            }
            if id == 0 && now >= next_sys.get() {
                next_sys.set(now + sys_every);
                let totals = stats::totals(&shared.stats);
                let mut cursor = sys_cursor.get();
                sys::publish(
                    s,
                    &totals,
                    &shared.control,
                    &mut cursor,
                    shared.started,
                    now,
                );
                sys_cursor.set(cursor);
            }
            s.flush(now);
        };
        if shard.call(round).await.is_none() {
            return;
        }
    }
}
