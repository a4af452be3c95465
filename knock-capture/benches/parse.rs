//! Parsing throughput (packets/s) against a baseline that only touches the
//! same bytes (a byte sum), reported as a ratio at the end.
//!
//! `cargo bench -p knock-capture --bench parse`

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use criterion::{Criterion, Throughput};
use knock_capture::craft::{self, Ext, Frag};
use knock_capture::{parse, LinkType};
use knock_core::{TcpFlags, Timestamp};

fn frames() -> Vec<(LinkType, Vec<u8>)> {
    let c4 = Ipv4Addr::new(198, 18, 0, 2);
    let s4 = Ipv4Addr::new(198, 18, 0, 1);
    let c6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    let s6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let syn = craft::tcp(40000, 7000, TcpFlags::SYN);
    let udp = craft::udp(40000, 9000, b"k");
    let v4 = craft::ipv4(c4, s4, 6, &[], Frag::default(), &syn);
    let v4u = craft::ipv4(c4, s4, 17, &[1, 1, 1, 0], Frag::default(), &udp);
    let v6 = craft::ipv6(c6, s6, &[], 6, &syn);
    let v6e = craft::ipv6(c6, s6, &[Ext::opts(0, 0), Ext::fragment(0, true)], 17, &udp);
    vec![
        (
            LinkType::Ethernet,
            craft::ethernet(&[], craft::ETH_IPV4, &v4),
        ),
        (
            LinkType::Ethernet,
            craft::ethernet(&[(craft::TPID_8021Q, 100)], craft::ETH_IPV4, &v4u),
        ),
        (
            LinkType::Ethernet,
            craft::ethernet(&[], craft::ETH_IPV6, &v6),
        ),
        (LinkType::LinuxSll, craft::sll(craft::ETH_IPV6, &v6e)),
        (LinkType::LinuxSll2, craft::sll2(craft::ETH_IPV4, 2, &v4)),
        (LinkType::RawIp, v6),
    ]
}

fn parse_all(fs: &[(LinkType, Vec<u8>)]) -> usize {
    fs.iter()
        .filter(|(l, b)| parse(*l, black_box(b), Timestamp::ZERO).is_ok())
        .count()
}

fn baseline(fs: &[(LinkType, Vec<u8>)]) -> u32 {
    fs.iter()
        .map(|(_, b)| black_box(b).iter().map(|&x| u32::from(x)).sum::<u32>())
        .sum()
}

fn time_per_packet(f: impl Fn() -> u64, packets: u64) -> f64 {
    let iters = 200_000u64;
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..iters {
        acc = acc.wrapping_add(f());
    }
    black_box(acc);
    t.elapsed().as_secs_f64() / (iters * packets) as f64
}

fn main() {
    let fs = frames();
    let n = fs.len() as u64;
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(n));
    g.bench_function("parse_mix", |b| b.iter(|| parse_all(&fs)));
    g.bench_function("baseline_byte_sum", |b| b.iter(|| baseline(&fs)));
    g.finish();
    c.final_summary();

    let p = time_per_packet(|| parse_all(&fs) as u64, n);
    let b = time_per_packet(|| u64::from(baseline(&fs)), n);
    println!(
        "parse: {:.1} Mpackets/s, baseline: {:.1} Mpackets/s, parse/baseline time ratio: {:.2}",
        1e-6 / p,
        1e-6 / b,
        p / b
    );
}
