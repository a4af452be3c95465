//! Matcher throughput and memory, against a bare-HashMap baseline.
//!
//! For 1 door and 1k, 100k and 1M distinct sources knocking in random order,
//! compares `Matcher::handle_event` (plus draining decisions) with a bare
//! `HashMap<IpAddr, (u16, u8, u64)>` doing one entry update per event on the
//! same stream with the same hasher (the matcher's keyed SipHash-1-3,
//! [`SourceHasher`], with the same seed): the practical
//! limit for any per-source state. Criterion reports both; the summary at the
//! end prints the matcher's rate as a ratio of the baseline's and the bytes
//! of state per tracked source (counted by a global allocator).
//!
//! Run: `cargo bench --bench matcher` (quick summary only: add `-- --summary`).

// criterion_group! generates undocumented items; the counting allocator needs unsafe.
#![allow(missing_docs, unsafe_code)]
// A bench aborts on a broken setup; that is what expect is for here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use knock_core::{Door, Event, Limits, Matcher, SourceHasher, Step, TcpFlags, Timestamp};

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
const STREAM: usize = 2_000_000;
const PORTS: [u16; 3] = [7000, 8000, 9000];
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
/// The seed of the matcher's hasher and of the baseline's.
const SEED: u64 = 0x5eed;

/// A small deterministic PRNG (xorshift64*), so every run sees the same stream.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// `n` distinct addresses in 100.64.0.0/10 (a bijection on the low 22 bits).
fn source(i: usize) -> IpAddr {
    let low = (i as u32).wrapping_mul(0x9E37_79B1) & 0x003F_FFFF;
    IpAddr::V4(Ipv4Addr::from(0x6440_0000 | low))
}

/// Each event picks a random source and knocks its next step (7000, 8000,
/// 9000, 7000, ...), so attempts start, advance and open.
fn stream(n: usize) -> Vec<Event> {
    let mut rng = Rng(0x1234_5678_9abc_def1 ^ n as u64);
    let mut cursor = vec![0u8; n];
    (0..STREAM)
        .map(|_| {
            let i = (rng.next() % n as u64) as usize;
            let port = PORTS[cursor[i] as usize];
            cursor[i] = (cursor[i] + 1) % 3;
            Event::tcp(source(i), SERVER, port, TcpFlags::SYN, Timestamp::ZERO)
        })
        .collect()
}

fn matcher() -> Matcher {
    let door = Door::new("ssh", PORTS.iter().map(|&p| Step::tcp(p)).collect())
        .with_seq_timeout(Duration::from_secs(3600));
    Matcher::with_seed(vec![door], Limits::default(), SEED).expect("valid door")
}

/// Runs the matcher over `events`; time advances 1 µs per event from `t`.
fn run_matcher(m: &mut Matcher, events: &[Event], t: &mut u64) -> usize {
    let mut n = 0;
    for ev in events {
        *t += 1;
        m.handle_event(Timestamp::from_micros(*t), ev);
        while let Some(d) = m.poll_decision() {
            black_box(d);
            n += 1;
        }
    }
    n
}

type Baseline<S = SourceHasher> = HashMap<IpAddr, (u16, u8, u64), S>;

fn baseline() -> Baseline {
    Baseline::with_hasher(SourceHasher::new(SEED))
}

/// The same map with std's default hasher (`RandomState`, SipHash-1-3 as
/// std implements it): what the matcher was compared with before it took a
/// caller-seeded hasher. std's implementation is slower per key than the
/// `siphasher` crate's, so this ratio is the higher one.
fn std_baseline() -> Baseline<std::collections::hash_map::RandomState> {
    HashMap::default()
}

fn run_baseline<S: std::hash::BuildHasher>(
    map: &mut Baseline<S>,
    events: &[Event],
    t: &mut u64,
) -> usize {
    for ev in events {
        *t += 1;
        let e = map.entry(ev.src).or_insert((0, 0, 0));
        e.0 = ev.dst_port;
        e.1 = e.1.wrapping_add(1);
        e.2 = *t;
    }
    map.len()
}

