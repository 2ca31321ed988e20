//! The durable logs on disk: recovery at start, one log per shard written by its own task.
//!
//! Layout under `data_dir/journal/`: one directory per *generation* (`gen-00000007/`), holding
//! `shard-N.log` for each shard and, once every shard's opening snapshot is synced, a
//! `COMPLETE` marker. A start reads the newest complete generation (every shard's log, so a
//! change of `--shards` re-homes the state), and each shard writes the part it restored as
//! the first records of its log in the next generation; the older generations are removed
//! once the new one is complete. When the shard count did not change, each shard's log is
//! already in place: it is hard-linked into the next generation and carried on (no rewrite;
//! compaction bounds it as it grows). A start that dies halfway leaves an incomplete
//! generation, which the next start ignores and removes.
//!
//! While the broker runs, a shard's journal task takes the core's records every sync
//! interval (after a checkpoint of its changed sessions), appends them through the shard's
//! io_uring and syncs; it rewrites the log as a snapshot when it grows past its bound, and
//! writes and syncs once more at shutdown.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringmq_core::durable::{frame, Clock, Record, Recovered, Replay};
use ringmq_core::retained::RetainedReplica;
use ringmq_io::monoio;

use super::local_notify::{LocalNotify, LocalStop};
use super::mailbox::ShardHandle;
use super::shard::Shard;
use crate::config::{Durability, DurabilityMode};

/// The marker of a generation whose every log holds its opening snapshot.
const COMPLETE: &str = "COMPLETE";

