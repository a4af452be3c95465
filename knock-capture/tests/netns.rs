//! Live capture in a namespace pair (root only): real knocks from the client
//! namespace, captured on the server side through the kernel filter.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use knock_capture::craft::{self, Ext, Frag};
use knock_capture::{
    bpf, AfPacketSource, Captured, InterfaceEvent, LinkType, LiveConfig, MultiSource, Next,
    PnetSource, Reject, ReplaySource, Source, Stats,
};
use knock_core::{FlagFilter, Listen, Proto, Step, TcpFlags};
use knock_testnet::{Netns, Pair, CLIENT_IF, SERVER_IF};

const C4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const S4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const C6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const S6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const VC4: Ipv4Addr = Ipv4Addr::new(198, 19, 100, 2);
const VS4: Ipv4Addr = Ipv4Addr::new(198, 19, 100, 1);

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

/// (proto, src, dst, port, flags) of an event: what the test compares.
type Key = (Proto, IpAddr, IpAddr, u16, u8);

fn key(c: &Captured) -> Key {
    let e = c.event;
    (e.proto, e.src, e.dst, e.dst_port, e.tcp_flags.bits())
}

fn tcp(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, port: u16) -> Key {
    (
        Proto::Tcp,
        src.into(),
        dst.into(),
        port,
        TcpFlags::SYN.bits(),
    )
}

fn udp(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, port: u16) -> Key {
    (Proto::Udp, src.into(), dst.into(), port, 0)
}

/// The namespace pair of a test. These tests are `#[ignore = "needs root"]`:
/// run with `--include-ignored` they must really run, so without root they
/// fail instead of passing without testing anything.
fn setup() -> Option<Pair> {
    assert!(
        knock_testnet::is_root(),
        "needs root (network namespaces): run as root"
    );
    let pair = Pair::new().unwrap();
    // Crafted frames are addressed to `craft::DST_MAC`: make that the
    // server's address, so they reach it as frames for this host.
    pair.server
        .run(&[
            "ip",
            "link",
            "set",
            SERVER_IF,
            "address",
            &mac_text(craft::DST_MAC),
        ])
        .unwrap();
    Some(pair)
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `frame` with its destination MAC replaced by `mac`.
fn to_mac(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[..6].copy_from_slice(&mac);
    frame
}

/// VLAN 100 on both sides, when the kernel has 802.1Q devices (some
/// sandboxes don't: then tagged frames are crafted instead).
fn try_vlan(pair: &Pair) -> bool {
    match pair.add_vlan(100) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("no VLAN devices here ({e}); crafted tagged frames only");
            false
        }
    }
}

/// The real-socket knocks: plain v4 and v6 (and v4 over VLAN 100 if `vlan`).
fn send_socket_knocks(client: &Netns, vlan: bool) {
    if vlan {
        client
            .knock(
                &[
                    ("198.19.100.1", 7000, "tcp"),
                    ("198.19.100.1", 7001, "tcp"),
                    ("198.19.100.1", 9000, "udp"),
                    ("198.19.100.1", 9003, "udp"),
                ],
                5,
            )
            .unwrap();
    }
    client
        .knock(
            &[
                ("198.18.0.1", 7000, "tcp"),
                ("198.18.0.1", 7001, "tcp"),
                ("198.18.0.1", 7002, "tcp"),
                ("198.18.0.1", 9000, "udp"),
                ("198.18.0.1", 9001, "udp"),
                ("198.18.0.1", 9002, "udp"),
                ("2001:db8::1", 7000, "tcp"),
                ("2001:db8::1", 7002, "tcp"),
                ("2001:db8::1", 9000, "udp"),
                ("2001:db8::1", 9001, "udp"),
                ("2001:db8::1", 9002, "udp"),
            ],
            5,
        )
        .unwrap();
}

/// The knocks above that are knocks, as seen on the parent interface (the
/// VLAN knocks count on the VLAN interface only).
fn socket_knocks() -> Vec<Key> {
    vec![
        tcp(C4, S4, 7000),
        tcp(C4, S4, 7001),
        udp(C4, S4, 9000),
        tcp(C6, S6, 7000),
        udp(C6, S6, 9000),
        udp(C6, S6, 9001),
    ]
}

/// The VLAN socket knocks that are knocks.
fn vlan_knocks(vlan: bool) -> Vec<Key> {
    if vlan {
        vec![tcp(VC4, VS4, 7001), udp(VC4, VS4, 9000)]
    } else {
        vec![]
    }
}

/// Crafted frames the sockets can't make: wrong flags, IPv6 extension
/// headers, stacked VLAN, a non-first fragment.
fn crafted_frames() -> Vec<Vec<u8>> {
    let eth4 = |ip: &[u8]| craft::ethernet(&[], craft::ETH_IPV4, ip);
    let eth6 = |ip: &[u8]| craft::ethernet(&[], craft::ETH_IPV6, ip);
    let d = Frag::default();
    vec![
        // SYN|ACK to a syn,!ack port: dropped in the kernel.
        eth4(&craft::ipv4(
            C4,
            S4,
            6,
            &[],
            d,
            &craft::tcp(1, 7000, TcpFlags::SYN | TcpFlags::ACK),
        )),
        // IPv4 with options to a knock port: decided in the kernel.
        eth4(&craft::ipv4(
            C4,
            S4,
            6,
            &[1, 1, 1, 0],
            d,
            &craft::tcp(2, 7000, TcpFlags::SYN),
        )),
        // IPv6 + destination options to a knock port: passed up, a knock.
        eth6(&craft::ipv6(
            C6,
            S6,
            &[Ext::opts(60, 0)],
            6,
            &craft::tcp(3, 7000, TcpFlags::SYN),
        )),
        // The same to a non-knock port: passed up, unmatched in user space.
        eth6(&craft::ipv6(
            C6,
            S6,
            &[Ext::opts(60, 0)],
            6,
            &craft::tcp(4, 7002, TcpFlags::SYN),
        )),
        // A non-first IPv4 fragment: passed up, rejected as a fragment.
        eth4(&craft::ipv4(
            C4,
            S4,
            17,
            &[],
            Frag {
                offset: 100,
                more: false,
            },
            &[0; 16],
        )),
    ]
}

