//! A raw `AF_PACKET` socket with a generated kernel filter.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use knock_core::{Listen, Timestamp};
use socket2::{Domain, Protocol, Socket, Type};

use crate::bpf::{self, Widening, PACKET_HOST};
use crate::local::LocalAddrs;
use crate::parse::ETH_VLAN;
use crate::source::{datagram, Captured, Next, Source, Stats, UserFilter};
use crate::{parse_with_payload, sys, CaptureError, LinkType};

/// Options of a live capture socket.
#[derive(Clone, Copy, Debug)]
pub struct LiveConfig {
    /// Receive buffer size in bytes (`SO_RCVBUFFORCE` as root, else capped
    /// by `net.core.rmem_max`). Default 64 MiB: about 150,000 queued knock
    /// frames, enough to ride out a pause of the reader (a table growing to
    /// a million sources) during a flood. The kernel charges only what is queued.
    pub rcvbuf: usize,
    /// Largest frame read whole; longer ones are cut (only headers matter).
    /// Default 65536.
    pub frame_buf: usize,
    /// [`knock_core::Event::time`] of live frames is the time since this
    /// instant. Default: when the config was made; a daemon passes the epoch
    /// of its own [`Timestamp`]s.
    pub epoch: Instant,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            rcvbuf: 64 << 20,
            frame_buf: 65536,
            epoch: Instant::now(),
        }
    }
}

/// The link type of frames an `AF_PACKET` `SOCK_RAW` socket reads on an
/// interface of `ARPHRD_*` type `hw`.
pub fn link_of_hw_type(hw: u16) -> Option<LinkType> {
    match hw {
        libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK => Some(LinkType::Ethernet),
        // tun and WireGuard (NONE), ppp, raw IP modems, ipip / sit tunnels:
        // the frame starts at the IP header.
        libc::ARPHRD_NONE
        | libc::ARPHRD_PPP
        | libc::ARPHRD_TUNNEL
        | libc::ARPHRD_TUNNEL6
        | libc::ARPHRD_SIT
        | 519 /* ARPHRD_RAWIP */ => Some(LinkType::RawIp),
        _ => None,
    }
}

/// Timestamp of a live frame: microseconds since `epoch`.
pub(crate) fn live_time(epoch: Instant) -> Timestamp {
    Timestamp::from_micros(u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
}

/// Milliseconds to wait in `poll(2)` until `deadline` (rounded up, so we
/// never wake just before it); `None` when it has passed.
pub(crate) fn poll_timeout(deadline: Option<Instant>) -> Option<i32> {
    match deadline {
        None => Some(-1),
        Some(d) => {
            let left = d.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            let ms = left.as_micros().div_ceil(1000);
            Some(i32::try_from(ms).unwrap_or(i32::MAX))
        }
    }
}

/// Opens an `AF_PACKET` socket that receives nothing yet (protocol 0), with
/// outgoing frames ignored, a large buffer and `prog` attached. The caller
/// binds it, so no frame is ever queued before the filter is in place.
pub(crate) fn raw_socket(rcvbuf: usize) -> Result<Socket, CaptureError> {
    let s = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0))).map_err(|e| match e
        .raw_os_error()
    {
        Some(libc::EPERM | libc::EACCES) => CaptureError::NotPermitted {
            op: "socket(AF_PACKET)".into(),
            source: e,
        },
        _ => CaptureError::io("socket(AF_PACKET)", e),
    })?;
    sys::ignore_outgoing(s.as_fd()).map_err(|e| CaptureError::io("PACKET_IGNORE_OUTGOING", e))?;
    sys::set_rcvbuf(s.as_fd(), rcvbuf).map_err(|e| CaptureError::io("SO_RCVBUF", e))?;
    Ok(s)
}

/// Resolves an interface name to (ifindex, link type) in the socket's namespace.
pub(crate) fn resolve(fd: BorrowedFd<'_>, name: &str) -> Result<(u32, LinkType), CaptureError> {
    let idx = sys::ifindex(fd, name).map_err(|_| CaptureError::NoSuchInterface(name.into()))?;
    let hw =
        sys::hw_type(fd, name).map_err(|e| CaptureError::io(format!("SIOCGIFHWADDR {name}"), e))?;
    let link = link_of_hw_type(hw).ok_or_else(|| CaptureError::UnsupportedInterface {
        name: name.into(),
        arphrd: hw,
    })?;
    Ok((idx, link))
}

