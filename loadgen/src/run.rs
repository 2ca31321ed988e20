//! The main thread of a client scenario: starts the loadgen threads, moves the run through
//! its phases, prints one progress line per second, and builds the report.

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringmq_io::{spawn_shards, ShardConfig};
use ringmq_proto::mqtt::QoS;

use crate::cli::ConnectionArgs;
use crate::control::{Global, Phase};
use crate::metrics::{new_histogram, percentile_curve, summarize, INTERVAL_QUEUE_MAX};
use crate::report::{micros, thousands, BrokerMemory, Report, TimelinePoint};
use crate::tracker::SequenceCounts;
use crate::worker::{run_thread, Delivery, Plan, ThreadResult, STOP_GRACE};

/// io_uring submission queue entries per loadgen thread.
const RING_ENTRIES: u32 = 4096;

/// Extra time allowed for connecting beyond what `--connect-rate` implies.
const CONNECT_SLACK: Duration = Duration::from_secs(30);

/// How long after `Stopping` the threads get before the report is written without them.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Timing of the publishing part of a run.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Seconds excluded from the results at the start.
    pub warmup: f64,
    /// Seconds measured.
    pub duration: f64,
    /// Seconds to wait for deliveries and acks after the last publish.
    pub drain: f64,
}

/// Output choices.
#[derive(Clone, Debug)]
pub struct Output {
    /// JSON on stdout instead of the table.
    pub json: bool,
    /// HTML report file.
    pub html: Option<std::path::PathBuf>,
    /// No progress lines.
    pub quiet: bool,
}

impl Output {
    /// The output flags of a client scenario.
    pub fn from_args(args: &ConnectionArgs) -> Output {
        Output {
            json: args.json,
            html: args.html.clone(),
            quiet: args.quiet,
        }
    }
}

/// Resolves `host:port` to the first address.
pub fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host}:{port} resolves to no address"))
}

/// Raises the open-file limit to the hard limit: every connection is a descriptor.
pub fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a pointer to a live rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Restricts this thread (and so the threads it spawns) to `cpus`; the IO layer pins its
/// threads to the CPUs the process may use.
pub fn restrict_cpus(cpus: &Option<String>) -> anyhow::Result<()> {
    if let Some(list) = cpus {
        let cpus = crate::cli::parse_cpu_list(list).map_err(|error| anyhow::anyhow!(error))?;
        monoio::utils::bind_to_cpu_set(cpus)
            .map_err(|error| anyhow::anyhow!("cannot pin to CPUs {list}: {error:?}"))?;
    }
    Ok(())
}

/// The RSS of process `pid` in bytes, from /proc.
pub fn process_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Counter values at one instant.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    at: Option<Instant>,
    sent: u64,
    received: u64,
    acked: u64,
}

impl Snapshot {
    fn take(global: &Global) -> Snapshot {
        Snapshot {
            at: Some(Instant::now()),
            sent: global.sent.load(Ordering::Relaxed),
            received: global.received.load(Ordering::Relaxed),
            acked: global.acked.load(Ordering::Relaxed),
        }
    }
}

/// Prints progress once a second and keeps the timeline.
struct Progress {
    quiet: bool,
    started: Instant,
    /// When publishing began; timeline times are relative to it.
    publishing_at: Option<Instant>,
    last: Snapshot,
    intervals: Receiver<Histogram<u64>>,
    timeline: Vec<TimelinePoint>,
}

