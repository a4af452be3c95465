//! The memory-mapped receive ring of an `AF_PACKET` socket
//! (`PACKET_RX_RING`, `TPACKET_V2`): the kernel writes each frame into the
//! next slot of a ring shared with us and flips the slot's status word to
//! `TP_STATUS_USER`; we read the frame in place and hand the slot back by
//! writing `TP_STATUS_KERNEL`. A busy interface then costs no system call
//! per frame, only a `poll(2)` when the ring runs empty.
//!
//! `TPACKET_V2` rather than `V3`: V3 hands out whole blocks, and a block is
//! handed out when it is full or when its retire timer fires, so a lone
//! knock waits for that timer (milliseconds) and an idle ring keeps a
//! kernel timer ticking. V2 hands out every frame as soon as it is written,
//! so a lone knock wakes `poll(2)` at once. Its cost is one fixed-size slot
//! per frame.
//!
//! This module and `sys` hold the crate's `unsafe`: here, the mapping and the
//! reads of the slots in it. Every access goes through [`Ring::slot`], which
//! checks the slot index, and [`Frame`], which checks the offsets the kernel
//! wrote against the slot's size before it makes a slice.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// How many slots ahead of the frame being read [`Ring::next`] starts
/// loading (see [`Ring::prefetch`]).
const PREFETCH_AHEAD: usize = 2;

/// Offset of the `sockaddr_ll` that follows the header in each slot
/// (`TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`).
const SLL_OFFSET: usize = align(size_of::<libc::tpacket2_hdr>());

const fn align(x: usize) -> usize {
    (x + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1)
}

/// The size of a ring: `frames` slots of `frame_size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Bytes per slot: a multiple of 16, at least 128; a frame longer than
    /// the slot holds (the slot less about 80 bytes of header) is cut.
    pub(crate) frame_size: usize,
    /// Slots in the ring.
    pub(crate) frames: usize,
}

impl Geometry {
    /// The geometry for a slot of about `frame_size` bytes and about
    /// `frames` slots, rounded to what the kernel accepts: the slot to a
    /// multiple of 16 (at least 128), the blocks (the ring is allocated in
    /// blocks of whole pages holding whole slots) to a power-of-two number
    /// of pages, the slot count up to whole blocks.
    pub(crate) fn new(frame_size: usize, frames: usize) -> Geometry {
        let frame_size = align(frame_size.clamp(128, 1 << 20));
        let frames = frames.max(1);
        let g = Geometry { frame_size, frames };
        let per_block = g.block_size() / frame_size;
        Geometry {
            frame_size,
            frames: frames.div_ceil(per_block) * per_block,
        }
    }

    /// The block size: the smallest power-of-two number of pages that holds
    /// at least one slot, and at least 64 KiB (fewer blocks for the kernel
    /// to allocate) unless the whole ring is smaller.
    fn block_size(&self) -> usize {
        let page = page_size();
        let want = self
            .frame_size
            .max((64 << 10).min(self.frame_size * self.frames));
        want.div_ceil(page).next_power_of_two() * page
    }

    /// The request for `PACKET_RX_RING`.
    fn request(&self) -> io::Result<libc::tpacket_req> {
        let block = self.block_size();
        let per_block = block / self.frame_size;
        let blocks = self.frames / per_block;
        let c =
            |v: usize| u32::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
        Ok(libc::tpacket_req {
            tp_block_size: c(block)?,
            tp_block_nr: c(blocks)?,
            tp_frame_size: c(self.frame_size)?,
            tp_frame_nr: c(blocks * per_block)?,
        })
    }

    /// Bytes mapped.
    pub(crate) fn bytes(&self) -> usize {
        self.frame_size * self.frames
    }
}