/// Compiles and attaches the filter for `listen`; returns how it had to be
/// widened to fit, if it had to.
///
/// The kernel charges a program to the socket's option memory
/// (`net.core.optmem_max`), and while it replaces a program it charges the
/// old and the new one together. When that memory runs out, a program
/// being replaced is first swapped for the smallest one (or, if even that
/// does not fit, removed: user space still checks every frame), then the
/// instruction budget is halved until the program fits.
pub(crate) fn install_filter(
    fd: BorrowedFd<'_>,
    link: LinkType,
    listen: &[Listen],
    replacing: bool,
) -> Result<Option<Widening>, CaptureError> {
    let attach_err = |e| CaptureError::io("SO_ATTACH_FILTER", e);
    let no_memory = |e: &io::Error| e.raw_os_error() == Some(libc::ENOMEM);
    let mut budget = bpf::DEFAULT_BUDGET;
    let mut holding_old = replacing;
    loop {
        let c = bpf::compile_within(link, listen, budget)?;
        match sys::attach_filter(fd, &c.program) {
            Ok(()) => {
                return Ok(c.widening.map(|w| Widening {
                    optmem_limited: budget < bpf::DEFAULT_BUDGET,
                    ..w
                }))
            }
            Err(e) if no_memory(&e) && holding_old => {
                holding_old = false;
                let small = bpf::compile_within(link, listen, bpf::MIN_BUDGET)?;
                if let Err(e) = sys::attach_filter(fd, &small.program) {
                    if !no_memory(&e) {
                        return Err(attach_err(e));
                    }
                    sys::detach_filter(fd).map_err(|e| CaptureError::io("SO_DETACH_FILTER", e))?;
                }
            }
            Err(e) if no_memory(&e) && budget > bpf::MIN_BUDGET => budget /= 2,
            Err(e) => return Err(attach_err(e)),
        }
    }
}

/// Shared state of the live sources: kernel counters and the user-space re-check.
#[derive(Debug)]
pub(crate) struct LiveState {
    pub(crate) stats: Stats,
    pub(crate) filter: UserFilter,
    pub(crate) epoch: Instant,
    pub(crate) link: LinkType,
    local: LocalAddrs,
}

impl LiveState {
    /// The state of a source opened in the calling thread's network namespace.
    pub(crate) fn new(
        link: LinkType,
        listen: &[Listen],
        epoch: Instant,
    ) -> Result<Self, CaptureError> {
        let mut filter = UserFilter::default();
        filter.set(listen);
        Ok(LiveState {
            stats: Stats::default(),
            filter,
            epoch,
            link,
            local: LocalAddrs::open()?,
        })
    }

    /// Checks one frame of packet type `pkttype`: for this host, a knock
    /// of the listen set.
    pub(crate) fn frame(&mut self, bytes: &[u8], ifindex: u32, pkttype: u8) -> Option<Captured> {
        // The kernel filter drops these already; this is for frames queued
        // before it was attached, and in case there is none.
        let tagged = self.link == LinkType::Ethernet
            && bytes
                .get(12..14)
                .is_some_and(|t| ETH_VLAN.contains(&u16::from_be_bytes([t[0], t[1]])));
        if pkttype != PACKET_HOST || tagged {
            self.stats.received += 1;
            self.stats.not_for_host += 1;
            return None;
        }
        let r = parse_with_payload(self.link, bytes, live_time(self.epoch));
        self.stats.count(&r.map(|(e, _)| e));
        let (event, data) = r.ok()?;
        let local = &mut self.local;
        self.filter
            .admits(&event, &mut self.stats, |a| local.contains(a))
            .then(|| Captured {
                event,
                link: self.link,
                ifindex,
                payload: datagram(&event, data),
            })
    }

    pub(crate) fn read_kernel_stats(&mut self, fd: BorrowedFd<'_>) {
        if let Ok((p, d)) = sys::packet_stats(fd) {
            self.stats.kernel_packets += u64::from(p);
            self.stats.kernel_drops += u64::from(d);
        }
    }
}

/// A raw `AF_PACKET` socket on one interface, the daemon's default source.
///
/// Opening it creates the socket with protocol 0 (nothing is queued),
/// sets `PACKET_IGNORE_OUTGOING` and a large receive buffer, attaches the
/// program [`bpf::compile`] makes from the listen set, and only then binds
/// it to the interface for every protocol. [`Source::set_listen`] attaches a
/// new program with `SO_ATTACH_FILTER`, which replaces the old one atomically
/// (frames already queued were passed by the old program; the user-space
/// re-check with the new set decides them).
///
/// Open it inside the network namespace it should capture in (the socket
/// stays there, whichever thread uses it later).
#[derive(Debug)]
pub struct AfPacketSource {
    sock: Socket,
    name: String,
    ifindex: u32,
    buf: Vec<u8>,
    state: LiveState,
    widening: Option<Widening>,
}

