//! A single-threaded wake-up cell for tasks on one shard.

use std::cell::{Cell, RefCell};
use std::task::Waker;

use super::slots::Slots;

/// Wakes one waiting task on the same shard; repeated notifications before it runs coalesce.
#[derive(Default)]
pub struct LocalNotify {
    // A `Cell`, not a `RefCell`: every connection carries two of these (memory per idle
    // connection), and the waker is only ever moved in and out whole.
    waker: Cell<Option<Waker>>,
    pending: Cell<bool>,
}

impl std::fmt::Debug for LocalNotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNotify")
            .field("pending", &self.pending.get())
            .finish_non_exhaustive()
    }
}

impl LocalNotify {
    /// Marks the notification pending and wakes the registered task once.
    pub fn notify(&self) {
        if self.pending.replace(true) {
            return;
        }
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Consumes a pending notification.
    pub fn take(&self) -> bool {
        self.pending.replace(false)
    }

    /// Resolves at the next notification (or at once if one is pending), consuming it.
    pub fn notified(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.take() {
                return std::task::Poll::Ready(());
            }
            self.register(cx.waker());
            if self.take() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }

    /// Registers the task to wake on the next notification.
    pub fn register(&self, waker: &Waker) {
        let registered = match self.waker.take() {
            Some(existing) if existing.will_wake(waker) => existing,
            _ => waker.clone(),
        };
        self.waker.set(Some(registered));
    }
}

/// A one-shot stop signal for any number of tasks on one shard.
#[derive(Default)]
pub struct LocalStop {
    stopped: Cell<bool>,
    /// One waker per live [`LocalStop::wait`] future, removed when it is dropped: accept loops
    /// wait on the signal once per accepted connection, so the set must not grow with them.
    wakers: RefCell<Slots<Waker>>,
}

impl std::fmt::Debug for LocalStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStop")
            .field("stopped", &self.stopped.get())
            .finish_non_exhaustive()
    }
}

impl LocalStop {
    /// Fires the signal and wakes every waiting task.
    pub fn stop(&self) {
        self.stopped.set(true);
        for (_, waker) in self.wakers.borrow().iter() {
            waker.wake_by_ref();
        }
    }

    /// True once fired.
    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Resolves once the signal fires.
    pub fn wait(&self) -> StopWait<'_> {
        StopWait {
            stop: self,
            slot: None,
        }
    }

    /// How many wait futures are registered (for tests of the bound).
    #[cfg(test)]
    fn registered(&self) -> usize {
        self.wakers.borrow().iter().count()
    }
}

/// The future of [`LocalStop::wait`].
pub struct StopWait<'a> {
    stop: &'a LocalStop,
    slot: Option<u32>,
}

impl std::future::Future for StopWait<'_> {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.stop.stopped.get() {
            return std::task::Poll::Ready(());
        }
        let slot = self.slot;
        let mut wakers = self.stop.wakers.borrow_mut();
        match slot.and_then(|slot| wakers.get_mut(slot)) {
            Some(waker) => waker.clone_from(cx.waker()),
            None => {
                let slot = wakers.insert(cx.waker().clone());
                drop(wakers);
                self.slot = Some(slot);
            }
        }
        std::task::Poll::Pending
    }
}

impl Drop for StopWait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.stop.wakers.borrow_mut().take(slot);
        }
    }
}

/// Gives the other tasks of the shard a turn (one `Pending`, then ready).
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll};

    #[test]
    fn stop_waiters_are_forgotten_when_dropped() {
        // Regression: every wait registered a waker that stayed until the stop, so an accept
        // loop grew the list by one per accepted connection (26 B each, forever).
        let stop = LocalStop::default();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..1000 {
            let mut wait = pin!(stop.wait());
            assert_eq!(wait.as_mut().poll(&mut cx), Poll::Pending);
            assert_eq!(wait.as_mut().poll(&mut cx), Poll::Pending);
        }
        assert_eq!(stop.registered(), 0);
        let mut first = pin!(stop.wait());
        let mut second = pin!(stop.wait());
        assert_eq!(first.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(second.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(stop.registered(), 2);
        stop.stop();
        assert_eq!(first.as_mut().poll(&mut cx), Poll::Ready(()));
        assert_eq!(second.as_mut().poll(&mut cx), Poll::Ready(()));
        assert_eq!(pin!(stop.wait()).poll(&mut cx), Poll::Ready(()));
        assert_eq!(
            stop.registered(),
            2,
            "still-live waiters keep their slot until dropped"
        );
    }
}
