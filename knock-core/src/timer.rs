//! Source timers: a min-heap of (deadline, slab index), never late.
//!
//! A record's deadline is its start plus the shortest `seq_timeout` of its
//! attempts. Every held record has an entry due no later than that deadline,
//! and usually exactly one. During a record's life the deadline only moves
//! later (attempts only go away), so nothing is pushed then: an entry that
//! pops early re-arms at the real deadline. A slot that changes hands (an
//! idle source knocking again, an eviction) keeps its entry when that is
//! early enough, which it always is when all doors share one timeout;
//! otherwise the new record gets its own entry and the old one pops early
//! and harmlessly. The matcher rebuilds the heap if such spare entries ever
//! outnumber the slots.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// 12 bytes: a millisecond deadline split in two halves, and a slab index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerEntry {
    hi: u32,
    lo: u32,
    pub(crate) idx: u32,
}

impl TimerEntry {
    pub(crate) fn new(deadline_ms: u64, idx: u32) -> Self {
        TimerEntry {
            hi: (deadline_ms >> 32) as u32,
            lo: deadline_ms as u32,
            idx,
        }
    }

    pub(crate) fn deadline_ms(&self) -> u64 {
        (u64::from(self.hi) << 32) | u64::from(self.lo)
    }
}

impl Ord for TimerEntry {
    /// Reversed, so that `BinaryHeap` pops the earliest deadline.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .deadline_ms()
            .cmp(&self.deadline_ms())
            .then(other.idx.cmp(&self.idx))
    }
}

impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Default)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<TimerEntry>,
}

impl TimerHeap {
    pub(crate) fn push(&mut self, deadline_ms: u64, idx: u32) {
        if self.heap.len() == self.heap.capacity() {
            self.heap.reserve_exact((self.heap.len() / 8).max(64));
        }
        self.heap.push(TimerEntry::new(deadline_ms, idx));
    }

    pub(crate) fn peek_ms(&self) -> Option<u64> {
        self.heap.peek().map(TimerEntry::deadline_ms)
    }

    /// Pops the earliest entry if it is due at `now_ms`.
    pub(crate) fn pop_due(&mut self, now_ms: u64) -> Option<TimerEntry> {
        if self.heap.peek()?.deadline_ms() <= now_ms {
            self.heap.pop()
        } else {
            None
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Replaces the contents (after a rebuild).
    pub(crate) fn rebuild(&mut self, entries: Vec<TimerEntry>) {
        self.heap = BinaryHeap::from(entries);
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.heap.capacity() * std::mem::size_of::<TimerEntry>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_12_bytes_and_pop_in_order() {
        assert_eq!(std::mem::size_of::<TimerEntry>(), 12);
        let mut h = TimerHeap::default();
        h.push(1 << 40, 1);
        h.push(5, 2);
        h.push(7, 3);
        assert_eq!(h.peek_ms(), Some(5));
        assert_eq!(h.pop_due(4), None);
        assert_eq!(h.pop_due(6).map(|e| e.idx), Some(2));
        assert_eq!(h.pop_due(1 << 41).map(|e| e.idx), Some(3));
        assert_eq!(h.pop_due(1 << 41).map(|e| e.deadline_ms()), Some(1 << 40));
    }
}
