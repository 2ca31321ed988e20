//! What REST publishing shares across shards, kept by the control plane's handle: the per-org
//! rate limits, monthly quotas and the `Idempotency-Key` cache.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;

use crate::control::snapshot::OrgNum;
use crate::ratelimit::RateLimits;
use ringmq_core::durable::{frame, Clock, IdempotentAnswer, Record};
use ringmq_proto::mqtt::Str;

/// Orgs with a rate-limit bucket at most.
pub(super) const RATE_LIMITED_ORGS_MAX: usize = 100_000;

/// Idempotency keys remembered at most (over all orgs); the oldest go first.
pub(super) const IDEMPOTENCY_KEYS_MAX: usize = 100_000;

/// How long an `Idempotency-Key` is remembered.
pub(super) const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Longest `Idempotency-Key` accepted.
pub(super) const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// One org's use of its monthly quota, shared by every shard.
#[derive(Debug, Default)]
pub struct Quota {
    /// `YYYYMM` the count belongs to.
    pub(super) month: AtomicU64,
    /// Messages published over REST this month through this node since it started.
    pub(super) used: AtomicU64,
    /// What the store says the org used in `others_month` beyond `used`: earlier runs of this
    /// node, and every other node of a cluster sharing the store.
    others: AtomicU64,
    /// `YYYYMM` of `others`.
    others_month: AtomicU64,
}

impl Quota {
    /// Takes `n` messages from the quota of `limit` this `month`; false (and nothing taken)
    /// when they do not fit.
    pub(super) fn take(&self, n: u64, limit: u64, month: u64) -> bool {
        if self.month.load(Ordering::Relaxed) != month {
            // A new month: whoever sees it first starts the count over.
            let old = self.month.swap(month, Ordering::Relaxed);
            if old != month {
                self.used.store(0, Ordering::Relaxed);
            }
        }
        let others = if self.others_month.load(Ordering::Acquire) == month {
            self.others.load(Ordering::Relaxed)
        } else {
            0
        };
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n).saturating_add(others) > limit {
            self.used.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Sets what the rest of the cluster (and earlier runs) used in `month`.
    pub(super) fn set_others(&self, month: u64, others: u64) {
        self.others.store(others, Ordering::Relaxed);
        self.others_month.store(month, Ordering::Release);
    }
}

/// A stored answer to an idempotent request, or a marker that one is in progress.
#[derive(Debug, Clone)]
pub(super) enum Remembered {
    InProgress {
        fingerprint: [u8; 32],
    },
    Done {
        fingerprint: [u8; 32],
        status: u16,
        body: Bytes,
    },
}

/// `Idempotency-Key` → first response, per org, for [`IDEMPOTENCY_WINDOW`].
#[derive(Debug, Default)]
pub(super) struct IdempotencyCache {
    pub(super) entries: AHashMap<(OrgNum, String), (Remembered, Instant)>,
    pub(super) order: VecDeque<(Instant, OrgNum, String)>,
}

impl IdempotencyCache {
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.order.front() {
            let full = self.order.len() > IDEMPOTENCY_KEYS_MAX;
            if !full && now.duration_since(*at) < IDEMPOTENCY_WINDOW {
                break;
            }
            if let Some((at, org, key)) = self.order.pop_front() {
                if self
                    .entries
                    .get(&(org, key.clone()))
                    .is_some_and(|e| e.1 == at)
                {
                    self.entries.remove(&(org, key));
                }
            }
        }
    }
}

impl IdempotencyCache {
    /// Puts back the answers a restart recovered from the logs (those still in their window).
    pub(super) fn load(&mut self, answers: &[Box<IdempotentAnswer>], clock: &Clock, now: Instant) {
        for answer in answers {
            let at = clock.instant(answer.at_ms);
            if now.saturating_duration_since(at) >= IDEMPOTENCY_WINDOW {
                continue;
            }
            let slot = (answer.org, answer.key.to_string());
            let remembered = Remembered::Done {
                fingerprint: answer.fingerprint,
                status: answer.status,
                body: answer.body.clone(),
            };
            self.entries.insert(slot.clone(), (remembered, at));
            self.order.push_back((at, slot.0, slot.1));
        }
        self.expire(now);
    }

    /// Appends, framed, the answers still in their window whose key `homed` accepts (each
    /// shard's log snapshot carries its share, so a compaction keeps them).
    pub(super) fn dump(
        &self,
        homed: impl Fn(&str) -> bool,
        clock: &Clock,
        now: Instant,
        out: &mut Vec<u8>,
    ) {
        for ((org, key), (remembered, at)) in &self.entries {
            let Remembered::Done {
                fingerprint,
                status,
                body,
            } = remembered
            else {
                continue;
            };
            if now.saturating_duration_since(*at) >= IDEMPOTENCY_WINDOW || !homed(key) {
                continue;
            }
            let record = Record::Idempotent(Box::new(IdempotentAnswer {
                org: *org,
                key: Str::from(key.as_str()),
                fingerprint: *fingerprint,
                status: *status,
                body: body.clone(),
                at_ms: clock.unix_ms(*at),
            }));
            frame::append_with(out, |out| record.encode(clock, out));
        }
    }
}

/// What REST publishing shares across shards: rate limits, quotas, idempotency keys.
#[derive(Debug)]
pub struct FrontDoor {
    /// Token bucket per org.
    pub rate_limits: RateLimits,
    pub(super) quotas: RwLock<AHashMap<OrgNum, Arc<Quota>>>,
    pub(super) idempotency: Mutex<IdempotencyCache>,
}

impl Default for FrontDoor {
    fn default() -> Self {
        FrontDoor {
            rate_limits: RateLimits::new(RATE_LIMITED_ORGS_MAX),
            quotas: RwLock::default(),
            idempotency: Mutex::default(),
        }
    }
}

impl FrontDoor {
    /// The quota counter of `org`.
    pub fn quota(&self, org: OrgNum) -> Arc<Quota> {
        if let Some(quota) = self.quotas.read().ok().and_then(|q| q.get(&org).cloned()) {
            return quota;
        }
        match self.quotas.write() {
            Ok(mut quotas) => Arc::clone(quotas.entry(org).or_default()),
            Err(_) => Arc::new(Quota::default()),
        }
    }

    /// Tells `org`'s quota what was used in `month` beyond this node's own count since it
    /// started (control thread, after each look at the store).
    pub fn set_quota_others(&self, org: OrgNum, month: u64, others: u64) {
        self.quota(org).set_others(month, others);
    }
}
