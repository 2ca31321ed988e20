//! The driver's live connections, found by the slot of the session each is attached to.
//!
//! The core names a connection by slot and id ([`ConnAt`]), so the driver keeps one pointer
//! per slot instead of a hash map by connection id (which cost every connection a map slot on
//! top of the core's). A connection whose close is still due (its SUBACK waits for a fence,
//! or its close output was not applied yet) while its slot already holds the session's next
//! connection waits in `leaving` until that close.

use std::rc::Rc;

use ahash::AHashMap;

use super::conn::link::ConnShared;
use super::shard::{ConnAt, ConnId, Slot};

/// Connections with a session attached, by slot.
#[derive(Default)]
pub struct ConnTable {
    /// Index: the slot. Grows with the core's slots (which never move).
    by_slot: Vec<Option<Rc<ConnShared>>>,
    /// Connections displaced from their slot before their close came (rare and short-lived).
    leaving: AHashMap<ConnId, Rc<ConnShared>>,
}

impl ConnTable {
    /// Records `conn` as attached to `slot`; a connection still there is kept until its close.
    pub fn insert(&mut self, slot: Slot, conn: &Rc<ConnShared>) {
        let index = slot as usize;
        if self.by_slot.len() <= index {
            self.by_slot.resize(index + 1, None);
        }
        if let Some(old) = self.by_slot[index].replace(Rc::clone(conn)) {
            if old.id != conn.id {
                self.leaving.insert(old.id, old);
            }
        }
    }

    /// The connection `at` names, if it is still here.
    #[inline]
    pub fn get(&self, at: ConnAt) -> Option<&Rc<ConnShared>> {
        let held = self
            .by_slot
            .get(at.slot as usize)
            .and_then(Option::as_ref)
            .filter(|conn| conn.id == at.conn);
        if held.is_some() || self.leaving.is_empty() {
            return held;
        }
        self.leaving.get(&at.conn)
    }

    /// Takes the connection `at` names out (it is closing).
    pub fn remove(&mut self, at: ConnAt) -> Option<Rc<ConnShared>> {
        let place = self.by_slot.get_mut(at.slot as usize);
        if let Some(place) = place.filter(|p| p.as_ref().is_some_and(|c| c.id == at.conn)) {
            return place.take();
        }
        self.leaving.remove(&at.conn)
    }

    /// Connections displaced from their slot and not yet closed (for tests).
    #[cfg(test)]
    pub fn leaving(&self) -> usize {
        self.leaving.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: u64) -> Rc<ConnShared> {
        Rc::new(ConnShared::new(id, -1))
    }

    /// An output for a connection finds it by slot only while it is the slot's connection;
    /// one displaced by the session's next connection is still found until its close.
    #[test]
    fn a_displaced_connection_is_found_until_its_close() {
        let mut table = ConnTable::default();
        let (old, new) = (conn(7), conn(8));
        table.insert(3, &old);
        let old_at = ConnAt { slot: 3, conn: 7 };
        let new_at = ConnAt { slot: 3, conn: 8 };
        assert!(table.get(old_at).is_some());
        assert!(
            table.get(new_at).is_none(),
            "another id in the slot is not it"
        );
        table.insert(3, &new);
        assert_eq!(table.leaving(), 1);
        assert_eq!(table.get(old_at).map(|c| c.id), Some(7));
        assert_eq!(table.get(new_at).map(|c| c.id), Some(8));
        assert_eq!(table.remove(old_at).map(|c| c.id), Some(7));
        assert_eq!(table.leaving(), 0);
        assert!(table.get(old_at).is_none());
        assert_eq!(
            table.get(new_at).map(|c| c.id),
            Some(8),
            "the new one stays"
        );
        assert_eq!(table.remove(new_at).map(|c| c.id), Some(8));
        assert!(table.get(new_at).is_none());
        assert!(
            table.remove(ConnAt { slot: 99, conn: 1 }).is_none(),
            "past the end"
        );
    }
}
