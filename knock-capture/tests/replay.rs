//! Replay of pcap and pcapng files written here, one per link type.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use std::borrow::Cow;
use std::io::Cursor;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use knock_capture::craft::{self, Ext, Frag};
use knock_capture::{LinkType, Next, Reject, ReplaySource, Source};
use knock_core::{FlagFilter, Listen, Proto, Step, TcpFlags, Timestamp};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, TsResolution};

const C4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const S4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const C6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const S6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// IP packets: a v4 SYN to 7000, a v6 UDP to 9000 (behind extension
/// headers), a v4 SYN to 7002 and a non-first v4 fragment.
fn ip_packets() -> Vec<Vec<u8>> {
    vec![
        craft::ipv4(
            C4,
            S4,
            6,
            &[],
            Frag::default(),
            &craft::tcp(40000, 7000, TcpFlags::SYN),
        ),
        craft::ipv6(
            C6,
            S6,
            &[Ext::opts(0, 0), Ext::fragment(0, true)],
            17,
            &craft::udp(40001, 9000, b"k"),
        ),
        craft::ipv4(
            C4,
            S4,
            6,
            &[],
            Frag::default(),
            &craft::tcp(40002, 7002, TcpFlags::SYN),
        ),
        craft::ipv4(
            C4,
            S4,
            17,
            &[],
            Frag {
                offset: 8,
                more: false,
            },
            &[0; 16],
        ),
    ]
}

fn frame(link: LinkType, ip: &[u8]) -> Vec<u8> {
    let et = if ip[0] >> 4 == 4 {
        craft::ETH_IPV4
    } else {
        craft::ETH_IPV6
    };
    match link {
        LinkType::Ethernet => craft::ethernet(&[(craft::TPID_8021Q, 42)], et, ip),
        LinkType::LinuxSll => craft::sll(et, ip),
        LinkType::LinuxSll2 => craft::sll2(et, 7, ip),
        _ => ip.to_vec(),
    }
}

fn datalink(link: LinkType) -> DataLink {
    DataLink::from(link.linktype())
}

fn t(i: usize) -> Duration {
    Duration::from_secs(1_700_000_000) + Duration::from_micros(250_000 * i as u64 + 7)
}

