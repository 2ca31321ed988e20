//! Stream subscribers (the WebSocket and SSE streams of the HTTP front door) on a shard.
//!
//! A stream subscriber is a subscriber of its own kind: it sits in the shard's stream trie under
//! its org-scoped filter (and in the replicated index, like a session's filter, so publishes on
//! other shards reach it), and every match lands in its bounded ring. When the client falls
//! behind, the oldest entry is dropped and counted: a stream never stalls the shard or the
//! publishers. The connection task drains the ring and encodes the frames.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Shard;
use crate::broker::local_notify::LocalNotify;
use crate::message::SharedMessage;
use crate::mqtt::Str;

/// How long a closed SSE stream keeps its ring (and keeps filling it) for a reconnect that
/// sends `Last-Event-ID`.
pub const DETACHED_KEEP: Duration = Duration::from_secs(60);

/// Closed SSE streams kept per shard at most; beyond it a closing stream is dropped at once
/// (clients that reconnect in a loop must not pile up rings).
pub const DETACHED_MAX: usize = 1024;

/// One entry of a stream's ring.
#[derive(Debug, Clone)]
pub struct StreamItem {
    /// Sequence number within the stream (the SSE event id's low part).
    pub seq: u64,
    /// The message.
    pub message: SharedMessage,
    /// Sent from the retained store when the stream opened.
    pub retained: bool,
    /// Unix milliseconds when the shard received it for this stream.
    pub received_ms: u64,
}

/// What a stream subscriber's connection task and the shard share.
#[derive(Debug)]
pub struct StreamState {
    /// Shard-unique id (part of SSE event ids).
    pub id: u32,
    /// Frames waiting for the client; at most `capacity`.
    ring: RefCell<VecDeque<StreamItem>>,
    capacity: usize,
    next_seq: Cell<u64>,
    /// Entries dropped because the client fell behind.
    pub dropped: Cell<u64>,
    /// Highest sequence number handed to the connection task.
    sent_through: Cell<u64>,
    /// Wakes the connection task when an entry arrives.
    pub notify: LocalNotify,
    /// Publisher client id the stream wants (`?device=`), unscoped.
    device: Option<String>,
    /// Publisher namespace the stream wants (`?ns=`).
    namespace: Option<String>,
    /// When the client went away (SSE keeps the ring for a while), if it did.
    detached_at: Cell<Option<Instant>>,
    /// The shard's counters (dropped frames are counted as they happen).
    stats: std::sync::Arc<crate::broker::stats::ShardStats>,
}

impl StreamState {
    fn push(&self, message: &SharedMessage, retained: bool) -> bool {
        if let Some(device) = &self.device {
            let publisher = match &message.device {
                Some(certified) => &**certified,
                None => ringmq_router::strip_scope(&message.publisher).1,
            };
            if publisher != device.as_str() {
                return false;
            }
        }
        if let Some(namespace) = &self.namespace {
            if message.namespace.as_deref() != Some(namespace.as_str()) {
                return false;
            }
        }
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
        true
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
        let gap = oldest > after + 1;
        let keep = ring.iter().filter(|item| item.seq > after).count();
        (gap, keep)
    }

    /// A reconnecting client saw everything up to and including `seq`: what follows is sent
    /// again, whether or not the old connection wrote it before it died.
    pub fn forget_through(&self, seq: u64) {
        self.sent_through.set(seq);
    }