/// The crafted frames that are knocks.
fn crafted_knocks() -> Vec<Key> {
    vec![tcp(C4, S4, 7000), tcp(C6, S6, 7000)]
}

/// Tagged frames: one 802.1Q tag (the kernel moves it out of the data
/// before taps see the frame), and QinQ (the outer tag is moved, the inner
/// one stays in the data). Knocks on a VLAN interface, never on the
/// untagged parent: the kernel filter drops them there.
fn tagged_frames() -> Vec<Vec<u8>> {
    let ip = craft::ipv4(
        C4,
        S4,
        6,
        &[],
        Frag::default(),
        &craft::tcp(5, 7000, TcpFlags::SYN),
    );
    let ip6 = craft::ipv6(C6, S6, &[], 17, &craft::udp(6, 9000, b"k"));
    vec![
        craft::ethernet(&[(craft::TPID_8021Q, 100)], craft::ETH_IPV4, &ip),
        craft::ethernet(&[(craft::TPID_8021Q, 100)], craft::ETH_IPV6, &ip6),
        craft::ethernet(
            &[(craft::TPID_8021AD, 5), (craft::TPID_8021Q, 6)],
            craft::ETH_IPV4,
            &ip,
        ),
    ]
}

/// Reads events until `quiet` passes with none.
fn collect(src: &mut impl Source, quiet: Duration) -> Vec<Captured> {
    let mut out = Vec::new();
    loop {
        match src.next_event(Some(Instant::now() + quiet)).unwrap() {
            Next::Event(c) => out.push(c),
            Next::Deadline | Next::End => return out,
            Next::Interface(ev) => panic!("no interface should change here: {ev:?}"),
        }
    }
}

fn sorted(mut v: Vec<Key>) -> Vec<Key> {
    v.sort();
    v
}

/// Every frame read is accounted for, and the kernel passed exactly those.
fn check_accounting(st: &Stats, events: u64, fragments: u64, unmatched: u64) {
    assert_eq!(st.events, events, "{st:?}");
    assert_eq!(st.rejected(Reject::Fragment), fragments, "{st:?}");
    // Nothing else: background IPv6 (MLD: hop-by-hop + ICMPv6, ND) and ARP
    // never pass the kernel filter.
    assert_eq!(st.rejected_total(), fragments, "{st:?}");
    assert_eq!(st.unmatched, unmatched, "{st:?}");
    assert_eq!(st.received, events + fragments + unmatched, "{st:?}");
    // Non-knock ports never reached user space: the kernel's own count of
    // frames its filter passed is exactly what we read.
    assert_eq!(st.kernel_packets, st.received, "{st:?}");
    assert_eq!(st.kernel_drops, 0, "{st:?}");
}

#[test]
#[ignore = "needs root"]
fn af_packet_kernel_filter_v4_v6_vlan_and_multi_interface() {
    let Some(pair) = setup() else { return };
    let vlan = try_vlan(&pair);
    // A second interface on the server: a veth pair inside its namespace.
    for cmd in [
        &[
            "ip", "link", "add", "kx0", "type", "veth", "peer", "name", "kx1",
        ][..],
        &["ip", "link", "set", "kx0", "address", "02:00:00:00:00:03"],
        &["ip", "link", "set", "kx0", "up"],
        &["ip", "link", "set", "kx1", "up"],
    ] {
        pair.server.run(cmd).unwrap();
    }
    let mut names = vec![SERVER_IF, "kx0"];
    if vlan {
        names.push("kn0.100");
    }
    let mut multi = pair
        .server
        .enter(|| MultiSource::open(&names, &listen(), &LiveConfig::default()).unwrap())
        .unwrap();
    let idx: Vec<u32> = multi.sources().map(|s| s.ifindex()).collect();
    assert_eq!(idx.len(), names.len());
    assert!(multi.sources().all(|s| s.link_type() == LinkType::Ethernet));

    send_socket_knocks(&pair.client, vlan);
    pair.client
        .send_frames(CLIENT_IF, &crafted_frames())
        .unwrap();
    pair.client
        .send_frames(CLIENT_IF, &tagged_frames())
        .unwrap();
    let side = |port| {
        let f = craft::ethernet(
            &[],
            craft::ETH_IPV4,
            &craft::ipv4(C4, S4, 17, &[], Frag::default(), &craft::udp(7, port, b"k")),
        );
        to_mac(f, [0x02, 0, 0, 0, 0, 3])
    };
    pair.server
        .send_frames("kx1", &[side(9000), side(9002)])
        .unwrap();
    let got = collect(&mut multi, Duration::from_millis(700));

    let mut by_if: BTreeMap<u32, Vec<Key>> = BTreeMap::new();
    for c in &got {
        assert_eq!(c.link, LinkType::Ethernet);
        by_if.entry(c.ifindex).or_default().push(key(c));
    }
    let mut want_parent = socket_knocks();
    want_parent.extend(crafted_knocks());
    let n_parent = want_parent.len() as u64;
    assert_eq!(
        sorted(by_if.remove(&idx[0]).unwrap_or_default()),
        sorted(want_parent)
    );
    assert_eq!(
        by_if.remove(&idx[1]).unwrap_or_default(),
        vec![udp(C4, S4, 9000)]
    );
    if vlan {
        // The crafted frames tagged 100 arrive on kn0.100 untagged, for
        // this host (their destinations are kn0's addresses); the QinQ one
        // belongs to no interface here.
        let mut want = vlan_knocks(true);
        want.extend([tcp(C4, S4, 7000), udp(C6, S6, 9000)]);
        assert_eq!(
            sorted(by_if.remove(&idx[2]).unwrap_or_default()),
            sorted(want)
        );
    }
    assert!(by_if.is_empty(), "{by_if:?}");

    let mut srcs = multi.sources_mut();
    check_accounting(&srcs.next().unwrap().stats(), n_parent, 1, 1);
    check_accounting(&srcs.next().unwrap().stats(), 1, 0, 0);
    drop(srcs);
    let total = multi.stats();
    assert_eq!(total.events, got.len() as u64);
}

