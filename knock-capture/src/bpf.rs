//! Classic BPF programs generated from a listen set.
//!
//! [`compile`] turns the matcher's [`Listen`] entries into a program for
//! `SO_ATTACH_FILTER`. It accepts a frame when it is addressed to this host
//! (packet type `PACKET_HOST`, read through the kernel's ancillary data: not
//! another host's frame seen in promiscuous mode, not a broadcast or
//! multicast), carries no VLAN tag (neither one the kernel took off, nor one
//! left in the data: tagged traffic is captured on the VLAN interface,
//! where it arrives untagged), and is:
//!
//! * IPv4, not a fragment other than the first, TCP or UDP, and matches an
//!   entry: destination port (any port for an `any_port` entry, a strict
//!   door's), TCP flags (`flags & (set|clear) == set`) and
//!   destination address when the entry has one. The transport header is
//!   found through the IHL (`ldxb 4*([L]&0xf)`), so IP options are fine;
//! * IPv6 with TCP or UDP right after the fixed header, matching an entry the
//!   same way;
//! * something the program cannot decide, passed up for [`crate::parse`]:
//!   IPv4 non-first fragments, and IPv6 whose next header is an extension
//!   header (hop-by-hop, routing, fragment, AH, destination options,
//!   mobility, HIP, shim6) not followed directly by ICMPv6 or no-next-header.
//!
//! Everything else (other ports, wrong flags, other addresses, ARP, ICMP,
//! frames too short for the fields the program reads) is dropped in the
//! kernel. Whether a destination without a door target is one of the
//! host's addresses is checked in user space ([`crate::LocalAddrs`]): the
//! set changes at run time.
//!
//! ## Size
//! Entries that differ only in their port share one lookup: their ports,
//! as sorted ranges, in a binary search tree (about three instructions per
//! range, a run time logarithmic in their number), shared by IPv4 and IPv6.
//! A program is at most a budget long ([`DEFAULT_BUDGET`]; the sources
//! halve it while the kernel refuses the program for lack of option memory,
//! `net.core.optmem_max`). When the exact program is longer, the closest
//! ranges are merged (then door targets, then TCP flags are left to user
//! space) until it fits: the program passes a superset, never everything,
//! and [`Compiled::widening`] says by how much, for a warning.
//!
//! [`tcpdump_expression`] gives the `tcpdump` filter equivalent to the exact
//! program, and the namespace tests check both accept the same packets.
//!
//! [`Program::run_with`] is an interpreter of the instructions used here, so unit
//! tests and the fuzz target can check the program against [`crate::parse`]
//! without a kernel.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::IpAddr;

use knock_core::{Listen, Proto};

use crate::parse::{ETH_IPV4, ETH_IPV6, IPPROTO_TCP, IPPROTO_UDP};
use crate::{CaptureError, LinkType};

/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;
/// The instruction budget [`compile`] fits the program into: about 500
/// port ranges exactly. Past that the program is widened (see
/// [`Widening`]) rather than made longer; its run time grows with the
/// logarithm of the number of ranges, its size (charged by the kernel to
/// the socket's `optmem_max`) linearly.
pub const DEFAULT_BUDGET: usize = 2048;
/// The smallest budget [`compile_within`] accepts; the coarsest program
/// (one port range per protocol, no targets, no flags) always fits it.
pub const MIN_BUDGET: usize = 128;
/// What an accepting program returns: the number of bytes to keep.
pub const ACCEPT: u32 = 0x0004_0000;

/// IPv6 next-header values the program passes up to user space (unless
/// the header after them is one of [`IPV6_NEVER_KNOCK`]).
pub const IPV6_EXTENSION_HEADERS: [u8; 8] = [0, 43, 44, 51, 60, 135, 139, 140];
/// Next headers after a first extension header that end the chain without
/// TCP or UDP: ICMPv6 (58) and no next header (59).
pub const IPV6_NEVER_KNOCK: [u8; 2] = [58, 59];

/// `PACKET_HOST` (linux/if_packet.h): a frame addressed to this host.
pub const PACKET_HOST: u8 = 0;
/// `PACKET_BROADCAST`.
pub const PACKET_BROADCAST: u8 = 1;
/// `PACKET_MULTICAST`.
pub const PACKET_MULTICAST: u8 = 2;
/// `PACKET_OTHERHOST`: another host's frame, seen in promiscuous mode.
pub const PACKET_OTHERHOST: u8 = 3;

// Opcode parts (linux/filter.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MSH: u16 = 0xa0;
const AND: u16 = 0x50;
const RSH: u16 = 0x70;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JGT: u16 = 0x20;
const JGE: u16 = 0x30;
const JSET: u16 = 0x40;
const K: u16 = 0x00;

// Ancillary loads (linux/filter.h): `ld [SKF_AD_OFF + n]` reads metadata.
const SKF_AD_OFF: u32 = 0xffff_f000; // -0x1000
const SKF_AD_PKTTYPE: u32 = 4;
const SKF_AD_VLAN_TAG_PRESENT: u32 = 48;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// The opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// The constant operand.
    pub k: u32,
}

/// What the kernel knows about a frame besides its bytes: what the
/// program's ancillary loads read in [`Program::run_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// `sll_pkttype`: [`PACKET_HOST`], [`PACKET_OTHERHOST`], ...
    pub pkttype: u8,
    /// The kernel took a VLAN tag off the frame (`skb_vlan_tag_present`).
    pub vlan_tag: bool,
}

impl Meta {
    /// An untagged frame addressed to this host.
    pub const HOST: Meta = Meta {
        pkttype: PACKET_HOST,
        vlan_tag: false,
    };
}

/// A classic BPF program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    insns: Vec<Insn>,
}

impl Program {
    /// A program that drops everything (`ret #0`).
    pub fn drop_all() -> Program {
        Program {
            insns: vec![Insn {
                code: RET | K,
                jt: 0,
                jf: 0,
                k: 0,
            }],
        }
    }

    /// A program that accepts everything.
    pub fn accept_all() -> Program {
        Program {
            insns: vec![Insn {
                code: RET | K,
                jt: 0,
                jf: 0,
                k: ACCEPT,
            }],
        }
    }

