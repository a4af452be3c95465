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
    Some(Pair::new().unwrap())
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

/// The knocks above that are knocks, as seen on the parent interface.
fn socket_knocks(vlan: bool) -> Vec<Key> {
    let mut v = vlan_knocks(vlan);
    v.extend([
        tcp(C4, S4, 7000),
        tcp(C4, S4, 7001),
        udp(C4, S4, 9000),
        tcp(C6, S6, 7000),
        udp(C6, S6, 9000),
        udp(C6, S6, 9001),
    ]);
    v
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
/// one stays in the data and the filter passes it up). All knocks.
fn tagged_frames() -> (Vec<Vec<u8>>, Vec<Key>) {
    let ip = craft::ipv4(
        C4,
        S4,
        6,
        &[],
        Frag::default(),
        &craft::tcp(5, 7000, TcpFlags::SYN),
    );
    let ip6 = craft::ipv6(C6, S6, &[], 17, &craft::udp(6, 9000, b"k"));
    let frames = vec![
        craft::ethernet(&[(craft::TPID_8021Q, 100)], craft::ETH_IPV4, &ip),
        craft::ethernet(&[(craft::TPID_8021Q, 100)], craft::ETH_IPV6, &ip6),
        craft::ethernet(
            &[(craft::TPID_8021AD, 5), (craft::TPID_8021Q, 6)],
            craft::ETH_IPV4,
            &ip,
        ),
    ];
    (
        frames,
        vec![tcp(C4, S4, 7000), udp(C6, S6, 9000), tcp(C4, S4, 7000)],
    )
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
    let (tagged, tagged_knocks) = tagged_frames();
    pair.client.send_frames(CLIENT_IF, &tagged).unwrap();
    let side = |port| {
        craft::ethernet(
            &[],
            craft::ETH_IPV4,
            &craft::ipv4(C4, S4, 17, &[], Frag::default(), &craft::udp(7, port, b"k")),
        )
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
    let mut want_parent = socket_knocks(vlan);
    want_parent.extend(crafted_knocks());
    want_parent.extend(tagged_knocks);
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
        assert_eq!(
            sorted(by_if.remove(&idx[2]).unwrap_or_default()),
            sorted(vlan_knocks(true))
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
    let mut want = socket_knocks(false);
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
