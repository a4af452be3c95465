//! The trait every capture source implements, and what it returns.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use std::net::IpAddr;

use knock_core::{Event, Listen};

use crate::bpf::Widening;
use crate::parse::{LinkType, Reject};

/// One knock and where it was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// The knock.
    pub event: Event,
    /// The link type of the frame it came in.
    pub link: LinkType,
    /// The interface index it arrived on (0 when unknown, e.g. in a replay).
    pub ifindex: u32,
    /// A UDP datagram's data, up to [`MAX_PAYLOAD`] bytes, when a listen
    /// entry it matches asks for it ([`Listen::payload`]: a Single Packet
    /// Authorization packet; every datagram's before any listen set is
    /// given); `None` for TCP, other datagrams, empty and larger ones.
    pub payload: Option<Box<[u8]>>,
}

/// The largest datagram payload a [`Captured`] carries (fwknop's largest
/// SPA packet).
pub const MAX_PAYLOAD: usize = 1500;

/// What [`Source::next_event`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// A knock.
    Event(Captured),
    /// The deadline passed with no knock.
    Deadline,
    /// The source is exhausted (end of a capture file); later calls return
    /// `End` again.
    End,
    /// One interface of a [`crate::MultiSource`] stopped or resumed; the
    /// others were not disturbed.
    Interface(InterfaceEvent),
}

/// A change of one interface of a [`crate::MultiSource`], reported once
/// per change (never once per retry).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InterfaceEvent {
    /// Capture on `name` failed or could not start; the source retries it
    /// with a backoff, and a live socket that went down with its interface
    /// resumes as soon as frames arrive again.
    Down {
        /// The interface.
        name: String,
        /// Why, as [`crate::CaptureError`]'s message.
        error: String,
        /// [`crate::CaptureError::may_recover`]: the interface is missing or
        /// down (expected to come back), rather than unusable until someone
        /// changes something.
        may_recover: bool,
    },
    /// Capture on `name` works (again).
    Up {
        /// The interface.
        name: String,
    },
}

impl InterfaceEvent {
    /// The interface this is about.
    pub fn name(&self) -> &str {
        match self {
            InterfaceEvent::Down { name, .. } | InterfaceEvent::Up { name } => name,
        }
    }
}

/// Counters of a source. Kernel counters are cumulative since the source
/// was opened (the kernel resets `PACKET_STATISTICS` on every read; sources
/// add up what they read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames read from the socket or file (everything the kernel filter passed).
    pub received: u64,
    /// Frames returned as events (parsed, and matching the listen set).
    pub events: u64,
    /// Frames rejected by the parser, by [`Reject::index`].
    pub rejects: [u64; Reject::COUNT],
    /// Frames that parsed but matched no listen entry (the kernel passed
    /// them as undecidable, or a replay filtered them).
    pub unmatched: u64,
    /// Frames of live sources that were not for this host: another
    /// host's frame (promiscuous mode), a broadcast or multicast, a frame
    /// with a VLAN tag the interface does not terminate, or a knock of the
    /// listen set to an address that is neither one of the host's nor the
    /// door's target (traffic a router forwards).
    pub not_for_host: u64,
    /// Frames on links with no parser (a pcapng interface of another type).
    pub unsupported_link: u64,
    /// Frames the kernel filter passed (`tp_packets`, including drops), for
    /// live sources.
    pub kernel_packets: u64,
    /// Frames the kernel dropped for lack of buffer space (`tp_drops`).
    pub kernel_drops: u64,
    /// Times capture on an interface failed or could not start (each
    /// [`InterfaceEvent::Down`] a [`MultiSource`](crate::MultiSource) reports).
    pub interface_failures: u64,
}

impl Stats {
    /// How many frames were rejected for `reason`.
    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejects.get(reason.index()).copied().unwrap_or(0)
    }

    /// All rejected frames.
    pub fn rejected_total(&self) -> u64 {
        self.rejects.iter().sum()
    }

    /// Counts one parse outcome.
    pub(crate) fn count(&mut self, r: &Result<Event, Reject>) {
        self.received += 1;
        if let Err(e) = r {
            if let Some(c) = self.rejects.get_mut(e.index()) {
                *c += 1;
            }
        }
    }

    /// Adds another source's counters (for [`crate::MultiSource`]).
    pub fn add(&mut self, o: &Stats) {
        self.received += o.received;
        self.events += o.events;
        self.unmatched += o.unmatched;
        self.not_for_host += o.not_for_host;
        self.unsupported_link += o.unsupported_link;
        for (a, b) in self.rejects.iter_mut().zip(o.rejects.iter()) {
            *a += b;
        }
        self.kernel_packets += o.kernel_packets;
        self.kernel_drops += o.kernel_drops;
        self.interface_failures += o.interface_failures;
    }
}