/// Why the logs could not be read or written at start.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file or directory could not be read, written or created.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A log is damaged before its end.
    #[error(
        "{path} is damaged at byte {offset} ({why}); nothing after it was read. Restore the \
         data directory from a backup, or start with --repair to drop what follows the damage"
    )]
    Damaged {
        /// The log.
        path: String,
        /// Where its first bad record starts.
        offset: usize,
        /// What is wrong.
        why: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What a start recovered, and where this run's logs go.
#[derive(Debug)]
pub struct Startup {
    /// The state to restore, until every shard took its part.
    pub recovered: std::sync::Mutex<Option<Arc<Recovered>>>,
    /// This run's generation directory.
    pub dir: PathBuf,
    /// Generations to remove once this one is complete.
    pub old: Vec<PathBuf>,
    /// Waits for every shard's opening snapshot.
    pub barrier: std::sync::Barrier,
    /// Set by a shard that could not write its log (the generation is not sealed).
    pub failed: std::sync::atomic::AtomicBool,
    /// When the last run had as many shards, each shard's log and the length of it to keep
    /// (cut at a torn tail, or at damage under `--repair`): each shard's records are already
    /// homed where this run homes them, so the log carries on under the new generation
    /// (hard-linked) instead of being rewritten as a snapshot.
    pub reuse: Option<Vec<KeptLog>>,
    /// Logs are opened write-through (`O_DSYNC`, `sync` durability): see [`write_through`].
    pub write_through: bool,
}

/// Reads the newest complete generation under `data_dir/journal` and prepares the next one.
pub fn recover(
    data_dir: &Path,
    durability: &Durability,
    shards: usize,
    clock: Clock,
) -> Result<Startup, JournalError> {
    let started = Instant::now();
    let root = data_dir.join("journal");
    std::fs::create_dir_all(&root).map_err(io_error(&root))?;
    let mut generations: Vec<(u64, PathBuf, bool)> = Vec::new();
    for entry in std::fs::read_dir(&root).map_err(io_error(&root))? {
        let entry = entry.map_err(io_error(&root))?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix("gen-"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let complete = path.join(COMPLETE).exists();
        generations.push((number, path, complete));
    }
    generations.sort_by_key(|(number, _, _)| *number);
    let newest = generations
        .iter()
        .rev()
        .find(|(_, _, complete)| *complete)
        .map(|(number, path, _)| (*number, path.clone()));
    let mut replay = Replay::default();
    let mut logs = Vec::new();
    let mut replica = None;
    if let Some((_, dir)) = &newest {
        (replay, logs, replica) =
            match read_generation(dir, durability.repair, clock, true, shards == 1)? {
                Some(read) => read,
                // Under --repair a record that failed to decode (its frame whole) is damage:
                // read again on one thread, so that nothing after it is applied.
                None => read_generation(dir, durability.repair, clock, false, false)?
                    .unwrap_or_default(),
            };
    }
    let expected: Vec<PathBuf> = newest.as_ref().map_or_else(Vec::new, |(_, dir)| {
        (0..shards).map(|id| log_path(dir, id)).collect()
    });
    let reuse =
        (!logs.is_empty() && logs.iter().map(|(path, _)| path).eq(expected.iter())).then_some(logs);
    let records = replay.records;
    let mut recovered = replay.finish();
    recovered.replica = std::sync::Mutex::new(replica);
    let next = generations.last().map_or(1, |(number, _, _)| number + 1);
    let dir = root.join(format!("gen-{next:08}"));
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let old = generations
        .into_iter()
        .map(|(_, path, _)| path)
        .filter(|path| *path != dir)
        .collect();
    let retained = recovered.retained.len()
        + recovered
            .replica
            .lock()
            .ok()
            .and_then(|held| held.as_ref().map(|r| r.len()))
            .unwrap_or(0);
    tracing::info!(
        records,
        sessions = recovered.sessions.len(),
        retained,
        from = ?newest.as_ref().map(|(_, dir)| dir.display().to_string()),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "durable state read"
    );
    Ok(Startup {
        recovered: std::sync::Mutex::new(Some(Arc::new(recovered))),
        dir,
        old,
        barrier: std::sync::Barrier::new(shards),
        failed: std::sync::atomic::AtomicBool::new(false),
        reuse,
        write_through: durability.mode == DurabilityMode::Sync,
    })
}

/// The open flags of a log: with `write_through` (`sync` durability) every write returns once
/// its data is on disk (`O_DSYNC`), so a group commit is one io_uring operation instead of a
/// write and an `fdatasync`. Measured on this project's 2-core host (`fanin --pubs 10 --subs 1
/// -q 1 --inflight 64 --persistent`, one shard): each io_uring operation the shard waits for
/// costs ~130 µs before its completion is reaped, so a write then a sync took ~550 µs per
/// commit and the write-through write ~130 µs; 520–530k msg/s became 660–730k.
fn write_through(write_through: bool) -> i32 {
    if write_through {
        libc::O_DSYNC
    } else {
        0
    }
}

/// A log of the last generation and the length of it that holds whole records.
type KeptLog = (PathBuf, u64);

/// What reading a generation gives: the replay, its logs, and the one shard's replica.
type Read = (Replay, Vec<KeptLog>, Option<RetainedReplica>);

/// Replays every shard log of `dir`, in shard order; returns the replay and each log with the
/// length of it that holds whole records (what a reused log is cut to). With `parallel`, the
/// retained records are decoded on a second thread (the larger half of a big log); then
/// `None` when `repair` must drop what follows a record that did not decode, which the
/// other thread may have applied: the caller reads again without `parallel`. With `direct`
/// too (one shard), that thread fills the shard's retained replica itself, returned third.
fn read_generation(
    dir: &Path,
    repair: bool,
    clock: Clock,
    parallel: bool,
    direct: bool,
) -> Result<Option<Read>, JournalError> {
    let mut logs: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .map(|path| (shard_of_log(&path).unwrap_or(usize::MAX), path))
        .collect();
    logs.sort();
    let mut replay = Replay::default();
    let mut retained = Replay::default();
    let mut replica = (parallel && direct).then(RetainedReplica::unbounded);
    let now = Instant::now();
    let mut kept = Vec::with_capacity(logs.len());
    for (_, path) in logs {
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        let name = path.display().to_string();
        let scanned = if parallel {
            let (others, retained_part) = std::thread::scope(|scope| {
                let side = scope.spawn(|| {
                    frame::scan(&bytes, |_, payload| {
                        if !Record::is_retained(payload) {
                            return Ok(());
                        }
                        Record::decode(payload, &clock).map(|record| match (&mut replica, record) {
                            (Some(replica), Record::Retained { topic, message }) => {
                                retained.records += 1;
                                replica.apply_record(&topic, message, now);
                            }
                            (_, record) => retained.apply(record),
                        })
                    })
                });
                let others = frame::scan(&bytes, |_, payload| {
                    if Record::is_retained(payload) {
                        return Ok(());
                    }
                    Record::decode(payload, &clock).map(|record| replay.apply(record))
                });
                let retained_part = side
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (others, retained_part)
            });
            match (others, retained_part) {
                (Ok(end), Ok(_)) => Ok(end),
                (Err(failed), _) | (_, Err(failed)) if !repair => Err(failed),
                _ => return Ok(None),
            }
        } else {
            frame::scan(&bytes, |_, payload| {
                Record::decode(payload, &clock).map(|record| replay.apply(record))
            })
        };
        let mut keep = bytes.len();
        let damage = match scanned {
            Ok(frame::End::Clean) => None,
            Ok(frame::End::TornTail { len }) => {
                keep = len;
                tracing::warn!(
                    log = %name,
                    kept = len,
                    cut = bytes.len() - len,
                    "the last record was cut short (a crash while writing); ignored"
                );
                None
            }
            Ok(frame::End::Damaged { offset }) => Some((offset, "checksum mismatch".to_owned())),
            Err((offset, error)) => Some((offset, error.to_string())),
        };
        if let Some((offset, why)) = damage {
            keep = offset;
            if !repair {
                return Err(JournalError::Damaged {
                    path: name,
                    offset,
                    why,
                });
            }
            tracing::error!(
                log = %name,
                offset,
                %why,
                dropped = bytes.len() - offset,
                "--repair: the log is damaged; what follows the damage is dropped"
            );
        }
        kept.push((path, keep as u64));
    }
    let replay = if parallel {
        replay.with_retained_of(retained)
    } else {
        replay
    };
    Ok(Some((replay, kept, replica)))
}

/// Shard `id`'s log in generation `dir`.
fn log_path(dir: &Path, id: usize) -> PathBuf {
    dir.join(format!("shard-{id}.log"))
}

/// The shard number of a log named `shard-N.log` (see [`log_path`]).
fn shard_of_log(path: &Path) -> Option<usize> {
    path.file_stem()?
        .to_str()?
        .strip_prefix("shard-")?
        .parse()
        .ok()
}

/// Carries shard `id`'s log of the last run on as its log in this run's generation: linked
/// under the new name (the old generation's removal then only drops the old name), cut to
/// its whole records and synced. Nothing is appended before the generation is sealed, so a
/// start that dies before that leaves the last generation as it was, but for the cut.
pub fn reuse_log(
    dir: &Path,
    id: usize,
    old: &Path,
    keep: u64,
    dsync: bool,
) -> Result<(std::fs::File, u64), JournalError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = log_path(dir, id);
    std::fs::hard_link(old, &path).map_err(io_error(&path))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(write_through(dsync))
        .open(&path)
        .map_err(io_error(&path))?;
    let len = file.metadata().map_err(io_error(&path))?.len();
    if len > keep {
        file.set_len(keep).map_err(io_error(&path))?;
        file.sync_all().map_err(io_error(&path))?;
    }
    Ok((file, keep))
}

/// Writes shard `id`'s opening snapshot into this run's generation and syncs it; returns the
/// log, open for appending, and its length.
pub fn open_log(
    dir: &Path,
    id: usize,
    snapshot: &[u8],
    dsync: bool,
) -> Result<(std::fs::File, u64), JournalError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = log_path(dir, id);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .custom_flags(write_through(dsync))
        .open(&path)
        .map_err(io_error(&path))?;
    file.write_all(snapshot).map_err(io_error(&path))?;
    file.sync_all().map_err(io_error(&path))?;
    Ok((file, snapshot.len() as u64))
}

