//! The cross-core mesh: one bounded queue per ordered pair of shards, plus wake-ups.
//!
//! Shard `i` sends to shard `j` by pushing onto queue `(i, j)` and then, once per batch,
//! waking `j`. Every queue is bounded by `queue_capacity` items; a full queue hands the item
//! back so the sender can park that work (backpressure, never loss). When a sender waits for
//! room it raises a per-pair "space wanted" flag; the receiver, after draining, lowers the flag
//! and wakes that sender.
//!
//! Lost wake-up freedom rests on two Dekker pairs, each with a `SeqCst` fence on both sides:
//! "push, fence, read inbox flag" against "reset inbox flag, fence, drain" (inside
//! [`CrossNotify`]), and "raise space flag, fence, check full" against "pop, fence, read space
//! flag" (here).

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::notify::CrossNotify;

/// Keeps per-shard and per-pair state on separate cache lines so shards do not false-share.
#[repr(align(128))]
struct CachePadded<T>(T);

/// The state of one ordered pair `(from, to)`.
struct Lane<T> {
    queue: ArrayQueue<T>,
    /// Set by the sender while it waits for room; cleared by the receiver when it wakes it.
    space_wanted: AtomicBool,
    /// Wakes the sender's task waiting in `wait_for_space`.
    space: CrossNotify,
}

/// The cross-core mesh: queue (from, to) for every ordered pair, bounded, plus one CrossNotify per receiving shard.
///
/// Created once, before spawning shards, and shared as an `Arc`. Each shard takes its
/// [`MeshEndpoint`] with [`Mesh::endpoint`].
pub struct Mesh<T> {
    shard_count: usize,
    queue_capacity: usize,
    /// Indexed by `from * shard_count + to`.
    lanes: Box<[CachePadded<Lane<T>>]>,
    /// Indexed by the receiving shard.
    inboxes: Box<[CachePadded<CrossNotify>]>,
}

impl<T: Send> Mesh<T> {
    /// Builds the mesh for `shard_count` shards with `queue_capacity` items per ordered pair.
    ///
    /// # Panics
    /// If `shard_count` or `queue_capacity` is zero (a programmer error: the broker validates
    /// its configuration before it builds the mesh).
    pub fn new(shard_count: usize, queue_capacity: usize) -> Arc<Self> {
        assert!(shard_count > 0, "a mesh needs at least one shard");
        assert!(
            queue_capacity > 0,
            "mesh queues need room for at least one item"
        );
        let lanes = (0..shard_count * shard_count)
            .map(|_| {
                CachePadded(Lane {
                    queue: ArrayQueue::new(queue_capacity),
                    space_wanted: AtomicBool::new(false),
                    space: CrossNotify::new(),
                })
            })
            .collect();
        let inboxes = (0..shard_count)
            .map(|_| CachePadded(CrossNotify::new()))
            .collect();
        Arc::new(Self {
            shard_count,
            queue_capacity,
            lanes,
            inboxes,
        })
    }

    /// Shard `shard_id`'s handle on the mesh; take one per shard and use it on that shard's thread.
    ///
    /// # Panics
    /// If `shard_id >= shard_count`.
    pub fn endpoint(self: &Arc<Self>, shard_id: usize) -> MeshEndpoint<T> {
        assert!(shard_id < self.shard_count, "shard id out of range");
        MeshEndpoint {
            mesh: Arc::clone(self),
            shard_id,
            cursor: Cell::new(shard_id),
        }
    }
}

impl<T> Mesh<T> {
    /// The number of shards the mesh connects.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// The bound of every queue, in items.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// Wakes shard `to`'s `recv_batch` from any thread (for example a control thread after it enqueued work).
    pub fn wake(&self, to: usize) {
        self.inboxes[to].0.notify();
    }

    fn lane(&self, from: usize, to: usize) -> &Lane<T> {
        debug_assert!(from < self.shard_count && to < self.shard_count);
        &self.lanes[from * self.shard_count + to].0
    }
}

