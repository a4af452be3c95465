//! Several sources (interfaces) behind one [`Source`], each failing and
//! recovering on its own.

use std::collections::VecDeque;
use std::fmt;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use knock_core::Listen;

use crate::afpacket::{interface_names, poll_timeout, LiveConfig};
use crate::pace::Pacer;
use crate::ring::wrap;
use crate::source::{Captured, InterfaceEvent, Next, Source, Stats};
use crate::{sys, AfPacketSource, CaptureError};

/// The first retry of a failed interface comes this long after the failure;
/// each failed retry doubles the wait, up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two retries of a failed interface.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// At most this many knocks still queued on the old socket of a reopened
/// interface are handed out (its buffer can hold a flood's worth).
const DRAIN_MAX: usize = 1024;

/// Opens the source of one interface again (for the current listen set).
type OpenFn<S> = dyn FnMut(&str, &[Listen]) -> Result<S, CaptureError> + Send;

/// How [`MultiSource`] reopens a failed interface.
struct Opener<S>(Box<OpenFn<S>>);

impl<S> fmt::Debug for Opener<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Opener")
    }
}

/// One interface of a [`MultiSource`].
#[derive(Debug)]
struct Slot<S> {
    name: String,
    state: State<S>,
}

#[derive(Debug)]
enum State<S> {
    /// Read normally.
    Up(S),
    /// Failed. `kept` is the failed source if it may resume by itself (a
    /// live socket whose interface went down: the kernel delivers again
    /// once it is up), watched for frames; `retry` is when to open it
    /// anew (`None`: there is no way to reopen it).
    Down {
        kept: Option<S>,
        retry: Option<Instant>,
        backoff: Duration,
        /// The failure will not pass by itself ([`CaptureError::may_recover`]).
        lasting: bool,
    },
    /// A replay at its end.
    Ended,
}

/// Several sources read as one: live sources are waited on together in one
/// `poll(2)`, and served round-robin so a busy interface cannot starve the
/// others. Each keeps its own link type and kernel filter; `set_listen` and
/// `stats` fan out and add up. Sources with no descriptor (replays) are read
/// in turn; the whole ends when every such source has ended and there is no
/// live one.
///
/// Each interface fails on its own: a source whose read or filter update
/// fails is taken out of the wait and reported once as
/// [`Next::Interface`]`(`[`InterfaceEvent::Down`]`)`, and the others go on.
/// Sources opened by name ([`MultiSource::open_each`], [`MultiSource::open`],
/// [`MultiSource::every_interface`]) are opened again with a backoff (1 s,
/// doubling up to 30 s) until that works, without a report per attempt; a
/// socket whose interface merely went down is also kept and read, so that
/// knocks after `ip link set up` are not lost, and its first knock makes
/// the reopen due at once. Recovery (a reopen that works) is reported once
/// as [`InterfaceEvent::Up`]. When every interface is healthy the wait has
/// no deadline of its own (no periodic wake-ups).
///
/// Under a flood (more knocks in a row, each close after the one before,
/// than a knock sequence holds) a turn that finds every queue empty first
/// sleeps 2 ms, then looks again before it waits in `poll(2)`: the knocks
/// that came meanwhile are read as one batch ([`Source::next_queued`])
/// instead of one wake-up each. A flood of more than 100,000 knocks a
/// second gets longer pauses, up to 16 ms (fewer wake-ups, larger batches),
/// as long as a pause's knocks fit a quarter of the smallest ring. A knock
/// during a flood is read at most 16 ms later; a lone knock, and every knock
/// of a client's sequence, at once (see `pace`).
///
/// Reopening happens on the thread that calls [`Source::next_event`]: use
/// the source in the network namespace it was opened in (a reopen from
/// another one fails rather than capture there).
#[derive(Debug)]
pub struct MultiSource<S> {
    slots: Vec<Slot<S>>,
    next: usize,
    waker: Option<UnixStream>,
    opener: Option<Opener<S>>,
    /// The listen set last given, for reopened sources.
    listen: Vec<Listen>,
    /// Interface changes not reported yet (and the knock that showed an
    /// interface is back, after its [`InterfaceEvent::Up`]).
    pending: VecDeque<Next>,
    /// Counters of sources dropped after a failure.
    retired: Stats,
    /// Whether an empty turn sleeps first (a flood).
    pacer: Pacer,
}

