//! End-to-end tests of native grants on hosts that already run a firewall
//! (issue 14): `firewall = auto` (the default with `open`) puts grants where
//! they take effect, and a door whose grants the host would drop whatever
//! we do is refused at start and by `--check`, naming the chain that drops.
//! Our `knockd` runs in a server namespace, knocks come from a client
//! namespace with Debian's `knock`. Root only; `.ci/run` runs them with
//! `--include-ignored`.

// Test support code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use knock_testnet::{wait_for, Pair, SERVER_V4};

mod common;
use common::{example_bin, Server, Setup};

/// The door the tests knock: 7000,8000,9000 opens tcp/22 natively for 3 s,
/// with `firewall` as given (`None`: no key, the default).
fn ssh_door(firewall: Option<&str>) -> String {
    let key = firewall.map_or(String::new(), |f| format!("    firewall = {f}\n"));
    format!("[ssh]\n    sequence = 7000,8000,9000\n    open = tcp/22\n    cmd_timeout = 3\n{key}")
}

/// The classic knockd guide's firewall: INPUT drops by default, loopback
/// and established traffic are accepted.
fn guide_firewall(pair: &Pair) {
    guide_firewall_with(pair, "iptables");
}

/// [`guide_firewall`] with `iptables` (`iptables` or `iptables-legacy`).
fn guide_firewall_with(pair: &Pair, iptables: &str) {
    for args in [
        &[iptables, "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"][..],
        &[
            iptables,
            "-A",
            "INPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ],
        &[iptables, "-P", "INPUT", "DROP"],
    ] {
        pair.server.run(args).unwrap();
    }
}

/// A native nftables firewall: table `inet fw`, its input chain drops by
/// policy (loopback and established traffic accepted).
fn nft_policy_drop(pair: &Pair) {
    pair.server
        .run(&[
            "nft",
            "add table inet fw; \
             add chain inet fw input { type filter hook input priority 0; policy drop; }; \
             add rule inet fw input iif lo accept; \
             add rule inet fw input ct state established,related accept",
        ])
        .unwrap();
}

/// What is ours in the server's `iptables-save` and `nft list ruleset`.
fn leftovers(s: &Server) -> Vec<String> {
    let save = s.pair.server.run(&["iptables-save"]).unwrap();
    let save6 = s.pair.server.run(&["ip6tables-save"]).unwrap();
    let nft = s.pair.server.run(&["nft", "list", "ruleset"]).unwrap();
    save.lines()
        .chain(save6.lines())
        .chain(nft.lines())
        .filter(|l| l.to_ascii_lowercase().contains("knock"))
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "needs root"]
fn the_guides_firewall_gets_grants_in_iptables_that_close_and_leave_nothing() {
    let mut s = Setup::new(&ssh_door(None))
        .no_iptables_drop()
        .before_start(guide_firewall)
        .start();
    // --check says where the door's grants go.
    let out = s.check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("[ssh]") && l.contains("iptables")),
        "{stdout}"
    );
    assert!(!s.connects(SERVER_V4), "the host's policy drops tcp/22");
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
    // Closed after cmd_timeout = 3.
    wait_for("the grant to close", Duration::from_secs(8), || {
        !s.connects_within(SERVER_V4, Duration::from_millis(300))
    });
    assert!(s.log().contains("ssh"), "{}", s.log());
    s.stop();
    let left = leftovers(&s);
    assert!(left.is_empty(), "left after a clean stop: {left:?}");
    // The host's own firewall is as it was.
    let save = s.pair.server.run(&["iptables-save"]).unwrap();
    assert!(save.contains(":INPUT DROP"), "{save}");
}

#[test]
#[ignore = "needs root"]
fn a_native_nft_chain_that_drops_refuses_the_start_and_the_check() {
    let mut s = Setup::new(&ssh_door(None))
        .no_iptables_drop()
        .before_start(nft_policy_drop)
        .prepare();
    let status = s.try_restart(&[]).expect("the start must fail");
    assert!(!status.success());
    let stderr = std::fs::read_to_string(s.path("stderr.log")).unwrap();
    assert!(stderr.contains("inet fw"), "{stderr}");
    assert!(stderr.contains("input"), "{stderr}");
    assert!(stderr.contains("policy drop"), "{stderr}");
    let out = s.check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("inet fw") && stderr.contains("input"),
        "{stderr}"
    );
    // Nothing of ours was installed by the refused start.
    let left = leftovers(&s);
    assert!(left.is_empty(), "{left:?}");
}

