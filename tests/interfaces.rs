//! Capture on several interfaces, end to end: each interface fails and
//! recovers on its own, and what cannot work is said on stderr at the
//! default verbosity. The `knockd` example runs in a server namespace with
//! a second veth link (`kx0` 198.19.7.1 to the client's `kx1` 198.19.7.2)
//! next to the usual `kn0`. Root only; `.ci/run` runs them with
//! `--include-ignored`.

// Test support code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use knock_testnet::{wait_for, Pair, SERVER_V4};

mod common;
use common::{example_bin, proc_kib, status_kib, Server, Setup};

/// The server side of the second link.
const SIDE_V4: &str = "198.19.7.1";

const DOOR: &str = "
[openSSH]
    sequence    = 7000,8000,9000
    seq_timeout = 5
    command     = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    tcpflags    = syn
";

/// A second veth link between the namespaces: `kx0` 198.19.7.1/24 on the
/// server, `kx1` 198.19.7.2/24 on the client.
fn side_link(pair: &Pair) {
    pair.server
        .run(&[
            "ip",
            "link",
            "add",
            "kx0",
            "type",
            "veth",
            "peer",
            "name",
            "kx1",
            "netns",
            pair.client.name(),
        ])
        .unwrap();
    for (ns, ifname, cidr) in [
        (&pair.server, "kx0", "198.19.7.1/24"),
        (&pair.client, "kx1", "198.19.7.2/24"),
    ] {
        ns.run(&["ip", "addr", "add", cidr, "dev", ifname]).unwrap();
        ns.run(&["ip", "link", "set", ifname, "up"]).unwrap();
    }
}

/// Lines of `text` that contain every one of `words` (but for the
/// "starting up, listening on ..." line).
fn lines_with(text: &str, words: &[&str]) -> usize {
    text.lines()
        .filter(|l| !l.contains("starting up") && words.iter().all(|w| l.contains(w)))
        .count()
}

#[test]
#[ignore = "needs root"]
fn one_interface_down_leaves_the_other_listening_and_recovers_on_its_own() {
    let s = Setup::new(DOOR)
        .before_start(side_link)
        .args(&["-i", "kx0"])
        .quiet()
        .start();
    assert!(!s.connects(SIDE_V4), "tcp/22 closed on the side link");

    s.pair
        .server
        .run(&["ip", "link", "set", "kx0", "down"])
        .unwrap();
    wait_for(
        &format!("a warning that kx0 is down\n{}", s.log()),
        Duration::from_secs(5),
        || lines_with(&s.stderr(), &["kx0"]) > 0,
    );
    // kn0 still listens while kx0 is down.
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
    // Down for a while: said once, not once per retry.
    std::thread::sleep(Duration::from_secs(3));
    let err = s.stderr();
    assert_eq!(lines_with(&err, &["kx0"]), 1, "stderr:\n{err}");
    let log = fs::read_to_string(s.path("knockd.log")).unwrap();
    assert_eq!(lines_with(&log, &["kx0"]), 1, "log:\n{log}");

    // Back up: knocks on kx0 open the door again, and its return is said once.
    s.pair
        .server
        .run(&["ip", "link", "set", "kx0", "up"])
        .unwrap();
    wait_for(
        &format!("kx0 back\n{}", s.log()),
        Duration::from_secs(10),
        || {
            s.knock(SIDE_V4, &["7000", "8000", "9000"]);
            s.connects_within(SIDE_V4, Duration::from_millis(500))
        },
    );
    wait_for(
        &format!("a line that kx0 is back\n{}", s.log()),
        Duration::from_secs(5),
        || lines_with(&s.stderr(), &["kx0"]) == 2,
    );
    let log = fs::read_to_string(s.path("knockd.log")).unwrap();
    assert_eq!(lines_with(&log, &["kx0"]), 2, "log:\n{log}");
}

#[test]
#[ignore = "needs root"]
fn a_missing_interface_is_reported_and_the_others_listen() {
    let s = Setup::new(DOOR).args(&["-i", "typo0"]).quiet().start();
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
    let err = s.stderr();
    assert_eq!(lines_with(&err, &["typo0"]), 1, "stderr:\n{err}");
    // Still once a few retries later.
    std::thread::sleep(Duration::from_secs(4));
    let err = s.stderr();
    assert_eq!(lines_with(&err, &["typo0"]), 1, "stderr:\n{err}");
}

/// Runs knockd with `extra` in the server namespace as user nobody, with
/// no capabilities, in a world-writable private dir holding `conf`; waits
/// at most 10 s for it to exit. Its exit status, stdout and stderr.
fn knockd_as_nobody(conf: &str, extra: &[&str]) -> (ExitStatus, String, String) {
    let mut s = Setup::new(conf)
        .wrap(&[
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ])
        .wrap(&["--inh-caps=-all", "--bounding-set=-all"])
        .args(extra)
        .no_events()
        .quiet()
        .prepare();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    s.spawn_unwaited();
    let status = s.wait_exit(
        &format!("knockd {extra:?} as nobody to exit"),
        Duration::from_secs(10),
    );
    (status, s.stdout(), s.stderr())
}

