//! Shared subscriptions (`$share/{group}/{filter}`, DESIGN.md data path 7).
//!
//! Delivery to a group is two picks, so each message reaches exactly one member without any
//! shard seeing another shard's sessions:
//! 1. The publishing shard looks the topic up in its [`SharedIndex`] replica and, for every
//!    matching (group, filter), picks one member *shard*, weighted by how many members each shard
//!    holds (smooth weighted round-robin, exact over every cycle of the total weight).
//! 2. That shard picks one local member from its [`LocalGroups`] by round-robin.
//!
//! A (group, filter) pair is one shared subscription, as in the spec: `$share/g/a/+` and
//! `$share/g/a/#` are two subscriptions, each getting its own copy of a matching message.

use std::hash::Hash;

use crate::keyed::KeyedVec;
use crate::trie::{FilterTrie, Slot};
use crate::Map;

/// One shard's members in a group, with its smooth weighted round-robin state.
#[derive(Debug)]
struct MemberShard {
    shard: u16,
    member_count: u32,
    /// Smooth WRR "current weight": raised by `member_count` every pick, lowered by the total
    /// when picked, so picks interleave (A A B A …) instead of bunching.
    current: i64,
}

/// One shared subscription (group, filter) as seen by the replicated index.
#[derive(Debug)]
struct Group {
    name: Box<str>,
    shards: Vec<MemberShard>,
    member_count: u32,
}

impl Group {
    /// Picks the member shard for one message; `shards` is never empty while the group exists.
    fn pick(&mut self) -> u16 {
        let total = i64::from(self.member_count);
        let mut best = 0;
        let mut best_current = i64::MIN;
        for (i, shard) in self.shards.iter_mut().enumerate() {
            shard.current += i64::from(shard.member_count);
            // Strictly greater: the lower index wins ties, so the sequence is deterministic.
            if shard.current > best_current {
                best = i;
                best_current = shard.current;
            }
        }
        self.shards[best].current -= total;
        self.shards[best].shard
    }
}

/// The groups sharing one filter; the filter text is kept to report it to `route`'s callback.
#[derive(Debug, Default)]
struct SharedSlot {
    filter: Box<str>,
    groups: Vec<Group>,
}

impl Slot for SharedSlot {
    fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Replicated on every shard: per (`$share` group, filter), how many members each shard holds, to pick one member shard per message.
#[derive(Debug, Default)]
pub struct SharedIndex {
    trie: FilterTrie<SharedSlot>,
}

impl SharedIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one more member of (`group`, `filter`) on `shard`.
    pub fn add_member(&mut self, group: &str, filter: &str, shard: u16) {
        let slot = self.trie.slot_or_insert(filter);
        if slot.groups.is_empty() {
            slot.filter = filter.into();
        }
        // Groups per filter and shards per group are few (shards <= 64), so linear is right.
        let group_entry = match slot.groups.iter().position(|g| &*g.name == group) {
            Some(i) => &mut slot.groups[i],
            None => {
                slot.groups.push(Group {
                    name: group.into(),
                    shards: Vec::new(),
                    member_count: 0,
                });
                slot.groups.last_mut().expect("pushed just above")
            }
        };
        group_entry.member_count += 1;
        match group_entry.shards.iter_mut().find(|s| s.shard == shard) {
            Some(member_shard) => member_shard.member_count += 1,
            None => group_entry.shards.push(MemberShard {
                shard,
                member_count: 1,
                current: 0,
            }),
        }
    }

    /// Counts one less member of (`group`, `filter`) on `shard`; the entry goes at zero.
    pub fn remove_member(&mut self, group: &str, filter: &str, shard: u16) {
        self.trie.update(filter, |slot| {
            let Some(g) = slot.groups.iter().position(|g| &*g.name == group) else {
                return;
            };
            let group_entry = &mut slot.groups[g];
            let Some(s) = group_entry.shards.iter().position(|s| s.shard == shard) else {
                return;
            };
            group_entry.member_count -= 1;
            group_entry.shards[s].member_count -= 1;
            if group_entry.shards[s].member_count == 0 {
                group_entry.shards.remove(s);
                // A departed shard's leftover credit would skew the cycle; start it afresh.
                for member_shard in &mut group_entry.shards {
                    member_shard.current = 0;
                }
            }
            if group_entry.shards.is_empty() {
                slot.groups.swap_remove(g);
            }
            if slot.groups.is_empty() {
                // The node may stay for other filters through it; release the text.
                slot.filter = Box::default();
            }
        });
    }

    /// For every group whose filter matches `topic`: `f(group, filter, chosen_shard)`, advancing that group's round-robin.
    pub fn route(&mut self, topic: &str, mut f: impl FnMut(&str, &str, u16)) {
        self.trie.for_each_match_mut(topic, |slot| {
            for group in &mut slot.groups {
                let shard = group.pick();
                f(&group.name, &slot.filter, shard);
            }
        });
    }

