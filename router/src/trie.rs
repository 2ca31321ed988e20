//! The filter trie: [`SubscriptionTrie`] and the generic `FilterTrie` it and the replicated
//! indexes are built on.
//!
//! A node is one filter level. Its children are the literal next levels, plus one separate `+`
//! child; a filter ending in `#` is stored in the `hash` slot of the node *before* the `#`, so
//! `a/#` lives on node `a`. Matching a topic walks level by level, at each node following the
//! literal child and the `+` child and reporting the `hash` slot, so the work is bounded by the
//! branches the topic can reach, never by the number of filters.

use std::hash::Hash;

use crate::keyed::KeyedVec;
use crate::topic::split_level;
use crate::Map;

/// Payload kept at a filter position of a `FilterTrie`; an empty payload lets the node be pruned.
pub(crate) trait Slot: Default {
    /// True when the slot holds nothing and may be dropped.
    fn is_empty(&self) -> bool;
}

impl Slot for u64 {
    fn is_empty(&self) -> bool {
        *self == 0
    }
}

impl<K: Copy + Eq + Hash, V> Slot for KeyedVec<K, V> {
    fn is_empty(&self) -> bool {
        KeyedVec::is_empty(self)
    }
}

/// One level of a filter trie.
#[derive(Debug)]
pub(crate) struct Node<P> {
    children: Map<Box<str>, Node<P>>,
    plus: Option<Box<Node<P>>>,
    /// Filters that end at this node.
    exact: P,
    /// Filters that end with `/#` after this node (or `#` alone, on the root).
    hash: P,
}

impl<P: Slot> Default for Node<P> {
    fn default() -> Self {
        Self {
            children: Map::default(),
            plus: None,
            exact: P::default(),
            hash: P::default(),
        }
    }
}

impl<P: Slot> Node<P> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.exact.is_empty()
            && self.hash.is_empty()
    }

    fn count(&self) -> usize {
        1 + self.children.values().map(Node::count).sum::<usize>()
            + self.plus.as_ref().map_or(0, |plus| plus.count())
    }
}

/// A trie from (validated) filters to a payload `P`, matched against topic names.
#[derive(Debug)]
pub(crate) struct FilterTrie<P> {
    root: Node<P>,
}

impl<P: Slot> Default for FilterTrie<P> {
    fn default() -> Self {
        Self {
            root: Node::default(),
        }
    }
}

impl<P: Slot> FilterTrie<P> {
    /// The payload of `filter`, creating the path if needed.
    pub(crate) fn slot_or_insert(&mut self, filter: &str) -> &mut P {
        let mut node = &mut self.root;
        let mut rest = filter;
        loop {
            let (level, next) = split_level(rest);
            if level == "#" {
                debug_assert!(next.is_none(), "'#' not last in {filter:?}");
                return &mut node.hash;
            }
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                // contains_key + get_mut instead of the entry API: entry() would allocate the
                // Box<str> key even when the level already exists.
                if !node.children.contains_key(level) {
                    node.children.insert(level.into(), Node::default());
                }
                node.children
                    .get_mut(level)
                    .expect("child inserted just above")
            };
            match next {
                Some(next) => rest = next,
                None => return &mut node.exact,
            }
        }
    }

    /// The payload of `filter`, if its path exists.
    pub(crate) fn slot(&self, filter: &str) -> Option<&P> {
        let mut node = &self.root;
        let mut rest = filter;
        loop {
            let (level, next) = split_level(rest);
            if level == "#" {
                return Some(&node.hash);
            }
            node = if level == "+" {
                node.plus.as_deref()?
            } else {
                node.children.get(level)?
            };
            match next {
                Some(next) => rest = next,
                None => return Some(&node.exact),
            }
        }
    }

    /// The mutable payload of `filter`, if its path exists.
    pub(crate) fn slot_mut(&mut self, filter: &str) -> Option<&mut P> {
        let mut node = &mut self.root;
        let mut rest = filter;
        loop {
            let (level, next) = split_level(rest);
            if level == "#" {
                return Some(&mut node.hash);
            }
            node = if level == "+" {
                node.plus.as_deref_mut()?
            } else {
                node.children.get_mut(level)?
            };
            match next {
                Some(next) => rest = next,
                None => return Some(&mut node.exact),
            }
        }
    }

    /// Runs `update` on the payload of `filter` if its path exists, then prunes nodes left empty.
    pub(crate) fn update<R>(
        &mut self,
        filter: &str,
        update: impl FnOnce(&mut P) -> R,
    ) -> Option<R> {
        update_node(&mut self.root, filter, update)
    }

    /// Calls `f` with the payload of every filter position matching `topic` (empty payloads included).
    pub(crate) fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a P)) {
        match_root(&self.root, topic, &mut f);
    }

    /// Like `for_each_match`, with mutable payloads (for round-robin cursors).
    pub(crate) fn for_each_match_mut(&mut self, topic: &str, mut f: impl FnMut(&mut P)) {
        match_root_mut(&mut self.root, topic, &mut f);
    }

    /// Number of nodes including the root (1 when empty); O(nodes).
    pub(crate) fn node_count(&self) -> usize {
        self.root.count()
    }
}