/// Marks this run's generation complete and removes the older ones (the leader of the start
/// barrier calls it, once every shard's snapshot is synced).
pub fn seal(startup: &Startup) -> Result<(), JournalError> {
    let marker = startup.dir.join(COMPLETE);
    std::fs::write(&marker, b"").map_err(io_error(&marker))?;
    sync_dir(&startup.dir)?;
    for old in &startup.old {
        if let Err(error) = std::fs::remove_dir_all(old) {
            tracing::warn!(dir = %old.display(), %error, "could not remove an old journal generation");
        }
    }
    if let Some(root) = startup.dir.parent() {
        sync_dir(root)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Restores this shard's part of the recovered state, writes it as the first records of its
/// log in this run's generation, and waits for every shard to have done so (the last one
/// marks the generation complete). Returns the open log, its path and its length.
pub fn open(
    state: &mut Shard,
    startup: &Startup,
    id: usize,
) -> Result<((std::fs::File, std::path::PathBuf), u64), JournalError> {
    let now = Instant::now();
    let recovered = startup
        .recovered
        .lock()
        .ok()
        .and_then(|held| held.as_ref().map(Arc::clone));
    let reuse = startup.reuse.as_ref().and_then(|logs| logs.get(id));
    if reuse.is_some() {
        // On before the restore: what the restore changes (sessions that expired while the
        // broker was down, the wills it publishes) goes into the log after its old records.
        state.enable_journal();
    }
    if let Some(recovered) = &recovered {
        let restored = restore(state, recovered, now);
        tracing::info!(
            shard = id,
            sessions = restored,
            elapsed_ms = now.elapsed().as_millis() as u64,
            "state restored"
        );
    }
    let opened = match reuse {
        Some((old, keep)) => reuse_log(&startup.dir, id, old, *keep, startup.write_through),
        None => {
            state.enable_journal();
            let started = Instant::now();
            let mut snapshot = Vec::new();
            state.log_snapshot(now, &mut snapshot);
            let encoded_ms = started.elapsed().as_millis() as u64;
            let opened = open_log(&startup.dir, id, &snapshot, startup.write_through);
            tracing::info!(
                shard = id,
                bytes = snapshot.len(),
                encoded_ms,
                written_ms = started.elapsed().as_millis() as u64 - encoded_ms,
                "opening snapshot written"
            );
            opened
        }
    };
    // Every shard passes the barrier, also one that failed (the others would wait forever);
    // the generation is sealed only if every log is in place. The last holder of the
    // recovered copy frees it; a million records take a while, so not on a shard thread.
    free_elsewhere(recovered);
    let failed = opened.is_err();
    if failed {
        startup.failed.store(true, Ordering::SeqCst);
    }
    if startup.barrier.wait().is_leader() {
        // Every shard took its part: the recovered copy is freed.
        if let Ok(mut held) = startup.recovered.lock() {
            free_elsewhere(held.take());
        }
        if !startup.failed.load(Ordering::SeqCst) {
            if let Err(error) = seal(startup) {
                startup.failed.store(true, Ordering::SeqCst);
                tracing::error!(%error, "cannot complete the journal generation");
            }
        }
    }
    startup.barrier.wait();
    let (file, len) = opened?;
    if startup.failed.load(Ordering::SeqCst) {
        return Err(JournalError::Io {
            path: startup.dir.display().to_string(),
            source: std::io::Error::other("another shard could not write its log"),
        });
    }
    Ok(((file, log_path(&startup.dir, id)), len))
}

/// Restores the shard's part of `recovered`: its retained replica on a helper thread (on any
/// core: the shard's may be pinned) while this one restores the sessions and subscriptions,
/// since the two touch nothing in common and a start is otherwise one core's work.
fn restore(state: &mut Shard, recovered: &Recovered, now: Instant) -> usize {
    let prebuilt = recovered
        .replica
        .lock()
        .ok()
        .and_then(|mut held| held.take());
    if let Some(mut replica) = prebuilt {
        // One shard: its replica was filled while the log was read.
        replica.bound_as(&state.take_retained());
        let sessions = state.restore_sessions(recovered, now);
        return state.finish_restore(replica, sessions, now);
    }
    let mut retained = state.take_retained();
    let filled = std::thread::scope(|scope| {
        let filler = std::thread::Builder::new()
            .name("ringmq-restore".into())
            .spawn_scoped(scope, move || {
                ringmq_io::unpin_current_thread();
                retained.restore(recovered, now);
                retained
            });
        let sessions = state.restore_sessions(recovered, now);
        let retained = match filler {
            Ok(filler) => filler.join().ok(),
            Err(error) => {
                tracing::warn!(%error, "cannot start a restore thread; restoring on the shard's");
                None
            }
        };
        (retained, sessions)
    });
    let (retained, sessions) = filled;
    let retained = retained.unwrap_or_else(|| {
        // The thread did not run (or panicked, its replica lost): fill one here.
        let mut retained = state.take_retained();
        retained.restore(recovered, now);
        retained
    });
    state.finish_restore(retained, sessions, now)
}

/// Drops a handle on the recovered state on a thread of its own: the last one frees a
/// million records, which takes a while that no shard should wait for.
fn free_elsewhere(recovered: Option<Arc<Recovered>>) {
    let Some(recovered) = recovered else {
        return;
    };
    if let Err(error) = std::thread::Builder::new()
        .name("ringmq-free".into())
        .spawn(move || drop(recovered))
    {
        tracing::debug!(%error, "freeing the recovered state on the shard's thread");
    }
}

/// The journal task's settings.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    /// Checkpoint and sync every this long.
    pub interval: Duration,
    /// Rewrite the log as a snapshot past this length (and four times the last snapshot).
    pub compact_bytes: u64,
    /// The most the log may take (`durability.max_log_bytes`): a batch that would pass it
    /// makes a compaction first, and a live state past it is refused as a full disk is.
    pub max_bytes: u64,
    /// The log's path (compaction writes next to it and renames over it).
    pub path: PathBuf,
    /// The log is written through (`O_DSYNC`): a write needs no sync after it.
    pub write_through: bool,
}

/// Appends the core's records to the shard's log every interval (and at once when an
/// acknowledgement waits for it: `sync` durability's group commit), syncs, reports the batch
/// synced, compacts, and writes once more when `stop` fires (after the shutdown's last
/// checkpoint).
pub async fn journal_loop(
    handle: Rc<ShardHandle>,
    file: std::fs::File,
    mut len: u64,
    settings: JournalSettings,
    stop: Rc<LocalStop>,
) {
    let mut file = match monoio::fs::File::from_std(file) {
        Ok(file) => file,
        Err(error) => {
            tracing::error!(%error, log = %settings.path.display(), "cannot use the log; durability is off for this shard");
            return;
        }
    };
    let facts = Rc::clone(handle.facts());
    let mut compacted = len;
    let mut buf: Vec<u8> = Vec::new();
    let mut batch = 0;
    // The log could not be written (disk full): the shard refuses what would need it, and the
    // records already taken are tried again (no new ones are taken, so memory stays bounded:
    // sessions stay marked dirty in the core, and it takes no new retained messages).
    let mut failing = false;
    // The live state needs more than `max_bytes` even compacted: the shard refuses what would
    // need storing, as for a full disk, and compacts again every `OVER_RETRY` to see whether
    // consumers made room (down to `resume_at`, so it does not flap at the edge).
    let mut over = false;
    let mut over_checked = Instant::now();
    let resume_at = settings.max_bytes - settings.max_bytes / 8;
    // What the shard was last told (`set_storage_full`): failing or over.
    let mut refusing = false;
    // Bytes written since the last sync: a round with nothing new reports its batch synced
    // without asking the disk (a commit that only needed the other shards' logs).
    let mut unsynced = false;
    // A compaction writing the snapshot beside this loop's writes.
    let mut background: Option<Background> = None;
    loop {
        let pause = if failing {
            settings.interval.min(FULL_RETRY)
        } else {
            settings.interval
        };
        // Ready for a batch: the shard hands one over at the end of a round that wants a
        // commit (`Shard::flush`), with no turn of the mailbox between the two.
        if buf.is_empty() {
            facts.journal_spare.set(std::mem::take(&mut buf));
        }
        facts.journal_ready.set(!failing && !over);
        let stopping = monoio::select! {
            _ = monoio::time::sleep(pause) => false,
            _ = facts.commit_wanted.notified() => false,
            _ = stop.wait() => true,
            _ = written(&background) => false,
        };
        facts.journal_ready.set(false);
        if background.as_ref().is_some_and(Background::is_done) {
            if let Some(done) = background.take() {
                settle(done, &settings, &mut file, &mut len, &mut compacted).await;
            }
        }
        if over && !failing && over_checked.elapsed() >= OVER_RETRY {
            over_checked = Instant::now();
            match compact(&handle, &settings, len, Vec::new()).await {
                Some(Ok((new_file, new_len))) => {
                    file = new_file;
                    len = new_len;
                    compacted = new_len;
                    if len <= resume_at {
                        over = false;
                        tracing::warn!(log = %settings.path.display(), len, "the log is under max_log_bytes again; storing and acknowledging resume");
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, log = %settings.path.display(), "compaction failed")
                }
                None => return,
            }
        }
        let handed = facts.journal_batch.take();
        let fresh = handed.is_none() || stopping;
        if let Some((mut taken, taken_batch)) = handed {
            if buf.is_empty() {
                buf = taken;
            } else {
                buf.append(&mut taken);
            }
            batch = taken_batch;
        }
        // At a stop, what the shutdown's last checkpoint recorded goes after what was taken.
        if fresh && !failing && !over {
            let Some((taken, taken_batch)) = take(&handle, std::mem::take(&mut buf)).await else {
                return;
            };
            buf = taken;
            batch = taken_batch;
        }
        if !failing && !buf.is_empty() && len + buf.len() as u64 > settings.max_bytes {
            if let Some(running) = background.take() {
                settle(running, &settings, &mut file, &mut len, &mut compacted).await;
            }
        }
        if !failing && !buf.is_empty() && len + buf.len() as u64 > settings.max_bytes {
            // The batch would pass the bound: rewrite the log as the live state first, with
            // the batch after it.
            let fits = match compact(&handle, &settings, len, buf.clone()).await {
                Some(Ok((new_file, new_len))) => {
                    tracing::info!(log = %settings.path.display(), before = len, after = new_len, "log compacted at max_log_bytes");
                    file = new_file;
                    len = new_len;
                    compacted = new_len;
                    buf.clear();
                    unsynced = false;
                    len <= resume_at
                }
                Some(Err(error)) => {
                    // The batch is written all the same (one batch past the bound), and the
                    // shard refuses more until a compaction makes room.
                    tracing::warn!(%error, log = %settings.path.display(), "compaction at max_log_bytes failed");
                    false
                }
                None => return,
            };
            if !fits && !over {
                over = true;
                over_checked = Instant::now();
                tracing::error!(log = %settings.path.display(), len, max_log_bytes = settings.max_bytes, "the live state needs more than max_log_bytes; QoS 1/2 publishes and retained messages are refused until consumers make room");
            }
        }
        if !buf.is_empty() {
            let (result, back) = file.write_all_at(std::mem::take(&mut buf), len).await;
            buf = back;
            match result {
                Ok(()) => {
                    len += buf.len() as u64;
                    if let Some(running) = background.as_mut() {
                        running.carry.extend_from_slice(&buf);
                    }
                    buf.clear();
                    unsynced = !settings.write_through;
                    if failing {
                        failing = false;
                        tracing::warn!(log = %settings.path.display(), "the log is written again; storing and acknowledging resume");
                    }
                }
                Err(error) => {
                    if !failing {
                        failing = true;
                        tracing::error!(%error, log = %settings.path.display(), bytes = buf.len(), "cannot append to the log; QoS 1/2 publishes are refused until it can be written (retrying)");
                    }
                }
            }
        }
        if refusing != (failing || over) {
            refusing = failing || over;
            if handle
                .call(move |s| s.set_storage_full(refusing))
                .await
                .is_none()
            {
                return;
            }
        }
        let mut synced = !failing;
        if unsynced {
            match file.sync_data().await {
                Ok(()) => unsynced = false,
                Err(error) => {
                    synced = false;
                    tracing::error!(%error, log = %settings.path.display(), "cannot sync the log");
                }
            }
        }
        if synced {
            // Posted, not awaited: the next batch may be taken at once (jobs run in order).
            handle.post(move |s| s.synced(batch));
            // Commits asked for while this batch was written are handed over by the round
            // that runs `synced` (its flush sees them wanted): waking now for them would
            // take the batch through the mailbox instead, a turn later.
            facts.commit_wanted.take();
        }
        if stopping {
            if failing {
                tracing::error!(log = %settings.path.display(), bytes = buf.len(), "stopping with records the full disk did not take");
            }
            return;
        }
        if background
            .as_ref()
            .is_some_and(|running| running.carry.len() > CARRY_MAX)
        {
            // Writes outran the compaction: they wait for it, so what it holds stays bounded.
            if let Some(running) = background.take() {
                settle(running, &settings, &mut file, &mut len, &mut compacted).await;
            }
        }
        if background.is_none()
            && !failing
            && !over
            && len > settings.compact_bytes.max(compacted.saturating_mul(4))
        {
            // Written beside this loop: commits go on to the old log meanwhile.
            let Some(started) = Background::start(&handle, &settings, len).await else {
                return;
            };
            background = Some(started);
        }
    }
}

/// Resolves once `background`'s snapshot is written (never without one).
async fn written(background: &Option<Background>) {
    match background {
        Some(running) => running.ready.notified().await,
        None => std::future::pending().await,
    }
}

/// Ends a background compaction: waits for its snapshot and installs it as the log, or,
/// failed, keeps the log as it is (growing until the next compaction at four times its size).
async fn settle(
    background: Background,
    settings: &JournalSettings,
    file: &mut monoio::fs::File,
    len: &mut u64,
    compacted: &mut u64,
) {
    let before = *len;
    let carried = background.carry.len();
    match background.finish(settings).await {
        Ok((new_file, new_len)) => {
            tracing::info!(log = %settings.path.display(), before, after = new_len, carried, "log compacted");
            *file = new_file;
            *len = new_len;
            *compacted = new_len;
        }
        Err(error) => {
            tracing::warn!(%error, log = %settings.path.display(), "compaction failed; the log keeps growing");
            *compacted = *len;
        }
    }
}

/// Takes the records the shard made since the last take (checkpointing its changed sessions
/// first) into `buf`, with the batch's number; `None` once the shard is gone.
async fn take(handle: &Rc<ShardHandle>, buf: Vec<u8>) -> Option<(Vec<u8>, u64)> {
    handle
        .call(move |s| {
            let mut taken = buf;
            s.checkpoint(Instant::now());
            let batch = s.take_records(&mut taken);
            (taken, batch)
        })
        .await
}

/// How often a log that could not be written is tried again (at most; the interval if shorter).
const FULL_RETRY: Duration = Duration::from_millis(100);

/// How often a shard whose live state needs more than `max_log_bytes` compacts to see whether
/// it fits again (a compaction rewrites the whole state: not at every interval).
const OVER_RETRY: Duration = Duration::from_secs(2);

/// Session slots a compaction encodes per job of the shard: bounded work in one round. 1024
/// took 11 ms with 100k sessions of 10 subscriptions each (`log snapshot written`'s
/// `longest_step_us`); 256 keep a step near 3 ms.
const SNAPSHOT_SLOTS_PER_JOB: u32 = 256;

/// What a running compaction's writes may hold of the records written to the old log
/// meanwhile (they go after the snapshot in the new log); past it, writes wait for the
/// compaction to end, as they did before compactions ran beside them.
const CARRY_MAX: usize = 64 << 20;

/// A snapshot's first step, taken in one job: the idempotency answers encoded, and the length
/// of the log whose retained records the snapshot keeps.
struct SnapshotStart {
    out: Vec<u8>,
    /// The log's length when the step ran: every retained record made before it is in the
    /// log's first `log_len` bytes or in what the journal writes after them (the carry).
    log_len: u64,
    /// How long the first step held the shard.
    took: Duration,
}

/// Begins a snapshot of the shard's live state, the log being `log_len` bytes long. Every
/// record the shard makes after this job must go into the new log after the snapshot (the
/// journal loop keeps them: `carry`).
async fn start_snapshot(handle: &Rc<ShardHandle>, log_len: u64) -> Option<SnapshotStart> {
    handle
        .call(move |s| {
            let began = Instant::now();
            let mut out = Vec::new();
            s.snapshot_start(began, &mut out);
            SnapshotStart {
                out,
                log_len,
                took: began.elapsed(),
            }
        })
        .await
}

/// Writes the snapshot begun by `start` next to the log (`.log.compact`) and syncs it, not
/// renamed yet. The retained messages come from the log itself, read on a thread of its own
/// (the last record of each topic: `retained_of_log`), while the shard encodes its sessions
/// in jobs of at most [`SNAPSHOT_SLOTS_PER_JOB`] slots: no round of the shard holds more
/// than that much of a compaction, however many retained messages it keeps.
async fn write_snapshot(
    handle: &Rc<ShardHandle>,
    settings: &JournalSettings,
    start: SnapshotStart,
) -> Option<Result<(monoio::fs::File, u64), std::io::Error>> {
    let SnapshotStart {
        mut out,
        log_len,
        took,
    } = start;
    let (mut steps, mut longest) = (1, took);
    let done = Arc::new(ringmq_io::CrossNotify::new());
    let encoded: Arc<std::sync::Mutex<Option<RetainedPart>>> = Arc::default();
    let (signal, into) = (Arc::clone(&done), Arc::clone(&encoded));
    let path = settings.path.clone();
    let spawned = std::thread::Builder::new()
        .name("ringmq-compact".into())
        .spawn(move || {
            ringmq_io::unpin_current_thread();
            let mut part = Vec::new();
            let kept = std::fs::File::open(&path)
                .map_err(ringmq_core::durable::compact::CompactError::from)
                .and_then(|mut log| {
                    ringmq_core::durable::compact::retained_of_log(&mut log, log_len, &mut part)
                });
            if let Ok(mut slot) = into.lock() {
                *slot = Some(kept.map(|kept| (part, kept)));
            }
            signal.notify();
        });
    if let Err(error) = spawned {
        return Some(Err(error));
    }
    let temp = settings.path.with_extension("log.compact");
    let result = async {
        use std::os::unix::fs::OpenOptionsExt;
        let file = monoio::fs::OpenOptions::new()
            .custom_flags(write_through(settings.write_through))
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&temp)
            .await?;
        // Each step's sessions are written as they come: the snapshot is never whole in memory
        // but for its retained part, and no step copies what the ones before it encoded.
        let mut len = 0u64;
        let mut next = Some(0);
        loop {
            let (result, back) = file.write_all_at(out, len).await;
            result?;
            len += back.len() as u64;
            out = back;
            out.clear();
            let Some(from) = next else {
                break;
            };
            let Some((back, after, took)) = handle
                .call(move |s| {
                    let began = Instant::now();
                    let mut out = out;
                    let after =
                        s.session_records_from(from, SNAPSHOT_SLOTS_PER_JOB, began, &mut out);
                    (out, after, began.elapsed())
                })
                .await
            else {
                return Err(std::io::Error::other("the shard stopped"));
            };
            out = back;
            next = after;
            steps += 1;
            longest = longest.max(took);
        }
        done.notified().await;
        let (retained, retained_count) = match encoded.lock().ok().and_then(|mut slot| slot.take())
        {
            Some(Ok(part)) => part,
            Some(Err(error)) => return Err(std::io::Error::other(error)),
            None => return Err(std::io::Error::other("the compaction thread failed")),
        };
        let (result, retained) = file.write_all_at(retained, len).await;
        result?;
        len += retained.len() as u64;
        drop(retained);
        file.sync_all().await?;
        tracing::info!(
            log = %settings.path.display(),
            bytes = len,
            retained = retained_count,
            steps,
            first_step_us = took.as_micros() as u64,
            longest_step_us = longest.as_micros() as u64,
            "log snapshot written"
        );
        Ok((file, len))
    }
    .await;
    Some(result)
}