impl Progress {
    fn tick(&mut self, global: &Global, expected_connections: usize) {
        let now = Snapshot::take(global);
        let seconds = match (now.at, self.last.at) {
            (Some(now_at), Some(last_at)) => now_at.duration_since(last_at).as_secs_f64().max(1e-3),
            _ => 1.0,
        };
        let mut second = new_histogram();
        while let Ok(histogram) = self.intervals.try_recv() {
            let _ = second.add(&histogram);
        }
        let p99_us = if second.is_empty() {
            0.0
        } else {
            second.value_at_quantile(0.99) as f64 / 1000.0
        };
        let connections = global.connected.load(Ordering::Relaxed);
        let origin = self.publishing_at.unwrap_or(self.started);
        let at = Instant::now();
        let t_s = if at >= origin {
            at.duration_since(origin).as_secs_f64()
        } else {
            -origin.duration_since(at).as_secs_f64()
        };
        let point = TimelinePoint {
            t_s: if self.publishing_at.is_some() {
                t_s
            } else {
                -1.0
            },
            sent_per_s: (now.sent - self.last.sent) as f64 / seconds,
            received_per_s: (now.received - self.last.received) as f64 / seconds,
            p99_us,
            connections,
        };
        if !self.quiet {
            let phase = match global.phase() {
                Phase::Connecting => "connect",
                Phase::Publishing => "run",
                Phase::Draining => "drain",
                Phase::Stopping => "stop",
            };
            eprintln!(
                "[{:>6.1}s {phase:>7}] sent {:>10}/s  recv {:>10}/s  acked {:>10}/s  p99 {:>9}  conns {}/{}  failed {}  errors {}",
                self.started.elapsed().as_secs_f64(),
                thousands(point.sent_per_s),
                thousands(point.received_per_s),
                thousands((now.acked - self.last.acked) as f64 / seconds),
                if second.is_empty() { "-".to_owned() } else { micros(p99_us) },
                connections,
                expected_connections,
                global.connect_failed.load(Ordering::Relaxed),
                global.errors.load(Ordering::Relaxed),
            );
        }
        if self.publishing_at.is_some() {
            self.timeline.push(point);
        }
        self.last = now;
    }

    /// Sleeps until `deadline` or the next whole second, printing progress at each second.
    fn wait_until(&mut self, global: &Global, deadline: Instant, expected_connections: usize) {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let next_tick = self.last.at.map_or(now, |at| at + Duration::from_secs(1));
            if next_tick <= now {
                self.tick(global, expected_connections);
                continue;
            }
            std::thread::sleep(next_tick.min(deadline) - now);
        }
    }
}

/// How a run ends after the publishing phase starts.
#[derive(Clone, Copy, Debug)]
pub enum Ending {
    /// Publish for the timing's warm-up + duration (or until `--count`), then drain.
    Publish(Timing),
    /// Hold the connections for this many seconds (`conn`, `sub`).
    Hold(f64),
}

