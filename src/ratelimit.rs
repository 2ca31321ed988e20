//! Per-organisation rate limits for the HTTP API: a token bucket every shard shares, lock-free.
//!
//! Each bucket is GCRA (the generic cell rate algorithm): one `AtomicU64` holds the
//! theoretical arrival time (TAT), the instant at which the bucket would be full again. A take
//! of `n` tokens pushes the TAT `n` emission intervals later, and is allowed while the TAT stays
//! within `burst` intervals of now. One compare-exchange per allowed take, a plain load per
//! refused one, no lock and no syscall: the caller passes `now` (from [`monotonic_nanos`]).
//!
//! The [`RateLimits`] registry maps org ids to buckets under a mutex; shards look an org's
//! bucket up once and keep the `Arc`, so the mutex is off the request path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

/// Nanoseconds per second.
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Nanoseconds since the first call in this process, from the monotonic clock.
///
/// `Instant::now` is `clock_gettime(CLOCK_MONOTONIC)`, which Linux answers from the vDSO
/// without entering the kernel.
pub fn monotonic_nanos() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    // u64 nanoseconds last 584 years of uptime.
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The outcome of one [`TokenBucket::try_take`], with what the rate-limit headers need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the tokens were taken.
    pub allowed: bool,
    /// Whole tokens left after this decision (`X-RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds, rounded up, until the bucket is full again (`X-RateLimit-Reset`).
    pub reset_after_secs: u32,
    /// When refused: seconds, rounded up and at least 1, until `n` tokens are back
    /// (`Retry-After`); `u32::MAX` when `n` exceeds the burst and can never pass. 0 when allowed.
    pub retry_after_secs: u32,
}

/// A token bucket refilling at `rate_per_sec` up to `burst` tokens, shared across threads.
#[derive(Debug)]
pub struct TokenBucket {
    /// Theoretical arrival time in [`monotonic_nanos`] time: the bucket is full at and after it.
    tat: AtomicU64,
    /// Emission interval in nanoseconds (high 32 bits) and burst (low 32 bits), packed so an
    /// update is seen whole by every shard.
    params: AtomicU64,
}

impl TokenBucket {
    /// A full bucket. A rate or burst of 0 is taken as 1, so some request can always pass.
    pub fn new(rate_per_sec: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            tat: AtomicU64::new(0),
            params: AtomicU64::new(pack(rate_per_sec, burst)),
        }
    }

    /// Changes rate and burst, keeping the tokens already spent.
    pub fn set_limits(&self, rate_per_sec: u32, burst: u32) {
        self.params
            .store(pack(rate_per_sec, burst), Ordering::Relaxed);
    }

    /// The configured burst (bucket capacity).
    pub fn burst(&self) -> u32 {
        unpack(self.params.load(Ordering::Relaxed)).1 as u32
    }

    /// Tries to take `n` tokens at time `now` (nanoseconds, from [`monotonic_nanos`]).
    pub fn try_take(&self, n: u32, now_nanos: u64) -> Decision {
        let (interval, burst) = unpack(self.params.load(Ordering::Relaxed));
        // Both products are below 2^32 * 2^32, so they fit; the sums saturate.
        let tolerance = burst * interval;
        let cost = u64::from(n) * interval;
        let mut stored = self.tat.load(Ordering::Relaxed);
        loop {
            let tat = stored.max(now_nanos);
            let new_tat = tat.saturating_add(cost);
            let allow_at = new_tat.saturating_sub(tolerance);
            if u64::from(n) > burst || now_nanos < allow_at {
                let retry_after_secs = if u64::from(n) > burst {
                    u32::MAX
                } else {
                    secs_ceil(allow_at - now_nanos).max(1)
                };
                return Decision {
                    allowed: false,
                    remaining: remaining(tat, now_nanos, tolerance, interval),
                    reset_after_secs: secs_ceil(tat - now_nanos),
                    retry_after_secs,
                };
            }
            // Relaxed is enough: the TAT is the only shared state, and the CAS orders takes.
            match self.tat.compare_exchange_weak(
                stored,
                new_tat,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Decision {
                        allowed: true,
                        remaining: remaining(new_tat, now_nanos, tolerance, interval),
                        reset_after_secs: secs_ceil(new_tat - now_nanos),
                        retry_after_secs: 0,
                    }
                }
                Err(current) => stored = current,
            }
        }
    }
}

