//! Entry points for fuzz targets (kept here so they build and are tested
//! with the crate; a `cargo fuzz` target only forwards its bytes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use knock_core::{FlagFilter, Listen, Step, TcpFlags, Timestamp};

use crate::{bpf, parse, LinkType};

/// The listen set the fuzz checks compile: v4 and v6 targets, flag filters,
/// TCP and UDP.
pub fn listen_set() -> Vec<Listen> {
    let s4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    let s6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let syn = FlagFilter {
        set: TcpFlags::SYN,
        clear: TcpFlags::ACK,
    };
    vec![
        Listen::new(Step::tcp(7000), syn, Some(s4)),
        Listen::new(Step::tcp(7000), syn, Some(s6)),
        Listen::new(Step::tcp(80), FlagFilter::ANY, None),
        Listen::new(Step::udp(9000), FlagFilter::ANY, None),
        Listen::new(Step::udp(53), FlagFilter::ANY, Some(s6)),
    ]
}

/// One fuzz input: the first byte picks the [`LinkType`], the rest is the
/// frame. Panics (a fuzz finding) if [`parse`] panics, or if the kernel
/// program from [`listen_set`] would drop a frame that parses to a knock of
/// that set (the filter must never lose a knock).
pub fn check(data: &[u8]) {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let link = LinkType::ALL[usize::from(sel) % LinkType::ALL.len()];
    let parsed = parse(link, frame, Timestamp::ZERO);
    let Ok(event) = parsed else { return };
    let ls = listen_set();
    // A frame with a VLAN tag left in its data is not for a host that
    // captures on an untagged interface: the program drops it on purpose.
    let tagged = link == LinkType::Ethernet
        && frame
            .get(12..14)
            .is_some_and(|t| crate::parse::ETH_VLAN.contains(&u16::from_be_bytes([t[0], t[1]])));
    if ls.iter().any(|l| l.matches(&event)) && !tagged {
        if let Ok(c) = bpf::compile(link, &ls) {
            assert_ne!(
                c.program.run(frame),
                0,
                "kernel filter drops knock {event:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::{self, Ext, Frag};

    #[test]
    fn seeds_and_noise() {
        let ip = craft::ipv6(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
            &[Ext::opts(0, 0)],
            6,
            &craft::tcp(1, 7000, TcpFlags::SYN),
        );
        let v4 = craft::ipv4(
            Ipv4Addr::new(198, 18, 0, 2),
            Ipv4Addr::new(198, 18, 0, 1),
            17,
            &[],
            Frag::default(),
            &craft::udp(1, 9000, b""),
        );
        let mut seeds = vec![];
        for (i, _) in LinkType::ALL.iter().enumerate() {
            for p in [&ip, &v4] {
                let mut d = vec![i as u8];
                d.extend_from_slice(&craft::ethernet(&[], craft::ETH_IPV6, p));
                seeds.push(d);
                let mut d = vec![i as u8];
                d.extend_from_slice(p);
                seeds.push(d);
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for s in &seeds {
            check(s);
            for _ in 0..500 {
                let mut g = s.clone();
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = 1 + (x as usize) % (g.len() - 1);
                g[i] ^= (x >> 32) as u8;
                g.truncate(1 + (x >> 40) as usize % g.len());
                check(&g);
            }
        }
        check(&[]);
    }
}
