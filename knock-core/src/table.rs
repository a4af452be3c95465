//! The bounded per-source table.
//!
//! Records live in a slab (`Vec<Record>`, stable indices, a free list) and are
//! found through an [`Index`] of slab indices (one cache line per probe),
//! hashed with a keyed SipHash ([`SourceHasher`], sources are spoofable). Every held record is also
//! on one of the circular *level* lists (slots `0..LEVELS` of the slab are
//! their sentinels), so that eviction takes the least advanced, oldest record
//! in amortized O(1). A record's level is the most steps any of its attempts
//! has done; it is filed under its level when created and moved down at once
//! when it loses its progress, but moved up only when an eviction meets it
//! on a list below its level: no knock pays for list surgery.
//!
//! A record is *active* (attempts in progress), *idle* or *free*. A record
//! whose attempts are all over turns idle instead of leaving the index, until
//! its timer frees it; a source that knocks again before then restarts it in
//! place. One that has just opened a door is *parked* at step 0 of the
//! sequence it used (see [`SourceTable::park`]), so that knocking that
//! sequence again takes the same path as carrying on with it. Only the timer
//! frees records, so a slot on the free list has no timer entry left that
//! matters (see `timer`).
//!
//! A record is 36 bytes; with the index (8 bytes a slot, at most 7/8 of
//! them used, 3/4 when reserved) and the timer heap a tracked source costs
//! 62-70 bytes (measured by `benches/matcher.rs`).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv6Addr};

use crate::door::MAX_STEPS;
use crate::hasher::SourceHasher;
use crate::index::Index;

/// A source address as a table key: IPv6 as is, IPv4 as its IPv4-mapped IPv6
/// form, as one integer (built in registers, compared and hashed as one
/// value). A packet whose IPv6 source is itself IPv4-mapped is therefore the
/// same knocker as the IPv4 host; such packets are invalid on the wire.
pub(crate) type Key = u128;

/// The IPv4-mapped prefix `::ffff:0:0/96`.
const V4_MAPPED: u128 = 0xffff << 32;

pub(crate) fn key_of(ip: IpAddr) -> Key {
    match ip {
        IpAddr::V4(a) => V4_MAPPED | u128::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits(),
    }
}

pub(crate) fn addr_of(key: &Key) -> IpAddr {
    let a = Ipv6Addr::from_bits(*key);
    match a.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(a),
    }
}

/// The hash of `key` under `hasher`: an IPv4 source hashes only its 4 bytes
/// (fewer SipHash rounds than 16); the input lengths differ, so the two
/// families cannot collide by construction.
#[inline]
fn hash_key(hasher: &SourceHasher, key: Key) -> u64 {
    let mut h = hasher.build_hasher();
    if key >> 32 == V4_MAPPED >> 32 {
        h.write_u32(key as u32);
    } else {
        h.write_u64((key >> 64) as u64);
        h.write_u64(key as u64);
    }
    h.finish()
}

/// One attempt of one source at one track (a door's sequence).
///
/// `repr(C)` with no padding, so that comparing two (against the markers,
/// on every event) is one 32-bit compare: see the `PartialEq` impl.
#[derive(Clone, Copy, Debug, Eq)]
#[repr(C)]
pub(crate) struct Attempt {
    pub(crate) track: u16,
    /// Steps done (1..=MAX_STEPS).
    pub(crate) step: u8,
    /// The track's epoch when the attempt started; a bumped track epoch
    /// (one-time sequence used) kills the attempt.
    pub(crate) epoch: u8,
}

impl PartialEq for Attempt {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.bits() == other.bits()
    }
}

impl Attempt {
    /// All fields as one word.
    #[inline]
    fn bits(self) -> u32 {
        u32::from(self.track) | u32::from(self.step) << 16 | u32::from(self.epoch) << 24
    }

