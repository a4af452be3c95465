//! This host's addresses, to tell packets for it from packets it only sees.
//!
//! A frame sent to this host's MAC address may still be for someone else:
//! on a router every forwarded packet is. [`LocalAddrs`] keeps the set of
//! addresses assigned to the host's interfaces, read with an
//! `RTM_GETADDR` dump on a `NETLINK_ROUTE` socket opened with the source,
//! so in the source's network namespace whichever thread reads it later.
//! The set is refreshed lazily: when a packet's destination is not in it,
//! at most once a second, so a new address is picked up at
//! its first knock and idle sources never wake up for it.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::CaptureError;

/// The shortest time between two reads of the address set.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

// linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// `RT_SCOPE_HOST`: the address's whole prefix is local (127.0.0.1/8).
const RT_SCOPE_HOST: u8 = 254;
const NLMSG_HDRLEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;

/// One address of the host: an address, and for host-scope addresses
/// (loopback) the prefix length that makes its whole subnet local.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostAddr {
    addr: IpAddr,
    /// `Some(len)` for a host-scope address: every address in `addr/len` is local.
    subnet: Option<u8>,
}

impl HostAddr {
    fn covers(&self, a: IpAddr) -> bool {
        match (self.subnet, self.addr, a) {
            (None, x, y) => x == y,
            (Some(len), IpAddr::V4(x), IpAddr::V4(y)) => {
                let m = u32::MAX
                    .checked_shl(32 - u32::from(len.min(32)))
                    .unwrap_or(0);
                u32::from(x) & m == u32::from(y) & m
            }
            (Some(len), IpAddr::V6(x), IpAddr::V6(y)) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(len.min(128)))
                    .unwrap_or(0);
                u128::from(x) & m == u128::from(y) & m
            }
            _ => false,
        }
    }
}

/// The addresses of this host (in one network namespace).
#[derive(Debug)]
pub struct LocalAddrs {
    sock: Socket,
    seq: u32,
    addrs: Vec<HostAddr>,
    read_at: Instant,
    /// The address last found among `addrs` (a knock's destination is
    /// nearly always the one before's), so that most knocks compare one.
    last: Option<IpAddr>,
}