#[test]
#[ignore = "needs root"]
fn a_start_without_capabilities_exits_naming_them() {
    let (status, _, err) = knockd_as_nobody(DOOR, &[]);
    assert!(!status.success(), "stderr:\n{err}");
    assert!(err.contains("CAP_NET_RAW"), "stderr:\n{err}");
    assert!(!err.contains("CAP_NET_ADMIN"), "commands only:\n{err}");

    // A native nftables door needs CAP_NET_ADMIN as well.
    let nft = format!(
        "{DOOR}
[nft]
    sequence = 7100,8100
    open     = tcp/2222
    firewall = nftables
"
    );
    let (status, _, err) = knockd_as_nobody(&nft, &[]);
    assert!(!status.success(), "stderr:\n{err}");
    assert!(
        err.contains("CAP_NET_RAW") && err.contains("CAP_NET_ADMIN"),
        "stderr:\n{err}"
    );

    // --check says the same, but a valid config still passes.
    let (status, out, err) = knockd_as_nobody(&nft, &["--check"]);
    let all = out + &err;
    assert!(status.success(), "{all}");
    assert!(
        all.contains("CAP_NET_RAW") && all.contains("CAP_NET_ADMIN"),
        "{all}"
    );
}

#[test]
#[ignore = "needs root"]
fn check_reports_interfaces_that_do_not_exist() {
    let pair = Pair::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("knockd.conf");
    fs::write(&conf, DOOR).unwrap();
    let out = pair
        .server
        .command(example_bin("knockd").to_str().unwrap())
        .args(["--check", "-c", conf.to_str().unwrap()])
        .args(["-i", "kn0", "-i", "typo0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{all}");
    assert_eq!(lines_with(&all, &["typo0"]), 1, "{all}");
    assert_eq!(lines_with(&all, &["kn0"]), 0, "kn0 exists:\n{all}");
    assert!(!all.contains("CAP_NET"), "root has them:\n{all}");
}

/// The sizes of the packet sockets' rings mapped into process `pid`
/// (shared mappings of a `socket:[inode]`), in bytes.
fn ring_mappings(pid: u32) -> Vec<u64> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter(|l| l.ends_with(']') && l.contains("socket:["))
        .map(|l| {
            let range = l.split_whitespace().next().unwrap();
            let (lo, hi) = range.split_once('-').unwrap();
            u64::from_str_radix(hi, 16).unwrap() - u64::from_str_radix(lo, 16).unwrap()
        })
        .collect()
}

/// `capture_ring` sizes each captured interface's receive ring: a daemon
/// with `capture_ring = 1M` maps 1 MiB (32 MiB by default), holds about
/// 31 MiB less resident memory, and still opens for a real knock; with
/// `0` it maps no ring (a `recvfrom` per packet) and opens too.
#[test]
#[ignore = "needs root"]
fn capture_ring_sizes_the_ring_and_the_daemon_still_opens() {
    let mut seen = Vec::new();
    for ring in ["", "1M", "0"] {
        let conf = if ring.is_empty() {
            DOOR.to_owned()
        } else {
            format!("[options]\n    capture_ring = {ring}\n{DOOR}")
        };
        let s = Server::start(&conf);
        let pid = s.child.as_ref().unwrap().id();
        s.knock(SERVER_V4, &["7000", "8000", "9000"]);
        s.wait_open(SERVER_V4);
        // Less the source index's huge pages: whether a knock's index line
        // is in one (2 MiB resident at once) or in the table's 4 KiB tail
        // moves the figure by 2 MiB, more than a 1 MiB ring.
        let huge = proc_kib(pid, "smaps_rollup", "AnonHugePages");
        seen.push((ring, ring_mappings(pid), status_kib(pid, "VmRSS") - huge));
    }
    let [(_, default_maps, default_rss), (_, small_maps, small_rss), (_, none_maps, none_rss)] =
        &seen[..]
    else {
        unreachable!()
    };
    for (ring, maps, rss) in &seen {
        eprintln!(
            "capture_ring = {ring:?}: ring mappings {maps:?} bytes, \
             VmRSS less AnonHugePages {rss} KiB"
        );
    }
    assert_eq!(default_maps, &[32 << 20], "{seen:?}");
    assert_eq!(small_maps, &[1 << 20], "{seen:?}");
    assert!(none_maps.is_empty(), "{seen:?}");
    // The ring is resident: 31 MiB less with 1M (at least 24 MiB, whatever
    // else the process has touched), and the ringless daemon less still.
    assert!(small_rss + 24 * 1024 < *default_rss, "{seen:?}");
    assert!(none_rss < small_rss, "{seen:?}");
}
