//! A single-threaded wake-up cell for tasks on one shard.

use std::cell::{Cell, RefCell};
use std::task::Waker;

/// Wakes one waiting task on the same shard; repeated notifications before it runs coalesce.
#[derive(Debug, Default)]
pub struct LocalNotify {
    waker: RefCell<Option<Waker>>,
    pending: Cell<bool>,
}

impl LocalNotify {
    /// Marks the notification pending and wakes the registered task once.
    pub fn notify(&self) {
        if self.pending.replace(true) {
            return;
        }
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Consumes a pending notification.
    pub fn take(&self) -> bool {
        self.pending.replace(false)
    }

    /// Registers the task to wake on the next notification.
    pub fn register(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        match slot.as_ref() {
            Some(existing) if existing.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
}

/// A one-shot stop signal for any number of tasks on one shard.
#[derive(Debug, Default)]
pub struct LocalStop {
    stopped: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl LocalStop {
    /// Fires the signal and wakes every waiting task.
    pub fn stop(&self) {
        self.stopped.set(true);
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// True once fired.
    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Resolves once the signal fires.
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.stopped.get() {
                return std::task::Poll::Ready(());
            }
            let mut wakers = self.wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
        .await
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