impl LocalAddrs {
    /// Opens a netlink socket in the calling thread's network namespace and
    /// reads the addresses.
    ///
    /// # Errors
    /// The socket cannot be made, or the dump fails.
    pub fn open() -> Result<LocalAddrs, CaptureError> {
        let sock = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(libc::NETLINK_ROUTE)),
        )
        .map_err(|e| CaptureError::io("socket(NETLINK_ROUTE)", e))?;
        // The kernel answers a dump at once; never hang a capture on it.
        sock.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| CaptureError::io("SO_RCVTIMEO", e))?;
        let mut me = LocalAddrs {
            sock,
            seq: 0,
            addrs: Vec::new(),
            read_at: Instant::now(),
            last: None,
        };
        me.addrs = me.dump().map_err(|e| CaptureError::io("RTM_GETADDR", e))?;
        Ok(me)
    }

    /// Whether `a` is one of the host's addresses (or in the subnet of a
    /// loopback address). An unknown address re-reads the set first, if it
    /// was last read at least a second ago.
    ///
    /// Inline: every knock asks, and nearly every one about the address
    /// before's.
    #[inline]
    pub fn contains(&mut self, a: IpAddr) -> bool {
        self.last == Some(a) || self.look_up(a)
    }

    /// [`contains`](Self::contains) of an address other than the last one
    /// found.
    #[inline(never)]
    fn look_up(&mut self, a: IpAddr) -> bool {
        if self.known(a) {
            self.last = Some(a);
            return true;
        }
        if self.read_at.elapsed() < REFRESH_INTERVAL {
            return false;
        }
        self.read_at = Instant::now();
        // A failed read keeps the set we have.
        if let Ok(v) = self.dump() {
            self.addrs = v;
            self.last = None;
        }
        self.known(a)
    }

    /// The addresses as last read.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs.iter().map(|h| h.addr)
    }

    fn known(&self, a: IpAddr) -> bool {
        let a = match a {
            // An IPv4-mapped destination is the IPv4 address.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
            v4 => v4,
        };
        self.addrs.iter().any(|h| h.covers(a))
    }

    fn dump(&mut self) -> io::Result<Vec<HostAddr>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut req = Vec::with_capacity(NLMSG_HDRLEN + IFADDRMSG_LEN);
        req.extend_from_slice(&((NLMSG_HDRLEN + IFADDRMSG_LEN) as u32).to_ne_bytes());
        req.extend_from_slice(&RTM_GETADDR.to_ne_bytes());
        req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend_from_slice(&seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(&[0u8; IFADDRMSG_LEN]); // AF_UNSPEC: both families
        self.sock.send(&req)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = (&self.sock).read(&mut buf)?;
            let msgs = buf.get(..n).unwrap_or(&[]);
            if parse_dump(msgs, seq, &mut out)? {
                return Ok(out);
            }
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses one datagram of an address dump answering request `seq` into
/// `out`; true once the dump is done. Messages of other requests are skipped.
pub(crate) fn parse_dump(mut b: &[u8], seq: u32, out: &mut Vec<HostAddr>) -> io::Result<bool> {
    while b.len() >= NLMSG_HDRLEN {
        let len = u32_at(b, 0).ok_or_else(|| bad("short header"))? as usize;
        let ty = u16_at(b, 4).ok_or_else(|| bad("short header"))?;
        let mseq = u32_at(b, 8).ok_or_else(|| bad("short header"))?;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(bad("message length"));
        }
        let body = b.get(NLMSG_HDRLEN..len).unwrap_or(&[]);
        if mseq == seq {
            match ty {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno = u32_at(body, 0).map_or(0, |e| e as i32);
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                RTM_NEWADDR => {
                    if let Some(a) = parse_addr(body) {
                        out.push(a);
                    }
                }
                _ => {}
            }
        }
        b = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Ok(false)
}

/// An `ifaddrmsg` and its attributes.
fn parse_addr(body: &[u8]) -> Option<HostAddr> {
    let (&family, rest) = body.split_first()?;
    let prefix = *rest.first()?;
    let scope = *rest.get(2)?;
    let mut attrs = body.get(IFADDRMSG_LEN..)?;
    let (mut local, mut address) = (None, None);
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0)?);
        let ty = u16_at(attrs, 2)?;
        if len < 4 || len > attrs.len() {
            return None;
        }
        let data = attrs.get(4..len)?;
        let ip = match (i32::from(family), data.len()) {
            (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?))),
            (libc::AF_INET6, 16) => {
                Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?)))
            }
            _ => None,
        };
        match ty {
            IFA_LOCAL => local = ip,
            IFA_ADDRESS => address = ip,
            _ => {}
        }
        attrs = attrs.get(len.next_multiple_of(4).min(attrs.len())..)?;
    }
    // On a point-to-point link IFA_ADDRESS is the peer's; IFA_LOCAL ours.
    let addr = local.or(address)?;
    Some(HostAddr {
        addr,
        subnet: (scope == RT_SCOPE_HOST).then_some(prefix),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(data);
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }

    fn msg(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&0x2u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    fn ifaddr(family: i32, prefix: u8, scope: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut b = vec![family as u8, prefix, 0, scope, 1, 0, 0, 0];
        for a in attrs {
            b.extend_from_slice(a);
        }
        b
    }

    #[test]
    fn dump_with_loopback_ptp_and_v6() {
        let lo = ifaddr(
            libc::AF_INET,
            8,
            RT_SCOPE_HOST,
            &[
                attr(IFA_ADDRESS, &[127, 0, 0, 1]),
                attr(IFA_LOCAL, &[127, 0, 0, 1]),
            ],
        );
        // Point to point: IFA_ADDRESS is the peer.
        let ptp = ifaddr(
            libc::AF_INET,
            32,
            0,
            &[
                attr(IFA_ADDRESS, &[198, 18, 9, 2]),
                attr(IFA_LOCAL, &[198, 18, 9, 1]),
            ],
        );
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let six = ifaddr(libc::AF_INET6, 64, 0, &[attr(IFA_ADDRESS, &v6.octets())]);
        let mut dgram = msg(RTM_NEWADDR, 7, &lo);
        dgram.extend(msg(RTM_NEWADDR, 7, &ptp));
        // A stale answer to an earlier request is skipped.
        dgram.extend(msg(RTM_NEWADDR, 6, &six));
        let mut out = Vec::new();
        assert!(!parse_dump(&dgram, 7, &mut out).unwrap());
        let mut dgram = msg(RTM_NEWADDR, 7, &six);
        dgram.extend(msg(NLMSG_DONE, 7, &[0; 4]));
        assert!(parse_dump(&dgram, 7, &mut out).unwrap());
        assert_eq!(out.len(), 3);
        let has = |a: &str| out.iter().any(|h| h.covers(a.parse().unwrap()));
        assert!(has("127.0.0.1") && has("127.3.2.1"));
        assert!(has("198.18.9.1") && !has("198.18.9.2"));
        assert!(has("2001:db8::1") && !has("2001:db8::2"));
        assert!(!has("198.18.0.1"));
    }

    #[test]
    fn errors_and_garbage() {
        let mut out = Vec::new();
        let e = msg(NLMSG_ERROR, 1, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            parse_dump(&e, 1, &mut out).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        let mut m = msg(RTM_NEWADDR, 1, &[0; 8]);
        m[0] = 200; // longer than the datagram
        assert!(parse_dump(&m, 1, &mut out).is_err());
        // Every prefix of a good message: an error or nothing, never a panic.
        let good = msg(
            RTM_NEWADDR,
            1,
            &ifaddr(libc::AF_INET, 24, 0, &[attr(IFA_LOCAL, &[198, 18, 0, 1])]),
        );
        for n in 0..good.len() {
            let _ = parse_dump(&good[..n], 1, &mut out);
        }
        assert!(out.is_empty());
        assert!(!parse_dump(&good, 1, &mut out).unwrap());
        assert_eq!(out.len(), 1);
    }
}