#[test]
#[ignore = "needs root"]
fn filter_swap_takes_effect_and_deadline_returns() {
    let Some(pair) = setup() else { return };
    let mut src = pair
        .server
        .enter(|| AfPacketSource::open(SERVER_IF, &[]).unwrap())
        .unwrap();
    // Nothing listens: a deadline comes back on time, no busy loop.
    let t = Instant::now();
    pair.client
        .knock(&[("198.18.0.1", 7000, "tcp")], 0)
        .unwrap();
    assert_eq!(
        src.next_event(Some(Instant::now() + Duration::from_millis(300)))
            .unwrap(),
        Next::Deadline
    );
    let el = t.elapsed();
    assert!(
        el >= Duration::from_millis(300) && el < Duration::from_secs(3),
        "{el:?}"
    );
    check_accounting(&src.stats(), 0, 0, 0);
    // A past deadline returns at once.
    assert_eq!(
        src.next_event(Some(Instant::now())).unwrap(),
        Next::Deadline
    );

    src.set_listen(&[Listen::new(Step::udp(9000), FlagFilter::ANY, None)])
        .unwrap();
    pair.client
        .knock(
            &[("198.18.0.1", 7000, "tcp"), ("2001:db8::1", 9000, "udp")],
            0,
        )
        .unwrap();
    let got = collect(&mut src, Duration::from_millis(500));
    assert_eq!(
        got.iter().map(key).collect::<Vec<_>>(),
        vec![udp(C6, S6, 9000)]
    );
    assert_eq!(got[0].payload, None, "a knock's data is not kept");
    check_accounting(&src.stats(), 1, 0, 0);

    // Swap to TCP 7000 only.
    src.set_listen(&[Listen::new(Step::tcp(7000), syn_not_ack(), None)])
        .unwrap();
    pair.client
        .knock(
            &[("198.18.0.1", 9000, "udp"), ("198.18.0.1", 7000, "tcp")],
            0,
        )
        .unwrap();
    let got = collect(&mut src, Duration::from_millis(500));
    assert_eq!(
        got.iter().map(key).collect::<Vec<_>>(),
        vec![tcp(C4, S4, 7000)]
    );
    check_accounting(&src.stats(), 2, 0, 0);

    // An entry that asks for the data (an SPA port's) gets it.
    src.set_listen(&[Listen::new(Step::udp(9000), FlagFilter::ANY, None).with_payload()])
        .unwrap();
    pair.client
        .knock(&[("198.18.0.1", 9000, "udp")], 0)
        .unwrap();
    let got = collect(&mut src, Duration::from_millis(500));
    assert_eq!(
        got.iter().map(key).collect::<Vec<_>>(),
        vec![udp(C4, S4, 9000)]
    );
    assert_eq!(got[0].payload.as_deref(), Some(&b"k"[..]));
}

#[test]
#[ignore = "needs root"]
fn pnet_source_same_filter() {
    let Some(pair) = setup() else { return };
    let mut src = pair
        .server
        .enter(|| PnetSource::open(SERVER_IF, &listen(), &LiveConfig::default()).unwrap())
        .unwrap();
    send_socket_knocks(&pair.client, false);
    pair.client
        .send_frames(CLIENT_IF, &crafted_frames())
        .unwrap();
    let got = collect(&mut src, Duration::from_millis(700));
    let mut want = socket_knocks();
    want.extend(crafted_knocks());
    assert_eq!(sorted(got.iter().map(key).collect()), sorted(want));
    check_accounting(&src.stats(), 8, 1, 1);
    // Swap the filter through pnet's descriptor.
    src.set_listen(&[Listen::new(Step::udp(9002), FlagFilter::ANY, None)])
        .unwrap();
    pair.client
        .knock(
            &[("198.18.0.1", 9002, "udp"), ("198.18.0.1", 9000, "udp")],
            0,
        )
        .unwrap();
    let got = collect(&mut src, Duration::from_millis(500));
    assert_eq!(
        got.iter().map(key).collect::<Vec<_>>(),
        vec![udp(C4, S4, 9002)]
    );
}

