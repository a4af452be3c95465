//! Which per-source log lines a flood may not turn into a full disk.
//!
//! knockd writes a line for every stage of every source (`Stage 1`, ...) and
//! for every attempt that times out: a flood of spoofed first knocks is a
//! line per packet, gigabytes an hour. [`Quiet`] lets these lines through
//! at a sustained rate (a token bucket of [`BURST`] lines refilled at
//! [`RATE`] a second) and counts the rest, to be summarised once per
//! [`SUMMARY_AFTER`] ("N stage and timeout lines from M sources
//! suppressed..."). Opens, closes, blocks and errors never pass through it.
//!
//! A source that opens must not lose its stages: [`Quiet`] remembers which
//! stages of which source it let through (a small bounded map: only lines
//! it lets through, which are rate-limited, are recorded), and when an open
//! follows a time of suppression, the engine writes the stages not written
//! yet, just before the open line.
//!
//! Sans-IO: time comes in as the engine's monotonic [`Timestamp`].

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use std::sync::Arc;

use knock_core::{SourceHasher, Timestamp};

/// Lines let through at once after a quiet time.
pub const BURST: u32 = 100;
/// Lines let through per second, sustained.
pub const RATE: u32 = 10;
/// Suppressed lines are summarised this long after the first of them.
pub const SUMMARY_AFTER: Duration = Duration::from_secs(10);
/// How long after a suppression an open still writes its missing stages
/// (longer than any sensible sequence timeout).
pub const HOLD: Duration = Duration::from_secs(600);
/// Sources counted by name in a summary (beyond: "at least"): enough to
/// tell one noisy host from a spoofed flood, and a set small enough that a
/// flood's lines cost no cache misses to count.
const MAX_COUNTED: usize = 4096;
/// Sources whose written stages are remembered.
const MAX_WRITTEN: usize = 4096;

/// The rate limit of per-source lines. See the [module documentation](self).
#[derive(Debug)]
pub struct Quiet {
    /// Tokens, in thousandths of a line.
    tokens: u64,
    refilled: Timestamp,
    /// Suppressed lines since `since`.
    suppressed: u64,
    /// Suppressed lines since the start.
    total: u64,
    /// Their sources (up to [`MAX_COUNTED`]), as IPv6 (IPv4-mapped)
    /// addresses' bits: spoofable keys, hashed with a keyed hash in one
    /// write. Reserved whole at the first suppressed line.
    sources: HashSet<u128, SourceHasher>,
    /// When the first line of the current summary was suppressed.
    since: Option<Timestamp>,
    /// When a line was last suppressed.
    last_suppressed: Option<Timestamp>,
    /// Stages let through, by source and door: a bit per step, and when
    /// the last was.
    written: HashMap<(IpAddr, Arc<str>), (u64, Timestamp)>,
}

impl Default for Quiet {
    /// [`Quiet::new`] with seed 0.
    fn default() -> Self {
        Quiet::new(0)
    }
}

impl Quiet {
    /// A rate limit whose set of sources hashes with `seed` (a daemon
    /// passes a random one: the sources of a flood are chosen by whoever
    /// sends it).
    pub fn new(seed: u64) -> Self {
        Quiet {
            tokens: u64::from(BURST) * 1000,
            refilled: Timestamp::ZERO,
            suppressed: 0,
            total: 0,
            sources: HashSet::with_hasher(SourceHasher::new(seed)),
            since: None,
            last_suppressed: None,
            written: HashMap::new(),
        }
    }

