//! Classic BPF programs generated from a listen set.
//!
//! [`compile`] turns the matcher's [`Listen`] entries into a program for
//! `SO_ATTACH_FILTER`. It accepts a frame when it is:
//!
//! * IPv4, not a fragment other than the first, TCP or UDP, and matches an
//!   entry: destination port (any port for an `any_port` entry, a strict
//!   door's), TCP flags (`flags & (set|clear) == set`) and
//!   destination address when the entry has one. The transport header is
//!   found through the IHL (`ldxb 4*([L]&0xf)`), so IP options are fine;
//! * IPv6 with TCP or UDP right after the fixed header, matching an entry the
//!   same way;
//! * something the program cannot decide, passed up for [`crate::parse`]:
//!   IPv4 non-first fragments, IPv6 whose next header is an extension header
//!   (hop-by-hop, routing, fragment, AH, destination options, mobility, HIP,
//!   shim6) not followed directly by ICMPv6 or no-next-header, and Ethernet frames that still carry a VLAN tag in their data
//!   (the kernel strips the outer tag before taps see a frame, so in-data
//!   tags are the inner tags of stacked VLANs).
//!
//! Everything else (other ports, wrong flags, other addresses, ARP, ICMP,
//! frames too short for the fields the program reads) is dropped in the
//! kernel. [`tcpdump_expression`] gives the equivalent `tcpdump` filter, and
//! the namespace tests check both accept the same packets.
//!
//! [`Program::run`] is an interpreter of the instructions used here, so unit
//! tests and the fuzz target can check the program against [`crate::parse`]
//! without a kernel.

use std::fmt::Write as _;
use std::net::IpAddr;

use knock_core::{Listen, Proto};

use crate::parse::{ETH_IPV4, ETH_IPV6, ETH_VLAN, IPPROTO_TCP, IPPROTO_UDP};
use crate::{CaptureError, LinkType};

/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;
/// What an accepting program returns: the number of bytes to keep.
pub const ACCEPT: u32 = 0x0004_0000;

/// IPv6 next-header values the program passes up to user space (unless
/// the header after them is one of [`IPV6_NEVER_KNOCK`]).
pub const IPV6_EXTENSION_HEADERS: [u8; 8] = [0, 43, 44, 51, 60, 135, 139, 140];
/// Next headers after a first extension header that end the chain without
/// TCP or UDP: ICMPv6 (58) and no next header (59).
pub const IPV6_NEVER_KNOCK: [u8; 2] = [58, 59];

