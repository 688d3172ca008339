//! The table's sockets, keyed by their cookie.
//!
//! A `HashMap<u64, Holder>` would store each cookie twice (key and
//! field): 8 bytes a bucket, about 1 MiB at 100k sockets. The raw hash
//! table keys on the holder's own field instead.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use super::Holder;

#[derive(Debug, Default)]
pub(super) struct SocketsByCookie {
    table: HashTable<Holder>,
    hasher: RandomState,
}

impl SocketsByCookie {
    fn hash(&self, cookie: u64) -> u64 {
        self.hasher.hash_one(cookie)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn get(&self, cookie: &u64) -> Option<&Holder> {
        self.table.find(self.hash(*cookie), |h| h.cookie == *cookie)
    }

    pub fn get_mut(&mut self, cookie: &u64) -> Option<&mut Holder> {
        let hash = self.hash(*cookie);
        self.table.find_mut(hash, |h| h.cookie == *cookie)
    }

    /// Inserts or replaces the holder of `h.cookie`.
    pub fn insert(&mut self, h: Holder) {
        let hash = self.hash(h.cookie);
        let hasher = &self.hasher;
        match self.table.entry(
            hash,
            |x| x.cookie == h.cookie,
            |x| hasher.hash_one(x.cookie),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => *o.get_mut() = h,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(h);
            }
        }
    }

    pub fn remove(&mut self, cookie: &u64) -> Option<Holder> {
        let hash = self.hash(*cookie);
        self.table
            .find_entry(hash, |h| h.cookie == *cookie)
            .ok()
            .map(|e| e.remove().0)
    }

    pub fn values(&self) -> impl Iterator<Item = &Holder> {
        self.table.iter()
    }
}