/// Our program and tcpdump's compiled expression accept the same packets
/// from the same traffic (tcpdump writes a pcap; replayed through `parse`).
#[test]
#[ignore = "needs root"]
fn kernel_filter_agrees_with_tcpdump() {
    let Some(pair) = setup() else { return };
    let ls = listen();
    let expr = bpf::tcpdump_expression(&ls);
    let dir = std::env::temp_dir().join(format!("knock-capture-tcpdump-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("td.pcap");
    let mut td = pair
        .server
        .command("tcpdump")
        .args([
            "-i",
            SERVER_IF,
            "-Q",
            "in",
            "--immediate-mode",
            "-U",
            "-n",
            "-w",
        ])
        .arg(&file)
        .arg(&expr)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until tcpdump is capturing ("listening on" on stderr).
    let stderr = td.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            let _ = tx.send(line);
        }
    });
    let started = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(started.contains("listening on"), "tcpdump: {started}");

    let mut ours = pair
        .server
        .enter(|| AfPacketSource::open(SERVER_IF, &ls).unwrap())
        .unwrap();
    send_socket_knocks(&pair.client, false);
    pair.client
        .send_frames(CLIENT_IF, &crafted_frames())
        .unwrap();
    let got = collect(&mut ours, Duration::from_millis(700));
    std::thread::sleep(Duration::from_millis(1500));
    let _ = knock_testnet::run(&["kill", "-INT", &td.id().to_string()]);
    let status = td.wait().unwrap();
    assert!(status.success() || status.code().is_none(), "{status:?}");

    let mut replay = ReplaySource::open(&file).unwrap();
    replay.set_listen(&ls).unwrap();
    let theirs = collect(&mut replay, Duration::ZERO);
    assert_eq!(
        sorted(got.iter().map(key).collect()),
        sorted(theirs.iter().map(key).collect())
    );
    let (a, b) = (ours.stats(), replay.stats());
    let decided = |s: &Stats| (s.received, s.events, s.unmatched, s.rejects);
    assert_eq!(decided(&a), decided(&b), "ours {a:?}\ntcpdump {b:?}");
    check_accounting(&a, 8, 1, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Capture throughput: tcpreplay at full speed on the veth, half knocks and
/// half non-knock ports; reports packets/s handled and kernel drops
/// (`cargo test -p knock-capture --test netns throughput -- --include-ignored --nocapture`).
#[test]
#[ignore = "needs root"]
fn throughput_with_tcpreplay() {
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    let Some(pair) = setup() else { return };
    const N: usize = 60_000;
    let dir = std::env::temp_dir().join(format!("knock-capture-tput-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("load.pcap");
    let mut w = PcapWriter::new(std::fs::File::create(&file).unwrap()).unwrap();
    let mut knocks = 0u64;
    for i in 0..N {
        let src = Ipv4Addr::new(198, 18, 1 + (i / 250 % 200) as u8, (i % 250) as u8 + 1);
        let port = if i % 2 == 0 { 7000 } else { 7002 };
        knocks += u64::from(port == 7000);
        let ip = craft::ipv4(
            src,
            S4,
            6,
            &[],
            Frag::default(),
            &craft::tcp(40000, port, TcpFlags::SYN),
        );
        let f = craft::ethernet(&[], craft::ETH_IPV4, &ip);
        w.write_packet(&PcapPacket::new(
            Duration::from_micros(i as u64),
            f.len() as u32,
            &f,
        ))
        .unwrap();
    }
    drop(w);
    let mut src = pair
        .server
        .enter(|| AfPacketSource::open(SERVER_IF, &listen()).unwrap())
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut n = 0u64;
        let (mut first, mut last) = (None, Instant::now());
        while let Next::Event(_) = src
            .next_event(Some(Instant::now() + Duration::from_millis(1500)))
            .unwrap()
        {
            n += 1;
            last = Instant::now();
            first.get_or_insert(last);
        }
        let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
        (n, secs, src.stats())
    });
    std::thread::sleep(Duration::from_millis(100));
    let out = pair
        .client
        .output(&[
            "tcpreplay",
            "-i",
            CLIENT_IF,
            "--topspeed",
            file.to_str().unwrap(),
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (events, secs, st) = reader.join().unwrap();
    eprintln!(
        "tcpreplay --topspeed: {N} frames ({knocks} knocks); {events} events in {secs:.3}s \
         = {:.0} events/s; kernel passed {}, dropped {}",
        events as f64 / secs.max(1e-9),
        st.kernel_packets,
        st.kernel_drops
    );
    assert!(events <= knocks);
    assert!(events + st.kernel_drops >= knocks, "{st:?}");
    assert_eq!(st.unmatched, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Raw IP links (tun, WireGuard, ppp): a tun device in a namespace, packets
/// written into it by a python3 writer; the raw-IP program and parser.
#[test]
#[ignore = "needs root"]
fn tun_raw_ip_link() {
    assert!(knock_testnet::is_root(), "needs root (tun device)");
    let ns = Netns::new("tun").unwrap();
    ns.run(&["ip", "tuntap", "add", "dev", "tn0", "mode", "tun"])
        .unwrap();
    ns.run(&["ip", "link", "set", "tn0", "up"]).unwrap();
    // The packets are for this host: it has their destination addresses.
    ns.run(&["ip", "addr", "add", "198.18.0.1/32", "dev", "tn0"])
        .unwrap();
    ns.run(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8::1/128",
        "dev",
        "tn0",
        "nodad",
    ])
    .unwrap();
    let mut src = ns
        .enter(|| AfPacketSource::open("tn0", &listen()).unwrap())
        .unwrap();
    assert_eq!(src.link_type(), LinkType::RawIp);
    let d = Frag::default();
    let packets = [
        craft::ipv4(C4, S4, 6, &[], d, &craft::tcp(1, 7000, TcpFlags::SYN)),
        craft::ipv4(C4, S4, 6, &[], d, &craft::tcp(1, 7002, TcpFlags::SYN)),
        craft::ipv4(
            C4,
            S4,
            6,
            &[1, 1, 1, 0],
            d,
            &craft::tcp(1, 7001, TcpFlags::ACK),
        ),
        craft::ipv6(C6, S6, &[], 17, &craft::udp(1, 9000, b"k")),
        craft::ipv6(C6, S6, &[], 17, &craft::udp(1, 9003, b"k")),
        craft::ipv6(
            C6,
            S6,
            &[Ext::fragment(0, true)],
            6,
            &craft::tcp(1, 7000, TcpFlags::SYN),
        ),
    ];
    const WRITER: &str = "import fcntl,struct,os,sys\n\
        fd=os.open('/dev/net/tun',os.O_RDWR)\n\
        fcntl.ioctl(fd,0x400454ca,struct.pack('16sH',b'tn0',0x1001))\n\
        for h in sys.argv[1:]: os.write(fd,bytes.fromhex(h))\n";
    let hex: Vec<String> = packets
        .iter()
        .map(|p| p.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let mut args = vec!["python3", "-c", WRITER];
    args.extend(hex.iter().map(String::as_str));
    ns.run(&args).unwrap();
    let got = collect(&mut src, Duration::from_millis(500));
    let mut want = vec![tcp(C4, S4, 7000), udp(C6, S6, 9000), tcp(C6, S6, 7000)];
    want.push((Proto::Tcp, C4.into(), S4.into(), 7001, TcpFlags::ACK.bits()));
    assert_eq!(sorted(got.iter().map(key).collect()), sorted(want));
    assert!(got.iter().all(|c| c.link == LinkType::RawIp));
    check_accounting(&src.stats(), 4, 0, 0);
}

#[test]
#[ignore = "needs root"]
fn a_waker_ends_the_wait_and_is_drained() {
    let Some(pair) = setup() else { return };
    let src = pair
        .server
        .enter(|| AfPacketSource::open(SERVER_IF, &[]).unwrap())
        .unwrap();
    let mut multi = MultiSource::new(vec![src]);
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    multi.set_waker(theirs).unwrap();
    // Another thread writes while the source waits with a far deadline.
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        std::io::Write::write_all(&mut &ours, &[1, 1, 1]).unwrap();
        ours
    });
    let t = Instant::now();
    let far = Some(Instant::now() + Duration::from_secs(20));
    assert_eq!(multi.next_event(far).unwrap(), Next::Deadline);
    let el = t.elapsed();
    assert!(
        el >= Duration::from_millis(150) && el < Duration::from_secs(5),
        "woken after {el:?}"
    );
    let _ours = writer.join().unwrap();
    // Drained: the next wait lasts until its deadline.
    let t = Instant::now();
    assert_eq!(
        multi
            .next_event(Some(Instant::now() + Duration::from_millis(300)))
            .unwrap(),
        Next::Deadline
    );
    assert!(
        t.elapsed() >= Duration::from_millis(280),
        "{:?}",
        t.elapsed()
    );
}

/// A frame of an IPv4 TCP SYN `src -> dst:port`, with VLAN tags `vlans`.
fn syn4(vlans: &[(u16, u16)], src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> Vec<u8> {
    let ip = craft::ipv4(
        src,
        dst,
        6,
        &[],
        Frag::default(),
        &craft::tcp(40000, port, TcpFlags::SYN),
    );
    craft::ethernet(vlans, craft::ETH_IPV4, &ip)
}

/// Only frames for this host count: the frame's packet type must be
/// PACKET_HOST (not another host's frame seen in promiscuous mode, not a
/// broadcast), it must not carry VLAN tags the interface does not terminate,
/// and its destination must be one of the host's addresses or a door's
/// target. The same tagged knock counts on the VLAN interface.
#[test]
#[ignore = "needs root"]
fn only_frames_for_this_host_count() {
    let Some(pair) = setup() else { return };
    let vlan = try_vlan(&pair);
    pair.server
        .run(&["ip", "link", "set", SERVER_IF, "promisc", "on"])
        .unwrap();
    // A door target the host does not carry (a forwarded / DNAT address).
    let target = Ipv4Addr::new(198, 18, 0, 50);
    let ls = vec![
        Listen::new(Step::tcp(7001), syn_not_ack(), None),
        Listen::new(Step::udp(9000), FlagFilter::ANY, None),
        Listen::new(Step::tcp(7100), syn_not_ack(), Some(target.into())),
    ];
    let (mut src, mut vsrc) = pair
        .server
        .enter(|| {
            let v = vlan.then(|| AfPacketSource::open("kn0.100", &ls).unwrap());
            (AfPacketSource::open(SERVER_IF, &ls).unwrap(), v)
        })
        .unwrap();
    let foreign4 = Ipv4Addr::new(198, 18, 0, 77);
    let foreign6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x77);
    let udp6 = |dst| {
        craft::ethernet(
            &[],
            craft::ETH_IPV6,
            &craft::ipv6(C6, dst, &[], 17, &craft::udp(40000, 9000, b"k")),
        )
    };
    let other_mac = [0x02, 0, 0, 0, 0, 0x99];
    let frames = vec![
        // For this host: counted.
        syn4(&[], C4, S4, 7001),
        udp6(S6),
        syn4(&[], C4, target, 7100),
        // To the server's MAC but another IP (routed through it): ignored.
        syn4(&[], C4, foreign4, 7001),
        udp6(foreign6),
        // Another host's frame, seen because of promiscuous mode: ignored.
        to_mac(syn4(&[], C4, S4, 7001), other_mac),
        to_mac(udp6(S6), other_mac),
        // A broadcast frame: ignored.
        to_mac(syn4(&[], C4, S4, 7001), [0xff; 6]),
        // Tagged frames on the untagged interface: ignored there.
        syn4(&[(craft::TPID_8021Q, 200)], C4, S4, 7001),
        syn4(
            &[(craft::TPID_8021AD, 5), (craft::TPID_8021Q, 6)],
            C4,
            S4,
            7001,
        ),
        syn4(&[(craft::TPID_8021Q, 100)], VC4, VS4, 7001),
    ];
    pair.client.send_frames(CLIENT_IF, &frames).unwrap();
    let got = collect(&mut src, Duration::from_millis(700));
    assert_eq!(
        sorted(got.iter().map(key).collect()),
        sorted(vec![
            tcp(C4, S4, 7001),
            udp(C6, S6, 9000),
            tcp(C4, target, 7100)
        ])
    );
    let st = src.stats();
    assert_eq!(st.events, 3, "{st:?}");
    // Other hosts' and tagged frames stop in the kernel; the foreign
    // addresses are only known in user space.
    assert_eq!(st.kernel_packets, st.received, "{st:?}");
    assert_eq!(st.received, 5, "{st:?}");
    if let Some(v) = &mut vsrc {
        let got = collect(v, Duration::from_millis(300));
        assert_eq!(
            got.iter().map(key).collect::<Vec<_>>(),
            vec![tcp(VC4, VS4, 7001)]
        );
    }
}

/// Knocks over loopback keep working: 127.0.0.1, another 127/8 address and ::1.
#[test]
#[ignore = "needs root"]
fn loopback_knocks_count() {
    assert!(knock_testnet::is_root(), "needs root (network namespaces)");
    let ns = Netns::new("lo").unwrap();
    let ls = vec![
        Listen::new(Step::tcp(7001), syn_not_ack(), None),
        Listen::new(Step::udp(9000), FlagFilter::ANY, None),
    ];
    let mut src = ns
        .enter(|| AfPacketSource::open("lo", &ls).unwrap())
        .unwrap();
    ns.knock(
        &[
            ("127.0.0.1", 7001, "tcp"),
            ("127.0.0.2", 7001, "tcp"),
            ("::1", 9000, "udp"),
            ("127.0.0.1", 9000, "udp"),
        ],
        0,
    )
    .unwrap();
    let got = collect(&mut src, Duration::from_millis(500));
    let mut dsts: Vec<(Proto, IpAddr, u16)> = got
        .iter()
        .map(|c| (c.event.proto, c.event.dst, c.event.dst_port))
        .collect();
    dsts.sort();
    let lo4 = |d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d));
    let mut want = vec![
        (Proto::Tcp, lo4(1), 7001),
        (Proto::Tcp, lo4(2), 7001),
        (Proto::Udp, IpAddr::V6(Ipv6Addr::LOCALHOST), 9000),
        (Proto::Udp, lo4(1), 9000),
    ];
    want.sort();
    assert_eq!(dsts, want);
}

/// Door `i` (from 0) of the many-doors tests: three TCP ports, far apart.
fn door_ports(i: u16, base: u16) -> [u16; 3] {
    [base + 7 * i, base + 10_000 + 7 * i, base + 20_000 + 7 * i]
}

fn doors(n: u16, base: u16) -> Vec<Listen> {
    (0..n)
        .flat_map(|i| door_ports(i, base))
        .map(|p| Listen::new(Step::tcp(p), syn_not_ack(), None))
        .collect()
}

/// SYNs from the client to `port` on the server, as crafted frames.
fn syn_flood(port: u16, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|_| syn4(&[], C4, S4, port)).collect()
}