impl<S: Source> MultiSource<S> {
    /// Reads from all of `sources` (named `#0`, `#1`, ... in reports). A
    /// source that fails is reported and dropped, never reopened.
    pub fn new(sources: Vec<S>) -> Self {
        let slots = sources
            .into_iter()
            .enumerate()
            .map(|(i, s)| Slot {
                name: format!("#{i}"),
                state: State::Up(s),
            })
            .collect();
        MultiSource {
            slots,
            next: 0,
            waker: None,
            opener: None,
            listen: Vec::new(),
            pending: VecDeque::new(),
            retired: Stats::default(),
            pacer: Pacer::default(),
        }
    }

    /// Also wakes for `waker`: when another thread writes to the other end
    /// of this stream (a command finished, say), the wait returns
    /// [`Next::Deadline`] at once (during a flood, after the pause of at
    /// most 16 ms that lets packets gather) and the bytes are drained.
    /// Nothing else is read from it. The stream is made non-blocking.
    ///
    /// # Errors
    /// The stream cannot be made non-blocking.
    pub fn set_waker(&mut self, waker: UnixStream) -> Result<(), CaptureError> {
        waker
            .set_nonblocking(true)
            .map_err(|e| CaptureError::io("waker", e))?;
        self.waker = Some(waker);
        Ok(())
    }

    /// Drains the waker; true if anything was written to it.
    fn woken(&mut self) -> bool {
        let Some(w) = &mut self.waker else {
            return false;
        };
        let mut buf = [0u8; 64];
        let mut any = false;
        while let Ok(n @ 1..) = w.read(&mut buf) {
            any = true;
            if n < buf.len() {
                break;
            }
        }
        any
    }

    /// The sources that work now, in the order given.
    pub fn sources(&self) -> impl Iterator<Item = &S> {
        self.slots.iter().filter_map(|s| match &s.state {
            State::Up(src) => Some(src),
            _ => None,
        })
    }

    /// The sources that work now, mutably.
    pub fn sources_mut(&mut self) -> impl Iterator<Item = &mut S> {
        self.slots.iter_mut().filter_map(|s| match &mut s.state {
            State::Up(src) => Some(src),
            _ => None,
        })
    }

    /// Every interface by name, with whether it is read now.
    pub fn interfaces(&self) -> impl Iterator<Item = (&str, bool)> {
        self.slots
            .iter()
            .map(|s| (s.name.as_str(), matches!(s.state, State::Up(_))))
    }

    /// Whether capture cannot work at all: there are interfaces, and every
    /// one failed (last time it was tried) for a reason that will not pass
    /// by itself ([`CaptureError::may_recover`]), like a missing
    /// `CAP_NET_RAW` or a filter the kernel refuses. They are still retried.
    pub fn failed_for_good(&self) -> bool {
        !self.slots.is_empty()
            && self
                .slots
                .iter()
                .all(|s| matches!(s.state, State::Down { lasting: true, .. }))
    }

    /// The next interface change not reported yet, if any. [`Source::next_event`]
    /// returns these first; this is for a caller that wants them before it
    /// starts reading (the failures of [`MultiSource::open_each`], say).
    pub fn poll_interface_event(&mut self) -> Option<InterfaceEvent> {
        match self.pending.front() {
            Some(Next::Interface(_)) => match self.pending.pop_front() {
                Some(Next::Interface(ev)) => Some(ev),
                _ => None,
            },
            _ => None,
        }
    }

    /// Takes slot `i` out after `error`: reported once, retried later.
    /// `keep` leaves a source that may resume by itself watched.
    fn fail(&mut self, i: usize, error: &CaptureError, keep: bool, now: Instant) {
        let can_reopen = self.opener.is_some();
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        let old = std::mem::replace(&mut slot.state, State::Ended);
        let mut kept = match old {
            State::Up(s) => Some(s),
            State::Down { kept, .. } => kept,
            State::Ended => None,
        };
        if !(keep && error.may_recover() && kept.as_ref().is_some_and(|s| s.poll_fd().is_some())) {
            if let Some(mut s) = kept.take() {
                self.retired.add(&s.stats());
            }
        }
        self.retired.interface_failures += 1;
        slot.state = State::Down {
            kept,
            retry: can_reopen.then(|| now + FIRST_RETRY),
            backoff: FIRST_RETRY,
            lasting: !error.may_recover(),
        };
        self.pending
            .push_back(Next::Interface(InterfaceEvent::Down {
                name: slot.name.clone(),
                error: error.to_string(),
                may_recover: error.may_recover(),
            }));
    }