    /// The instructions.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// The program in `tcpdump -ddd` format: a count line, then
    /// `code jt jf k` per line.
    pub fn to_ddd(&self) -> String {
        let mut s = format!("{}\n", self.insns.len());
        for i in &self.insns {
            let _ = writeln!(s, "{} {} {} {}", i.code, i.jt, i.jf, i.k);
        }
        s
    }

    /// [`Program::run_with`] for an untagged frame addressed to this host.
    pub fn run(&self, pkt: &[u8]) -> u32 {
        self.run_with(pkt, Meta::HOST)
    }

    /// Runs the program on `pkt` as the kernel would and returns its verdict
    /// (0: drop). Loads past the end of the packet drop it, as in the kernel.
    /// Supports the instructions [`compile`] emits; anything else drops.
    pub fn run_with(&self, pkt: &[u8], meta: Meta) -> u32 {
        let (mut a, mut x): (u32, u32) = (0, 0);
        let mut pc = 0usize;
        let load = |off: u64, size: usize| -> Option<u32> {
            if let Some(aux) = off.checked_sub(u64::from(SKF_AD_OFF)) {
                return match aux as u32 {
                    SKF_AD_PKTTYPE => Some(u32::from(meta.pkttype)),
                    SKF_AD_VLAN_TAG_PRESENT => Some(u32::from(meta.vlan_tag)),
                    _ => None,
                };
            }
            let off = usize::try_from(off).ok()?;
            let b = pkt.get(off..off.checked_add(size)?)?;
            Some(b.iter().fold(0u32, |acc, &v| (acc << 8) | u32::from(v)))
        };
        // Every jump moves forward, so the loop ends within len steps.
        while let Some(i) = self.insns.get(pc) {
            pc += 1;
            let size = match i.code & 0x18 {
                W => 4,
                H => 2,
                _ => 1,
            };
            match i.code & 0x07 {
                LD => {
                    let off = match i.code & 0xe0 {
                        ABS => u64::from(i.k),
                        // The kernel adds in 32 bits; no ancillary data here.
                        IND => u64::from(x.wrapping_add(i.k)),
                        _ => return 0,
                    };
                    match load(off, size) {
                        Some(v) => a = v,
                        None => return 0,
                    }
                }
                LDX if i.code == LDX | B | MSH => match load(u64::from(i.k), 1) {
                    Some(v) => x = (v & 0xf) * 4,
                    None => return 0,
                },
                LDX if i.code == LDX | W | IMM => x = i.k,
                ALU => match i.code & 0xf0 {
                    AND => a &= i.k,
                    RSH => a = a.checked_shr(i.k).unwrap_or(0),
                    _ => return 0,
                },
                JMP => {
                    let cond = match i.code & 0xf0 {
                        JA => {
                            pc = pc.saturating_add(i.k as usize);
                            continue;
                        }
                        JEQ => a == i.k,
                        JGT => a > i.k,
                        JGE => a >= i.k,
                        JSET => a & i.k != 0,
                        _ => return 0,
                    };
                    pc += usize::from(if cond { i.jt } else { i.jf });
                }
                RET => return i.k,
                _ => return 0,
            }
        }
        0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Label(usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tgt {
    Next,
    To(Label),
}

#[derive(Clone, Copy, Debug)]
enum Item {
    Stmt(u16, u32),
    /// A conditional jump. The flags say whether each target is out of a
    /// jump offset's reach (255) and goes through a following `ja`.
    Jump(u16, u32, Tgt, Tgt, [bool; 2]),
    Ja(Label),
    Here(Label),
}

impl Item {
    fn len(&self) -> usize {
        match self {
            Item::Here(_) => 0,
            Item::Jump(.., far) => 1 + usize::from(far[0]) + usize::from(far[1]),
            _ => 1,
        }
    }
}

/// A tiny assembler with forward labels. A conditional jump to a label out
/// of reach of its 8-bit offset becomes a jump to a following `ja`, which
/// has a 32-bit offset.
#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }
    fn here(&mut self, l: Label) {
        self.items.push(Item::Here(l));
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.items.push(Item::Stmt(code, k));
    }
    fn jump(&mut self, code: u16, k: u32, t: Tgt, f: Tgt) {
        self.items
            .push(Item::Jump(JMP | code | K, k, t, f, [false; 2]));
    }
    fn ja(&mut self, l: Label) {
        self.items.push(Item::Ja(l));
    }
    fn ret(&mut self, k: u32) {
        self.stmt(RET | K, k);
    }
    /// `if A == k goto l`.
    fn jeq_to(&mut self, k: u32, l: Label) {
        self.jump(JEQ, k, Tgt::To(l), Tgt::Next);
    }

    /// Where each label is, and the program length, with the current jump sizes.
    fn layout(&self) -> (Vec<usize>, usize) {
        let mut pos = vec![0usize; self.labels];
        let mut n = 0usize;
        for it in &self.items {
            if let Item::Here(l) = it {
                pos[l.0] = n;
            }
            n += it.len();
        }
        (pos, n)
    }

    /// The program's length once assembled.
    fn len(&mut self) -> usize {
        self.relax();
        self.layout().1
    }

    /// Marks every jump target out of reach as far, until none is left.
    /// Marking only ever lengthens the program, so this ends.
    fn relax(&mut self) {
        loop {
            let (pos, _) = self.layout();
            let mut at = 0usize;
            let mut changed = false;
            for it in &mut self.items {
                if let Item::Jump(_, _, t, f, far) = it {
                    for (i, tgt) in [*t, *f].into_iter().enumerate() {
                        if let Tgt::To(l) = tgt {
                            if !far[i] && pos[l.0].saturating_sub(at + 1) > 255 {
                                far[i] = true;
                                changed = true;
                            }
                        }
                    }
                }
                at += it.len();
            }
            if !changed {
                return;
            }
        }
    }

    fn finish(mut self) -> Result<Program, CaptureError> {
        self.relax();
        let (pos, n) = self.layout();
        let too_long = CaptureError::FilterTooLong(n);
        if n > MAX_INSNS {
            return Err(too_long);
        }
        let mut insns = Vec::with_capacity(n);
        let dist = |to: usize, from: usize| to.checked_sub(from + 1);
        for it in &self.items {
            let at = insns.len();
            match *it {
                Item::Here(_) => {}
                Item::Stmt(code, k) => insns.push(Insn {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Item::Jump(code, k, t, f, far) => {
                    let end = at + it.len();
                    let target = |t: Tgt| match t {
                        Tgt::Next => end,
                        Tgt::To(l) => pos[l.0],
                    };
                    // Layout: cond, then `ja t` if t is far, then `ja f` if f is far.
                    let ja_t = at + 1;
                    let ja_f = at + 1 + usize::from(far[0]);
                    let off = |to: usize| {
                        dist(to, at)
                            .and_then(|d| u8::try_from(d).ok())
                            .ok_or(CaptureError::FilterTooLong(n))
                    };
                    let jt = off(if far[0] { ja_t } else { target(t) })?;
                    let jf = off(if far[1] { ja_f } else { target(f) })?;
                    insns.push(Insn { code, jt, jf, k });
                    for (i, tg) in [(0, t), (1, f)] {
                        if far[i] {
                            let from = insns.len();
                            let d = dist(target(tg), from).ok_or(CaptureError::FilterTooLong(n))?;
                            insns.push(ja_insn(d));
                        }
                    }
                }
                Item::Ja(l) => {
                    let d = dist(pos[l.0], at).ok_or(CaptureError::FilterTooLong(n))?;
                    insns.push(ja_insn(d));
                }
            }
        }
        Ok(Program { insns })
    }
}

fn ja_insn(d: usize) -> Insn {
    Insn {
        code: JMP | JA,
        jt: 0,
        jf: 0,
        k: u32::try_from(d).unwrap_or(u32::MAX),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// Inclusive port ranges, sorted and disjoint (not even adjacent).
type Ranges = Vec<(u16, u16)>;

/// Entries that share everything but the port: one port-range lookup.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Group {
    proto: Proto,
    /// TCP flags that are looked at, and what they must be.
    mask: u8,
    want: u8,
    dst: Option<IpAddr>,
    ranges: Ranges,
}

/// How much of the listen set the kernel program still checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Exact,
    /// Door targets dropped: any destination.
    NoTargets,
    /// Targets and TCP flags dropped: protocol and ports only.
    NoFlags,
}

fn normalize(mut r: Ranges) -> Ranges {
    r.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        match out.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn ports(r: &[(u16, u16)]) -> u32 {
    r.iter()
        .map(|&(a, b)| u32::from(b) - u32::from(a) + 1)
        .sum()
}

/// The listen set as groups, at `level`.
fn groups(listen: &[Listen], level: Level) -> Vec<Group> {
    let mut by: BTreeMap<(Proto, u8, u8, Option<IpAddr>), Ranges> = BTreeMap::new();
    for e in listen {
        // An entry whose flags must be both set and clear can never match.
        if e.flags_set.bits() & e.flags_clear.bits() != 0 {
            continue;
        }
        let (mut mask, mut want) = match e.proto {
            Proto::Tcp => (
                e.flags_set.bits() | e.flags_clear.bits(),
                e.flags_set.bits() & !e.flags_clear.bits(),
            ),
            Proto::Udp => (0, 0),
        };
        let mut dst = e.dst;
        if level >= Level::NoTargets {
            dst = None;
        }
        if level >= Level::NoFlags {
            (mask, want) = (0, 0);
        }
        let r = if e.any_port {
            (0, u16::MAX)
        } else {
            (e.port, e.port)
        };
        by.entry((e.proto, mask, want, dst)).or_default().push(r);
    }
    by.into_iter()
        .map(|((proto, mask, want, dst), r)| Group {
            proto,
            mask,
            want,
            dst,
            ranges: normalize(r),
        })
        .collect()
}

/// Merges the closest neighbouring ranges (across all groups) until at
/// most `keep` ranges are left (never fewer than one per group).
fn coarsen(groups: &[Group], keep: usize) -> Vec<Group> {
    let total: usize = groups.iter().map(|g| g.ranges.len()).sum();
    let merges = total.saturating_sub(keep);
    // (gap, group, index of the range before the gap)
    let mut gaps: Vec<(u32, usize, usize)> = groups
        .iter()
        .enumerate()
        .flat_map(|(gi, g)| {
            g.ranges
                .windows(2)
                .enumerate()
                .map(move |(i, w)| (u32::from(w[1].0) - u32::from(w[0].1) - 1, gi, i))
        })
        .collect();
    gaps.sort_unstable();
    let mut merge: Vec<Vec<bool>> = groups.iter().map(|g| vec![false; g.ranges.len()]).collect();
    for &(_, gi, i) in gaps.iter().take(merges) {
        merge[gi][i] = true;
    }
    groups
        .iter()
        .zip(merge)
        .map(|(g, m)| {
            let mut out: Ranges = Vec::new();
            let mut joined = false;
            for (r, join_next) in g.ranges.iter().zip(m) {
                match out.last_mut() {
                    Some(last) if joined => last.1 = r.1,
                    _ => out.push(*r),
                }
                joined = join_next;
            }
            Group {
                ranges: out,
                ..g.clone()
            }
        })
        .collect()
}

/// How [`compile`] widened a program that would not fit its budget: it
/// passes a superset of the listen set's knocks (user space still checks
/// every packet exactly, so nothing is lost, but unrelated traffic to the
/// widened ports costs user-space work). [`fmt::Display`] says it for a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Widening {
    /// Port ranges the exact program would check.
    pub exact_ranges: usize,
    /// Port ranges the program checks.
    pub ranges: usize,
    /// Ports passed that no entry asks for (summed over the lookups).
    pub extra_ports: u32,
    /// Door targets (destination addresses) are not checked in the kernel.
    pub any_destination: bool,
    /// TCP flags are not checked in the kernel.
    pub any_flags: bool,
    /// The instruction budget the program had to fit.
    pub budget: usize,
    /// The budget was lowered because the kernel would not take a longer
    /// program within `net.core.optmem_max`.
    pub optmem_limited: bool,
}

impl fmt::Display for Widening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the kernel filter was widened to fit {} instructions: {} port ranges \
             merged into {}, passing {} ports no door uses",
            self.budget, self.exact_ranges, self.ranges, self.extra_ports
        )?;
        if self.any_destination {
            f.write_str(", to any destination")?;
        }
        if self.any_flags {
            f.write_str(", with any TCP flags")?;
        }
        if self.optmem_limited {
            f.write_str(" (a longer program does not fit net.core.optmem_max)")?;
        }
        f.write_str("; user space still checks every packet")
    }
}

/// A compiled filter, and whether it had to be widened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// The program.
    pub program: Program,
    /// `Some` when the program passes more than the listen set asks for.
    pub widening: Option<Widening>,
}