/// 60, 120 and 400 doors of three TCP ports: the kernel filter attaches
/// (with the default `optmem_max` and with 20480, set inside the test's
/// namespace: the sysctl is per namespace), a knock on door 1 comes
/// through, a flood to an unused port never reaches user space, and a
/// filter swap between two large sets works.
#[test]
#[ignore = "needs root"]
fn many_doors_attach_and_stay_selective() {
    for optmem in [None, Some(20480)] {
        for n in [60, 120, 400] {
            many_doors(n, optmem);
        }
    }
}

fn many_doors(n: u16, optmem: Option<u32>) {
    let Some(pair) = setup() else { return };
    if let Some(v) = optmem {
        let host = || std::fs::read_to_string("/proc/sys/net/core/optmem_max").unwrap();
        let before = host();
        pair.server
            .run(&["sysctl", "-q", "-w", &format!("net.core.optmem_max={v}")])
            .unwrap();
        let seen = pair
            .server
            .run(&["cat", "/proc/sys/net/core/optmem_max"])
            .unwrap();
        assert_eq!(
            seen.trim(),
            v.to_string(),
            "optmem_max is not per namespace"
        );
        assert_eq!(host(), before, "the test changed the host's optmem_max");
    }
    let what = format!("{n} doors, optmem_max {optmem:?}");
    let mut src = pair
        .server
        .enter(|| AfPacketSource::open(SERVER_IF, &doors(n, 10_000)))
        .unwrap()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let widening = src.filter_widening();
    eprintln!("{what}: {widening:?}");
    match (n, optmem) {
        // 180 ranges: exact wherever the default optmem_max holds.
        (60, None) => assert_eq!(widening, None, "{what}"),
        // 1200 ranges are more than one program checks: said so.
        (400, _) => {
            let w = widening.unwrap_or_else(|| panic!("{what}: not widened"));
            assert_eq!(w.exact_ranges, 1200, "{what}");
            assert!(w.to_string().contains("widened"), "{w}");
        }
        _ => {}
    }
    let door1 = door_ports(1, 10_000);
    let knock = |src: &mut AfPacketSource, ports: [u16; 3]| {
        let t: Vec<(&str, u16, &str)> = ports.iter().map(|&p| ("198.18.0.1", p, "tcp")).collect();
        pair.client.knock(&t, 0).unwrap();
        let got = collect(src, Duration::from_millis(500));
        assert_eq!(
            got.iter().map(key).collect::<Vec<_>>(),
            ports.iter().map(|&p| tcp(C4, S4, p)).collect::<Vec<_>>(),
            "{what}"
        );
    };
    knock(&mut src, door1);
    pair.client
        .send_frames(CLIENT_IF, &syn_flood(5000, 300))
        .unwrap();
    assert!(collect(&mut src, Duration::from_millis(300)).is_empty());
    let st = src.stats();
    assert_eq!(st.events, 3, "{what}: {st:?}");
    assert_eq!(
        st.received, 3,
        "{what}: the flood reached user space: {st:?}"
    );
    assert_eq!(st.kernel_packets, 3, "{what}: {st:?}");

    // Swap to another set as large (both programs are charged to the
    // socket while the kernel replaces one with the other).
    src.set_listen(&doors(n, 10_001))
        .unwrap_or_else(|e| panic!("{what}: swap: {e}"));
    knock(&mut src, door_ports(1, 10_001));
}