    /// Slot `i` is down, but its kept source delivered a knock: the
    /// interface may be back (or the knock was queued before it went
    /// down). Reopening decides: due now. With no way to reopen, the
    /// source is taken as back.
    fn delivered_while_down(&mut self, i: usize, now: Instant) {
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        match &mut slot.state {
            State::Down { retry: Some(t), .. } => *t = (*t).min(now),
            State::Down {
                kept, retry: None, ..
            } => {
                if let Some(s) = kept.take() {
                    slot.state = State::Up(s);
                    self.pending.push_back(Next::Interface(InterfaceEvent::Up {
                        name: slot.name.clone(),
                    }));
                }
            }
            _ => {}
        }
    }

    /// Reopens the interfaces whose retry is due; reports those that work.
    fn retry_due(&mut self, now: Instant) {
        let Some(opener) = &mut self.opener else {
            return;
        };
        for slot in &mut self.slots {
            let State::Down {
                retry,
                backoff,
                lasting,
                ..
            } = &mut slot.state
            else {
                continue;
            };
            if retry.is_none_or(|t| t > now) {
                continue;
            }
            match (opener.0)(&slot.name, &self.listen) {
                Ok(s) => {
                    self.pending.push_back(Next::Interface(InterfaceEvent::Up {
                        name: slot.name.clone(),
                    }));
                    if let State::Down {
                        kept: Some(mut old),
                        ..
                    } = std::mem::replace(&mut slot.state, State::Up(s))
                    {
                        // What the old socket still holds, then it goes.
                        for _ in 0..DRAIN_MAX {
                            match old.next_event(Some(now)) {
                                Ok(ev @ Next::Event(_)) => self.pending.push_back(ev),
                                _ => break,
                            }
                        }
                        self.retired.add(&old.stats());
                    }
                }
                Err(e) => {
                    *lasting = !e.may_recover();
                    // Still failing: already reported; wait longer.
                    *backoff = (*backoff * 2).min(MAX_RETRY);
                    *retry = Some(now + *backoff);
                }
            }
        }
    }

    /// The earliest retry of a failed interface.
    fn next_retry(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| match s.state {
                State::Down { retry, .. } => retry,
                _ => None,
            })
            .min()
    }
}

