//! Retained messages (DESIGN.md data path 8).
//!
//! A trie keyed by topic levels (no wildcards in the keys). A SUBSCRIBE's filter is walked
//! against it: a literal level follows one child, `+` every child, `#` the whole subtree. The
//! matched topic's text is rebuilt in one reused `String` (push a level going down, truncate
//! coming back), so the walk allocates nothing per node.

use crate::topic::split_level;
use crate::Map;

/// One topic level of the retained store.
#[derive(Debug)]
struct Node<V> {
    children: Map<Box<str>, Node<V>>,
    value: Option<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            children: Map::default(),
            value: None,
        }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.value.is_none() && self.children.is_empty()
    }

    fn count(&self) -> usize {
        1 + self.children.values().map(Node::count).sum::<usize>()
    }
}

/// Retained messages keyed by topic; a wildcard lookup walks only matching branches.
#[derive(Debug)]
pub struct RetainedStore<V> {
    /// Never holds a value itself: every topic has at least one level, which is a child.
    root: Node<V>,
    len: usize,
}

impl<V> Default for RetainedStore<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> RetainedStore<V> {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }

    /// Stores `value` as the retained message of `topic` (a validated topic name); returns the replaced one.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            // contains_key + get_mut: entry() would allocate the key even when it exists.
            if !node.children.contains_key(level) {
                node.children.insert(level.into(), Node::default());
            }
            node = node.children.get_mut(level).expect("inserted just above");
        }
        let old = node.value.replace(value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes the retained message of `topic`, pruning nodes left empty.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let old = remove_node(&mut self.root, topic);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// The retained message of exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.value.as_ref()
    }

    /// Calls `f(topic, value)` for every retained topic matching `filter` (spec `$` rule applies).
    pub fn for_each_match(&self, filter: &str, f: impl FnMut(&str, &V)) {
        let mut topic = String::new();
        self.for_each_match_with(filter, &mut topic, f);
    }

    /// Like [`Self::for_each_match`], building topics in the caller's reused `buffer` (cleared first).
    pub fn for_each_match_with(
        &self,
        filter: &str,
        buffer: &mut String,
        mut f: impl FnMut(&str, &V),
    ) {
        buffer.clear();
        match_node(&self.root, filter, Position::Root, buffer, &mut f);
    }

    /// Calls `f(topic, value)` for every retained topic, `$` topics included (a dump for
    /// the durable log's compaction, not a subscription).
    pub fn for_each(&self, mut f: impl FnMut(&str, &V)) {
        // `top`: the root's children start the topic (an empty first level is a level too).
        fn walk<V>(node: &Node<V>, top: bool, topic: &mut String, f: &mut impl FnMut(&str, &V)) {
            for (level, child) in &node.children {
                let len = topic.len();
                if !top {
                    topic.push('/');
                }
                topic.push_str(level);
                if let Some(value) = &child.value {
                    f(topic, value);
                }
                walk(child, false, topic, f);
                topic.truncate(len);
            }
        }
        let mut topic = String::new();
        walk(&self.root, true, &mut topic, &mut f);
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of trie nodes including the root (1 when empty); O(nodes), for tests and metrics.
    pub fn node_count(&self) -> usize {
        self.root.count()
    }
}

fn remove_node<V>(node: &mut Node<V>, topic: &str) -> Option<V> {
    let (level, next) = split_level(topic);
    let child = node.children.get_mut(level)?;
    let old = match next {
        None => child.value.take(),
        Some(next) => remove_node(child, next),
    };
    if child.is_empty() {
        node.children.remove(level);
    }
    old
}

/// Where a level sits: the `$` rule holds at the root and at the first level inside an org
/// scope; a separator goes in front of every level but the very first.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    Root,
    ScopeRoot,
    Inner,
}

impl Position {
    fn dollar_rule(self) -> bool {
        self != Position::Inner
    }

    /// The position of the level below a child named `name` found at this position.
    fn below(self, name: &str) -> Position {
        if self == Position::Root && crate::topic::is_org_level(name) {
            Position::ScopeRoot
        } else {
            Position::Inner
        }
    }
}

/// Matches `filter` (what is left of it) below `node`, whose topic text is in `topic`.
fn match_node<V>(
    node: &Node<V>,
    filter: &str,
    position: Position,
    topic: &mut String,
    f: &mut impl FnMut(&str, &V),
) {
    let (level, next) = split_level(filter);
    match level {
        // '#' covers the parent level too (`a/#` matches `a`); the root has no value.
        "#" => visit_all(node, position, topic, f),
        "+" => {
            for (name, child) in &node.children {
                // Spec 4.7.2: a leading wildcard does not match a topic starting with '$'.
                if position.dollar_rule() && name.starts_with('$') {
                    continue;
                }
                descend(child, name, next, position, topic, f);
            }
        }
        _ => {
            if let Some(child) = node.children.get(level) {
                descend(child, level, next, position, topic, f);
            }
        }
    }
}

