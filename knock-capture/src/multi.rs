//! Several sources (interfaces) behind one [`Source`].

use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use knock_core::Listen;

use crate::afpacket::{interface_names, poll_timeout, LiveConfig};
use crate::source::{Next, Source, Stats};
use crate::{sys, AfPacketSource, CaptureError};

/// Several sources read as one: live sources are waited on together in one
/// `poll(2)`, and served round-robin so a busy interface cannot starve the
/// others. Each keeps its own link type and kernel filter; `set_listen` and
/// `stats` fan out and add up. Sources with no descriptor (replays) are read
/// in turn; the whole ends when every such source has ended and there is no
/// live one.
#[derive(Debug)]
pub struct MultiSource<S> {
    sources: Vec<S>,
    ended: Vec<bool>,
    next: usize,
    waker: Option<UnixStream>,
}

impl<S: Source> MultiSource<S> {
    /// Reads from all of `sources`.
    pub fn new(sources: Vec<S>) -> Self {
        let ended = vec![false; sources.len()];
        MultiSource {
            sources,
            ended,
            next: 0,
            waker: None,
        }
    }

    /// Also wakes for `waker`: when another thread writes to the other end
    /// of this stream (a command finished, say), the wait returns
    /// [`Next::Deadline`] at once and the bytes are drained. Nothing else
    /// is read from it. The stream is made non-blocking.
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

    /// The sources, in the order given.
    pub fn sources(&self) -> &[S] {
        &self.sources
    }

    /// The sources, mutably.
    pub fn sources_mut(&mut self) -> &mut [S] {
        &mut self.sources
    }
}

impl MultiSource<AfPacketSource> {
    /// One [`AfPacketSource`] per named interface.
    pub fn open(names: &[&str], listen: &[Listen], cfg: &LiveConfig) -> Result<Self, CaptureError> {
        let s = names
            .iter()
            .map(|n| AfPacketSource::open_with(n, listen, cfg))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MultiSource::new(s))
    }

    /// One [`AfPacketSource`] per interface of the calling thread's network
    /// namespace that has a supported link type (Ethernet, loopback, tun,
    /// WireGuard, ppp, ip tunnels); the others are skipped. Interfaces added
    /// later are not seen: reopen on a change.
    pub fn every_interface(listen: &[Listen], cfg: &LiveConfig) -> Result<Self, CaptureError> {
        let mut s = Vec::new();
        for n in interface_names()? {
            match AfPacketSource::open_with(&n, listen, cfg) {
                Ok(src) => s.push(src),
                Err(CaptureError::UnsupportedInterface { .. })
                | Err(CaptureError::NoSuchInterface(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(MultiSource::new(s))
    }
}

impl<S: Source> Source for MultiSource<S> {
    fn next_event(&mut self, deadline: Option<Instant>) -> Result<Next, CaptureError> {
        let n = self.sources.len();
        loop {
            // Fd-less sources first (they never block).
            let mut live = false;
            for i in 0..n {
                if self.sources[i].poll_fd().is_some() {
                    live = true;
                    continue;
                }
                if self.ended[i] {
                    continue;
                }
                match self.sources[i].next_event(deadline)? {
                    Next::End => self.ended[i] = true,
                    Next::Deadline => {}
                    ev @ Next::Event(_) => return Ok(ev),
                }
            }
            if !live {
                return Ok(if self.ended.iter().all(|&e| e) {
                    Next::End
                } else {
                    Next::Deadline
                });
            }
            // Anything already queued, round-robin, without blocking.
            let now = Some(Instant::now());
            for k in 0..n {
                let i = (self.next + k) % n;
                if self.sources[i].poll_fd().is_none() {
                    continue;
                }
                if let ev @ Next::Event(_) = self.sources[i].next_event(now)? {
                    self.next = (i + 1) % n;
                    return Ok(ev);
                }
            }
            if self.woken() {
                return Ok(Next::Deadline);
            }
            let Some(ms) = poll_timeout(deadline) else {
                return Ok(Next::Deadline);
            };
            let fds: Vec<_> = self
                .sources
                .iter()
                .filter_map(|s| s.poll_fd().map(|f| f.as_raw_fd()))
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

    fn set_listen(&mut self, listen: &[Listen]) -> Result<(), CaptureError> {
        for s in &mut self.sources {
            s.set_listen(listen)?;
        }
        Ok(())
    }

    fn stats(&mut self) -> Stats {
        let mut t = Stats::default();
        for s in &mut self.sources {
            t.add(&s.stats());
        }
        t
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// The first source's widening that is widened most (fewest ranges).
    fn filter_widening(&self) -> Option<crate::Widening> {
        self.sources
            .iter()
            .filter_map(Source::filter_widening)
            .min_by_key(|w| w.ranges)
    }
}
