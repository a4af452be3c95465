//! When a flood's knocks are read as batches rather than one wake-up each.
//!
//! A wake-up from `poll(2)` costs more than handling a knock, so under a
//! flood [`MultiSource`](crate::MultiSource) lets knocks gather: a turn that
//! finds every queue empty first sleeps, then reads what came meanwhile as
//! one batch. [`Pacer`] decides when: only after a *streak* of [`STREAK`]
//! knocks in a row, each less than [`MARGIN`] more than the current nap
//! after the one before, or after the nap before it (however long the
//! batch before the nap took to handle; the first knock of a streak not
//! counted). A
//! client's sequence, sent as fast as it can be (at most [`MAX_STEPS`]
//! knocks), is never paced, so its last knock is read as soon as the kernel
//! has it.
//!
//! How long: a nap starts at [`PACE_MIN`]. One that gathered at least
//! [`GROW_AT`] knocks is doubled for the next, up to [`PACE_MAX`] and as
//! long as twice its knocks fit a quarter of the smallest receive ring
//! ([`NO_RING_BACKLOG`] without one); one that gathered fewer than
//! [`SHRINK_AT`] is halved, down to [`PACE_MIN`]. So a knock in a flood
//! waits at most [`PACE_MAX`], and more than [`PACE_MIN`] only once the
//! flood has brought [`GROW_AT`] knocks in a nap (over 100,000 a second).
//! Fewer, longer naps matter beyond the system calls saved: each one idles
//! the CPU, and in a virtual machine the first knocks after it find the
//! caches and the TLB cold (16 ms naps instead of 8 took a tenth off the
//! CPU of a flood of a million sources, benches/RESULTS.md).
//!
//! Sans-IO: the caller passes the time in and does the sleeping.

use std::time::{Duration, Instant};

use knock_core::MAX_STEPS;

/// Two knocks less than the current nap plus this apart continue a
/// streak, so that a flood read in paced batches goes on being one.
pub(crate) const MARGIN: Duration = Duration::from_millis(1);
/// Knocks in a streak (after its first) before turns are paced: a knock
/// sequence never makes one this long.
pub(crate) const STREAK: u32 = MAX_STEPS as u32;
/// The first nap of a streak, and the shortest.
pub(crate) const PACE_MIN: Duration = Duration::from_millis(2);
/// The longest nap.
pub(crate) const PACE_MAX: Duration = Duration::from_millis(16);
/// A nap that gathered this many knocks is doubled.
pub(crate) const GROW_AT: u32 = 256;
/// A nap that gathered fewer knocks than this is halved.
pub(crate) const SHRINK_AT: u32 = 64;
/// The share of a receive ring a nap's knocks may take (a quarter), so
/// that a nap never lets a flood fill it.
pub(crate) const RING_SHARE: usize = 4;
/// The most knocks a nap may gather from sources without a ring (a socket
/// buffer: 64 MiB by default, about 80,000 small frames; what a quarter of
/// the default ring holds).
pub(crate) const NO_RING_BACKLOG: u32 = 4096;

/// See the [module documentation](self).
#[derive(Debug)]
pub(crate) struct Pacer {
    /// When the last knock was read, or the last nap began.
    last: Option<Instant>,
    /// Knocks in a row, each less than the nap plus [`MARGIN`] after the
    /// one before (the first of them not counted).
    streak: u32,
    /// A turn slept since the last knock: the next empty turn waits in
    /// `poll(2)`.
    paced: bool,
    /// The length of the next nap.
    pace: Duration,
    /// Knocks read since the last nap (or the start of the streak).
    gathered: u32,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer {
            last: None,
            streak: 0,
            paced: false,
            pace: PACE_MIN,
            gathered: 0,
        }
    }
}

