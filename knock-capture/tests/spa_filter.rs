//! The kernel filter with an SPA entry (every datagram to udp/62201, as
//! the engine asks for SPA doors) passes whole SPA packets of both
//! families, keeping every byte, and the parser hands their payload over.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::{Ipv4Addr, Ipv6Addr};

use knock_capture::bpf::{compile, ACCEPT};
use knock_capture::craft::{self, Frag};
use knock_capture::{parse_with_payload, LinkType, MAX_PAYLOAD};
use knock_core::{FlagFilter, Listen, Step, Timestamp};

#[test]
fn spa_datagrams_pass_whole() {
    let listen = [
        Listen::new(Step::tcp(7000), FlagFilter::ANY, None),
        Listen::new(Step::udp(62201), FlagFilter::ANY, None),
    ];
    let c4 = Ipv4Addr::new(198, 18, 0, 2);
    let s4 = Ipv4Addr::new(198, 18, 0, 1);
    let c6: Ipv6Addr = "2001:db8::2".parse().unwrap();
    let s6: Ipv6Addr = "2001:db8::1".parse().unwrap();
    for len in [204, MAX_PAYLOAD] {
        let data = vec![b'Q'; len];
        for (ip, et) in [
            (
                craft::ipv4(
                    c4,
                    s4,
                    17,
                    &[],
                    Frag::default(),
                    &craft::udp(40000, 62201, &data),
                ),
                craft::ETH_IPV4,
            ),
            (
                craft::ipv6(c6, s6, &[], 17, &craft::udp(40000, 62201, &data)),
                craft::ETH_IPV6,
            ),
        ] {
            let frame = craft::ethernet(&[], et, &ip);
            let prog = compile(LinkType::Ethernet, &listen).unwrap().program;
            let keep = prog.run(&frame);
            assert_eq!(keep, ACCEPT, "the SPA datagram passes");
            assert!(keep as usize >= frame.len(), "every byte is kept");
            let (ev, payload) =
                parse_with_payload(LinkType::Ethernet, &frame, Timestamp::ZERO).unwrap();
            assert_eq!(ev.dst_port, 62201);
            assert_eq!(payload, data.as_slice());
        }
        // Another UDP port does not pass.
        let other = craft::ipv4(
            c4,
            s4,
            17,
            &[],
            Frag::default(),
            &craft::udp(40000, 62202, &data),
        );
        let prog = compile(LinkType::Ethernet, &listen).unwrap().program;
        assert_eq!(prog.run(&craft::ethernet(&[], craft::ETH_IPV4, &other)), 0);
    }
}
