//! Test vectors of the time-derived sequence (knock-rs derive v1), computed
//! with the independent Python version in README.md ("Beyond knockd"). A change
//! here breaks every client: bump the version in the HMAC message instead.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use knock_config::derive::{derive, window_of, Secret};
use knock_config::DerivedSequence;
use knock_core::{Proto, Step};

fn spec(length: usize, lo: u16, hi: u16, protocols: &[Proto], period: u64) -> DerivedSequence {
    let mut d = DerivedSequence::new("/unused");
    d.length = length;
    d.ports = lo..=hi;
    d.protocols = protocols.to_vec();
    d.period = Duration::from_secs(period);
    d
}

fn steps(list: &[(u16, &str)]) -> Vec<Step> {
    list.iter()
        .map(|&(port, p)| Step {
            port,
            proto: p.parse().unwrap(),
        })
        .collect()
}

#[test]
fn window_number_of_a_unix_time() {
    // 2023-11-14T22:13:20Z with a 30 s period; window 56,666,667 starts at
    // 1,700,000,010 s.
    let w = window_of(Duration::from_secs(1_700_000_000), Duration::from_secs(30));
    assert_eq!(w, 56_666_666);
    assert_eq!(
        window_of(
            Duration::from_millis(1_700_000_009_999),
            Duration::from_secs(30)
        ),
        56_666_666
    );
    assert_eq!(
        window_of(
            Duration::from_millis(1_700_000_010_000),
            Duration::from_secs(30)
        ),
        56_666_667
    );
}

#[test]
fn vectors() {
    let horse = Secret::from_bytes(b"correct horse battery staple\n").unwrap();
    let tcp = [Proto::Tcp];
    let cases: Vec<(&Secret, &str, u64, DerivedSequence, Vec<Step>)> = vec![
        (
            &horse,
            "openSSH",
            56_666_666,
            spec(4, 20000, 60000, &tcp, 30),
            steps(&[
                (27409, "tcp"),
                (28488, "tcp"),
                (56550, "tcp"),
                (50196, "tcp"),
            ]),
        ),
        (
            &horse,
            "openSSH",
            56_666_667,
            spec(4, 20000, 60000, &tcp, 30),
            steps(&[
                (23425, "tcp"),
                (40569, "tcp"),
                (45604, "tcp"),
                (36886, "tcp"),
            ]),
        ),
        (
            &horse,
            "web",
            56_666_666,
            // Written udp,tcp: the derivation orders tcp first anyway.
            spec(6, 1024, 65535, &[Proto::Udp, Proto::Tcp], 30),
            steps(&[
                (20680, "tcp"),
                (51071, "udp"),
                (35440, "tcp"),
                (62831, "udp"),
                (55062, "tcp"),
                (10161, "tcp"),
            ]),
        ),
    ];
    for (secret, door, w, spec, want) in cases {
        assert_eq!(
            derive(secret, door, &spec, w).unwrap(),
            want,
            "{door} window {w}"
        );
    }
    // A 32-byte binary secret, a range exactly as long as the sequence.
    let bin = Secret::from_bytes(&(0u8..32).collect::<Vec<_>>()).unwrap();
    assert_eq!(
        derive(
            &bin,
            "d",
            &spec(3, 7000, 7002, &[Proto::Tcp, Proto::Udp], 30),
            0
        )
        .unwrap(),
        steps(&[(7000, "udp"), (7001, "tcp"), (7002, "udp")])
    );
    // A non-ASCII door name, a huge window, every port of a 32-port range.
    let k = Secret::from_bytes(b"k").unwrap();
    let ports: Vec<u16> = derive(
        &k,
        "été",
        &spec(32, 40000, 40031, &[Proto::Udp], 30),
        1 << 40,
    )
    .unwrap()
    .iter()
    .map(|s| s.port)
    .collect();
    assert_eq!(
        ports,
        [
            40022, 40010, 40026, 40027, 40028, 40011, 40019, 40015, 40001, 40031, 40025, 40021,
            40020, 40018, 40016, 40013, 40029, 40005, 40002, 40030, 40024, 40003, 40004, 40006,
            40017, 40009, 40014, 40007, 40023, 40000, 40008, 40012
        ]
    );
}
