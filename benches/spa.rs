//! What a refused SPA packet costs, against one HMAC-SHA256 of the same
//! bytes (the baseline: the least any verifier that authenticates can do).
//!
//! The packets are fwknop's usual 204 bytes: a real packet sealed with
//! another HMAC key (a wrong key), and base64 junk (what a flood sends).
//! Both pass every check before the HMAC, so each costs the verifier one
//! HMAC and nothing more; a packet with a character outside base64 costs
//! less (no HMAC). The summary prints each as a ratio of the baseline,
//! measured in the same run, and a valid packet (HMAC, AES, digest, replay
//! cache) for scale.
//!
//! Run: `cargo bench --bench spa` (summary only: `-- --summary`).

#![allow(missing_docs)]
// A bench aborts on a broken setup; that is what expect is for here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use hmac::{Hmac, Mac};
use knock_core::Step;
use knock_spa::{seal, Access, Keys, Message, Stanza, Verifier};
use sha2::Sha256;

const KEY: &str = "ZxwCwpGiY1Iv/nzNSES5J5LjuyJ6VpuHvBjzhY2bvck=";
const HMAC: &str =
    "913yacJvmZCnAkEMp7qifH1iZ2fJpda27ZO2WLXNbIWtImTr3ITQBGCZWcSzjEJloNi/cyz13s+7LsyNiH4i8w==";
const NOW: u64 = 1_796_000_000;

fn keys() -> Keys {
    Keys::from_base64(KEY, HMAC).unwrap()
}

fn packet(keys: &Keys, rand: u64) -> Vec<u8> {
    let m = Message::access(
        "alice",
        NOW,
        Access {
            addr: Some("198.18.0.2".parse().unwrap()),
            ports: vec![Step::tcp(22)],
        },
        rand,
    );
    seal(keys, m.plaintext().as_bytes(), [7; 8]).into_bytes()
}

fn wrong_hmac_packet() -> Vec<u8> {
    let enc = Keys::decode_base64(KEY).unwrap();
    packet(&Keys::new(&enc, b"another HMAC key").unwrap(), 1)
}

fn junk() -> Vec<u8> {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..204u32).map(|i| B64[(i * 37 % 64) as usize]).collect()
}

fn src() -> IpAddr {
    "100.64.0.1".parse().unwrap()
}

fn verifier() -> Verifier {
    Verifier::new(vec![Stanza::new(keys())])
}

/// The baseline: one HMAC-SHA256 (keyed with the stanza's key) over the
/// packet's bytes.
fn hmac_once(key: &[u8], bytes: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(bytes);
    m.finalize().into_bytes().into()
}

fn benches(c: &mut Criterion) {
    let hmac_key = Keys::decode_base64(HMAC).unwrap();
    let wrong = wrong_hmac_packet();
    let junk = junk();
    let now = Duration::from_secs(NOW);
    let mut g = c.benchmark_group("spa");
    g.bench_function("baseline: HMAC-SHA256 of 204 bytes", |b| {
        b.iter(|| hmac_once(black_box(&hmac_key), black_box(&wrong)))
    });
    let mut v = verifier();
    g.bench_function("refuse: wrong HMAC key", |b| {
        b.iter(|| v.verify(now, src(), black_box(&wrong)).is_err())
    });
    let mut v = verifier();
    g.bench_function("refuse: base64 junk", |b| {
        b.iter(|| v.verify(now, src(), black_box(&junk)).is_err())
    });
    g.finish();
}

criterion_group!(group, benches);

/// Nanoseconds per call of `f`, the best of 5 runs of `n` calls.
fn per_call(n: u32, mut f: impl FnMut() -> bool) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            let mut ok = 0u32;
            for _ in 0..n {
                ok += u32::from(black_box(f()));
            }
            black_box(ok);
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

fn summary() {
    let n = 100_000;
    let hmac_key = Keys::decode_base64(HMAC).unwrap();
    let wrong = wrong_hmac_packet();
    let junk = junk();
    let now = Duration::from_secs(NOW);
    let base = per_call(n, || hmac_once(&hmac_key, &wrong)[0] != 1);
    let mut v = verifier();
    let wrong_ns = per_call(n, || v.verify(now, src(), &wrong).is_err());
    let mut v = verifier();
    let junk_ns = per_call(n, || v.verify(now, src(), &junk).is_err());
    let mut bad_char = junk.clone();
    bad_char[100] = b'*';
    let mut v = verifier();
    let char_ns = per_call(n, || v.verify(now, src(), &bad_char).is_err());
    // Valid packets, each new (the replay cache grows by one per packet).
    let k = keys();
    let valid: Vec<Vec<u8>> = (0..20_000).map(|i| packet(&k, i)).collect();
    let mut v = verifier();
    let mut i = 0;
    let valid_ns = per_call(4_000, || {
        i += 1;
        v.verify(now, src(), &valid[i % valid.len()]).is_ok()
    });
    println!("spa: per packet (204 bytes), best of 5 x {n}");
    println!("  baseline HMAC-SHA256:        {base:8.0} ns");
    println!(
        "  refused, wrong HMAC key:     {wrong_ns:8.0} ns  ({:.2}x the baseline)",
        wrong_ns / base
    );
    println!(
        "  refused, base64 junk:        {junk_ns:8.0} ns  ({:.2}x the baseline)",
        junk_ns / base
    );
    println!(
        "  refused, not base64:         {char_ns:8.0} ns  ({:.2}x the baseline)",
        char_ns / base
    );
    println!(
        "  accepted (HMAC, AES, digest, replay cache): {valid_ns:8.0} ns  ({:.2}x the baseline)",
        valid_ns / base
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--summary") {
        group();
        Criterion::default().configure_from_args().final_summary();
    }
    summary();
}