    /// A member shard of (`group`, `filter`) outside `tried` (a bit per shard; shards are at
    /// most 64), for a message whose picked shard had no member left (its replica lagged
    /// behind a departure); `None` when every member shard was tried.
    pub fn pick_other(&self, group: &str, filter: &str, tried: u64) -> Option<u16> {
        let group = self.group(group, filter)?;
        group
            .shards
            .iter()
            .map(|s| s.shard)
            .find(|&shard| tried & 1u64.checked_shl(u32::from(shard)).unwrap_or(0) == 0)
    }

    /// Members of (`group`, `filter`) over all shards.
    pub fn member_count(&self, group: &str, filter: &str) -> u32 {
        self.group(group, filter).map_or(0, |g| g.member_count)
    }

    /// Members of (`group`, `filter`) on `shard`.
    pub fn shard_member_count(&self, group: &str, filter: &str, shard: u16) -> u32 {
        self.group(group, filter)
            .and_then(|g| g.shards.iter().find(|s| s.shard == shard))
            .map_or(0, |s| s.member_count)
    }

    /// Number of trie nodes including the root (1 when empty); O(nodes), for tests and metrics.
    pub fn node_count(&self) -> usize {
        self.trie.node_count()
    }

    fn group(&self, group: &str, filter: &str) -> Option<&Group> {
        self.trie
            .slot(filter)?
            .groups
            .iter()
            .find(|g| &*g.name == group)
    }
}

/// One shard's members of one shared subscription and its round-robin cursor.
#[derive(Debug)]
struct LocalGroup<K> {
    members: KeyedVec<K, ()>,
    cursor: usize,
}

/// Local members of shared subscriptions on one shard; each pick is round-robin.
#[derive(Debug)]
pub struct LocalGroups<K> {
    // group -> filter -> members; nested so a lookup by (&str, &str) needs no allocation.
    groups: Map<Box<str>, Map<Box<str>, LocalGroup<K>>>,
}

impl<K> Default for LocalGroups<K> {
    fn default() -> Self {
        Self {
            groups: Map::default(),
        }
    }
}

impl<K: Copy + Eq + Hash> LocalGroups<K> {
    /// No groups.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` to (`group`, `filter`); false if it already is a member.
    pub fn join(&mut self, group: &str, filter: &str, key: K) -> bool {
        if !self.groups.contains_key(group) {
            self.groups.insert(group.into(), Map::default());
        }
        let filters = self.groups.get_mut(group).expect("inserted just above");
        if !filters.contains_key(filter) {
            filters.insert(
                filter.into(),
                LocalGroup {
                    members: KeyedVec::default(),
                    cursor: 0,
                },
            );
        }
        let local = filters.get_mut(filter).expect("inserted just above");
        local.members.insert(key, ()).is_none()
    }

    /// Removes `key` from (`group`, `filter`); false if it was not a member.
    pub fn leave(&mut self, group: &str, filter: &str, key: K) -> bool {
        let Some(filters) = self.groups.get_mut(group) else {
            return false;
        };
        let Some(local) = filters.get_mut(filter) else {
            return false;
        };
        let removed = local.members.remove(key).is_some();
        if local.members.is_empty() {
            filters.remove(filter);
            if filters.is_empty() {
                self.groups.remove(group);
            }
        }
        removed
    }

    /// The next member of (`group`, `filter`) in round-robin order; None if no local member.
    pub fn pick(&mut self, group: &str, filter: &str) -> Option<K> {
        self.pick_where(group, filter, |_| true)
    }

    /// The first member in round-robin order that `accept` approves (e.g. a connected one); None if none does.
    pub fn pick_where(
        &mut self,
        group: &str,
        filter: &str,
        mut accept: impl FnMut(K) -> bool,
    ) -> Option<K> {
        let local = self.groups.get_mut(group)?.get_mut(filter)?;
        let keys = local.members.keys();
        let len = keys.len();
        for step in 0..len {
            let i = (local.cursor + step) % len;
            if accept(keys[i]) {
                local.cursor = (i + 1) % len;
                return Some(keys[i]);
            }
        }
        None
    }

    /// The local members of (`group`, `filter`); empty if none.
    pub fn members(&self, group: &str, filter: &str) -> &[K] {
        self.groups
            .get(group)
            .and_then(|filters| filters.get(filter))
            .map_or(&[], |local| local.members.keys())
    }

    /// Number of (group, filter) pairs with at least one local member.
    pub fn len(&self) -> usize {
        self.groups.values().map(Map::len).sum()
    }

