//! Shard threads: one OS thread per shard, pinned to a core, each running its own monoio runtime.
//!
//! Each shard runs a monoio `FusionDriver` runtime with timers: io_uring where the kernel
//! offers every operation monoio needs, epoll ("legacy") where io_uring is missing or blocked
//! (old kernels, seccomp in containers). Set `RINGMQ_DRIVER=legacy` (or `epoll`) to force the
//! epoll driver, e.g. to test the fallback; `RINGMQ_DRIVER=auto` or unset picks io_uring when
//! available.

use std::fmt;
use std::future::Future;
use std::sync::mpsc;
use std::thread::JoinHandle;

use monoio::time::TimeDriver;
use monoio::{FusionDriver, FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::error::IoError;

/// The largest io_uring ring the kernel accepts (IORING_MAX_ENTRIES); a larger ring fails to build.
pub const RING_ENTRIES_MAX: u32 = 32_768;

/// The environment variable that forces a driver: `legacy`/`epoll`, or `auto` (the default).
pub const DRIVER_ENV: &str = "RINGMQ_DRIVER";

/// How many shards to run and how to set up each one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardConfig {
    /// The number of shard threads (at least 1).
    pub shard_count: usize,
    /// Pin shard `i` to the `i % n`-th core this process may run on.
    pub pin_cores: bool,
    /// io_uring submission queue entries per shard, at most [`RING_ENTRIES_MAX`] (monoio raises values below 256 to 256); the epoll driver uses it as its event batch size.
    pub ring_entries: u32,
    /// Shard threads are named `{thread_name_prefix}-{shard_id}`.
    pub thread_name_prefix: String,
}

impl Default for ShardConfig {
    /// One shard per available core, pinned, 1024 ring entries, threads named `shard-N`.
    fn default() -> Self {
        Self {
            shard_count: std::thread::available_parallelism().map_or(1, |count| count.get()),
            pin_cores: true,
            ring_entries: 1024,
            thread_name_prefix: "shard".to_owned(),
        }
    }
}

/// What a shard thread receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardContext {
    /// This shard's index, `0..shard_count`.
    pub shard_id: usize,
    /// The number of shards.
    pub shard_count: usize,
    /// The IO driver this shard's runtime uses.
    pub driver: DriverKind,
    /// The CPU this shard's thread is pinned to, if pinning was asked for and succeeded.
    pub core: Option<usize>,
}

/// The IO driver a shard's runtime runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverKind {
    /// io_uring (completion based).
    IoUring,
    /// epoll through mio (readiness based), monoio's "legacy" driver.
    Legacy,
}

impl fmt::Display for DriverKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Legacy => "epoll",
        })
    }
}

/// Which driver the operator asked for through `RINGMQ_DRIVER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DriverChoice {
    /// io_uring when the kernel supports it, else epoll.
    Auto,
    /// epoll even when io_uring is available.
    Legacy,
}

impl DriverChoice {
    fn from_env() -> Result<Self, IoError> {
        match std::env::var(DRIVER_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(Self::Auto),
            Ok(value) => match value.to_ascii_lowercase().as_str() {
                "" | "auto" | "io_uring" | "iouring" | "uring" => Ok(Self::Auto),
                "legacy" | "epoll" => Ok(Self::Legacy),
                other => Err(IoError::Config(format!(
                    "{DRIVER_ENV}={other:?}: expected auto, io_uring or legacy"
                ))),
            },
            Err(error) => Err(IoError::Config(format!("{DRIVER_ENV}: {error}"))),
        }
    }
}

type ShardRuntime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

fn build_runtime(choice: DriverChoice, ring_entries: u32) -> std::io::Result<ShardRuntime> {
    let legacy = || {
        RuntimeBuilder::<LegacyDriver>::new()
            .with_entries(ring_entries)
            .enable_timer()
            .build()
            .map(ShardRuntime::from)
    };
    match choice {
        DriverChoice::Legacy => legacy(),
        DriverChoice::Auto => {
            let fusion = RuntimeBuilder::<FusionDriver>::new()
                .with_entries(ring_entries)
                .enable_timer()
                .build();
            match fusion {
                Ok(runtime) => Ok(runtime),
                // io_uring was detected but this ring could not be set up (typically
                // RLIMIT_MEMLOCK on older kernels with many entries): epoll still works.
                Err(error) => {
                    tracing::warn!(%error, "io_uring runtime failed to build; falling back to epoll");
                    legacy()
                }
            }
        }
    }
}