fn pcap(link: LinkType, ips: &[Vec<u8>], nanos: bool) -> Vec<u8> {
    let header = PcapHeader {
        datalink: datalink(link),
        ts_resolution: if nanos {
            TsResolution::NanoSecond
        } else {
            TsResolution::MicroSecond
        },
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (i, ip) in ips.iter().enumerate() {
        let f = frame(link, ip);
        w.write_packet(&PcapPacket::new(t(i), f.len() as u32, &f))
            .unwrap();
    }
    w.into_writer()
}

/// A pcapng file with one interface per link type given; packet `i` goes to
/// interface `i % links.len()`. Interface 0 uses microseconds (the default),
/// the others nanoseconds (`if_tsresol` 9).
fn pcapng(links: &[LinkType], ips: &[Vec<u8>]) -> Vec<u8> {
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    for (n, &l) in links.iter().enumerate() {
        let mut idb = InterfaceDescriptionBlock::new(datalink(l), 0xffff);
        if n > 0 {
            idb.options.push(InterfaceDescriptionOption::IfTsResol(9));
        }
        w.write_pcapng_block(idb).unwrap();
    }
    for (i, ip) in ips.iter().enumerate() {
        let id = i % links.len();
        let f = frame(links[id], ip);
        // pcap-file writes `timestamp.as_nanos()` raw: scale it to the unit.
        let raw = if id == 0 {
            Duration::from_nanos(t(i).as_micros() as u64)
        } else {
            t(i)
        };
        let epb = EnhancedPacketBlock {
            interface_id: id as u32,
            timestamp: raw,
            original_len: f.len() as u32,
            data: Cow::Owned(f),
            options: vec![],
        };
        w.write_pcapng_block(epb).unwrap();
    }
    w.into_inner()
}

fn drain(src: &mut ReplaySource) -> Vec<knock_capture::Captured> {
    let mut out = Vec::new();
    loop {
        match src.next_event(None).unwrap() {
            Next::Event(c) => out.push(c),
            Next::End => break,
            Next::Deadline => panic!("replays have no deadline"),
            Next::Interface(ev) => panic!("replays have no interfaces: {ev:?}"),
        }
    }
    assert_eq!(src.next_event(None).unwrap(), Next::End, "End is sticky");
    out
}

fn check(events: &[knock_capture::Captured], link_ok: impl Fn(LinkType) -> bool) {
    let seen: Vec<(Proto, u16, Timestamp)> = events
        .iter()
        .map(|c| {
            assert!(link_ok(c.link), "{:?}", c.link);
            (c.event.proto, c.event.dst_port, c.event.time)
        })
        .collect();
    let us = |i: usize| Timestamp::from_micros(t(i).as_micros() as u64);
    assert_eq!(
        seen,
        vec![
            (Proto::Tcp, 7000, us(0)),
            (Proto::Udp, 9000, us(1)),
            (Proto::Tcp, 7002, us(2))
        ]
    );
    assert_eq!(events[1].event.src, std::net::IpAddr::from(C6));
}

#[test]
fn pcap_every_link_type_micro_and_nano() {
    for link in LinkType::ALL {
        let ips: Vec<Vec<u8>> = ip_packets()
            .into_iter()
            .filter(|ip| match link {
                LinkType::Ipv4 => ip[0] >> 4 == 4,
                LinkType::Ipv6 => ip[0] >> 4 == 6,
                _ => true,
            })
            .collect();
        for nanos in [false, true] {
            let bytes = pcap(link, &ips, nanos);
            let mut src = ReplaySource::from_reader(Cursor::new(bytes)).unwrap();
            let evs = drain(&mut src);
            if matches!(link, LinkType::Ipv4 | LinkType::Ipv6) {
                assert_eq!(evs.len(), if link == LinkType::Ipv4 { 2 } else { 1 });
                continue;
            }
            check(&evs, |l| l == link);
            let st = src.stats();
            assert_eq!((st.received, st.events), (4, 3), "{link:?}");
            assert_eq!(st.rejected(Reject::Fragment), 1);
        }
    }
}

#[test]
fn pcapng_mixed_interfaces_and_resolutions() {
    let links = [LinkType::Ethernet, LinkType::LinuxSll2, LinkType::RawIp];
    let mut src = ReplaySource::from_reader(Cursor::new(pcapng(&links, &ip_packets()))).unwrap();
    let evs = drain(&mut src);
    check(&evs, |l| links.contains(&l));
    assert_eq!(evs[0].link, LinkType::Ethernet);
    assert_eq!((evs[1].link, evs[1].ifindex), (LinkType::LinuxSll2, 1));
    for one in [LinkType::LinuxSll, LinkType::Ipv4] {
        let ips: Vec<Vec<u8>> = ip_packets()
            .into_iter()
            .filter(|p| p[0] >> 4 == 4)
            .collect();
        let mut src = ReplaySource::from_reader(Cursor::new(pcapng(&[one], &ips))).unwrap();
        assert_eq!(drain(&mut src).len(), 2);
    }
}

#[test]
fn listen_set_filters_in_user_space() {
    let mut src =
        ReplaySource::from_reader(Cursor::new(pcap(LinkType::Ethernet, &ip_packets(), false)))
            .unwrap();
    let syn_only = FlagFilter {
        set: TcpFlags::SYN,
        clear: TcpFlags::ACK,
    };
    src.set_listen(&[Listen::new(Step::tcp(7000), syn_only, Some(S4.into()))])
        .unwrap();
    let evs = drain(&mut src);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].event.dst_port, 7000);
    assert_eq!(src.stats().unmatched, 2);
}

