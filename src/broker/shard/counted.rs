//! Requests that wait for answers from other shards: a REST publish at QoS 1 (how many
//! subscribers each shard queued the message for) and `/readyz` (does every shard answer).
//!
//! The asking shard registers a [`CountWait`] under a token, sends one mesh message per shard
//! and awaits [`wait_counts`]; answers arrive as `MeshMsg::Counted` on the same FIFO lanes as
//! the deliveries they follow, so an answer means the delivery before it was applied.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::Shard;
use crate::broker::local_notify::LocalNotify;
use crate::broker::mesh_msg::MeshMsg;
use crate::message::SharedMessage;

/// Answers still expected for one waiting request.
#[derive(Debug)]
pub struct CountWait {
    /// Answers not yet received.
    pending: u32,
    /// Deliveries counted so far.
    count: u64,
    /// Wakes the waiting task.
    notify: Rc<LocalNotify>,
}

impl Shard {
    /// Publishes `message` and registers a wait for the count of deliveries on every shard.
    /// Returns the token to await with [`wait_counts`].
    pub fn publish_counted(&mut self, message: SharedMessage, now: Instant) -> u64 {
        let token = self.next_token();
        let (local, asked) = self.route(message, Some(token), now);
        self.count_waits.insert(
            token,
            CountWait {
                pending: asked.count_ones(),
                count: local,
                notify: Rc::new(LocalNotify::default()),
            },
        );
        self.flush(now);
        token
    }

    /// Asks every other shard to answer (through the mesh); returns the token to await.
    pub fn ping_all(&mut self, now: Instant) -> u64 {
        let token = self.next_token();
        let mut asked = 0u64;
        for shard in 0..self.count {
            if shard != self.id {
                asked |= 1 << shard;
                self.send(
                    shard,
                    MeshMsg::Ping {
                        reply_to: self.id,
                        token,
                    },
                );
            }
        }
        self.count_waits.insert(
            token,
            CountWait {
                pending: asked.count_ones(),
                count: 0,
                notify: Rc::new(LocalNotify::default()),
            },
        );
        self.flush(now);
        token
    }

    /// One shard's answer to a counted request.
    pub(super) fn counted(&mut self, token: u64, count: u64) {
        if let Some(wait) = self.count_waits.get_mut(&token) {
            wait.pending = wait.pending.saturating_sub(1);
            wait.count += count;
            if wait.pending == 0 {
                wait.notify.notify();
            }
        }
    }
}

/// Waits until every asked shard answered `token`, at most `timeout`; the total count, or
/// `None` on timeout (the wait is dropped either way).
pub async fn wait_counts(shard: &Rc<RefCell<Shard>>, token: u64, timeout: Duration) -> Option<u64> {
    let wait = poll_fn(|cx| {
        let mut s = shard.borrow_mut();
        match s.count_waits.get(&token) {
            None => Poll::Ready(None),
            Some(wait) if wait.pending == 0 => {
                let count = wait.count;
                s.count_waits.remove(&token);
                Poll::Ready(Some(count))
            }
            Some(wait) => {
                wait.notify.take();
                wait.notify.register(cx.waker());
                Poll::Pending
            }
        }
    });
    let outcome = monoio::time::timeout(timeout, wait).await.ok().flatten();
    shard.borrow_mut().count_waits.remove(&token);
    outcome
}

use ringmq_io::monoio;