    const NONE: Attempt = Attempt {
        track: u16::MAX,
        step: 0,
        epoch: 0,
    };
    const SPILLED: Attempt = Attempt {
        track: u16::MAX - 1,
        step: 0,
        epoch: 0,
    };
    /// Marks an idle record (see the module docs).
    const IDLE: Attempt = Attempt {
        track: u16::MAX - 2,
        step: 0,
        epoch: 0,
    };
    /// The largest usable track number.
    pub(crate) const MAX_TRACK: usize = u16::MAX as usize - 3;

    /// Whether this is an attempt, not one of the markers.
    fn is_real(self) -> bool {
        usize::from(self.track) <= Self::MAX_TRACK
    }
}

/// What [`SourceTable::single`] found.
pub(crate) enum Single {
    /// No attempt in progress (and not parked).
    Idle,
    /// One attempt, stored inline (step 0: parked, see `SourceTable::park`).
    One(Attempt),
    /// Two or more.
    Other,
}

const NIL: u32 = u32::MAX;
const LEVELS: usize = MAX_STEPS + 1;

/// `repr(C)`: what every event reads (key, start, attempts) comes first,
/// in the fewest cache lines; the list links, which eviction and idling
/// need, last.
#[derive(Clone, Debug)]
#[repr(C)]
struct Record {
    /// The [`Key`], stored as bytes so that a record stays 4-byte aligned.
    key: [u8; 16],
    /// Start of the attempts, milliseconds, wrapping (ages stay far below 2^31 ms).
    start_ms: u32,
    /// Up to two attempts inline; `[SPILLED, _]` means they are in `spill`,
    /// `[IDLE, NONE]` or `[a, NONE]` with `a.step == 0` that the record is
    /// idle, `[NONE, NONE]` that it is free.
    attempts: [Attempt; 2],
    prev: u32,
    next: u32,
}

impl Record {
    fn is_free(&self) -> bool {
        self.attempts[0] == Attempt::NONE
    }

    /// Idle: no attempt in progress (the marker, or a finished attempt
    /// parked at step 0 of its track, see `SourceTable::park`).
    fn is_idle(&self) -> bool {
        let a = self.attempts[0];
        a == Attempt::IDLE || (a.is_real() && a.step == 0)
    }
}

pub(crate) struct SourceTable {
    slab: Vec<Record>,
    free: u32,
    index: Index,
    hasher: SourceHasher,
    spill: HashMap<u32, Vec<Attempt>, SourceHasher>,
    /// Records in the index (active and idle).
    held: usize,
    idle: usize,
    /// Hashes worked out by `prefetch`, for the lookups that follow.
    hinted: Hinted,
}

/// The keys [`SourceTable::prefetch`] hashed, with their hashes, oldest
/// first: a caller hints a few knocks ahead and then handles them in the
/// same order, so that the lookup of each finds its hash at the front
/// rather than working it out again (a SipHash: a tenth of a new source's
/// cost). An entry whose knock never reached a lookup (ignored early) is
/// dropped by the next lookup that passes it; a hash depends on nothing
/// but its key, so an entry is never wrong, only unused.
#[derive(Default)]
struct Hinted {
    entries: [(Key, u64); HINTS],
    /// The oldest entry's position.
    head: usize,
    len: usize,
}

/// Hints remembered: more than a caller reads ahead.
const HINTS: usize = 16;

impl Hinted {
    fn push(&mut self, key: Key, hash: u64) {
        let at = (self.head + self.len) % HINTS;
        self.entries[at] = (key, hash);
        if self.len == HINTS {
            self.head = (self.head + 1) % HINTS;
        } else {
            self.len += 1;
        }
    }

    /// The hashes of the newest `n` entries (fewer if it holds fewer).
    fn newest(&self, n: usize) -> impl Iterator<Item = u64> + '_ {
        let n = n.min(self.len);
        (self.len - n..self.len).map(move |i| self.entries[(self.head + i) % HINTS].1)
    }

    /// The hash of `key` if it was hinted, dropping the entries before it.
    fn take(&mut self, key: &Key) -> Option<u64> {
        while self.len > 0 {
            let (k, h) = self.entries[self.head];
            self.head = (self.head + 1) % HINTS;
            self.len -= 1;
            if k == *key {
                return Some(h);
            }
        }
        None
    }
}

