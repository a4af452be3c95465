//! End-to-end: what the `knockd` example does with the lifetimes of its
//! command doors across restarts, reloads and shutdowns. A restart must not
//! leave an `ACCEPT` rule behind, a reload must not stall the capture behind
//! a slow `start_command`, and SIGTERM must not wait for one either.
//!
//! Root only (namespaces, iptables in the server namespace):
//! `cargo test --test lifetimes -- --include-ignored`.

// Test support code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::thread::sleep;
use std::time::{Duration, Instant};

use knock_testnet::{wait_for, CLIENT_V4, SERVER_V4};

mod common;
use common::Server;

/// A command door whose start and stop commands also note, on success, one
/// line in `{DIR}/commands.log` (`start <ip>` / `stop <ip>`), so a test can
/// count how many rules were added and how many removed, whichever daemon
/// (before or after a restart) ran them.
const DOOR_4S: &str = "
[ssh]
    sequence      = 7000,8000
    start_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT && echo start %IP% >> {DIR}/commands.log
    cmd_timeout   = 4
    stop_command  = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT && echo stop %IP% >> {DIR}/commands.log
";

const CMD_TIMEOUT: Duration = Duration::from_secs(4);

/// The rule the door's start command adds, as `iptables -S` prints it.
const ACCEPT_RULE: &str = "-A INPUT -s 198.18.0.2/32 -p tcp -m tcp --dport 22 -j ACCEPT";

/// The daemon's log and stderr, without the terminal colours of the latter.
fn plain_log(s: &Server) -> String {
    let log = s.log();
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// How the daemon is stopped before the restart.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Term,
    Kill,
}

/// Knock, stop the daemon (`how`), start it again with the same
/// `--state-dir` (the harness passes the test's temp dir), knock again while
/// the first grant is still open: once both grants are over, no `ACCEPT`
/// rule may remain and tcp/22 must be closed again; each rule that a start
/// command added must have been removed by a stop command.
fn restart_within_cmd_timeout_leaves_no_rule(how: Stop) {
    let mut s = Server::start(DOOR_4S);
    let journal = s.path("commands.log");
    let count = |what: &str| {
        let text = fs::read_to_string(&journal).unwrap_or_default();
        let line = format!("{what} {CLIENT_V4}");
        text.lines().filter(|l| *l == line).count()
    };
    assert!(
        !s.connects(SERVER_V4),
        "tcp/22 must be closed before knocking"
    );

    s.knock(SERVER_V4, &["7000", "8000"]);
    let first = Instant::now();
    s.wait_open(SERVER_V4);
    // The pending stop is in the state file before the daemon goes away.
    wait_for(
        "the pending stop command in the engine's state file",
        Duration::from_secs(2),
        || {
            fs::read_to_string(s.path("engine.state"))
                .is_ok_and(|t| t.contains(CLIENT_V4) && t.contains("iptables -D INPUT"))
        },
    );

    match how {
        Stop::Term => s.stop(),
        Stop::Kill => s.kill(),
    }
    assert!(
        s.connects(SERVER_V4),
        "the grant stays open while the daemon is down"
    );
    s.restart(&[]);

    s.knock(SERVER_V4, &["7000", "8000"]);
    let second = Instant::now();
    assert!(
        second.duration_since(first) < CMD_TIMEOUT - Duration::from_millis(500),
        "test too slow to be meaningful: the second knock came {:?} after the first \
         (cmd_timeout is {CMD_TIMEOUT:?})",
        second.duration_since(first)
    );
    assert!(
        s.connects(SERVER_V4),
        "tcp/22 open after the second knock\n{}",
        plain_log(&s)
    );

    // Both grants are over cmd_timeout after their knock; allow a few
    // seconds more for the stop commands to run.
    let deadline = second + CMD_TIMEOUT + Duration::from_secs(4);
    while Instant::now() < deadline && s.iptables_s("INPUT").contains(ACCEPT_RULE) {
        sleep(Duration::from_millis(100));
    }
    // Anything still due (a late stop or start) has had its chance too.
    sleep(Duration::from_millis(500));

    let rules = s.iptables_s("INPUT");
    let left = rules.lines().filter(|l| *l == ACCEPT_RULE).count();
    let (starts, stops) = (count("start"), count("stop"));
    let journal_text = fs::read_to_string(&journal).unwrap_or_default();
    assert_eq!(
        left,
        0,
        "{how:?} + restart + knock within cmd_timeout: expected no ACCEPT rule for \
         {CLIENT_V4} {:?} after the second knock (cmd_timeout {CMD_TIMEOUT:?}), found {left}; \
         start commands run: {starts}, stop commands run: {stops}\n\
         iptables -S INPUT:\n{rules}\ncommands.log:\n{journal_text}\nlog:\n{}",
        second.elapsed(),
        plain_log(&s)
    );
    assert!(
        starts >= 1 && starts == stops,
        "every rule added must be removed once: start commands run: {starts}, \
         stop commands run: {stops}\ncommands.log:\n{journal_text}\nlog:\n{}",
        plain_log(&s)
    );
    assert!(
        !s.connects(SERVER_V4),
        "tcp/22 still accepts {CLIENT_V4} {:?} after the second knock\n\
         iptables -S INPUT:\n{rules}",
        second.elapsed()
    );
}