/// The network namespace of the calling thread, as (device, inode).
fn current_netns() -> Option<(u64, u64)> {
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl MultiSource<AfPacketSource> {
    /// Reads `names`, and reopens an interface that fails.
    fn with_names(names: Vec<String>, listen: &[Listen], cfg: &LiveConfig) -> Self {
        let cfg = *cfg;
        let home = current_netns();
        let opener = move |name: &str, listen: &[Listen]| {
            if current_netns() != home {
                return Err(CaptureError::io(
                    format!("reopen {name}"),
                    std::io::Error::other("called from another network namespace"),
                ));
            }
            AfPacketSource::open_with(name, listen, &cfg)
        };
        let now = Instant::now();
        MultiSource {
            slots: names
                .into_iter()
                .map(|name| Slot {
                    name,
                    state: State::Down {
                        kept: None,
                        retry: Some(now),
                        backoff: FIRST_RETRY,
                        lasting: false,
                    },
                })
                .collect(),
            next: 0,
            waker: None,
            opener: Some(Opener(Box::new(opener))),
            listen: listen.to_vec(),
            pending: VecDeque::new(),
            retired: Stats::default(),
            pacer: Pacer::default(),
        }
    }

    /// One [`AfPacketSource`] per named interface, each opened on its own:
    /// an interface that cannot be opened now is queued as an
    /// [`InterfaceEvent::Down`] ([`MultiSource::poll_interface_event`], or
    /// the first [`Source::next_event`]s) and retried with a backoff, while
    /// the others are read. Whatever happens later to one interface does
    /// not disturb the others.
    ///
    /// # Errors
    /// No interface could be opened, and none for a reason that may pass
    /// ([`CaptureError::may_recover`]): capture cannot work at all (no
    /// `CAP_NET_RAW`, say). The error is the first interface's.
    pub fn open_each(
        names: &[&str],
        listen: &[Listen],
        cfg: &LiveConfig,
    ) -> Result<Self, CaptureError> {
        let mut m = Self::with_names(names.iter().map(|n| n.to_string()).collect(), listen, cfg);
        let now = Instant::now();
        let mut first = None;
        for i in 0..m.slots.len() {
            let Some(opener) = &mut m.opener else {
                break;
            };
            match (opener.0)(&m.slots[i].name, listen) {
                Ok(s) => m.slots[i].state = State::Up(s),
                Err(e) => {
                    m.fail(i, &e, false, now);
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            Some(e) if m.failed_for_good() => Err(e),
            _ => Ok(m),
        }
    }

    /// One [`AfPacketSource`] per named interface; fails if any cannot be
    /// opened now. Later failures are handled as with
    /// [`MultiSource::open_each`].
    ///
    /// # Errors
    /// The first interface that cannot be opened.
    pub fn open(names: &[&str], listen: &[Listen], cfg: &LiveConfig) -> Result<Self, CaptureError> {
        let mut m = Self::with_names(names.iter().map(|n| n.to_string()).collect(), listen, cfg);
        for slot in &mut m.slots {
            slot.state = State::Up(AfPacketSource::open_with(&slot.name, listen, cfg)?);
        }
        Ok(m)
    }

    /// One [`AfPacketSource`] per interface of the calling thread's network
    /// namespace that has a supported link type (Ethernet, loopback, tun,
    /// WireGuard, ppp, ip tunnels); the others are skipped. An interface
    /// that is down now is read once it is up (retried quietly, reported
    /// as [`InterfaceEvent::Up`]). Interfaces added later are not seen:
    /// reopen on a change.
    ///
    /// # Errors
    /// The interfaces cannot be listed, or one fails for a reason other
    /// than being missing, down or unsupported (no `CAP_NET_RAW`, say).
    pub fn every_interface(listen: &[Listen], cfg: &LiveConfig) -> Result<Self, CaptureError> {
        let mut m = Self::with_names(Vec::new(), listen, cfg);
        for name in interface_names()? {
            let state = match AfPacketSource::open_with(&name, listen, cfg) {
                Ok(src) => State::Up(src),
                Err(CaptureError::UnsupportedInterface { .. })
                | Err(CaptureError::NoSuchInterface(_)) => continue,
                Err(CaptureError::InterfaceDown(_)) => State::Down {
                    kept: None,
                    retry: Some(Instant::now() + FIRST_RETRY),
                    backoff: FIRST_RETRY,
                    lasting: false,
                },
                Err(e) => return Err(e),
            };
            m.slots.push(Slot { name, state });
        }
        Ok(m)
    }
}

impl<S: Source> Source for MultiSource<S> {
    fn next_event(&mut self, deadline: Option<Instant>) -> Result<Next, CaptureError> {
        loop {
            let now = Instant::now();
            self.retry_due(now);
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            let n = self.slots.len();
            // Fd-less sources first (they never block).
            let mut live = false;
            for i in 0..n {
                let src = match &mut self.slots[i].state {
                    State::Up(s) if s.poll_fd().is_none() => s,
                    State::Up(_) => {
                        live = true;
                        continue;
                    }
                    State::Down { kept, retry, .. } => {
                        live |= retry.is_some() || kept.is_some();
                        continue;
                    }
                    State::Ended => continue,
                };
                match src.next_event(deadline) {
                    Ok(Next::End) => self.slots[i].state = State::Ended,
                    Ok(Next::Deadline) => {}
                    Ok(ev) => return Ok(ev),
                    Err(e) => self.fail(i, &e, false, now),
                }
            }
            if !self.pending.is_empty() {
                continue;
            }
            if !live {
                let ended = self.slots.iter().all(|s| !matches!(s.state, State::Up(_)));
                return Ok(if ended { Next::End } else { Next::Deadline });
            }
            // Anything already queued, round-robin, without blocking; a
            // kept (down) socket that delivers makes its reopen due.
            let now_dl = Some(now);
            for k in 0..n {
                let i = wrap(self.next + k, n);
                let (src, down) = match &mut self.slots[i].state {
                    State::Up(s) if s.poll_fd().is_some() => (s, false),
                    State::Down { kept: Some(s), .. } => (s, true),
                    _ => continue,
                };
                match src.next_event(now_dl) {
                    Ok(ev @ Next::Event(_)) => {
                        self.next = wrap(i + 1, n);
                        self.pacer.knock(now);
                        if down {
                            self.delivered_while_down(i, now);
                        }
                        return Ok(ev);
                    }
                    Ok(Next::Interface(ev)) => return Ok(Next::Interface(ev)),
                    Ok(_) => {}
                    Err(_) if down => {
                        // Failing again while down: stop watching it (no
                        // busy loop on a socket in error); retries go on.
                        if let State::Down { kept, .. } = &mut self.slots[i].state {
                            if let Some(mut s) = kept.take() {
                                self.retired.add(&s.stats());
                            }
                        }
                    }
                    Err(e) => self.fail(i, &e, true, now),
                }
            }
            if !self.pending.is_empty() {
                continue;
            }
            // A flood's pause comes before the waker is read: it is short,
            // and the caller handles what woke it (a finished command) at
            // every batch anyway; the read is a system call per pause.
            if let Some(nap) = self.pacer.nap(now, deadline, self.ring_frames()) {
                std::thread::sleep(nap);
                continue;
            }
            if self.woken() {
                return Ok(Next::Deadline);
            }
            let wake = [deadline, self.next_retry()].into_iter().flatten().min();
            let Some(ms) = poll_timeout(wake) else {
                if deadline.is_some_and(|d| d <= Instant::now()) {
                    return Ok(Next::Deadline);
                }
                continue; // a retry is due
            };
            let fds: Vec<_> = self
                .slots
                .iter()
                .filter_map(|s| match &s.state {
                    State::Up(src)
                    | State::Down {
                        kept: Some(src), ..
                    } => src.poll_fd().map(|f| f.as_raw_fd()),
                    _ => None,
                })
                .chain(self.waker.as_ref().map(|w| w.as_raw_fd()))
                .collect();
            match sys::poll_readable(&fds, ms) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(Next::Deadline),
                r => {
                    r.map_err(|e| CaptureError::io("poll", e))?;
                }
            }
        }
    }

    /// The working live sources' queued knocks, round-robin (one source's
    /// backlog cannot starve the others). Nothing while an interface change
    /// waits to be reported; failed interfaces are left to `next_event`.
    fn next_queued(&mut self) -> Option<Captured> {
        if !self.pending.is_empty() {
            return None;
        }
        let n = self.slots.len();
        for k in 0..n {
            let i = wrap(self.next + k, n);
            let Some(Slot {
                state: State::Up(src),
                ..
            }) = self.slots.get_mut(i)
            else {
                continue;
            };
            if src.poll_fd().is_none() {
                continue;
            }
            if let Some(c) = src.next_queued() {
                self.next = wrap(i + 1, n);
                self.pacer.queued();
                return Some(c);
            }
        }
        None
    }

    fn set_listen(&mut self, listen: &[Listen]) -> Result<(), CaptureError> {
        self.listen = listen.to_vec();
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let r = match &mut self.slots[i].state {
                State::Up(s) => s.set_listen(listen),
                State::Down { kept, .. } => {
                    // A kept socket with a stale filter must not come back.
                    if let Some(s) = kept {
                        if s.set_listen(listen).is_err() {
                            if let Some(mut s) = kept.take() {
                                self.retired.add(&s.stats());
                            }
                        }
                    }
                    continue;
                }
                State::Ended => continue,
            };
            if let Err(e) = r {
                // Its filter is stale: never read it again.
                self.fail(i, &e, false, now);
            }
        }
        Ok(())
    }

    fn stats(&mut self) -> Stats {
        let mut t = self.retired;
        for slot in &mut self.slots {
            match &mut slot.state {
                State::Up(s) | State::Down { kept: Some(s), .. } => t.add(&s.stats()),
                _ => {}
            }
        }
        t
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// The first source's widening that is widened most (fewest ranges).
    fn filter_widening(&self) -> Option<crate::Widening> {
        self.sources()
            .filter_map(Source::filter_widening)
            .min_by_key(|w| w.ranges)
    }

    /// The smallest ring of the sources that work now.
    fn ring_frames(&self) -> Option<usize> {
        self.sources().filter_map(Source::ring_frames).min()
    }
}