/// Compiles the filter for a socket that sees frames of link type `link`,
/// within [`DEFAULT_BUDGET`] instructions: [`compile_within`].
pub fn compile(link: LinkType, listen: &[Listen]) -> Result<Compiled, CaptureError> {
    compile_within(link, listen, DEFAULT_BUDGET)
}

/// Compiles the filter for a socket that sees frames of link type `link`,
/// at most `budget` instructions long (clamped to
/// [`MIN_BUDGET`]..=[`MAX_INSNS`]).
///
/// Ports are looked up as sorted ranges in a binary search tree (a few
/// instructions per range, a run time logarithmic in their number). When
/// the exact program is longer than `budget`, the closest ranges are merged
/// (then door targets, then TCP flags, are left to user space) until it
/// fits, and [`Compiled::widening`] says how far it widened; never does it
/// become accept-all.
///
/// Cooked (SLL, SLL2) captures are not produced by sockets here; for them
/// the program accepts everything.
pub fn compile_within(
    link: LinkType,
    listen: &[Listen],
    budget: usize,
) -> Result<Compiled, CaptureError> {
    if matches!(link, LinkType::LinuxSll | LinkType::LinuxSll2) {
        return Ok(Compiled {
            program: Program::accept_all(),
            widening: None,
        });
    }
    let budget = budget.clamp(MIN_BUDGET, MAX_INSNS);
    let exact_ranges: usize = groups(listen, Level::Exact)
        .iter()
        .map(|g| g.ranges.len())
        .sum();
    let extra = |exact: &[Group], got: &[Group]| -> u32 {
        let n = |gs: &[Group]| gs.iter().map(|g| ports(&g.ranges)).sum::<u32>();
        n(got).saturating_sub(n(exact))
    };
    for level in [Level::Exact, Level::NoTargets, Level::NoFlags] {
        let gs = groups(listen, level);
        let widening = |got: &[Group]| {
            let ranges = got.iter().map(|g| g.ranges.len()).sum();
            (level != Level::Exact || ranges != exact_ranges).then(|| Widening {
                exact_ranges,
                ranges,
                extra_ports: extra(&gs, got),
                any_destination: level >= Level::NoTargets,
                any_flags: level >= Level::NoFlags,
                budget,
                optmem_limited: false,
            })
        };
        let fits = |g: &[Group]| assemble(link, g).map(|mut a| a.len() <= budget);
        if fits(&gs)? {
            return Ok(Compiled {
                program: assemble(link, &gs)?.finish()?,
                widening: widening(&gs),
            });
        }
        let total: usize = gs.iter().map(|g| g.ranges.len()).sum();
        // The largest number of ranges that fits, by bisection (the length
        // grows with the number of ranges).
        let (mut lo, mut hi) = (gs.len(), total);
        if !fits(&coarsen(&gs, lo))? {
            continue;
        }
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if fits(&coarsen(&gs, mid))? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let got = coarsen(&gs, lo);
        return Ok(Compiled {
            program: assemble(link, &got)?.finish()?,
            widening: widening(&got),
        });
    }
    // The coarsest program is far shorter than MIN_BUDGET.
    Err(CaptureError::FilterTooLong(budget))
}