/// Matches `topic` below a root: the trie's root, or an org scope's node, inside which the
/// client's first level is again a root level.
fn match_root<'a, P>(node: &'a Node<P>, topic: &str, f: &mut impl FnMut(&'a P)) {
    let (level, next) = split_level(topic);
    // Spec 4.7.2: filters starting with '+' or '#' do not match topics starting with '$'.
    if !topic.starts_with('$') {
        f(&node.hash);
        if let Some(plus) = &node.plus {
            match_node(plus, next, f);
        }
    }
    if let Some(child) = node.children.get(level) {
        match next {
            Some(rest) if crate::topic::is_org_level(level) => match_root(child, rest, f),
            _ => match_node(child, next, f),
        }
    }
}

fn match_root_mut<P>(node: &mut Node<P>, topic: &str, f: &mut impl FnMut(&mut P)) {
    let (level, next) = split_level(topic);
    if !topic.starts_with('$') {
        f(&mut node.hash);
        if let Some(plus) = node.plus.as_deref_mut() {
            match_node_mut(plus, next, f);
        }
    }
    if let Some(child) = node.children.get_mut(level) {
        match next {
            Some(rest) if crate::topic::is_org_level(level) => match_root_mut(child, rest, f),
            _ => match_node_mut(child, next, f),
        }
    }
}

/// `rest` is what is left of the topic after the level that led to `node`; None once consumed.
fn match_node<'a, P>(node: &'a Node<P>, rest: Option<&str>, f: &mut impl FnMut(&'a P)) {
    // `node/#` matches with any number of further levels, including none.
    f(&node.hash);
    let Some(rest) = rest else {
        f(&node.exact);
        return;
    };
    let (level, next) = split_level(rest);
    if let Some(child) = node.children.get(level) {
        match_node(child, next, f);
    }
    if let Some(plus) = &node.plus {
        match_node(plus, next, f);
    }
}

fn match_node_mut<P>(node: &mut Node<P>, rest: Option<&str>, f: &mut impl FnMut(&mut P)) {
    f(&mut node.hash);
    let Some(rest) = rest else {
        f(&mut node.exact);
        return;
    };
    let (level, next) = split_level(rest);
    if let Some(child) = node.children.get_mut(level) {
        match_node_mut(child, next, f);
    }
    if let Some(plus) = node.plus.as_deref_mut() {
        match_node_mut(plus, next, f);
    }
}

fn update_node<P: Slot, R>(
    node: &mut Node<P>,
    rest: &str,
    update: impl FnOnce(&mut P) -> R,
) -> Option<R> {
    let (level, next) = split_level(rest);
    if level == "#" {
        return Some(update(&mut node.hash));
    }
    let is_plus = level == "+";
    let child = if is_plus {
        node.plus.as_deref_mut()?
    } else {
        node.children.get_mut(level)?
    };
    let result = match next {
        None => Some(update(&mut child.exact)),
        Some(next) => update_node(child, next, update),
    };
    // Prune on the way back up so memory stays bounded by live filters.
    if child.is_empty() {
        if is_plus {
            node.plus = None;
        } else {
            node.children.remove(level);
        }
    }
    result
}