/// `i` (below `2 * n`) modulo `n`, without a division: the next slot of a
/// ring, or of a round-robin.
#[inline]
pub(crate) fn wrap(i: usize, n: usize) -> usize {
    if i >= n {
        i - n
    } else {
        i
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// Who owns the memory a [`Ring`] reads.
#[derive(Debug)]
enum Memory {
    /// A mapping of the socket's ring, unmapped on drop. The mapping holds
    /// its own reference to the socket: closing the descriptor first is
    /// safe, the memory stays valid until `munmap`.
    Mapped,
    /// A plain allocation standing in for the kernel's ring (unit tests).
    #[cfg(test)]
    Owned(#[allow(dead_code)] Vec<u64>),
}

/// A `TPACKET_V2` receive ring, read in slot order.
#[derive(Debug)]
pub(crate) struct Ring {
    base: NonNull<u8>,
    geometry: Geometry,
    /// The slot to look at next.
    next: usize,
    memory: Memory,
}

// SAFETY: the ring is plain memory that only `&mut self` methods read or
// write (besides the kernel, which synchronises through the status words);
// nothing in it is tied to the thread that mapped it.
unsafe impl Send for Ring {}

/// One frame in the ring, in place. The slot goes back to the kernel when
/// this is dropped.
pub(crate) struct Frame<'a> {
    status: &'a AtomicU32,
    /// The frame's bytes (cut to the slot: a frame the slot cannot hold
    /// whole is cut, and the parser rejects it as truncated).
    pub(crate) bytes: &'a [u8],
    /// `sll_ifindex`.
    pub(crate) ifindex: u32,
    /// `sll_pkttype`.
    pub(crate) pkttype: u8,
    /// The kernel took a VLAN tag off the frame (`TP_STATUS_VLAN_VALID`).
    pub(crate) vlan_tag: bool,
    /// When the kernel received it (`CLOCK_REALTIME`).
    pub(crate) sec: u32,
    /// Nanoseconds of [`Frame::sec`].
    pub(crate) nsec: u32,
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        // Release: our reads of the slot happen before the kernel may
        // write it again.
        self.status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }
}

impl Ring {
    /// Switches `fd` to `TPACKET_V2`, asks for a receive ring of `geometry`
    /// and maps it. Call it before binding the socket (frames queued
    /// before the ring exists would otherwise go to the socket's queue).
    pub(crate) fn new(fd: BorrowedFd<'_>, geometry: Geometry) -> io::Result<Ring> {
        let req = geometry.request()?;
        crate::sys::set_packet_version(fd, libc::tpacket_versions::TPACKET_V2 as libc::c_int)?;
        crate::sys::set_rx_ring(fd, &req)?;
        let len = geometry.bytes();
        // SAFETY: a fresh shared read-write mapping of the socket's ring,
        // of exactly the size the kernel just set up; we check the result.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED,
                fd.as_raw_fd(),
                0,
            )
        };
        let p = if p == libc::MAP_FAILED {
            // MAP_LOCKED needs RLIMIT_MEMLOCK room: try without it (the
            // pages may then be swapped out under memory pressure).
            // SAFETY: as above, without MAP_LOCKED.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            p
        } else {
            p
        };
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: null"))?;
        Ok(Ring {
            base,
            geometry,
            next: 0,
            memory: Memory::Mapped,
        })
    }

    /// The status word of slot `i` (`i < frames`).
    fn slot(&self, i: usize) -> (&AtomicU32, *const u8) {
        debug_assert!(i < self.geometry.frames);
        // Callers pass `i < frames` (`after` wraps): a compare keeps that
        // sure without a division on every frame.
        let i = if i < self.geometry.frames { i } else { 0 };
        // SAFETY: `i < frames`, so the slot lies inside the mapping; slots
        // are 16-byte aligned in a page-aligned mapping, and `tp_status` is
        // the slot's first u32, which the kernel also accesses atomically
        // (READ_ONCE / WRITE_ONCE with barriers).
        unsafe {
            let p = self.base.as_ptr().add(i * self.geometry.frame_size);
            (&*p.cast::<AtomicU32>(), p.cast_const())
        }
    }

    /// The slot `n` after slot `i` (`i < frames`, `n <= frames`), without a
    /// division.
    #[inline]
    fn after(&self, i: usize, n: usize) -> usize {
        wrap(i + n, self.geometry.frames)
    }

    /// Starts loading the first two cache lines of slot `i` (`i < frames`):
    /// its header and the start of its frame, where the parser reads.
    /// Under a flood the kernel wrote them on another CPU moments ago;
    /// asking for them a few frames early hides that transfer.
    #[inline]
    fn prefetch(&self, i: usize) {
        let (_, p) = self.slot(i);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch only hints the cache: it reads nothing we
        // see, never faults, and `p` and `p + 64` lie inside slot `i` of
        // the mapping (slots are at least 128 bytes).
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(p.cast());
            _mm_prefetch::<_MM_HINT_T0>(p.add(64).cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }

    /// Slots in the ring.
    pub(crate) fn frames(&self) -> usize {
        self.geometry.frames
    }

    /// The next frame the kernel has handed over, if any. Slots are taken in
    /// order; the one returned goes back to the kernel when the [`Frame`]
    /// is dropped.
    pub(crate) fn next(&mut self) -> Option<Frame<'_>> {
        let fs = self.geometry.frame_size;
        let i = self.next;
        // Acquire: the kernel writes the frame, then (with a barrier) the
        // status; our reads of the frame come after this load.
        let st = self.slot(i).0.load(Ordering::Acquire);
        if st & libc::TP_STATUS_USER == 0 {
            return None;
        }
        self.next = self.after(i, 1);
        self.prefetch(self.after(i, PREFETCH_AHEAD));
        let (status, p) = self.slot(i);
        // SAFETY: the slot is ours until we store TP_STATUS_KERNEL (in
        // `Frame::drop`); the header and the sockaddr_ll lie inside the slot
        // (frame_size >= 128 > SLL_OFFSET + sizeof(sockaddr_ll)); they are
        // read unaligned-safe with `read_unaligned`.
        let (hdr, sll) = unsafe {
            (
                p.cast::<libc::tpacket2_hdr>().read_unaligned(),
                p.add(SLL_OFFSET)
                    .cast::<libc::sockaddr_ll>()
                    .read_unaligned(),
            )
        };
        // Never trust offsets into shared memory blindly: clamp to the slot.
        let start = usize::from(hdr.tp_mac).min(fs);
        let end = start
            .saturating_add(usize::try_from(hdr.tp_snaplen).unwrap_or(usize::MAX))
            .min(fs);
        // SAFETY: `start..end` lies inside the slot (both clamped to
        // frame_size), which is ours until the Frame is dropped; the Frame
        // borrows `self` mutably, so the slot cannot be read twice.
        let bytes = unsafe { std::slice::from_raw_parts(p.add(start), end - start) };
        Some(Frame {
            status,
            bytes,
            ifindex: u32::try_from(sll.sll_ifindex).unwrap_or(0),
            pkttype: sll.sll_pkttype,
            vlan_tag: st & libc::TP_STATUS_VLAN_VALID != 0,
            sec: hdr.tp_sec,
            nsec: hdr.tp_nsec,
        })
    }

    /// A ring over ordinary memory, for tests that play the kernel.
    #[cfg(test)]
    fn in_memory(geometry: Geometry) -> Ring {
        let mut v = vec![0u64; geometry.bytes() / 8];
        let base = NonNull::new(v.as_mut_ptr().cast::<u8>()).expect("vec pointer");
        Ring {
            base,
            geometry,
            next: 0,
            memory: Memory::Owned(v),
        }
    }

    /// Writes a frame into slot `i` as the kernel would (tests).
    #[cfg(test)]
    fn put(&mut self, i: usize, frame: &[u8], mac: u16, snaplen: u32) {
        let fs = self.geometry.frame_size;
        assert!(i < self.geometry.frames);
        // SAFETY: slot `i` lies in the owned allocation; the copy is
        // clamped to the slot.
        unsafe {
            let p = self.base.as_ptr().add(i * fs);
            let hdr = libc::tpacket2_hdr {
                tp_status: 0,
                tp_len: frame.len() as u32,
                tp_snaplen: snaplen,
                tp_mac: mac,
                tp_net: mac + 14,
                tp_sec: 7,
                tp_nsec: 9,
                tp_vlan_tci: 0,
                tp_vlan_tpid: 0,
                tp_padding: [0; 4],
            };
            p.cast::<libc::tpacket2_hdr>().write_unaligned(hdr);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_ifindex = 3;
            sll.sll_pkttype = 0;
            p.add(SLL_OFFSET)
                .cast::<libc::sockaddr_ll>()
                .write_unaligned(sll);
            let at = usize::from(mac).min(fs);
            let n = frame.len().min(fs - at);
            std::ptr::copy_nonoverlapping(frame.as_ptr(), p.add(at), n);
            (*p.cast::<AtomicU32>()).store(libc::TP_STATUS_USER, Ordering::Release);
        }
    }

    /// The status word of slot `i` (tests).
    #[cfg(test)]
    fn status(&self, i: usize) -> u32 {
        self.slot(i).0.load(Ordering::Acquire)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if matches!(self.memory, Memory::Mapped) {
            // SAFETY: we mapped exactly this range in `new`, and no `Frame`
            // (which borrows the ring) outlives it.
            unsafe {
                libc::munmap(self.base.as_ptr().cast(), self.geometry.bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Closing the socket's descriptor while its ring is mapped: the
    /// mapping holds a reference to the socket, so it stays open and keeps
    /// capturing into the ring (frames from before and after the close are
    /// read); unmapping (dropping the ring) releases it.
    #[test]
    #[ignore = "needs root"]
    fn frames_stay_readable_after_the_socket_is_closed() {
        use std::os::fd::AsFd;
        assert!(knock_testnet::is_root(), "needs root (network namespaces)");
        let pair = knock_testnet::Pair::new().unwrap();
        let (mut ring, sock) = pair
            .server
            .enter(|| {
                let s = crate::afpacket::raw_socket(1 << 20).unwrap();
                let ring = Ring::new(s.as_fd(), Geometry::new(2048, 32)).unwrap();
                let idx = crate::sys::ifindex(s.as_fd(), knock_testnet::SERVER_IF).unwrap();
                crate::sys::bind_all_protocols(s.as_fd(), idx).unwrap();
                (ring, s)
            })
            .unwrap();
        // UDP 198.18.0.2 -> 198.18.0.1:9000 (no filter: ARP comes too).
        let is_knock = |b: &[u8], port: u16| {
            b.len() >= 38 && b[12..14] == [8, 0] && b[23] == 17 && b[36..38] == port.to_be_bytes()
        };
        pair.client
            .knock(&[("198.18.0.1", 9000, "udp")], 0)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(sock);
        pair.client
            .knock(&[("198.18.0.1", 9001, "udp")], 0)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut ports = Vec::new();
        while let Some(f) = ring.next() {
            for p in [9000, 9001] {
                if is_knock(f.bytes, p) {
                    ports.push(p);
                }
            }
        }
        assert_eq!(ports, vec![9000, 9001]);
        let sockets = || {
            pair.server
                .run(&["cat", "/proc/net/packet"])
                .unwrap()
                .lines()
                .count()
                - 1
        };
        assert_eq!(sockets(), 1, "the mapping keeps the socket");
        drop(ring);
        assert_eq!(sockets(), 0, "the unmap releases it");
    }

    #[test]
    fn geometry_rounds_to_what_the_kernel_takes() {
        let g = Geometry::new(2048, 16384);
        assert_eq!((g.frame_size, g.frames), (2048, 16384));
        let r = g.request().unwrap();
        assert_eq!(r.tp_block_size, 64 << 10);
        assert_eq!(
            r.tp_block_nr * (r.tp_block_size / r.tp_frame_size),
            r.tp_frame_nr
        );
        assert_eq!(r.tp_frame_nr as usize, g.frames);
        // A small ring: one page-sized block, slots rounded to 16 bytes.
        let g = Geometry::new(250, 3);
        assert_eq!(g.frame_size, 256);
        assert_eq!(g.block_size(), page_size());
        assert_eq!(g.frames, page_size() / 256);
        // Tiny slots are raised to 128 bytes.
        assert_eq!(Geometry::new(10, 1).frame_size, 128);
    }

    /// A ring given in bytes (`capture_ring`) maps that many bytes, rounded
    /// up to whole 64 KiB blocks.
    #[test]
    fn ring_bytes_become_slots() {
        let geometry = |bytes: u64| {
            let c = crate::LiveConfig::default().with_ring_bytes(bytes);
            Geometry::new(c.ring_frame_size, c.ring_frames)
        };
        for (bytes, mapped) in [
            (32 << 20, 32 << 20),
            (1 << 20, 1 << 20),
            (64 << 10, 64 << 10),
            ((1 << 20) + 1, (1 << 20) + (64 << 10)),
            (1536 << 10, 1536 << 10),
        ] {
            assert_eq!(geometry(bytes).bytes(), mapped, "{bytes}");
        }
        assert_eq!(
            crate::LiveConfig::default()
                .with_ring_bytes(32 << 20)
                .ring_frames,
            crate::LiveConfig::default().ring_frames,
            "32M is the default"
        );
        assert_eq!(
            crate::LiveConfig::default().with_ring_bytes(0).ring_frames,
            0
        );
    }

    #[test]
    fn reads_in_order_and_wraps_around() {
        let g = Geometry::new(256, 4);
        let mut ring = Ring::in_memory(g);
        let n = g.frames;
        assert!(ring.next().is_none(), "an empty ring has nothing");
        // Three times round the ring, a slot at a time.
        for k in 0..3 * n {
            let i = k % n;
            let payload = [k as u8; 40];
            ring.put(i, &payload, 80, 40);
            assert_eq!(ring.status(i), libc::TP_STATUS_USER);
            {
                let f = ring.next().expect("frame");
                assert_eq!(f.bytes, &payload[..]);
                assert_eq!((f.ifindex, f.sec, f.nsec), (3, 7, 9));
            }
            assert_eq!(ring.status(i), libc::TP_STATUS_KERNEL, "slot given back");
            assert!(ring.next().is_none());
        }
        // A full ring: every slot read once, in order, then nothing.
        for i in 0..n {
            ring.put(i, &[i as u8; 20], 80, 20);
        }
        for i in 0..n {
            assert_eq!(ring.next().expect("frame").bytes, &[i as u8; 20][..]);
        }
        assert!(ring.next().is_none());
    }

    #[test]
    fn a_frame_longer_than_its_slot_is_cut_to_the_slot() {
        let g = Geometry::new(256, 1);
        let mut ring = Ring::in_memory(g);
        let big = vec![0xabu8; 1500];
        // The kernel writes snaplen = what fits; a lying header is clamped too.
        ring.put(0, &big, 80, 176);
        let f = ring.next().unwrap();
        assert_eq!(f.bytes.len(), 176);
        drop(f);
        ring.put(1, &big, 80, 100_000);
        let f = ring.next().unwrap();
        assert_eq!(f.bytes.len(), 256 - 80);
        drop(f);
        ring.put(2, &big, 4000, 10);
        assert!(ring.next().unwrap().bytes.is_empty());
    }
}
