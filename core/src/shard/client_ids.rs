//! The shard's sessions by client id.
//!
//! A map from client id to slot would hold a second copy of every id (or a reference-counted
//! handle on it) beside the session that already has one: about 60 bytes per session, which is
//! a twentieth of what an idle connection may cost. This table holds only slot numbers and
//! hashes and compares through the sessions themselves, so the id is stored once.

use ahash::RandomState;
use hashbrown::HashTable;

use super::{Entry, Slot};
use crate::slots::Slots;

/// Slots of the shard's sessions, found by the client id their session holds.
///
/// Invariant: every slot in the table holds an entry in the [`Slots`] passed to its methods,
/// and that entry's client id is the one the slot was inserted under. So a slot leaves the
/// table before its entry leaves the slots, or with [`ClientIds::remove`], which needs only the
/// id and the slot.
pub struct ClientIds {
    table: HashTable<Slot>,
    hasher: RandomState,
}

impl Default for ClientIds {
    fn default() -> Self {
        ClientIds {
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

/// Where the client ids of the registered slots are stored.
pub trait IdsBySlot {
    /// The client id of the session in `slot`, if there is one.
    fn id(&self, slot: Slot) -> Option<&[u8]>;
}

impl IdsBySlot for Slots<Entry> {
    fn id(&self, slot: Slot) -> Option<&[u8]> {
        self.get(slot)
            .map(|entry| &entry.session.client_id.as_bytes()[..])
    }
}

fn id_of<S: IdsBySlot + ?Sized>(entries: &S, slot: Slot) -> &[u8] {
    // A slot without an entry breaks the invariant; hashing it as empty keeps the table usable
    // (the lookup that would find it compares through the entry and so never matches).
    entries.id(slot).unwrap_or(&[])
}

impl ClientIds {
    fn hash(&self, id: &[u8]) -> u64 {
        self.hasher.hash_one(id)
    }

    /// The slot of the session with this client id.
    pub fn get<S: IdsBySlot + ?Sized>(&self, entries: &S, id: &[u8]) -> Option<Slot> {
        self.table
            .find(self.hash(id), |&slot| id_of(entries, slot) == id)
            .copied()
    }

    /// Registers the session in `slot` under its client id, in place of any other session
    /// registered under that id.
    pub fn insert<S: IdsBySlot + ?Sized>(&mut self, entries: &S, slot: Slot) {
        let id = id_of(entries, slot);
        let hash = self.hasher.hash_one(id);
        let hasher = &self.hasher;
        match self.table.entry(
            hash,
            |&other| id_of(entries, other) == id,
            |&other| hasher.hash_one(id_of(entries, other)),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut occupied) => *occupied.get_mut() = slot,
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(slot);
            }
        }
    }

    /// Forgets `slot` if it is the one registered under `id` (its entry may already be gone).
    pub fn remove(&mut self, id: &[u8], slot: Slot) {
        if let Ok(found) = self.table.find_entry(self.hash(id), |&other| other == slot) {
            found.remove();
        }
    }

    /// Number of registered sessions.
    pub fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl IdsBySlot for Vec<Option<String>> {
        fn id(&self, slot: Slot) -> Option<&[u8]> {
            self.get(slot as usize)?.as_deref().map(str::as_bytes)
        }
    }

    #[test]
    fn ids_are_found_through_their_slots_across_growth() {
        let mut ids = ClientIds::default();
        let mut sessions: Vec<Option<String>> = Vec::new();
        for i in 0..5000u32 {
            sessions.push(Some(format!("device-{i}")));
            ids.insert(&sessions, i);
        }
        assert_eq!(ids.len(), 5000);
        for i in 0..5000u32 {
            assert_eq!(
                ids.get(&sessions, format!("device-{i}").as_bytes()),
                Some(i)
            );
        }
        assert_eq!(ids.get(&sessions, b"device-5000"), None);
        assert_eq!(ids.get(&sessions, b""), None);
    }

    #[test]
    fn a_new_session_with_the_same_id_replaces_the_old_one() {
        let mut ids = ClientIds::default();
        let sessions = vec![Some("a".to_string()), Some("a".to_string())];
        ids.insert(&sessions, 0);
        ids.insert(&sessions, 1);
        assert_eq!(ids.len(), 1);
        assert_eq!(ids.get(&sessions, b"a"), Some(1));
        // The old session ending must not unregister the new one.
        ids.remove(b"a", 0);
        assert_eq!(ids.get(&sessions, b"a"), Some(1));
        ids.remove(b"a", 1);
        assert_eq!(ids.get(&sessions, b"a"), None);
        assert_eq!(ids.len(), 0);
    }

    #[test]
    fn a_slot_is_removed_after_its_entry_is_gone() {
        // end_session takes the entry out of the slots before it unregisters the id.
        let mut ids = ClientIds::default();
        let mut sessions = vec![Some("gone".to_string()), Some("kept".to_string())];
        ids.insert(&sessions, 0);
        ids.insert(&sessions, 1);
        sessions[0] = None;
        ids.remove(b"gone", 0);
        assert_eq!(ids.len(), 1);
        assert_eq!(ids.get(&sessions, b"kept"), Some(1));
    }
}
