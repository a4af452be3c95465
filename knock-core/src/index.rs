//! The index of the source table: slab indices by key hash, so that finding
//! a source, or adding a new one, touches one cache line.
//!
//! Open addressing with linear probing over 64-byte buckets of eight
//! entries. An entry holds the upper 32 bits of its key's hash beside its
//! slab index, so that a probe compares hashes in the line it has loaded
//! and reads a record (another line) only when they agree; the entry is
//! then written into that same line. (A table of control bytes beside a
//! table of slots, as `hashbrown`'s, touches two lines per new key: under a
//! flood of new sources each is a cache miss.)
//!
//! An entry's home bucket is taken from the same 32 bits (scaled to the
//! bucket count, which need not be a power of two: a table reserved for a
//! million sources takes 10 MiB rather than the 16 MiB of the next power
//! of two), so that removing one can shift the entries behind it back
//! without hashing any key again (backward-shift deletion: no tombstones, a
//! probe ends at the first empty entry however the table churns), and
//! growing needs no key either.

use prefetch_index::prefetch_index;

/// Entries per bucket: a bucket is one 64-byte cache line.
const WIDTH: usize = 8;

/// The index of a slab slot, in an entry: its bitwise complement, so that
/// an entry whose low 32 bits are 0 is empty (`u32::MAX` is never a slot).
#[inline]
fn entry(tag: u32, idx: u32) -> u64 {
    u64::from(tag) << 32 | u64::from(!idx)
}

#[inline]
fn is_empty(e: u64) -> bool {
    e as u32 == 0
}

#[inline]
fn tag_of(e: u64) -> u32 {
    (e >> 32) as u32
}

#[inline]
fn idx_of(e: u64) -> u32 {
    !(e as u32)
}

/// The hash bits an entry keeps: the upper 32, with the lowest set, so
/// that no key's bits are an empty slot's (0) and a probe can compare the
/// bits alone.
#[inline]
fn tag_of_hash(hash: u64) -> u32 {
    (hash >> 32) as u32 | 1
}

/// See the [module documentation](self).
#[derive(Default)]
pub(crate) struct Index {
    /// The buckets, from `start` on: any number of them, or none. A
    /// bucket is 16 words, one cache line: the hash bits of its eight
    /// entries, then their slab indices (complemented, 0: empty), so that
    /// a probe compares eight of each at once. Allocated zeroed (empty),
    /// so that the system hands out zero pages as they are first touched
    /// and a large reserved index costs no memory until it fills; `start`
    /// aligns the first bucket to 64 bytes, or 2 MiB in a table of 4 MiB
    /// or more (the vector is allocated once and never moves).
    words: Vec<u32>,
    start: usize,
    /// Buckets (any number; 0 before the first insert).
    buckets: usize,
    len: usize,
}

/// Words per bucket.
const LINE: usize = 2 * WIDTH;

/// The huge page size of x86-64 and arm64 (with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

impl Index {
    /// Entries held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Entries it holds before it grows (7/8 of its slots; a table sized
    /// with [`reserve`](Self::reserve) starts with 1/4 of them spare).
    pub(crate) fn capacity(&self) -> usize {
        self.buckets * WIDTH / 8 * 7
    }