    /// Marks the client gone (`Some`) or back (`None`).
    pub fn set_detached(&self, at: Option<Instant>) {
        self.detached_at.set(at);
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a stream asks for.
#[derive(Debug, Clone)]
pub struct StreamFilter {
    /// The org (routing number).
    pub org: u32,
    /// MQTT filter as the client gave it (unscoped), e.g. `#` or `devices/+/temp`.
    pub topic: String,
    /// Only messages published by this client id.
    pub device: Option<String>,
    /// Only messages published by users with this namespace.
    pub namespace: Option<String>,
}

/// A stream registered on the shard.
#[derive(Debug)]
pub struct StreamEntry {
    state: Rc<StreamState>,
    /// The org-scoped filter in the trie and index.
    filter: Str,
}

impl Shard {
    /// Registers a stream subscriber; retained messages matching its filter go into its ring
    /// first. Returns the shared state the connection task drains.
    pub fn open_stream(&mut self, filter: &StreamFilter, capacity: usize) -> Rc<StreamState> {
        let scope = ringmq_router::org_scope(filter.org);
        let scoped = Str::from(ringmq_router::scoped(&scope, &filter.topic));
        self.stream_counter = self.stream_counter.wrapping_add(1);
        // The shard's id in the top byte: an SSE reconnect that lands on another shard must
        // not reattach to that shard's stream with the same counter.
        let id = (u32::from(self.id) << 24) | (self.stream_counter & 0x00FF_FFFF);
        let state = Rc::new(StreamState {
            id,
            ring: RefCell::new(VecDeque::with_capacity(capacity.min(64))),
            capacity: capacity.max(1),
            next_seq: Cell::new(1),
            dropped: Cell::new(0),
            sent_through: Cell::new(0),
            notify: LocalNotify::default(),
            device: filter.device.clone(),
            namespace: filter.namespace.clone(),
            detached_at: Cell::new(None),
            stats: std::sync::Arc::clone(&self.stats),
        });
        let mut retained = Vec::new();
        self.retained
            .for_each_match(&scoped, |_, message| retained.push(message.clone()));
        for message in retained {
            state.push(&message, true);
        }
        self.stream_trie.insert(&scoped, id, ());
        if self.filter_counts.increment(&scoped) {
            self.announce_filter(&scoped, true);
        }
        self.streams.insert(
            id,
            StreamEntry {
                state: Rc::clone(&state),
                filter: scoped,
            },
        );
        self.stats.stream_subscribers.add(1);
        self.flush(Instant::now());
        state
    }

    /// A detached stream of this shard by id, reattached for a reconnecting client.
    pub fn reattach_stream(&mut self, id: u32) -> Option<Rc<StreamState>> {
        let entry = self.streams.get(&id)?;
        entry.state.detached_at.get()?;
        entry.state.set_detached(None);
        self.stats.stream_subscribers.add(1);
        Some(Rc::clone(&entry.state))
    }

    /// The client of a stream went away: drop it now, or (`keep`) after [`DETACHED_KEEP`].
    pub fn close_stream(&mut self, id: u32, keep: bool) {
        self.stats.stream_subscribers.add(-1);
        if keep && self.streams.len() - self.attached_streams() < DETACHED_MAX {
            if let Some(entry) = self.streams.get(&id) {
                entry.state.set_detached(Some(Instant::now()));
                return;
            }
        }
        self.remove_stream(id);
    }

    fn remove_stream(&mut self, id: u32) {
        let Some(entry) = self.streams.remove(&id) else {
            return;
        };
        self.stream_trie.remove(&entry.filter, id);
        if self.filter_counts.decrement(&entry.filter) {
            self.announce_filter(&entry.filter, false);
        }
    }

    /// Wakes every stream's connection task (shutdown: they send their close and end).
    pub fn wake_streams(&self) {
        for entry in self.streams.values() {
            entry.state.notify.notify();
        }
    }

    /// Streams with a client attached.
    pub fn attached_streams(&self) -> usize {
        self.streams
            .values()
            .filter(|entry| entry.state.detached_at.get().is_none())
            .count()
    }

    /// Drops detached streams kept longer than [`DETACHED_KEEP`] (housekeeping).
    pub fn expire_streams(&mut self, now: Instant) {
        let expired: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, entry)| {
                entry
                    .state
                    .detached_at
                    .get()
                    .is_some_and(|at| now.duration_since(at) >= DETACHED_KEEP)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.remove_stream(id);
        }
        self.flush(now);
    }

    /// Hands a routed message to every matching stream on this shard.
    pub(super) fn deliver_streams(&mut self, message: &SharedMessage) {
        if self.streams.is_empty() {
            return;
        }
        let streams = &self.streams;
        self.stream_trie.for_each_match(&message.topic, |id, _| {
            if let Some(entry) = streams.get(&id) {
                entry.state.push(message, false);
            }
        });
    }
}
