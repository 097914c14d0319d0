//! Per-connection id tables with lowest-free-id reuse.
//!
//! Ids are small integers chosen by the side that owns the table. Reusing the
//! lowest free id keeps them dense, so a table is a `Vec` and a lookup is an
//! index; a hostile id is just a miss.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A table mapping `u32` ids to entries.
pub(crate) struct IdTable<T> {
    slots: Vec<Option<T>>,
    free: BinaryHeap<Reverse<u32>>,
    len: usize,
}

impl<T> Default for IdTable<T> {
    fn default() -> Self {
        IdTable { slots: Vec::new(), free: BinaryHeap::new(), len: 0 }
    }
}

impl<T> IdTable<T> {
    /// Stores `value` under the lowest free id.
    pub(crate) fn insert(&mut self, value: T) -> u32 {
        self.len += 1;
        if let Some(Reverse(id)) = self.free.pop() {
            self.slots[id as usize] = Some(value);
            return id;
        }
        self.slots.push(Some(value));
        (self.slots.len() - 1) as u32
    }

    pub(crate) fn get(&self, id: u32) -> Option<&T> {
        self.slots.get(id as usize)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    pub(crate) fn remove(&mut self, id: u32) -> Option<T> {
        let value = self.slots.get_mut(id as usize)?.take()?;
        self.len -= 1;
        self.free.push(Reverse(id));
        Some(value)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Removes and returns every entry.
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.free.clear();
        self.len = 0;
        std::mem::take(&mut self.slots).into_iter().flatten().collect()
    }
}

/// A map keyed by ids the protocol uses (question, answer, import, stream
/// ids; many chosen by the peer). foldhash costs a few instructions per
/// lookup where SipHash costs about a hundred, and its seed is random per
/// map, so a peer cannot aim ids at one bucket.
pub(crate) type IdMap<V> = FastMap<u32, V>;

/// A `HashMap` hashed with foldhash, seeded at random per map.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_the_lowest_free_id() {
        let mut table = IdTable::default();
        let ids: Vec<u32> = (0..4).map(|i| table.insert(i)).collect();
        assert_eq!(ids, [0, 1, 2, 3]);
        table.remove(2);
        table.remove(1);
        assert_eq!(table.insert(10), 1);
        assert_eq!(table.insert(11), 2);
        assert_eq!(table.insert(12), 4);
        assert_eq!(table.len(), 5);
        assert!(table.get(99).is_none());
        assert!(table.remove(99).is_none());
    }
}
