//! The OpenMetrics endpoint of the `knockd` example (`metrics = ADDR:PORT`
//! in `[options]`, or `--metrics`): scraped from inside the server
//! namespace before and after real knocks from the client namespace, the
//! counters move by what happened, per door, and no address appears in a
//! label. Root only; `.ci/run` runs it with `--include-ignored`.

// Test support code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use knock_testnet::{wait_for, Pair, SERVER_IF, SERVER_V4};

const ADDR: &str = "127.0.0.1:9464";

fn knockd_bin() -> PathBuf {
    knock_testnet::example_bin("knockd", knock_testnet::Profile::SameAsTest).expect("build example")
}

struct Knockd(Child);

impl Drop for Knockd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The whole HTTP response to `GET path` on the endpoint, from inside the
/// server namespace.
fn get(pair: &Pair, path: &str) -> String {
    pair.server
        .enter(|| {
            let mut s = TcpStream::connect(ADDR).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: knockd\r\nAccept: */*\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap()
}

/// The body of a successful scrape.
fn scrape(pair: &Pair) -> String {
    let r = get(pair, "/metrics");
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.to_owned()
}

/// The value of sample `name` (with its labels, as written), or a panic.
fn value(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{body}"))
}

#[test]
#[ignore = "needs root"]
fn a_knock_moves_the_counters_of_its_door() {
    let pair = Pair::new().expect("namespaces");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let conf = format!(
        "
[options]
    metrics = {ADDR}

[cmd]
    sequence    = 7000,8000,9000
    seq_timeout = 5
    start_command = touch {d}/opened-%IP%
    stop_command  = rm -f {d}/opened-%IP%
    cmd_timeout = 600

[web]
    sequence    = 7100,8100
    start_command = true
"
    );
    fs::write(dir.path().join("knockd.conf"), conf).unwrap();
    let child = pair
        .server
        .command(knockd_bin().to_str().unwrap())
        // kx9 does not exist: one interface failure, counted.
        .args([
            "-c",
            &format!("{d}/knockd.conf"),
            "-i",
            SERVER_IF,
            "-i",
            "kx9",
        ])
        .args(["-g", &format!("{d}/knockd.log"), "--state-dir", &d])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let _k = Knockd(child);
    let log = || {
        fs::read_to_string(dir.path().join("knockd.log")).unwrap_or_default()
            + &fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
    };
    wait_for("knockd to start", Duration::from_secs(20), || {
        log().contains("starting up")
    });
    wait_for("the endpoint", Duration::from_secs(5), || {
        pair.server
            .enter(|| TcpStream::connect(ADDR).is_ok())
            .unwrap()
    });

    let before = scrape(&pair);
    for door in ["cmd", "web"] {
        for family in ["stages", "opens", "closes", "expiries", "invalidations"] {
            let name = format!("knock_door_{family}_total{{door=\"{door}\"}}");
            assert_eq!(value(&before, &name), 0.0, "{name}");
        }
        assert_eq!(
            value(
                &before,
                &format!("knock_door_grants_open{{door=\"{door}\"}}")
            ),
            0.0
        );
    }
    let frames0 = value(&before, "knock_capture_frames_total");
    assert_eq!(
        value(&before, "knock_capture_interface_failures_total"),
        1.0
    );

    // A complete sequence at cmd.
    pair.client
        .knock(
            &[
                (SERVER_V4, 7000, "tcp"),
                (SERVER_V4, 8000, "tcp"),
                (SERVER_V4, 9000, "tcp"),
            ],
            50,
        )
        .unwrap();
    let opened = dir.path().join("opened-198.18.0.2");
    wait_for(
        &format!("the door to open\n{}", log()),
        Duration::from_secs(5),
        || opened.exists(),
    );
    let after = scrape(&pair);
    let cmd = |family: &str| {
        value(
            &after,
            &format!("knock_door_{family}_total{{door=\"cmd\"}}"),
        )
    };
    // knockd counts every correct step, the last one too.
    assert_eq!(cmd("stages"), 3.0, "{after}");
    assert_eq!(cmd("opens"), 1.0, "{after}");
    assert_eq!(cmd("invalidations"), 0.0, "{after}");
    assert_eq!(value(&after, "knock_door_grants_open{door=\"cmd\"}"), 1.0);
    assert_eq!(value(&after, "knock_door_opens_total{door=\"web\"}"), 0.0);
    assert!(value(&after, "knock_capture_frames_total") >= frames0 + 3.0);
    assert!(value(&after, "knock_matcher_events_total") >= 3.0);
    assert_eq!(value(&after, "knock_capture_kernel_drops_total"), 0.0);
    assert_eq!(value(&after, "knock_open_failures_total"), 0.0);
    assert_eq!(value(&after, "knock_close_failures_total"), 0.0);
    // Knocks at this pace are all written, none summarised.
    assert_eq!(value(&after, "knock_log_lines_suppressed_total"), 0.0);

    // A wrong knock ends an attempt at web: an invalidation there.
    pair.client
        .knock(&[(SERVER_V4, 7100, "tcp"), (SERVER_V4, 7000, "tcp")], 50)
        .unwrap();
    wait_for(
        &format!("an invalidation at web\n{}", scrape(&pair)),
        Duration::from_secs(5),
        || {
            value(
                &scrape(&pair),
                "knock_door_invalidations_total{door=\"web\"}",
            ) == 1.0
        },
    );
    // A first step alone: one source with an attempt in progress.
    pair.client.knock(&[(SERVER_V4, 7100, "tcp")], 0).unwrap();
    wait_for(
        &format!("a source tracked\n{}", scrape(&pair)),
        Duration::from_secs(5),
        || value(&scrape(&pair), "knock_sources_tracked") == 1.0,
    );
    let last = scrape(&pair);
    assert_eq!(
        value(&last, "knock_door_stages_total{door=\"web\"}"),
        2.0,
        "{last}"
    );
    // Labels are door names, never addresses.
    assert!(!last.contains("198.18."), "{last}");

    let other = get(&pair, "/");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
}
