//! A raw `AF_PACKET` socket with a generated kernel filter.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use knock_core::{Listen, Timestamp};
use socket2::{Domain, Protocol, Socket, Type};

use crate::bpf::{self, Widening, PACKET_HOST};
use crate::local::LocalAddrs;
use crate::parse::ETH_VLAN;
use crate::ring::{Geometry, Ring};
use crate::source::{Captured, Next, Source, Stats, UserFilter};
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
    /// Default 65536. Used without a ring ([`LiveConfig::ring_frames`] 0).
    pub frame_buf: usize,
    /// Slots of the memory-mapped receive ring (`PACKET_RX_RING`,
    /// `TPACKET_V2`): frames the kernel can hold while the reader is busy.
    /// 0: no ring, one `recvfrom(2)` per frame. Default 16384 (at a
    /// flood's 200,000 frames a second, 80 ms of backlog). The ring counts
    /// in the process's resident memory: slots x slot size (32 MiB by
    /// default) per interface.
    pub ring_frames: usize,
    /// Bytes per ring slot (rounded up to a multiple of 16). About 80 of
    /// them hold the kernel's header; a frame longer than the rest is cut,
    /// and counted as [`crate::Reject::Truncated`]. Default 2048: a whole
    /// frame of a 1500-byte MTU.
    pub ring_frame_size: usize,
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
            ring_frames: 16384,
            ring_frame_size: 2048,
            epoch: Instant::now(),
        }
    }
}