impl SourceTable {
    pub(crate) fn new(hasher: SourceHasher) -> Self {
        // Slots 0..LEVELS are the sentinels of the circular level lists.
        let slab = (0..LEVELS as u32)
            .map(|l| Record {
                key: [0; 16],
                start_ms: 0,
                prev: l,
                next: l,
                attempts: [Attempt::NONE; 2],
            })
            .collect();
        SourceTable {
            slab,
            free: NIL,
            index: Index::default(),
            hasher,
            spill: HashMap::with_hasher(hasher),
            held: 0,
            idle: 0,
            hinted: Hinted::default(),
        }
    }

    /// Active records: sources with an attempt in progress.
    pub(crate) fn len(&self) -> usize {
        self.held - self.idle
    }

    /// Records in the index, active and idle (what the cap bounds).
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Slab slots, held or free.
    pub(crate) fn slots(&self) -> usize {
        self.slab.len()
    }

    /// The key's hash, to pass to `find`, `insert` and `evict_into`.
    #[inline]
    pub(crate) fn hash(&self, key: &Key) -> u64 {
        hash_key(&self.hasher, *key)
    }

    /// [`hash`](Self::hash), from the hint of `key` if [`prefetch`]
    /// (Self::prefetch) left one.
    #[inline]
    pub(crate) fn hash_hinted(&mut self, key: &Key) -> u64 {
        match self.hinted.take(key) {
            Some(h) => h,
            None => self.hash(key),
        }
    }

    /// Starts loading the index lines that `find` (and, for a new source,
    /// `insert`) of `keys` will touch, without waiting for them, and keeps
    /// their hashes for [`hash_hinted`](Self::hash_hinted): a hint that
    /// changes nothing but the cache. The keys are hashed first and the
    /// lines asked for after, one right after the other, so that the
    /// loads (and their page walks) are under way together.
    #[inline]
    pub(crate) fn prefetch(&mut self, keys: impl IntoIterator<Item = Key>) {
        let mut n = 0;
        for key in keys {
            let hash = self.hash(&key);
            self.hinted.push(key, hash);
            n += 1;
        }
        for hash in self.hinted.newest(n) {
            self.index.prefetch(hash);
        }
    }

    #[inline]
    pub(crate) fn find(&self, hash: u64, key: &Key) -> Option<u32> {
        let slab = &self.slab;
        self.index.find(hash, |i| {
            slab.get(i as usize)
                .is_some_and(|r| u128::from_ne_bytes(r.key) == *key)
        })
    }

    #[inline]
    pub(crate) fn key(&self, idx: u32) -> Key {
        u128::from_ne_bytes(self.slab[idx as usize].key)
    }

    #[inline]
    pub(crate) fn start_ms(&self, idx: u32) -> u32 {
        self.slab[idx as usize].start_ms
    }

    /// Whether `idx` is held (active or idle).
    pub(crate) fn is_held(&self, idx: u32) -> bool {
        self.slab.get(idx as usize).is_some_and(|r| !r.is_free())
    }

    /// Copies the attempts of `idx` into `out` (cleared first; none if idle).
    #[inline]
    pub(crate) fn load(&self, idx: u32, out: &mut Vec<Attempt>) {
        out.clear();
        let r = &self.slab[idx as usize];
        if r.attempts[0] == Attempt::SPILLED {
            if let Some(v) = self.spill.get(&idx) {
                out.extend_from_slice(v);
            }
        } else {
            out.extend(
                r.attempts
                    .iter()
                    .copied()
                    .filter(|a| a.is_real() && a.step > 0),
            );
        }
    }

