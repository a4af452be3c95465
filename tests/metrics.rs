//! The OpenMetrics endpoint of the `knockd` example (`metrics = ADDR:PORT`
//! in `[options]`, or `--metrics`): scraped from inside the server
//! namespace before and after real knocks from the client namespace, the
//! counters move by what happened, per door, and no address appears in a
//! label. Root only; `.ci/run` runs it with `--include-ignored`.

// Test support code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{touch_door, Server, Setup};
use knock_testnet::{wait_for, SERVER_V4};

const ADDR: &str = "127.0.0.1:9464";

/// The body of a successful scrape.
fn scrape(s: &Server) -> String {
    let r = s.http_get(ADDR, "/metrics");
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
    let conf = format!(
        "
[options]
    metrics = {ADDR}
{}
[web]
    sequence    = 7100,8100
    start_command = true
",
        touch_door("7000,8000,9000")
    );
    // kx9 does not exist: one interface failure, counted.
    let s = Setup::new(&conf).args(&["-i", "kx9"]).quiet().start();
    let pair = &s.pair;
    wait_for("the endpoint", Duration::from_secs(5), || {
        pair.server
            .enter(|| TcpStream::connect(ADDR).is_ok())
            .unwrap()
    });

    let before = scrape(&s);
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
    s.wait_opened("the door to open", Duration::from_secs(5));
    let after = scrape(&s);
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
        &format!("an invalidation at web\n{}", scrape(&s)),
        Duration::from_secs(5),
        || value(&scrape(&s), "knock_door_invalidations_total{door=\"web\"}") == 1.0,
    );
    // A first step alone: one source with an attempt in progress.
    pair.client.knock(&[(SERVER_V4, 7100, "tcp")], 0).unwrap();
    wait_for(
        &format!("a source tracked\n{}", scrape(&s)),
        Duration::from_secs(5),
        || value(&scrape(&s), "knock_sources_tracked") == 1.0,
    );
    let last = scrape(&s);
    assert_eq!(
        value(&last, "knock_door_stages_total{door=\"web\"}"),
        2.0,
        "{last}"
    );
    // Labels are door names, never addresses.
    assert!(!last.contains("198.18."), "{last}");

    let other = s.http_get(ADDR, "/");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
}
