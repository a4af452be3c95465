//! The command runner with real processes: outcomes, the kill at
//! `max_run_time` (children included), a drop that does not wait, the bounded
//! queue, the wake-up callback and the parallelism.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use knock_firewall::{CommandRunner, Done, Error, Job, Outcome, RunnerConfig};

fn config(workers: usize, queue: usize, max_run_time: Duration) -> RunnerConfig {
    RunnerConfig {
        workers,
        queue,
        max_run_time,
        ..RunnerConfig::default()
    }
}

fn job(id: u64, command: impl Into<String>) -> Job {
    Job {
        id,
        what: format!("door: start for 198.18.0.{id}"),
        command: command.into(),
    }
}

/// Polls until `n` jobs are done (or `within` passes), in completion order.
fn wait_done(runner: &CommandRunner, n: usize, within: Duration) -> Vec<Done> {
    let deadline = Instant::now() + within;
    let mut done = Vec::new();
    while done.len() < n && Instant::now() < deadline {
        match runner.poll_done() {
            Some(d) => done.push(d),
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    done
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("knock-runner-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// A `sleep` argument no other process has: `secs` plus a fraction made of
/// this process's id and `tag` (GNU sleep takes fractional seconds).
fn marker(secs: u32, tag: u32) -> String {
    format!("{secs}.{}{tag:03}1", std::process::id())
}

/// Live (not zombie) processes whose command line contains `needle`.
fn live_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmdline).contains(needle) {
            continue;
        }
        // Field 3 of /proc/PID/stat: `Z` is a zombie, already dead.
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
        if !matches!(state, Some('Z') | Some('X') | None) {
            found.push(pid);
        }
    }
    found
}

fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

#[test]
fn exit_0_succeeds_and_the_job_comes_back() {
    let runner = CommandRunner::new(RunnerConfig::default());
    assert_eq!(runner.busy(), 0);
    runner.run(job(1, "exit 0")).unwrap();
    let done = wait_done(&runner, 1, Duration::from_secs(5));
    assert_eq!(done.len(), 1);
    let d = &done[0];
    assert_eq!(d.id, 1);
    assert_eq!(d.what, "door: start for 198.18.0.1");
    assert_eq!(d.command, "exit 0");
    assert_eq!(d.outcome, Outcome::Succeeded);
    assert!(d.took < Duration::from_secs(5), "{d:?}");
    assert!(runner.poll_done().is_none());
    assert_eq!(runner.busy(), 0);
    let s = runner.stats();
    assert_eq!((s.succeeded, s.failed, s.killed, s.dropped), (1, 0, 0, 0));
}

#[test]
fn a_non_zero_exit_fails_with_its_code_and_stderr() {
    let runner = CommandRunner::new(RunnerConfig::default());
    runner
        .run(job(2, "echo 'iptables: Bad rule' >&2; exit 3"))
        .unwrap();
    let done = wait_done(&runner, 1, Duration::from_secs(5));
    match &done[..] {
        [Done {
            outcome: Outcome::Failed { code, stderr },
            ..
        }] => {
            assert_eq!(*code, Some(3));
            assert_eq!(stderr, "iptables: Bad rule");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(runner.stats().failed, 1);
}

#[test]
fn a_flood_on_stderr_neither_blocks_nor_grows_the_excerpt() {
    let runner = CommandRunner::new(RunnerConfig::default());
    // 200 KB, more than a pipe holds: the runner must keep reading.
    runner
        .run(job(3, "head -c 200000 /dev/zero | tr '\\0' x >&2; exit 1"))
        .unwrap();
    let done = wait_done(&runner, 1, Duration::from_secs(10));
    match &done[..] {
        [Done {
            outcome: Outcome::Failed { code, stderr },
            ..
        }] => {
            assert_eq!(*code, Some(1));
            assert!(stderr.starts_with("xxxx"), "{stderr}");
            assert!(stderr.len() <= 210, "{} bytes", stderr.len());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_command_over_max_run_time_is_killed_with_its_children() {
    let runner = CommandRunner::new(config(1, 8, Duration::from_secs(1)));
    let m = marker(30, 1);
    // `; true` keeps the shell from exec'ing sleep: sleep is the shell's child.
    let start = Instant::now();
    runner.run(job(4, format!("sleep {m}; true"))).unwrap();
    assert!(
        wait_until(Duration::from_secs(1), || live_with(&m).len() >= 2),
        "sh and sleep should run: {:?}",
        live_with(&m)
    );
    let done = wait_done(&runner, 1, Duration::from_secs(3));
    let took = start.elapsed();
    match &done[..] {
        [Done {
            outcome: Outcome::Killed { after },
            ..
        }] => {
            assert!(*after >= Duration::from_secs(1), "{after:?}");
            assert!(took < Duration::from_millis(1500), "{took:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        wait_until(Duration::from_millis(300), || live_with(&m).is_empty()),
        "left running: {:?}",
        live_with(&m)
    );
    assert_eq!(runner.stats().killed, 1);
}

#[test]
fn a_missing_shell_is_a_spawn_failure() {
    let runner = CommandRunner::new(RunnerConfig {
        shell: "/nonexistent/sh".into(),
        ..RunnerConfig::default()
    });
    runner.run(job(5, "true")).unwrap();
    let done = wait_done(&runner, 1, Duration::from_secs(5));
    match &done[..] {
        [Done {
            outcome: Outcome::SpawnFailed { error },
            ..
        }] => assert!(error.contains("/nonexistent/sh"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(runner.stats().failed, 1);
}

#[test]
fn dropping_the_runner_does_not_wait_and_drops_the_queue() {
    let dir = tmpdir("drop");
    let late = dir.join("late");
    let m = marker(5, 2);
    let runner = CommandRunner::new(config(1, 8, Duration::from_secs(2)));
    runner.run(job(6, format!("sleep {m}; true"))).unwrap();
    // Queued behind the sleep on the only worker: must never run.
    runner
        .run(job(7, format!("touch {}", late.display())))
        .unwrap();
    assert!(wait_until(Duration::from_secs(1), || !live_with(&m).is_empty()));
    assert_eq!(runner.busy(), 2);
    let t = Instant::now();
    drop(runner);
    let took = t.elapsed();
    assert!(took < Duration::from_millis(200), "drop took {took:?}");
    // The running command is still killed at max_run_time by its worker.
    assert!(
        wait_until(Duration::from_secs(3), || live_with(&m).is_empty()),
        "left running: {:?}",
        live_with(&m)
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(!late.exists(), "a queued job ran after the drop");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_full_queue_refuses_the_job_by_name() {
    let dir = tmpdir("full");
    let started = dir.join("started");
    let runner = CommandRunner::new(config(1, 2, Duration::from_secs(10)));
    runner
        .run(job(1, format!("touch {}; sleep 0.5", started.display())))
        .unwrap();
    assert!(wait_until(Duration::from_secs(2), || started.exists()));
    runner.run(job(2, "true")).unwrap();
    runner.run(job(3, "true")).unwrap();
    assert_eq!(runner.busy(), 3);
    let err = runner.run(job(4, "true")).unwrap_err();
    assert!(
        matches!(&err, Error::QueueFull { what, capacity: 2 } if what.contains("198.18.0.4")),
        "{err:?}"
    );
    assert!(err.to_string().contains("198.18.0.4"), "{err}");
    let done = wait_done(&runner, 3, Duration::from_secs(5));
    assert_eq!(done.iter().map(|d| d.id).collect::<Vec<_>>(), [1, 2, 3]);
    let s = runner.stats();
    assert_eq!((s.succeeded, s.dropped), (3, 1), "{s:?}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn notify_wakes_the_owner_after_each_done() {
    let (tx, rx) = mpsc::channel::<()>();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let runner = CommandRunner::new(config(2, 8, Duration::from_secs(10))).with_notify(move || {
        c.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(());
    });
    for i in 0..3 {
        runner.run(job(i, "true")).unwrap();
    }
    // An event loop: sleep until notified, then the Done is already there.
    let mut ids = Vec::new();
    for _ in 0..3 {
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        while let Some(d) = runner.poll_done() {
            ids.push(d.id);
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, [0, 1, 2]);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[test]
fn jobs_run_with_the_configured_parallelism_in_completion_order() {
    // 6 jobs of 0.5 s on 3 workers: two rounds, about 1 s (not 3 s, not 0.5 s).
    let runner = CommandRunner::new(config(3, 16, Duration::from_secs(10)));
    let t = Instant::now();
    for i in 0..6 {
        runner.run(job(i, "sleep 0.5")).unwrap();
    }
    assert_eq!(runner.busy(), 6);
    let done = wait_done(&runner, 6, Duration::from_secs(10));
    let took = t.elapsed();
    assert_eq!(done.len(), 6);
    assert!(done.iter().all(|d| d.outcome == Outcome::Succeeded));
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(1800),
        "{took:?}"
    );
    assert_eq!(runner.busy(), 0);

    // Completion order, not submission order.
    runner.run(job(10, "sleep 0.6")).unwrap();
    runner.run(job(11, "sleep 0.1")).unwrap();
    let done = wait_done(&runner, 2, Duration::from_secs(5));
    assert_eq!(done.iter().map(|d| d.id).collect::<Vec<_>>(), [11, 10]);
}

#[test]
fn many_jobs_all_come_back() {
    let runner = CommandRunner::new(config(4, 1024, Duration::from_secs(10)));
    for i in 0..200 {
        runner.run(job(i, format!("exit {}", i % 2))).unwrap();
    }
    let done = wait_done(&runner, 200, Duration::from_secs(30));
    assert_eq!(done.len(), 200);
    let mut ids: Vec<u64> = done.iter().map(|d| d.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..200).collect::<Vec<_>>());
    let s = runner.stats();
    assert_eq!((s.succeeded, s.failed), (100, 100), "{s:?}");
}
