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

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use knock_testnet::{wait_for, Pair, SERVER_IF, SERVER_V4};

/// Wake-ups allowed in a 10 s window, over all threads (a periodic timer of
/// even 1 Hz would show 10).
const MAX_WAKEUPS: u64 = 3;

fn knockd_bin() -> PathBuf {
    knock_testnet::example_bin("knockd", knock_testnet::Profile::SameAsTest).expect("build example")
}

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

/// Scrapes the endpoint once from inside the server namespace; the body.
fn scrape(pair: &Pair) -> String {
    pair.server
        .enter(|| {
            let mut s = std::net::TcpStream::connect(METRICS).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: knockd\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap()
}

struct Knockd(Child);

impl Drop for Knockd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs root"]
fn knockd_makes_no_periodic_wakeups_when_idle() {
    let pair = Pair::new().expect("namespaces");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let conf = format!(
        "
[cmd]
    sequence    = 7000,8000
    seq_timeout = 5
    start_command = touch {d}/opened-%IP%
    stop_command  = rm -f {d}/opened-%IP%
    cmd_timeout = 600

[nft]
    sequence    = 7100,8100
    open        = tcp/22
    firewall    = nftables

[ipt]
    sequence    = 7200,8200
    open        = tcp/2222
    firewall    = iptables
"
    );
    fs::write(dir.path().join("knockd.conf"), conf).unwrap();
    let child = pair
        .server
        .command(knockd_bin().to_str().unwrap())
        .args(["-c", &format!("{d}/knockd.conf"), "-i", SERVER_IF])
        .args(["-g", &format!("{d}/knockd.log"), "--state-dir", &d])
        .args(["--metrics", METRICS])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let k = Knockd(child);
    let pid = k.0.id();
    let log = || fs::read_to_string(dir.path().join("knockd.log")).unwrap_or_default();
    wait_for("knockd to start", Duration::from_secs(20), || {
        log().contains("starting up")
    });

    let first = scrape(&pair);
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
    pair.client
        .knock(&[(SERVER_V4, 7000, "tcp"), (SERVER_V4, 8000, "tcp")], 50)
        .unwrap();
    let opened = dir.path().join("opened-198.18.0.2");
    wait_for(
        &format!("the start command\n{}", log()),
        Duration::from_secs(10),
        || opened.exists(),
    );
    let second = scrape(&pair);
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