/// A source of knocks: a live socket or a capture file.
///
/// The daemon's loop is: `next_event(core.poll_timeout())`, feed the event
/// or the timeout to the matcher, and after the matcher's listen set changed
/// (`Matcher::listen_generation`), call [`Source::set_listen`].
pub trait Source {
    /// Blocks until a knock arrives or `deadline` passes (`None`: no
    /// deadline). Frames that are not knocks are counted in [`Source::stats`]
    /// and skipped. Live sources wait in `poll(2)`, never spin. A deadline in
    /// the past still returns a knock that is already queued. A signal
    /// delivered while waiting returns [`Next::Deadline`] early, so that the
    /// caller can look at its signal flags (no periodic wake-ups needed).
    ///
    /// Replays ignore the deadline: their time is the file's.
    fn next_event(&mut self, deadline: Option<Instant>) -> Result<Next, crate::CaptureError>;

    /// A knock that is already queued, without waiting, without a system
    /// call where the source can help it (a ring) and without reading a
    /// clock; `None` when there is none, or when the source has something
    /// else to report (an error, an interface change: the next
    /// [`Source::next_event`] returns it). For a caller that works in
    /// batches: one `next_event`, then `next_queued` until `None`, all
    /// at the time read once after the wait. The default returns `None`
    /// (every knock then comes from `next_event`).
    fn next_queued(&mut self) -> Option<Captured> {
        None
    }

    /// Replaces the kernel filter with one that passes the knocks of `listen`
    /// (and whatever it cannot decide). An empty set passes nothing. Replays
    /// filter in user space with [`Listen::matches`].
    fn set_listen(&mut self, listen: &[Listen]) -> Result<(), crate::CaptureError>;

    /// The counters so far (reads the kernel's counters for live sources).
    fn stats(&mut self) -> Stats;

    /// The descriptor to wait on, for live sources; `None` for sources that
    /// are always ready (replays). [`crate::MultiSource`] polls these.
    fn poll_fd(&self) -> Option<BorrowedFd<'_>>;

    /// How the kernel filter had to be widened to fit (worth a warning: the
    /// filter passes traffic no door asks for, which costs user-space
    /// work); `None` when it is exact or there is none. Read it after opening
    /// a source and after each [`Source::set_listen`].
    fn filter_widening(&self) -> Option<Widening> {
        None
    }

    /// The frames the source's receive ring holds while it is not read
    /// (`None`: no ring). A flood's pauses are kept short enough not to
    /// fill it.
    fn ring_frames(&self) -> Option<usize> {
        None
    }
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn next_event(&mut self, deadline: Option<Instant>) -> Result<Next, crate::CaptureError> {
        (**self).next_event(deadline)
    }
    fn next_queued(&mut self) -> Option<Captured> {
        (**self).next_queued()
    }
    fn set_listen(&mut self, listen: &[Listen]) -> Result<(), crate::CaptureError> {
        (**self).set_listen(listen)
    }
    fn stats(&mut self) -> Stats {
        (**self).stats()
    }
    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        (**self).poll_fd()
    }
    fn filter_widening(&self) -> Option<Widening> {
        (**self).filter_widening()
    }
    fn ring_frames(&self) -> Option<usize> {
        (**self).ring_frames()
    }
}

/// The user-space re-check of the listen set (the kernel filter is only an
/// optimisation, and cannot decide everything).
#[derive(Clone, Debug, Default)]
pub(crate) struct UserFilter {
    /// `None`: never set, every event passes.
    listen: Option<Vec<Listen>>,
}

impl UserFilter {
    pub(crate) fn set(&mut self, listen: &[Listen]) {
        self.listen = Some(listen.to_vec());
    }

    /// The payload a [`Captured`] keeps of `e`'s transport data `data`
    /// (see [`Captured::payload`]): copied only for a datagram some entry
    /// asks the data of (`wanted`, asked last), so that a flood of knocks
    /// costs no allocation.
    pub(crate) fn payload(
        e: &Event,
        data: &[u8],
        wanted: impl FnOnce() -> bool,
    ) -> Option<Box<[u8]>> {
        (e.proto == knock_core::Proto::Udp
            && !data.is_empty()
            && data.len() <= MAX_PAYLOAD
            && wanted())
        .then(|| data.into())
    }