/// Where a failed lookup goes: drop the frame, or try the next group.
#[derive(Clone, Copy)]
enum Fail {
    Drop,
    To(Label),
}

/// How many ranges share one local failure exit (keeps jumps short).
const LOCAL_RANGES: usize = 16;

/// Emits a lookup of A (a port known to be in `lo..=hi`) in `r`:
/// `ret ACCEPT` when in a range, else `fail`.
fn tree(asm: &mut Asm, r: &[(u16, u16)], lo: u32, hi: u32, fail: Fail) {
    if r.len() > LOCAL_RANGES {
        let (left, right) = r.split_at(r.len() / 2);
        let split = left.last().map_or(lo, |x| u32::from(x.1));
        let rl = asm.label();
        asm.jump(JGT, split, Tgt::To(rl), Tgt::Next);
        tree(asm, left, lo, split, fail);
        asm.here(rl);
        tree(asm, right, split + 1, hi, fail);
        return;
    }
    let local = asm.label();
    subtree(asm, r, lo, hi, local);
    asm.here(local);
    match fail {
        Fail::Drop => asm.ret(0),
        Fail::To(l) => asm.ja(l),
    }
}

fn subtree(asm: &mut Asm, r: &[(u16, u16)], lo: u32, hi: u32, fail: Label) {
    match r {
        [] => asm.ja(fail),
        [(a, b)] => {
            let (a, b) = (u32::from(*a), u32::from(*b));
            if a > lo {
                asm.jump(JGE, a, Tgt::Next, Tgt::To(fail));
            }
            if b < hi {
                asm.jump(JGT, b, Tgt::To(fail), Tgt::Next);
            }
            asm.ret(ACCEPT);
        }
        _ => {
            let (left, right) = r.split_at(r.len() / 2);
            let split = left.last().map_or(lo, |x| u32::from(x.1));
            let rl = asm.label();
            asm.jump(JGT, split, Tgt::To(rl), Tgt::Next);
            subtree(asm, left, lo, split, fail);
            asm.here(rl);
            subtree(asm, right, split + 1, hi, fail);
        }
    }
}