#[test]
#[ignore = "needs root"]
fn explicit_nftables_under_the_guides_firewall_is_refused() {
    let mut s = Setup::new(&ssh_door(Some("nftables")))
        .no_iptables_drop()
        .before_start(guide_firewall)
        .prepare();
    let status = s.try_restart(&[]).expect("the start must fail");
    assert!(!status.success());
    let stderr = std::fs::read_to_string(s.path("stderr.log")).unwrap();
    assert!(stderr.contains("INPUT"), "{stderr}");
    assert!(stderr.contains("policy"), "{stderr}");
    assert!(!stderr.contains("OPEN SESAME"), "{stderr}");
    let out = s.check();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("INPUT"), "{stderr}");
}

#[test]
#[ignore = "needs root"]
fn a_reload_into_a_refused_door_keeps_the_old_config() {
    // Starts as a command door (nothing native), then the host's nftables
    // chain drops tcp/22 and the reload asks for a native door: refused,
    // the old config stays.
    let s = Setup::new("[ssh]\n    sequence = 7000,8000,9000\n    command = /bin/true\n")
        .no_iptables_drop()
        .start();
    nft_policy_drop(&s.pair);
    s.write_conf(&ssh_door(None));
    s.signal("-HUP");
    wait_for("the refused reload", Duration::from_secs(5), || {
        std::fs::read_to_string(s.path("stderr.log"))
            .unwrap_or_default()
            .contains("inet fw")
    });
    assert!(!s.log().contains("configuration reloaded"), "{}", s.log());
    assert!(leftovers(&s).is_empty());
}

/// Runs ufw `cmds` in the server namespace with knock-firewall's test
/// script: a private mount namespace puts copies of /etc/ufw and
/// /etc/default/ufw (kept in `dir`) and an empty /run over the real ones,
/// for that process tree only, so the machine's own ufw files and firewall
/// stay as they are.
fn ufw(pair: &Pair, dir: &std::path::Path, cmds: &[&str]) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/knock-firewall/tests/data/ruleset/ufw-netns.sh"
    );
    let mut args = vec![script, pair.server.name(), dir.to_str().unwrap()];
    args.extend_from_slice(cmds);
    knock_testnet::run(&args).unwrap();
}

#[test]
#[ignore = "needs root"]
fn ufw_default_deny_gets_grants_that_close_on_time() {
    let ufw_dir = tempfile::tempdir().unwrap();
    let s = Setup::new(&ssh_door(None))
        .no_iptables_drop()
        .before_start(|pair| {
            ufw(
                pair,
                ufw_dir.path(),
                &["default deny incoming", "--force enable"],
            )
        })
        .start();
    assert!(!s.connects(SERVER_V4), "ufw drops tcp/22");
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
    wait_for("the grant to close", Duration::from_secs(8), || {
        !s.connects_within(SERVER_V4, Duration::from_millis(300))
    });
    // ufw still works with our chain in place.
    ufw(&s.pair, ufw_dir.path(), &["status"]);
}

/// Whether our iptables chain or its jump is in the server's rules.
fn in_iptables(s: &Server) -> bool {
    let save = s.pair.server.run(&["iptables-save"]).unwrap();
    let save6 = s.pair.server.run(&["ip6tables-save"]).unwrap();
    save.contains("KNOCK") || save6.contains("KNOCK")
}

#[test]
#[ignore = "needs root"]
fn a_door_moved_from_iptables_to_nftables_by_reload_leaves_nothing_in_iptables() {
    let s = Setup::new(&ssh_door(Some("iptables")))
        .no_iptables_drop()
        .start();
    assert!(in_iptables(&s));
    // A live grant in iptables moves with the door; it closes on time.
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    wait_for("the grant", Duration::from_secs(5), || {
        s.pair
            .server
            .run(&["iptables", "-S", "KNOCK"])
            .unwrap_or_default()
            .contains("198.18.0.2")
    });
    s.write_conf(&ssh_door(Some("nftables")));
    s.signal("-HUP");
    wait_for("the reload", Duration::from_secs(5), || {
        s.log().contains("configuration reloaded")
    });
    // The grant closes on time in iptables, and our chain goes with it.
    wait_for("our iptables chain to go", Duration::from_secs(8), || {
        !in_iptables(&s)
    });
}

