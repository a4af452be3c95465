//! The crate's `unsafe`, with `ring` (the mapped receive ring): thin
//! wrappers over the `AF_PACKET` system calls that `socket2` does not cover. Each wrapper passes pointers to
//! properly sized, initialised locals or to slices whose length it passes
//! along, and turns `-1` into `io::Error::last_os_error()`.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use crate::bpf::Program;

/// `PACKET_IGNORE_OUTGOING` (linux/if_packet.h, since 4.20).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
) -> io::Result<()> {
    // SAFETY: `v` points to a live `T` and we pass its exact size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Attaches (or atomically replaces: the kernel swaps the socket's filter
/// pointer under RCU) a classic BPF program.
pub(crate) fn attach_filter(fd: BorrowedFd<'_>, prog: &Program) -> io::Result<()> {
    let mut insns: Vec<libc::sock_filter> = prog
        .insns()
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: u16::try_from(insns.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        filter: insns.as_mut_ptr(),
    };
    // The kernel copies the program during the call; `insns` outlives it.
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

/// Removes the socket's filter (it then passes every frame).
pub(crate) fn detach_filter(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_DETACH_FILTER,
        &0 as &libc::c_int,
    )
}

/// `PACKET_VERSION`: the layout of the slots of a ring set up after it.
pub(crate) fn set_packet_version(fd: BorrowedFd<'_>, version: libc::c_int) -> io::Result<()> {
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version)
}

/// `PACKET_RX_RING`: the kernel allocates a receive ring of `req` (to be
/// mapped with `mmap`); frames go there instead of the socket's queue.
pub(crate) fn set_rx_ring(fd: BorrowedFd<'_>, req: &libc::tpacket_req) -> io::Result<()> {
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, req)
}

/// Stops the kernel from handing us our own outgoing frames.
pub(crate) fn ignore_outgoing(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt(
        fd,
        libc::SOL_PACKET,
        PACKET_IGNORE_OUTGOING,
        &1 as &libc::c_int,
    )
}

/// A receive buffer of `bytes`, above `rmem_max` when we may (root).
pub(crate) fn set_rcvbuf(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &v)
        .or_else(|_| setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &v))
}

/// `PACKET_STATISTICS`: (packets passed by the filter, drops) since the last
/// call (the kernel resets them).
pub(crate) fn packet_stats(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    // SAFETY: a zeroed tpacket_stats is valid; we pass its size and the
    // kernel writes at most that many bytes.
    unsafe {
        let mut st: libc::tpacket_stats = zeroed();
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        check(libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        ))?;
        Ok((st.tp_packets, st.tp_drops))
    }
}

/// Binds an `AF_PACKET` socket to `ifindex` (0: every interface) for every
/// protocol. Frames start to arrive from here on.
pub(crate) fn bind_all_protocols(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    // SAFETY: zeroed sockaddr_ll is valid; we pass its exact size.
    unsafe {
        let mut sa: libc::sockaddr_ll = zeroed();
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sa.sll_ifindex = ifindex as libc::c_int;
        check(libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        ))
        .map(drop)
    }
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    // SAFETY: a zeroed ifreq is valid.
    let mut ifr: libc::ifreq = unsafe { zeroed() };
    if bytes.is_empty() || bytes.len() >= ifr.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(ifr)
}

/// The index of interface `name` in the socket's network namespace.
pub(crate) fn ifindex(fd: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
    let mut ifr = ifreq(name)?;
    // SAFETY: SIOCGIFINDEX reads the name and writes ifru_ifindex inside `ifr`.
    unsafe {
        check(libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFINDEX, &mut ifr))?;
        Ok(ifr.ifr_ifru.ifru_ifindex as u32)
    }
}

/// The `ARPHRD_*` hardware type of interface `name`.
pub(crate) fn hw_type(fd: BorrowedFd<'_>, name: &str) -> io::Result<u16> {
    let mut ifr = ifreq(name)?;
    // SAFETY: SIOCGIFHWADDR reads the name and writes ifru_hwaddr inside `ifr`.
    unsafe {
        check(libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr))?;
        Ok(ifr.ifr_ifru.ifru_hwaddr.sa_family)
    }
}

/// What `recvfrom` says about a frame besides its bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameInfo {
    pub(crate) len: usize,
    pub(crate) ifindex: u32,
    /// `sll_pkttype`: `PACKET_HOST`, `PACKET_OTHERHOST`, ...
    pub(crate) pkttype: u8,
}

/// Reads one frame without blocking; `WouldBlock` when none is queued.
pub(crate) fn recv_frame(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<FrameInfo> {
    // SAFETY: `buf` is a valid writable slice of the length passed; `sa` a
    // zeroed sockaddr_ll whose size we pass in `len`.
    unsafe {
        let mut sa: libc::sockaddr_ll = zeroed();
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        let n = libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            (&mut sa as *mut libc::sockaddr_ll).cast(),
            &mut len,
        );
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FrameInfo {
            // MSG_TRUNC returns the real length; never claim more than we hold.
            len: (n as usize).min(buf.len()),
            ifindex: sa.sll_ifindex as u32,
            pkttype: sa.sll_pkttype,
        })
    }
}

/// `poll(2)` for readability on `fds`; returns which are readable (or in
/// error, so the caller's read reports it). `timeout_ms` -1 waits forever.
/// A signal makes it fail with `ErrorKind::Interrupted`, which sources turn
/// into an early `Next::Deadline` so that a daemon sees its signal flags.
pub(crate) fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` is a valid array of `p.len()` pollfds.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    match check(r) {
        Ok(_) => Ok(p.iter().map(|x| x.revents != 0).collect()),
        Err(e) => Err(e),
    }
}

/// A descriptor whose ownership was handed to another library (pnet), which
/// keeps it open while its reader lives. Store it next to that reader, so
/// borrowing `&self` keeps both alive.
#[derive(Debug)]
pub(crate) struct HandedOff(RawFd);

impl HandedOff {
    /// Releases `fd` from Rust's ownership; the returned raw descriptor is
    /// for the new owner.
    pub(crate) fn new(fd: std::os::fd::OwnedFd) -> (HandedOff, RawFd) {
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        (HandedOff(raw), raw)
    }

    /// The descriptor, for as long as `self` (and so its owner) lives.
    pub(crate) fn borrow(&self) -> BorrowedFd<'_> {
        // SAFETY: the new owner keeps the descriptor open while the struct
        // holding both lives, which `&self` outlives this borrow.
        unsafe { BorrowedFd::borrow_raw(self.0) }
    }
}