impl AfPacketSource {
    /// Opens a capture on interface `name` for the knocks of `listen`.
    ///
    /// # Errors
    /// [`CaptureError::NotPermitted`] without `CAP_NET_RAW`;
    /// [`CaptureError::NoSuchInterface`] and [`CaptureError::InterfaceDown`]
    /// for an interface that is missing or down (see
    /// [`CaptureError::may_recover`]); any other failure to set it up.
    pub fn open(name: &str, listen: &[Listen]) -> Result<AfPacketSource, CaptureError> {
        AfPacketSource::open_with(name, listen, &LiveConfig::default())
    }

    /// [`AfPacketSource::open`] with options.
    pub fn open_with(
        name: &str,
        listen: &[Listen],
        cfg: &LiveConfig,
    ) -> Result<AfPacketSource, CaptureError> {
        let sock = raw_socket(cfg.rcvbuf)?;
        let (ifindex, link) = resolve(sock.as_fd(), name)?;
        let widening = install_filter(sock.as_fd(), link, listen, false)?;
        let state = LiveState::new(link, listen, cfg.epoch)?;
        sys::bind_all_protocols(sock.as_fd(), ifindex)
            .map_err(|e| CaptureError::io(format!("bind {name}"), e))?;
        // Binding to an interface that is down succeeds, but leaves ENETDOWN
        // pending on the socket (the kernel starts delivering when it comes
        // up): report it now rather than from the first read.
        match sock.take_error() {
            Ok(None) => {}
            Ok(Some(e)) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                return Err(CaptureError::InterfaceDown(name.into()))
            }
            Ok(Some(e)) | Err(e) => return Err(CaptureError::io(format!("bind {name}"), e)),
        }
        sock.set_nonblocking(true)
            .map_err(|e| CaptureError::io("O_NONBLOCK", e))?;
        Ok(AfPacketSource {
            sock,
            name: name.into(),
            ifindex,
            buf: vec![0; cfg.frame_buf.max(128)],
            state,
            widening,
        })
    }

    /// The interface name.
    pub fn interface(&self) -> &str {
        &self.name
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The link type of the frames read.
    pub fn link_type(&self) -> LinkType {
        self.state.link
    }

    /// Gives up the socket (e.g. to hand it to another reader).
    pub fn into_fd(self) -> OwnedFd {
        self.sock.into()
    }
}

impl Source for AfPacketSource {
    fn next_event(&mut self, deadline: Option<Instant>) -> Result<Next, CaptureError> {
        loop {
            match sys::recv_frame(self.sock.as_fd(), &mut self.buf) {
                Ok(info) => {
                    let bytes = self.buf.get(..info.len).unwrap_or(&[]);
                    if let Some(c) = self.state.frame(bytes, info.ifindex, info.pkttype) {
                        return Ok(Next::Event(c));
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CaptureError::io(format!("recv {}", self.name), e)),
            }
            let Some(ms) = poll_timeout(deadline) else {
                return Ok(Next::Deadline);
            };
            match sys::poll_readable(&[std::os::fd::AsRawFd::as_raw_fd(&self.sock)], ms) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(Next::Deadline),
                r => {
                    r.map_err(|e| CaptureError::io("poll", e))?;
                }
            }
        }
    }

    fn set_listen(&mut self, listen: &[Listen]) -> Result<(), CaptureError> {
        self.widening = install_filter(self.sock.as_fd(), self.state.link, listen, true)?;
        self.state.filter.set(listen);
        Ok(())
    }

    fn stats(&mut self) -> Stats {
        self.state.read_kernel_stats(self.sock.as_fd());
        self.state.stats
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.sock.as_fd())
    }

    fn filter_widening(&self) -> Option<Widening> {
        self.widening
    }
}

/// The names of the interfaces in the calling thread's network namespace
/// (`/proc/thread-self/net/dev`).
pub fn interface_names() -> Result<Vec<String>, CaptureError> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev")
        .map_err(|e| CaptureError::io("read /proc/thread-self/net/dev", e))?;
    Ok(text
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
        .filter(|n| !n.is_empty())
        .collect())
}