    /// Bytes of heap memory it holds: its buckets (the bytes allocated
    /// before the first, to align it, are never touched).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buckets * LINE * std::mem::size_of::<u32>()
    }

    /// The home bucket of hash bits `tag`: `tag` scaled to the bucket
    /// count (its high bits decide).
    #[inline]
    fn home_bucket(&self, tag: u32) -> usize {
        ((u64::from(tag) * self.buckets as u64) >> 32) as usize
    }

    /// The bucket after `b`, wrapping around.
    #[inline]
    fn next_bucket(&self, b: usize) -> usize {
        if b + 1 >= self.buckets {
            0
        } else {
            b + 1
        }
    }

    /// Bucket `b`'s hash bits and indices (`b` below the bucket count).
    #[inline]
    fn bucket(&self, b: usize) -> Option<(&[u32; WIDTH], &[u32; WIDTH])> {
        let at = self.start + b * LINE;
        let (tags, ids) = self.words.get(at..at + LINE)?.split_at(WIDTH);
        Some((tags.try_into().ok()?, ids.try_into().ok()?))
    }

    /// The entry at slot `pos` (`pos` below the slot count).
    #[inline]
    fn slot(&self, pos: usize) -> u64 {
        let at = self.start + pos / WIDTH * LINE + pos % WIDTH;
        match (self.words.get(at), self.words.get(at + WIDTH)) {
            (Some(&tag), Some(&idx)) => u64::from(tag) << 32 | u64::from(idx),
            _ => 0,
        }
    }

    #[inline]
    fn set_slot(&mut self, pos: usize, e: u64) {
        let at = self.start + pos / WIDTH * LINE + pos % WIDTH;
        if let Some(w) = self.words.get_mut(at) {
            *w = tag_of(e);
        }
        if let Some(w) = self.words.get_mut(at + WIDTH) {
            *w = e as u32;
        }
    }

    /// The first slot of the home bucket of hash bits `tag`.
    #[inline]
    fn home(&self, tag: u32) -> usize {
        self.home_bucket(tag) * WIDTH
    }

    /// Starts loading the bucket a lookup of `hash` begins with (see
    /// [`SourceTable::prefetch`](crate::table::SourceTable::prefetch)).
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        let b = self.home_bucket(tag_of_hash(hash));
        prefetch_index(&self.words, self.start + b * LINE);
    }

    /// The slab index under `hash` for which `eq` holds.
    #[inline(always)]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        self.position(hash, |e| eq(idx_of(e)))
            .map(|(_, e)| idx_of(e))
    }

    /// The slot and entry under `hash` for which `eq` holds.
    #[inline(always)]
    fn position(&self, hash: u64, mut eq: impl FnMut(u64) -> bool) -> Option<(usize, u64)> {
        let tag = tag_of_hash(hash);
        let mut b = self.home_bucket(tag);
        for _ in 0..self.buckets {
            let (tags, ids) = self.bucket(b)?;
            // The hash bits of the whole bucket at once, without a branch
            // per entry (which entries are taken is as random as the
            // keys): a bit per entry whose bits agree (never an empty
            // one: see `tag_of_hash`). An agreeing entry
            // past an empty one cannot be the key's (its run from its home
            // ends at the first empty slot), so `eq`, which checks the key
            // itself, only turns it down: no mask of the run is needed.
            let mut hits = 0u32;
            for (i, &t) in tags.iter().enumerate() {
                hits |= u32::from(t == tag) << i;
            }
            while hits != 0 {
                let i = hits.trailing_zeros() as usize % WIDTH;
                hits &= hits - 1;
                let e = u64::from(tags[i]) << 32 | u64::from(ids[i]);
                if eq(e) {
                    return Some((b * WIDTH + i, e));
                }
            }
            if ids.contains(&0) {
                return None;
            }
            b = self.next_bucket(b);
        }
        None
    }

    /// Adds slab index `idx` under `hash` (not in the index yet), growing
    /// the index first if it is full.
    #[inline]
    pub(crate) fn insert_unique(&mut self, hash: u64, idx: u32) {
        if self.len >= self.capacity() {
            self.resize((self.len + 1).max(WIDTH / 8 * 7));
        }
        self.place(entry(tag_of_hash(hash), idx));
        self.len += 1;
    }

    /// Writes `e` into the first empty slot from its home on (there is one:
    /// the index is never full).
    #[inline]
    fn place(&mut self, e: u64) {
        let mut b = self.home_bucket(tag_of(e));
        for _ in 0..self.buckets {
            let Some((_, ids)) = self.bucket(b) else {
                return;
            };
            if let Some(i) = ids.iter().position(|&id| id == 0) {
                self.set_slot(b * WIDTH + i, e);
                return;
            }
            b = self.next_bucket(b);
        }
    }

    /// Takes slab index `idx`, filed under `hash`, out of the index.
    /// Returns whether it was there.
    pub(crate) fn remove(&mut self, hash: u64, idx: u32) -> bool {
        let Some((mut hole, _)) = self.position(hash, |e| idx_of(e) == idx) else {
            return false;
        };
        self.len -= 1;
        // Backward shift: move each entry of the run behind the hole that
        // may sit there (its home is not between the hole and itself) into
        // it, until the run ends.
        let slots = self.buckets * WIDTH;
        let mut j = hole;
        loop {
            j = if j + 1 >= slots { 0 } else { j + 1 };
            let e = self.slot(j);
            if is_empty(e) || j == hole {
                break;
            }
            let home = self.home(tag_of(e));
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.set_slot(hole, e);
                hole = j;
            }
        }
        self.set_slot(hole, 0);
        true
    }

    /// Makes room for `n` entries in all without growing.
    pub(crate) fn reserve(&mut self, n: usize) {
        if n > self.capacity() {
            self.resize(n);
        }
    }

    /// Moves every entry into a new table that holds `n` entries at 3/4 of
    /// its slots or less (and at least twice the current one).
    fn resize(&mut self, n: usize) {
        let slots = n
            .saturating_mul(4)
            .div_ceil(3)
            .max(self.buckets * WIDTH * 2);
        let buckets = slots.div_ceil(WIDTH);
        // The first bucket starts a line, and in a table of two huge pages
        // or more a huge page: a system that backs the table with them
        // (the knockd program asks for them) can then for all of it but
        // the tail, and a flood's probes stop missing the TLB. The bytes
        // allocated before the first bucket are never touched.
        let align = if buckets * LINE * 4 >= 2 * HUGE_PAGE {
            HUGE_PAGE
        } else {
            LINE * 4
        };
        let new = vec![0u32; (buckets * LINE * 4 + align) / 4];
        let misalign = new.as_ptr().addr() % align;
        let start = (align - misalign) % align / 4;
        let old = Index {
            words: std::mem::replace(&mut self.words, new),
            start: std::mem::replace(&mut self.start, start),
            buckets: std::mem::replace(&mut self.buckets, buckets),
            len: self.len,
        };
        for pos in 0..old.buckets * WIDTH {
            let e = old.slot(pos);
            if !is_empty(e) {
                self.place(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Against a map, with hashes drawn from few bits so that runs form,
        /// wrap around the end and are cut by removals.
        #[test]
        fn agrees_with_a_map(ops in prop::collection::vec((0u32..300, any::<bool>()), 0..2000),
                             bits in 16u32..31, shift in 0u32..3) {
            // Hash bits near 0 or near 2^32 (a small number, less half its
            // range): every key homes in the first or the last few buckets,
            // so runs form and wrap around the end; a shift: keys that
            // share their hash bits.
            let hash = |k: u32| {
                let small = (k >> shift).wrapping_mul(0x9e37_79b9) >> bits;
                let tag = small.wrapping_sub(1 << (31 - bits));
                u64::from(tag) << 32 | u64::from(k)
            };
            let mut index = Index::default();
            let mut model: HashMap<u32, u32> = HashMap::new();
            for (n, (k, add)) in ops.into_iter().enumerate() {
                let idx = n as u32;
                if add && !model.contains_key(&k) {
                    index.insert_unique(hash(k), idx);
                    model.insert(k, idx);
                } else if let Some(idx) = model.remove(&k) {
                    prop_assert!(index.remove(hash(k), idx));
                    prop_assert!(!index.remove(hash(k), idx));
                }
                prop_assert_eq!(index.len(), model.len());
            }
            for (&k, &idx) in &model {
                prop_assert_eq!(index.find(hash(k), |i| i == idx), Some(idx));
            }
            // A key never added is not found (its hash bits may be those of
            // keys that are: `eq` tells them apart, as the table's does).
            let key_of: HashMap<u32, u32> = model.iter().map(|(&k, &i)| (i, k)).collect();
            prop_assert_eq!(index.find(hash(1000), |i| key_of.get(&i) == Some(&1000)), None);
        }
    }

    #[test]
    fn a_large_index_starts_on_a_2_mib_boundary() {
        let mut index = Index::default();
        index.reserve(1_000_000);
        let first = index.words.as_ptr().addr() + index.start * 4;
        assert_eq!(first % HUGE_PAGE, 0, "the first bucket starts a 2 MiB page");
        assert!(index.capacity() >= 1_000_000);
        assert!(
            index.heap_bytes() <= 11 << 20,
            "{} bytes for a million entries",
            index.heap_bytes()
        );
        for i in 0..1000u32 {
            index.insert_unique(u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15), i);
        }
        assert_eq!(index.len(), 1000);
    }

    #[test]
    fn reserved_never_grows() {
        let mut index = Index::default();
        index.reserve(1000);
        let cap = index.capacity();
        assert!(cap >= 1000);
        assert_eq!(
            (index.words.as_ptr().addr() + index.start * 4) % 64,
            0,
            "buckets are lines"
        );
        for i in 0..1000u32 {
            index.insert_unique(u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15), i);
        }
        assert_eq!(index.capacity(), cap);
    }
}