/// The retained part of a snapshot, framed, and how many messages it holds (or why not).
type RetainedPart = Result<(Vec<u8>, usize), ringmq_core::durable::compact::CompactError>;

/// Puts a written snapshot in the log's place: `carry` (the records written to the old log
/// since the snapshot began) appended and synced, then renamed over the log. Returns the new
/// log and its length.
async fn install(
    settings: &JournalSettings,
    file: monoio::fs::File,
    len: u64,
    carry: Vec<u8>,
) -> Result<(monoio::fs::File, u64), std::io::Error> {
    let total = len + carry.len() as u64;
    if !carry.is_empty() {
        let (result, _) = file.write_all_at(carry, len).await;
        result?;
        if !settings.write_through {
            file.sync_data().await?;
        }
    }
    let path = &settings.path;
    std::fs::rename(path.with_extension("log.compact"), path)?;
    // Renamed: the new log is the log now, whatever the directory's sync says (an error
    // here must not leave this loop writing to the unlinked old one).
    if let Err(error) =
        std::fs::File::open(path.parent().unwrap_or(Path::new("."))).and_then(|dir| dir.sync_all())
    {
        tracing::warn!(%error, log = %path.display(), "cannot sync the journal directory after a compaction");
    }
    Ok((file, total))
}

/// Rewrites the log (`log_len` bytes) as the shard's live state while the journal waits (at
/// `max_log_bytes`), with `carry` (records taken but not written yet) after it: written next
/// to it, synced, renamed over it. Records made meanwhile stay in the core and go to the new
/// log next.
async fn compact(
    handle: &Rc<ShardHandle>,
    settings: &JournalSettings,
    log_len: u64,
    carry: Vec<u8>,
) -> Option<Written> {
    let start = start_snapshot(handle, log_len).await?;
    Some(match write_snapshot(handle, settings, start).await? {
        Ok((file, len)) => install(settings, file, len, carry).await,
        Err(error) => Err(error),
    })
}

