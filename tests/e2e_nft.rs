//! End-to-end tests of the nftables backend failing closed (issue 13):
//! configs of many doors or ports install, a reload the kernel refuses keeps
//! the old table with its grants, `--check` asks the kernel, and a door that
//! stops opening natively leaves no guard behind. Our `knockd` runs in a
//! server namespace, knocks come from a client namespace. Root only;
//! `.ci/run` runs them with `--include-ignored`.

// Test support code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::time::Duration;

use knock_testnet::{wait_for, CLIENT_V4, SERVER_V4, SERVER_V6};

mod common;
use common::{example_bin, Server, Setup};

/// The door the tests knock: 7000,8000,9000 opens tcp/22 natively.
fn ssh_door(cmd_timeout: &str) -> String {
    format!(
        "[ssh]\n    sequence = 7000,8000,9000\n    open = tcp/22\n    firewall = nftables\n    cmd_timeout = {cmd_timeout}\n"
    )
}

/// `ssh` plus `n - 1` more native doors (one port each), and `extra` more
/// ports on `ssh`.
fn many_doors(n: u16, extra: u16) -> String {
    let mut conf = String::new();
    let mut open = String::from("tcp/22");
    for p in 0..extra {
        write!(open, ",tcp/{}", 10_000 + p).unwrap();
    }
    write!(
        conf,
        "[ssh]\n    sequence = 7000,8000,9000\n    open = {open}\n    firewall = nftables\n    cmd_timeout = 60\n"
    )
    .unwrap();
    // Sequences from a few knock ports, so that the capture filter stays
    // small: this is about the firewall.
    for i in 1..n {
        write!(
            conf,
            "[door{i}]\n    sequence = {},{}\n    open = tcp/{}\n    firewall = nftables\n",
            20_000 + i % 16,
            30_000 + i / 16,
            3000 + i
        )
        .unwrap();
    }
    conf
}

/// `iptables -S KNOCK` (empty while iptables cannot read it, e.g. while
/// the daemon is changing it).
fn knock_chain(s: &Server) -> String {
    s.pair
        .server
        .run(&["iptables", "-S", "KNOCK"])
        .unwrap_or_default()
}

fn nft_table(s: &Server) -> String {
    s.pair
        .server
        .run(&["nft", "list", "table", "inet", "knock"])
        .unwrap_or_default()
}

fn big_config_starts_and_opens(doors: u16, extra: u16) {
    let conf = many_doors(doors, extra);
    let s = Setup::new(&conf).no_iptables_drop().start();
    assert!(!s.connects(SERVER_V4), "the guard must drop tcp/22");
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
    assert!(!s.connects(SERVER_V6), "only the knocker's address");
}

#[test]
#[ignore = "needs root"]
fn sixty_native_doors_start_and_open() {
    big_config_starts_and_opens(60, 0);
}

#[test]
#[ignore = "needs root"]
fn a_hundred_and_forty_native_doors_start_and_open() {
    big_config_starts_and_opens(140, 0);
}

#[test]
#[ignore = "needs root"]
fn one_door_with_four_hundred_ports_starts_and_opens() {
    big_config_starts_and_opens(1, 399);
}

/// A grant lifetime the kernel refuses as a set timeout (beyond ~584 years
/// in milliseconds), though knockd.conf accepts it.
const TOO_LONG: &str = "100000000000";

#[test]
#[ignore = "needs root"]
fn a_reload_the_kernel_refuses_keeps_the_table_and_every_grant() {
    let mut s = Setup::new(&ssh_door("60")).no_iptables_drop().start();
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
    s.write_conf(&ssh_door(TOO_LONG));
    s.signal("-HUP");
    wait_for(
        &format!("the failed reload\n{}", s.log()),
        Duration::from_secs(5),
        || s.log().contains("reload failed"),
    );
    // Loud: on stderr, not only in the log file.
    let stderr = std::fs::read_to_string(s.path("stderr.log")).unwrap();
    assert!(stderr.contains("reload failed"), "{stderr}");
    // The grant is still in force, and the guard still drops the rest.
    assert!(s.connects(SERVER_V4), "the grant survives\n{}", s.log());
    assert!(!s.connects(SERVER_V6), "the guard survives");
    let table = nft_table(&s);
    assert!(table.contains("tcp dport 22 drop"), "{table}");
    assert!(table.contains(CLIENT_V4), "{table}");
    // The daemon still runs the old configuration.
    s.stop();
}

