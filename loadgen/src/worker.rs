//! What one loadgen thread runs: its share of the connections (connection `i` belongs to
//! thread `i % threads`), opened at the thread's share of the connection rate, plus a control
//! task that follows the main thread's phases.
//!
//! Connections that read (subscribers, idle `conn` clients, QoS 1/2 publishers) are split into
//! a read half and a write half driven by two tasks, because a read that loses a `select!`
//! on io_uring may already have consumed bytes from the socket; reads are therefore never
//! cancelled. Writers wait on local notifications and the thread's control broadcast instead.
//! A connection that does not finish after `Stopping` is shut down by the control task.
//!
//! - `receiver`: idle clients and subscribers (read half, write half, acks).
//! - `publisher`: pacing, QoS 0 batches and the QoS 1/2 in-flight window.

mod publisher;
mod receiver;

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use ringmq_io::ShardContext;
use ringmq_proto::mqtt::QoS;

use crate::client::{connect_client, ClientConfig, ClientError, ReadBuffer};
use crate::control::{Global, Phase, ThreadControl};
use crate::metrics::{LatencyKind, ThreadMetrics};
use crate::tracker::SequenceCounts;
use crate::transport::Connection;

use publisher::publisher_task;
use receiver::receiver;

/// Connections of one thread that may be between TCP connect and CONNACK at once.
pub const CONNECTS_IN_FLIGHT_MAX: usize = 1024;

/// Bytes of PUBLISH packets encoded into one write.
pub const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Acks a subscriber may have queued for its writer before it stops reading.
pub const OUTBOX_BYTES_MAX: usize = 256 * 1024;

/// How long connections get to close by themselves after `Stopping` before they are shut down.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Publisher ids a subscriber tracks sequences for (bounds tracker memory for `sub`).
pub const TRACKED_PUBLISHERS_MAX: usize = 1 << 20;

/// Error messages kept per thread for the report.
pub const ERROR_SAMPLES_MAX: usize = 8;

/// How often the control task looks at the main thread's phase.
const CONTROL_POLL: Duration = Duration::from_millis(2);

/// Who receives which messages, which decides how many deliveries to expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Every subscriber receives every publisher's messages.
    AllPublishers,
    /// Subscriber `i` receives publisher `i`'s messages.
    OwnPair,
    /// Each message reaches one member of a shared group.
    OneOfGroup,
    /// No subscribers.
    Nobody,
    /// Subscribers of messages from outside this run.
    Unknown,
}

/// Everything a run does, decided before any thread starts.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Scenario name for the report.
    pub scenario: &'static str,
    /// How clients connect.
    pub client: ClientConfig,
    /// Client id prefix.
    pub prefix: String,
    /// Loadgen threads.
    pub threads: usize,
    /// New connections per second, in total.
    pub connect_rate: u32,
    /// Connections that only connect and stay idle (`conn`).
    pub idle_clients: usize,
    /// Subscribers.
    pub subscribers: usize,
    /// Subscription filter template.
    pub filter: String,
    /// Subscription QoS.
    pub sub_qos: QoS,
    /// Publishers.
    pub publishers: usize,
    /// Publish topic template.
    pub topic: String,
    /// Publish QoS.
    pub qos: QoS,
    /// Retain flag on publishes.
    pub retain: bool,
    /// Payload bytes (at least the header).
    pub payload_bytes: usize,
    /// Messages per second per publisher; `None` for as fast as possible.
    pub rate_per_publisher: Option<f64>,
    /// QoS 1/2 in-flight window per publisher.
    pub inflight: u16,
    /// Messages per publisher.
    pub count: Option<u64>,
    /// Who receives what.
    pub delivery: Delivery,
    /// What the latency histograms measure.
    pub latency: Option<LatencyKind>,
    /// Run id written into payloads.
    pub run_id: u32,
    /// Only payloads of this run count (`None`: any run, for `sub` next to another process).
    pub accept_run: Option<u32>,
}

impl Plan {
    /// All connections of the run.
    pub fn connection_count(&self) -> usize {
        self.idle_clients + self.subscribers + self.publishers
    }

