//! The same capture through `pnet_datalink`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use knock_core::Listen;
use pnet_datalink::{Channel, ChannelType, Config, DataLinkReceiver};

use crate::afpacket::{install_filter, poll_timeout, raw_socket, resolve, LiveConfig, LiveState};
use crate::bpf::{Widening, PACKET_HOST};
use crate::source::{Next, Source, Stats};
use crate::{sys, CaptureError};

/// A capture through a `pnet_datalink` channel, with the same kernel filter
/// as [`crate::AfPacketSource`].
///
/// pnet has no BPF API, so the socket is made here exactly like
/// [`crate::AfPacketSource`]'s (protocol 0, `PACKET_IGNORE_OUTGOING`, large
/// buffer, filter attached before anything is queued) and handed to pnet
/// through [`Config::socket_fd`]; pnet binds it to the interface and owns it
/// from then on. The descriptor is kept (borrowed from pnet's receiver, which
/// lives as long as this source) to swap the filter, read the kernel counters
/// and `poll(2)` with our deadline; pnet's own read timeout is zero, so its
/// `next()` never blocks.
pub struct PnetSource {
    rx: Box<dyn DataLinkReceiver>,
    /// Owned by `rx` (pnet closes it on drop); valid while `rx` lives.
    fd: sys::HandedOff,
    name: String,
    ifindex: u32,
    state: LiveState,
    widening: Option<Widening>,
}

impl std::fmt::Debug for PnetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PnetSource")
            .field("name", &self.name)
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

impl PnetSource {
    /// Opens interface `name` (looked up with `pnet_datalink::interfaces`,
    /// in the calling thread's network namespace).
    pub fn open(
        name: &str,
        listen: &[Listen],
        cfg: &LiveConfig,
    ) -> Result<PnetSource, CaptureError> {
        let iface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| CaptureError::NoSuchInterface(name.into()))?;
        let sock = raw_socket(cfg.rcvbuf)?;
        let (ifindex, link) = resolve(sock.as_fd(), name)?;
        let widening = install_filter(sock.as_fd(), link, listen, false)?;
        let state = LiveState::new(link, listen, cfg.epoch)?;
        let (fd, raw) = sys::HandedOff::new(OwnedFd::from(sock));
        let config = Config {
            read_buffer_size: cfg.frame_buf.max(128),
            read_timeout: Some(Duration::ZERO),
            channel_type: ChannelType::Layer2,
            promiscuous: false,
            socket_fd: Some(raw),
            ..Config::default()
        };
        // From here pnet owns `fd` (it closes it itself if binding fails).
        let rx = match pnet_datalink::channel(&iface, config) {
            Ok(Channel::Ethernet(_tx, rx)) => rx,
            Ok(_) => {
                return Err(CaptureError::io(
                    format!("pnet channel {name}"),
                    io::Error::other("unexpected channel type"),
                ))
            }
            Err(e) => return Err(CaptureError::io(format!("pnet channel {name}"), e)),
        };
        Ok(PnetSource {
            rx,
            fd,
            name: name.into(),
            ifindex,
            state,
            widening,
        })
    }

    /// The interface name.
    pub fn interface(&self) -> &str {
        &self.name
    }
}

impl Source for PnetSource {
    fn next_event(&mut self, deadline: Option<Instant>) -> Result<Next, CaptureError> {
        loop {
            match self.rx.next() {
                Ok(bytes) => {
                    // pnet does not say the packet type: the kernel
                    // filter passes only PACKET_HOST frames.
                    if let Some(c) = self.state.frame(bytes, self.ifindex, PACKET_HOST) {
                        return Ok(Next::Event(c));
                    }
                    continue;
                }
                // pnet reports "nothing within the zero timeout" as TimedOut.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut
                            | io::ErrorKind::WouldBlock
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(CaptureError::io(format!("pnet recv {}", self.name), e)),
            }
            let Some(ms) = poll_timeout(deadline) else {
                return Ok(Next::Deadline);
            };
            match sys::poll_readable(&[self.fd.borrow().as_raw_fd()], ms) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(Next::Deadline),
                r => {
                    r.map_err(|e| CaptureError::io("poll", e))?;
                }
            }
        }
    }

    fn set_listen(&mut self, listen: &[Listen]) -> Result<(), CaptureError> {
        let link = self.state.link;
        self.widening = install_filter(self.fd.borrow(), link, listen, true)?;
        self.state.filter.set(listen);
        Ok(())
    }

    fn stats(&mut self) -> Stats {
        self.state.read_kernel_stats(self.fd.borrow());
        self.state.stats
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.borrow())
    }

    fn filter_widening(&self) -> Option<Widening> {
        self.widening
    }
}
