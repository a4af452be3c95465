//! When a flood's knocks are read as batches rather than one wake-up each.
//!
//! A wake-up from `poll(2)` costs more than handling a knock, so under a
//! flood [`MultiSource`](crate::MultiSource) lets knocks gather: a turn that
//! finds every queue empty first sleeps [`PACE`], then reads what came
//! meanwhile as one batch. [`Pacer`] decides when: only after a *streak* of
//! [`STREAK`] knocks in a row, each less than [`BUSY_GAP`] after the one
//! before (the first knock of a streak not counted). A client's sequence,
//! sent as fast as it can be (at most [`MAX_STEPS`] knocks), is never
//! paced, so its last knock is read as soon as the kernel has it; a knock
//! in a flood waits at most [`PACE`].
//!
//! Sans-IO: the caller passes the time in and does the sleeping.

use std::time::{Duration, Instant};

use knock_core::MAX_STEPS;

/// Two knocks less than this apart continue a streak (more than [`PACE`],
/// so that a flood read in paced batches goes on being one).
pub(crate) const BUSY_GAP: Duration = Duration::from_millis(3);
/// Knocks in a streak (after its first) before turns are paced: a knock
/// sequence never makes one this long.
pub(crate) const STREAK: u32 = MAX_STEPS as u32;
/// How long a paced turn sleeps before it waits in `poll(2)`.
pub(crate) const PACE: Duration = Duration::from_millis(2);

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    /// When the last knock was read.
    last: Option<Instant>,
    /// Knocks in a row, each less than [`BUSY_GAP`] after the one before
    /// (the first of them not counted).
    streak: u32,
    /// A turn slept since the last knock: the next empty turn waits in
    /// `poll(2)`.
    paced: bool,
}

impl Pacer {
    /// A knock was read at `now` (the first of a turn: the knocks of a
    /// batch are read at its time).
    pub(crate) fn knock(&mut self, now: Instant) {
        let close = self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < BUSY_GAP);
        self.streak = if close {
            self.streak.saturating_add(1)
        } else {
            0
        };
        self.last = Some(now);
        self.paced = false;
    }

    /// A turn found every queue empty: how long to sleep before waiting in
    /// `poll(2)` (at most until `deadline`), or `None` to wait at once.
    pub(crate) fn nap(&mut self, now: Instant, deadline: Option<Instant>) -> Option<Duration> {
        if self.streak < STREAK || self.paced {
            return None;
        }
        self.paced = true;
        Some(deadline.map_or(PACE, |d| d.saturating_duration_since(now).min(PACE)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    /// Knocks `gap` apart from `t`, each followed by an empty turn; the
    /// naps those turns were given.
    fn knocks(p: &mut Pacer, t: &mut Instant, n: u32, gap: Duration) -> Vec<Option<Duration>> {
        (0..n)
            .map(|_| {
                *t += gap;
                p.knock(*t);
                p.nap(*t, None)
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
        assert_eq!(naps[STREAK as usize], Some(PACE));
        // A second empty turn before the next knock waits in poll.
        assert_eq!(p.nap(t, None), None);
        // A paced flood's turns come a pace apart: it stays a flood.
        let naps = knocks(&mut p, &mut t, 5, PACE + 100 * US);
        assert!(naps.iter().all(|n| *n == Some(PACE)), "{naps:?}");
        // A nap never passes the caller's deadline.
        p.knock(t + 10 * US);
        assert_eq!(p.nap(t, Some(t + 300 * US)), Some(300 * US));
    }

    #[test]
    fn a_gap_ends_the_streak() {
        let mut p = Pacer::default();
        let mut t = Instant::now();
        knocks(&mut p, &mut t, STREAK + 1, 10 * US);
        let naps = knocks(&mut p, &mut t, 1, BUSY_GAP);
        assert_eq!(naps, [None]);
        // The knock after the gap began a new streak.
        let naps = knocks(&mut p, &mut t, STREAK, 10 * US);
        let (last, before) = naps.split_last().unwrap();
        assert!(before.iter().all(Option::is_none), "{naps:?}");
        assert_eq!(*last, Some(PACE));
    }
}
