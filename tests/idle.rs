//! Idle: the `knockd` example with no traffic makes no periodic wake-ups.
//!
//! knockd runs in a namespace with a command door (its sink has worker and
//! timer threads), a native nftables door and a native iptables door. Over
//! 10 s with no traffic, the voluntary context switches of every thread
//! (`/proc/PID/task/*/status`) may grow by at most [`MAX_WAKEUPS`]; then
//! again with a grant open and its stop command pending (a deadline 10
//! minutes away must not make anything tick). The metrics endpoint is on
//! and scraped once before each window: its thread must sleep in `accept`.
//! Root only; `.ci/run` runs it with `--include-ignored`.

// Test support code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use common::{touch_door, Setup};
use knock_testnet::SERVER_V4;

/// Wake-ups allowed in a 10 s window, over all threads (a periodic timer of
/// even 1 Hz would show 10).
const MAX_WAKEUPS: u64 = 3;

/// Voluntary context switches of every thread of `pid`, by "tid name".
fn switches(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let (Ok(status), Ok(comm)) = (
            fs::read_to_string(dir.join("status")),
            fs::read_to_string(dir.join("comm")),
        ) else {
            continue; // the thread just ended
        };
        let n = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let tid = dir.file_name().unwrap().to_string_lossy().into_owned();
        out.insert(format!("{tid} {}", comm.trim()), n);
    }
    out
}

/// Wake-ups per thread over `window`, after waiting `settle`.
fn wakeups(pid: u32, settle: Duration, window: Duration) -> (u64, String) {
    std::thread::sleep(settle);
    let before = switches(pid);
    std::thread::sleep(window);
    let after = switches(pid);
    let mut total = 0;
    let mut report = String::new();
    for (thread, n) in &after {
        let d = n - before.get(thread).copied().unwrap_or(0);
        total += d;
        report.push_str(&format!("  {thread}: +{d}\n"));
    }
    (total, report)
}

/// Where the endpoint listens, in the server namespace.
const METRICS: &str = "127.0.0.1:9464";

#[test]
#[ignore = "needs root"]
fn knockd_makes_no_periodic_wakeups_when_idle() {
    let conf = touch_door("7000,8000")
        + "
[nft]
    sequence    = 7100,8100
    open        = tcp/22
    firewall    = nftables

[ipt]
    sequence    = 7200,8200
    open        = tcp/2222
    firewall    = iptables
";
    let s = Setup::new(&conf)
        .no_iptables_drop()
        .args(&["--metrics", METRICS])
        .quiet()
        .start();
    let pid = s.pid();

    let first = s.http_get(METRICS, "/metrics");
    assert!(
        first.contains("knock_door_opens_total{door=\"cmd\"} 0"),
        "{first}"
    );
    let (fresh, report) = wakeups(pid, Duration::from_secs(1), Duration::from_secs(10));
    eprintln!("idle, fresh: {fresh} voluntary context switches in 10 s\n{report}");
    assert!(
        fresh <= MAX_WAKEUPS,
        "{fresh} wake-ups in 10 s of idle (at most {MAX_WAKEUPS}):\n{report}"
    );

    // Open the command door: a stop command is now pending for 10 minutes.
    s.pair
        .client
        .knock(&[(SERVER_V4, 7000, "tcp"), (SERVER_V4, 8000, "tcp")], 50)
        .unwrap();
    s.wait_opened("the start command", Duration::from_secs(10));
    let second = s.http_get(METRICS, "/metrics");
    assert!(
        second.contains("knock_door_opens_total{door=\"cmd\"} 1"),
        "{second}"
    );
    let (pending, report) = wakeups(pid, Duration::from_secs(1), Duration::from_secs(10));
    eprintln!("idle, stop pending: {pending} voluntary context switches in 10 s\n{report}");
    assert!(
        pending <= MAX_WAKEUPS,
        "{pending} wake-ups in 10 s with a stop pending (at most {MAX_WAKEUPS}):\n{report}"
    );
}