#[test]
#[ignore = "needs root"]
fn check_refuses_what_the_kernel_cannot_hold() {
    let s = Setup::new(&ssh_door("60")).no_iptables_drop().start();
    let check = |conf: &str| {
        s.write_conf(conf);
        s.check()
    };
    let out = check(&ssh_door(TOO_LONG));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nftables"), "{stderr}");
    // A big config that fits is fine, and checking changed nothing.
    let out = check(&many_doors(140, 0));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = nft_table(&s);
    assert!(!table.contains("3139"), "a check installs nothing: {table}");
    assert!(table.contains("tcp dport 22 drop"), "{table}");
}

/// The same door, now opened by a shell command behind iptables.
const SSH_COMMAND: &str = "
[ssh]
    sequence    = 7000,8000,9000
    command     = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    cmd_timeout = 60
";

fn no_guard_left(s: &Server) {
    let table = nft_table(s);
    assert!(!table.contains("dport 22 drop"), "{table}");
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
}

#[test]
#[ignore = "needs root"]
fn a_door_switched_to_a_command_by_reload_leaves_no_nft_guard() {
    // No iptables drop at start: a native nftables door is refused where
    // the host drops its port (issue 14).
    let s = Setup::new(&ssh_door("60")).no_iptables_drop().start();
    assert!(nft_table(&s).contains("tcp dport 22 drop"));
    // A live native grant.
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    wait_for("the grant", Duration::from_secs(5), || {
        nft_table(&s).contains(CLIENT_V4)
    });
    // The command door's host drops tcp/22 itself.
    for ipt in ["iptables", "ip6tables"] {
        s.pair
            .server
            .run(&[
                ipt, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP",
            ])
            .unwrap();
    }
    s.write_conf(SSH_COMMAND);
    s.signal("-HUP");
    wait_for("the reload", Duration::from_secs(5), || {
        s.log().contains("configuration reloaded")
    });
    // The grant went with the table, and the operator is told.
    let stderr = std::fs::read_to_string(s.path("stderr.log")).unwrap();
    assert!(
        stderr.contains("ssh: the grant is no longer in the firewall"),
        "{stderr}"
    );
    no_guard_left(&s);
}

#[test]
#[ignore = "needs root"]
fn a_door_switched_to_a_command_by_restart_leaves_no_nft_guard() {
    let mut s = Setup::new(&ssh_door("60")).no_iptables_drop().start();
    assert!(nft_table(&s).contains("tcp dport 22 drop"));
    s.stop();
    for ipt in ["iptables", "ip6tables"] {
        s.pair
            .server
            .run(&[
                ipt, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP",
            ])
            .unwrap();
    }
    s.write_conf(SSH_COMMAND);
    s.restart(&[]);
    no_guard_left(&s);
}

#[test]
#[ignore = "needs root"]
fn a_reload_with_a_new_lifetime_keeps_the_live_grant() {
    let s = Setup::new(&ssh_door("60")).no_iptables_drop().start();
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
    // The door's sets get a new default timeout (in place from Linux 6.8
    // on); their elements stay, and the daemon gives the grant again anyway.
    s.write_conf(&ssh_door("120"));
    s.signal("-HUP");
    wait_for("the reload", Duration::from_secs(5), || {
        s.log().contains("configuration reloaded")
    });
    assert!(s.connects(SERVER_V4), "the grant survives\n{}", s.log());
    assert!(!s.connects(SERVER_V6), "the guard stays");
    assert!(nft_table(&s).contains(CLIENT_V4), "{}", nft_table(&s));
}

#[test]
#[ignore = "needs root"]
fn a_start_the_kernel_refuses_leaves_the_old_table_and_grant() {
    let mut s = Setup::new(&ssh_door("60")).no_iptables_drop().start();
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
    s.stop();
    s.write_conf(&ssh_door(TOO_LONG));
    let out = s
        .pair
        .server
        .output(&[
            example_bin("knockd").to_str().unwrap(),
            "-c",
            s.path("knockd.conf").to_str().unwrap(),
            "-i",
            "kn0",
            "--state-dir",
            s.dir.path().to_str().unwrap(),
        ])
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nftables"), "{stderr}");
    // The old table still guards tcp/22, and the grant is still in it.
    assert!(s.connects(SERVER_V4), "the grant survives");
    assert!(!s.connects(SERVER_V6), "the guard survives");
    let table = nft_table(&s);
    assert!(table.contains("tcp dport 22 drop"), "{table}");
}

