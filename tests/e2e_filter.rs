//! End-to-end: the `knockd` example with many doors, whose kernel filter
//! must attach within the namespace's `net.core.optmem_max` (also the
//! 20480 bytes of older kernels, set inside the server namespace where the
//! sysctl is per namespace), open a door, and warn on stderr when the
//! filter had to be widened to fit. Root only; `.ci/run` runs them with
//! `--include-ignored`.

// Test support code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::time::Duration;

use knock_testnet::{wait_for, SERVER_V4};

mod common;
use common::Server;

/// The ports of door `i`: three TCP ports far apart.
fn door_ports(i: u32) -> [u32; 3] {
    [10_000 + 7 * i, 20_000 + 7 * i, 30_000 + 7 * i]
}

/// `n` doors; door 1 opens tcp/22 for the knocker, the others do nothing.
fn many_doors(n: u32) -> String {
    let mut c = String::from("[options]\n    LogFile = {DIR}/ignored.log\n");
    for i in 0..n {
        let [a, b, d] = door_ports(i);
        let command = if i == 1 {
            "/usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"
        } else {
            "/bin/true"
        };
        let _ = write!(
            c,
            "\n[door{i}]\n    sequence = {a},{b},{d}\n    seq_timeout = 10\n    \
             tcpflags = syn\n    command = {command}\n"
        );
    }
    c
}

fn knock_door_1(s: &Server) {
    let ports: Vec<String> = door_ports(1).iter().map(u32::to_string).collect();
    let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
    s.knock(SERVER_V4, &ports);
    s.wait_open(SERVER_V4);
}

fn set_optmem(s: &Server, bytes: u32) {
    s.pair
        .server
        .run(&[
            "sysctl",
            "-q",
            "-w",
            &format!("net.core.optmem_max={bytes}"),
        ])
        .unwrap();
    let seen = s
        .pair
        .server
        .run(&["cat", "/proc/sys/net/core/optmem_max"])
        .unwrap();
    assert_eq!(
        seen.trim(),
        bytes.to_string(),
        "optmem_max is not per namespace"
    );
}

/// 60 doors (180 ports): the filter attaches (also when the daemon pushes
/// its listen set again, which charges both programs at once) and door 1
/// opens; no capture failures are logged.
#[test]
#[ignore = "needs root"]
fn sixty_doors_capture_and_open() {
    let s = Server::start(&many_doors(60));
    knock_door_1(&s);
    let log = s.log();
    assert!(!log.contains("capture failed"), "{log}");
    assert!(!log.contains("widened"), "{log}");
}

/// 120 and 400 doors with optmem_max 20480: door 1 opens, and a filter
/// that had to be widened to fit is a warning on stderr.
#[test]
#[ignore = "needs root"]
fn many_doors_with_small_optmem_open_and_widening_is_a_warning() {
    for n in [120, 400] {
        let mut s = Server::start(&many_doors(n));
        s.stop();
        set_optmem(&s, 20480);
        s.restart(&[]);
        knock_door_1(&s);
        let log = s.log();
        assert!(!log.contains("capture failed"), "{n} doors: {log}");
        if n == 400 {
            wait_for("the widening warning", Duration::from_secs(3), || {
                let stderr = std::fs::read_to_string(s.path("stderr.log")).unwrap_or_default();
                stderr.contains("kernel filter was widened")
            });
        }
    }
}