    /// Whether a per-source line of `src` at `now` is written; if not, it
    /// is counted for the summary.
    pub fn admit(&mut self, now: Timestamp, src: IpAddr) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled);
        if !elapsed.is_zero() {
            let add = u64::try_from(elapsed.as_millis())
                .unwrap_or(u64::MAX)
                .saturating_mul(u64::from(RATE));
            self.tokens = self.tokens.saturating_add(add).min(u64::from(BURST) * 1000);
            self.refilled = now;
        }
        if self.tokens >= 1000 {
            self.tokens -= 1000;
            return true;
        }
        self.suppressed += 1;
        self.total += 1;
        if self.sources.len() < MAX_COUNTED {
            let v6 = match src {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            // Whole at once (136 KiB, kept), rather than doubling (and
            // rehashing) on its way there.
            if self.sources.capacity() < MAX_COUNTED {
                self.sources.reserve(MAX_COUNTED - self.sources.len());
            }
            self.sources.insert(v6.to_bits());
        }
        self.since.get_or_insert(now);
        self.last_suppressed = Some(now);
        false
    }

    /// Lines suppressed since the start (summarised or not yet).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// [`Quiet::admit`] for stage `step` of `src` at `door`, remembering it
    /// when it is written ([`Quiet::written`]).
    pub fn admit_stage(&mut self, now: Timestamp, src: IpAddr, door: &Arc<str>, step: u8) -> bool {
        if !self.admit(now, src) {
            return false;
        }
        self.written(now, src, door, step);
        true
    }

    /// Stage `step` of `src` at `door` was written (after [`Quiet::admit`]
    /// let it through).
    pub fn written(&mut self, now: Timestamp, src: IpAddr, door: &Arc<str>, step: u8) {
        let key = (src, door.clone());
        if self.written.len() >= MAX_WRITTEN && !self.written.contains_key(&key) {
            let hold = u64::try_from(HOLD.as_micros()).unwrap_or(u64::MAX);
            self.forget_before(Timestamp::from_micros(now.as_micros().saturating_sub(hold)));
            if self.written.len() >= MAX_WRITTEN {
                // Forgetting only makes an open write a stage twice.
                self.written.clear();
            }
        }
        let e = self.written.entry(key).or_insert((0, now));
        *e = (e.0 | bit(step), now);
    }

    /// `src` opened `door` at `now` after `steps` stages: the stages whose
    /// lines were not written (none if nothing was suppressed lately).
    pub fn missing_stages(
        &mut self,
        now: Timestamp,
        src: IpAddr,
        door: &Arc<str>,
        steps: u8,
    ) -> Vec<u8> {
        let written = self.written.remove(&(src, door.clone())).map_or(0, |e| e.0);
        let recent = self
            .last_suppressed
            .is_some_and(|t| now.saturating_duration_since(t) <= HOLD);
        if !recent {
            return Vec::new();
        }
        (1..=steps).filter(|&s| written & bit(s) == 0).collect()
    }

    /// When the summary of suppressed lines is due (`None`: none pending).
    pub fn deadline(&self) -> Option<Timestamp> {
        self.since.map(|t| t.saturating_add(SUMMARY_AFTER))
    }

    /// The summary line, if it is due at `now` (or `force`d, at shutdown).
    /// Inline: the engine asks at the end of every call.
    #[inline]
    pub fn summary(&mut self, now: Timestamp, force: bool) -> Option<String> {
        let since = self.since?;
        if !force && now < since.saturating_add(SUMMARY_AFTER) {
            return None;
        }
        Some(self.summarise(now, since))
    }

    #[cold]
    fn summarise(&mut self, now: Timestamp, since: Timestamp) -> String {
        let secs = now.saturating_duration_since(since).as_secs().max(1);
        let at_least = if self.sources.len() >= MAX_COUNTED {
            "at least "
        } else {
            ""
        };
        let line = format!(
            "{} stage and timeout lines from {at_least}{} sources suppressed in the last {secs} s \
             (more than {RATE} a second); opens, closes and blocks are all logged",
            self.suppressed,
            self.sources.len()
        );
        self.suppressed = 0;
        self.sources.clear();
        self.since = None;
        line
    }

    fn forget_before(&mut self, t: Timestamp) {
        self.written.retain(|_, e| e.1 >= t);
    }
}