/// Emits one group's checks: TCP flags, destination, then the port lookup.
/// X holds the transport header's offset from `l`.
fn group(asm: &mut Asm, g: &Group, l: u32, fail: Fail) {
    let miss = asm.label();
    if g.proto == Proto::Tcp && g.mask != 0 {
        asm.stmt(LD | B | IND, l + 13);
        asm.stmt(ALU | AND | K, u32::from(g.mask));
        asm.jump(JEQ, u32::from(g.want), Tgt::Next, Tgt::To(miss));
    }
    match g.dst {
        Some(IpAddr::V4(a)) => {
            asm.stmt(LD | W | ABS, l + 16);
            asm.jump(JEQ, u32::from(a), Tgt::Next, Tgt::To(miss));
        }
        Some(IpAddr::V6(a)) => {
            for (i, w) in a.octets().chunks_exact(4).enumerate() {
                let word = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
                asm.stmt(LD | W | ABS, l + 24 + 4 * i as u32);
                asm.jump(JEQ, word, Tgt::Next, Tgt::To(miss));
            }
        }
        None => {}
    }
    if g.ranges == [(0, u16::MAX)] {
        asm.ret(ACCEPT);
    } else {
        asm.stmt(LD | H | IND, l + 2);
        tree(asm, &g.ranges, 0, u32::from(u16::MAX), fail);
    }
    asm.here(miss);
    match fail {
        Fail::Drop => asm.ret(0),
        Fail::To(t) => asm.ja(t),
    }
}

fn family_of(dst: Option<IpAddr>) -> Option<Family> {
    match dst? {
        IpAddr::V4(_) => Some(Family::V4),
        IpAddr::V6(_) => Some(Family::V6),
    }
}

/// The program for `groups` (not yet assembled, so its length can be measured).
fn assemble(link: LinkType, groups: &[Group]) -> Result<Asm, CaptureError> {
    let l: u32 = match link {
        LinkType::Ethernet => 14,
        LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => 0,
        LinkType::LinuxSll | LinkType::LinuxSll2 => return Err(CaptureError::FilterTooLong(0)),
    };
    let mut asm = Asm::default();
    let drop_l = asm.label();
    let accept_l = asm.label();
    let v4 = asm.label();
    let v6 = asm.label();
    // Only frames addressed to this host, without a VLAN tag the kernel
    // took off (those belong to a VLAN interface, where they arrive
    // untagged).
    asm.stmt(LD | B | ABS, SKF_AD_OFF + SKF_AD_PKTTYPE);
    asm.jump(JEQ, u32::from(PACKET_HOST), Tgt::Next, Tgt::To(drop_l));
    asm.stmt(LD | B | ABS, SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT);
    asm.jump(JEQ, 0, Tgt::Next, Tgt::To(drop_l));
    match link {
        LinkType::Ethernet => {
            // A tag still in the data (the inner one of stacked tags) is
            // dropped with everything else that is not IPv4 or IPv6.
            asm.stmt(LD | H | ABS, 12);
            asm.jeq_to(u32::from(ETH_IPV4), v4);
            asm.jeq_to(u32::from(ETH_IPV6), v6);
        }
        _ => {
            // No link header: dispatch on the version nibble.
            asm.stmt(LD | B | ABS, 0);
            asm.stmt(ALU | RSH | K, 4);
            if link != LinkType::Ipv6 {
                asm.jeq_to(4, v4);
            }
            if link != LinkType::Ipv4 {
                asm.jeq_to(6, v6);
            }
        }
    }
    asm.ret(0);

    let has = |p: Proto| groups.iter().any(|g| g.proto == p);
    let sections: Vec<(Proto, Family, Label)> = [Proto::Tcp, Proto::Udp]
        .into_iter()
        .filter(|&p| has(p))
        .flat_map(|p| [(p, Family::V4), (p, Family::V6)])
        .map(|(p, f)| (p, f, asm.label()))
        .collect();
    let section = |p: Proto, f: Family| sections.iter().find(|s| s.0 == p && s.1 == f).map(|s| s.2);
    let proto_jumps = |asm: &mut Asm, f: Family| {
        for (p, n) in [(Proto::Tcp, IPPROTO_TCP), (Proto::Udp, IPPROTO_UDP)] {
            if let Some(s) = section(p, f) {
                asm.jeq_to(u32::from(n), s);
            }
        }
    };
    // IPv4: X = header length, so the transport header is at [X + l].
    asm.here(v4);
    asm.stmt(LD | H | ABS, l + 6);
    // Non-first fragments have no ports: user space counts them.
    asm.jump(JSET, 0x1fff, Tgt::To(accept_l), Tgt::Next);
    asm.stmt(LDX | B | MSH, l);
    asm.stmt(LD | B | ABS, l + 9);
    proto_jumps(&mut asm, Family::V4);
    asm.ja(drop_l);
    // IPv6: X = 40, the fixed header.
    asm.here(v6);
    asm.stmt(LDX | W | IMM, 40);
    asm.stmt(LD | B | ABS, l + 6);
    proto_jumps(&mut asm, Family::V6);
    let ext = asm.label();
    for eh in IPV6_EXTENSION_HEADERS {
        asm.jeq_to(u32::from(eh), ext);
    }
    asm.ja(drop_l);
    // An extension header: every kind has its next header in its first
    // byte. ICMPv6 or no-next-header right after it (MLD reports, ND with
    // options) cannot be a knock; pass the rest up.
    asm.here(ext);
    asm.stmt(LD | B | ABS, l + 40);
    for nh in IPV6_NEVER_KNOCK {
        asm.jeq_to(u32::from(nh), drop_l);
    }
    asm.ja(accept_l);

    // Per protocol: each family's groups with a target of that family,
    // then the groups without a target, shared by both families (X makes
    // the transport header's place the same).
    for p in [Proto::Tcp, Proto::Udp] {
        if !has(p) {
            continue;
        }
        let any: Vec<&Group> = groups
            .iter()
            .filter(|g| g.proto == p && g.dst.is_none())
            .collect();
        let any_l = asm.label();
        for f in [Family::V4, Family::V6] {
            if let Some(s) = section(p, f) {
                asm.here(s);
            }
            for g in groups
                .iter()
                .filter(|g| g.proto == p && family_of(g.dst) == Some(f))
            {
                let next = asm.label();
                group(&mut asm, g, l, Fail::To(next));
                asm.here(next);
            }
            asm.ja(any_l);
        }
        asm.here(any_l);
        for (i, g) in any.iter().enumerate() {
            let next = asm.label();
            let fail = if i + 1 == any.len() {
                Fail::Drop
            } else {
                Fail::To(next)
            };
            group(&mut asm, g, l, fail);
            asm.here(next);
        }
        asm.ret(0);
    }
    // Jumps only go forward: the shared exits come last.
    asm.here(drop_l);
    asm.ret(0);
    asm.here(accept_l);
    asm.ret(ACCEPT);
    Ok(asm)
}