fn descend<V>(
    child: &Node<V>,
    name: &str,
    next: Option<&str>,
    position: Position,
    topic: &mut String,
    f: &mut impl FnMut(&str, &V),
) {
    let mark = push_level(topic, name, position);
    match next {
        None => {
            if let Some(value) = &child.value {
                f(topic, value);
            }
        }
        Some(next) => match_node(child, next, position.below(name), topic, f),
    }
    topic.truncate(mark);
}

fn visit_all<V>(
    node: &Node<V>,
    position: Position,
    topic: &mut String,
    f: &mut impl FnMut(&str, &V),
) {
    if let Some(value) = &node.value {
        f(topic, value);
    }
    for (name, child) in &node.children {
        if position.dollar_rule() && name.starts_with('$') {
            continue;
        }
        let mark = push_level(topic, name, position);
        visit_all(child, Position::Inner, topic, f);
        topic.truncate(mark);
    }
}

/// Appends a level to the topic text; returns the length to truncate back to.
fn push_level(topic: &mut String, name: &str, position: Position) -> usize {
    let mark = topic.len();
    if position != Position::Root {
        topic.push('/');
    }
    topic.push_str(name);
    mark
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(store: &RetainedStore<u32>, filter: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        store.for_each_match(filter, |topic, &value| out.push((topic.to_owned(), value)));
        out.sort();
        out
    }

    fn store_of(topics: &[&str]) -> RetainedStore<u32> {
        let mut store = RetainedStore::new();
        for (i, topic) in topics.iter().enumerate() {
            store.insert(topic, i as u32);
        }
        store
    }

    #[test]
    fn for_each_lists_every_topic_as_stored() {
        let topics = ["/a", "a", "a/b", "$SYS/x", "a//b", "/", "\0o1\0t/x"];
        let store = store_of(&topics);
        let mut seen = Vec::new();
        store.for_each(|topic, &value| seen.push((topic.to_owned(), value)));
        seen.sort();
        let mut expected: Vec<(String, u32)> = topics
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        expected.sort();
        assert_eq!(seen, expected);
    }

    #[test]
    fn spec_rules() {
        let store = store_of(&[
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport",
            "/finance",
            "$SYS/monitor/Clients",
            "$SYS/x",
        ]);
        let topics = |filter| -> Vec<String> {
            matched(&store, filter)
                .into_iter()
                .map(|(t, _)| t)
                .collect()
        };
        assert_eq!(
            topics("sport/tennis/player1/#"),
            vec!["sport/tennis/player1", "sport/tennis/player1/ranking"]
        );
        assert_eq!(
            topics("sport/#"),
            vec![
                "sport",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking"
            ]
        );
        assert_eq!(topics("+/+"), vec!["/finance"]);
        assert_eq!(topics("+"), vec!["sport"]);
        assert_eq!(topics("+/monitor/Clients"), Vec::<String>::new());
        assert_eq!(topics("$SYS/#"), vec!["$SYS/monitor/Clients", "$SYS/x"]);
        assert_eq!(topics("$SYS/+"), vec!["$SYS/x"]);
        assert_eq!(
            topics("#"),
            vec![
                "/finance",
                "sport",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking"
            ]
        );
        assert_eq!(topics("sport/tennis/player1"), vec!["sport/tennis/player1"]);
        assert_eq!(topics("sport/tennis"), Vec::<String>::new());
    }

    #[test]
    fn insert_get_remove_prunes() {
        let mut store = RetainedStore::new();
        assert_eq!(store.insert("a/b/c", 1), None);
        assert_eq!(store.insert("a/b/c", 2), Some(1));
        assert_eq!(store.insert("a", 3), None);
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("a/b/c"), Some(&2));
        assert_eq!(store.get("a/b"), None);
        assert_eq!(store.node_count(), 4);
        assert_eq!(store.remove("a/b"), None);
        assert_eq!(store.remove("a/b/c"), Some(2));
        assert_eq!(store.node_count(), 2);
        assert_eq!(store.remove("a"), Some(3));
        assert!(store.is_empty());
        assert_eq!(store.node_count(), 1);
    }

    #[test]
    fn reused_buffer_is_cleared() {
        let store = store_of(&["a/b"]);
        let mut buffer = String::from("junk");
        let mut seen = Vec::new();
        store.for_each_match_with("a/+", &mut buffer, |topic, _| seen.push(topic.to_owned()));
        assert_eq!(seen, vec!["a/b"]);
    }
}
