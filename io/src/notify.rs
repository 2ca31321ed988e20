//! Cross-thread wake-up of one parked shard task.
//!
//! Waking a parked monoio runtime from another thread costs tens of microseconds (a waker is
//! sent over a channel and the target's eventfd is written), so `CrossNotify` coalesces: while
//! a wake-up is pending and not yet consumed, further `notify()` calls cost one fence and one
//! atomic load.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

/// A cross-thread wake-up for one parked shard task: many threads call `notify()`, one task awaits `notified()`.
///
/// Many `notify()` calls while the task is running cost one wake. A `notify()` before
/// `notified()` is not lost: the next `notified()` resolves at once.
///
/// Memory ordering contract: whatever a notifier wrote before `notify()` is visible to the
/// waiter after its `notified()` (or a `take_pending()` that returned true) resolves, *and* to
/// any read the waiter makes after a `notified()`/`take_pending()` that consumed a later
/// notification. This is what makes "enqueue, then notify; consume notification, then drain"
/// free of lost wake-ups (see `mesh.rs`).
///
/// Only one task may await `notified()` at a time: a second waiter replaces the first's waker.
#[derive(Debug, Default)]
pub struct CrossNotify {
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl CrossNotify {
    /// A notifier with no pending wake-up.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks a wake-up pending and wakes the waiter if it is parked; cheap if one is already pending.
    pub fn notify(&self) {
        // Dekker-style pairing with the fence in `consume`: either this load sees the waiter's
        // reset (and we wake it), or the waiter's later reads see what we wrote before notify.
        fence(Ordering::SeqCst);
        if self.pending.load(Ordering::Relaxed) {
            return;
        }
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Consumes a pending wake-up without waiting; returns whether one was pending.
    pub fn take_pending(&self) -> bool {
        self.consume()
    }

    /// Resolves once a wake-up is pending (consuming it); resolves at once if one already is.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self }
    }

    fn consume(&self) -> bool {
        if self.pending.swap(false, Ordering::AcqRel) {
            // Pairs with the fence in `notify`: the caller's next reads (queue drains) are
            // ordered after the reset, so a notifier that saw `pending == true` and skipped the
            // wake has its writes visible to those reads.
            fence(Ordering::SeqCst);
            true
        } else {
            false
        }
    }
}

/// The future returned by [`CrossNotify::notified`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Notified<'a> {
    notify: &'a CrossNotify,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.consume() {
            return Poll::Ready(());
        }
        self.notify.waker.register(cx.waker());
        // Re-check after registering: a notify() between the first check and the registration
        // found no waker to wake, but it did set `pending`.
        if self.notify.consume() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once(notified: &mut Notified<'_>, waker: &Waker) -> Poll<()> {
        Pin::new(notified).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn notify_before_notified_is_not_lost() {
        let notify = CrossNotify::new();
        notify.notify();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        assert!(poll_once(&mut notify.notified(), &waker).is_ready());
        // The wake-up was consumed: the next wait parks.
        assert!(poll_once(&mut notify.notified(), &waker).is_pending());
    }

    #[test]
    fn many_notifies_from_many_threads_cost_one_wake() {
        let notify = Arc::new(CrossNotify::new());
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut notified = notify.notified();
        assert!(poll_once(&mut notified, &waker).is_pending());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let notify = notify.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        notify.notify();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(poll_once(&mut notified, &waker).is_ready());
        assert!(!notify.take_pending());
    }

    #[test]
    fn take_pending_consumes() {
        let notify = CrossNotify::new();
        assert!(!notify.take_pending());
        notify.notify();
        notify.notify();
        assert!(notify.take_pending());
        assert!(!notify.take_pending());
    }
}
