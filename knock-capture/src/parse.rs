//! Bytes to [`Event`]: the one parsing function every source goes through.
//!
//! [`parse`] takes a frame as captured on a link of a given [`LinkType`] and
//! returns the knock it carries, or a [`Reject`] saying why it carries none.
//! Every header is read through a `pnet_packet` view whose constructor checks
//! the minimum length, and every length field is checked against the bytes
//! actually present before it is used, so no input can make it panic (the
//! fuzz target and the garbage tests hold it to that).

use std::net::IpAddr;

use knock_core::{Event, TcpFlags, Timestamp};
use pnet_packet::ethernet::EthernetPacket;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::sll::SLLPacket;
use pnet_packet::sll2::SLL2Packet;
use pnet_packet::tcp::TcpPacket;
use pnet_packet::udp::UdpPacket;
use pnet_packet::vlan::VlanPacket;

/// EtherType of IPv4.
pub(crate) const ETH_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub(crate) const ETH_IPV6: u16 = 0x86dd;
/// EtherTypes of a VLAN tag: 802.1Q, 802.1ad (QinQ) and the old pre-standard QinQ.
pub(crate) const ETH_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// IP protocol number of TCP.
pub(crate) const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub(crate) const IPPROTO_UDP: u8 = 17;

/// Length of a Linux cooked v1 header.
const SLL_LEN: usize = 16;
/// Length of a Linux cooked v2 header.
const SLL2_LEN: usize = 20;

/// How many VLAN tags a frame may carry before it is rejected.
pub const MAX_VLAN_TAGS: usize = 4;
/// How many IPv6 extension headers are walked before the packet is rejected.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// What the captured bytes start with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LinkType {
    /// An Ethernet header (`LINKTYPE_ETHERNET`, ARPHRD_ETHER and loopback),
    /// possibly followed by VLAN tags.
    Ethernet,
    /// Linux cooked capture v1 (`LINKTYPE_LINUX_SLL`, 16-byte header).
    LinuxSll,
    /// Linux cooked capture v2 (`LINKTYPE_LINUX_SLL2`, 20-byte header).
    LinuxSll2,
    /// No link header: IPv4 or IPv6, told apart by the version nibble (tun,
    /// WireGuard, ppp; `LINKTYPE_RAW`).
    RawIp,
    /// No link header, IPv4 only (`LINKTYPE_IPV4`).
    Ipv4,
    /// No link header, IPv6 only (`LINKTYPE_IPV6`).
    Ipv6,
}

impl LinkType {
    /// Every link type, for tests and fuzzers.
    pub const ALL: [LinkType; 6] = [
        LinkType::Ethernet,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::RawIp,
        LinkType::Ipv4,
        LinkType::Ipv6,
    ];

    /// The link type of a `LINKTYPE_*` number from a pcap or pcapng file.
    pub fn from_linktype(n: u32) -> Option<LinkType> {
        match n {
            1 => Some(LinkType::Ethernet),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            // LINKTYPE_RAW, and DLT_RAW's platform-dependent values 12 and 14.
            101 | 12 | 14 => Some(LinkType::RawIp),
            228 => Some(LinkType::Ipv4),
            229 => Some(LinkType::Ipv6),
            _ => None,
        }
    }

    /// The `LINKTYPE_*` number to write into a capture file.
    pub fn linktype(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::LinuxSll => 113,
            LinkType::LinuxSll2 => 276,
            LinkType::RawIp => 101,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
        }
    }
}

/// The header a [`Reject::Truncated`] packet ended in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// The link-layer header (Ethernet, SLL, SLL2).
    Link,
    /// A VLAN tag.
    Vlan,
    /// The IPv4 header or the bytes its lengths promise.
    Ipv4,
    /// The IPv6 header or the bytes its payload length promises.
    Ipv6,
    /// An IPv6 extension header.
    Ipv6Extension,
    /// The TCP header.
    Tcp,
    /// The UDP header.
    Udp,
}