    /// The attempts of `idx` if they fit the in-place path: one inline
    /// attempt (step 0: the record is idle, parked on the track it last
    /// finished, see [`park`](Self::park)), or none (idle).
    #[inline]
    pub(crate) fn single(&self, idx: u32) -> Single {
        match self.slab.get(idx as usize).map(|r| r.attempts) {
            Some([a, b]) if b == Attempt::NONE && a.is_real() => Single::One(a),
            Some([a, b]) if b == Attempt::NONE && a == Attempt::IDLE => Single::Idle,
            _ => Single::Other,
        }
    }

    /// Replaces the one attempt of `idx` (see [`single`](Self::single)) by
    /// `a`, a step further, started at `start_ms`. `fresh`: it was parked
    /// (step 0), so this is a new attempt and `start_ms` is new. The level
    /// only goes up, which the lists learn lazily (see `relevel`). Written
    /// without branches on `fresh`, which is as random as the knockers.
    #[inline]
    pub(crate) fn set_single(&mut self, idx: u32, a: Attempt, fresh: bool, start_ms: u32) {
        if let Some(r) = self.slab.get_mut(idx as usize) {
            debug_assert!(r.attempts[1] == Attempt::NONE && a.step > r.attempts[0].step);
            r.attempts[0] = a;
            r.start_ms = start_ms;
            self.idle -= usize::from(fresh);
        }
    }

    /// Makes `idx`, whose last attempt has just opened its door, idle,
    /// parked at step 0 of that attempt's track (`parked`, step 0): if its
    /// source knocks the track's first step next, the in-place path
    /// starts it again like any next step (see `Matcher::knock_in_place`).
    ///
    /// Unlike any other record that goes idle, it is not moved to the front
    /// of the eviction order (level 0) but keeps its place on the list it
    /// is on (see `relevel`): that spares every open two random writes, and
    /// its source, which has just knocked a whole sequence (no spoofed first
    /// knock can), may well knock again. Under pressure it may therefore
    /// outlive fresh attempts filed after it, until its timer frees it.
    #[inline]
    pub(crate) fn park(&mut self, idx: u32, parked: Attempt) {
        debug_assert!(parked.is_real() && parked.step == 0);
        let Some(r) = self.slab.get_mut(idx as usize) else {
            return;
        };
        if r.is_free() || r.attempts[0] == Attempt::SPILLED {
            // Spilled attempts leave through `store` (the spill map).
            self.store(idx, &[]);
            return;
        }
        self.idle += usize::from(!r.is_idle());
        r.attempts = [parked, Attempt::NONE];
    }

    /// Keeps the level lists' invariant after `idx` went from level `old`
    /// to `new`: a record is on the list of its level or of a lower one
    /// (parked records excepted, see `park`). Going down moves it at once
    /// (an idle record must be first in line); going up moves it only when
    /// eviction meets it (`eviction_candidate`), so that a knock costs no
    /// list surgery.
    #[inline]
    fn relevel(&mut self, idx: u32, old: usize, new: usize) {
        if new < old {
            self.unlink(idx);
            self.link(idx, new);
        }
    }

    /// The record's level: the most steps any of its attempts has done
    /// (0 when idle; markers have no steps).
    #[inline]
    fn level_of(&self, idx: u32) -> usize {
        let [a, b] = self.slab[idx as usize].attempts;
        let max = if a == Attempt::SPILLED {
            self.spill
                .get(&idx)
                .and_then(|v| v.iter().map(|a| a.step).max())
                .unwrap_or(0)
        } else {
            a.step.max(b.step)
        };
        usize::from(max).min(LEVELS - 1)
    }