const CHUNK: usize = 100_000;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("events");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(CHUNK as u64));
    for n in SIZES {
        let events = stream(n);
        let mut t = 0;
        let mut m = matcher();
        run_matcher(&mut m, &events, &mut t);
        let mut off = 0;
        g.bench_function(BenchmarkId::new("matcher", n), |b| {
            b.iter(|| {
                off = (off + CHUNK) % STREAM;
                run_matcher(&mut m, &events[off..off + CHUNK.min(STREAM - off)], &mut t)
            })
        });
        let mut map = baseline();
        let mut tb = 0;
        run_baseline(&mut map, &events, &mut tb);
        g.bench_function(BenchmarkId::new("baseline_hashmap", n), |b| {
            b.iter(|| {
                off = (off + CHUNK) % STREAM;
                run_baseline(
                    &mut map,
                    &events[off..off + CHUNK.min(STREAM - off)],
                    &mut tb,
                )
            })
        });
    }
    g.finish();
}

/// Rate of one whole pass over the stream, in events per second.
fn rate(pass: impl FnOnce() -> usize) -> f64 {
    let start = Instant::now();
    black_box(pass());
    STREAM as f64 / start.elapsed().as_secs_f64()
}

/// Passes of each side; they alternate, so that both see the same machine
/// (frequency, neighbours) and the best of each is compared.
const ROUNDS: usize = 5;

/// Bytes the matcher holds per tracked source after `n` distinct first knocks.
fn bytes_per_source(n: usize) -> f64 {
    let before = ALLOCATED.load(Ordering::Relaxed);
    let mut m = matcher();
    for i in 0..n {
        let ev = Event::tcp(source(i), SERVER, PORTS[0], TcpFlags::SYN, Timestamp::ZERO);
        m.handle_event(Timestamp::from_micros(i as u64), &ev);
        while m.poll_decision().is_some() {}
    }
    let after = ALLOCATED.load(Ordering::Relaxed);
    assert_eq!(m.stats().sources, n);
    (after - before) as f64 / n as f64
}

/// The sizes to run: `KNOCK_BENCH_SIZES=1000,100000` picks some (for profiling one).
fn sizes() -> Vec<usize> {
    std::env::var("KNOCK_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| SIZES.to_vec())
}

fn summary() {
    println!("\nsummary: matcher vs bare HashMap baseline (same stream, same hasher)");
    println!("(std ratio: against the same map with std's default hasher)");
    println!(
        "{:>10} {:>16} {:>16} {:>8} {:>16} {:>10}",
        "sources", "matcher ev/s", "baseline ev/s", "ratio", "bytes/source", "std ratio"
    );
    for n in sizes() {
        let events = stream(n);
        let mut m = matcher();
        let mut t = 0;
        run_matcher(&mut m, &events, &mut t); // warm: fill the table
        let mut map = baseline();
        let mut tb = 0;
        run_baseline(&mut map, &events, &mut tb);
        let mut std_map = std_baseline();
        let mut ts = 0;
        run_baseline(&mut std_map, &events, &mut ts);
        let (mut ours, mut base, mut std_base) = (0f64, 0f64, 0f64);
        for _ in 0..ROUNDS {
            ours = ours.max(rate(|| run_matcher(&mut m, &events, &mut t)));
            base = base.max(rate(|| run_baseline(&mut map, &events, &mut tb)));
            std_base = std_base.max(rate(|| run_baseline(&mut std_map, &events, &mut ts)));
        }
        drop((m, map, std_map));
        println!(
            "{:>10} {:>16.0} {:>16.0} {:>8.2} {:>16.1} {:>10.2}",
            n,
            ours,
            base,
            ours / base,
            bytes_per_source(n),
            ours / std_base
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    if !std::env::args().any(|a| a == "--summary") {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    summary();
}