impl Pacer {
    /// A knock was read at `now` (the first of a turn: the knocks of a
    /// batch are read at its time, and counted with [`Pacer::queued`]).
    pub(crate) fn knock(&mut self, now: Instant) {
        let close = self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.pace + MARGIN);
        if close {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.streak = 0;
            self.pace = PACE_MIN;
            self.gathered = 0;
        }
        self.last = Some(now);
        self.paced = false;
        self.gathered = self.gathered.saturating_add(1);
    }

    /// Another knock was read in the same turn, after the one passed to
    /// [`Pacer::knock`].
    pub(crate) fn queued(&mut self) {
        self.gathered = self.gathered.saturating_add(1);
    }

    /// A turn found every queue empty: how long to sleep before waiting in
    /// `poll(2)` (at most until `deadline`), or `None` to wait at once.
    /// `ring`: the slots of the smallest receive ring read (`None`: none).
    pub(crate) fn nap(
        &mut self,
        now: Instant,
        deadline: Option<Instant>,
        ring: Option<usize>,
    ) -> Option<Duration> {
        if self.streak < STREAK || self.paced {
            return None;
        }
        let backlog = ring.map_or(NO_RING_BACKLOG, |slots| {
            u32::try_from(slots / RING_SHARE).unwrap_or(u32::MAX)
        });
        if self.gathered >= GROW_AT && self.gathered.saturating_mul(2) <= backlog {
            self.pace = (self.pace * 2).min(PACE_MAX);
        } else if self.gathered < SHRINK_AT {
            self.pace = (self.pace / 2).max(PACE_MIN);
        }
        self.gathered = 0;
        self.paced = true;
        // The next knock is close if it comes within the nap (and the
        // margin), however long the batch before it took.
        self.last = Some(now);
        Some(deadline.map_or(self.pace, |d| {
            d.saturating_duration_since(now).min(self.pace)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);
    /// The default ring's slots.
    const RING: Option<usize> = Some(16_384);

    /// Knocks `gap` apart from `t`, each followed by an empty turn; the
    /// naps those turns were given.
    fn knocks(p: &mut Pacer, t: &mut Instant, n: u32, gap: Duration) -> Vec<Option<Duration>> {
        (0..n)
            .map(|_| {
                *t += gap;
                p.knock(*t);
                p.nap(*t, None, RING)
            })
            .collect()
    }

    #[test]
    fn a_sequence_sent_at_full_speed_is_never_paced() {
        let mut p = Pacer::default();
        let mut t = Instant::now();
        // The longest sequence, 50 µs apart, twice with a pause between.
        for _ in 0..2 {
            let naps = knocks(&mut p, &mut t, MAX_STEPS as u32, 50 * US);
            assert!(naps.iter().all(Option::is_none), "{naps:?}");
            t += Duration::from_secs(1);
        }
    }

    #[test]
    fn a_flood_is_paced_once_per_empty_turn_after_its_streak() {
        let mut p = Pacer::default();
        let mut t = Instant::now();
        let naps = knocks(&mut p, &mut t, STREAK + 1, 10 * US);
        assert!(naps[..STREAK as usize].iter().all(Option::is_none));
        assert_eq!(naps[STREAK as usize], Some(PACE_MIN));
        // A second empty turn before the next knock waits in poll.
        assert_eq!(p.nap(t, None, RING), None);
        // A paced flood's turns come a pace apart: it stays a flood.
        let naps = knocks(&mut p, &mut t, 5, PACE_MIN + 100 * US);
        assert!(naps.iter().all(|n| *n == Some(PACE_MIN)), "{naps:?}");
        // A nap never passes the caller's deadline.
        p.knock(t + 10 * US);
        assert_eq!(p.nap(t, Some(t + 300 * US), RING), Some(300 * US));
    }

    #[test]
    fn a_gap_ends_the_streak() {
        let (mut p, mut t) = flooding();
        let naps = knocks(&mut p, &mut t, 1, PACE_MIN + MARGIN);
        assert_eq!(naps, [None]);
        // The knock after the gap began a new streak.
        let naps = knocks(&mut p, &mut t, STREAK, 10 * US);
        let (last, before) = naps.split_last().unwrap();
        assert!(before.iter().all(Option::is_none), "{naps:?}");
        assert_eq!(*last, Some(PACE_MIN));
    }

    /// `count` turns of a flood of `per_ms` knocks a millisecond, each a
    /// nap after the one before (the first `first` after the last knock),
    /// each followed by an empty turn; the naps those turns were given,
    /// with the default ring.
    fn flood(
        p: &mut Pacer,
        t: &mut Instant,
        count: usize,
        per_ms: u32,
        first: Duration,
    ) -> Vec<Duration> {
        flood_into(p, t, count, per_ms, first, RING)
    }

    /// [`flood`] into sources whose smallest ring is `ring`.
    fn flood_into(
        p: &mut Pacer,
        t: &mut Instant,
        count: usize,
        per_ms: u32,
        first: Duration,
        ring: Option<usize>,
    ) -> Vec<Duration> {
        let mut gap = first;
        (0..count)
            .map(|_| {
                *t += gap;
                p.knock(*t);
                let n = per_ms * u32::try_from(gap.as_millis()).unwrap();
                (1..n).for_each(|_| p.queued());
                gap = p.nap(*t, None, ring).unwrap_or_default();
                gap
            })
            .collect()
    }

    const MS: Duration = Duration::from_millis(1);

    /// A pacer whose streak has just begun pacing (its first nap given),
    /// and the time of its last knock.
    fn flooding() -> (Pacer, Instant) {
        let mut p = Pacer::default();
        let mut t = Instant::now();
        knocks(&mut p, &mut t, STREAK + 1, 10 * US);
        (p, t)
    }

    #[test]
    fn a_heavy_flood_naps_longer_and_a_lighter_one_shorter_again() {
        let (mut p, mut t) = flooding();
        // 150 knocks a millisecond: the nap doubles up to its longest.
        let naps = flood(&mut p, &mut t, 4, 150, PACE_MIN);
        assert_eq!(naps, [4 * MS, 8 * MS, PACE_MAX, PACE_MAX]);
        // Then 2: it halves down to the shortest.
        let naps = flood(&mut p, &mut t, 4, 2, PACE_MAX);
        assert_eq!(naps, [8 * MS, 4 * MS, PACE_MIN, PACE_MIN]);
        // 50 (100 knocks a nap of 2 ms): it stays.
        let naps = flood(&mut p, &mut t, 3, 50, PACE_MIN);
        assert_eq!(naps, [PACE_MIN; 3]);
    }

    #[test]
    fn a_nap_never_grows_past_what_the_ring_can_hold() {
        let (mut p, mut t) = flooding();
        // 1500 knocks a millisecond: 3000 a nap of 2 ms, twice that more
        // than the backlog.
        let naps = flood(&mut p, &mut t, 3, 1500, PACE_MIN);
        assert_eq!(naps, [PACE_MIN; 3]);
        // 600: one doubling (2400 knocks a nap of 4 ms).
        let naps = flood(&mut p, &mut t, 3, 600, PACE_MIN);
        assert_eq!(naps, [4 * MS; 3]);
    }

    #[test]
    fn a_long_batch_before_a_nap_keeps_the_streak() {
        let (mut p, mut t) = flooding();
        let naps = flood(&mut p, &mut t, 3, 150, PACE_MIN);
        assert_eq!(naps.last(), Some(&PACE_MAX));
        // Each batch takes 3 ms to handle before the turn that naps: the
        // knocks after the naps are 19 ms apart, still one flood.
        for _ in 0..3 {
            t += PACE_MAX;
            p.knock(t);
            (1..2400).for_each(|_| p.queued());
            t += 3 * MS;
            assert_eq!(p.nap(t, None, RING), Some(PACE_MAX));
        }
    }

    #[test]
    fn a_small_ring_keeps_the_naps_short_and_no_ring_has_a_bound_too() {
        let (mut p, mut t) = flooding();
        // 512 slots (`capture_ring = 1M`): 300 knocks a nap of 2 ms, twice
        // that more than a quarter of it.
        let naps = flood_into(&mut p, &mut t, 3, 150, PACE_MIN, Some(512));
        assert_eq!(naps, [PACE_MIN; 3]);
        // No ring: as the default ring (600 a millisecond: one doubling).
        let naps = flood_into(&mut p, &mut t, 3, 600, PACE_MIN, None);
        assert_eq!(naps, [4 * MS; 3]);
    }

    #[test]
    fn a_long_nap_keeps_the_streak_and_a_longer_gap_ends_it() {
        let (mut p, mut t) = flooding();
        let naps = flood(&mut p, &mut t, 3, 150, PACE_MIN);
        assert_eq!(naps.last(), Some(&PACE_MAX));
        // A nap's length apart (and a little more): still a flood.
        let naps = flood(&mut p, &mut t, 2, 150, PACE_MAX + MARGIN / 2);
        assert_eq!(naps, [PACE_MAX; 2]);
        // A longer gap: a new streak, which naps from the shortest again.
        let naps = knocks(&mut p, &mut t, 1, PACE_MAX + MARGIN);
        assert_eq!(naps, [None]);
        let naps = knocks(&mut p, &mut t, STREAK, 10 * US);
        assert_eq!(naps.last(), Some(&Some(PACE_MIN)));
    }
}