impl LiveConfig {
    /// This config with a receive ring of `bytes`: as many
    /// [`ring_frame_size`](LiveConfig::ring_frame_size) slots as it takes
    /// (rounded up, then to whole blocks of the ring: 64 KiB with 2 KiB
    /// slots); 0 for no ring ([`ring_frames`](LiveConfig::ring_frames) 0).
    #[must_use]
    pub fn with_ring_bytes(mut self, bytes: u64) -> Self {
        let slot = u64::try_from(self.ring_frame_size.max(1)).unwrap_or(u64::MAX);
        self.ring_frames = usize::try_from(bytes.div_ceil(slot)).unwrap_or(usize::MAX);
        self
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
    /// Unix time at `epoch`, for the kernel's timestamps of ring frames.
    epoch_unix: std::time::Duration,
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
            epoch_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .saturating_sub(epoch.elapsed()),
            link,
            local: LocalAddrs::open()?,
        })
    }

    /// Checks one frame of packet type `pkttype`: for this host, a knock
    /// of the listen set.
    pub(crate) fn frame(&mut self, bytes: &[u8], ifindex: u32, pkttype: u8) -> Option<Captured> {
        self.frame_at(bytes, ifindex, pkttype, false, live_time(self.epoch))
    }

    /// The [`Timestamp`] of a frame the kernel stamped at Unix time
    /// `sec`.`nsec` (no clock read; 0 for a frame stamped before `epoch`).
    pub(crate) fn kernel_time(&self, sec: u32, nsec: u32) -> Timestamp {
        let t = std::time::Duration::new(u64::from(sec), nsec.min(999_999_999));
        Timestamp::from_micros(
            u64::try_from(t.saturating_sub(self.epoch_unix).as_micros()).unwrap_or(u64::MAX),
        )
    }

    /// [`LiveState::frame`] with the frame's time given, and whether the
    /// kernel took a VLAN tag off it (`vlan_tag`).
    pub(crate) fn frame_at(
        &mut self,
        bytes: &[u8],
        ifindex: u32,
        pkttype: u8,
        vlan_tag: bool,
        time: Timestamp,
    ) -> Option<Captured> {
        // The kernel filter drops these already; this is for frames queued
        // before it was attached, and in case there is none.
        let tagged = vlan_tag
            || self.link == LinkType::Ethernet
                && bytes
                    .get(12..14)
                    .is_some_and(|t| ETH_VLAN.contains(&u16::from_be_bytes([t[0], t[1]])));
        if pkttype != PACKET_HOST || tagged {
            self.stats.received += 1;
            self.stats.not_for_host += 1;
            return None;
        }
        let r = parse_with_payload(self.link, bytes, time);
        self.stats.count(&r.map(|(e, _)| e));
        let (event, data) = r.ok()?;
        let local = &mut self.local;
        let wanted = self
            .filter
            .admits(&event, &mut self.stats, |a| local.contains(a))?;
        Some(Captured {
            event,
            link: self.link,
            ifindex,
            payload: UserFilter::payload(&event, data, || wanted),
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
/// program [`bpf::compile`] makes from the listen set, sets up and maps a
/// receive ring ([`LiveConfig::ring_frames`]; the filter applies to it as to
/// the socket's queue), and only then binds it to the interface for every
/// protocol. Frames are read from the ring in place: while frames keep
/// coming there is no system call per frame ([`Source::next_queued`]); an
/// empty ring waits in `poll(2)`, which returns as soon as the kernel
/// writes a frame. [`Source::set_listen`] attaches a
/// new program with `SO_ATTACH_FILTER`, which replaces the old one atomically
/// (frames already queued were passed by the old program; the user-space
/// re-check with the new set decides them).
///
/// Open it inside the network namespace it should capture in (the socket
/// stays there, whichever thread uses it later).
#[derive(Debug)]
pub struct AfPacketSource {
    /// Declared before `sock`, so it is unmapped first (either order is
    /// safe: the mapping keeps the socket alive until it goes).
    ring: Option<Ring>,
    sock: Socket,
    name: String,
    ifindex: u32,
    /// For `recvfrom` without a ring.
    buf: Vec<u8>,
    /// An error a non-blocking read met, for the next `next_event`.
    pending_error: Option<io::Error>,
    /// The last look at the ring by `next_event` found it empty: the next
    /// that does too asks the socket for a failure.
    found_empty: bool,
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
        let ring = match cfg.ring_frames {
            0 => None,
            n => Some(
                Ring::new(sock.as_fd(), Geometry::new(cfg.ring_frame_size, n))
                    .map_err(|e| CaptureError::io(format!("PACKET_RX_RING {name}"), e))?,
            ),
        };
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
            buf: if ring.is_some() {
                Vec::new()
            } else {
                vec![0; cfg.frame_buf.max(128)]
            },
            ring,
            sock,
            name: name.into(),
            ifindex,
            pending_error: None,
            found_empty: false,
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

    /// Whether frames come through a memory-mapped ring
    /// ([`LiveConfig::ring_frames`]) rather than one `recvfrom` each.
    pub fn has_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// Gives up the socket (e.g. to hand it to another reader). Our mapping
    /// of its ring goes; the kernel keeps the ring, so a socket opened with
    /// one delivers its frames there, for a new owner that maps it.
    pub fn into_fd(self) -> OwnedFd {
        self.sock.into()
    }

    /// The next knock already queued, without waiting; `Ok(None)` when
    /// there is none. Errors are those of the socket. With a ring they are
    /// looked for (a system call) only when `probe` is set and the ring is
    /// found empty twice in a row: not by a batch draining the ring, nor
    /// when a flood's pause finds it empty once before frames come, but
    /// after a wait that woke to an empty ring (a failure wakes `poll`).
    fn read_queued(&mut self, probe: bool) -> io::Result<Option<Captured>> {
        if let Some(ring) = &mut self.ring {
            while let Some(f) = ring.next() {
                let time = self.state.kernel_time(f.sec, f.nsec);
                let c = self
                    .state
                    .frame_at(f.bytes, f.ifindex, f.pkttype, f.vlan_tag, time);
                drop(f);
                if c.is_some() {
                    self.found_empty = false;
                    return Ok(c);
                }
            }
            if !probe || !std::mem::replace(&mut self.found_empty, true) {
                return Ok(None);
            }
            // The ring is empty: a failure (the interface went down) is
            // pending on the socket, not in the ring. A read of the
            // socket's own queue (empty with a ring) reports it.
            return match sys::recv_frame(self.sock.as_fd(), &mut [0u8; 1]) {
                Ok(_) => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
                Err(e) => Err(e),
            };
        }
        loop {
            match sys::recv_frame(self.sock.as_fd(), &mut self.buf) {
                Ok(info) => {
                    let bytes = self.buf.get(..info.len).unwrap_or(&[]);
                    if let Some(c) = self.state.frame(bytes, info.ifindex, info.pkttype) {
                        return Ok(Some(c));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Source for AfPacketSource {
    fn next_event(&mut self, deadline: Option<Instant>) -> Result<Next, CaptureError> {
        loop {
            let read = match self.pending_error.take() {
                Some(e) => Err(e),
                None => self.read_queued(true),
            };
            match read {
                Ok(Some(c)) => return Ok(Next::Event(c)),
                Ok(None) => {}
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

    fn next_queued(&mut self) -> Option<Captured> {
        if self.pending_error.is_some() {
            return None;
        }
        // The loop's next `next_event` finds a failure: it comes before
        // the daemon waits, and an interface that fails sends no frames.
        match self.read_queued(false) {
            Ok(c) => c,
            Err(e) => {
                self.pending_error = Some(e);
                None
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

    fn ring_frames(&self) -> Option<usize> {
        self.ring.as_ref().map(Ring::frames)
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
