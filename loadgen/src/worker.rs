//! What one loadgen thread runs: its share of the connections (connection `i` belongs to
//! thread `i % threads`), opened at the thread's share of the connection rate, plus a control
//! task that follows the main thread's phases.
//!
//! Connections that read (subscribers, idle `conn` clients, QoS 1/2 publishers) are split into
//! a read half and a write half driven by two tasks, because a read that loses a `select!`
//! on io_uring may already have consumed bytes from the socket; reads are therefore never
//! cancelled. Writers wait on local notifications and the thread's control broadcast instead.
//! A connection that does not finish after `Stopping` is shut down by the control task.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use monoio::io::{AsyncReadRent, AsyncWriteRent, Splitable};
use monoio::net::TcpStream;
use ringmq_io::ShardContext;
use ringmq_proto::mqtt::{ProtocolVersion, PubRespKind, QoS};

use crate::client::{
    append_pub_resp, connect_client, encode_disconnect, parse_publish, subscribe, write_buffer,
    ClientConfig, ClientError, PublishTemplate, ReadBuffer, READ_CHUNK_BYTES,
};
use crate::control::{Global, LocalNotify, Phase, ThreadControl};
use crate::metrics::{LatencyKind, ThreadMetrics};
use crate::payload::Header;
use crate::template::expand;
use crate::tracker::{SequenceCounts, SequenceTracker};

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
/// run stopped first (a connect stuck in SYN retries must not keep the thread alive).
async fn open(
    state: &ThreadState,
    slot: usize,
    client_id: &str,
    index: usize,
    reader: &mut ReadBuffer,
    buf: &mut BytesMut,
) -> Option<TcpStream> {
    state.connecting.set(state.connecting.get() + 1);
    let started = Instant::now();
    let result = monoio::select! {
        result = connect_client(&state.plan.client, client_id, index, reader, buf) => Some(result),
        _ = state.control.reach(slot, Phase::Stopping) => None,
    };
    state.connecting.set(state.connecting.get() - 1);
    let Some(result) = result else {
        state.connect_failed(
            client_id,
            &ClientError::Refused("run stopped before CONNACK".to_owned()),
        );
        return None;
    };
    match result {
        Ok(stream) => {
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

/// Acks and pings a receiving connection's reader queues for its writer.
#[derive(Default)]
struct Outbox {
    pending: RefCell<BytesMut>,
    wake_writer: LocalNotify,
    drained: LocalNotify,
    reader_closed: Cell<bool>,
}

/// An idle client or a subscriber: connect, subscribe, then read until stopped.
async fn receiver(state: Rc<ThreadState>, role: Role, index: usize) {
    let slot = state.register();
    let client_id = state.client_id(role);
    let mut reader = ReadBuffer::with_capacity(match role {
        Role::Idle(_) => 256,
        _ => READ_CHUNK_BYTES,
    });
    let mut buf = BytesMut::with_capacity(256);
    let Some(mut stream) = open(&state, slot, &client_id, index, &mut reader, &mut buf).await
    else {
        return;
    };
    let version = state.plan.client.version;
    if let Role::Subscriber(subscriber) = role {
        let filter = expand(&state.plan.filter, subscriber, &client_id);
        let subscribed = subscribe(
            &mut stream,
            &mut reader,
            &mut buf,
            &filter,
            state.plan.sub_qos,
            version,
        )
        .await;
        if let Err(error) = subscribed {
            state.connect_failed(&client_id, &error);
            return;
        }
    }
    state.global.connected.fetch_add(1, Ordering::Relaxed);
    state.set_socket(slot, Some(stream.as_raw_fd()));
    let (mut read_half, write_half) = stream.into_split();
    let outbox = Rc::new(Outbox::default());
    let writer = monoio::spawn(receiver_writer(
        Rc::clone(&state),
        slot,
        write_half,
        Rc::clone(&outbox),
        version,
    ));

    let mut trackers: Vec<SequenceTracker> = Vec::new();
    let track = state.plan.delivery != Delivery::OneOfGroup;
    loop {
        match reader.fill(&mut read_half).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        match handle_deliveries(&state, &mut reader, &outbox, &mut trackers, track, version) {
            Ok(received) => {
                if received > 0 {
                    state.global.received.fetch_add(received, Ordering::Relaxed);
                }
            }
            Err(error) => {
                if state.control.phase() < Phase::Stopping {
                    state.error(&client_id, error.to_string());
                }
                break;
            }
        }
        if !outbox.pending.borrow().is_empty() {
            outbox.wake_writer.notify();
        }
        while outbox.pending.borrow().len() > OUTBOX_BYTES_MAX {
            outbox.drained.notified().await;
        }
    }
    if state.control.phase() < Phase::Stopping {
        state.error(&client_id, "connection closed by the broker".to_owned());
    }
    outbox.reader_closed.set(true);
    outbox.wake_writer.notify();
    writer.await;
    let mut counts = state.counts.borrow_mut();
    for tracker in &trackers {
        counts.add(&tracker.counts());
    }
    state.set_socket(slot, None);
}

/// Handles every complete packet in the buffer; returns the PUBLISH count.
fn handle_deliveries(
    state: &ThreadState,
    reader: &mut ReadBuffer,
    outbox: &Outbox,
    trackers: &mut Vec<SequenceTracker>,
    track: bool,
    version: ProtocolVersion,
) -> Result<u64, ClientError> {
    let v5 = version.is_v5();
    let now_ns = state.global.now_ns();
    let measure_from_ns = state.control.measure_from_ns();
    let record_latency = state.plan.latency == Some(LatencyKind::EndToEnd);
    let mut received = 0;
    let mut metrics = state.metrics.borrow_mut();
    let mut pending = outbox.pending.borrow_mut();
    while let Some(frame) = reader.next_frame()? {
        match frame.first_byte >> 4 {
            3 => {
                let body = reader.bytes(frame.body.clone());
                let view = parse_publish(frame.first_byte, body, v5)
                    .ok_or_else(|| ClientError::Protocol("malformed PUBLISH".to_owned()))?;
                received += 1;
                match view.qos {
                    1 => {
                        append_pub_resp(PubRespKind::PubAck, view.packet_id, version, &mut pending)
                    }
                    2 => {
                        append_pub_resp(PubRespKind::PubRec, view.packet_id, version, &mut pending)
                    }
                    _ => {}
                }
                let Some(header) = Header::read(view.payload) else {
                    continue;
                };
                if state.plan.accept_run.is_some_and(|run| run != header.run) {
                    // A leftover of an earlier run: neither counted nor timed.
                    received -= 1;
                    continue;
                }
                if record_latency {
                    let measured = header.sent_ns >= measure_from_ns;
                    metrics.record(now_ns.saturating_sub(header.sent_ns), measured);
                }
                let publisher = header.publisher as usize;
                if track && publisher < TRACKED_PUBLISHERS_MAX {
                    if trackers.len() <= publisher {
                        trackers.resize_with(publisher + 1, SequenceTracker::default);
                    }
                    trackers[publisher].record(header.sequence);
                }
            }
            6 => {
                // PUBREL of an incoming QoS 2 message: complete it.
                let body = reader.bytes(frame.body.clone());
                let packet_id =
                    u16::from_be_bytes([*body.first().unwrap_or(&0), *body.get(1).unwrap_or(&0)]);
                append_pub_resp(PubRespKind::PubComp, packet_id, version, &mut pending);
            }
            14 => {
                return Err(ClientError::Refused(
                    "DISCONNECT from the broker".to_owned(),
                ))
            }
            // PINGRESP, SUBACK, UNSUBACK: nothing to do.
            _ => {}
        }
    }
    Ok(received)
}

/// Writes what the reader queued, keep-alive pings, and DISCONNECT at the end.
async fn receiver_writer<W: AsyncWriteRent>(
    state: Rc<ThreadState>,
    slot: usize,
    mut write_half: W,
    outbox: Rc<Outbox>,
    version: ProtocolVersion,
) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut ping_round = state.control.ping_round();
    loop {
        let seen = state.control.generation();
        std::mem::swap(&mut *outbox.pending.borrow_mut(), &mut buf);
        if state.control.ping_round() != ping_round {
            ping_round = state.control.ping_round();
            buf.extend_from_slice(&[0xc0, 0x00]);
        }
        let done = state.control.phase() == Phase::Stopping || outbox.reader_closed.get();
        if done && !outbox.reader_closed.get() {
            encode_disconnect(version, &mut buf);
        }
        if !buf.is_empty() {
            if write_buffer(&mut write_half, &mut buf).await.is_err() {
                break;
            }
            outbox.drained.notify();
        }
        if done {
            break;
        }
        monoio::select! {
            _ = outbox.wake_writer.notified() => {}
            _ = state.control.changed(slot, seen) => {}
        }
    }
    outbox.drained.notify();
}

/// Paces a publisher: how many messages it may send now, and when to look again.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    rate: Option<f64>,
    started: Instant,
}

impl Pacer {
    /// A pacer for `rate` messages per second starting now (`None`: unlimited).
    pub fn new(rate: Option<f64>, started: Instant) -> Pacer {
        Pacer { rate, started }
    }

    /// Messages allowed at `now` given `sent` so far (the first is due at once).
    pub fn allowance(&self, sent: u64, now: Instant) -> u64 {
        match self.rate {
            None => u64::MAX,
            Some(rate) => {
                let due = (now.duration_since(self.started).as_secs_f64() * rate) as u64 + 1;
                due.saturating_sub(sent)
            }
        }
    }

    /// When the next message after `sent` is due, but not sooner than `tick_min` from `now`.
    pub fn next_wake(&self, sent: u64, now: Instant, tick_min: Duration) -> Instant {
        let earliest = now + tick_min;
        match self.rate {
            None => earliest,
            Some(rate) => {
                let due = self.started + Duration::from_secs_f64(sent as f64 / rate);
                due.max(earliest)
            }
        }
    }
}

/// Sleeps until the pacer's next wake-up or a control change.
async fn pace(
    state: &ThreadState,
    slot: usize,
    pacer: &Pacer,
    sent: u64,
    notify: Option<&LocalNotify>,
) {
    let seen = state.control.generation();
    let wake = pacer.next_wake(sent, Instant::now(), state.tick_min);
    let sleep = monoio::time::sleep_until(monoio::time::Instant::from_std(wake));
    match notify {
        Some(notify) => monoio::select! {
            _ = sleep => {}
            _ = notify.notified() => {}
            _ = state.control.changed(slot, seen) => {}
        },
        None => monoio::select! {
            _ = sleep => {}
            _ = state.control.changed(slot, seen) => {}
        },
    }
}

/// A publisher: connect, wait for `Publishing`, publish until `Draining` or `--count`.
async fn publisher_task(state: Rc<ThreadState>, publisher: usize, index: usize) {
    let slot = state.register();
    let client_id = state.client_id(Role::Publisher(publisher));
    let mut reader = ReadBuffer::with_capacity(4096);
    let mut buf = BytesMut::with_capacity(256);
    let Some(stream) = open(&state, slot, &client_id, index, &mut reader, &mut buf).await else {
        return;
    };
    state.global.connected.fetch_add(1, Ordering::Relaxed);
    state.set_socket(slot, Some(stream.as_raw_fd()));
    let plan = &state.plan;
    let topic = expand(&plan.topic, publisher, &client_id);
    let template = PublishTemplate::new(
        &topic,
        plan.qos,
        plan.retain,
        plan.run_id,
        publisher as u32,
        plan.payload_bytes,
        plan.client.version,
    );
    state.control.reach(slot, Phase::Publishing).await;
    if plan.qos == QoS::AtMostOnce {
        publish_unacked(&state, slot, &client_id, stream, &template).await;
    } else {
        publish_acked(&state, slot, &client_id, stream, reader, &template).await;
    }
    state.set_socket(slot, None);
}

fn batch_max(template: &PublishTemplate) -> u64 {
    (WRITE_BATCH_BYTES / template.encoded_len()).max(1) as u64
}

/// QoS 0: encode a batch, write it, repeat; TCP backpressure is the only flow control.
async fn publish_unacked(
    state: &ThreadState,
    slot: usize,
    client_id: &str,
    mut stream: TcpStream,
    template: &PublishTemplate,
) {
    let plan = &state.plan;
    let batch = batch_max(template);
    let mut buf = BytesMut::with_capacity(batch as usize * template.encoded_len());
    let pacer = Pacer::new(plan.rate_per_publisher, Instant::now());
    let mut sequence = 0u64;
    while state.control.phase() == Phase::Publishing {
        let remaining = plan.count.map_or(u64::MAX, |count| count - sequence);
        if remaining == 0 {
            state.global.publishers_done.fetch_add(1, Ordering::Relaxed);
            break;
        }
        let allowed = pacer
            .allowance(sequence, Instant::now())
            .min(batch)
            .min(remaining);
        if allowed == 0 {
            pace(state, slot, &pacer, sequence, None).await;
            continue;
        }
        let now_ns = state.global.now_ns();
        for _ in 0..allowed {
            template.append(&mut buf, 0, sequence, now_ns);
            sequence += 1;
        }
        if let Err(error) = write_buffer(&mut stream, &mut buf).await {
            if state.control.phase() < Phase::Stopping {
                state.error(client_id, format!("write: {error}"));
            }
            return;
        }
        state.global.sent.fetch_add(allowed, Ordering::Relaxed);
    }
    state.control.reach(slot, Phase::Stopping).await;
    encode_disconnect(plan.client.version, &mut buf);
    let _ = write_buffer(&mut stream, &mut buf).await;
}

/// In-flight bookkeeping shared by a QoS 1/2 publisher and its ack reader.
struct AckWindow {
    in_flight: Cell<usize>,
    /// PUBRECs received whose PUBREL is still to be written (at most the window).
    pubrel: RefCell<Vec<u16>>,
    /// Send time per packet id slot, for publish→ack latency.
    sent_ns: RefCell<Vec<u64>>,
    notify: LocalNotify,
    closed: Cell<bool>,
}

impl AckWindow {
    fn slot_of(&self, packet_id: u16) -> usize {
        usize::from(packet_id) & (self.sent_ns.borrow().len() - 1)
    }
}

/// QoS 1/2: a window of `--inflight` unacknowledged messages; an ack reader task frees it.
async fn publish_acked(
    state: &Rc<ThreadState>,
    slot: usize,
    client_id: &str,
    stream: TcpStream,
    reader: ReadBuffer,
    template: &PublishTemplate,
) {
    let plan = &state.plan;
    let version = plan.client.version;
    let window_max = usize::from(plan.inflight);
    let window = Rc::new(AckWindow {
        in_flight: Cell::new(0),
        pubrel: RefCell::new(Vec::with_capacity(window_max)),
        sent_ns: RefCell::new(vec![0; (window_max * 2).next_power_of_two()]),
        notify: LocalNotify::default(),
        closed: Cell::new(false),
    });
    let (read_half, mut write_half) = stream.into_split();
    let ack_reader = monoio::spawn(read_acks(
        Rc::clone(state),
        client_id.to_owned(),
        read_half,
        reader,
        Rc::clone(&window),
    ));
    let batch = batch_max(template);
    let mut buf = BytesMut::with_capacity(batch as usize * template.encoded_len() + 1024);
    let pacer = Pacer::new(plan.rate_per_publisher, Instant::now());
    let mut sequence = 0u64;
    let mut next_packet_id: u16 = 0;
    let mut done_counted = false;
    loop {
        if window.closed.get() {
            break;
        }
        let phase = state.control.phase();
        for packet_id in window.pubrel.borrow_mut().drain(..) {
            append_pub_resp(PubRespKind::PubRel, packet_id, version, &mut buf);
        }
        let remaining = plan.count.map_or(u64::MAX, |count| count - sequence);
        if remaining == 0 && !done_counted {
            done_counted = true;
            state.global.publishers_done.fetch_add(1, Ordering::Relaxed);
        }
        let publishing = phase == Phase::Publishing && remaining > 0;
        let mut added = 0u64;
        if publishing {
            let room = (window_max - window.in_flight.get()) as u64;
            let allowed = pacer
                .allowance(sequence, Instant::now())
                .min(batch)
                .min(remaining)
                .min(room);
            let now_ns = state.global.now_ns();
            let mut sent_ns = window.sent_ns.borrow_mut();
            let mask = sent_ns.len() - 1;
            for _ in 0..allowed {
                next_packet_id = next_packet_id.checked_add(1).unwrap_or(1);
                sent_ns[usize::from(next_packet_id) & mask] = now_ns;
                template.append(&mut buf, next_packet_id, sequence, now_ns);
                sequence += 1;
            }
            window
                .in_flight
                .set(window.in_flight.get() + allowed as usize);
            added = allowed;
        }
        if !buf.is_empty() {
            if let Err(error) = write_buffer(&mut write_half, &mut buf).await {
                if state.control.phase() < Phase::Stopping {
                    state.error(client_id, format!("write: {error}"));
                }
                break;
            }
            if added > 0 {
                state.global.sent.fetch_add(added, Ordering::Relaxed);
            }
            continue;
        }
        if phase == Phase::Stopping || (!publishing && window.in_flight.get() == 0) {
            break;
        }
        if publishing && window.in_flight.get() < window_max {
            pace(state, slot, &pacer, sequence, Some(&window.notify)).await;
        } else {
            let seen = state.control.generation();
            monoio::select! {
                _ = window.notify.notified() => {}
                _ = state.control.changed(slot, seen) => {}
            }
        }
    }
    if !window.closed.get() {
        state.control.reach(slot, Phase::Stopping).await;
        encode_disconnect(version, &mut buf);
        let _ = write_buffer(&mut write_half, &mut buf).await;
    }
    // Dropping the write half sends FIN; the broker closes and the ack reader sees EOF.
    drop(write_half);
    ack_reader.await;
}

/// Reads PUBACK / PUBREC / PUBCOMP for a QoS 1/2 publisher.
async fn read_acks<R: AsyncReadRent>(
    state: Rc<ThreadState>,
    client_id: String,
    mut read_half: R,
    mut reader: ReadBuffer,
    window: Rc<AckWindow>,
) {
    let qos = state.plan.qos;
    let record_latency = state.plan.latency == Some(LatencyKind::PublishAck);
    loop {
        match reader.fill(&mut read_half).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let now_ns = state.global.now_ns();
        let measure_from_ns = state.control.measure_from_ns();
        let mut completed = 0u64;
        let mut failure = None;
        loop {
            let frame = match reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    failure = Some(error.to_string());
                    break;
                }
            };
            let body = reader.bytes(frame.body.clone());
            let packet_id = match body {
                [high, low, ..] => u16::from_be_bytes([*high, *low]),
                _ => 0,
            };
            let completes = match (frame.first_byte >> 4, qos) {
                (4, QoS::AtLeastOnce) | (7, QoS::ExactlyOnce) => true,
                (5, QoS::ExactlyOnce) => {
                    window.pubrel.borrow_mut().push(packet_id);
                    false
                }
                (14, _) => {
                    failure = Some("DISCONNECT from the broker".to_owned());
                    break;
                }
                _ => false,
            };
            if completes {
                completed += 1;
                if record_latency {
                    let sent_ns = window.sent_ns.borrow()[window.slot_of(packet_id)];
                    let measured = sent_ns >= measure_from_ns;
                    state
                        .metrics
                        .borrow_mut()
                        .record(now_ns.saturating_sub(sent_ns), measured);
                }
            }
        }
        if completed > 0 {
            let in_flight = window.in_flight.get();
            window
                .in_flight
                .set(in_flight.saturating_sub(completed as usize));
            state.global.acked.fetch_add(completed, Ordering::Relaxed);
        }
        window.notify.notify();
        if let Some(message) = failure {
            if state.control.phase() < Phase::Stopping {
                state.error(&client_id, message);
            }
            break;
        }
    }
    if state.control.phase() < Phase::Stopping && !window.closed.get() {
        state.error(&client_id, "connection closed by the broker".to_owned());
    }
    window.closed.set(true);
    window.notify.notify();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spreads_messages_over_time() {
        let start = Instant::now();
        let pacer = Pacer::new(Some(1000.0), start);
        assert_eq!(pacer.allowance(0, start), 1);
        assert_eq!(pacer.allowance(1, start), 0);
        assert_eq!(pacer.allowance(1, start + Duration::from_millis(10)), 10);
        let wake = pacer.next_wake(5, start, Duration::from_micros(1));
        assert_eq!(wake, start + Duration::from_millis(5));
        let unlimited = Pacer::new(None, start);
        assert_eq!(unlimited.allowance(1 << 40, start), u64::MAX);
    }

    #[test]
    fn roles_cover_every_connection() {
        let plan = Plan {
            scenario: "test",
            client: ClientConfig {
                broker: "127.0.0.1:1".parse().unwrap(),
                version: ProtocolVersion::V311,
                username: None,
                password: None,
                clean: true,
                session_expiry: 0,
                keepalive: 0,
                source_addresses: Vec::new(),
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
