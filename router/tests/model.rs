//! Model tests: every trie agrees with a linear scan using the reference matcher `matches()`.
//!
//! Levels come from a small alphabet ({a, b, $c, ""} plus wildcards) so random filters and
//! topics collide often, covering empty levels, `$` topics and overlapping wildcards.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use ringmq_router::{
    matches, org_scope, scoped, unscoped, validate_filter, validate_topic_name, RetainedStore,
    ShardIndex, SharedIndex, SubscriptionTrie,
};

const LEVELS_MAX: usize = 8;

fn topic_level() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a"), Just("b"), Just("$c"), Just("")]
}

fn filter_level() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("a"),
        Just("b"),
        Just("$c"),
        Just(""),
        Just("+"),
        Just("+")
    ]
}

/// Org scope of a generated topic or filter: mostly the default org (0), sometimes org 1 or 2,
/// so the tries are checked against the reference matcher across tenants too.
fn org() -> impl Strategy<Value = u32> {
    prop_oneof![4 => Just(0u32), 1 => Just(1u32), 1 => Just(2u32)]
}

fn topic() -> impl Strategy<Value = String> {
    // A topic of one empty level is the empty string, which is not a valid topic name.
    (org(), prop::collection::vec(topic_level(), 1..5))
        .prop_map(|(org, levels)| (org, levels.join("/")))
        .prop_filter("topic names are non-empty", |(_, topic)| !topic.is_empty())
        .prop_map(|(org, topic)| scoped(&org_scope(org), &topic))
}

fn filter() -> impl Strategy<Value = String> {
    (
        org(),
        prop::collection::vec(filter_level(), 0..5),
        any::<bool>(),
    )
        .prop_map(|(org, mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            (org, levels.join("/"))
        })
        .prop_filter("filters are non-empty", |(_, filter)| !filter.is_empty())
        .prop_map(|(org, filter)| scoped(&org_scope(org), &filter))
}

#[derive(Debug, Clone)]
enum Op {
    Insert(String, u8, u32),
    Remove(String, u8),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => (filter(), 0u8..6, any::<u32>()).prop_map(|(f, k, v)| Op::Insert(f, k, v)),
        2 => (filter(), 0u8..6).prop_map(|(f, k)| Op::Remove(f, k)),
    ];
    prop::collection::vec(op, 0..80)
}

