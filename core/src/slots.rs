//! Session entries by slot number, in fixed pages.
//!
//! A `Vec` of entries doubles as it grows: up to half its capacity is unused, every growth
//! copies all entries, and the allocator may keep the old copy resident (an idle shard does not
//! return freed memory). With 10k idle connections that was about 1 KB of the 1.6 KB an entry
//! cost. Pages of [`PAGE`] entries are never moved: growth adds one page, and at most one page
//! is partly empty.

/// Entries per page.
pub const PAGE: usize = 64;

/// A slab of `T` by `u32` slot, stored in pages that never move.
pub struct Slots<T> {
    pages: Vec<Box<[Option<T>]>>,
    free: Vec<u32>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            pages: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slots<T> {
    /// The entry in `slot`, if one lives there.
    pub fn get(&self, slot: u32) -> Option<&T> {
        let slot = slot as usize;
        self.pages.get(slot / PAGE)?[slot % PAGE].as_ref()
    }

    /// The entry in `slot`, mutably, if one lives there.
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        let slot = slot as usize;
        self.pages.get_mut(slot / PAGE)?[slot % PAGE].as_mut()
    }

    /// Stores `value` in a free slot (the most recently freed first) and returns the slot.
    pub fn insert(&mut self, value: T) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = self.pages.len() * PAGE;
                self.pages
                    .push((0..PAGE).map(|_| None).collect::<Vec<_>>().into());
                // The new page's other slots are free, lowest first.
                self.free
                    .extend((slot + 1..slot + PAGE).rev().map(|s| s as u32));
                slot as u32
            }
        };
        let index = slot as usize;
        self.pages[index / PAGE][index % PAGE] = Some(value);
        slot
    }

    /// Removes and returns the entry in `slot`; the slot becomes free.
    pub fn take(&mut self, slot: u32) -> Option<T> {
        let index = slot as usize;
        let value = self.pages.get_mut(index / PAGE)?[index % PAGE].take()?;
        self.free.push(slot);
        Some(value)
    }

    /// One past the highest slot that may hold an entry (for walks by slot number).
    pub fn bound(&self) -> u32 {
        (self.pages.len() * PAGE) as u32
    }

    /// Every live entry with its slot, by slot number.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.pages.iter().enumerate().flat_map(|(page, entries)| {
            entries
                .iter()
                .enumerate()
                .filter_map(move |(offset, entry)| {
                    entry.as_ref().map(|e| ((page * PAGE + offset) as u32, e))
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_entries_never_move() {
        let mut slots = Slots::default();
        let first: Vec<u32> = (0..100).map(|i| slots.insert(i)).collect();
        assert_eq!(
            first,
            (0..100).collect::<Vec<u32>>(),
            "fresh slots go lowest first"
        );
        assert_eq!(slots.iter().count(), 100);
        assert_eq!(slots.bound(), 128);
        let address = slots.get(3).map(|v| v as *const i32);
        for i in 100..1000 {
            slots.insert(i);
        }
        assert_eq!(
            slots.get(3).map(|v| v as *const i32),
            address,
            "growth moved an entry"
        );
        assert_eq!(slots.take(3), Some(3));
        assert_eq!(slots.take(3), None);
        assert_eq!(slots.get(3), None);
        assert_eq!(slots.insert(7), 3, "the freed slot is reused");
        assert_eq!(slots.get_mut(3).map(|v| *v), Some(7));
        assert_eq!(slots.get(5000), None);
        assert_eq!(slots.take(5000), None);
        assert_eq!(slots.iter().count(), 1000);
        assert!(slots.iter().all(|(slot, v)| slots.get(slot) == Some(v)));
    }
}
