//! Routing data structures for ringmq: pure, no IO, one instance per shard.
//!
//! The parts, in the order a message meets them (DESIGN.md "The data path"):
//! - [`topic`]: validation of topic names (PUBLISH) and filters (SUBSCRIBE), `$share/` parsing,
//!   and [`topic::matches`], the reference matcher every trie is tested against.
//! - [`trie`]: [`SubscriptionTrie`], a shard's local subscribers per filter. Matching walks only
//!   the branches a topic can reach (exact level, `+`, `#`), never all filters.
//! - [`index`]: [`ShardIndex`], each shard's replica of "which shards subscribe to which filter"
//!   (one bit per shard), so a publish is forwarded once per interested shard; and
//!   [`LocalFilterCounts`], which tells a shard when its first/last subscription on a filter
//!   changes and must be broadcast to the replicas.
//! - [`shared`]: [`SharedIndex`], the replicated member counts of `$share` groups, from which the
//!   publishing shard picks one member shard by weighted round-robin; and [`LocalGroups`], from
//!   which that shard picks one local member.
//! - [`subject`]: topics and filters as NATS subjects, for a cluster of nodes meeting on NATS.
//! - [`retained`]: [`RetainedStore`], retained messages by topic, answering a wildcard SUBSCRIBE
//!   by walking only matching branches.
//!
//! Every structure is keyed by filter/topic text only. Org scoping is the caller's: keep one
//! instance per org (prefixing the org as a topic level would break the `$` rule, which applies
//! to the first level only).
//!
//! ```
//! use ringmq_router::{parse_shared, validate_filter, ShardIndex, SubscriptionTrie};
//!
//! let levels_max = 16;
//! assert!(parse_shared("sport/#", levels_max).unwrap().is_none());
//! validate_filter("sport/#", levels_max).unwrap();
//!
//! let mut local = SubscriptionTrie::new();
//! local.insert("sport/#", 7u32, 1u8); // session slot 7, QoS 1
//! let mut replica = ShardIndex::new();
//! replica.add("sport/#", 3);
//!
//! let mut sessions = Vec::new();
//! local.for_each_match("sport/tennis", |slot, &qos| sessions.push((slot, qos)));
//! assert_eq!(sessions, [(7, 1)]);
//! assert_eq!(replica.matching_shards("sport/tennis"), 1 << 3);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod index;
mod keyed;
pub mod retained;
pub mod shared;
pub mod subject;
pub mod topic;
pub mod trie;

pub use index::{LocalFilterCounts, ShardIndex, SHARD_COUNT_MAX};
pub use retained::RetainedStore;
pub use shared::{LocalGroups, SharedIndex};
pub use topic::{
    fnv1a, is_org_level, level_count, matches, org_scope, parse_shared, scoped, split_shared,
    strip_scope, unscoped, validate_filter, validate_topic_name, SharedFilter, TopicError,
    FNV_OFFSET, ORG_MARK, SHARE_PREFIX, TOPIC_BYTES_MAX,
};
pub use trie::SubscriptionTrie;

/// The hash map used throughout: ahash, which is much faster than SipHash on short level strings.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