#[test]
#[ignore = "needs root"]
fn a_reload_that_moves_a_door_keeps_its_live_grant() {
    let s = Setup::new(&ssh_door("60")).no_iptables_drop().start();
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
    // A new door before `ssh`: the door's sets are another pair now.
    let conf = format!(
        "[web]\n    sequence = 5000,6000\n    open = tcp/443\n    firewall = nftables\n{}",
        ssh_door("60")
    );
    s.write_conf(&conf);
    s.signal("-HUP");
    wait_for("the reload", Duration::from_secs(5), || {
        s.log().contains("configuration reloaded")
    });
    assert!(s.connects(SERVER_V4), "the grant survives\n{}", s.log());
    assert!(!s.connects(SERVER_V6), "the guard stays");
    let table = nft_table(&s);
    assert!(table.contains("tcp dport 443 drop"), "{table}");
}

#[test]
#[ignore = "needs root"]
fn a_reload_without_the_blacklist_lifts_a_block_held_by_iptables() {
    // An iptables door: the blocklist lives in iptables.
    let blocking = "[options]\n    blacklist = 3 invalid in 60s for 300s\n\
        [ssh]\n    sequence = 7000,8000,9000\n    strict = yes\n    open = tcp/22\n    firewall = iptables\n";
    let s = Setup::new(blocking).start();
    // An attempt that a wrong port invalidates, then ports of no sequence.
    s.knock(SERVER_V4, &["7000", "1001", "1002", "1003", "1004"]);
    wait_for(
        &format!("the block\n{}", s.log()),
        Duration::from_secs(5),
        || knock_chain(&s).contains(CLIENT_V4),
    );
    s.write_conf(&blocking.replace("    blacklist = 3 invalid in 60s for 300s\n", ""));
    s.signal("-HUP");
    wait_for(
        &format!("the block lifted\n{}", s.log()),
        Duration::from_secs(5),
        || {
            s.pair
                .server
                .run(&["iptables", "-S", "KNOCK"])
                .is_ok_and(|c| !c.contains(CLIENT_V4))
        },
    );
}

#[test]
#[ignore = "needs root"]
fn a_reload_that_moves_the_blacklist_to_iptables_moves_its_blocks() {
    // No native door: the blocklist lives in nftables.
    let blacklist = "[options]\n    blacklist = 3 invalid in 60s for 300s\n\
        [ssh]\n    sequence = 7000,8000,9000\n    strict = yes\n    \
        command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n";
    let s = Setup::new(blacklist).start();
    // An attempt that a wrong port invalidates, then ports of no sequence.
    s.knock(SERVER_V4, &["7000", "1001", "1002", "1003", "1004"]);
    wait_for(
        &format!("the block\n{}", s.log()),
        Duration::from_secs(5),
        || nft_table(&s).contains(CLIENT_V4),
    );
    // An iptables door: the blocklist moves to iptables, the block with it.
    s.write_conf(&format!(
        "{blacklist}[web]\n    sequence = 5000,6000\n    open = tcp/443\n    firewall = iptables\n"
    ));
    s.signal("-HUP");
    wait_for(
        &format!("the block in iptables\n{}", s.log()),
        Duration::from_secs(5),
        || knock_chain(&s).contains(CLIENT_V4),
    );
    assert_eq!(nft_table(&s), "", "no nftables table left");
    assert!(!s.connects(SERVER_V4), "still blocked");
}

#[test]
#[ignore = "needs root"]
fn a_grant_closes_on_time_in_the_kernel_after_the_daemon_is_killed() {
    // The daemon opens an nftables grant before its state file records it
    // (the write would delay the open); what makes that safe is the
    // element's kernel timeout: killed right after the open, with no
    // daemon left to close it, the grant still ends on time.
    let mut s = Setup::new(&ssh_door("3")).no_iptables_drop().start();
    assert!(!s.connects(SERVER_V4), "closed before knocking");
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
    let opened = std::time::Instant::now();
    s.kill();
    assert!(s.connects(SERVER_V4), "still open with the daemon gone");
    wait_for(
        "the kernel to close the grant at its end",
        Duration::from_secs(6),
        || !s.connects_within(SERVER_V4, Duration::from_millis(200)),
    );
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "closed after {took:?}, before the grant's end"
    );
}
