//! Frame builders for tests, benches and fuzz seeds.
//!
//! Small functions that build well-formed headers byte by byte, so fixtures
//! read as what they are (`ethernet(&[], ETH_IPV4, &ipv4(..., &tcp(...)))`)
//! and can then be damaged on purpose. IPv4 header checksums are filled in;
//! TCP and UDP checksums are left zero (no parser here checks them).

use std::net::{Ipv4Addr, Ipv6Addr};

use knock_core::TcpFlags;

/// EtherType of IPv4.
pub const ETH_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_IPV6: u16 = 0x86dd;
/// TPID of an 802.1Q tag.
pub const TPID_8021Q: u16 = 0x8100;
/// TPID of an 802.1ad (QinQ service) tag.
pub const TPID_8021AD: u16 = 0x88a8;

/// Source MAC used by the builders (locally administered).
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
/// Destination MAC used by the builders (locally administered).
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

/// A 20-byte TCP header with no options.
pub fn tcp(src_port: u16, dst_port: u16, flags: TcpFlags) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&src_port.to_be_bytes());
    h[2..4].copy_from_slice(&dst_port.to_be_bytes());
    h[4..8].copy_from_slice(&1u32.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags.bits();
    h[14..16].copy_from_slice(&64240u16.to_be_bytes());
    h
}

/// A UDP header followed by `data`.
pub fn udp(src_port: u16, dst_port: u16, data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + data.len()).unwrap_or(u16::MAX);
    let mut h = Vec::with_capacity(8 + data.len());
    h.extend_from_slice(&src_port.to_be_bytes());
    h.extend_from_slice(&dst_port.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(data);
    h
}

/// Fragment fields of an IPv4 header: the offset in 8-byte units and the
/// more-fragments flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frag {
    /// Fragment offset in 8-byte units.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
}

/// An IPv4 packet: header with `options` (padded to 4 bytes), then `payload`.
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    options: &[u8],
    frag: Frag,
    payload: &[u8],
) -> Vec<u8> {
    let olen = options.len().div_ceil(4) * 4;
    let hlen = 20 + olen;
    let total = u16::try_from(hlen + payload.len()).unwrap_or(u16::MAX);
    let mut p = vec![0u8; hlen];
    p[0] = 0x40 | ((hlen / 4) as u8 & 0x0f);
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    let ff = (frag.offset & 0x1fff) | if frag.more { 0x2000 } else { 0 };
    p[6..8].copy_from_slice(&ff.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..20 + options.len()].copy_from_slice(options);
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 extension header for [`ipv6`]: its protocol number and its body
/// after the two-byte (next header, length) prefix, which [`ipv6`] fills in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext {
    /// Protocol number: 0 hop-by-hop, 43 routing, 44 fragment, 51 AH, 60 dest opts.
    pub kind: u8,
    /// The bytes after the first two; padded with zeros to the header's unit.
    pub body: Vec<u8>,
}

impl Ext {
    /// A hop-by-hop, routing or destination-options header of `units` * 8 bytes.
    pub fn opts(kind: u8, units: u8) -> Ext {
        Ext {
            kind,
            body: vec![0; usize::from(units) * 8 + 6],
        }
    }

    /// A fragment header: offset in 8-byte units, more-fragments flag.
    pub fn fragment(offset: u16, more: bool) -> Ext {
        let v = (offset << 3) | u16::from(more);
        let mut body = vec![0u8; 6];
        body[0..2].copy_from_slice(&v.to_be_bytes());
        body[2..6].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        Ext { kind: 44, body }
    }

    /// An authentication header with `icv_words` 32-bit words of ICV.
    pub fn ah(icv_words: u8) -> Ext {
        Ext {
            kind: 51,
            body: vec![0; 10 + usize::from(icv_words) * 4],
        }
    }
}

/// An IPv6 packet with the given extension headers, then `proto` and `payload`.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, exts: &[Ext], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(proto, |n| n.kind);
        let len = 2 + e.body.len();
        let lenfield = if e.kind == 51 {
            (len / 4).saturating_sub(2)
        } else {
            (len / 8).saturating_sub(1)
        };
        body.push(next);
        body.push(u8::try_from(lenfield).unwrap_or(u8::MAX));
        body.extend_from_slice(&e.body);
    }
    body.extend_from_slice(payload);
    let first = exts.first().map_or(proto, |e| e.kind);
    let plen = u16::try_from(body.len()).unwrap_or(u16::MAX);
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&plen.to_be_bytes());
    p[6] = first;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p.extend_from_slice(&body);
    p
}

/// An Ethernet frame with VLAN tags `(tpid, vid)` (outermost first).
pub fn ethernet(vlans: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * vlans.len() + payload.len());
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    for &(tpid, vid) in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A Linux cooked v1 (SLL) frame as the `any` device records it.
pub fn sll(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(16 + payload.len());
    f.extend_from_slice(&0u16.to_be_bytes()); // PACKET_HOST
    f.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
    f.extend_from_slice(&6u16.to_be_bytes());
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&protocol.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A Linux cooked v2 (SLL2) frame.
pub fn sll2(protocol: u16, ifindex: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(20 + payload.len());
    f.extend_from_slice(&protocol.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&ifindex.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
    f.push(0); // PACKET_HOST
    f.push(6);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = match c {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