#[test]
#[ignore = "needs root"]
fn a_door_moved_from_iptables_to_nftables_by_restart_leaves_nothing_in_iptables() {
    let mut s = Setup::new(&ssh_door(Some("iptables")))
        .no_iptables_drop()
        .start();
    assert!(in_iptables(&s));
    s.stop();
    s.write_conf(&ssh_door(Some("nftables")));
    s.restart(&[]);
    assert!(
        !in_iptables(&s),
        "{}",
        s.pair.server.run(&["iptables-save"]).unwrap()
    );
    s.stop();
    // A clean stop keeps the nftables guard (the port stays closed) and
    // leaves nothing in iptables.
    assert!(!in_iptables(&s));
}

/// Starts firewalld in the server namespace with knock-firewall's test
/// script (a D-Bus system bus of its own, private copies of its files in
/// `dir`; the daemons end with the namespace), then runs `opts` with
/// firewall-cmd.
fn firewalld(pair: &Pair, dir: &std::path::Path, opts: &[&str]) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/knock-firewall/tests/data/ruleset/firewalld-netns.sh"
    );
    let mut args = vec![script, pair.server.name(), dir.to_str().unwrap()];
    args.extend_from_slice(opts);
    knock_testnet::run(&args).unwrap();
}

#[test]
#[ignore = "needs root"]
fn firewalld_that_rejects_the_port_refuses_the_start() {
    let fwd_dir = tempfile::tempdir().unwrap();
    let mut s = Setup::new(&ssh_door(None))
        .no_iptables_drop()
        .before_start(|pair| firewalld(pair, fwd_dir.path(), &["--remove-service=ssh"]))
        .prepare();
    let status = s.try_restart(&[]).expect("the start must fail");
    assert!(!status.success());
    let stderr = std::fs::read_to_string(s.path("stderr.log")).unwrap();
    assert!(stderr.contains("inet firewalld"), "{stderr}");
    assert!(stderr.contains("firewall-cmd"), "{stderr}");
}

#[test]
#[ignore = "needs root"]
fn firewalld_that_allows_the_port_gets_grants_in_our_nftables_table() {
    let fwd_dir = tempfile::tempdir().unwrap();
    let s = Setup::new(&ssh_door(None))
        .no_iptables_drop()
        .before_start(|pair| firewalld(pair, fwd_dir.path(), &[]))
        .start();
    let out = s.check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("[ssh]") && l.contains("nftables")),
        "{stdout}"
    );
    assert!(!s.connects(SERVER_V4), "our table guards tcp/22");
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
    wait_for("the grant to close", Duration::from_secs(8), || {
        !s.connects_within(SERVER_V4, Duration::from_millis(300))
    });
}

#[test]
#[ignore = "needs root"]
fn the_guides_firewall_in_iptables_legacy_gets_grants_there() {
    let mut s = Setup::new(&ssh_door(None))
        .no_iptables_drop()
        .before_start(|pair| guide_firewall_with(pair, "iptables-legacy"))
        .start();
    assert!(!s.connects(SERVER_V4), "the legacy policy drops tcp/22");
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
    wait_for("the grant to close", Duration::from_secs(8), || {
        !s.connects_within(SERVER_V4, Duration::from_millis(300))
    });
    s.stop();
    let legacy = s.pair.server.run(&["iptables-legacy-save"]).unwrap();
    assert!(!legacy.contains("KNOCK"), "{legacy}");
    assert!(leftovers(&s).is_empty(), "{:?}", leftovers(&s));
}

#[test]
#[ignore = "needs root"]
fn a_ruleset_that_cannot_be_read_falls_back_to_nftables_with_a_warning() {
    let s = Setup::new(&ssh_door(None)).no_iptables_drop().prepare();
    // No `nft` (nor iptables-legacy-save) on this PATH.
    let empty = tempfile::tempdir().unwrap();
    let path = format!("PATH={}", empty.path().display());
    let out = s
        .pair
        .server
        .output(&[
            "/usr/bin/env",
            &path,
            example_bin("knockd").to_str().unwrap(),
            "--check",
            "-c",
            s.path("knockd.conf").to_str().unwrap(),
        ])
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot read the host's firewall ruleset"),
        "{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("[ssh]") && l.contains("nftables")),
        "{stdout}"
    );
}