/// Why a frame carries no knock. Every frame that is not an [`Event`] gets
/// exactly one of these, and sources count them by [`Reject::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// The frame ends inside a header, or before the end its lengths promise.
    #[error("truncated {0:?} header")]
    Truncated(Layer),
    /// The link layer carries neither IPv4 nor IPv6 (ARP, LLDP, ...).
    #[error("not an IP packet")]
    NotIp,
    /// More than [`MAX_VLAN_TAGS`] VLAN tags.
    #[error("too many VLAN tags")]
    TooManyVlanTags,
    /// The IP version nibble disagrees with the link layer (or is neither 4 nor 6).
    #[error("bad IP version")]
    BadIpVersion,
    /// IPv4 IHL below 5, or total length below the header length.
    #[error("bad IPv4 header or total length")]
    BadIpv4Length,
    /// A fragment other than the first: it has no ports.
    #[error("non-first IP fragment")]
    Fragment,
    /// More than [`MAX_EXTENSION_HEADERS`] IPv6 extension headers.
    #[error("too many IPv6 extension headers")]
    TooManyExtensionHeaders,
    /// Neither TCP nor UDP (ICMP, ESP, no next header, ...).
    #[error("not TCP or UDP")]
    NotTcpOrUdp,
    /// TCP data offset below 5.
    #[error("bad TCP data offset")]
    BadTcpOffset,
    /// UDP length below 8.
    #[error("bad UDP length")]
    BadUdpLength,
}

impl Reject {
    /// How many distinct [`Reject::index`] values there are.
    pub const COUNT: usize = 16;

    /// A dense index (below [`Reject::COUNT`]) for counting rejects by reason.
    pub fn index(self) -> usize {
        match self {
            Reject::Truncated(l) => match l {
                Layer::Link => 0,
                Layer::Vlan => 1,
                Layer::Ipv4 => 2,
                Layer::Ipv6 => 3,
                Layer::Ipv6Extension => 4,
                Layer::Tcp => 5,
                Layer::Udp => 6,
            },
            Reject::NotIp => 7,
            Reject::TooManyVlanTags => 8,
            Reject::BadIpVersion => 9,
            Reject::BadIpv4Length => 10,
            Reject::Fragment => 11,
            Reject::TooManyExtensionHeaders => 12,
            Reject::NotTcpOrUdp => 13,
            Reject::BadTcpOffset => 14,
            Reject::BadUdpLength => 15,
        }
    }

    /// The reject with this [`Reject::index`].
    pub fn from_index(i: usize) -> Option<Reject> {
        Some(match i {
            0 => Reject::Truncated(Layer::Link),
            1 => Reject::Truncated(Layer::Vlan),
            2 => Reject::Truncated(Layer::Ipv4),
            3 => Reject::Truncated(Layer::Ipv6),
            4 => Reject::Truncated(Layer::Ipv6Extension),
            5 => Reject::Truncated(Layer::Tcp),
            6 => Reject::Truncated(Layer::Udp),
            7 => Reject::NotIp,
            8 => Reject::TooManyVlanTags,
            9 => Reject::BadIpVersion,
            10 => Reject::BadIpv4Length,
            11 => Reject::Fragment,
            12 => Reject::TooManyExtensionHeaders,
            13 => Reject::NotTcpOrUdp,
            14 => Reject::BadTcpOffset,
            15 => Reject::BadUdpLength,
            _ => return None,
        })
    }
}

/// Turns one captured frame into the knock it carries.
///
/// `time` becomes [`Event::time`]. Never panics, whatever `bytes` hold.
///
/// ```
/// use knock_capture::{parse, LinkType, Reject};
/// use knock_core::{Proto, Timestamp};
/// // A raw IPv4 UDP datagram 198.18.0.2 -> 198.18.0.1, port 9000.
/// let pkt = [
///     0x45, 0, 0, 29, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1,
///     0xc3, 0x50, 0x23, 0x28, 0, 9, 0, 0, b'x',
/// ];
/// let ev = parse(LinkType::RawIp, &pkt, Timestamp::ZERO).unwrap();
/// assert_eq!((ev.proto, ev.dst_port), (Proto::Udp, 9000));
/// assert_eq!(parse(LinkType::RawIp, &pkt[..10], Timestamp::ZERO).unwrap_err().to_string(),
///            "truncated Ipv4 header");
/// # let _ = Reject::Fragment;
/// ```
pub fn parse(link: LinkType, bytes: &[u8], time: Timestamp) -> Result<Event, Reject> {
    parse_with_payload(link, bytes, time).map(|(e, _)| e)
}