/// Packs the emission interval (nanoseconds, rounded up so the rate is never exceeded) and
/// the burst; both at least 1.
fn pack(rate_per_sec: u32, burst: u32) -> u64 {
    let interval = NANOS_PER_SEC.div_ceil(u64::from(rate_per_sec.max(1)));
    (interval << 32) | u64::from(burst.max(1))
}

/// Unpacks (interval nanoseconds, burst).
fn unpack(params: u64) -> (u64, u64) {
    (params >> 32, params & u64::from(u32::MAX))
}

/// Whole tokens in the bucket when its TAT is `tat`.
fn remaining(tat: u64, now: u64, tolerance: u64, interval: u64) -> u32 {
    let room = now.saturating_add(tolerance).saturating_sub(tat);
    u32::try_from(room / interval).unwrap_or(u32::MAX)
}

/// Nanoseconds to whole seconds, rounded up, saturating.
fn secs_ceil(nanos: u64) -> u32 {
    u32::try_from(nanos.div_ceil(NANOS_PER_SEC)).unwrap_or(u32::MAX)
}

/// Why the registry refused to add an org.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum RateLimitError {
    /// The registry already holds `orgs_max` orgs.
    #[error("rate-limit registry is full ({limit} orgs)")]
    Full {
        /// The configured `orgs_max`.
        limit: usize,
    },
}

/// The buckets of every org, shared by all shards; at most `orgs_max` of them.
///
/// In a cluster each node enforces its share of an org's limits: rate and burst divided by the
/// number of nodes alive ([`RateLimits::set_share`]), rounded up, so the cluster as a whole
/// admits about the org's rate with no counter shared between nodes.
#[derive(Debug)]
pub struct RateLimits {
    /// Bucket per org id, with the org's whole rate and burst.
    buckets: Mutex<Buckets>,
    /// Most orgs held.
    orgs_max: usize,
    /// The nodes sharing each org's limits (1 outside a cluster).
    share: std::sync::atomic::AtomicU32,
}

/// Each org's bucket with the org's whole rate and burst (the bucket holds this node's part).
type Buckets = HashMap<u32, (Arc<TokenBucket>, u32, u32)>;

/// This node's part of `limit` when `nodes` share it (at least 1).
pub fn split(limit: u32, nodes: u32) -> u32 {
    limit.div_ceil(nodes.max(1)).max(1)
}

impl RateLimits {
    /// An empty registry holding at most `orgs_max` orgs.
    pub fn new(orgs_max: usize) -> RateLimits {
        RateLimits {
            buckets: Mutex::new(HashMap::new()),
            orgs_max,
            share: std::sync::atomic::AtomicU32::new(1),
        }
    }

    /// `nodes` nodes now share every org's limits: each bucket gets its part.
    pub fn set_share(&self, nodes: u32) {
        let nodes = nodes.max(1);
        let buckets = self.lock();
        if self.share.swap(nodes, Ordering::Relaxed) == nodes {
            return;
        }
        for (bucket, rate, burst) in buckets.values() {
            bucket.set_limits(split(*rate, nodes), split(*burst, nodes));
        }
    }

    /// The org's bucket, created full with `rate`/`burst` if absent (an existing bucket keeps
    /// its limits: change them with [`RateLimits::update`]). Callers cache the `Arc`.
    pub fn get_or_insert(
        &self,
        org: u32,
        rate_per_sec: u32,
        burst: u32,
    ) -> Result<Arc<TokenBucket>, RateLimitError> {
        let mut buckets = self.lock();
        if let Some((bucket, _, _)) = buckets.get(&org) {
            return Ok(Arc::clone(bucket));
        }
        if buckets.len() >= self.orgs_max {
            return Err(RateLimitError::Full {
                limit: self.orgs_max,
            });
        }
        let nodes = self.share.load(Ordering::Relaxed);
        let bucket = Arc::new(TokenBucket::new(
            split(rate_per_sec, nodes),
            split(burst, nodes),
        ));
        buckets.insert(org, (Arc::clone(&bucket), rate_per_sec, burst));
        Ok(bucket)
    }

