//! What keeping a datagram's payload costs the capture: a replay of UDP
//! knocks (100 bytes of data each) to a knock port whose listen entry does
//! not ask for the data (what the capture does now for every port but the
//! SPA port's) against the same replay with an entry that asks for it (what
//! it did for every datagram before: a copy into a `Box<[u8]>` each),
//! reported as a ratio at the end.
//!
//! `cargo bench -p knock-capture --bench payload`

use std::hint::black_box;
use std::io::Cursor;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use knock_capture::craft::{self, Frag};
use knock_capture::{LinkType, Next, ReplaySource, Source};
use knock_core::{FlagFilter, Listen, Step};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

const PACKETS: usize = 10_000;

/// A pcap of `PACKETS` UDP knocks to port 9000 from as many sources.
fn capture() -> Arc<[u8]> {
    let header = PcapHeader {
        datalink: DataLink::from(LinkType::Ethernet.linktype()),
        ..PcapHeader::default()
    };
    let Ok(mut w) = PcapWriter::with_header(Vec::new(), header) else {
        panic!("pcap writer");
    };
    let dst = Ipv4Addr::new(198, 18, 0, 1);
    for i in 0..PACKETS as u32 {
        let src = Ipv4Addr::from(0xc612_0000 + 2 + i);
        let ip = craft::ipv4(
            src,
            dst,
            17,
            &[],
            Frag::default(),
            &craft::udp(40000, 9000, &[b'k'; 100]),
        );
        let f = craft::ethernet(&[], craft::ETH_IPV4, &ip);
        let p = PcapPacket::new(Duration::from_micros(u64::from(i)), f.len() as u32, &f);
        if w.write_packet(&p).is_err() {
            panic!("pcap write");
        }
    }
    w.into_writer().into()
}

/// Replays the capture with `entry` as the listen set; the bytes of
/// payload kept.
fn replay(pcap: &Arc<[u8]>, entry: Listen) -> usize {
    let Ok(mut src) = ReplaySource::from_reader(Cursor::new(Arc::clone(pcap))) else {
        panic!("replay");
    };
    let _ = src.set_listen(&[entry]);
    let mut kept = 0;
    while let Ok(Next::Event(c)) = src.next_event(None) {
        kept += black_box(c).payload.map_or(0, |p| p.len());
    }
    kept
}

/// The best time per packet of `runs` replays.
fn per_packet(pcap: &Arc<[u8]>, entry: Listen, runs: usize) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(replay(pcap, entry));
            t.elapsed().as_secs_f64() / PACKETS as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let pcap = capture();
    let knock = Listen::new(Step::udp(9000), FlagFilter::ANY, None);
    let spa = knock.with_payload();
    assert_eq!(replay(&pcap, knock), 0);
    assert_eq!(replay(&pcap, spa), 100 * PACKETS);

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("replay_udp_knocks");
    g.throughput(Throughput::Elements(PACKETS as u64));
    g.bench_function("header_only", |b| b.iter(|| replay(&pcap, knock)));
    g.bench_function("payload_kept", |b| b.iter(|| replay(&pcap, spa)));
    g.finish();
    c.final_summary();

    // Interleaved, best of 20 each, for the ratio.
    let (mut now, mut before) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..4 {
        now = now.min(per_packet(&pcap, knock, 5));
        before = before.min(per_packet(&pcap, spa, 5));
    }
    println!(
        "UDP knock replay: {:.0} ns/packet without the payload, {:.0} ns/packet keeping it; \
         keeping/without time ratio: {:.2}",
        now * 1e9,
        before * 1e9,
        before / now
    );
}