// Opcode parts (linux/filter.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MSH: u16 = 0xa0;
const AND: u16 = 0x50;
const RSH: u16 = 0x70;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JSET: u16 = 0x40;
const K: u16 = 0x00;

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

    /// Runs the program on `pkt` as the kernel would and returns its verdict
    /// (0: drop). Loads past the end of the packet drop it, as in the kernel.
    /// Supports the instructions [`compile`] emits; anything else drops.
    pub fn run(&self, pkt: &[u8]) -> u32 {
        let (mut a, mut x): (u32, u32) = (0, 0);
        let mut pc = 0usize;
        let load = |off: u64, size: usize| -> Option<u32> {
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
                        IND => u64::from(x) + u64::from(i.k),
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

#[derive(Clone, Copy, Debug)]
enum Tgt {
    Next,
    To(Label),
}

#[derive(Clone, Copy, Debug)]
enum Item {
    Stmt(u16, u32),
    Jump(u16, u32, Tgt, Tgt),
    Ja(Label),
    Here(Label),
}

/// A tiny assembler with forward labels.
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
        self.items.push(Item::Jump(code, k, t, f));
    }
    fn ret(&mut self, k: u32) {
        self.stmt(RET | K, k);
    }
    /// `if A == k goto far` (any distance).
    fn jeq_far(&mut self, k: u32, far: Label) {
        let skip = self.label();
        self.jump(JMP | JEQ | K, k, Tgt::Next, Tgt::To(skip));
        self.items.push(Item::Ja(far));
        self.here(skip);
    }
    /// `if A & k != 0 return ACCEPT`.
    fn accept_if(&mut self, code: u16, k: u32) {
        let skip = self.label();
        self.jump(JMP | code | K, k, Tgt::Next, Tgt::To(skip));
        self.ret(ACCEPT);
        self.here(skip);
    }

    fn finish(self) -> Result<Program, CaptureError> {
        let mut pos = vec![0usize; self.labels];
        let mut n = 0usize;
        for it in &self.items {
            match it {
                Item::Here(l) => pos[l.0] = n,
                _ => n += 1,
            }
        }
        if n > MAX_INSNS {
            return Err(CaptureError::FilterTooLong(n));
        }
        let mut insns = Vec::with_capacity(n);
        for it in &self.items {
            let at = insns.len();
            let off = |t: Tgt| -> Result<u8, CaptureError> {
                match t {
                    Tgt::Next => Ok(0),
                    Tgt::To(l) => pos[l.0]
                        .checked_sub(at + 1)
                        .and_then(|d| u8::try_from(d).ok())
                        .ok_or(CaptureError::FilterTooLong(n)),
                }
            };
            match *it {
                Item::Here(_) => {}
                Item::Stmt(code, k) => insns.push(Insn {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Item::Jump(code, k, t, f) => insns.push(Insn {
                    code,
                    jt: off(t)?,
                    jf: off(f)?,
                    k,
                }),
                Item::Ja(l) => {
                    let d = pos[l.0]
                        .checked_sub(at + 1)
                        .ok_or(CaptureError::FilterTooLong(n))?;
                    insns.push(Insn {
                        code: JMP | JA,
                        jt: 0,
                        jf: 0,
                        k: d as u32,
                    })
                }
            }
        }
        Ok(Program { insns })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// Emits the entry checks of one (family, protocol) section, then `ret #0`.
fn section(asm: &mut Asm, fam: Family, l: u32, entries: &[&Listen]) {
    if fam == Family::V4 {
        // X = IPv4 header length; the transport header is at [x + l].
        asm.stmt(LDX | B | MSH, l);
    }
    for e in entries {
        let next = asm.label();
        let fail = Tgt::To(next);
        // An `any_port` entry (a strict door) skips the port check.
        if !e.any_port {
            match fam {
                Family::V4 => asm.stmt(LD | H | IND, l + 2),
                Family::V6 => asm.stmt(LD | H | ABS, l + 40 + 2),
            }
            asm.jump(JMP | JEQ | K, u32::from(e.port), Tgt::Next, fail);
        }
        if e.proto == Proto::Tcp {
            let mask = e.flags_set.bits() | e.flags_clear.bits();
            let want = e.flags_set.bits() & !e.flags_clear.bits();
            if mask != 0 {
                match fam {
                    Family::V4 => asm.stmt(LD | B | IND, l + 13),
                    Family::V6 => asm.stmt(LD | B | ABS, l + 40 + 13),
                }
                asm.stmt(ALU | AND | K, u32::from(mask));
                asm.jump(JMP | JEQ | K, u32::from(want), Tgt::Next, fail);
            }
        }
        match e.dst {
            Some(IpAddr::V4(a)) => {
                asm.stmt(LD | W | ABS, l + 16);
                asm.jump(JMP | JEQ | K, u32::from(a), Tgt::Next, fail);
            }
            Some(IpAddr::V6(a)) => {
                for (i, w) in a.octets().chunks_exact(4).enumerate() {
                    let word = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
                    asm.stmt(LD | W | ABS, l + 24 + 4 * i as u32);
                    asm.jump(JMP | JEQ | K, word, Tgt::Next, fail);
                }
            }
            None => {}
        }
        asm.ret(ACCEPT);
        asm.here(next);
    }
    asm.ret(0);
}

fn usable(e: &Listen, fam: Family, proto: Proto) -> bool {
    if e.proto != proto {
        return false;
    }
    // An entry whose flags must be both set and clear can never match.
    if e.flags_set.bits() & e.flags_clear.bits() != 0 {
        return false;
    }
    match e.dst {
        None => true,
        Some(IpAddr::V4(_)) => fam == Family::V4,
        Some(IpAddr::V6(_)) => fam == Family::V6,
    }
}

/// Compiles the filter for a socket that sees frames of link type `link`.
///
/// Cooked (SLL, SLL2) captures are not produced by sockets here; for them
/// the program accepts everything. Fails only when the program would exceed
/// [`MAX_INSNS`] (about 400 listen entries); callers may then fall back to
/// [`Program::accept_all`] and filter in user space.
pub fn compile(link: LinkType, listen: &[Listen]) -> Result<Program, CaptureError> {
    let l: u32 = match link {
        LinkType::Ethernet => 14,
        LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => 0,
        LinkType::LinuxSll | LinkType::LinuxSll2 => return Ok(Program::accept_all()),
    };
    let mut asm = Asm::default();
    let v4 = asm.label();
    let v6 = asm.label();
    let want_v4 = link != LinkType::Ipv6;
    let want_v6 = link != LinkType::Ipv4;
    match link {
        LinkType::Ethernet => {
            asm.stmt(LD | H | ABS, 12);
            asm.jeq_far(u32::from(ETH_IPV4), v4);
            asm.jeq_far(u32::from(ETH_IPV6), v6);
            for t in ETH_VLAN {
                asm.accept_if(JEQ, u32::from(t));
            }
            asm.ret(0);
        }
        _ => {
            // No link header: dispatch on the version nibble (a raw-IPv4
            // link still drops IPv6 in the section below, and vice versa).
            asm.stmt(LD | B | ABS, 0);
            asm.stmt(ALU | RSH | K, 4);
            asm.jeq_far(4, v4);
            asm.jeq_far(6, v6);
            asm.ret(0);
        }
    }
    for (fam, label, wanted) in [(Family::V4, v4, want_v4), (Family::V6, v6, want_v6)] {
        asm.here(label);
        if !wanted {
            asm.ret(0);
            continue;
        }
        let tcp: Vec<&Listen> = listen
            .iter()
            .filter(|e| usable(e, fam, Proto::Tcp))
            .collect();
        let udp: Vec<&Listen> = listen
            .iter()
            .filter(|e| usable(e, fam, Proto::Udp))
            .collect();
        let (tcp_l, udp_l, drop_l) = (asm.label(), asm.label(), asm.label());
        match fam {
            Family::V4 => {
                // Non-first fragments have no ports: user space counts them.
                asm.stmt(LD | H | ABS, l + 6);
                asm.accept_if(JSET, 0x1fff);
                asm.stmt(LD | B | ABS, l + 9);
            }
            Family::V6 => asm.stmt(LD | B | ABS, l + 6),
        }
        if !tcp.is_empty() {
            asm.jeq_far(u32::from(IPPROTO_TCP), tcp_l);
        }
        if !udp.is_empty() {
            asm.jeq_far(u32::from(IPPROTO_UDP), udp_l);
        }
        if fam == Family::V6 {
            let ext = asm.label();
            for eh in IPV6_EXTENSION_HEADERS {
                asm.jeq_far(u32::from(eh), ext);
            }
            asm.ret(0);
            // An extension header: every kind has its next header in its
            // first byte. ICMPv6 or no-next-header right after it (MLD
            // reports, ND with options) cannot be a knock; pass the rest up.
            asm.here(ext);
            asm.stmt(LD | B | ABS, l + 40);
            for nh in IPV6_NEVER_KNOCK {
                asm.jump(JMP | JEQ | K, u32::from(nh), Tgt::To(drop_l), Tgt::Next);
            }
            asm.ret(ACCEPT);
            asm.here(drop_l);
        }
        asm.ret(0);
        for (lab, entries) in [(tcp_l, tcp), (udp_l, udp)] {
            asm.here(lab);
            if !entries.is_empty() {
                section(&mut asm, fam, l, &entries);
            }
        }
    }
    asm.finish()
}

/// The `tcpdump` expression that accepts the same IPv4/IPv6 packets as
/// [`compile`]'s program (except in-data VLAN tags, which `tcpdump` on Linux
/// handles through the kernel's VLAN metadata instead).
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
        let prog = compile(LinkType::Ethernet, &ls).unwrap();
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
            let prog = compile(link, ls).unwrap();
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
        let p4 = compile(LinkType::Ipv4, &ls).unwrap();
        let p6 = compile(LinkType::Ipv6, &ls).unwrap();
        let syn4 = syn_7000();
        let syn6 = craft::ipv6(C6, S6, &[], 6, &craft::tcp(1, 7000, TcpFlags::SYN));
        assert_eq!(p4.run(&syn4), ACCEPT);
        assert_eq!(p6.run(&syn6), ACCEPT);
        assert_eq!(p6.run(&syn4), 0);
    }

    #[test]
    fn empty_set_drops_all_but_undecidable() {
        let prog = compile(LinkType::Ethernet, &[]).unwrap();
        let syn = syn_7000();
        assert_eq!(prog.run(&craft::ethernet(&[], craft::ETH_IPV4, &syn)), 0);
        assert_eq!(prog.run(&[]), 0);
        assert_eq!(prog.run(&craft::ethernet(&[], 0x0806, &[0; 28])), 0);
        // Stacked VLAN leftovers go up.
        assert_eq!(
            prog.run(&craft::ethernet(&[(0x8100, 5)], craft::ETH_IPV4, &syn)),
            ACCEPT
        );
    }

    #[test]
    fn short_frames_are_dropped_not_misread() {
        let prog = compile(LinkType::Ethernet, &listen()).unwrap();
        let syn = syn_7000();
        let f = craft::ethernet(&[], craft::ETH_IPV4, &syn);
        // The last byte the program reads is the TCP flag byte (14 + 20 + 13).
        for n in 0..48 {
            assert_eq!(prog.run(&f[..n]), 0, "accepted {n} bytes");
        }
        assert_eq!(prog.run(&f), ACCEPT);
    }

    #[test]
    fn too_many_entries_is_an_error_not_a_bad_program() {
        let many: Vec<Listen> = (1..=2000)
            .map(|p| Listen::new(Step::tcp(p), syn_not_ack(), Some(S6.into())))
            .collect();
        assert!(matches!(
            compile(LinkType::Ethernet, &many),
            Err(CaptureError::FilterTooLong(_))
        ));
        let some: Vec<Listen> = many.into_iter().take(100).collect();
        let prog = compile(LinkType::Ethernet, &some).unwrap();
        assert!(prog.insns().len() <= MAX_INSNS);
        let syn = craft::ipv6(C6, S6, &[], 6, &craft::tcp(1, 100, TcpFlags::SYN));
        assert_eq!(
            prog.run(&craft::ethernet(&[], craft::ETH_IPV6, &syn)),
            ACCEPT
        );
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