    /// Applies new org settings to its bucket (seen at once by every cached `Arc`); false when
    /// the org has no bucket yet, in which case the next `get_or_insert` uses the new values.
    pub fn update(&self, org: u32, rate_per_sec: u32, burst: u32) -> bool {
        let nodes = self.share.load(Ordering::Relaxed);
        match self.lock().get_mut(&org) {
            Some((bucket, rate, full_burst)) => {
                (*rate, *full_burst) = (rate_per_sec, burst);
                bucket.set_limits(split(rate_per_sec, nodes), split(burst, nodes));
                true
            }
            None => false,
        }
    }

    /// Forgets a deleted org; shards still holding its `Arc` keep a working bucket.
    pub fn remove(&self, org: u32) -> bool {
        self.lock().remove(&org).is_some()
    }

    /// Number of orgs held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no org is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The map; a panic elsewhere cannot leave it half-updated, so poisoning is ignored.
    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets> {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    const SEC: u64 = NANOS_PER_SEC;
    const MS: u64 = 1_000_000;

    /// Shared by three nodes, each admits a third (rounded up) of the org's burst; back to one
    /// node, the whole of it; a later settings change keeps the share.
    #[test]
    fn a_cluster_splits_each_orgs_limits() {
        let limits = RateLimits::new(8);
        let bucket = limits.get_or_insert(1, 90, 30).expect("room");
        let admitted = |bucket: &TokenBucket, now: u64| {
            (0..100).filter(|_| bucket.try_take(1, now).allowed).count()
        };
        assert_eq!(admitted(&bucket, SEC), 30);
        limits.set_share(3);
        assert_eq!(admitted(&bucket, 100 * SEC), 10);
        limits.update(1, 90, 60);
        assert_eq!(admitted(&bucket, 200 * SEC), 20);
        limits.set_share(1);
        assert_eq!(admitted(&bucket, 300 * SEC), 60);
        let later = limits.get_or_insert(2, 10, 10).expect("room");
        limits.set_share(4);
        assert_eq!(admitted(&later, 400 * SEC), 3, "10 / 4, rounded up");
        assert_eq!((split(0, 3), split(7, 0)), (1, 7));
    }

    #[test]
    fn burst_then_refusal() {
        let bucket = TokenBucket::new(10, 5);
        let now = 7 * SEC;
        for expected in (0..5).rev() {
            let decision = bucket.try_take(1, now);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected);
            assert_eq!(decision.retry_after_secs, 0);
        }
        let refused = bucket.try_take(1, now);
        assert_eq!(
            refused,
            Decision {
                allowed: false,
                remaining: 0,
                reset_after_secs: 1,
                retry_after_secs: 1,
            }
        );
    }