/// The bit of `step` (1-based; steps beyond 64 share the last bit).
fn bit(step: u8) -> u64 {
    1 << (step.clamp(1, 64) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x6440_0000 + n))
    }
    fn ms(n: u64) -> Timestamp {
        Timestamp::from_millis(n)
    }

    #[test]
    fn a_burst_passes_then_the_sustained_rate() {
        let mut q = Quiet::default();
        let passed = (0..1000).filter(|&i| q.admit(ms(0), ip(i))).count();
        assert_eq!(passed, BURST as usize);
        // One second later: RATE more.
        let passed = (0..1000).filter(|&i| q.admit(ms(1000), ip(i))).count();
        assert_eq!(passed, RATE as usize);
        // A quiet minute refills the burst, no more.
        let passed = (0..1000).filter(|&i| q.admit(ms(61_000), ip(i))).count();
        assert_eq!(passed, BURST as usize);
    }

    #[test]
    fn below_the_rate_nothing_is_suppressed() {
        let mut q = Quiet::default();
        for i in 0..10_000u64 {
            assert!(q.admit(ms(i * 1000 / u64::from(RATE)), ip(1)));
        }
        assert_eq!(q.deadline(), None);
        assert_eq!(q.summary(ms(10_000_000), true), None);
    }

    #[test]
    fn suppressed_lines_are_summarised_once_with_their_sources() {
        let mut q = Quiet::default();
        for i in 0..(BURST + 500) {
            q.admit(ms(0), ip(i % 300));
        }
        assert_eq!(q.deadline(), Some(ms(10_000)));
        assert_eq!(q.summary(ms(9_999), false), None, "not due yet");
        let s = q.summary(ms(10_000), false).unwrap();
        assert!(
            s.starts_with(
                "500 stage and timeout lines from 300 sources suppressed in the last 10 s"
            ),
            "{s}"
        );
        assert_eq!(q.deadline(), None);
        assert_eq!(q.summary(ms(30_000), true), None, "said once");
    }

    #[test]
    fn a_flood_counts_its_sources_up_to_a_bound() {
        let mut q = Quiet::default();
        let n = MAX_COUNTED as u32 + 1000;
        for i in 0..(BURST + n) {
            q.admit(ms(0), ip(i));
        }
        let s = q.summary(ms(10_000), false).unwrap();
        assert!(
            s.starts_with(&format!(
                "{n} stage and timeout lines from at least {MAX_COUNTED} sources suppressed"
            )),
            "{s}"
        );
        // The next summary counts afresh (after the refilled burst).
        for i in 0..(BURST + 10) {
            q.admit(ms(20_000), ip(i % 10));
        }
        let s = q.summary(ms(30_000), false).unwrap();
        assert!(
            s.starts_with("10 stage and timeout lines from 10 sources "),
            "{s}"
        );
    }

    #[test]
    fn an_open_after_suppression_gets_the_stages_not_written() {
        let mut q = Quiet::default();
        let door: Arc<str> = Arc::from("ssh");
        let door = &door;
        let me = ip(999_999);
        // Stage 1 gets through, then a flood eats the bucket, stages 2 and
        // 3 are suppressed.
        assert!(q.admit_stage(ms(0), me, door, 1));
        for i in 0..1000 {
            q.admit_stage(ms(1), ip(i), door, 1);
        }
        assert!(!q.admit_stage(ms(2), me, door, 2));
        assert!(!q.admit_stage(ms(3), me, door, 3));
        assert_eq!(q.missing_stages(ms(3), me, door, 3), vec![2, 3]);
        // Another door's attempt knows nothing of this one: all its stages.
        assert_eq!(
            q.missing_stages(ms(3), me, &Arc::from("web"), 2),
            vec![1, 2]
        );
    }

    #[test]
    fn an_open_with_no_suppression_lately_writes_nothing_more() {
        let mut q = Quiet::default();
        let door: Arc<str> = Arc::from("ssh");
        let door = &door;
        // Never suppressed.
        assert!(q.admit_stage(ms(0), ip(1), door, 1));
        assert_eq!(q.missing_stages(ms(5), ip(1), door, 3), Vec::<u8>::new());
        // Suppressed long ago.
        for i in 0..1000 {
            q.admit(ms(10), ip(i));
        }
        let later = ms(10) + HOLD + Duration::from_secs(1);
        assert_eq!(q.missing_stages(later, ip(2), door, 2), Vec::<u8>::new());
        assert_eq!(q.missing_stages(ms(20), ip(2), door, 2), vec![1, 2]);
    }

    #[test]
    fn the_map_of_written_stages_stays_bounded() {
        let mut q = Quiet::default();
        for i in 0..(3 * MAX_WRITTEN as u32) {
            // A line a second from a new source each: all pass.
            assert!(q.admit_stage(ms(u64::from(i) * 1000), ip(i), &Arc::from("ssh"), 1));
            assert!(q.written.len() <= MAX_WRITTEN);
        }
    }
}