    /// Writes the attempts of a held record (none: idle), keeping the idle
    /// count. Returns the new level.
    #[inline]
    fn write_attempts(&mut self, idx: u32, attempts: &[Attempt]) -> usize {
        let inline = match *attempts {
            [] => Some([Attempt::IDLE, Attempt::NONE]),
            [a] => Some([a, Attempt::NONE]),
            [a, b] => Some([a, b]),
            _ => None,
        };
        let r = &mut self.slab[idx as usize];
        let (was_spilled, was_idle) = (r.attempts[0] == Attempt::SPILLED, r.is_idle());
        let level = match inline {
            Some(pair) => {
                r.attempts = pair;
                if was_spilled {
                    self.spill.remove(&idx);
                }
                pair[0].step.max(pair[1].step)
            }
            None => {
                r.attempts = [Attempt::SPILLED, Attempt::SPILLED];
                let v = self.spill.entry(idx).or_default();
                v.clear();
                v.extend_from_slice(attempts);
                attempts.iter().map(|a| a.step).max().unwrap_or(0)
            }
        };
        self.idle = self.idle + usize::from(attempts.is_empty()) - usize::from(was_idle);
        usize::from(level).min(LEVELS - 1)
    }

    /// Replaces the attempts of a held record (none: it becomes idle),
    /// moving it to the tail of its new level's list if its level changed.
    #[inline]
    pub(crate) fn store(&mut self, idx: u32, attempts: &[Attempt]) {
        let old = self.level_of(idx);
        let new = self.write_attempts(idx, attempts);
        self.relevel(idx, old, new);
    }

    /// Gives idle record `idx` new attempts started at `start_ms`.
    #[inline]
    pub(crate) fn restart(&mut self, idx: u32, start_ms: u32, attempts: &[Attempt]) {
        if let Some(r) = self.slab.get_mut(idx as usize) {
            r.start_ms = start_ms;
            self.store(idx, attempts);
        }
    }