/// Runs a client scenario and returns the process exit code.
pub fn run(
    plan: Plan,
    ending: Ending,
    output: &Output,
    broker_pid: Option<u32>,
    cpus: &Option<String>,
) -> anyhow::Result<i32> {
    restrict_cpus(cpus)?;
    raise_file_limit();
    let plan = Arc::new(plan);
    let global = Arc::new(Global::new());
    let (sender, receiver) = sync_channel(INTERVAL_QUEUE_MAX * plan.threads.max(1));
    let rss_before = broker_pid.and_then(process_rss);
    let config = ShardConfig {
        shard_count: plan.threads,
        pin_cores: true,
        ring_entries: RING_ENTRIES,
        thread_name_prefix: "loadgen".to_owned(),
    };
    let thread_plan = Arc::clone(&plan);
    let thread_global = Arc::clone(&global);
    let handles = spawn_shards(&config, move |context| {
        run_thread(
            context,
            Arc::clone(&thread_plan),
            Arc::clone(&thread_global),
            sender.clone(),
        )
    })?;

    let total = plan.connection_count();
    let mut progress = Progress {
        quiet: output.quiet,
        started: Instant::now(),
        publishing_at: None,
        last: Snapshot::take(&global),
        intervals: receiver,
        timeline: Vec::new(),
    };
    let connect_started = Instant::now();
    let connect_deadline = connect_started
        + Duration::from_secs_f64(total as f64 / f64::from(plan.connect_rate.max(1)))
        + CONNECT_SLACK;
    loop {
        let done = global.connected.load(Ordering::Relaxed)
            + global.connect_failed.load(Ordering::Relaxed);
        if done >= total as u64 || Instant::now() >= connect_deadline {
            break;
        }
        progress.wait_until(&global, Instant::now() + Duration::from_millis(5), total);
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    let connected = global.connected.load(Ordering::Relaxed);

    let mut broker_memory = None;
    if let (Some(pid), Some(before)) = (broker_pid, rss_before) {
        // Give the broker a moment to finish per-connection setup before sampling.
        progress.wait_until(&global, Instant::now() + Duration::from_secs(1), total);
        if let Some(after) = process_rss(pid) {
            broker_memory = Some(BrokerMemory {
                pid,
                rss_before_bytes: before,
                rss_after_bytes: after,
                bytes_per_connection: (after as f64 - before as f64) / connected.max(1) as f64,
            });
        }
    }

    let publishing_at = Instant::now();
    progress.publishing_at = Some(publishing_at);
    let mut window = (Snapshot::default(), Snapshot::default());
    match ending {
        Ending::Hold(seconds) => {
            global
                .measure_from_ns
                .store(global.now_ns(), Ordering::Release);
            global.set_phase(Phase::Publishing);
            window.0 = Snapshot::take(&global);
            progress.wait_until(
                &global,
                publishing_at + Duration::from_secs_f64(seconds),
                total,
            );
            window.1 = Snapshot::take(&global);
            // Idle memory is what the broker keeps once the connections have been idle for the
            // hold, not what the storm's set-up left behind a second after the last CONNACK
            // (a broker may give back per-connection state of quiet connections).
            if let (Some(memory), Some(pid)) = (broker_memory.as_mut(), broker_pid) {
                if let Some(after) = process_rss(pid) {
                    memory.rss_after_bytes = after;
                    memory.bytes_per_connection =
                        (after as f64 - memory.rss_before_bytes as f64) / connected.max(1) as f64;
                }
            }
        }
        Ending::Publish(timing) => {
            let warm_end = publishing_at + Duration::from_secs_f64(timing.warmup);
            let end = warm_end + Duration::from_secs_f64(timing.duration);
            global.measure_from_ns.store(
                global.now_ns() + (timing.warmup * 1e9) as u64,
                Ordering::Release,
            );
            global.set_phase(Phase::Publishing);
            progress.wait_until(&global, warm_end, total);
            window.0 = Snapshot::take(&global);
            while Instant::now() < end {
                progress.wait_until(&global, Instant::now() + Duration::from_millis(10), total);
                let done = global.publishers_done.load(Ordering::Relaxed);
                if plan.count.is_some() && done >= plan.publishers as u64 {
                    break;
                }
            }
            window.1 = Snapshot::take(&global);
            global.set_phase(Phase::Draining);
            let drain_end = Instant::now() + Duration::from_secs_f64(timing.drain);
            while Instant::now() < drain_end {
                let sent = global.sent.load(Ordering::Relaxed);
                let acked_all =
                    plan.qos == QoS::AtMostOnce || global.acked.load(Ordering::Relaxed) >= sent;
                let received_all = match expected_deliveries(&plan, sent) {
                    Some(expected) => global.received.load(Ordering::Relaxed) >= expected,
                    None => true,
                };
                if acked_all && received_all {
                    break;
                }
                progress.wait_until(&global, Instant::now() + Duration::from_millis(10), total);
            }
        }
    }
    global.set_phase(Phase::Stopping);
    let (results, stuck) = join_threads(handles);
    progress.tick(&global, total);

    let mut latency = new_histogram();
    let mut counts = SequenceCounts::default();
    let mut error_samples = Vec::new();
    for result in &results {
        let _ = latency.add(&result.latency);
        counts.add(&result.counts);
        error_samples.extend(result.error_samples.iter().cloned());
    }
    if stuck > 0 {
        error_samples.push(format!(
            "{stuck} loadgen thread(s) did not stop within {JOIN_TIMEOUT:?}: their figures are missing"
        ));
    }
    let measured_seconds = match (window.0.at, window.1.at) {
        (Some(from), Some(to)) => to.duration_since(from).as_secs_f64().max(1e-3),
        _ => 1e-3,
    };
    let sent_total = global.sent.load(Ordering::Relaxed);
    let received_total = global.received.load(Ordering::Relaxed);
    let expected = expected_deliveries(&plan, sent_total);
    let lost = match expected {
        Some(expected) => expected.saturating_sub(received_total.saturating_sub(counts.duplicates)),
        None => counts.gaps,
    };
    let errors = global.errors.load(Ordering::Relaxed) + stuck as u64;
    let connections_failed = global.connect_failed.load(Ordering::Relaxed)
        + (total as u64).saturating_sub(connected + global.connect_failed.load(Ordering::Relaxed));
    let delivery_qos = plan.qos.min(plan.sub_qos);
    let guaranteed = plan.subscribers > 0 && delivery_qos != QoS::AtMostOnce;
    let exit_code = if guaranteed
        && (lost > 0 || (delivery_qos == QoS::ExactlyOnce && counts.duplicates > 0))
    {
        2
    } else if errors > 0 || connections_failed > 0 {
        1
    } else {
        0
    };
    let report = Report {
        scenario: plan.scenario.to_owned(),
        broker: plan.client.broker.to_string(),
        transport: plan.client.transport.label().to_owned(),
        tls_session: global.tls_session(),
        tls_resumed: plan
            .client
            .transport
            .tls
            .is_some()
            .then(|| global.tls_resumed.load(Ordering::Relaxed)),
        mqtt_version: plan.client.version.level(),
        qos: plan.qos as u8,
        sub_qos: plan.sub_qos as u8,
        payload_bytes: plan.payload_bytes,
        publishers: plan.publishers,
        subscribers: plan.subscribers,
        idle_clients: plan.idle_clients,
        threads: plan.threads,
        connections_ok: connected,
        connections_failed,
        connect_seconds,
        connect_rate_per_s: total as f64 / connect_seconds.max(1e-3),
        measured_seconds,
        sent_per_s: (window.1.sent - window.0.sent) as f64 / measured_seconds,
        received_per_s: (window.1.received - window.0.received) as f64 / measured_seconds,
        acked_per_s: (window.1.acked - window.0.acked) as f64 / measured_seconds,
        sent_total,
        received_total,
        acked_total: global.acked.load(Ordering::Relaxed),
        latency_kind: plan.latency,
        latency: summarize(&latency),
        delivery: (plan.subscribers > 0).then_some(plan.delivery),
        expected,
        lost,
        duplicated: counts.duplicates,
        out_of_order: counts.out_of_order,
        errors,
        error_samples,
        broker_memory,
        timeline: progress.timeline,
        percentile_curve: percentile_curve(&latency),
        exit_code,
    };
    if output.json {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer(&mut stdout, &report)?;
        writeln!(stdout)?;
    } else {
        print!("{}", crate::report::table(&report));
    }
    if let Some(path) = &output.html {
        std::fs::write(path, crate::report::html(&report))?;
    }
    Ok(exit_code)
}

/// Deliveries the subscribers should see for `sent` publishes, when the scenario knows.
pub fn expected_deliveries(plan: &Plan, sent: u64) -> Option<u64> {
    match plan.delivery {
        Delivery::AllPublishers => Some(sent * plan.subscribers as u64),
        Delivery::OwnPair | Delivery::OneOfGroup => Some(sent),
        Delivery::Nobody => Some(0),
        Delivery::Unknown => None,
    }
}

/// Joins the threads, giving up on those still running after `JOIN_TIMEOUT`.
fn join_threads(handles: Vec<JoinHandle<ThreadResult>>) -> (Vec<ThreadResult>, usize) {
    let deadline = Instant::now() + JOIN_TIMEOUT + STOP_GRACE;
    let mut results = Vec::new();
    let mut pending = handles;
    while !pending.is_empty() && Instant::now() < deadline {
        let (finished, running): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|handle| handle.is_finished());
        for handle in finished {
            match handle.join() {
                Ok(result) => results.push(result),
                Err(_) => eprintln!("ringmq-loadgen: a loadgen thread panicked"),
            }
        }
        pending = running;
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    (results, pending.len())
}