fn driver_kind(runtime: &ShardRuntime) -> DriverKind {
    match runtime {
        FusionRuntime::Uring(_) => DriverKind::IoUring,
        FusionRuntime::Legacy(_) => DriverKind::Legacy,
    }
}

/// The CPUs this thread may run on, from `/proc/thread-self/status` (respects taskset and cpusets).
pub fn allowed_cores() -> Vec<usize> {
    cores_in("/proc/thread-self/status")
}

/// Lets the calling thread run on every CPU the process may (those of its main thread): a
/// helper thread that a pinned shard spawns inherits the shard's one core. Best effort.
pub fn unpin_current_thread() {
    let _ = monoio::utils::bind_to_cpu_set(cores_in("/proc/self/status"));
}

fn cores_in(status_path: &str) -> Vec<usize> {
    let parsed = std::fs::read_to_string(status_path)
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                .and_then(|list| parse_cpu_list(list.trim()))
        });
    match parsed {
        Some(cores) if !cores.is_empty() => cores,
        _ => {
            let count = std::thread::available_parallelism().map_or(1, |count| count.get());
            (0..count).collect()
        }
    }
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cores = Vec::new();
    for part in list.split(',').filter(|part| !part.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (first.parse::<usize>().ok()?, last.parse::<usize>().ok()?);
                cores.extend(first..=last);
            }
            None => cores.push(part.parse().ok()?),
        }
    }
    Some(cores)
}

/// A startup report from a shard thread to `spawn_shards`.
type StartupReport = (usize, Result<DriverKind, String>);

/// Stops the kernel from backing this process's memory with transparent huge pages, whatever
/// the allocator advises (`prctl(PR_SET_THP_DISABLE)`, for every thread of the process). A
/// huge page is resident once any byte of it is touched, so a heap spread over many
/// half-used pages costs far more memory per idle connection.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and only sets a flag on this
    // process's memory map; no pointer is passed.
    let result = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether transparent huge pages are disabled for this process.
pub fn transparent_huge_pages_disabled() -> bool {
    // SAFETY: as above; PR_GET_THP_DISABLE only reads the flag.
    unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
}

/// Spawns one OS thread per shard, pins shard i to core i % available cores (if pin_cores), builds a monoio FusionDriver runtime with timers and `ring_entries`, logs the driver, and runs `main(ctx)` to completion on it.
///
/// Returns the join handles (a thread's result is `main`'s output) once every shard has built
/// its runtime; `main` runs on no shard unless all of them started, so a failed start leaves
/// no half-started broker behind. `main` is called on the shard thread, so its future need
/// not be `Send`. A failed pin is logged and the shard runs unpinned: pinning is a
/// performance matter, not a correctness one. Call it from the main thread: the cores to pin
/// to are the caller's allowed CPUs.
pub fn spawn_shards<F, Fut, T>(config: &ShardConfig, main: F) -> Result<Vec<JoinHandle<T>>, IoError>
where
    F: Fn(ShardContext) -> Fut + Send + Sync + 'static + Clone,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    if config.shard_count == 0 {
        return Err(IoError::Config("shard_count must be at least 1".to_owned()));
    }
    if config.ring_entries > RING_ENTRIES_MAX {
        // Checked here because io_uring would reject the ring and we would silently fall
        // back to epoll.
        return Err(IoError::Config(format!(
            "ring_entries {} exceeds the kernel maximum {RING_ENTRIES_MAX}",
            config.ring_entries
        )));
    }
    let choice = DriverChoice::from_env()?;
    let cores = allowed_cores();
    let (report_sender, report_receiver) = mpsc::channel::<StartupReport>();
    let mut handles = Vec::with_capacity(config.shard_count);
    let mut go_senders = Vec::with_capacity(config.shard_count);
    for shard_id in 0..config.shard_count {
        let (go_sender, go_receiver) = mpsc::sync_channel::<bool>(1);
        let core = config.pin_cores.then(|| cores[shard_id % cores.len()]);
        let start = ShardStart {
            shard_id,
            shard_count: config.shard_count,
            core,
            choice,
            ring_entries: config.ring_entries,
            report: report_sender.clone(),
            go: go_receiver,
        };
        let main = main.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-{}", config.thread_name_prefix, shard_id))
            .spawn(move || run_shard(start, main));
        match spawned {
            Ok(handle) => {
                handles.push(handle);
                go_senders.push(go_sender);
            }
            Err(source) => {
                abort_started(go_senders, handles);
                return Err(IoError::Spawn { shard_id, source });
            }
        }
    }
    drop(report_sender);

    let mut failures = Vec::new();
    for _ in 0..config.shard_count {
        match report_receiver.recv() {
            Ok((_, Ok(_))) => {}
            Ok((shard_id, Err(message))) => failures.push(format!("shard {shard_id}: {message}")),
            Err(_) => {
                failures.push("a shard thread died before reporting".to_owned());
                break;
            }
        }
    }
    if !failures.is_empty() {
        abort_started(go_senders, handles);
        return Err(IoError::Runtime(failures.join("; ")));
    }
    for go in go_senders {
        // A send fails only if the thread is gone, and then its handle reports the panic.
        let _ = go.send(true);
    }
    Ok(handles)
}

