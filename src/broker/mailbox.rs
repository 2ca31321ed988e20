//! How a shard's tasks reach its state: a mailbox of jobs the shard's loop runs in bounded
//! rounds (TiKV's batch-system is the model). The loop task owns the [`Shard`] outright; a
//! connection, HTTP or timer task hands it a job (a closure over `&mut Shard`) and, when it
//! needs the answer, awaits it. Between rounds the loop flushes the core's outputs once, so a
//! round of many jobs costs one wake-up of each peer shard and one pass over the outputs.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ops::Deref;
use std::rc::Rc;
use std::time::Duration;

use ringmq_io::monoio;

use super::answer::Answer;
use super::facts::ShardFacts;
use super::local_notify::LocalNotify;
use super::shard::Shard;

/// A job for the shard loop.
pub type Job = Box<dyn FnOnce(&mut Shard)>;

/// Jobs run per round at most before the loop flushes and yields: bounds the latency one
/// burst adds to every other task of the shard (and to the mesh, polled once per round).
pub const JOBS_PER_ROUND: usize = 256;

/// A shard's mailbox, with the facts its tasks read without a job.
pub struct ShardHandle {
    jobs: RefCell<VecDeque<Job>>,
    /// Wakes the loop when a job arrives.
    pub(super) arrived: LocalNotify,
    /// Set once the loop has ended: later jobs are dropped (their callers see `None`).
    closed: Cell<bool>,
    facts: Rc<ShardFacts>,
}

impl Deref for ShardHandle {
    type Target = ShardFacts;

    fn deref(&self) -> &ShardFacts {
        &self.facts
    }
}

impl std::fmt::Debug for ShardHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardHandle")
            .field("id", &self.facts.id)
            .field("jobs", &self.jobs.borrow().len())
            .field("closed", &self.closed.get())
            .finish()
    }
}

impl ShardHandle {
    /// The mailbox of the shard these facts describe.
    pub fn new(facts: Rc<ShardFacts>) -> Self {
        ShardHandle {
            jobs: RefCell::new(VecDeque::new()),
            arrived: LocalNotify::default(),
            closed: Cell::new(false),
            facts,
        }
    }

    /// The facts, shared with the shard's state.
    pub fn facts(&self) -> &Rc<ShardFacts> {
        &self.facts
    }

    /// Queues `job` for the shard loop without waiting for it.
    pub fn post(&self, job: impl FnOnce(&mut Shard) + 'static) {
        if self.closed.get() {
            return;
        }
        self.jobs.borrow_mut().push_back(Box::new(job));
        self.arrived.notify();
    }

    /// Runs `job` on the shard loop and returns its answer; `None` once the loop has ended.
    pub async fn call<R: 'static>(&self, job: impl FnOnce(&mut Shard) -> R + 'static) -> Option<R> {
        let answer: Rc<Answer<R>> = Rc::new(Answer::default());
        let filler = Filler(Rc::clone(&answer));
        self.post(move |shard| filler.0.fill(job(shard)));
        // The loop dropped the job unrun (it ended) once the answer's other owner is gone.
        answer.wait_or(|| Rc::strong_count(&answer) == 1).await
    }

    /// Waits for the counts of request `token` (from [`Shard::publish_counted`] or
    /// [`Shard::ping_all`]), at most `timeout`; the total, or `None` on timeout (the wait is
    /// dropped either way).
    pub async fn wait_counts(
        &self,
        (token, answer): (u64, Rc<Answer<u64>>),
        timeout: Duration,
    ) -> Option<u64> {
        let outcome = monoio::time::timeout(timeout, answer.wait()).await.ok();
        self.post(move |s| s.forget_count(token));
        outcome
    }

    /// Takes the jobs of one round (at most [`JOBS_PER_ROUND`]), oldest first.
    pub(super) fn take_round(&self, round: &mut Vec<Job>) {
        let mut jobs = self.jobs.borrow_mut();
        let count = jobs.len().min(JOBS_PER_ROUND);
        round.extend(jobs.drain(..count));
    }

    /// True while jobs wait.
    pub(super) fn has_jobs(&self) -> bool {
        !self.jobs.borrow().is_empty()
    }

    /// The loop ended: pending and later jobs are dropped, and their callers woken.
    pub(super) fn close(&self) {
        self.closed.set(true);
        let jobs = std::mem::take(&mut *self.jobs.borrow_mut());
        drop(jobs);
    }
}

/// Wakes the waiting task when its job is done, or dropped unrun (the loop ended).
struct Filler<R>(Rc<Answer<R>>);

impl<R> Drop for Filler<R> {
    fn drop(&mut self) {
        self.0.abandon();
    }
}
