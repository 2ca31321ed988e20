//! The shard's replica of the retained messages, with what each org holds in it.
//!
//! Every shard keeps a full replica (payloads shared as `Bytes`), applied in each topic's
//! home-shard order, so a wildcard SUBSCRIBE is answered from local memory. The replica also
//! counts each org's topic + payload bytes: a retained PUBLISH is checked against the org's
//! quota and the broker's count bound *before* it is routed ([`RetainedReplica::room`]), so
//! the publisher hears 0x97 instead of the message being dropped later, or at another org's
//! expense.

use ahash::AHashMap;
use ringmq_router::RetainedStore;
use std::time::Instant;

use ringmq_proto::message::SharedMessage;
use ringmq_proto::mqtt::Str;

/// What a retained message counts against its org's quota: its topic and payload bytes.
pub fn retained_size(topic: &str, payload: usize) -> u64 {
    (topic.len() + payload) as u64
}

/// One shard's replica of the retained messages.
#[derive(Debug)]
pub struct RetainedReplica {
    store: RetainedStore<SharedMessage>,
    /// Topic + payload bytes held, per org (absent: none).
    bytes: AHashMap<u32, u64>,
    /// Messages kept at most (`limits.retained_messages_max`).
    messages_max: usize,
    /// Bytes one org keeps at most (`org_limits.retained_bytes_max`).
    org_bytes_max: u64,
    /// New topics refused at the count bound (warned at 1, 2, 4, 8, …: a full store with
    /// `$SYS` topics to set would otherwise warn at every publication).
    refused: u64,
}

impl RetainedReplica {
    /// An empty replica with these bounds.
    pub fn new(messages_max: usize, org_bytes_max: u64) -> RetainedReplica {
        RetainedReplica {
            store: RetainedStore::new(),
            bytes: AHashMap::new(),
            messages_max,
            org_bytes_max,
            refused: 0,
        }
    }

    /// An empty replica without bounds, for a start to fill straight from the log (see
    /// [`crate::durable::Recovered::replica`]); [`Self::bound_as`] gives it the shard's.
    pub fn unbounded() -> RetainedReplica {
        RetainedReplica::new(usize::MAX, u64::MAX)
    }

    /// Takes the bounds of `other`. A replica filled past them (the bounds shrank between
    /// runs) keeps what it holds and refuses new topics until it is below them.
    pub fn bound_as(&mut self, other: &RetainedReplica) {
        self.messages_max = other.messages_max;
        self.org_bytes_max = other.org_bytes_max;
        if self.len() > self.messages_max {
            tracing::warn!(
                held = self.len(),
                bound = self.messages_max,
                "more retained messages restored than retained_messages_max; new topics are \
                 refused until below it"
            );
        }
    }

    /// Applies a retained record of the log: the latest for a topic wins, and one whose
    /// message expired clears it.
    pub fn apply_record(&mut self, topic: &str, message: Option<SharedMessage>, now: Instant) {
        self.set(topic, message.filter(|m| !m.is_expired(now)));
    }

    /// An empty replica with the same bounds.
    pub fn emptied(&self) -> RetainedReplica {
        RetainedReplica::new(self.messages_max, self.org_bytes_max)
    }

    /// Fills the replica with the retained messages a start recovered (those not expired).
    /// Needs no other shard state, so a driver may run it on a thread of its own.
    pub fn restore(&mut self, recovered: &crate::durable::Recovered, now: Instant) {
        for (topic, message) in &recovered.retained {
            if !message.is_expired(now) {
                self.set(topic, Some(message.clone()));
            }
        }
    }

    /// Messages in the replica.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// True when the replica holds no message.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// The message retained on `topic` (scoped), if any.
    #[cfg(test)]
    pub fn get(&self, topic: &str) -> Option<&SharedMessage> {
        self.store.get(topic)
    }

    /// Calls `f` with every retained topic (scoped) and message.
    pub fn for_each(&self, mut f: impl FnMut(&str, &SharedMessage)) {
        self.store.for_each(|topic, message| f(topic, message));
    }