    /// Inserts a new record in a free slot; the caller made room (`held() < max`).
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        key: Key,
        start_ms: u32,
        attempts: &[Attempt],
    ) -> u32 {
        debug_assert!(!attempts.is_empty());
        // One or two attempts (nearly always) go straight into the record.
        let pair = match *attempts {
            [a] => Some([a, Attempt::NONE]),
            [a, b] => Some([a, b]),
            _ => None,
        };
        let rec = Record {
            key: key.to_ne_bytes(),
            start_ms,
            prev: NIL,
            next: NIL,
            attempts: pair.unwrap_or([Attempt::NONE; 2]),
        };
        let idx = if self.free != NIL {
            let idx = self.free;
            self.free = self.slab[idx as usize].next;
            self.slab[idx as usize] = rec;
            idx
        } else {
            let idx = u32::try_from(self.slab.len()).unwrap_or(NIL - 1);
            grow_gently(&mut self.slab);
            self.slab.push(rec);
            idx
        };
        self.held += 1;
        let level = match pair {
            Some([a, b]) => usize::from(a.step.max(b.step)).min(LEVELS - 1),
            None => self.write_attempts(idx, attempts),
        };
        self.link(idx, level);
        self.index_insert(hash, idx);
        idx
    }

    /// Makes room in the index for `n` records in all, so that filling it
    /// up to `n` never rehashes (a pause proportional to the table's size
    /// in the middle of a flood). The index's control bytes (one per slot)
    /// are written now; its slots are touched as they fill.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.index.reserve(n);
    }

    fn index_insert(&mut self, hash: u64, idx: u32) {
        self.index.insert_unique(hash, idx);
    }

    /// Takes held record `victim` out of the index and lists, and the spill.
    fn detach(&mut self, victim: u32) {
        let r = &self.slab[victim as usize];
        let hash = hash_key(&self.hasher, u128::from_ne_bytes(r.key));
        let spilled = r.attempts[0] == Attempt::SPILLED;
        self.idle -= usize::from(r.is_idle());
        self.unlink(victim);
        self.index.remove(hash, victim);
        if spilled {
            self.spill.remove(&victim);
        }
    }

    /// Gives held record `victim`'s slot to a new source (eviction). Returns
    /// whether the victim was active (not idle).
    pub(crate) fn evict_into(
        &mut self,
        victim: u32,
        hash: u64,
        key: Key,
        start_ms: u32,
        attempts: &[Attempt],
    ) -> bool {
        if !self.is_held(victim) {
            return false;
        }
        let was_active = !self.slab[victim as usize].is_idle();
        self.detach(victim);
        let r = &mut self.slab[victim as usize];
        r.key = key.to_ne_bytes();
        r.start_ms = start_ms;
        r.attempts = [Attempt::NONE; 2];
        let level = self.write_attempts(victim, attempts);
        self.link(victim, level);
        self.index_insert(hash, victim);
        was_active
    }

    /// Frees held record `idx` (its slot goes on the free list).
    pub(crate) fn free(&mut self, idx: u32) {
        if !self.is_held(idx) {
            return;
        }
        self.detach(idx);
        let r = &mut self.slab[idx as usize];
        r.attempts = [Attempt::NONE; 2];
        r.next = self.free;
        r.prev = NIL;
        self.free = idx;
        self.held -= 1;
    }

    /// The record eviction should take: least advanced, then the longest
    /// on its level's list. Records met on a list below their level (they
    /// advanced since) move to the tail of their own level's list on the way:
    /// amortized O(1), one move per level gained. A parked record (or one
    /// that restarted from there) is taken when met at the head of the list
    /// it kept (see `park`).
    pub(crate) fn eviction_candidate(&mut self) -> Option<u32> {
        for list in 0..LEVELS as u32 {
            loop {
                let head = self.slab[list as usize].next;
                if head == list {
                    break; // empty
                }
                let level = self.level_of(head);
                if level <= list as usize {
                    return Some(head);
                }
                self.unlink(head);
                self.link(head, level);
            }
        }
        None
    }

    /// The indices of every held record.
    pub(crate) fn held_records(&self) -> impl Iterator<Item = u32> + '_ {
        self.slab
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_free())
            .map(|(i, _)| i as u32)
    }

    /// Appends `idx` to level `level`'s circular list (sentinel: slot `level`).
    fn link(&mut self, idx: u32, level: usize) {
        let sentinel = level.min(LEVELS - 1) as u32;
        let tail = self.slab[sentinel as usize].prev;
        let r = &mut self.slab[idx as usize];
        r.prev = tail;
        r.next = sentinel;
        self.slab[tail as usize].next = idx;
        self.slab[sentinel as usize].prev = idx;
    }

    /// Takes `idx` off whichever list it is on.
    fn unlink(&mut self, idx: u32) {
        let (prev, next) = {
            let r = &self.slab[idx as usize];
            (r.prev, r.next)
        };
        self.slab[prev as usize].next = next;
        self.slab[next as usize].prev = prev;
    }

    /// Bytes of heap memory the table holds (capacity, not length).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slab.capacity() * std::mem::size_of::<Record>()
            + self.index.heap_bytes()
            + self
                .spill
                .values()
                .map(|v| v.capacity() * std::mem::size_of::<Attempt>())
                .sum::<usize>()
    }
}

/// Grows a full vector by an eighth instead of doubling it, so that a large
/// table wastes at most 12.5% of its memory on spare capacity (still
/// amortized O(1) per push).
pub(crate) fn grow_gently<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(gentle_growth(v.len()));
    }
}