/// Only datagrams to an entry that asks for their data (the SPA port's)
/// carry a payload; a UDP knock to another port of the listen set, with
/// data, carries none, nor does a TCP knock.
#[test]
fn payload_only_for_entries_that_ask_for_it() {
    let udp = |port, data: &[u8]| {
        craft::ipv4(
            C4,
            S4,
            17,
            &[],
            Frag::default(),
            &craft::udp(40000, port, data),
        )
    };
    let tcp = craft::ipv4(
        C4,
        S4,
        6,
        &[],
        Frag::default(),
        &craft::tcp(40000, 7000, TcpFlags::SYN),
    );
    let ips = vec![
        udp(9000, b"knock with data"),
        udp(62201, b"an SPA packet"),
        tcp,
        udp(62201, &[b'Q'; knock_capture::MAX_PAYLOAD]),
        udp(62201, &[b'Q'; knock_capture::MAX_PAYLOAD + 1]),
    ];
    for link in [LinkType::Ethernet, LinkType::RawIp] {
        let mut src = ReplaySource::from_reader(Cursor::new(pcap(link, &ips, false))).unwrap();
        src.set_listen(&[
            Listen::new(Step::udp(9000), FlagFilter::ANY, None),
            Listen::new(Step::tcp(7000), FlagFilter::ANY, None),
            Listen::new(Step::udp(62201), FlagFilter::ANY, None).with_payload(),
        ])
        .unwrap();
        let got: Vec<(u16, Option<usize>)> = drain(&mut src)
            .iter()
            .map(|c| (c.event.dst_port, c.payload.as_ref().map(|p| p.len())))
            .collect();
        assert_eq!(
            got,
            vec![
                (9000, None),
                (62201, Some(13)),
                (7000, None),
                (62201, Some(knock_capture::MAX_PAYLOAD)),
                (62201, None),
            ],
            "{link:?}"
        );
    }
    // A strict door's any-port entry asks for every datagram, not their data.
    let mut src =
        ReplaySource::from_reader(Cursor::new(pcap(LinkType::Ethernet, &ips, false))).unwrap();
    let mut listen = Listen::strict(None).to_vec();
    listen.push(Listen::new(Step::udp(62201), FlagFilter::ANY, None).with_payload());
    src.set_listen(&listen).unwrap();
    let payloads: Vec<bool> = drain(&mut src)
        .iter()
        .map(|c| c.payload.is_some())
        .collect();
    assert_eq!(payloads, [false, true, false, true, false]);
}

#[test]
fn files_on_disk_and_bad_input() {
    let dir = std::env::temp_dir().join(format!("knock-capture-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("x.pcapng");
    std::fs::write(&p, pcapng(&[LinkType::Ethernet], &ip_packets())).unwrap();
    assert_eq!(drain(&mut ReplaySource::open(&p).unwrap()).len(), 3);
    let q = dir.join("y.pcap");
    std::fs::write(&q, pcap(LinkType::RawIp, &ip_packets(), true)).unwrap();
    assert_eq!(drain(&mut ReplaySource::open(&q).unwrap()).len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();

    assert!(ReplaySource::open("/nonexistent/knock.pcap").is_err());
    assert!(ReplaySource::from_reader(Cursor::new(b"garbage!".repeat(10))).is_err());
    // An unsupported link type (802.11) is an error for pcap.
    let mut w = PcapWriter::with_header(
        Vec::new(),
        PcapHeader {
            datalink: DataLink::IEEE802_11,
            ..PcapHeader::default()
        },
    )
    .unwrap();
    w.write_packet(&PcapPacket::new(t(0), 4, &[0; 4])).unwrap();
    assert!(ReplaySource::from_reader(Cursor::new(w.into_writer())).is_err());
    // A truncated file: the frames before the cut, then an error, then End.
    let mut bytes = pcap(LinkType::Ethernet, &ip_packets(), false);
    bytes.truncate(bytes.len() - 5);
    let mut src = ReplaySource::from_reader(Cursor::new(bytes)).unwrap();
    let mut got = 0;
    let mut errored = false;
    for _ in 0..10 {
        match src.next_event(None) {
            Ok(Next::Event(_)) => got += 1,
            Ok(Next::End) => break,
            Ok(Next::Deadline | Next::Interface(_)) => unreachable!(),
            Err(_) => errored = true,
        }
    }
    assert_eq!((got, errored), (3, true));
}
