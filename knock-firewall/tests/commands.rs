//! The command sink without the kernel: substitution, `_6` fallback, the
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic
//! state file across a restart, the bounded queue.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use knock_core::Step;
use knock_firewall::{CommandConfig, CommandSink, DoorCommands, Error, FirewallSink, Grant};

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("knock-fw-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn lines(p: &PathBuf) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn substitutes_ip_and_falls_back_to_ipv4_commands() {
    let dir = tmpdir("subst");
    let log = dir.join("log");
    let l = log.display();
    let door = DoorCommands::new(format!("echo start %IP% %IP% >> {l}"))
        .with_stop(format!("echo stop %IP% >> {l}"))
        .with_start6(format!("echo start6 %IP% >> {l}"));
    let mut sink = CommandSink::new(CommandConfig::default().door("ssh", door)).unwrap();
    let v4 = Grant::new("ssh", "198.18.0.2".parse().unwrap(), 1, vec![Step::tcp(22)]);
    let v6 = Grant::new(
        "ssh",
        "2001:db8::2".parse().unwrap(),
        2,
        vec![Step::tcp(22)],
    );
    sink.open(&v4).unwrap();
    assert!(sink.wait_idle(Duration::from_secs(5)));
    sink.open(&v6).unwrap();
    assert!(sink.wait_idle(Duration::from_secs(5)));
    sink.close(&v4).unwrap();
    assert!(sink.wait_idle(Duration::from_secs(5)));
    sink.close(&v6).unwrap();
    sink.close(&v6).unwrap(); // idempotent
    assert!(sink.wait_idle(Duration::from_secs(5)));
    assert_eq!(
        lines(&log),
        [
            "start 198.18.0.2 198.18.0.2",
            "start6 2001:db8::2",
            "stop 198.18.0.2",
            "stop 2001:db8::2", // no stop_command_6: the IPv4 one
        ]
    );
    assert_eq!(sink.stats().succeeded, 4);
    let unknown = Grant::new("nope", "198.18.0.2".parse().unwrap(), 3, vec![]);
    assert!(matches!(
        sink.open(&unknown),
        Err(Error::UnknownDoor { .. })
    ));
    assert!(matches!(
        sink.block("198.18.0.9".parse().unwrap(), Duration::from_secs(1)),
        Err(Error::Unsupported { .. })
    ));
}

#[test]
fn stop_runs_at_expiry_and_survives_a_restart() {
    let dir = tmpdir("restart");
    let log = dir.join("log");
    let state = dir.join("state.json");
    let l = log.display();
    let door = DoorCommands::new(format!("echo start %IP% >> {l}"))
        .with_stop(format!("echo stop %IP% >> {l}"));
    let cfg = CommandConfig::default()
        .door("ssh", door)
        .state_file(&state);
    let now = SystemTime::now();
    let soon = Grant::new("ssh", "198.18.0.2".parse().unwrap(), 1, vec![])
        .with_expiry(Some(now + Duration::from_millis(300)));
    let later = Grant::new("ssh", "198.18.0.3".parse().unwrap(), 2, vec![])
        .with_expiry(Some(now + Duration::from_millis(1500)));
    {
        let mut sink = CommandSink::new(cfg.clone()).unwrap();
        sink.open(&soon).unwrap();
        sink.open(&later).unwrap();
        assert!(sink.wait_idle(Duration::from_secs(5)));
        assert_eq!(sink.pending_stops(), 2);
    } // "crash": the process goes away with two stops pending
    assert!(fs::read_to_string(&state).unwrap().contains("198.18.0.3"));
    std::thread::sleep(Duration::from_millis(500));
    let mut sink = CommandSink::new(cfg).unwrap();
    // The due one runs at once (by the timer, or by this reconcile), the other waits.
    let r = sink.reconcile(SystemTime::now()).unwrap();
    assert_eq!(r.kept, 1, "{r:?}");
    assert!(sink.wait_idle(Duration::from_secs(5)));
    let mut got = lines(&log);
    got[..2].sort(); // the two starts ran on two workers
    assert_eq!(
        got,
        ["start 198.18.0.2", "start 198.18.0.3", "stop 198.18.0.2"]
    );
    // The rescheduled one runs by itself at its time.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while lines(&log).len() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        lines(&log).last().map(String::as_str),
        Some("stop 198.18.0.3")
    );
    assert!(sink.wait_idle(Duration::from_secs(5)));
    assert_eq!(sink.pending_stops(), 0);
    drop(sink);
    assert!(!fs::read_to_string(&state).unwrap().contains("198.18.0.3"));
}

#[test]
fn a_burst_is_bounded_and_failures_are_counted() {
    let door = DoorCommands::new("sleep 0.2; echo oops >&2; exit 3");
    let mut cfg = CommandConfig::default().door("d", door);
    cfg.workers = 1;
    cfg.queue = 2;
    let mut sink = CommandSink::new(cfg).unwrap();
    let mut results = Vec::new();
    for i in 0..6 {
        let g = Grant::new("d", "198.18.0.2".parse().unwrap(), i, vec![]);
        results.push(sink.open(&g));
    }
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(Error::QueueFull { .. })))
        .count();
    assert!(full >= 3, "{results:?}");
    assert!(sink.wait_idle(Duration::from_secs(10)));
    let s = sink.stats();
    assert_eq!(s.failed as usize, 6 - full);
    assert_eq!(s.dropped as usize, full);
}

#[test]
fn a_missing_shell_is_logged_not_a_panic() {
    let mut cfg = CommandConfig::default().door("d", DoorCommands::new("true"));
    cfg.shell = "/nonexistent/sh".into();
    let mut sink = CommandSink::new(cfg).unwrap();
    let g = Grant::new("d", "198.18.0.2".parse().unwrap(), 1, vec![]);
    sink.open(&g).unwrap();
    assert!(sink.wait_idle(Duration::from_secs(5)));
    assert_eq!(sink.stats().failed, 1);
}