/// The `tcpdump` expression that accepts the same IPv4/IPv6 packets as
/// [`compile`]'s exact program, among untagged frames for this host.
pub fn tcpdump_expression(listen: &[Listen]) -> String {
    let mut parts = vec!["(ip and ip[6:2] & 0x1fff != 0)".to_string()];
    let ehs: Vec<String> = IPV6_EXTENSION_HEADERS
        .iter()
        .map(|e| format!("ip6[6] = {e}"))
        .collect();
    parts.push(format!(
        "(ip6 and ({}) and ip6[40] != 58 and ip6[40] != 59)",
        ehs.join(" or ")
    ));
    for e in listen {
        if e.flags_set.bits() & e.flags_clear.bits() != 0 {
            continue;
        }
        let mut p = if e.any_port {
            format!("({}", e.proto)
        } else {
            format!("({} dst port {}", e.proto, e.port)
        };
        if e.proto == Proto::Tcp {
            let mask = e.flags_set.bits() | e.flags_clear.bits();
            if mask != 0 {
                // libpcap's tcp[13] is IPv4-only; for IPv6 (no extension
                // headers, as in the kernel program) the byte is ip6[53].
                let want = e.flags_set.bits() & !e.flags_clear.bits();
                let _ = write!(
                    p,
                    " and ((ip and tcp[13] & {mask:#04x} = {want:#04x}) or (ip6 and ip6[53] & {mask:#04x} = {want:#04x}))"
                );
            }
        }
        if let Some(d) = e.dst {
            let _ = write!(p, " and dst host {d}");
        }
        p.push(')');
        parts.push(p);
    }
    parts.join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::{self, Ext, Frag};
    use crate::parse;
    use knock_core::{FlagFilter, Step, TcpFlags, Timestamp};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const C4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const S4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const O4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);
    const C6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    const S6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const O6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9);

    /// An IPv4 SYN from C4 to S4:7000, the door's first step.
    fn syn_7000() -> Vec<u8> {
        craft::ipv4(
            C4,
            S4,
            6,
            &[],
            Frag::default(),
            &craft::tcp(1, 7000, TcpFlags::SYN),
        )
    }

    fn syn_not_ack() -> FlagFilter {
        FlagFilter {
            set: TcpFlags::SYN,
            clear: TcpFlags::ACK,
        }
    }

    fn listen() -> Vec<Listen> {
        vec![
            Listen::new(Step::tcp(7000), syn_not_ack(), Some(S4.into())),
            Listen::new(Step::tcp(7000), syn_not_ack(), Some(S6.into())),
            Listen::new(Step::tcp(7001), FlagFilter::ANY, None),
            Listen::new(Step::udp(9000), FlagFilter::ANY, None),
            Listen::new(Step::udp(9001), FlagFilter::ANY, Some(S6.into())),
        ]
    }

    /// A spread of IP packets: every port/flag/address combination around the listen set.
    fn packets() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let flags = [
            TcpFlags::SYN,
            TcpFlags::SYN | TcpFlags::ACK,
            TcpFlags::ACK,
            TcpFlags::RST,
            TcpFlags::SYN | TcpFlags::ECE | TcpFlags::CWR,
        ];
        for port in [6999, 7000, 7001, 7002, 9000, 9001, 9002] {
            for dst4 in [S4, O4] {
                for f in flags {
                    let t = craft::tcp(40000, port, f);
                    out.push(craft::ipv4(C4, dst4, 6, &[], Frag::default(), &t));
                    out.push(craft::ipv4(
                        C4,
                        dst4,
                        6,
                        &[1, 1, 1, 1, 1, 1, 1, 0],
                        Frag::default(),
                        &t,
                    ));
                }
                let u = craft::udp(40000, port, b"k");
                out.push(craft::ipv4(C4, dst4, 17, &[], Frag::default(), &u));
                out.push(craft::ipv4(
                    C4,
                    dst4,
                    17,
                    &[],
                    Frag {
                        offset: 0,
                        more: true,
                    },
                    &u,
                ));
                out.push(craft::ipv4(
                    C4,
                    dst4,
                    17,
                    &[],
                    Frag {
                        offset: 3,
                        more: false,
                    },
                    &u,
                ));
                out.push(craft::ipv4(C4, dst4, 1, &[], Frag::default(), &u));
            }
            for dst6 in [S6, O6] {
                for f in flags {
                    let t = craft::tcp(40000, port, f);
                    out.push(craft::ipv6(C6, dst6, &[], 6, &t));
                    out.push(craft::ipv6(C6, dst6, &[Ext::opts(60, 1)], 6, &t));
                }
                let u = craft::udp(40000, port, b"k");
                out.push(craft::ipv6(C6, dst6, &[], 17, &u));
                out.push(craft::ipv6(C6, dst6, &[Ext::fragment(0, true)], 17, &u));
                out.push(craft::ipv6(
                    C6,
                    dst6,
                    &[Ext::opts(0, 0), Ext::ah(3)],
                    17,
                    &u,
                ));
                out.push(craft::ipv6(C6, dst6, &[], 58, &u));
                out.push(craft::ipv6(C6, dst6, &[Ext::opts(0, 0)], 58, &u));
            }
        }
        out
    }

    fn frame(link: LinkType, ip: &[u8]) -> Vec<u8> {
        let et = if ip[0] >> 4 == 4 {
            craft::ETH_IPV4
        } else {
            craft::ETH_IPV6
        };
        match link {
            LinkType::Ethernet => craft::ethernet(&[], et, ip),
            _ => ip.to_vec(),
        }
    }

    /// The program never drops a knock, and passes a non-knock only when it
    /// cannot decide (extension headers, fragments).
    #[test]
    fn program_agrees_with_parse_and_matches() {
        agrees(&listen());
    }

    /// A strict door's entries pass every SYN (not SYN-ACK) and datagram, to
    /// its target only when it has one.
    #[test]
    fn strict_entries_pass_every_syn_and_datagram() {
        let mut ls = listen();
        ls.extend(Listen::strict(Some(S6.into())));
        agrees(&ls);
        let mut ls = listen();
        ls.extend(Listen::strict(None));
        agrees(&ls);
        let prog = compile(LinkType::Ethernet, &ls).unwrap().program;
        let pkt = |port, f| {
            let t = craft::tcp(40000, port, f);
            craft::ethernet(
                &[],
                craft::ETH_IPV4,
                &craft::ipv4(C4, O4, 6, &[], Frag::default(), &t),
            )
        };
        assert_eq!(prog.run(&pkt(1, TcpFlags::SYN)), ACCEPT);
        assert_eq!(prog.run(&pkt(65535, TcpFlags::SYN)), ACCEPT);
        assert_eq!(prog.run(&pkt(1, TcpFlags::SYN | TcpFlags::ACK)), 0);
        assert_eq!(prog.run(&pkt(1, TcpFlags::ACK)), 0);
        assert!(tcpdump_expression(&ls).contains("(tcp and ((ip and tcp[13] & 0x12 = 0x02)"));
    }

    fn agrees(ls: &[Listen]) {
        for link in [LinkType::Ethernet, LinkType::RawIp] {
            let prog = compile(link, ls).unwrap().program;
            for ip in packets() {
                let f = frame(link, &ip);
                let verdict = prog.run(&f) != 0;
                let parsed = parse(link, &f, Timestamp::ZERO);
                let knock = parsed
                    .as_ref()
                    .map(|e| ls.iter().any(|l| l.matches(e)))
                    .unwrap_or(false);
                let undecidable = match ip[0] >> 4 {
                    4 => u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0,
                    _ => {
                        IPV6_EXTENSION_HEADERS.contains(&ip[6])
                            && !IPV6_NEVER_KNOCK.contains(&ip[40])
                    }
                };
                if knock {
                    assert!(verdict, "{link:?} dropped a knock {parsed:?}");
                } else if !undecidable {
                    assert!(!verdict, "{link:?} passed a non-knock {parsed:?} {ip:02x?}");
                } else {
                    assert!(verdict, "{link:?} dropped an undecidable packet {parsed:?}");
                }
            }
        }
    }

    #[test]
    fn ipv4_and_ipv6_only_links() {
        let ls = listen();
        let p4 = compile(LinkType::Ipv4, &ls).unwrap().program;
        let p6 = compile(LinkType::Ipv6, &ls).unwrap().program;
        let syn4 = syn_7000();
        let syn6 = craft::ipv6(C6, S6, &[], 6, &craft::tcp(1, 7000, TcpFlags::SYN));
        assert_eq!(p4.run(&syn4), ACCEPT);
        assert_eq!(p6.run(&syn6), ACCEPT);
        assert_eq!(p6.run(&syn4), 0);
    }

    #[test]
    fn empty_set_drops_all_but_undecidable() {
        let prog = compile(LinkType::Ethernet, &[]).unwrap().program;
        let syn = syn_7000();
        assert_eq!(prog.run(&craft::ethernet(&[], craft::ETH_IPV4, &syn)), 0);
        assert_eq!(prog.run(&[]), 0);
        assert_eq!(prog.run(&craft::ethernet(&[], 0x0806, &[0; 28])), 0);
        // Tag leftovers (the inner tag of stacked VLANs) are not for this host.
        assert_eq!(
            prog.run(&craft::ethernet(&[(0x8100, 5)], craft::ETH_IPV4, &syn)),
            0
        );
    }

    #[test]
    fn short_frames_are_dropped_not_misread() {
        let prog = compile(LinkType::Ethernet, &listen()).unwrap().program;
        let syn = syn_7000();
        let f = craft::ethernet(&[], craft::ETH_IPV4, &syn);
        // The last byte the program reads is the TCP flag byte (14 + 20 + 13).
        for n in 0..48 {
            assert_eq!(prog.run(&f[..n]), 0, "accepted {n} bytes");
        }
        assert_eq!(prog.run(&f), ACCEPT);
    }

    /// Only untagged frames addressed to this host pass: not another host's
    /// frame (promiscuous mode), not a broadcast or multicast, not a frame
    /// whose VLAN tag the kernel took off, not one with a tag in its data.
    #[test]
    fn only_untagged_frames_for_this_host() {
        let ls = listen();
        for link in [LinkType::Ethernet, LinkType::RawIp] {
            let prog = compile(link, &ls).unwrap().program;
            let f = frame(link, &syn_7000());
            assert_eq!(prog.run(&f), ACCEPT);
            for pkttype in [PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, 4] {
                let meta = Meta {
                    pkttype,
                    vlan_tag: false,
                };
                assert_eq!(prog.run_with(&f, meta), 0, "{link:?} {pkttype}");
            }
            let tagged = Meta {
                pkttype: PACKET_HOST,
                vlan_tag: true,
            };
            assert_eq!(prog.run_with(&f, tagged), 0, "{link:?}");
        }
        let prog = compile(LinkType::Ethernet, &ls).unwrap().program;
        for tags in [
            vec![(craft::TPID_8021Q, 100)],
            vec![(craft::TPID_8021AD, 5), (craft::TPID_8021Q, 6)],
            vec![(0x9100, 7)],
        ] {
            let f = craft::ethernet(&tags, craft::ETH_IPV4, &syn_7000());
            assert_eq!(prog.run(&f), 0, "{tags:?}");
        }
    }

    /// `n` doors of three TCP SYN ports each: 10000 + 7i, 20000 + 7i, 30000 + 7i.
    fn doors(n: u16) -> Vec<Listen> {
        (0..n)
            .flat_map(|i| [10_000 + 7 * i, 20_000 + 7 * i, 30_000 + 7 * i])
            .map(|p| Listen::new(Step::tcp(p), syn_not_ack(), None))
            .collect()
    }

    fn syn_to(port: u16, flags: TcpFlags) -> Vec<u8> {
        let t = craft::tcp(40000, port, flags);
        craft::ethernet(
            &[],
            craft::ETH_IPV4,
            &craft::ipv4(C4, S4, 6, &[], Frag::default(), &t),
        )
    }

    fn syn6_to(port: u16) -> Vec<u8> {
        let t = craft::tcp(40000, port, TcpFlags::SYN);
        craft::ethernet(&[], craft::ETH_IPV6, &craft::ipv6(C6, S6, &[], 6, &t))
    }

    /// Every port 0..=65535 as a v4 and a v6 SYN: the ones the program passes.
    fn passed(prog: &Program) -> (Vec<u16>, Vec<u16>) {
        let v4 = (0..=u16::MAX)
            .filter(|&p| prog.run(&syn_to(p, TcpFlags::SYN)) != 0)
            .collect();
        let v6 = (0..=u16::MAX)
            .filter(|&p| prog.run(&syn6_to(p)) != 0)
            .collect();
        (v4, v6)
    }

    /// Up to about 500 port ranges the program is exact: it passes the
    /// knock ports and nothing else, with a length that grows by a few
    /// instructions per range.
    #[test]
    fn port_ranges_exact_within_budget() {
        for n in [1, 2, 17, 60, 120] {
            let ls = doors(n);
            let c = compile(LinkType::Ethernet, &ls).unwrap();
            assert_eq!(c.widening, None, "{n} doors");
            let len = c.program.insns().len();
            assert!(len <= 60 + 5 * 3 * usize::from(n), "{n} doors: {len}");
            let mut want: Vec<u16> = ls.iter().map(|l| l.port).collect();
            want.sort_unstable();
            let (v4, v6) = passed(&c.program);
            assert_eq!(v4, want, "{n} doors");
            assert_eq!(v6, want, "{n} doors");
            // The flags are still checked.
            assert_eq!(c.program.run(&syn_to(want[0], TcpFlags::ACK)), 0);
        }
        // Adjacent and overlapping ports make one range.
        let ls: Vec<Listen> = (7000..7300)
            .map(|p| Listen::new(Step::udp(p), FlagFilter::ANY, None))
            .collect();
        let c = compile(LinkType::Ethernet, &ls).unwrap();
        assert_eq!(c.widening, None);
        assert!(c.program.insns().len() < 60, "{}", c.program.insns().len());
    }

    /// Past the budget the closest ranges merge: the program passes a
    /// superset (never accept-all, never a dropped knock), says so, and
    /// keeps ports far from every knock port out.
    #[test]
    fn many_ranges_widen_within_budget_and_say_so() {
        for (n, budget) in [(400, DEFAULT_BUDGET), (120, 256), (400, MIN_BUDGET)] {
            let ls = doors(n);
            let c = compile_within(LinkType::Ethernet, &ls, budget).unwrap();
            let w = c
                .widening
                .unwrap_or_else(|| panic!("{n} doors in {budget}"));
            assert!(c.program.insns().len() <= budget, "{n} {budget}");
            assert_eq!(w.exact_ranges, 3 * usize::from(n));
            assert!(w.ranges < w.exact_ranges && w.ranges >= 3, "{w:?}");
            assert!(!w.any_destination && !w.any_flags, "{w:?}");
            let (v4, v6) = passed(&c.program);
            assert_eq!(v4, v6);
            for l in &ls {
                assert!(
                    v4.binary_search(&l.port).is_ok(),
                    "dropped knock {}",
                    l.port
                );
            }
            assert_eq!(v4.len() as u32, w.extra_ports + 3 * u32::from(n), "{w:?}");
            // Nothing below the first, between the blocks, or above the last.
            for p in [0, 5000, 9999, 15_000, 25_000, 35_000, 65_535] {
                assert!(v4.binary_search(&p).is_err(), "{n} {budget}: passes {p}");
            }
            assert_eq!(c.program.run(&syn_to(10_000, TcpFlags::ACK)), 0);
            assert!(w.to_string().contains("widened"), "{w}");
        }
    }

    /// Too many targets to check: the program drops the targets (then the
    /// flags) rather than become accept-all.
    #[test]
    fn targets_then_flags_give_way_last() {
        let ls: Vec<Listen> = (0..600u16)
            .map(|i| {
                let dst = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, i);
                Listen::new(Step::tcp(7000 + 3 * i), syn_not_ack(), Some(dst.into()))
            })
            .collect();
        let c = compile(LinkType::Ethernet, &ls).unwrap();
        let w = c.widening.unwrap();
        assert!(w.any_destination && !w.any_flags, "{w:?}");
        assert!(c.program.insns().len() <= DEFAULT_BUDGET);
        assert_ne!(c.program.run(&syn6_to(7000)), 0);
        assert_eq!(c.program.run(&syn6_to(6999)), 0);
        // Flag groups: SYN-only and ACK-only ports, many of each.
        let ls: Vec<Listen> = (0..2000u16)
            .map(|i| {
                let f = if i % 2 == 0 {
                    syn_not_ack()
                } else {
                    FlagFilter {
                        set: TcpFlags::ACK,
                        clear: TcpFlags::EMPTY,
                    }
                };
                Listen::new(Step::tcp(1000 + 11 * i), f, None)
            })
            .collect();
        let c = compile_within(LinkType::Ethernet, &ls, MIN_BUDGET).unwrap();
        assert!(c.program.insns().len() <= MIN_BUDGET);
        for l in &ls {
            let f = if l.flags_set.contains(TcpFlags::SYN) {
                TcpFlags::SYN
            } else {
                TcpFlags::ACK
            };
            assert_ne!(c.program.run(&syn_to(l.port, f)), 0, "{l:?}");
        }
        assert_eq!(c.program.run(&syn_to(999, TcpFlags::SYN)), 0);
    }

    /// Jumps past the 8-bit reach of a conditional jump go through `ja`.
    #[test]
    fn far_jumps_are_relaxed() {
        let mut asm = Asm::default();
        let far = asm.label();
        asm.stmt(LD | B | ABS, 0);
        asm.jump(JEQ, 1, Tgt::To(far), Tgt::Next);
        for _ in 0..300 {
            asm.stmt(ALU | AND | K, 0xff);
        }
        asm.ret(7);
        asm.here(far);
        asm.ret(9);
        let p = asm.finish().unwrap();
        assert_eq!(p.insns().len(), 1 + 2 + 300 + 2);
        assert_eq!(p.run(&[1]), 9);
        assert_eq!(p.run(&[2]), 7);
    }

    #[test]
    fn ddd_and_expression_render() {
        let prog = Program::drop_all();
        assert_eq!(prog.to_ddd(), "1\n6 0 0 0\n");
        let e = tcpdump_expression(&listen()[..1]);
        assert!(
            e.ends_with(
                "(tcp dst port 7000 and ((ip and tcp[13] & 0x12 = 0x02) or \
                 (ip6 and ip6[53] & 0x12 = 0x02)) and dst host 198.18.0.1)"
            ),
            "{e}"
        );
    }
}
