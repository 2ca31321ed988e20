//! The ring of one WebSocket or SSE stream: what the shard core routed to the stream, kept
//! for its connection task (bounded, drop oldest), and for an SSE client that reconnects with
//! `Last-Event-ID` (entries already sent stay as history until evicted).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;

use super::local_notify::LocalNotify;
use super::stats::ShardStats;
use crate::message::SharedMessage;
use ringmq_core::shard::{ResumeToken, StreamEnd, StreamItem};

/// A stream's ring of frames, filled from the core's [`Output::StreamItem`]s and drained by the
/// stream's connection task.
#[derive(Debug)]
pub struct StreamRing {
    /// Shard-local id (the key of the shard's tables; never shown to clients).
    pub id: u32,
    /// Names the stream in SSE event ids.
    pub token: ResumeToken,
    /// Frames waiting for the client; at most `capacity`.
    ring: RefCell<VecDeque<StreamItem>>,
    capacity: usize,
    next_seq: Cell<u64>,
    /// Entries dropped because the client fell behind.
    pub dropped: Cell<u64>,
    /// Highest sequence number handed to the connection task.
    sent_through: Cell<u64>,
    /// Wakes the connection task when an entry arrives or the stream is ended.
    pub notify: LocalNotify,
    /// Set when the shard ended the stream (the connection task tells the client and closes).
    ended: Cell<Option<StreamEnd>>,
    /// The shard's counters (dropped frames are counted as they happen).
    stats: Arc<ShardStats>,
}

impl StreamRing {
    /// An empty ring of `capacity` entries for the stream the core opened as `state`.
    pub fn new(
        state: ringmq_core::shard::StreamState,
        capacity: usize,
        stats: Arc<ShardStats>,
    ) -> Self {
        StreamRing {
            id: state.id,
            token: state.token,
            ring: RefCell::new(VecDeque::with_capacity(capacity.clamp(1, 64))),
            capacity: capacity.max(1),
            next_seq: Cell::new(1),
            dropped: Cell::new(0),
            sent_through: Cell::new(0),
            notify: LocalNotify::default(),
            ended: Cell::new(None),
            stats,
        }
    }

    /// Appends a message (the oldest entry goes when the ring is full) and wakes the task.
    pub fn push(&self, message: &SharedMessage, retained: bool) {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        let mut ring = self.ring.borrow_mut();
        if ring.len() >= self.capacity {
            // Sent entries stay as history for an SSE `Last-Event-ID` replay; evicting one is
            // not a loss. Evicting one the client never got is.
            if let Some(evicted) = ring.pop_front() {
                if evicted.seq > self.sent_through.get() {
                    self.dropped.set(self.dropped.get() + 1);
                    self.stats.stream_frames_dropped.inc();
                }
            }
        }
        ring.push_back(StreamItem {
            seq,
            message: SharedMessage::clone(message),
            retained,
            received_ms: unix_millis(),
        });
        drop(ring);
        self.notify.notify();
    }

    /// Copies everything not yet sent, oldest first, and marks it sent. The entries stay in the
    /// ring (bounded) so a reconnecting SSE client can have them again.
    pub fn drain(&self, out: &mut Vec<StreamItem>) {
        let after = self.sent_through.get();
        let ring = self.ring.borrow();
        out.extend(ring.iter().filter(|item| item.seq > after).cloned());
        if let Some(last) = ring.back() {
            self.sent_through.set(last.seq.max(after));
        }
    }

    /// Whether some entries after `after` are no longer in the ring (a gap), for an SSE
    /// reconnect, and how many after it are.
    pub fn since(&self, after: u64) -> (bool, usize) {
        let ring = self.ring.borrow();
        let oldest = ring.front().map_or(self.next_seq.get(), |item| item.seq);
        let gap = oldest > after.saturating_add(1);
        let keep = ring.iter().filter(|item| item.seq > after).count();
        (gap, keep)
    }

    /// A reconnecting client saw everything up to and including `seq`: what follows is sent
    /// again, whether or not the old connection wrote it before it died. A `seq` beyond what
    /// the stream ever numbered counts as "everything so far", so later entries still go out.
    pub fn forget_through(&self, seq: u64) {
        self.sent_through
            .set(seq.min(self.next_seq.get().saturating_sub(1)));
    }

    /// Why the shard ended the stream, once it did.
    pub fn ended(&self) -> Option<StreamEnd> {
        self.ended.get()
    }

    /// The shard ended the stream: its task tells the client why and closes.
    pub fn end(&self, why: StreamEnd) {
        self.ended.set(Some(why));
        self.notify.notify();
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> SharedMessage {
        Arc::new(crate::message::Message {
            topic: crate::mqtt::Str::from("t"),
            payload: bytes::Bytes::from_static(b"x"),
            qos: crate::mqtt::QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            publisher: crate::mqtt::Str::from("p"),
            origin: crate::message::Origin::BROKER,
            namespace: None,
            device: None,
        })
    }

    fn ring(capacity: usize) -> StreamRing {
        let state = ringmq_core::shard::StreamState {
            id: 1,
            token: ResumeToken::random().unwrap(),
        };
        StreamRing::new(state, capacity, Arc::default())
    }

    #[test]
    fn a_resume_past_the_end_still_gets_later_entries() {
        let ring = ring(8);
        ring.forget_through(u64::MAX);
        assert_eq!(ring.since(u64::MAX), (false, 0));
        ring.push(&message(), false);
        let mut items = Vec::new();
        ring.drain(&mut items);
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn a_full_ring_drops_the_oldest_unsent_entry_and_counts_it() {
        let ring = ring(2);
        for _ in 0..3 {
            ring.push(&message(), false);
        }
        assert_eq!(ring.dropped.get(), 1);
        let mut items = Vec::new();
        ring.drain(&mut items);
        assert_eq!(items.iter().map(|i| i.seq).collect::<Vec<_>>(), [2, 3]);
        // Sent entries are history: evicting them is no loss.
        ring.push(&message(), false);
        assert_eq!(ring.dropped.get(), 1);
        assert_eq!(ring.since(2), (false, 2), "3 and 4 are kept");
        assert_eq!(ring.since(1), (true, 2), "2 is gone");
    }
}
