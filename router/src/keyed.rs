//! `KeyedVec`: a small list of unique keys with values, O(1)-ish insert and remove at any size.
//!
//! Most filters have a handful of subscribers, so a plain Vec searched linearly is fastest and
//! smallest. A few filters (a fleet's broadcast topic) have 100k subscribers on one node; past
//! `INDEX_LEN_MIN` keys a key-to-position map is built so remove stays O(1) (swap_remove + map
//! fix-up) instead of a linear search.

use std::hash::Hash;

use crate::Map;

/// Length above which the key-to-position index is built.
const INDEX_LEN_MIN: usize = 16;
/// Length below which the index is dropped again; lower than `INDEX_LEN_MIN` so a list that
/// hovers around the threshold does not rebuild the map on every change.
const INDEX_DROP_LEN_MAX: usize = 8;

/// Unique keys with one value each, stored as parallel Vecs so the keys are a slice.
#[derive(Debug)]
pub(crate) struct KeyedVec<K, V> {
    keys: Vec<K>,
    values: Vec<V>,
    index: Option<Map<K, usize>>,
}

impl<K, V> Default for KeyedVec<K, V> {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
            index: None,
        }
    }
}

impl<K: Copy + Eq + Hash, V> KeyedVec<K, V> {
    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are no keys.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, in storage order (changes on remove).
    pub(crate) fn keys(&self) -> &[K] {
        &self.keys
    }

    /// Iterates `(key, value)` pairs.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (K, &V)> {
        self.keys.iter().copied().zip(self.values.iter())
    }

    fn position(&self, key: K) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&key).copied(),
            None => self.keys.iter().position(|&k| k == key),
        }
    }

    /// Value of `key`.
    pub(crate) fn get(&self, key: K) -> Option<&V> {
        self.position(key).map(|i| &self.values[i])
    }

    /// Mutable value of `key`.
    pub(crate) fn get_mut(&mut self, key: K) -> Option<&mut V> {
        self.position(key).map(|i| &mut self.values[i])
    }

    /// Inserts or replaces; returns the replaced value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(i) = self.position(key) {
            return Some(std::mem::replace(&mut self.values[i], value));
        }
        self.keys.push(key);
        self.values.push(value);
        let position = self.keys.len() - 1;
        match &mut self.index {
            Some(index) => {
                index.insert(key, position);
            }
            None if self.keys.len() > INDEX_LEN_MIN => {
                let mut index = Map::default();
                index.reserve(self.keys.len());
                index.extend(self.keys.iter().copied().zip(0..));
                self.index = Some(index);
            }
            None => {}
        }
        None
    }

    /// Removes `key`; the last key takes its position.
    pub(crate) fn remove(&mut self, key: K) -> Option<V> {
        let position = self.position(key)?;
        self.keys.swap_remove(position);
        let value = self.values.swap_remove(position);
        if let Some(index) = &mut self.index {
            index.remove(&key);
            if let Some(&moved) = self.keys.get(position) {
                index.insert(moved, position);
            }
            if self.keys.len() < INDEX_DROP_LEN_MAX {
                self.index = None;
            }
        }
        // Give memory back after a mass unsubscribe so it stays proportional to live keys.
        if self.keys.capacity() > 64 && self.keys.len() < self.keys.capacity() / 4 {
            let capacity = self.keys.capacity() / 2;
            self.keys.shrink_to(capacity);
            self.values.shrink_to(capacity);
            if let Some(index) = &mut self.index {
                index.shrink_to(capacity);
            }
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replace_remove_across_index_threshold() {
        let mut list = KeyedVec::default();
        for key in 0..1000u32 {
            assert_eq!(list.insert(key, key * 2), None);
        }
        assert_eq!(list.insert(7, 0), Some(14));
        assert_eq!(list.len(), 1000);
        for key in (0..1000u32).step_by(2) {
            assert!(list.remove(key).is_some());
            assert_eq!(list.remove(key), None);
        }
        for key in 0..1000u32 {
            assert_eq!(list.get(key).is_some(), key % 2 == 1, "{key}");
        }
        for key in (1..1000u32).step_by(2) {
            assert!(list.remove(key).is_some());
        }
        assert!(list.is_empty());
        assert!(list.index.is_none());
    }

    #[test]
    fn hundred_thousand_keys_remove_fast() {
        let mut list = KeyedVec::default();
        for key in 0..100_000u32 {
            list.insert(key, ());
        }
        for key in 0..100_000u32 {
            assert_eq!(list.remove(key), Some(()));
        }
        assert!(list.is_empty());
    }
}