/// [`parse`], and the transport payload: a UDP datagram's data (what a
/// Single Packet Authorization packet is), or what follows the TCP header.
/// For the first fragment of a fragmented datagram, what it carries.
pub fn parse_with_payload(
    link: LinkType,
    bytes: &[u8],
    time: Timestamp,
) -> Result<(Event, &[u8]), Reject> {
    match link {
        LinkType::Ethernet => {
            let eth = EthernetPacket::new(bytes).ok_or(Reject::Truncated(Layer::Link))?;
            let payload = bytes
                .get(EthernetPacket::minimum_packet_size()..)
                .unwrap_or(&[]);
            ethertype(eth.get_ethertype().0, payload, time)
        }
        LinkType::LinuxSll => {
            // pnet 0.35's SLL view miscomputes its minimum size and panics on
            // short input: check the fixed 16-byte header ourselves first.
            if bytes.len() < SLL_LEN {
                return Err(Reject::Truncated(Layer::Link));
            }
            let sll = SLLPacket::new(bytes).ok_or(Reject::Truncated(Layer::Link))?;
            ethertype(
                sll.get_protocol().0,
                bytes.get(SLL_LEN..).unwrap_or(&[]),
                time,
            )
        }
        LinkType::LinuxSll2 => {
            if bytes.len() < SLL2_LEN {
                return Err(Reject::Truncated(Layer::Link));
            }
            let sll = SLL2Packet::new(bytes).ok_or(Reject::Truncated(Layer::Link))?;
            ethertype(
                sll.get_protocol_type().0,
                bytes.get(SLL2_LEN..).unwrap_or(&[]),
                time,
            )
        }
        LinkType::RawIp => raw_ip(bytes, time),
        LinkType::Ipv4 => ipv4(bytes, time),
        LinkType::Ipv6 => ipv6(bytes, time),
    }
}

/// Parses a packet with no link header, by its version nibble.
pub(crate) fn raw_ip(bytes: &[u8], time: Timestamp) -> Result<(Event, &[u8]), Reject> {
    match bytes.first().map(|b| b >> 4) {
        None => Err(Reject::Truncated(Layer::Ipv4)),
        Some(4) => ipv4(bytes, time),
        Some(6) => ipv6(bytes, time),
        Some(_) => Err(Reject::BadIpVersion),
    }
}

/// Follows VLAN tags to IPv4 or IPv6.
fn ethertype(mut ty: u16, mut payload: &[u8], time: Timestamp) -> Result<(Event, &[u8]), Reject> {
    let mut tags = 0;
    while ETH_VLAN.contains(&ty) {
        tags += 1;
        if tags > MAX_VLAN_TAGS {
            return Err(Reject::TooManyVlanTags);
        }
        let vlan = VlanPacket::new(payload).ok_or(Reject::Truncated(Layer::Vlan))?;
        ty = vlan.get_ethertype().0;
        // `payload()` of a pnet view borrows the view; re-slice the original
        // buffer instead so the loop can go on.
        payload = payload
            .get(VlanPacket::minimum_packet_size()..)
            .unwrap_or(&[]);
    }
    match ty {
        ETH_IPV4 => ipv4(payload, time),
        ETH_IPV6 => ipv6(payload, time),
        _ => Err(Reject::NotIp),
    }
}

fn ipv4(bytes: &[u8], time: Timestamp) -> Result<(Event, &[u8]), Reject> {
    let ip = Ipv4Packet::new(bytes).ok_or(Reject::Truncated(Layer::Ipv4))?;
    if ip.get_version() != 4 {
        return Err(Reject::BadIpVersion);
    }
    let hlen = usize::from(ip.get_header_length()) * 4;
    let total = usize::from(ip.get_total_length());
    if hlen < 20 || total < hlen {
        return Err(Reject::BadIpv4Length);
    }
    // Ethernet pads short frames: bytes beyond `total` are padding, not payload.
    let payload = bytes
        .get(hlen..total)
        .ok_or(Reject::Truncated(Layer::Ipv4))?;
    if ip.get_fragment_offset() != 0 {
        return Err(Reject::Fragment);
    }
    let fragmented = ip.get_flags() & pnet_packet::ipv4::Ipv4Flags::MoreFragments != 0;
    let src = IpAddr::V4(ip.get_source());
    let dst = IpAddr::V4(ip.get_destination());
    transport(
        ip.get_next_level_protocol().0,
        payload,
        fragmented,
        src,
        dst,
        time,
    )
}