/// A log file written and synced, with its length (or why not).
type Written = Result<(monoio::fs::File, u64), std::io::Error>;

/// A compaction running beside the journal loop's writes.
struct Background {
    /// Records written to the old log since the snapshot began, in order.
    carry: Vec<u8>,
    /// The written snapshot (or why not), once it is.
    done: Rc<std::cell::Cell<Option<Written>>>,
    /// Woken when `done` is set.
    ready: Rc<LocalNotify>,
}

impl Background {
    /// Begins a snapshot (awaited: its first job orders it among the batches taken) and
    /// writes it on a task of its own.
    async fn start(
        handle: &Rc<ShardHandle>,
        settings: &JournalSettings,
        log_len: u64,
    ) -> Option<Background> {
        let start = start_snapshot(handle, log_len).await?;
        let done: Rc<std::cell::Cell<Option<_>>> = Rc::default();
        let ready = Rc::new(LocalNotify::default());
        let (handle, settings) = (Rc::clone(handle), settings.clone());
        let (into, signal) = (Rc::clone(&done), Rc::clone(&ready));
        monoio::spawn(async move {
            let written = write_snapshot(&handle, &settings, start)
                .await
                .unwrap_or_else(|| Err(std::io::Error::other("the shard stopped")));
            into.set(Some(written));
            signal.notify();
        });
        Some(Background {
            carry: Vec::new(),
            done,
            ready,
        })
    }

    /// Waits for the snapshot, then installs it; the new log and its length.
    async fn finish(
        self,
        settings: &JournalSettings,
    ) -> Result<(monoio::fs::File, u64), std::io::Error> {
        let written = loop {
            if let Some(written) = self.done.take() {
                break written;
            }
            self.ready.notified().await;
        };
        let (file, len) = written?;
        install(settings, file, len, self.carry).await
    }

    /// True once the snapshot is written (or failed).
    fn is_done(&self) -> bool {
        let written = self.done.take();
        let is_done = written.is_some();
        self.done.set(written);
        is_done
    }
}