/// Everything a shard thread needs before its runtime exists.
struct ShardStart {
    shard_id: usize,
    shard_count: usize,
    core: Option<usize>,
    choice: DriverChoice,
    ring_entries: u32,
    report: mpsc::Sender<StartupReport>,
    go: mpsc::Receiver<bool>,
}

/// Tells started shard threads not to run `main` and waits for them to exit.
fn abort_started<T>(go_senders: Vec<mpsc::SyncSender<bool>>, handles: Vec<JoinHandle<T>>) {
    for go in go_senders {
        let _ = go.send(false);
    }
    for handle in handles {
        let _ = handle.join();
    }
}

/// Unwinds a shard thread that must not run `main`; `resume_unwind` skips the panic hook, so an
/// aborted start prints nothing beyond the error `spawn_shards` returns.
fn exit_without_running() -> ! {
    std::panic::resume_unwind(Box::new("ringmq-io: shard start aborted"))
}

fn run_shard<F, Fut, T>(start: ShardStart, main: F) -> T
where
    F: Fn(ShardContext) -> Fut,
    Fut: Future<Output = T>,
{
    // Pin before building the runtime so the ring's memory is allocated on the shard's node.
    let core = start.core.and_then(|core| {
        match monoio::utils::bind_to_cpu_set([core]) {
            Ok(()) => Some(core),
            Err(error) => {
                let error = std::io::Error::from(error);
                tracing::warn!(shard_id = start.shard_id, core, %error, "cannot pin shard; running unpinned");
                None
            }
        }
    });
    let mut runtime = match build_runtime(start.choice, start.ring_entries) {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = start.report.send((start.shard_id, Err(error.to_string())));
            exit_without_running();
        }
    };
    let driver = driver_kind(&runtime);
    let _ = start.report.send((start.shard_id, Ok(driver)));
    drop(start.report);
    if !start.go.recv().unwrap_or(false) {
        exit_without_running();
    }
    tracing::info!(shard_id = start.shard_id, %driver, ?core, "shard started");
    let context = ShardContext {
        shard_id: start.shard_id,
        shard_count: start.shard_count,
        driver,
        core,
    };
    runtime.block_on(main(context))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(parse_cpu_list("3"), Some(vec![3]));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn allowed_cores_is_never_empty() {
        assert!(!allowed_cores().is_empty());
    }

    #[test]
    fn driver_kind_displays_operator_names() {
        assert_eq!(DriverKind::IoUring.to_string(), "io_uring");
        assert_eq!(DriverKind::Legacy.to_string(), "epoll");
    }

    #[test]
    fn zero_shards_is_a_config_error() {
        let config = ShardConfig {
            shard_count: 0,
            ..ShardConfig::default()
        };
        let result = spawn_shards(&config, |context| async move { context.shard_id });
        assert!(matches!(result, Err(IoError::Config(_))));
    }

    #[test]
    fn oversized_ring_is_a_config_error() {
        let config = ShardConfig {
            shard_count: 1,
            ring_entries: RING_ENTRIES_MAX + 1,
            ..ShardConfig::default()
        };
        let result = spawn_shards(&config, |context| async move { context.shard_id });
        assert!(matches!(result, Err(IoError::Config(_))));
    }

    #[test]
    fn huge_pages_can_be_disabled_for_the_process() {
        disable_transparent_huge_pages().expect("prctl");
        assert!(transparent_huge_pages_disabled());
    }
}