fn ipv6(bytes: &[u8], time: Timestamp) -> Result<(Event, &[u8]), Reject> {
    let ip = Ipv6Packet::new(bytes).ok_or(Reject::Truncated(Layer::Ipv6))?;
    if ip.get_version() != 6 {
        return Err(Reject::BadIpVersion);
    }
    let plen = usize::from(ip.get_payload_length());
    let mut payload = bytes
        .get(Ipv6Packet::minimum_packet_size()..Ipv6Packet::minimum_packet_size() + plen)
        .ok_or(Reject::Truncated(Layer::Ipv6))?;
    let src = IpAddr::V6(ip.get_source());
    let dst = IpAddr::V6(ip.get_destination());
    let mut next = ip.get_next_header().0;
    let mut fragmented = false;
    for _ in 0..=MAX_EXTENSION_HEADERS {
        let len = match next {
            IPPROTO_TCP | IPPROTO_UDP => {
                return transport(next, payload, fragmented, src, dst, time);
            }
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6:
            // (hdr ext len + 1) * 8 bytes.
            0 | 43 | 60 | 135 | 139 | 140 => {
                let l = payload
                    .get(1)
                    .ok_or(Reject::Truncated(Layer::Ipv6Extension))?;
                (usize::from(*l) + 1) * 8
            }
            // Fragment: 8 bytes; only the first fragment carries the ports.
            44 => {
                let fo = payload
                    .get(2..4)
                    .ok_or(Reject::Truncated(Layer::Ipv6Extension))?;
                if u16::from_be_bytes([fo[0], fo[1]]) & 0xfff8 != 0 {
                    return Err(Reject::Fragment);
                }
                fragmented = true;
                8
            }
            // Authentication header: (payload len + 2) * 4 bytes.
            51 => {
                let l = payload
                    .get(1)
                    .ok_or(Reject::Truncated(Layer::Ipv6Extension))?;
                (usize::from(*l) + 2) * 4
            }
            // ESP (encrypted), no next header, ICMPv6 and everything else.
            _ => return Err(Reject::NotTcpOrUdp),
        };
        let nh = payload
            .first()
            .copied()
            .ok_or(Reject::Truncated(Layer::Ipv6Extension))?;
        payload = payload
            .get(len..)
            .ok_or(Reject::Truncated(Layer::Ipv6Extension))?;
        next = nh;
    }
    Err(Reject::TooManyExtensionHeaders)
}