/// A shard's handle on the mesh (used only on that shard's thread by convention).
///
/// `Send` (so it can be built before the shard starts) but not `Sync`: the round-robin cursor
/// is a plain `Cell`. Within a shard, share it with `Rc`.
///
/// Sending to yourself is allowed (queue `(i, i)` exists) so code paths can stay uniform; the
/// mesh gives it no special treatment. Delivering locally without the mesh is cheaper, so the
/// broker is expected to use it only where uniformity matters more than a queue hop.
pub struct MeshEndpoint<T> {
    mesh: Arc<Mesh<T>>,
    shard_id: usize,
    /// The sender that `try_recv_batch` serves first next time; rotates for fairness.
    cursor: Cell<usize>,
}

impl<T: Send> MeshEndpoint<T> {
    /// This endpoint's shard.
    pub fn shard_id(&self) -> usize {
        self.shard_id
    }

    /// The number of shards in the mesh.
    pub fn shard_count(&self) -> usize {
        self.mesh.shard_count
    }

    /// The mesh this endpoint belongs to.
    pub fn mesh(&self) -> &Arc<Mesh<T>> {
        &self.mesh
    }

    /// Enqueues without waking; a full queue hands the item back (backpressure: the caller parks it, never drops QoS>0).
    pub fn try_send(&self, to: usize, item: T) -> Result<(), T> {
        self.mesh.lane(self.shard_id, to).queue.push(item)
    }

    /// Whether queue (self -> to) currently has room for at least one item.
    pub fn has_room(&self, to: usize) -> bool {
        !self.mesh.lane(self.shard_id, to).queue.is_full()
    }

    /// Wakes shard `to`; call once per batch after the `try_send` calls, since a wake of a parked shard costs tens of microseconds.
    pub fn wake(&self, to: usize) {
        self.mesh.wake(to);
    }

    /// Drains up to `max` items from all inbound queues into `out` as `(from, item)`, round-robin across senders; returns the count. Never blocks.
    ///
    /// Fairness: each sender first gets a quota of `ceil(max / shard_count)`, starting from a
    /// sender that rotates on every call; what is left of `max` is then filled greedily in the
    /// same order. So a hot sender cannot starve the others, and a lone sender still fills the
    /// whole batch.
    pub fn try_recv_batch(&self, out: &mut Vec<(usize, T)>, max: usize) -> usize {
        let shard_count = self.mesh.shard_count;
        if max == 0 {
            return 0;
        }
        let start = self.cursor.get();
        self.cursor.set((start + 1) % shard_count);
        let quota = max.div_ceil(shard_count);
        let mut received = 0;
        for pass_quota in [quota, max] {
            for step in 0..shard_count {
                if received == max {
                    break;
                }
                let from = (start + step) % shard_count;
                let limit = pass_quota.min(max - received);
                received += self.drain_lane(from, out, limit);
            }
        }
        if received > 0 {
            self.wake_senders_waiting_for_space();
        }
        received
    }

    /// Waits until at least one inbound item is available (or a wake happened), then drains like `try_recv_batch`.
    ///
    /// May return 0 when a wake arrived without items (a bare `wake`, or a wake whose items an
    /// earlier drain already took); callers loop. Only one task per shard may await this at a
    /// time. Cancel-safe: dropping the future loses no item (items move into `out` only in
    /// the poll that returns).
    pub async fn recv_batch(&self, out: &mut Vec<(usize, T)>, max: usize) -> usize {
        let inbox = &self.mesh.inboxes[self.shard_id].0;
        // Consume the wake-up that announced what we are about to drain, so that the next
        // call parks instead of returning 0 once.
        inbox.take_pending();
        let received = self.try_recv_batch(out, max);
        if received > 0 {
            return received;
        }
        inbox.notified().await;
        self.try_recv_batch(out, max)
    }

