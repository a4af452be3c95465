//! Faults that must fail closed and loud, end to end: one-time sequences
//! whose file cannot be written, a state directory that cannot be written,
//! a reload that fails. The daemon runs in a namespace pair (and, where a
//! filesystem must fail under it, in a private mount namespace of its own
//! where one directory is a read-only bind mount).
//!
//! Root only (`cargo test -- --include-ignored` as root).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::time::Duration;

use knock_testnet::{wait_for, CLIENT_V4, SERVER_V4};

use common::{example_bin, Server, Setup};

const ONCE: &str = "
[once]
    one_time_sequences = {DIR}/otp/once.seq
    seq_timeout = 5
    start_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
";

const LINES: &str = " 1001,1002\n 2001,2002\n 3001,3002\n";

/// stderr of the last run alone (the log file is checked separately).
fn stderr(s: &Server) -> String {
    fs::read_to_string(s.path("stderr.log")).unwrap_or_default()
}

#[test]
#[ignore = "needs root: network and mount namespaces"]
fn a_one_time_file_on_a_read_only_filesystem_stops_the_start_loudly() {
    let mut s = Setup::new(ONCE)
        .file("otp/once.seq", LINES, 0o644)
        .bind_mount("otp", true)
        .prepare();
    let status = s.try_restart(&[]);
    assert!(
        status.is_some_and(|st| !st.success()),
        "knockd started although used sequences cannot be marked: {status:?}\n{}",
        s.log()
    );
    let err = stderr(&s);
    assert!(
        err.contains("once.seq") && err.to_lowercase().contains("read-only"),
        "stderr does not say which file and why:\n{err}"
    );
}

#[test]
#[ignore = "needs root: network and mount namespaces"]
fn a_used_one_time_sequence_stays_used_when_its_file_cannot_be_marked() {
    let mut s = Setup::new(ONCE)
        .file("otp/once.seq", LINES, 0o644)
        .bind_mount("otp", false)
        .start();
    // The filesystem fails under the running daemon.
    s.remount_read_only();
    s.knock(SERVER_V4, &["1001", "1002"]);
    s.wait_open(SERVER_V4);
    wait_for(
        &format!("the failed mark on stderr\n{}", stderr(&s)),
        Duration::from_secs(3),
        || stderr(&s).contains("cannot mark"),
    );
    assert!(
        fs::read_to_string(s.path("otp/once.seq"))
            .unwrap()
            .starts_with(" 1001"),
        "the read-only file was written"
    );
    s.revoke_ssh(CLIENT_V4);

    // A reload is refused while the file cannot be written (the old
    // configuration stays, and says why); the used line stays used.
    s.signal("-HUP");
    wait_for("the refused reload", Duration::from_secs(3), || {
        stderr(&s).contains("reload failed")
    });
    assert!(
        stderr(&s)
            .lines()
            .any(|l| l.contains("reload failed") && l.contains("once.seq")),
        "the refusal does not name the file:\n{}",
        stderr(&s)
    );
    s.knock(SERVER_V4, &["1001", "1002"]);
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !s.connects(SERVER_V4),
        "a used one-time sequence opened again after a reload\n{}",
        s.log()
    );
    // The next line still works.
    s.knock(SERVER_V4, &["2001", "2002"]);
    s.wait_open(SERVER_V4);
    s.revoke_ssh(CLIENT_V4);

    // A restart (the file writable again): neither used line opens, and
    // both are marked in the file now.
    s.stop();
    s.restart(&[]);
    for seq in [["1001", "1002"], ["2001", "2002"]] {
        s.knock(SERVER_V4, &seq);
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            !s.connects(SERVER_V4),
            "used sequence {seq:?} opened after a restart\n{}",
            s.log()
        );
    }
    wait_for("the marks made up for", Duration::from_secs(3), || {
        fs::read_to_string(s.path("otp/once.seq")).unwrap()
            == "#1001,1002\n#2001,2002\n 3001,3002\n"
    });
    s.knock(SERVER_V4, &["3001", "3002"]);
    s.wait_open(SERVER_V4);
}

