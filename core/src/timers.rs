//! The shard's timer heap: keep-alive, will delay and session expiry, earliest first.
//!
//! Times are kept as milliseconds after the shard's epoch, rounded up, so a timer never fires
//! early. The caller passes every `now`; nothing here reads the clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What a timer checks when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// The connection's keep-alive deadline.
    KeepAlive,
    /// A will waiting for its delay.
    WillDelay,
    /// A disconnected session's expiry.
    SessionExpiry,
}

/// A timer as the heap keeps it: 24 bytes, since every connected session has one (memory per
/// idle connection; with an `Instant` and a whole connection id it was 40).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    /// When it is due, in milliseconds after the shard's epoch, rounded up (never early).
    at_ms: u64,
    /// What to check.
    pub kind: TimerKind,
    /// The session's slot in the shard's table.
    pub slot: u32,
    /// The slot's generation when the timer was set (a reused slot's timers are stale).
    pub generation: u32,
    /// The connection id's low half: slot and generation pin the session; this tells apart
    /// its connections (ids 2^32 apart on one session entry do not occur).
    pub conn: u32,
}

/// A shard's pending timers, earliest first.
#[derive(Debug)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
    /// What timer times count from (a day before the shard started, so an instant taken just
    /// before it still maps forward).
    epoch: Instant,
}

impl Timers {
    /// No timers; times count from a day before `now` (the shard's start).
    pub fn new(now: Instant) -> Timers {
        Timers {
            heap: BinaryHeap::new(),
            epoch: now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now),
        }
    }

    /// `at` in milliseconds after the epoch, rounded up (never early).
    fn ms(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.epoch);
        let ms = since.as_millis() + u128::from(!since.subsec_nanos().is_multiple_of(1_000_000));
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// Sets a timer of `kind` for the session in `slot`, due at `at`; `conn` is the
    /// connection id (its low half is kept).
    pub fn push(&mut self, at: Instant, kind: TimerKind, slot: u32, generation: u32, conn: u64) {
        let at_ms = self.ms(at);
        self.heap.push(Reverse(Timer {
            at_ms,
            kind,
            slot,
            generation,
            conn: conn as u32,
        }));
    }

    /// Puts `timer` back in the heap, due at `at`.
    pub fn rearm(&mut self, timer: Timer, at: Instant) {
        let at_ms = self.ms(at);
        self.heap.push(Reverse(Timer { at_ms, ..timer }));
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis();
        let now_ms = u64::try_from(now_ms).unwrap_or(u64::MAX);
        let Reverse(timer) = self.heap.peek().copied()?;
        if timer.at_ms > now_ms {
            return None;
        }
        self.heap.pop();
        Some(timer)
    }

    /// When the earliest timer is due.
    pub fn next(&self) -> Option<Instant> {
        let Reverse(timer) = self.heap.peek()?;
        Some(self.epoch + Duration::from_millis(timer.at_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_is_24_bytes() {
        // One per connected session (memory per idle connection).
        assert_eq!(std::mem::size_of::<Timer>(), 24);
    }

    /// A time between two milliseconds rounds up: the timer is due at the next whole one.
    #[test]
    fn a_timer_is_never_early() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        timers.push(
            t0 + Duration::from_micros(1500),
            TimerKind::KeepAlive,
            7,
            1,
            9,
        );
        assert!(timers
            .next()
            .is_some_and(|at| at >= t0 + Duration::from_micros(1500)));
        assert_eq!(timers.pop_due(t0 + Duration::from_micros(1499)), None);
        let timer = timers.pop_due(t0 + Duration::from_millis(2)).expect("due");
        assert_eq!(
            (timer.kind, timer.slot, timer.generation, timer.conn),
            (TimerKind::KeepAlive, 7, 1, 9)
        );
        assert_eq!(timers.next(), None);
    }
}