    /// Resolves when queue (self -> to) has room; the receiver, after draining it, wakes this sender.
    ///
    /// Resolves at once if there is room now. Also wakes `to`, so a sender that forgot its
    /// batch wake cannot deadlock against a parked receiver. Only one task per (self, to) pair
    /// may await this at a time: a second waiter would replace the first's waker.
    pub async fn wait_for_space(&self, to: usize) {
        let lane = self.mesh.lane(self.shard_id, to);
        loop {
            if !lane.queue.is_full() {
                return;
            }
            lane.space_wanted.store(true, Ordering::Relaxed);
            // Pairs with the fence in `wake_senders_waiting_for_space`: either the receiver
            // sees the flag, or this check sees its pops.
            fence(Ordering::SeqCst);
            if !lane.queue.is_full() {
                lane.space_wanted.store(false, Ordering::Relaxed);
                return;
            }
            self.wake(to);
            lane.space.notified().await;
        }
    }

    fn drain_lane(&self, from: usize, out: &mut Vec<(usize, T)>, limit: usize) -> usize {
        let queue = &self.mesh.lane(from, self.shard_id).queue;
        // `pop` on an empty ArrayQueue issues a SeqCst fence; `is_empty` is two plain loads,
        // and most lanes are empty most of the time.
        if queue.is_empty() {
            return 0;
        }
        let mut taken = 0;
        while taken < limit {
            match queue.pop() {
                Some(item) => {
                    out.push((from, item));
                    taken += 1;
                }
                None => break,
            }
        }
        taken
    }

    fn wake_senders_waiting_for_space(&self) {
        fence(Ordering::SeqCst);
        for from in 0..self.mesh.shard_count {
            let lane = self.mesh.lane(from, self.shard_id);
            if lane.space_wanted.load(Ordering::Relaxed)
                && lane.space_wanted.swap(false, Ordering::Relaxed)
            {
                lane.space.notify();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_returns_the_item() {
        let mesh = Mesh::<u64>::new(2, 4);
        let sender = mesh.endpoint(0);
        for item in 0..4 {
            assert_eq!(sender.try_send(1, item), Ok(()));
        }
        assert!(!sender.has_room(1));
        assert_eq!(sender.try_send(1, 4), Err(4));
        // Other lanes are independent.
        assert_eq!(sender.try_send(0, 9), Ok(()));
        let receiver = mesh.endpoint(1);
        let mut out = Vec::new();
        assert_eq!(receiver.try_recv_batch(&mut out, 16), 4);
        assert_eq!(out, vec![(0, 0), (0, 1), (0, 2), (0, 3)]);
        assert!(sender.has_room(1));
    }

    #[test]
    fn receive_is_fair_across_senders() {
        let mesh = Mesh::<u64>::new(4, 64);
        for from in 0..4 {
            let endpoint = mesh.endpoint(from);
            for item in 0..32 {
                endpoint.try_send(3, item).unwrap();
            }
        }
        let receiver = mesh.endpoint(3);
        let mut out = Vec::new();
        assert_eq!(receiver.try_recv_batch(&mut out, 8), 8);
        let mut per_sender = [0; 4];
        for (from, _) in &out {
            per_sender[*from] += 1;
        }
        assert_eq!(per_sender, [2, 2, 2, 2]);
    }

    #[test]
    fn lone_sender_fills_the_whole_batch() {
        let mesh = Mesh::<u64>::new(8, 64);
        let sender = mesh.endpoint(5);
        for item in 0..64 {
            sender.try_send(2, item).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(mesh.endpoint(2).try_recv_batch(&mut out, 40), 40);
        let expected: Vec<_> = (0..40).map(|item| (5, item)).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn send_to_self_works() {
        let mesh = Mesh::<&str>::new(1, 2);
        let endpoint = mesh.endpoint(0);
        endpoint.try_send(0, "a").unwrap();
        let mut out = Vec::new();
        assert_eq!(endpoint.try_recv_batch(&mut out, 4), 1);
        assert_eq!(out, vec![(0, "a")]);
    }
}