#[test]
#[ignore = "needs root: network and mount namespaces"]
fn a_one_time_sequence_nothing_can_record_does_not_open() {
    // The state directory and the sequence file on the same filesystem,
    // which fails: the used sequence can be recorded nowhere, so the door
    // stays shut (and says why) rather than open for a sequence that a
    // restart would accept again.
    let mut s = Setup::new(ONCE)
        .file("otp/once.seq", LINES, 0o644)
        .bind_mount("otp", false)
        .state_dir("otp")
        .start();
    s.remount_read_only();
    s.knock(SERVER_V4, &["1001", "1002"]);
    wait_for(
        &format!("the refusal on stderr\n{}", stderr(&s)),
        Duration::from_secs(3),
        || stderr(&s).contains("not opening"),
    );
    assert!(
        !s.connects(SERVER_V4),
        "opened for a sequence recorded nowhere\n{}",
        s.log()
    );
    s.stop();
}

#[test]
#[ignore = "needs root: network and mount namespaces"]
fn a_state_directory_that_cannot_be_written_stops_the_start_loudly() {
    let mut s = Setup::new("[ssh]\n sequence = 7000,8000\n command = /bin/true %IP%\n")
        .bind_mount("state", true)
        .state_dir("state")
        .prepare();
    let status = s.try_restart(&[]);
    assert!(
        status.is_some_and(|st| !st.success()),
        "knockd started without a writable state directory: {status:?}\n{}",
        s.log()
    );
    let err = stderr(&s);
    assert!(
        err.contains("state") && err.to_lowercase().contains("read-only"),
        "stderr does not say what cannot be written:\n{err}"
    );
    // The log file says it too, once on each.
    let file_log = fs::read_to_string(s.path("knockd.log")).unwrap_or_default();
    for (name, text) in [("the log file", &file_log), ("stderr", &err)] {
        assert_eq!(
            text.lines().filter(|l| l.contains("cannot start")).count(),
            1,
            "{name}:\n{text}"
        );
    }
}

#[test]
#[ignore = "needs root: network and mount namespaces"]
fn check_reports_what_would_fail_at_start() {
    // `--check` with the same read-only file, in a mount namespace of its own.
    let s = Setup::new(ONCE)
        .file("otp/once.seq", LINES, 0o644)
        .bind_mount("otp", true)
        .prepare();
    let out = s
        .pair
        .server
        .command("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$D\" \"$D\" && mount -o remount,bind,ro \"$D\" && exec \"$@\"")
        .arg("sh")
        .arg(example_bin("knockd"))
        .args(["--check", "-c", s.path("knockd.conf").to_str().unwrap()])
        .args(["--state-dir", s.path("").to_str().unwrap()])
        .env("D", s.path("otp"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--check passed a config that cannot start\n{err}"
    );
    assert!(
        err.contains("once.seq") && err.to_lowercase().contains("read-only"),
        "--check does not say what would fail:\n{err}"
    );
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_reload_without_a_config_says_so_once_and_keeps_the_doors() {
    let mut s = Server::start(
        "[ssh]\n sequence = 7000,8000\n seq_timeout = 5\n start_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n",
    );
    fs::remove_file(s.path("knockd.conf")).unwrap();
    s.signal("-HUP");
    wait_for("the reload error", Duration::from_secs(3), || {
        stderr(&s).contains("knockd.conf")
    });
    std::thread::sleep(Duration::from_millis(300));
    let file_log = fs::read_to_string(s.path("knockd.log")).unwrap();
    let err = stderr(&s);
    for (name, text) in [("the log file", &file_log), ("stderr", &err)] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("knockd.conf") && !l.contains("starting up"))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{name} has the reload error {} times:\n{text}",
            lines.len()
        );
        let cause = "No such file or directory";
        assert_eq!(
            lines[0].matches(cause).count(),
            1,
            "{name} repeats the cause:\n{}",
            lines[0]
        );
    }
    s.knock(SERVER_V4, &["7000", "8000"]);
    s.wait_open(SERVER_V4);
    s.stop();
}
