//! The matcher's one timer structure: a min-heap of (deadline, kind, slot)
//! for attempts (source records), grants and cooldowns, and blacklist
//! windows and blocks.
//!
//! One rule for every kind: each live slot has an entry due no later than
//! its deadline. An entry pops; its owner fires what is due then and says
//! when it is due next, and the entry is pushed again for that. An entry
//! that pops early (the deadline moved later since, or the slot changed
//! hands) therefore only costs a pop; one of a freed slot is dropped. A
//! deadline that moves earlier gets a new entry; the old one pops early.
//! Such spare entries are rare (doors of different timeouts, grants
//! reopened in place); the matcher rebuilds the heap if they ever
//! outnumber the slots.
//!
//! Deadlines are whole milliseconds (a grant's rounded up, so it never
//! closes early). Entries due at the same millisecond pop by kind (sources,
//! grants, blacklist), then slot.
//!
//! Most entries come in order: a flood's new sources each get one due a
//! `seq_timeout` after now, later than the one before. Those go to the
//! back of a queue (no sift, no read of a parent far away in memory) and
//! leave from its front; only an entry earlier than the queue's last goes
//! to the heap. Both pop in one order, the earlier front first.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use crate::table::gentle_growth;

/// What a timer entry's slot is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A source record (`SourceTable`): attempts expire, idle records go.
    Source = 0,
    /// A grant (`Grants`): it closes, its cooldown ends.
    Grant = 1,
    /// A blacklist suspect (`Suspects`): its window or block ends.
    Suspect = 2,
}

/// 12 bytes: the deadline (milliseconds, shifted left by two) and the kind
/// in one 64-bit key split in two halves, and a slot index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerEntry {
    hi: u32,
    lo: u32,
    pub(crate) idx: u32,
}

/// The largest deadline an entry holds (far beyond any `Timestamp`).
const MAX_MS: u64 = u64::MAX >> 2;

impl TimerEntry {
    pub(crate) fn new(kind: Kind, deadline_ms: u64, idx: u32) -> Self {
        let key = (deadline_ms.min(MAX_MS) << 2) | kind as u64;
        TimerEntry {
            hi: (key >> 32) as u32,
            lo: key as u32,
            idx,
        }
    }

    fn key(&self) -> u64 {
        (u64::from(self.hi) << 32) | u64::from(self.lo)
    }

    pub(crate) fn deadline_ms(&self) -> u64 {
        self.key() >> 2
    }

    pub(crate) fn kind(&self) -> Kind {
        match self.key() & 3 {
            0 => Kind::Source,
            1 => Kind::Grant,
            _ => Kind::Suspect,
        }
    }
}

impl Ord for TimerEntry {
    /// Reversed, so that `BinaryHeap` pops the earliest deadline.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key()).then(other.idx.cmp(&self.idx))
    }
}

impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// See the [module documentation](self).
#[derive(Default)]
pub(crate) struct Timers {
    /// Entries that came in order, earliest first.
    queue: VecDeque<TimerEntry>,
    /// The others.
    heap: BinaryHeap<TimerEntry>,
}

impl Timers {
    pub(crate) fn push(&mut self, kind: Kind, deadline_ms: u64, idx: u32) {
        let e = TimerEntry::new(kind, deadline_ms, idx);
        // (`Ord` is reversed: `<=` is "not earlier".)
        if self.queue.back().is_none_or(|last| e <= *last) {
            if self.queue.len() == self.queue.capacity() {
                self.queue.reserve_exact(gentle_growth(self.queue.len()));
            }
            self.queue.push_back(e);
        } else {
            if self.heap.len() == self.heap.capacity() {
                self.heap.reserve_exact(gentle_growth(self.heap.len()));
            }
            self.heap.push(e);
        }
    }

    /// The earliest entry, and whether it is the queue's.
    #[inline]
    fn first(&self) -> Option<(TimerEntry, bool)> {
        match (self.queue.front(), self.heap.peek()) {
            (Some(q), Some(h)) if h > q => Some((*h, false)),
            (Some(q), _) => Some((*q, true)),
            (None, h) => h.map(|h| (*h, false)),
        }
    }

    /// The earliest deadline.
    #[inline]
    pub(crate) fn peek_ms(&self) -> Option<u64> {
        self.first().map(|(e, _)| e.deadline_ms())
    }

    /// Pops the earliest entry if it is due at `now_ms`.
    pub(crate) fn pop_due(&mut self, now_ms: u64) -> Option<TimerEntry> {
        let (e, queued) = self.first()?;
        if e.deadline_ms() > now_ms {
            return None;
        }
        if queued {
            self.queue.pop_front()
        } else {
            self.heap.pop()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len() + self.heap.len()
    }

    /// Replaces the contents (after a rebuild).
    pub(crate) fn rebuild(&mut self, entries: Vec<TimerEntry>) {
        self.queue = VecDeque::new();
        self.heap = BinaryHeap::from(entries);
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        (self.queue.capacity() + self.heap.capacity()) * std::mem::size_of::<TimerEntry>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_and_out_of_order_entries_pop_in_one_order() {
        let mut t = Timers::default();
        let mut want = Vec::new();
        // A flood's entries (in order, the queue), with grants, reused
        // slots and equal deadlines among them (out of order, the heap).
        for i in 0..200u32 {
            let ms = 1000 + u64::from(i / 3);
            t.push(Kind::Source, ms, i);
            want.push((ms, Kind::Source as u8, i));
            if i % 7 == 0 {
                t.push(Kind::Grant, ms, 500 - i);
                want.push((ms, Kind::Grant as u8, 500 - i));
            }
            if i % 11 == 0 {
                t.push(Kind::Source, ms - 5, 900 + i);
                want.push((ms - 5, Kind::Source as u8, 900 + i));
            }
        }
        assert!(t.queue.len() > 150 && !t.heap.is_empty());
        assert_eq!(t.len(), want.len());
        want.sort();
        let mut got = Vec::new();
        while let Some(e) = t.pop_due(u64::MAX) {
            got.push((e.deadline_ms(), e.kind() as u8, e.idx));
        }
        assert_eq!(got, want);
        assert_eq!((t.len(), t.peek_ms()), (0, None));
    }

    #[test]
    fn entries_are_12_bytes_and_pop_by_deadline_then_kind() {
        assert_eq!(std::mem::size_of::<TimerEntry>(), 12);
        let mut h = Timers::default();
        h.push(Kind::Source, 1 << 40, 1);
        h.push(Kind::Suspect, 5, 2);
        h.push(Kind::Grant, 5, 3);
        h.push(Kind::Source, 7, 4);
        assert_eq!(h.peek_ms(), Some(5));
        assert_eq!(h.pop_due(4), None);
        let e = h.pop_due(6).unwrap();
        assert_eq!((e.kind(), e.idx), (Kind::Grant, 3));
        assert_eq!(h.pop_due(6).map(|e| e.kind()), Some(Kind::Suspect));
        assert_eq!(h.pop_due(1 << 41).map(|e| e.idx), Some(4));
        assert_eq!(h.pop_due(1 << 41).map(|e| e.deadline_ms()), Some(1 << 40));
        let e = TimerEntry::new(Kind::Grant, u64::MAX, 0);
        assert_eq!(e.deadline_ms(), MAX_MS);
        assert_eq!(e.kind(), Kind::Grant);
    }
}
