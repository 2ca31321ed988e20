//! The replicated shard index (DESIGN.md data path 3 and 6).
//!
//! Every shard keeps a [`ShardIndex`]: for each filter, the set of shards holding at least one
//! subscription on it, as a bitmask. A publish is matched against it once and forwarded once per
//! shard bit, never once per subscriber. To keep the replicas cheap to update, a shard broadcasts
//! only when its own count on a filter goes 0 -> 1 or 1 -> 0, which [`LocalFilterCounts`] tells.

use crate::trie::FilterTrie;
use crate::Map;

/// Most shards the index can describe: one bit each in a `u64`.
pub const SHARD_COUNT_MAX: usize = 64;

/// Replica of "which shards have at least one subscriber on which filter", up to 64 shards.
#[derive(Debug, Default)]
pub struct ShardIndex {
    trie: FilterTrie<u64>,
    filter_count: usize,
}

impl ShardIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `shard` has a subscription on `filter` (idempotent).
    pub fn add(&mut self, filter: &str, shard: u16) {
        let bit = shard_bit(shard);
        let mask = self.trie.slot_or_insert(filter);
        if *mask == 0 {
            self.filter_count += 1;
        }
        *mask |= bit;
    }

    /// Records that `shard` no longer has a subscription on `filter` (idempotent).
    pub fn remove(&mut self, filter: &str, shard: u16) {
        let bit = shard_bit(shard);
        let emptied = self.trie.update(filter, |mask| {
            let had = *mask != 0;
            *mask &= !bit;
            had && *mask == 0
        });
        if emptied == Some(true) {
            self.filter_count -= 1;
        }
    }

    /// Bitmask (bit i = shard i) of shards with a subscription matching `topic`.
    pub fn matching_shards(&self, topic: &str) -> u64 {
        let mut shards = 0;
        self.trie.for_each_match(topic, |mask| shards |= *mask);
        shards
    }

    /// Bitmask of shards subscribed to exactly `filter` (0 if none).
    pub fn shards_of(&self, filter: &str) -> u64 {
        self.trie.slot(filter).copied().unwrap_or(0)
    }

    /// Number of filters with at least one shard.
    pub fn filter_count(&self) -> usize {
        self.filter_count
    }

    /// Number of trie nodes including the root (1 when empty); O(nodes), for tests and metrics.
    pub fn node_count(&self) -> usize {
        self.trie.node_count()
    }
}

fn shard_bit(shard: u16) -> u64 {
    // A shard number past the mask is a configuration bug, not bad input: crash loudly.
    assert!(
        usize::from(shard) < SHARD_COUNT_MAX,
        "shard {shard} >= {SHARD_COUNT_MAX}"
    );
    1 << shard
}

/// Per-shard reference counts per filter, so only the first/last local subscription on a filter is broadcast to replicas.
#[derive(Debug, Default)]
pub struct LocalFilterCounts {
    counts: Map<Box<str>, u32>,
}

impl LocalFilterCounts {
    /// No filters counted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes room for `more` filters (a start restoring many at once rehashes less).
    pub fn reserve(&mut self, more: usize) {
        self.counts.reserve(more);
    }

    /// Counts one more local subscription on `filter`; true if it went 0 -> 1 (broadcast an add).
    pub fn increment(&mut self, filter: &str) -> bool {
        if let Some(count) = self.counts.get_mut(filter) {
            *count += 1;
            return false;
        }
        self.counts.insert(filter.into(), 1);
        true
    }

    /// Counts one less local subscription on `filter`; true if it went 1 -> 0 (broadcast a remove).
    pub fn decrement(&mut self, filter: &str) -> bool {
        let Some(count) = self.counts.get_mut(filter) else {
            debug_assert!(false, "decrement of uncounted filter {filter:?}");
            return false;
        };
        *count -= 1;
        if *count == 0 {
            self.counts.remove(filter);
            return true;
        }
        false
    }

    /// Local subscriptions on `filter`.
    pub fn count(&self, filter: &str) -> u32 {
        self.counts.get(filter).copied().unwrap_or(0)
    }

    /// Number of filters with a non-zero count.
    pub fn filter_count(&self) -> usize {
        self.counts.len()
    }

    /// Iterates `(filter, count)`, e.g. to send a full snapshot to a replica that (re)joins.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.counts
            .iter()
            .map(|(filter, &count)| (&**filter, count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_index_matches_and_prunes() {
        let mut index = ShardIndex::new();
        index.add("a/+", 1);
        index.add("a/+", 1);
        index.add("a/b", 3);
        index.add("#", 5);
        index.add("$SYS/#", 63);
        assert_eq!(index.filter_count(), 4);
        assert_eq!(index.matching_shards("a/b"), (1 << 1) | (1 << 3) | (1 << 5));
        assert_eq!(index.matching_shards("a/c"), (1 << 1) | (1 << 5));
        assert_eq!(index.matching_shards("$SYS/x"), 1 << 63);
        assert_eq!(index.shards_of("a/+"), 1 << 1);
        index.remove("a/+", 1);
        index.remove("a/+", 1);
        index.remove("a/b", 4);
        assert_eq!(index.matching_shards("a/c"), 1 << 5);
        assert_eq!(index.matching_shards("a/b"), (1 << 3) | (1 << 5));
        index.remove("a/b", 3);
        index.remove("#", 5);
        index.remove("$SYS/#", 63);
        assert_eq!(index.filter_count(), 0);
        assert_eq!(index.node_count(), 1);
        assert_eq!(index.matching_shards("a/b"), 0);
    }

    #[test]
    #[should_panic]
    fn shard_past_mask_is_a_bug() {
        ShardIndex::new().add("a", 64);
    }

    #[test]
    fn local_counts_report_first_and_last() {
        let mut counts = LocalFilterCounts::new();
        assert!(counts.increment("a/#"));
        assert!(!counts.increment("a/#"));
        assert!(counts.increment("b"));
        assert_eq!(counts.count("a/#"), 2);
        assert_eq!(counts.filter_count(), 2);
        assert!(!counts.decrement("a/#"));
        assert!(counts.decrement("a/#"));
        assert_eq!(counts.count("a/#"), 0);
        assert_eq!(counts.iter().collect::<Vec<_>>(), vec![("b", 1)]);
        assert!(counts.increment("a/#"));
    }
}