    #[test]
    fn refill_over_simulated_time() {
        let bucket = TokenBucket::new(10, 5);
        let start = SEC;
        assert!(bucket.try_take(5, start).allowed);
        assert!(!bucket.try_take(1, start + 99 * MS).allowed);
        let decision = bucket.try_take(1, start + 100 * MS);
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 0);
        // Half a second after emptying, the bucket is full again, and never fuller than burst.
        assert_eq!(
            bucket.try_take(6, start + 10 * SEC).retry_after_secs,
            u32::MAX
        );
        let decision = bucket.try_take(5, start + 10 * SEC);
        assert!(decision.allowed);
        assert_eq!(decision.reset_after_secs, 1);
        assert!(!bucket.try_take(1, start + 10 * SEC).allowed);
        // Partial refill: 3 tokens after 300 ms.
        assert_eq!(bucket.try_take(0, start + 10 * SEC + 300 * MS).remaining, 3);
    }

    #[test]
    fn retry_after_is_exactly_enough() {
        for (rate, burst) in [(1, 1), (1, 10), (3, 3), (10, 5), (7, 100), (1000, 50)] {
            for n in [1, 2, burst] {
                if n > burst {
                    continue;
                }
                let bucket = TokenBucket::new(rate, burst);
                let now = 5 * SEC;
                assert!(bucket.try_take(burst, now).allowed);
                let refused = bucket.try_take(n, now);
                assert!(!refused.allowed);
                let wait = u64::from(refused.retry_after_secs);
                assert!(wait >= 1);
                // Rounded up to whole seconds: enough, and less than one second too much.
                // The interval is rounded up to whole nanoseconds, never letting more through.
                let exact = u64::from(n) * SEC.div_ceil(u64::from(rate));
                assert!(wait * SEC >= exact && (wait - 1) * SEC < exact.max(1));
                assert!(
                    bucket.try_take(n, now + wait * SEC).allowed,
                    "{rate} {burst} {n}"
                );
                assert_eq!(
                    refused.reset_after_secs,
                    secs_ceil(u64::from(burst) * SEC.div_ceil(u64::from(rate)))
                );
            }
        }
    }

    #[test]
    fn zero_limits_are_clamped_and_n_over_burst_never_passes() {
        let bucket = TokenBucket::new(0, 0);
        assert_eq!(bucket.burst(), 1);
        assert!(bucket.try_take(1, 0).allowed);
        assert!(!bucket.try_take(1, 0).allowed);
        assert!(bucket.try_take(1, SEC).allowed);
        let refused = TokenBucket::new(10, 3).try_take(4, 0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, u32::MAX);
        assert_eq!(refused.remaining, 3);
        let huge = TokenBucket::new(u32::MAX, u32::MAX);
        assert!(huge.try_take(u32::MAX, u64::MAX - 1).allowed);
    }

    #[test]
    fn set_limits_applies_to_cached_buckets() {
        let limits = RateLimits::new(2);
        let bucket = limits.get_or_insert(1, 1, 1).unwrap();
        assert!(bucket.try_take(1, 0).allowed);
        assert!(!bucket.try_take(1, 0).allowed);
        assert!(limits.update(1, 1, 3));
        assert!(!limits.update(9, 1, 3));
        // The spent token stays spent: 2 of the new 3 are left.
        assert_eq!(bucket.try_take(2, 0).remaining, 0);
        assert!(!bucket.try_take(1, 0).allowed);
        // The same bucket comes back, and its limits are not reset by a lookup.
        let again = limits.get_or_insert(1, 100, 100).unwrap();
        assert!(Arc::ptr_eq(&bucket, &again));
        assert_eq!(again.burst(), 3);
    }

    #[test]
    fn registry_is_bounded() {
        let limits = RateLimits::new(2);
        assert!(limits.is_empty());
        limits.get_or_insert(1, 1, 1).unwrap();
        limits.get_or_insert(2, 1, 1).unwrap();
        assert_eq!(
            limits.get_or_insert(3, 1, 1).unwrap_err(),
            RateLimitError::Full { limit: 2 }
        );
        assert!(limits.get_or_insert(2, 1, 1).is_ok());
        assert!(limits.remove(1));
        assert!(!limits.remove(1));
        assert!(limits.get_or_insert(3, 1, 1).is_ok());
        assert_eq!(limits.len(), 2);
    }

    #[test]
    fn concurrent_takes_at_one_instant_get_exactly_the_burst() {
        let bucket = TokenBucket::new(1, 1000);
        let allowed = AtomicU32::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..500 {
                        if bucket.try_take(1, 42 * SEC).allowed {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn concurrent_takes_never_exceed_burst_plus_rate_times_t() {
        let (rate, burst) = (20_000, 100);
        let bucket = TokenBucket::new(rate, burst);
        let allowed = AtomicU32::new(0);
        let start = monotonic_nanos();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let mut mine = 0;
                    while monotonic_nanos() - start < 200 * MS {
                        mine += u32::from(bucket.try_take(1, monotonic_nanos()).allowed);
                    }
                    allowed.fetch_add(mine, Ordering::Relaxed);
                });
            }
        });
        let elapsed = monotonic_nanos() - start;
        let allowed = u64::from(allowed.load(Ordering::Relaxed));
        let ceiling = u64::from(burst) + u64::from(rate) * elapsed / SEC + 1;
        assert!(allowed <= ceiling, "{allowed} > {ceiling}");
        // And the limiter is not starving callers either (loose: the machine is shared).
        assert!(allowed >= u64::from(burst), "{allowed}");
    }

    #[test]
    fn monotonic_nanos_moves_forward() {
        let first = monotonic_nanos();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_nanos() >= first + 2 * MS);
    }
}