    /// Calls `f` with every retained message whose topic `filter` (scoped) matches.
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&SharedMessage)) {
        self.store.for_each_match(filter, |_, message| f(message));
    }

    /// Bytes `org` holds in this replica.
    pub fn org_bytes(&self, org: u32) -> u64 {
        self.bytes.get(&org).copied().unwrap_or(0)
    }

    /// Whether the org of `topic` (scoped) may keep a retained message of `payload` bytes
    /// there: the broker's count bound for a new topic, and the org's byte quota (what the
    /// topic holds now is freed first).
    pub fn room(&self, topic: &str, payload: usize) -> bool {
        let existing = self.store.get(topic);
        if existing.is_none() && self.store.len() >= self.messages_max {
            return false;
        }
        let org = ringmq_router::strip_scope(topic).0;
        let freed = existing.map_or(0, |old| retained_size(topic, old.payload.len()));
        self.org_bytes(org).saturating_sub(freed) + retained_size(topic, payload)
            <= self.org_bytes_max
    }

    /// Sets (`Some`) or clears a retained message, keeping the per-org tally; false when the
    /// message was not kept: past the count bound a new topic is not (a publish that raced
    /// [`Self::room`] on another shard, or the broker's own `$SYS` topics).
    pub fn set(&mut self, topic: &str, message: Option<SharedMessage>) -> bool {
        let org = ringmq_router::strip_scope(topic).0;
        let old = match message {
            None => self.store.remove(topic),
            Some(stored) => {
                if self.store.len() >= self.messages_max && self.store.get(topic).is_none() {
                    self.refused += 1;
                    if self.refused.is_power_of_two() {
                        tracing::warn!(%topic, refused = self.refused, "retained store full; message not retained");
                    }
                    return false;
                }
                *self.bytes.entry(org).or_insert(0) += retained_size(topic, stored.payload.len());
                self.store.insert(topic, stored)
            }
        };
        if let Some(old) = old {
            let size = retained_size(topic, old.payload.len());
            if let Some(held) = self.bytes.get_mut(&org) {
                *held = held.saturating_sub(size);
                if *held == 0 {
                    self.bytes.remove(&org);
                }
            }
        }
        true
    }

    /// Drops every retained message of `org` (the org was deleted); returns how many.
    pub fn forget_org(&mut self, org: u32) -> Vec<Str> {
        if org == 0 || !self.bytes.contains_key(&org) {
            return Vec::new();
        }
        let filter = ringmq_router::scoped(&ringmq_router::org_scope(org), "#");
        let mut topics: Vec<Str> = Vec::new();
        self.store
            .for_each_match(&filter, |_, message| topics.push(message.topic.clone()));
        for topic in &topics {
            self.set(topic, None);
        }
        self.bytes.remove(&org);
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::test_message;
    use ringmq_proto::mqtt::QoS;

    fn retained(topic: &str, payload: &'static [u8]) -> SharedMessage {
        test_message(topic, payload, QoS::AtMostOnce, true)
    }

    /// Retained bytes are counted per org: a replacement frees the old payload, a clear frees
    /// it all, one org's use leaves another org's room alone, and deleting an org lets its
    /// messages go.
    #[test]
    fn room_is_counted_per_org() {
        let mut r = RetainedReplica::new(100, 20);
        let b = |topic: &str| ringmq_router::scoped(&ringmq_router::org_scope(2), topic);
        let (t1, t2) = (b("t/1"), b("t/2"));
        assert!(r.room(&t1, 10));
        r.set(&t1, Some(retained(&t1, b"0123456789")));
        let used = retained_size(&t1, 10);
        assert_eq!(r.org_bytes(2), used);
        assert!(!r.room(&t2, 20 - used as usize), "over the org's quota");
        assert!(r.room(&t1, 10), "a replacement frees the old payload first");
        assert!(r.room("t/1", 15), "the default org has its own room");
        r.set(&t1, Some(retained(&t1, b"01234")));
        assert_eq!(r.org_bytes(2), retained_size(&t1, 5));
        r.set(&t1, None);
        assert_eq!(r.org_bytes(2), 0);
        assert!(r.room(&t2, 10));
        r.set(&t2, Some(retained(&t2, b"0123")));
        r.set("t/0", Some(retained("t/0", b"0123")));
        assert_eq!(r.forget_org(2).len(), 1);
        assert_eq!(r.org_bytes(2), 0);
        assert!(r.get(&t2).is_none() && r.get("t/0").is_some());
    }

    /// The broker-wide count bound refuses a new topic up front instead of dropping it later.
    #[test]
    fn the_count_bound_refuses_new_topics_only() {
        let mut r = RetainedReplica::new(1, 1 << 20);
        r.set("a", Some(retained("a", b"x")));
        assert!(!r.room("b", 1));
        assert!(r.room("a", 1));
        r.set("b", Some(retained("b", b"x")));
        assert!(
            r.get("b").is_none(),
            "a raced set past the bound is not kept"
        );
    }

    /// A start fills a replica straight from the log: the latest record of a topic wins, a
    /// clear or an expired message removes it; the shard's bounds come after, and a replica
    /// already past them keeps what it holds but takes no new topic.
    #[test]
    fn records_fill_an_unbounded_replica_that_then_takes_the_shards_bounds() {
        let now = Instant::now();
        let mut r = RetainedReplica::unbounded();
        r.apply_record("a", Some(retained("a", b"1")), now);
        r.apply_record("a", Some(retained("a", b"2")), now);
        r.apply_record("b", Some(retained("b", b"x")), now);
        r.apply_record("b", None, now);
        let mut expired = (*retained("c", b"x")).clone();
        expired.expires_at = Some(now);
        r.apply_record("c", Some(std::sync::Arc::new(expired)), now);
        assert_eq!(r.len(), 1);
        assert_eq!(&r.get("a").expect("a").payload[..], b"2");
        r.apply_record("d", Some(retained("d", b"x")), now);
        r.bound_as(&RetainedReplica::new(1, 1 << 20));
        assert_eq!(r.len(), 2, "kept past the bound");
        assert!(!r.room("e", 1), "no new topic");
        assert!(r.room("a", 1), "a replacement still is");
    }
}