/// TCP or UDP. `fragmented`: the first fragment of a fragmented packet, so
/// the transport payload (but not the header) may be cut short.
fn transport(
    proto: u8,
    bytes: &[u8],
    fragmented: bool,
    src: IpAddr,
    dst: IpAddr,
    time: Timestamp,
) -> Result<(Event, &[u8]), Reject> {
    match proto {
        IPPROTO_TCP => {
            let tcp = TcpPacket::new(bytes).ok_or(Reject::Truncated(Layer::Tcp))?;
            let off = usize::from(tcp.get_data_offset()) * 4;
            if off < TcpPacket::minimum_packet_size() {
                return Err(Reject::BadTcpOffset);
            }
            if off > bytes.len() {
                return Err(Reject::Truncated(Layer::Tcp));
            }
            let flags = TcpFlags::from_bits(tcp.get_flags());
            let data = bytes.get(off..).unwrap_or(&[]);
            Ok((
                Event::tcp(src, dst, tcp.get_destination(), flags, time),
                data,
            ))
        }
        IPPROTO_UDP => {
            let udp = UdpPacket::new(bytes).ok_or(Reject::Truncated(Layer::Udp))?;
            let len = usize::from(udp.get_length());
            if len < UdpPacket::minimum_packet_size() {
                return Err(Reject::BadUdpLength);
            }
            if !fragmented && len > bytes.len() {
                return Err(Reject::Truncated(Layer::Udp));
            }
            let data = bytes.get(8..len.min(bytes.len())).unwrap_or(&[]);
            Ok((Event::udp(src, dst, udp.get_destination(), time), data))
        }
        _ => Err(Reject::NotTcpOrUdp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::{self, Ext, Frag, ETH_IPV4, ETH_IPV6, TPID_8021AD, TPID_8021Q};
    use knock_core::Proto;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const C4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const S4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const C6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    const S6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const T: Timestamp = Timestamp::from_micros(1_234_567);

    /// A literal Ethernet + IPv4 + TCP SYN frame (as tcpdump -xx shows it), 198.18.0.2:40000 -> 198.18.0.1:7000.
    const SYN_FRAME: [u8; 54] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08,
        0x00, // eth
        0x45, 0x00, 0x00, 0x28, 0x12, 0x34, 0x00, 0x00, 0x40, 0x06, 0x00, 0x00, // ip
        0xc6, 0x12, 0x00, 0x02, 0xc6, 0x12, 0x00, 0x01, // addrs
        0x9c, 0x40, 0x1b, 0x58, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0,
        0, // tcp
    ];

    fn syn4() -> Vec<u8> {
        craft::ipv4(
            C4,
            S4,
            6,
            &[],
            Frag::default(),
            &craft::tcp(40000, 7000, TcpFlags::SYN),
        )
    }
    fn udp4() -> Vec<u8> {
        craft::ipv4(
            C4,
            S4,
            17,
            &[],
            Frag::default(),
            &craft::udp(40000, 9000, b"x"),
        )
    }
    fn syn6() -> Vec<u8> {
        craft::ipv6(C6, S6, &[], 6, &craft::tcp(40000, 7000, TcpFlags::SYN))
    }
    fn udp6() -> Vec<u8> {
        craft::ipv6(C6, S6, &[], 17, &craft::udp(40000, 9000, b"x"))
    }
    fn tcp_ev4() -> Event {
        Event::tcp(C4.into(), S4.into(), 7000, TcpFlags::SYN, T)
    }
    fn tcp_ev6() -> Event {
        Event::tcp(C6.into(), S6.into(), 7000, TcpFlags::SYN, T)
    }

    #[test]
    fn datagram_payload_without_link_padding() {
        let data = b"an SPA packet would be base64";
        let ip4 = craft::ipv4(
            C4,
            S4,
            17,
            &[],
            Frag::default(),
            &craft::udp(40000, 62201, data),
        );
        let ip6 = craft::ipv6(C6, S6, &[], 17, &craft::udp(40000, 62201, data));
        for (ip, et) in [(ip4, ETH_IPV4), (ip6, ETH_IPV6)] {
            let mut frame = craft::ethernet(&[], et, &ip);
            frame.extend_from_slice(&[0; 16]); // trailing link padding
            let (ev, got) = parse_with_payload(LinkType::Ethernet, &frame, T).unwrap();
            assert_eq!(ev.dst_port, 62201);
            assert_eq!(got, data);
            let (_, got) = parse_with_payload(LinkType::RawIp, &ip, T).unwrap();
            assert_eq!(got, data);
        }
        let (_, got) = parse_with_payload(LinkType::Ethernet, &SYN_FRAME, T).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn literal_fixture_and_builder_agree() {
        let mut built = craft::ethernet(&[], ETH_IPV4, &syn4());
        built[24..26].copy_from_slice(&[0, 0]); // the literal has no checksum
        assert_eq!(built, SYN_FRAME);
        assert_eq!(parse(LinkType::Ethernet, &SYN_FRAME, T), Ok(tcp_ev4()));
    }

    #[test]
    fn every_link_type_both_families() {
        for (ip, et, ev) in [(syn4(), ETH_IPV4, tcp_ev4()), (syn6(), ETH_IPV6, tcp_ev6())] {
            assert_eq!(
                parse(LinkType::Ethernet, &craft::ethernet(&[], et, &ip), T),
                Ok(ev)
            );
            assert_eq!(parse(LinkType::LinuxSll, &craft::sll(et, &ip), T), Ok(ev));
            assert_eq!(
                parse(LinkType::LinuxSll2, &craft::sll2(et, 3, &ip), T),
                Ok(ev)
            );
            assert_eq!(parse(LinkType::RawIp, &ip, T), Ok(ev));
        }
        assert_eq!(parse(LinkType::Ipv4, &syn4(), T), Ok(tcp_ev4()));
        assert_eq!(parse(LinkType::Ipv6, &syn6(), T), Ok(tcp_ev6()));
        assert_eq!(parse(LinkType::Ipv4, &syn6(), T), Err(Reject::BadIpVersion));
        assert_eq!(parse(LinkType::Ipv6, &syn4(), T), Err(Reject::BadIpVersion));
        let u = parse(LinkType::RawIp, &udp4(), T).unwrap();
        assert_eq!(
            (u.proto, u.dst_port, u.tcp_flags),
            (Proto::Udp, 9000, TcpFlags::EMPTY)
        );
        let u = parse(LinkType::RawIp, &udp6(), T).unwrap();
        assert_eq!((u.src, u.dst, u.dst_port), (C6.into(), S6.into(), 9000));
    }

    #[test]
    fn vlan_single_and_stacked() {
        for tags in [
            vec![(TPID_8021Q, 100)],
            vec![(TPID_8021AD, 10), (TPID_8021Q, 100)],
            vec![
                (0x9100, 1),
                (TPID_8021AD, 2),
                (TPID_8021Q, 3),
                (TPID_8021Q, 4),
            ],
        ] {
            let f = craft::ethernet(&tags, ETH_IPV6, &syn6());
            assert_eq!(parse(LinkType::Ethernet, &f, T), Ok(tcp_ev6()), "{tags:?}");
        }
        let five = [(TPID_8021Q, 1); 5];
        assert_eq!(
            parse(
                LinkType::Ethernet,
                &craft::ethernet(&five, ETH_IPV4, &syn4()),
                T
            ),
            Err(Reject::TooManyVlanTags)
        );
        let f = craft::ethernet(&[(TPID_8021Q, 1)], ETH_IPV4, &[]);
        assert_eq!(
            parse(LinkType::Ethernet, &f[..16], T),
            Err(Reject::Truncated(Layer::Vlan))
        );
        // VLAN inside cooked captures too.
        let vl = craft::ethernet(&[(TPID_8021Q, 7)], ETH_IPV4, &syn4());
        assert_eq!(
            parse(LinkType::LinuxSll, &craft::sll(TPID_8021Q, &vl[14..]), T),
            Ok(tcp_ev4())
        );
    }

    #[test]
    fn ipv4_options_fragments_and_padding() {
        let opts = [0x94, 0x04, 0, 0, 1, 1, 1, 0]; // router alert, NOPs, EOL
        let ip = craft::ipv4(
            C4,
            S4,
            6,
            &opts,
            Frag::default(),
            &craft::tcp(1, 7000, TcpFlags::SYN),
        );
        assert_eq!(ip[0], 0x47);
        assert_eq!(parse(LinkType::RawIp, &ip, T).map(|e| e.dst_port), Ok(7000));
        // First fragment: ports present, UDP length may exceed the fragment.
        let mut big = craft::udp(1, 9000, &[0; 100]);
        big.truncate(16);
        let first = craft::ipv4(
            C4,
            S4,
            17,
            &[],
            Frag {
                offset: 0,
                more: true,
            },
            &big,
        );
        assert_eq!(
            parse(LinkType::RawIp, &first, T).map(|e| e.dst_port),
            Ok(9000)
        );
        let later = craft::ipv4(
            C4,
            S4,
            17,
            &[],
            Frag {
                offset: 2,
                more: false,
            },
            &big,
        );
        assert_eq!(parse(LinkType::RawIp, &later, T), Err(Reject::Fragment));
        // Ethernet minimum-size padding after the IP packet is ignored.
        let mut f = craft::ethernet(&[], ETH_IPV4, &udp4());
        f.resize(60, 0xa5);
        assert_eq!(
            parse(LinkType::Ethernet, &f, T).map(|e| e.dst_port),
            Ok(9000)
        );
    }

    #[test]
    fn ipv6_extension_chain() {
        let t = craft::tcp(40000, 7000, TcpFlags::SYN);
        for chain in [
            vec![Ext::opts(0, 0)],
            vec![Ext::opts(0, 0), Ext::opts(43, 2), Ext::opts(60, 1)],
            vec![Ext::fragment(0, true)],
            vec![Ext::ah(3)],
            vec![
                Ext::opts(0, 0),
                Ext::ah(1),
                Ext::fragment(0, false),
                Ext::opts(60, 0),
            ],
        ] {
            let ip = craft::ipv6(C6, S6, &chain, 6, &t);
            assert_eq!(parse(LinkType::RawIp, &ip, T), Ok(tcp_ev6()), "{chain:?}");
        }
        let ip = craft::ipv6(C6, S6, &[Ext::fragment(5, false)], 6, &t);
        assert_eq!(parse(LinkType::RawIp, &ip, T), Err(Reject::Fragment));
        let nine = vec![Ext::opts(60, 0); MAX_EXTENSION_HEADERS + 1];
        assert_eq!(
            parse(LinkType::RawIp, &craft::ipv6(C6, S6, &nine, 6, &t), T),
            Err(Reject::TooManyExtensionHeaders)
        );
        let eight = vec![Ext::opts(60, 0); MAX_EXTENSION_HEADERS];
        assert!(parse(LinkType::RawIp, &craft::ipv6(C6, S6, &eight, 6, &t), T).is_ok());
        // ESP, no-next-header and ICMPv6 are not knocks.
        for nh in [50, 59, 58] {
            let ip = craft::ipv6(C6, S6, &[], nh, &t);
            assert_eq!(parse(LinkType::RawIp, &ip, T), Err(Reject::NotTcpOrUdp));
        }
        // An extension header whose length runs past the payload.
        let mut ip = craft::ipv6(C6, S6, &[Ext::opts(60, 0)], 6, &[]);
        ip[41] = 10;
        assert_eq!(
            parse(LinkType::RawIp, &ip, T),
            Err(Reject::Truncated(Layer::Ipv6Extension))
        );
    }

    #[test]
    fn every_reject_reason() {
        let eth = |et, p: &[u8]| craft::ethernet(&[], et, p);
        let mut bad_ihl = syn4();
        bad_ihl[0] = 0x44;
        let mut total_short = syn4();
        total_short[2..4].copy_from_slice(&10u16.to_be_bytes());
        let mut total_long = syn4();
        total_long[2..4].copy_from_slice(&100u16.to_be_bytes());
        let mut ihl_long = syn4();
        ihl_long[0] = 0x4f;
        let mut bad_off = syn4();
        bad_off[20 + 12] = 0x40;
        let mut long_off = syn4();
        long_off[20 + 12] = 0xf0;
        let mut udp_len = udp4();
        udp_len[20 + 4..20 + 6].copy_from_slice(&4u16.to_be_bytes());
        let mut udp_long = udp4();
        udp_long[20 + 4..20 + 6].copy_from_slice(&400u16.to_be_bytes());
        let mut v6_plen = syn6();
        v6_plen[4..6].copy_from_slice(&500u16.to_be_bytes());
        let icmp = craft::ipv4(C4, S4, 1, &[], Frag::default(), &[8, 0, 0, 0]);
        let cases: Vec<(LinkType, Vec<u8>, Reject)> = vec![
            (
                LinkType::Ethernet,
                vec![0; 13],
                Reject::Truncated(Layer::Link),
            ),
            (
                LinkType::LinuxSll,
                vec![0; 15],
                Reject::Truncated(Layer::Link),
            ),
            (
                LinkType::LinuxSll2,
                vec![0; 19],
                Reject::Truncated(Layer::Link),
            ),
            (LinkType::Ethernet, eth(0x0806, &[0; 28]), Reject::NotIp),
            (
                LinkType::LinuxSll,
                craft::sll(0x0806, &[0; 28]),
                Reject::NotIp,
            ),
            (LinkType::RawIp, vec![], Reject::Truncated(Layer::Ipv4)),
            (LinkType::RawIp, vec![0x50; 40], Reject::BadIpVersion),
            (
                LinkType::Ethernet,
                eth(ETH_IPV4, &syn6()),
                Reject::BadIpVersion,
            ),
            (
                LinkType::Ethernet,
                eth(ETH_IPV6, &syn6()[..30]),
                Reject::Truncated(Layer::Ipv6),
            ),
            (
                LinkType::RawIp,
                syn4()[..19].to_vec(),
                Reject::Truncated(Layer::Ipv4),
            ),
            (LinkType::RawIp, bad_ihl, Reject::BadIpv4Length),
            (LinkType::RawIp, total_short, Reject::BadIpv4Length),
            (LinkType::RawIp, total_long, Reject::Truncated(Layer::Ipv4)),
            (LinkType::RawIp, ihl_long, Reject::BadIpv4Length),
            (
                LinkType::RawIp,
                syn6()[..39].to_vec(),
                Reject::Truncated(Layer::Ipv6),
            ),
            (LinkType::RawIp, v6_plen, Reject::Truncated(Layer::Ipv6)),
            (LinkType::RawIp, icmp, Reject::NotTcpOrUdp),
            (LinkType::RawIp, bad_off, Reject::BadTcpOffset),
            (LinkType::RawIp, long_off, Reject::Truncated(Layer::Tcp)),
            (
                LinkType::RawIp,
                craft::ipv4(C4, S4, 6, &[], Frag::default(), &[0; 19]),
                Reject::Truncated(Layer::Tcp),
            ),
            (
                LinkType::RawIp,
                craft::ipv6(C6, S6, &[], 17, &[0; 7]),
                Reject::Truncated(Layer::Udp),
            ),
            (LinkType::RawIp, udp_len, Reject::BadUdpLength),
            (LinkType::RawIp, udp_long, Reject::Truncated(Layer::Udp)),
        ];
        let mut seen = [false; Reject::COUNT];
        for (link, bytes, want) in cases {
            assert_eq!(parse(link, &bytes, T), Err(want), "{link:?} {bytes:02x?}");
            seen[want.index()] = true;
        }
        // The reasons tested elsewhere.
        for r in [
            Reject::Truncated(Layer::Vlan),
            Reject::Truncated(Layer::Ipv6Extension),
            Reject::TooManyVlanTags,
            Reject::Fragment,
            Reject::TooManyExtensionHeaders,
        ] {
            seen[r.index()] = true;
        }
        assert!(seen.iter().all(|&s| s), "untested reasons: {seen:?}");
        for i in 0..Reject::COUNT {
            assert_eq!(Reject::from_index(i).map(Reject::index), Some(i));
        }
        assert_eq!(Reject::from_index(Reject::COUNT), None);
    }

    /// Every prefix and many corruptions of valid frames, on every link type: never a panic.
    #[test]
    fn garbage_never_panics() {
        let ips = [
            syn4(),
            udp6(),
            craft::ipv6(
                C6,
                S6,
                &[Ext::opts(0, 1), Ext::fragment(0, true), Ext::ah(2)],
                17,
                &craft::udp(1, 2, b"zz"),
            ),
        ];
        let mut seed: u32 = 0x1234_5678;
        for ip in &ips {
            let et = if ip[0] >> 4 == 4 { ETH_IPV4 } else { ETH_IPV6 };
            let frames = [
                (
                    LinkType::Ethernet,
                    craft::ethernet(&[(TPID_8021Q, 5)], et, ip),
                ),
                (LinkType::LinuxSll, craft::sll(et, ip)),
                (LinkType::LinuxSll2, craft::sll2(et, 1, ip)),
                (LinkType::RawIp, ip.clone()),
                (LinkType::Ipv4, ip.clone()),
                (LinkType::Ipv6, ip.clone()),
            ];
            for (link, f) in frames {
                for n in 0..=f.len() {
                    let _ = parse(link, &f[..n], T);
                }
                for _ in 0..2000 {
                    let mut g = f.clone();
                    for _ in 0..3 {
                        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        let i = (seed >> 8) as usize % g.len();
                        g[i] = (seed >> 24) as u8;
                    }
                    let _ = parse(link, &g, T);
                }
            }
        }
    }
}