/// An address added after the source was opened counts from its first
/// knock (the address set is re-read when an unknown destination shows
/// up), in the source's namespace whichever thread reads it.
#[test]
#[ignore = "needs root"]
fn an_address_added_later_counts() {
    let Some(pair) = setup() else { return };
    let ls = vec![Listen::new(Step::tcp(7001), syn_not_ack(), None)];
    let mut src = pair
        .server
        .enter(|| AfPacketSource::open(SERVER_IF, &ls).unwrap())
        .unwrap();
    let new = Ipv4Addr::new(198, 18, 0, 60);
    pair.client
        .send_frames(CLIENT_IF, &[syn4(&[], C4, new, 7001)])
        .unwrap();
    assert!(collect(&mut src, Duration::from_millis(300)).is_empty());
    assert_eq!(src.stats().not_for_host, 1);
    pair.server
        .run(&["ip", "addr", "add", "198.18.0.60/32", "dev", SERVER_IF])
        .unwrap();
    // The set is re-read at most once a second.
    std::thread::sleep(Duration::from_millis(1100));
    pair.client
        .send_frames(CLIENT_IF, &[syn4(&[], C4, new, 7001)])
        .unwrap();
    let got = collect(&mut src, Duration::from_millis(300));
    assert_eq!(
        got.iter().map(key).collect::<Vec<_>>(),
        vec![tcp(C4, new, 7001)]
    );
}