    /// What the entries that match `e` say, in one pass over the listen
    /// set: `None` when none does.
    fn matched(&self, e: &Event) -> Option<Matched> {
        let Some(l) = &self.listen else {
            return Some(Matched {
                targeted: false,
                payload: true,
            });
        };
        let mut m: Option<Matched> = None;
        for x in l.iter().filter(|x| x.matches(e)) {
            let m = m.get_or_insert(Matched {
                targeted: false,
                payload: false,
            });
            m.targeted |= x.dst.is_some();
            m.payload |= x.payload;
        }
        m
    }

    /// Whether an entry that matches `e` asks for its data.
    pub(crate) fn wants_payload(&self, e: &Event) -> bool {
        self.matched(e).is_some_and(|m| m.payload)
    }

    /// Whether `e` is a knock of the listen set for this host: an entry
    /// with a target matches it, or one without a target does and
    /// `is_local(e.dst)`; if so, whether an entry that matches it asks for
    /// its data (for [`payload`](Self::payload)). Counts it as an event,
    /// unmatched or not for this host.
    pub(crate) fn admits(
        &self,
        e: &Event,
        stats: &mut Stats,
        is_local: impl FnOnce(IpAddr) -> bool,
    ) -> Option<bool> {
        let Some(Matched { targeted, payload }) = self.matched(e) else {
            stats.unmatched += 1;
            return None;
        };
        if targeted || is_local(e.dst) {
            stats.events += 1;
            Some(payload)
        } else {
            stats.not_for_host += 1;
            None
        }
    }
}

/// The entries of a listen set that match a knock, summed up.
#[derive(Clone, Copy)]
struct Matched {
    /// One of them has a target.
    targeted: bool,
    /// One of them asks for the datagram's data.
    payload: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use knock_core::{FlagFilter, Step, Timestamp};
    use std::net::Ipv4Addr;

    const HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));

    fn udp(port: u16, dst: IpAddr) -> Event {
        let src = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
        Event::udp(src, dst, port, Timestamp::ZERO)
    }

    #[test]
    fn one_pass_decides_the_knock_and_its_data() {
        let mut spa = Listen::new(Step::udp(62201), FlagFilter::ANY, None);
        spa.payload = true;
        let targeted = Listen::new(Step::udp(62201), FlagFilter::ANY, Some(OTHER));
        let knock = Listen::new(Step::udp(7000), FlagFilter::ANY, None);
        let mut f = UserFilter::default();
        f.set(&[spa, targeted, knock]);
        let mut stats = Stats::default();
        let local = |a: IpAddr| a == HOST;
        // To the host: the SPA entry matches and asks for the data.
        assert_eq!(f.admits(&udp(62201, HOST), &mut stats, local), Some(true));
        // To the other address: only the targeted entry's target, and the
        // SPA entry that matches too asks for the data.
        assert_eq!(f.admits(&udp(62201, OTHER), &mut stats, local), Some(true));
        // A knock: admitted, no data kept.
        assert_eq!(f.admits(&udp(7000, HOST), &mut stats, local), Some(false));
        let data = [1u8; 8];
        assert_eq!(UserFilter::payload(&udp(7000, HOST), &data, || false), None);
        assert_eq!(
            UserFilter::payload(&udp(62201, HOST), &data, || true).as_deref(),
            Some(&data[..])
        );
        // Not for the host, and not in the set.
        assert_eq!(f.admits(&udp(7000, OTHER), &mut stats, local), None);
        assert_eq!(f.admits(&udp(9, HOST), &mut stats, local), None);
        assert_eq!(
            (stats.events, stats.not_for_host, stats.unmatched),
            (3, 1, 1)
        );
        assert!(f.wants_payload(&udp(62201, OTHER)));
        assert!(!f.wants_payload(&udp(7000, HOST)));
        // Before any set: everything to the host passes, and datagrams
        // keep their data.
        let open = UserFilter::default();
        assert_eq!(open.admits(&udp(9, HOST), &mut stats, local), Some(true));
        assert_eq!(open.admits(&udp(9, OTHER), &mut stats, local), None);
    }
}