proptest! {
    #[test]
    fn generated_inputs_are_valid(filter in filter(), topic in topic()) {
        // Clients send the unscoped forms; the broker adds the scope after validating.
        prop_assert_eq!(validate_filter(&unscoped(&filter).1, LEVELS_MAX), Ok(()));
        prop_assert_eq!(validate_topic_name(&unscoped(&topic).1, LEVELS_MAX), Ok(()));
    }

    #[test]
    fn subscription_trie_agrees_with_linear_scan(ops in ops(), topics in prop::collection::vec(topic(), 1..20)) {
        let mut trie = SubscriptionTrie::new();
        let mut model: BTreeMap<(String, u8), u32> = BTreeMap::new();
        for op in &ops {
            match op {
                Op::Insert(filter, key, value) => {
                    let old = trie.insert(filter, *key, (filter.clone(), *value));
                    let expected = model.insert((filter.clone(), *key), *value);
                    prop_assert_eq!(old.map(|(_, v)| v), expected);
                }
                Op::Remove(filter, key) => {
                    let old = trie.remove(filter, *key);
                    let expected = model.remove(&(filter.clone(), *key));
                    prop_assert_eq!(old.map(|(_, v)| v), expected);
                }
            }
        }
        prop_assert_eq!(trie.len(), model.len());
        let filters: BTreeSet<&String> = model.keys().map(|(f, _)| f).collect();
        prop_assert_eq!(trie.filter_count(), filters.len());
        for ((filter, key), value) in &model {
            prop_assert_eq!(trie.get(filter, *key).map(|(_, v)| *v), Some(*value));
        }
        for topic in &topics {
            let mut got = Vec::new();
            trie.for_each_match(topic, |key, (filter, value)| got.push((filter.clone(), key, *value)));
            got.sort();
            let expected: Vec<(String, u8, u32)> = model
                .iter()
                .filter(|((filter, _), _)| matches(filter, topic))
                .map(|((filter, key), value)| (filter.clone(), *key, *value))
                .collect();
            prop_assert_eq!(got, expected, "topic {:?}", topic);
        }
        for (filter, key) in model.keys() {
            prop_assert!(trie.remove(filter, *key).is_some());
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.filter_count(), 0);
        prop_assert_eq!(trie.node_count(), 1);
    }

    #[test]
    fn retained_store_agrees_with_linear_scan(
        inserts in prop::collection::vec(topic(), 0..40),
        removes in prop::collection::vec(topic(), 0..20),
        filters in prop::collection::vec(filter(), 1..20),
    ) {
        let mut store = RetainedStore::new();
        let mut model: BTreeMap<String, usize> = BTreeMap::new();
        for (i, topic) in inserts.iter().enumerate() {
            prop_assert_eq!(store.insert(topic, i), model.insert(topic.clone(), i));
        }
        for topic in &removes {
            prop_assert_eq!(store.remove(topic), model.remove(topic));
        }
        prop_assert_eq!(store.len(), model.len());
        let mut buffer = String::new();
        for filter in &filters {
            let mut got = Vec::new();
            store.for_each_match_with(filter, &mut buffer, |topic, &value| got.push((topic.to_owned(), value)));
            got.sort();
            let expected: Vec<(String, usize)> = model
                .iter()
                .filter(|(topic, _)| matches(filter, topic))
                .map(|(topic, value)| (topic.clone(), *value))
                .collect();
            prop_assert_eq!(got, expected, "filter {:?}", filter);
        }
        for topic in model.keys() {
            prop_assert_eq!(store.get(topic), model.get(topic));
            prop_assert!(store.remove(topic).is_some());
        }
        prop_assert!(store.is_empty());
        prop_assert_eq!(store.node_count(), 1);
    }

    #[test]
    fn shard_index_agrees_with_linear_model(
        ops in prop::collection::vec((any::<bool>(), filter(), 0u16..64), 0..80),
        topics in prop::collection::vec(topic(), 1..20),
    ) {
        let mut index = ShardIndex::new();
        let mut model: BTreeMap<String, u64> = BTreeMap::new();
        for (add, filter, shard) in &ops {
            if *add {
                index.add(filter, *shard);
                *model.entry(filter.clone()).or_default() |= 1 << shard;
            } else {
                index.remove(filter, *shard);
                if let Some(mask) = model.get_mut(filter) {
                    *mask &= !(1 << shard);
                    if *mask == 0 {
                        model.remove(filter);
                    }
                }
            }
        }
        prop_assert_eq!(index.filter_count(), model.len());
        for topic in &topics {
            let expected = model
                .iter()
                .filter(|(filter, _)| matches(filter, topic))
                .fold(0, |shards, (_, mask)| shards | mask);
            prop_assert_eq!(index.matching_shards(topic), expected, "topic {:?}", topic);
        }
        for (filter, mask) in &model {
            for shard in 0..64u16 {
                if mask & (1 << shard) != 0 {
                    index.remove(filter, shard);
                }
            }
        }
        prop_assert_eq!(index.filter_count(), 0);
        prop_assert_eq!(index.node_count(), 1);
    }

    #[test]
    fn shared_index_picks_one_member_shard_per_matching_group(
        members in prop::collection::vec((0u8..3, filter(), 0u16..4), 0..40),
        topics in prop::collection::vec(topic(), 1..10),
    ) {
        let mut index = SharedIndex::new();
        let mut model: BTreeMap<(String, String), BTreeMap<u16, u32>> = BTreeMap::new();
        for (group, filter, shard) in &members {
            let group = format!("g{group}");
            index.add_member(&group, filter, *shard);
            *model.entry((group, filter.clone())).or_default().entry(*shard).or_default() += 1;
        }
        for topic in &topics {
            let mut got = Vec::new();
            index.route(topic, |group, filter, shard| got.push((group.to_owned(), filter.to_owned(), shard)));
            got.sort();
            let expected: Vec<(String, String)> = model
                .keys()
                .filter(|(_, filter)| matches(filter, topic))
                .cloned()
                .collect();
            let got_groups: Vec<(String, String)> = got.iter().map(|(g, f, _)| (g.clone(), f.clone())).collect();
            prop_assert_eq!(got_groups, expected);
            for (group, filter, shard) in &got {
                prop_assert!(model[&(group.clone(), filter.clone())].contains_key(shard));
            }
        }
        for ((group, filter), shards) in &model {
            prop_assert_eq!(index.member_count(group, filter), shards.values().sum::<u32>());
            for (shard, count) in shards {
                for _ in 0..*count {
                    index.remove_member(group, filter, *shard);
                }
            }
        }
        prop_assert_eq!(index.node_count(), 1);
    }
}

proptest! {
    #[test]
    fn shared_index_weights_are_exact_per_cycle(weights in prop::collection::vec(1u32..6, 1..6), cycles in 1u32..4) {
        let mut index = SharedIndex::new();
        for (shard, weight) in weights.iter().enumerate() {
            for _ in 0..*weight {
                index.add_member("g", "t/#", shard as u16);
            }
        }
        let total: u32 = weights.iter().sum();
        let mut picks = vec![0u32; weights.len()];
        for _ in 0..total * cycles {
            let mut routed = 0;
            index.route("t/x", |_, _, shard| {
                picks[usize::from(shard)] += 1;
                routed += 1;
            });
            prop_assert_eq!(routed, 1);
        }
        let expected: Vec<u32> = weights.iter().map(|weight| weight * cycles).collect();
        prop_assert_eq!(picks, expected);
    }
}
