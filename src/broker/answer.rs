//! A value one task waits for and another fills in on the same shard (a job's answer, a grant,
//! counts from other shards).

use std::cell::Cell;
use std::future::poll_fn;
use std::task::Poll;

use super::local_notify::LocalNotify;

/// A value one task waits for and the shard loop fills in.
pub struct Answer<R> {
    value: Cell<Option<R>>,
    ready: LocalNotify,
}

impl<R> Default for Answer<R> {
    fn default() -> Self {
        Answer {
            value: Cell::new(None),
            ready: LocalNotify::default(),
        }
    }
}

impl<R> Answer<R> {
    /// Fills in the value and wakes the waiting task.
    pub fn fill(&self, value: R) {
        self.value.set(Some(value));
        self.ready.notify();
    }

    /// Wakes the waiting task without a value (its filler is gone).
    pub fn abandon(&self) {
        self.ready.notify();
    }

    /// The value, once filled in (taken).
    pub fn take(&self) -> Option<R> {
        self.value.take()
    }

    /// Waits until the value is filled in, and takes it.
    pub async fn wait(&self) -> R {
        poll_fn(|cx| {
            self.ready.take();
            match self.value.take() {
                Some(value) => Poll::Ready(value),
                None => {
                    self.ready.register(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Waits until the value is filled in or `gone()` says it never will be.
    pub async fn wait_or(&self, gone: impl Fn() -> bool) -> Option<R> {
        poll_fn(|cx| {
            self.ready.take();
            if let Some(value) = self.value.take() {
                return Poll::Ready(Some(value));
            }
            if gone() {
                return Poll::Ready(None);
            }
            self.ready.register(cx.waker());
            Poll::Pending
        })
        .await
    }
}