/// Reads `src` until `until`, returning everything it reported.
fn read_until(src: &mut impl Source, until: Instant) -> Vec<Next> {
    let mut out = Vec::new();
    while Instant::now() < until {
        match src.next_event(Some(until)).unwrap() {
            Next::Deadline => {}
            next => out.push(next),
        }
    }
    out
}

#[test]
#[ignore = "needs root"]
fn multi_source_interfaces_fail_and_recover_on_their_own() {
    let Some(pair) = setup() else { return };
    let veth = |a: &str, b: &str| {
        pair.server
            .run(&["ip", "link", "add", a, "type", "veth", "peer", "name", b])
            .unwrap();
        // Crafted frames reach `a` as frames for this host.
        pair.server
            .run(&["ip", "link", "set", a, "address", &mac_text(craft::DST_MAC)])
            .unwrap();
        for n in [a, b] {
            pair.server.run(&["ip", "link", "set", n, "up"]).unwrap();
        }
    };
    veth("kx0", "kx1");
    let frame = |port| {
        craft::ethernet(
            &[],
            craft::ETH_IPV4,
            &craft::ipv4(C4, S4, 17, &[], Frag::default(), &craft::udp(7, port, b"k")),
        )
    };
    let is_knock = |n: &Next, port: u16| matches!(n, Next::Event(c) if key(c) == udp(C4, S4, port));
    let down = |n: &Next, name: &str| matches!(n, Next::Interface(InterfaceEvent::Down { name: x, may_recover: true, .. }) if x == name);
    let up = |n: &Next, name: &str| matches!(n, Next::Interface(InterfaceEvent::Up { name: x }) if x == name);
    // Everything on a thread in the server namespace: reopening happens there.
    pair.server
        .enter(|| {
            let mut multi = MultiSource::open_each(
                &[SERVER_IF, "kx0", "ky0"],
                &listen(),
                &LiveConfig::default(),
            )
            .unwrap();
            // ky0 does not exist (yet): reported, the others read.
            let ev = multi.poll_interface_event().map(Next::Interface).unwrap();
            assert!(down(&ev, "ky0"), "{ev:?}");
            assert_eq!(multi.poll_interface_event(), None);
            assert_eq!(
                multi.interfaces().collect::<Vec<_>>(),
                [(SERVER_IF, true), ("kx0", true), ("ky0", false)]
            );

            // kx0 goes down: reported once; kn0 still delivers; retries of
            // kx0 and ky0 (at 1 s and 3 s) say nothing.
            pair.server
                .run(&["ip", "link", "set", "kx0", "down"])
                .unwrap();
            pair.client
                .knock(&[(S4.to_string().as_str(), 9000, "udp")], 0)
                .unwrap();
            let got = read_until(&mut multi, Instant::now() + Duration::from_millis(3500));
            assert_eq!(got.len(), 2, "{got:?}");
            assert_eq!(got.iter().filter(|n| down(n, "kx0")).count(), 1, "{got:?}");
            assert_eq!(
                got.iter().filter(|n| is_knock(n, 9000)).count(),
                1,
                "{got:?}"
            );

            // kx0 up again: its first knock is not lost, and has it reopened
            // at once (not at the next retry, seconds away).
            pair.server
                .run(&["ip", "link", "set", "kx0", "up"])
                .unwrap();
            // (Once the link carries frames: carrier on, queueing set up.)
            let ready = |dev: &str| {
                let l = pair.server.run(&["ip", "link", "show", dev]).unwrap();
                l.contains("LOWER_UP") && !l.contains("qdisc noop")
            };
            knock_testnet::wait_for("kx1 to carry frames", Duration::from_secs(5), || {
                ready("kx1")
            });
            pair.server.send_frames("kx1", &[frame(9000)]).unwrap();
            let got = read_until(&mut multi, Instant::now() + Duration::from_millis(700));
            assert_eq!(got.len(), 2, "{got:?}");
            assert!(is_knock(&got[0], 9000) && up(&got[1], "kx0"), "{got:?}");

            // ky0 appears: picked up by a retry (backoff: within 8 s here).
            veth("ky0", "ky1");
            let until = Instant::now() + Duration::from_secs(10);
            let mut back = false;
            while !back && Instant::now() < until {
                let n = multi.next_event(Some(until)).unwrap();
                assert!(matches!(n, Next::Deadline) || up(&n, "ky0"), "{n:?}");
                back = up(&n, "ky0");
            }
            assert!(back, "ky0 not picked up");
            knock_testnet::wait_for("ky1 to carry frames", Duration::from_secs(5), || {
                ready("ky1")
            });
            pair.server.send_frames("ky1", &[frame(9000)]).unwrap();
            let got = read_until(&mut multi, Instant::now() + Duration::from_millis(700));
            assert!(got.len() == 1 && is_knock(&got[0], 9000), "{got:?}");
            assert!(multi.interfaces().all(|(_, up)| up));
        })
        .unwrap();
}

/// A UDP knock `C4 -> S4:port` carrying `data`.
fn udp4(port: u16, data: &[u8]) -> Vec<u8> {
    let ip = craft::ipv4(
        C4,
        S4,
        17,
        &[],
        Frag::default(),
        &craft::udp(40000, port, data),
    );
    craft::ethernet(&[], craft::ETH_IPV4, &ip)
}