    /// True when no group has a local member.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_all(index: &mut SharedIndex, topic: &str) -> Vec<(String, String, u16)> {
        let mut out = Vec::new();
        index.route(topic, |group, filter, shard| {
            out.push((group.to_owned(), filter.to_owned(), shard))
        });
        out
    }

    #[test]
    fn weighted_round_robin_is_exact() {
        let mut index = SharedIndex::new();
        for _ in 0..3 {
            index.add_member("g", "a/+", 2);
        }
        index.add_member("g", "a/+", 7);
        assert_eq!(index.member_count("g", "a/+"), 4);
        assert_eq!(index.shard_member_count("g", "a/+", 2), 3);
        let mut picks = [0u32; 8];
        for _ in 0..400 {
            let routed = route_all(&mut index, "a/b");
            assert_eq!(routed.len(), 1);
            picks[usize::from(routed[0].2)] += 1;
        }
        assert_eq!(picks[2], 300);
        assert_eq!(picks[7], 100);
    }

    #[test]
    fn another_member_shard_is_found_until_every_one_was_tried() {
        let mut index = SharedIndex::new();
        index.add_member("g", "a/#", 1);
        index.add_member("g", "a/#", 3);
        assert_eq!(index.pick_other("g", "a/#", 0b0010), Some(3));
        assert_eq!(index.pick_other("g", "a/#", 0b1000), Some(1));
        assert_eq!(index.pick_other("g", "a/#", 0b1010), None);
        assert_eq!(index.pick_other("h", "a/#", 0), None);
        assert_eq!(index.pick_other("g", "b/#", 0), None);
        index.add_member("g", "a/#", 63);
        assert_eq!(index.pick_other("g", "a/#", 0b1010), Some(63));
        assert_eq!(index.pick_other("g", "a/#", 0b1010 | 1 << 63), None);
    }

    #[test]
    fn picks_interleave() {
        let mut index = SharedIndex::new();
        index.add_member("g", "t", 0);
        index.add_member("g", "t", 1);
        let shards: Vec<u16> = (0..4).map(|_| route_all(&mut index, "t")[0].2).collect();
        assert_eq!(shards, vec![0, 1, 0, 1]);
    }

    #[test]
    fn removing_last_member_stops_routing_to_shard() {
        let mut index = SharedIndex::new();
        index.add_member("g", "a/#", 1);
        index.add_member("g", "a/#", 2);
        index.add_member("g", "a/#", 2);
        index.remove_member("g", "a/#", 1);
        for _ in 0..50 {
            assert_eq!(
                route_all(&mut index, "a/x"),
                vec![("g".into(), "a/#".into(), 2)]
            );
        }
        index.remove_member("g", "a/#", 2);
        assert_eq!(index.member_count("g", "a/#"), 1);
        index.remove_member("g", "a/#", 2);
        index.remove_member("g", "a/#", 2);
        assert_eq!(index.member_count("g", "a/#"), 0);
        assert!(route_all(&mut index, "a/x").is_empty());
        assert_eq!(index.node_count(), 1);
    }

    #[test]
    fn one_pick_per_matching_group() {
        let mut index = SharedIndex::new();
        for shard in 0..4 {
            index.add_member("g1", "a/+", shard);
            index.add_member("g2", "a/+", shard);
            index.add_member("g1", "a/#", shard);
            index.add_member("g3", "b/#", shard);
            index.add_member("g4", "#", shard);
        }
        for _ in 0..20 {
            let mut routed = route_all(&mut index, "a/b");
            routed.sort();
            let groups: Vec<(String, String)> =
                routed.into_iter().map(|(g, f, _)| (g, f)).collect();
            assert_eq!(
                groups,
                vec![
                    ("g1".into(), "a/#".into()),
                    ("g1".into(), "a/+".into()),
                    ("g2".into(), "a/+".into()),
                    ("g4".into(), "#".into()),
                ]
            );
            assert!(route_all(&mut index, "$SYS/a").is_empty());
        }
    }

    #[test]
    fn local_groups_round_robin() {
        let mut groups = LocalGroups::new();
        assert_eq!(groups.pick("g", "t"), None);
        assert!(groups.join("g", "t", 10u32));
        assert!(groups.join("g", "t", 11));
        assert!(groups.join("g", "t", 12));
        assert!(!groups.join("g", "t", 12));
        assert!(groups.join("h", "t", 99));
        assert_eq!(groups.len(), 2);
        let picks: Vec<u32> = (0..6).map(|_| groups.pick("g", "t").unwrap()).collect();
        assert_eq!(picks, vec![10, 11, 12, 10, 11, 12]);
        // Only connected members are eligible.
        let picks: Vec<u32> = (0..3)
            .map(|_| groups.pick_where("g", "t", |k| k != 11).unwrap())
            .collect();
        assert_eq!(picks, vec![10, 12, 10]);
        assert_eq!(groups.pick_where("g", "t", |_| false), None);
        assert_eq!(groups.members("g", "t"), &[10, 11, 12]);
        assert!(groups.leave("g", "t", 11));
        assert!(!groups.leave("g", "t", 11));
        assert!(!groups.leave("x", "t", 11));
        assert_eq!(groups.members("g", "t").len(), 2);
        assert!(groups.leave("g", "t", 10));
        assert!(groups.leave("g", "t", 12));
        assert_eq!(groups.members("g", "t"), &[] as &[u32]);
        assert_eq!(groups.pick("g", "t"), None);
        assert!(groups.leave("h", "t", 99));
        assert!(groups.is_empty());
    }
}