/// Filter trie of local subscriptions: `K` identifies a subscriber (e.g. a session slot), `V` is its per-subscription data.
#[derive(Debug)]
pub struct SubscriptionTrie<K, V> {
    trie: FilterTrie<KeyedVec<K, V>>,
    subscription_count: usize,
    filter_count: usize,
}

impl<K: Copy + Eq + Hash, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq + Hash, V> SubscriptionTrie<K, V> {
    /// An empty trie.
    pub fn new() -> Self {
        Self {
            trie: FilterTrie::default(),
            subscription_count: 0,
            filter_count: 0,
        }
    }

    /// Adds or replaces (returning the old value) the subscription of `key` on `filter` (already validated).
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let subscribers = self.trie.slot_or_insert(filter);
        let was_empty = subscribers.is_empty();
        let old = subscribers.insert(key, value);
        if old.is_none() {
            self.subscription_count += 1;
        }
        if was_empty {
            self.filter_count += 1;
        }
        old
    }

    /// Removes the subscription of `key` on `filter`, pruning nodes left empty.
    pub fn remove(&mut self, filter: &str, key: K) -> Option<V> {
        let (old, now_empty) = self.trie.update(filter, |subscribers| {
            let old = subscribers.remove(key);
            (old, subscribers.is_empty())
        })?;
        if old.is_some() {
            self.subscription_count -= 1;
            if now_empty {
                self.filter_count -= 1;
            }
        }
        old
    }

    /// The value of `key`'s subscription on `filter`.
    pub fn get(&self, filter: &str, key: K) -> Option<&V> {
        self.trie.slot(filter)?.get(key)
    }

    /// The mutable value of `key`'s subscription on `filter`.
    pub fn get_mut(&mut self, filter: &str, key: K) -> Option<&mut V> {
        self.trie.slot_mut(filter)?.get_mut(key)
    }

    /// Calls `f(key, value)` for every subscription whose filter matches `topic`; a key on several matching filters is reported once per filter.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(K, &V)) {
        self.trie.for_each_match(topic, |subscribers| {
            for (key, value) in subscribers.iter() {
                f(key, value);
            }
        });
    }

    /// Calls `f(key, value)` for every subscriber of exactly `filter` (no wildcard matching).
    pub fn for_each_subscriber(&self, filter: &str, mut f: impl FnMut(K, &V)) {
        if let Some(subscribers) = self.trie.slot(filter) {
            for (key, value) in subscribers.iter() {
                f(key, value);
            }
        }
    }

    /// Number of subscribers of exactly `filter`.
    pub fn subscriber_count(&self, filter: &str) -> usize {
        self.trie.slot(filter).map_or(0, KeyedVec::len)
    }

    /// Number of (filter, key) subscriptions.
    pub fn len(&self) -> usize {
        self.subscription_count
    }

    /// True when there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.subscription_count == 0
    }

    /// Number of distinct filters with at least one subscriber.
    pub fn filter_count(&self) -> usize {
        self.filter_count
    }

    /// Number of trie nodes including the root (1 when empty); O(nodes), for tests and metrics.
    pub fn node_count(&self) -> usize {
        self.trie.node_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(
        trie: &SubscriptionTrie<u32, &'static str>,
        topic: &str,
    ) -> Vec<(u32, &'static str)> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |key, &value| out.push((key, value)));
        out.sort();
        out
    }

    #[test]
    fn spec_examples_through_the_trie() {
        let mut trie = SubscriptionTrie::new();
        for (key, filter) in [
            "sport/tennis/player1/#",
            "sport/#",
            "+/+",
            "/+",
            "+/monitor/Clients",
            "$SYS/#",
            "#",
            "+",
            "$SYS/monitor/+",
        ]
        .into_iter()
        .enumerate()
        {
            trie.insert(filter, key as u32, filter);
        }
        assert_eq!(
            matched(&trie, "sport/tennis/player1"),
            vec![(0, "sport/tennis/player1/#"), (1, "sport/#"), (6, "#")]
        );
        assert_eq!(
            matched(&trie, "sport"),
            vec![(1, "sport/#"), (6, "#"), (7, "+")]
        );
        assert_eq!(
            matched(&trie, "/finance"),
            vec![(2, "+/+"), (3, "/+"), (6, "#")]
        );
        assert_eq!(
            matched(&trie, "$SYS/monitor/Clients"),
            vec![(5, "$SYS/#"), (8, "$SYS/monitor/+")]
        );
        assert_eq!(matched(&trie, "$SYS/x"), vec![(5, "$SYS/#")]);
        assert_eq!(matched(&trie, "$SYS"), vec![(5, "$SYS/#")]);
        assert_eq!(
            matched(&trie, "a/monitor/Clients"),
            vec![(4, "+/monitor/Clients"), (6, "#")]
        );
    }

    #[test]
    fn overlapping_filters_report_once_per_filter() {
        let mut trie = SubscriptionTrie::new();
        trie.insert("a/b", 1, "exact");
        trie.insert("a/+", 1, "plus");
        trie.insert("#", 1, "hash");
        assert_eq!(
            matched(&trie, "a/b"),
            vec![(1, "exact"), (1, "hash"), (1, "plus")]
        );
    }

    #[test]
    fn insert_replace_get_remove_counts() {
        let mut trie = SubscriptionTrie::new();
        assert!(trie.is_empty());
        assert_eq!(trie.insert("a/b", 1, "x"), None);
        assert_eq!(trie.insert("a/b", 1, "y"), Some("x"));
        assert_eq!(trie.insert("a/b", 2, "z"), None);
        assert_eq!(trie.insert("a/#", 1, "w"), None);
        assert_eq!(trie.len(), 3);
        assert_eq!(trie.subscriber_count("a/b"), 2);
        assert_eq!(trie.subscriber_count("a/+"), 0);
        assert_eq!(trie.filter_count(), 2);
        assert_eq!(trie.get("a/b", 1), Some(&"y"));
        assert_eq!(trie.get("a/#", 1), Some(&"w"));
        assert_eq!(trie.get("a/+", 1), None);
        *trie.get_mut("a/#", 1).unwrap() = "v";
        assert_eq!(trie.get("a/#", 1), Some(&"v"));
        assert_eq!(trie.get_mut("a/c", 1), None);
        assert_eq!(trie.remove("a/b", 3), None);
        assert_eq!(trie.remove("x/y", 1), None);
        assert_eq!(trie.remove("a/b", 1), Some("y"));
        assert_eq!(trie.filter_count(), 2);
        assert_eq!(trie.remove("a/b", 2), Some("z"));
        assert_eq!(trie.filter_count(), 1);
        assert_eq!(trie.remove("a/#", 1), Some("v"));
        assert!(trie.is_empty());
        assert_eq!(trie.filter_count(), 0);
        assert_eq!(trie.node_count(), 1);
    }

    #[test]
    fn pruning_keeps_shared_prefixes() {
        let mut trie = SubscriptionTrie::new();
        trie.insert("a/b/c", 1, ());
        trie.insert("a/+/c", 1, ());
        trie.insert("a", 1, ());
        assert_eq!(trie.node_count(), 1 + 5);
        trie.remove("a/b/c", 1);
        assert_eq!(trie.node_count(), 1 + 3);
        trie.remove("a", 1);
        assert_eq!(trie.node_count(), 1 + 3);
        trie.remove("a/+/c", 1);
        assert_eq!(trie.node_count(), 1);
    }

    #[test]
    fn hundred_thousand_subscribers_on_one_filter() {
        let mut trie = SubscriptionTrie::new();
        for key in 0..100_000u32 {
            trie.insert("fleet/broadcast", key, ());
        }
        let mut count = 0;
        trie.for_each_match("fleet/broadcast", |_, _| count += 1);
        assert_eq!(count, 100_000);
        for key in (0..100_000u32).rev().step_by(3) {
            assert_eq!(trie.remove("fleet/broadcast", key), Some(()));
        }
        for key in 0..100_000u32 {
            trie.remove("fleet/broadcast", key);
        }
        assert!(trie.is_empty());
        assert_eq!(trie.node_count(), 1);
    }
}