    /// The role of global connection `index`: idle clients first, then subscribers, then publishers.
    fn role(&self, index: usize) -> Role {
        if index < self.idle_clients {
            Role::Idle(index)
        } else if index < self.idle_clients + self.subscribers {
            Role::Subscriber(index - self.idle_clients)
        } else {
            Role::Publisher(index - self.idle_clients - self.subscribers)
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Role {
    Idle(usize),
    Subscriber(usize),
    Publisher(usize),
}

/// What a thread hands back at the end.
#[derive(Debug)]
pub struct ThreadResult {
    /// Latency samples inside the measurement window.
    pub latency: Histogram<u64>,
    /// Sequence anomalies seen by this thread's subscribers.
    pub counts: SequenceCounts,
    /// A few error messages.
    pub error_samples: Vec<String>,
}

/// One thread's shared state, used by all its tasks.
struct ThreadState {
    plan: Arc<Plan>,
    global: Arc<Global>,
    control: ThreadControl,
    metrics: RefCell<ThreadMetrics>,
    counts: RefCell<SequenceCounts>,
    error_samples: RefCell<Vec<String>>,
    /// Socket of each registered task (by control slot), for the forced shutdown.
    sockets: RefCell<Vec<Option<RawFd>>>,
    connecting: Cell<usize>,
    tasks_done: Cell<bool>,
    /// Shortest sleep between rate-limited publishes on this thread, so many slow publishers
    /// do not turn into hundreds of thousands of timer wake-ups per second.
    tick_min: Duration,
}

impl ThreadState {
    fn register(&self) -> usize {
        let slot = self.control.register();
        self.sockets.borrow_mut().push(None);
        slot
    }

    fn set_socket(&self, slot: usize, socket: Option<RawFd>) {
        if let Some(entry) = self.sockets.borrow_mut().get_mut(slot) {
            *entry = socket;
        }
    }

    fn sample(&self, message: String) {
        let mut samples = self.error_samples.borrow_mut();
        if samples.len() < ERROR_SAMPLES_MAX {
            samples.push(message);
        }
    }

    fn connect_failed(&self, client_id: &str, error: &ClientError) {
        self.global.connect_failed.fetch_add(1, Ordering::Relaxed);
        self.sample(format!("{client_id}: connect: {error}"));
    }

    fn error(&self, client_id: &str, message: String) {
        self.global.errors.fetch_add(1, Ordering::Relaxed);
        self.sample(format!("{client_id}: {message}"));
    }

    fn client_id(&self, role: Role) -> String {
        let prefix = &self.plan.prefix;
        match role {
            Role::Idle(index) => format!("{prefix}-c{index}"),
            Role::Subscriber(index) => format!("{prefix}-s{index}"),
            Role::Publisher(index) => format!("{prefix}-p{index}"),
        }
    }
}

/// Runs one loadgen thread until the main thread says `Stopping` and its connections closed.
pub async fn run_thread(
    context: ShardContext,
    plan: Arc<Plan>,
    global: Arc<Global>,
    intervals: SyncSender<Histogram<u64>>,
) -> ThreadResult {
    let thread = context.shard_id;
    let threads = context.shard_count;
    let mine: Vec<usize> = (thread..plan.connection_count()).step_by(threads).collect();
    let publishers_here = mine
        .iter()
        .filter(|&&index| matches!(plan.role(index), Role::Publisher(_)))
        .count();
    let tick_min = Duration::from_secs_f64((publishers_here as f64 / 100_000.0).max(0.001));
    let state = Rc::new(ThreadState {
        plan: Arc::clone(&plan),
        global,
        control: ThreadControl::new(),
        metrics: RefCell::new(ThreadMetrics::new()),
        counts: RefCell::new(SequenceCounts::default()),
        error_samples: RefCell::new(Vec::new()),
        sockets: RefCell::new(Vec::new()),
        connecting: Cell::new(0),
        tasks_done: Cell::new(false),
        tick_min,
    });
    state.control.sync(&state.global);
    let control_task = monoio::spawn(control_loop(Rc::clone(&state), intervals));

    let rate = (f64::from(plan.connect_rate) / threads as f64).max(1.0);
    let started_at = Instant::now();
    let mut handles = Vec::with_capacity(mine.len());
    for (position, &index) in mine.iter().enumerate() {
        loop {
            if state.control.phase() == Phase::Stopping {
                break;
            }
            let due = (started_at.elapsed().as_secs_f64() * rate) as usize + 1;
            if position < due && state.connecting.get() < CONNECTS_IN_FLIGHT_MAX {
                break;
            }
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
        if state.control.phase() == Phase::Stopping {
            break;
        }
        let role = plan.role(index);
        // Counted from the spawn, not from when the task first runs: a thread busy with TLS
        // handshakes spawns a burst after each late wake-up, and the cap must hold it.
        state.connecting.set(state.connecting.get() + 1);
        let task_state = Rc::clone(&state);
        handles.push(monoio::spawn(async move {
            match role {
                Role::Idle(_) | Role::Subscriber(_) => receiver(task_state, role, index).await,
                Role::Publisher(publisher) => publisher_task(task_state, publisher, index).await,
            }
        }));
    }
    for handle in handles {
        handle.await;
    }
    state.tasks_done.set(true);
    control_task.await;
    let latency = std::mem::replace(
        &mut state.metrics.borrow_mut().total,
        crate::metrics::new_histogram(),
    );
    let counts = *state.counts.borrow();
    let error_samples = std::mem::take(&mut *state.error_samples.borrow_mut());
    ThreadResult {
        latency,
        counts,
        error_samples,
    }
}

/// Follows the global phase, flushes interval histograms, announces pings, and shuts down
/// connections that outstay `Stopping`.
async fn control_loop(state: Rc<ThreadState>, intervals: SyncSender<Histogram<u64>>) {
    let keepalive = state.plan.client.keepalive;
    let ping_every = (keepalive > 0).then(|| Duration::from_secs(u64::from(keepalive)) / 2);
    let mut last_flush = Instant::now();
    let mut last_ping = Instant::now();
    let mut stopping_since: Option<Instant> = None;
    let mut forced = false;
    loop {
        state.control.sync(&state.global);
        let now = Instant::now();
        if now.duration_since(last_flush) >= Duration::from_secs(1) {
            state.metrics.borrow_mut().flush_interval(&intervals);
            last_flush = now;
        }
        if let Some(every) = ping_every {
            if now.duration_since(last_ping) >= every {
                state.control.announce_ping();
                last_ping = now;
            }
        }
        if state.control.phase() == Phase::Stopping {
            let since = *stopping_since.get_or_insert(now);
            if !forced && now.duration_since(since) >= STOP_GRACE {
                forced = true;
                for socket in state.sockets.borrow().iter().flatten() {
                    // SAFETY: the descriptor is open: tasks clear their entry before closing it.
                    unsafe {
                        libc::shutdown(*socket, libc::SHUT_RDWR);
                    }
                }
            }
        }
        if state.tasks_done.get() {
            state.metrics.borrow_mut().flush_interval(&intervals);
            return;
        }
        monoio::time::sleep(CONTROL_POLL).await;
    }
}

/// Connects with CONNACK latency bookkeeping; `None` if it failed (already counted) or the
/// run stopped first (a connect stuck in SYN retries must not keep the thread alive). The
/// spawner counted the connection in `connecting`; this ends that.
async fn open(
    state: &ThreadState,
    slot: usize,
    client_id: &str,
    index: usize,
    reader: &mut ReadBuffer,
    buf: &mut BytesMut,
) -> Option<Connection> {
    let started = Instant::now();
    let client = &state.plan.client;
    let broker = match (client.sub_broker, state.plan.role(index)) {
        (Some(other), Role::Subscriber(_)) => other,
        _ => client.broker,
    };
    let result = monoio::select! {
        result = connect_client(client, broker, client_id, index, reader, buf) => Some(result),
        _ = state.control.reach(slot, Phase::Stopping) => None,
    };
    state.connecting.set(state.connecting.get() - 1);
    let Some(result) = result else {
        state.connect_failed(
            client_id,
            &ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no CONNACK when the connect phase ended (connections ÷ --connect-rate + 30 s; \
                 a broker dropping SYNs keeps clients in retransmits that long)",
            )),
        );
        return None;
    };
    match result {
        Ok(stream) => {
            if state.plan.client.transport.tls.is_some() {
                if !state.global.has_tls_session() {
                    if let Some(description) = stream.tls_description() {
                        state.global.set_tls_session(description);
                    }
                }
                if stream.tls_resumed() {
                    state.global.tls_resumed.fetch_add(1, Ordering::Relaxed);
                }
            }
            if state.plan.latency == Some(LatencyKind::Connack) {
                let elapsed = started.elapsed().as_nanos() as u64;
                state.metrics.borrow_mut().record(elapsed, true);
            }
            Some(stream)
        }
        Err(error) => {
            state.connect_failed(client_id, &error);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_proto::mqtt::ProtocolVersion;
    #[test]
    fn roles_cover_every_connection() {
        let plan = Plan {
            scenario: "test",
            client: ClientConfig {
                broker: "127.0.0.1:1".parse().unwrap(),
                sub_broker: None,
                version: ProtocolVersion::V311,
                username: None,
                password: None,
                clean: true,
                session_expiry: 0,
                keepalive: 0,
                source_addresses: Vec::new(),
                transport: crate::transport::Transport::default(),
            },
            prefix: "t".to_owned(),
            threads: 1,
            connect_rate: 1,
            idle_clients: 1,
            subscribers: 2,
            filter: String::new(),
            sub_qos: QoS::AtMostOnce,
            publishers: 3,
            topic: String::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            payload_bytes: 64,
            rate_per_publisher: None,
            inflight: 1,
            count: None,
            delivery: Delivery::AllPublishers,
            latency: None,
            run_id: 1,
            accept_run: Some(1),
        };
        assert_eq!(plan.connection_count(), 6);
        assert!(matches!(plan.role(0), Role::Idle(0)));
        assert!(matches!(plan.role(2), Role::Subscriber(1)));
        assert!(matches!(plan.role(5), Role::Publisher(2)));
    }
}