/// The receive ring, small enough to wrap many times: 5 rounds of frames,
/// sent in bursts of most of a ring and read in between, all come out once
/// and in order; then a burst of twice the ring with nobody reading keeps
/// what fits and counts the rest as kernel drops.
#[test]
#[ignore = "needs root"]
fn ring_wraps_around_and_counts_what_it_cannot_hold() {
    let Some(pair) = setup() else { return };
    let ls = vec![Listen::new(Step::udp(9000), FlagFilter::ANY, None)];
    let cfg = LiveConfig {
        ring_frames: 16,
        ring_frame_size: 256,
        ..LiveConfig::default()
    };
    let mut src = pair
        .server
        .enter(|| AfPacketSource::open_with(SERVER_IF, &ls, &cfg).unwrap())
        .unwrap();
    assert!(src.has_ring());
    let slots = 4096 / 256; // one page-sized block of 256-byte slots
    let mut sent = Vec::new();
    let mut got = Vec::new();
    for round in 0..5u8 {
        let burst: Vec<Vec<u8>> = (0..slots as u8 - 2)
            .map(|k| udp4(9000, &[round, k]))
            .collect();
        sent.extend(burst.iter().map(|f| (f[f.len() - 2], f[f.len() - 1])));
        pair.client.send_frames(CLIENT_IF, &burst).unwrap();
        got.extend(
            collect(&mut src, Duration::from_millis(300))
                .iter()
                .map(|c| c.event.time),
        );
    }
    assert_eq!(got.len(), sent.len(), "every frame read once");
    assert!(got.windows(2).all(|w| w[0] <= w[1]), "in order");
    let st = src.stats();
    assert_eq!((st.events, st.kernel_drops), (sent.len() as u64, 0));

    // Nobody reads: the ring holds `slots` frames, the kernel drops the rest.
    let flood: Vec<Vec<u8>> = (0..2 * slots as u8).map(|k| udp4(9000, &[9, k])).collect();
    pair.client.send_frames(CLIENT_IF, &flood).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let kept = collect(&mut src, Duration::from_millis(300)).len();
    let st = src.stats();
    assert_eq!(kept, slots, "a full ring holds one frame per slot");
    assert_eq!(st.kernel_drops, (2 * slots - kept) as u64);
}

/// A frame longer than its ring slot is cut to the slot and counted as a
/// truncated frame (not taken for a knock, not lost silently); frames that
/// fit, before and after it, are knocks.
#[test]
#[ignore = "needs root"]
fn a_frame_longer_than_its_ring_slot_is_counted_as_truncated() {
    let Some(pair) = setup() else { return };
    let ls = vec![Listen::new(Step::udp(9000), FlagFilter::ANY, None)];
    let cfg = LiveConfig {
        ring_frame_size: 256,
        ..LiveConfig::default()
    };
    let mut src = pair
        .server
        .enter(|| AfPacketSource::open_with(SERVER_IF, &ls, &cfg).unwrap())
        .unwrap();
    let frames = vec![
        udp4(9000, &[1; 100]),
        udp4(9000, &[2; 1000]),
        udp4(9000, &[3; 100]),
    ];
    pair.client.send_frames(CLIENT_IF, &frames).unwrap();
    let got = collect(&mut src, Duration::from_millis(500));
    assert_eq!(got.len(), 2);
    let st = src.stats();
    assert_eq!(st.received, 3);
    assert_eq!(
        st.rejected(Reject::Truncated(knock_capture::Layer::Ipv4)),
        1
    );
    // With the default slot (2048 bytes) the long one is a knock.
    let mut whole = pair
        .server
        .enter(|| AfPacketSource::open(SERVER_IF, &ls).unwrap())
        .unwrap();
    pair.client.send_frames(CLIENT_IF, &frames[1..2]).unwrap();
    assert_eq!(collect(&mut whole, Duration::from_millis(500)).len(), 1);
}

/// Without a ring (`ring_frames` 0) the source reads with `recvfrom`, as
/// before, and sees the same knocks.
#[test]
#[ignore = "needs root"]
fn without_a_ring_the_socket_is_read_per_frame() {
    let Some(pair) = setup() else { return };
    let ls = vec![Listen::new(Step::udp(9000), FlagFilter::ANY, None)];
    let cfg = LiveConfig {
        ring_frames: 0,
        ..LiveConfig::default()
    };
    let mut src = pair
        .server
        .enter(|| AfPacketSource::open_with(SERVER_IF, &ls, &cfg).unwrap())
        .unwrap();
    assert!(!src.has_ring());
    let frames: Vec<Vec<u8>> = (0..5).map(|k| udp4(9000, &[k])).collect();
    pair.client.send_frames(CLIENT_IF, &frames).unwrap();
    assert_eq!(collect(&mut src, Duration::from_millis(500)).len(), 5);
}

/// `next_queued` hands out what is already in the ring without waiting,
/// and nothing once it is empty; `next_event` still waits for the next.
#[test]
#[ignore = "needs root"]
fn next_queued_drains_without_waiting() {
    let Some(pair) = setup() else { return };
    let ls = vec![Listen::new(Step::udp(9000), FlagFilter::ANY, None)];
    let mut multi = pair
        .server
        .enter(|| MultiSource::open(&[SERVER_IF], &ls, &LiveConfig::default()).unwrap())
        .unwrap();
    assert_eq!(multi.next_queued(), None);
    let frames: Vec<Vec<u8>> = (0..20).map(|k| udp4(9000, &[k])).collect();
    pair.client.send_frames(CLIENT_IF, &frames).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut n = 0;
    let t = Instant::now();
    while multi.next_queued().is_some() {
        n += 1;
    }
    assert!(t.elapsed() < Duration::from_millis(50));
    assert_eq!(n, 20);
    let far = Some(Instant::now() + Duration::from_millis(300));
    assert_eq!(multi.next_event(far).unwrap(), Next::Deadline);
}