/// What [`grow_gently`] adds to a full collection of `len` items (for the
/// collections that are not a `Vec`).
pub(crate) fn gentle_growth(len: usize) -> usize {
    (len / 8).max(64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn a(track: u16, step: u8) -> Attempt {
        Attempt {
            track,
            step,
            epoch: 0,
        }
    }

    #[test]
    fn record_is_36_bytes() {
        assert_eq!(std::mem::size_of::<Record>(), 36);
    }

    #[test]
    fn a_reserved_index_never_grows_while_it_fills() {
        let mut t = SourceTable::new(SourceHasher::default());
        t.reserve(100_000);
        let cap = t.index.capacity();
        assert!(cap >= 100_000);
        for i in 0..100_000u32 {
            let k = key_of(Ipv4Addr::from(0x6440_0000 + i).into());
            t.insert(t.hash(&k), k, 0, &[a(0, 1)]);
            assert_eq!(t.index.capacity(), cap, "rehashed at {i}");
        }
        let k = key_of(Ipv4Addr::from(0x6440_0000 + 777).into());
        assert!(t.find(t.hash(&k), &k).is_some());
    }

    #[test]
    fn keys_round_trip_both_families() {
        let v4: IpAddr = Ipv4Addr::new(198, 18, 0, 2).into();
        let v6: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(addr_of(&key_of(v4)), v4);
        assert_eq!(addr_of(&key_of(v6)), v6);
        assert_ne!(key_of(v4), key_of("::198.18.0.2".parse().unwrap()));
    }

    #[test]
    fn hints_are_taken_in_order_and_passed_ones_dropped() {
        let mut h = Hinted::default();
        assert_eq!(h.take(&1), None);
        for k in 0..(HINTS as u128 + 3) {
            h.push(k, k as u64 * 10);
        }
        // The three oldest were pushed out.
        assert_eq!(h.take(&0), None);
        assert_eq!(h.len, 0, "a miss drops every hint it passes");
        for k in 0..4u128 {
            h.push(k, k as u64 * 10);
        }
        assert_eq!(h.take(&0), Some(0));
        assert_eq!(h.newest(2).collect::<Vec<_>>(), [20, 30]);
        assert_eq!(h.newest(9).count(), 3);
        // Hint 1 was never looked up (its knock was ignored): passed.
        assert_eq!(h.take(&2), Some(20));
        assert_eq!(h.take(&3), Some(30));
        assert_eq!(h.take(&1), None);
    }

    #[test]
    fn insert_find_remove_reuse() {
        let mut t = SourceTable::new(SourceHasher::default());
        let k1 = key_of(Ipv4Addr::new(1, 1, 1, 1).into());
        let k2 = key_of(Ipv4Addr::new(2, 2, 2, 2).into());
        let i1 = t.insert(t.hash(&k1), k1, 0, &[a(0, 1)]);
        let i2 = t.insert(t.hash(&k2), k2, 0, &[a(0, 1), a(1, 1), a(2, 1)]);
        assert_eq!(t.find(t.hash(&k1), &k1), Some(i1));
        assert_eq!(t.find(t.hash(&k2), &k2), Some(i2));
        let mut buf = Vec::new();
        t.load(i2, &mut buf);
        assert_eq!(buf.len(), 3);
        t.free(i1);
        assert_eq!(t.find(t.hash(&k1), &k1), None);
        assert_eq!(t.len(), 1);
        let i3 = t.insert(t.hash(&k1), k1, 5, &[a(0, 1)]);
        assert_eq!(i3, i1, "freed slot reused");
        t.free(i2);
        assert!(t.spill.is_empty());
    }

    #[test]
    fn eviction_prefers_least_advanced_then_oldest() {
        let mut t = SourceTable::new(SourceHasher::default());
        let keys: Vec<Key> = (0..4u8)
            .map(|i| key_of(Ipv4Addr::new(10, 0, 0, i).into()))
            .collect();
        let i0 = t.insert(t.hash(&keys[0]), keys[0], 0, &[a(0, 1)]);
        let i1 = t.insert(t.hash(&keys[1]), keys[1], 0, &[a(0, 1)]);
        let i2 = t.insert(t.hash(&keys[2]), keys[2], 0, &[a(0, 1)]);
        t.store(i0, &[a(0, 2)]);
        assert_eq!(t.eviction_candidate(), Some(i1));
        t.free(i1);
        assert_eq!(t.eviction_candidate(), Some(i2));
        t.free(i2);
        assert_eq!(t.eviction_candidate(), Some(i0));
        t.free(i0);
        assert_eq!(t.eviction_candidate(), None);
    }
}
