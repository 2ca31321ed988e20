//! Requests that wait for answers from other shards: a REST publish at QoS 1 (how many
//! subscribers each shard queued the message for) and `/readyz` (does every shard answer).
//!
//! The asking shard registers a [`CountWait`] under a token and sends one mesh message per
//! shard; answers arrive as `MeshMsg::Counted` on the same FIFO lanes as the deliveries they
//! follow, so an answer means the delivery before it was applied. The last answer gives
//! [`Output::Counted`]; the driver's waiting task then takes the total with
//! [`Shard::take_count`] (or gives up with [`Shard::forget_count`]).

use std::time::Instant;

use super::{Output, Shard};
use crate::mesh_msg::MeshMsg;
use ringmq_proto::message::SharedMessage;

/// Answers still expected for one waiting request.
#[derive(Debug)]
pub struct CountWait {
    /// Answers not yet received.
    pending: u32,
    /// Deliveries counted so far.
    count: u64,
}

impl Shard {
    /// Publishes `message` and registers a wait for the count of deliveries on every shard.
    /// Returns the token; [`Output::Counted`] says when every shard answered.
    pub fn publish_counted(&mut self, message: SharedMessage, now: Instant) -> u64 {
        let token = self.next_token();
        let (local, asked) = self.route(message, Some(token), now);
        // `sync` durability: the answer also waits for every log to hold the copies.
        let commit = u32::from(self.count_commit(token));
        self.count_waits.insert(
            token,
            CountWait {
                pending: asked.count_ones() + commit,
                count: local,
            },
        );
        if asked == 0 && commit == 0 {
            self.outputs.push_back(Output::Counted(token));
        }
        self.flush(now);
        token
    }

    /// `sync` durability: a token whose count ([`Output::Counted`], 0) comes once every log
    /// holds what was recorded so far; `None` when commits are off.
    pub fn commit_wait(&mut self, now: Instant) -> Option<u64> {
        if !self.commits() {
            return None;
        }
        let token = self.next_token();
        self.count_commit(token);
        self.count_waits.insert(
            token,
            CountWait {
                pending: 1,
                count: 0,
            },
        );
        self.flush(now);
        Some(token)
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
            },
        );
        if asked == 0 {
            self.outputs.push_back(Output::Counted(token));
        }
        self.flush(now);
        token
    }

    /// One shard's answer to a counted request.
    pub(super) fn counted(&mut self, token: u64, count: u64) {
        if let Some(wait) = self.count_waits.get_mut(&token) {
            wait.pending = wait.pending.saturating_sub(1);
            wait.count += count;
            if wait.pending == 0 {
                self.outputs.push_back(Output::Counted(token));
            }
        }
    }

    /// The total count under `token` once every asked shard answered (the wait ends);
    /// `None` while answers are missing, or for an unknown token.
    pub fn take_count(&mut self, token: u64) -> Option<u64> {
        let wait = self.count_waits.get(&token)?;
        if wait.pending > 0 {
            return None;
        }
        let count = wait.count;
        self.count_waits.remove(&token);
        Some(count)
    }

    /// True while a wait under `token` exists (answered or not).
    pub fn count_pending(&self, token: u64) -> bool {
        self.count_waits.contains_key(&token)
    }

    /// Drops the wait under `token` (its task gave up).
    pub fn forget_count(&mut self, token: u64) {
        self.count_waits.remove(&token);
    }
}