#[test]
#[ignore = "needs root"]
fn sigterm_restart_within_cmd_timeout_leaves_no_accept_rule() {
    restart_within_cmd_timeout_leaves_no_rule(Stop::Term);
}

#[test]
#[ignore = "needs root"]
fn sigkill_restart_within_cmd_timeout_leaves_no_accept_rule() {
    restart_within_cmd_timeout_leaves_no_rule(Stop::Kill);
}

/// A slow door (`start_command = sleep 8`) and an iptables door.
const SLOW_AND_SSH: &str = "
[slow]
    sequence      = 7000,8000
    start_command = sleep 8

[ssh]
    sequence      = 7100,8100
    start_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
";

/// Polls `done` until it is true or `limit` has passed since `from`; the
/// time it took, or `None`.
fn within(from: Instant, limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    loop {
        if done() {
            return Some(from.elapsed());
        }
        if from.elapsed() >= limit {
            return None;
        }
        sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs root"]
fn sighup_during_a_slow_start_command_does_not_stall_other_doors() {
    let s = Server::start(SLOW_AND_SSH);
    assert!(
        !s.connects(SERVER_V4),
        "tcp/22 must be closed before knocking"
    );
    s.knock(SERVER_V4, &["7000", "8000"]);
    wait_for("the slow door to open", Duration::from_secs(3), || {
        s.log().contains("198.18.0.2: slow: OPEN SESAME")
    });
    // `sleep 8` is queued or running now: reload at once.
    s.signal("-HUP");
    s.knock(SERVER_V4, &["7100", "8100"]);
    let knocked = Instant::now();
    let open = || s.connects_within(SERVER_V4, Duration::from_millis(100));
    let took = within(knocked, Duration::from_secs(1), open);
    if took.is_none() {
        // Say how long it did take (bounded), then fail.
        let late = within(knocked, Duration::from_secs(12), open);
        let rules = s.iptables_s("INPUT");
        panic!(
            "expected the ssh door open (tcp/22 accepting {CLIENT_V4}) within 1 s of its \
             knock, with a SIGHUP sent while the slow door's `sleep 8` start command was \
             pending; {}\niptables -S INPUT:\n{rules}\nlog:\n{}",
            match late {
                Some(d) => format!("it opened only after {d:?}"),
                None => "it was still closed after 12 s".to_owned(),
            },
            plain_log(&s)
        );
    }
    assert!(
        s.log().contains("198.18.0.2: ssh: OPEN SESAME"),
        "{}",
        plain_log(&s)
    );
    assert!(
        s.iptables_s("INPUT").contains(ACCEPT_RULE),
        "{}",
        s.iptables_s("INPUT")
    );
    wait_for("the reload", Duration::from_secs(1), || {
        s.log().contains("configuration reloaded")
    });
}

#[test]
#[ignore = "needs root"]
fn sigterm_during_a_slow_start_command_exits_within_a_second() {
    let mut s = Server::start(
        "
[slow]
    sequence      = 7000,8000
    start_command = sleep 6
",
    );
    s.knock(SERVER_V4, &["7000", "8000"]);
    wait_for("the slow door to open", Duration::from_secs(3), || {
        s.log().contains("198.18.0.2: slow: OPEN SESAME")
    });
    // Give the worker time to start `sleep 6`.
    sleep(Duration::from_millis(200));
    s.signal("-TERM");
    let sent = Instant::now();
    let mut child = s.child.take().unwrap();
    let mut exited = || child.try_wait().unwrap().is_some();
    let took = within(sent, Duration::from_secs(1), &mut exited);
    if took.is_none() {
        let late = within(sent, Duration::from_secs(10), &mut exited);
        panic!(
            "expected knockd to exit within 1 s of SIGTERM while a `sleep 6` start \
             command runs; {}\nlog:\n{}",
            match late {
                Some(d) => format!("it exited only after {d:?}"),
                None => "it still ran after 10 s".to_owned(),
            },
            plain_log(&s)
        );
    }
}
