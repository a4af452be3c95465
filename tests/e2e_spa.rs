//! End-to-end tests of Single Packet Authorization against the real
//! fwknop 2.6.10 (Debian's `fwknop-client` and `fwknop-server`): Debian's
//! `fwknop` client opens our daemon's doors (over an existing drop, with
//! nftables' kernel expiry, closing on time; only the ports it asks for, in
//! nftables and iptables, IPv4 and IPv6), replays and bad packets are
//! refused and counted by reason, `-a` opens for another address, our
//! client opens Debian's `fwknopd`, and IPv6 works end to end. Everything
//! runs in network namespaces; root only (`--include-ignored`).

// Test support code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use knock_testnet::{wait_for, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6};

mod common;
use common::{example_bin, Server, Setup};

/// The test keys (`fwknop --key-gen`), as in knock-spa's fixtures.
const KEY: &str = "ZxwCwpGiY1Iv/nzNSES5J5LjuyJ6VpuHvBjzhY2bvck=";
const HMAC: &str =
    "913yacJvmZCnAkEMp7qifH1iZ2fJpda27ZO2WLXNbIWtImTr3ITQBGCZWcSzjEJloNi/cyz13s+7LsyNiH4i8w==";
/// Other keys of the right lengths.
const OTHER_KEY: &str = "bUhlm/VPKwvKKGB+LqzAT26Y2b1tHExxJMA/qcp3Jf0=";
const OTHER_HMAC: &str =
    "Tm90IHRoZSBITUFDIGtleSBvZiB0aGlzIHNlcnZlciwgc2l4dHktZm91ciBieXRlcyBvZiBpdCwgaW4gYmFzZTY0Lg==";

/// fwknopd's access.conf for tcp/22, `timeout` seconds.
fn access_conf(timeout: u32) -> String {
    format!(
        "# as for fwknopd\nSOURCE ANY\n    OPEN_PORTS tcp/22\n    KEY_BASE64 {KEY}\n    HMAC_KEY_BASE64 {HMAC}\n    FW_ACCESS_TIMEOUT {timeout}\n"
    )
}

/// Our knockd with `access` as `--access-conf` and `conf` as knockd.conf.
fn server(conf: &str, access: &str, extra: &[&str]) -> Server {
    server_with(Setup::new(conf), access, extra)
}

fn server_with(setup: Setup<'_>, access: &str, extra: &[&str]) -> Server {
    let mut s = setup.prepare();
    fs::write(s.path("access.conf"), access).unwrap();
    let path = s.path("access.conf").display().to_string();
    let mut args = vec!["--access-conf", path.as_str()];
    args.extend_from_slice(extra);
    s.restart(&args);
    s
}

/// Runs Debian's `fwknop` in the client namespace (HOME in the test's temp
/// dir, no rc file): `-D server --use-hmac` plus `args`.
fn fwknop(s: &Server, server: &str, args: &[&str]) -> String {
    let home = s.path("home");
    fs::create_dir_all(&home).unwrap();
    let out = s
        .pair
        .client
        .command("fwknop")
        .env("HOME", &home)
        .args(["--no-rc-file", "--no-save-args", "--use-hmac", "-D", server])
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fwknop failed:\n{text}");
    text
}

/// `fwknop -A tcp/22 -a addr` with the test keys.
fn fwknop_access(s: &Server, server: &str, addr: &str, more: &[&str]) -> String {
    fwknop_with(s, server, "tcp/22", addr, (KEY, HMAC), more)
}

/// `fwknop -A access -a addr` with `keys` (encryption, HMAC; base64).
fn fwknop_with(
    s: &Server,
    server: &str,
    access: &str,
    addr: &str,
    (key, hmac): (&str, &str),
    more: &[&str],
) -> String {
    let mut args = vec![
        "-A",
        access,
        "-a",
        addr,
        "--key-base64-rijndael",
        key,
        "--key-base64-hmac",
        hmac,
    ];
    args.extend_from_slice(more);
    fwknop(s, server, &args)
}

fn nft_table(s: &Server) -> String {
    s.pair
        .server
        .run(&["nft", "list", "table", "inet", "knock"])
        .unwrap_or_default()
}

/// How many times the log says `what`.
fn count(s: &Server, what: &str) -> usize {
    fs::read_to_string(s.path("knockd.log"))
        .unwrap_or_default()
        .matches(what)
        .count()
}

/// Stops the daemon and returns the `spa` object of its `--stats-json`.
fn stop_for_stats(s: &mut Server) -> serde_json::Value {
    s.stop();
    let events = s.events();
    let line = events
        .lines()
        .rev()
        .find(|l| l.contains("\"spa\""))
        .unwrap_or_else(|| panic!("no stats line:\n{events}\n{}", s.log()));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["spa"].clone()
}

/// Sends the capture `pcap` again from the client (`tcpreplay`): what it
/// printed.
fn replay(s: &Server, pcap: &std::path::Path) -> String {
    s.pair
        .client
        .run(&[
            "tcpreplay",
            "-q",
            "-i",
            knock_testnet::CLIENT_IF,
            pcap.to_str().unwrap(),
        ])
        .unwrap()
}

/// Captures the client's datagrams to udp/62201 while `f` runs.
fn capture_while(s: &Server, pcap: &std::path::Path, f: impl FnOnce()) {
    common::capture_while(
        &s.pair.client,
        knock_testnet::CLIENT_IF,
        "udp port 62201",
        pcap,
        f,
    );
}

#[test]
#[ignore = "needs root"]
fn fwknop_client_opens_over_a_drop_and_the_grant_closes_on_time() {
    let mut s = server("[options]\n", &access_conf(3), &["--stats-json"]);
    assert!(!s.connects(SERVER_V4), "tcp/22 is dropped");
    let pcap = s.path("spa.pcap");
    capture_while(&s, &pcap, || {
        fwknop_access(&s, SERVER_V4, CLIENT_V4, &[]);
    });
    let opened = Instant::now();
    s.wait_open(SERVER_V4);
    let log = s.log();
    assert!(
        log.contains("stanza1: SPA request of user") && log.contains("for 198.18.0.2 tcp/22"),
        "{log}"
    );
    // The host drops tcp/22 in iptables: `firewall = auto` puts the grant
    // in our iptables chain, which comes before that drop.
    let chain = s.iptables_s("KNOCK");
    assert!(chain.contains("198.18.0.2/32"), "{chain}\n{log}");
    assert!(!s.connects(SERVER_V6), "only the address asked for");
    wait_for("the grant to close", Duration::from_secs(8), || {
        !s.connects_within(SERVER_V4, Duration::from_millis(300))
    });
    let lasted = opened.elapsed();
    assert!(
        lasted >= Duration::from_millis(2_500) && lasted < Duration::from_secs(6),
        "FW_ACCESS_TIMEOUT 3 lasted {lasted:?}"
    );

    // The capture through the replay tool: the packet opens as it did,
    // at the packet's time.
    let out = Command::new(example_bin("replay"))
        .arg("-c")
        .arg(s.path("knockd.conf"))
        .arg("--access-conf")
        .arg(s.path("access.conf"))
        .arg(&pcap)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opens: Vec<&str> = lines
        .lines()
        .filter(|l| l.contains(r#""event":"open""#))
        .collect();
    assert_eq!(opens.len(), 1, "{lines}");
    assert!(
        opens[0].contains(r#""door":"stanza1""#) && opens[0].contains(CLIENT_V4),
        "{lines}"
    );

    // The same datagram again (tcpreplay of the capture): a replay.
    let replayed = replay(&s, &pcap);
    wait_for(
        &format!("the replay to be refused ({replayed})\n{}", s.log()),
        Duration::from_secs(3),
        || count(&s, "SPA packet refused: replayed packet") == 1,
    );
    assert!(!s.connects(SERVER_V4), "a replay opens nothing");

    // A wrong HMAC key, a wrong encryption key, a stale timestamp, each
    // logged (warnings at most once a second: a second apart).
    let with_keys = |k: &str, h: &str| fwknop_with(&s, SERVER_V4, "tcp/22", CLIENT_V4, (k, h), &[]);
    with_keys(KEY, OTHER_HMAC);
    wait_for("the bad HMAC to be refused", Duration::from_secs(3), || {
        count(&s, "SPA packet refused: HMAC does not verify") == 1
    });
    std::thread::sleep(Duration::from_millis(1100));
    with_keys(OTHER_KEY, HMAC);
    wait_for(
        "the wrong key to be refused",
        Duration::from_secs(3),
        || count(&s, "decryption failed (wrong encryption key)") == 1,
    );
    std::thread::sleep(Duration::from_millis(1100));
    fwknop_access(&s, SERVER_V4, CLIENT_V4, &["--time-offset-minus", "300"]);
    wait_for(
        "the stale packet to be refused",
        Duration::from_secs(3),
        || count(&s, "SPA packet refused: timestamp outside the window") == 1,
    );
    assert!(!s.connects(SERVER_V4), "no bad packet opens");
    let spa = stop_for_stats(&mut s);
    assert_eq!(spa["accepted"], 1, "{spa}");
    assert_eq!(spa["refused"]["replay"], 1, "{spa}");
    assert_eq!(spa["refused"]["bad_hmac"], 1, "{spa}");
    assert_eq!(spa["refused"]["bad_key"], 1, "{spa}");
    assert_eq!(spa["refused"]["stale"], 1, "{spa}");
    let log = s.log();
    assert!(log.contains("stats: spa: 1 accepted"), "{log}");
}

#[test]
#[ignore = "needs root"]
fn in_nftables_the_kernel_expires_the_grant_too() {
    // No drop of the host's: our nftables table guards tcp/22 itself, and
    // each grant is a set element with the kernel's timeout as a net.
    let s = server_with(
        Setup::new("[options]\n").no_iptables_drop(),
        &access_conf(4),
        &[],
    );
    assert!(!s.connects(SERVER_V4), "our table guards tcp/22");
    fwknop_access(&s, SERVER_V4, CLIENT_V4, &[]);
    s.wait_open(SERVER_V4);
    let table = nft_table(&s);
    assert!(
        table.contains("198.18.0.2") && table.contains("expires"),
        "{table}\n{}",
        s.log()
    );
    wait_for("the grant to close", Duration::from_secs(8), || {
        !s.connects_within(SERVER_V4, Duration::from_millis(300))
    });
    assert!(!nft_table(&s).contains("198.18.0.2"));
}

#[test]
#[ignore = "needs root"]
fn a_request_opens_only_the_ports_it_asks_for() {
    // Our nftables table guards both ports of the stanza; Debian's fwknop
    // asks for tcp/22 only, then for tcp/80 only (as fwknopd grants).
    let access = format!(
        "SOURCE ANY\n    OPEN_PORTS tcp/22, tcp/80\n    KEY_BASE64 {KEY}\n    HMAC_KEY_BASE64 {HMAC}\n    FW_ACCESS_TIMEOUT 30\n"
    );
    let s = server_with(Setup::new("[options]\n").no_iptables_drop(), &access, &[]);
    s.pair.server.tcp_listen(80).unwrap();
    let port_80 = |addr: &str| {
        s.pair
            .client
            .tcp_connect(addr.parse().unwrap(), 80, Duration::from_millis(700))
    };
    assert!(!s.connects(SERVER_V4), "our table guards tcp/22");
    assert!(!port_80(SERVER_V4), "our table guards tcp/80");
    fwknop_access(&s, SERVER_V4, CLIENT_V4, &[]);
    s.wait_open(SERVER_V4);
    assert!(
        !port_80(SERVER_V4),
        "tcp/80 was not asked for\n{}",
        nft_table(&s)
    );
    let log = s.log();
    assert!(log.contains("stanza1:tcp/22: OPEN SESAME"), "{log}");
    assert!(!log.contains("stanza1:tcp/80: OPEN SESAME"), "{log}");
    // Over IPv6 (which Debian's fwknop 2.6.10 cannot send) our client
    // asks for tcp/80: that alone opens there.
    our_spa_for(&s, SERVER_V6, CLIENT_V6, "tcp/80");
    wait_for("tcp/80 over IPv6", Duration::from_secs(5), || {
        port_80(SERVER_V6)
    });
    assert!(!s.connects(SERVER_V6), "tcp/22 was not asked for over IPv6");
    assert!(!port_80(SERVER_V4), "nor tcp/80 over IPv4");
}

#[test]
#[ignore = "needs root"]
fn in_iptables_a_request_opens_only_the_port_it_asks_for() {
    // A knockd.conf SPA door of two ports over the host's iptables drop of
    // both; Debian's fwknop asks for tcp/80 only.
    let conf = format!(
        "[options]\n[web]\n    spa_key_base64 = {KEY}\n    spa_hmac_key_base64 = {HMAC}\n    \
         open = tcp/22, tcp/80\n    firewall = iptables\n    cmd_timeout = 30\n"
    );
    let s = Setup::new(&conf)
        .before_start(|pair| {
            pair.server.tcp_listen(80).unwrap();
            pair.server
                .run(&[
                    "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "80", "-j", "DROP",
                ])
                .unwrap();
        })
        .start();
    let port_80 = || {
        s.pair
            .client
            .tcp_connect(SERVER_V4.parse().unwrap(), 80, Duration::from_millis(700))
    };
    assert!(!port_80(), "tcp/80 is dropped");
    fwknop_with(&s, SERVER_V4, "tcp/80", CLIENT_V4, (KEY, HMAC), &[]);
    wait_for("tcp/80 open", Duration::from_secs(5), port_80);
    assert!(!s.connects(SERVER_V4), "tcp/22 was not asked for");
    let rules = s.iptables_s("KNOCK");
    assert!(rules.contains("--dport 80"), "{rules}");
    assert!(!rules.contains("--dport 22"), "{rules}");
    assert!(s.log().contains("web:tcp/80: OPEN SESAME"), "{}", s.log());
}

#[test]
#[ignore = "needs root"]
fn allow_ip_opens_for_the_address_in_the_packet() {
    let s = server_with(
        Setup::new("[options]\n").client_addr("198.18.0.3/24"),
        &access_conf(30),
        &[],
    );
    fwknop_access(&s, SERVER_V4, "198.18.0.3", &[]);
    wait_for("the grant for 198.18.0.3", Duration::from_secs(5), || {
        s.iptables_s("KNOCK").contains("198.18.0.3/32")
    });
    assert!(connects_from(&s, "198.18.0.3"), "{}", s.log());
    assert!(!s.connects(SERVER_V4), "not the sender's address");
    assert!(!s.iptables_s("KNOCK").contains(CLIENT_V4));
    let log = s.log();
    assert!(
        log.contains("198.18.0.2: stanza1: SPA request of user root for 198.18.0.3 tcp/22"),
        "{log}"
    );
}

const CONNECT_FROM: &str = r#"
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam); s.bind((sys.argv[1], 0)); s.settimeout(0.7)
try:
    s.connect((sys.argv[2], 22)); sys.exit(0)
except Exception:
    sys.exit(1)
"#;

fn connects_from(s: &Server, src: &str) -> bool {
    let dst = if src.contains(':') {
        SERVER_V6
    } else {
        SERVER_V4
    };
    s.pair
        .client
        .output(&["python3", "-c", CONNECT_FROM, src, dst])
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Our `knock --spa`: the same options as fwknop's.
fn our_spa(s: &Server, server: &str, addr: &str) -> String {
    our_spa_for(s, server, addr, "tcp/22")
}

/// Our `knock --spa` asking for `ports` (`-A`).
fn our_spa_for(s: &Server, server: &str, addr: &str, ports: &str) -> String {
    let out = s
        .pair
        .client
        .command(example_bin("knock").to_str().unwrap())
        .args([
            "--spa",
            "--key-base64-rijndael",
            KEY,
            "--key-base64-hmac",
            HMAC,
            "-A",
            ports,
            "-a",
            addr,
            server,
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "knock --spa failed:\n{text}");
    text
}

/// Debian's fwknop 2.6.10 client cannot send over IPv6 (`-D 2001:db8::1`:
/// "error in getaddrinfo: Address family for hostname not supported") and
/// puts only IPv4 addresses in its messages; fwknopd 2.6.10 captures IPv4
/// only. Our client and daemon do both.
#[test]
#[ignore = "needs root"]
fn our_client_opens_our_daemon_over_ipv6() {
    let s = server("[options]\n", &access_conf(30), &[]);
    assert!(!connects_from(&s, CLIENT_V6));
    our_spa(&s, SERVER_V6, CLIENT_V6);
    wait_for(
        &format!("tcp/22 over IPv6\n{}", s.log()),
        Duration::from_secs(5),
        || connects_from(&s, CLIENT_V6),
    );
    // Over the host's ip6tables drop: in our ip6tables chain.
    let chain = s.pair.server.run(&["ip6tables", "-S", "KNOCK"]).unwrap();
    assert!(chain.contains("2001:db8::2/128"), "{chain}");
    assert!(!s.connects(SERVER_V4), "only the IPv6 address");
    let log = s.log();
    assert!(
        log.contains("2001:db8::2: stanza1: SPA request of user"),
        "{log}"
    );
}

/// Debian's `fwknopd` in the server namespace with `access` (its run
/// directory and configuration in the test's temp dir), until dropped.
struct Fwknopd(std::process::Child);

impl Drop for Fwknopd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fwknopd(s: &Server, access: &str) -> Fwknopd {
    let run = s.path("fwknop-run");
    fs::create_dir_all(&run).unwrap();
    fs::write(
        s.path("fwknopd.conf"),
        format!(
            "PCAP_INTF {}\nFWKNOP_RUN_DIR {}\n",
            knock_testnet::SERVER_IF,
            run.display()
        ),
    )
    .unwrap();
    fs::write(s.path("fwknop-access.conf"), access).unwrap();
    let log = s.path("fwknopd.log");
    let child = s
        .pair
        .server
        .command("fwknopd")
        .args(["-f", "-c"])
        .arg(s.path("fwknopd.conf"))
        .arg("-a")
        .arg(s.path("fwknop-access.conf"))
        .args(["-i", knock_testnet::SERVER_IF])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(s.path("fwknopd.err")).unwrap())
        .spawn()
        .unwrap();
    let d = Fwknopd(child);
    wait_for("fwknopd to start", Duration::from_secs(10), || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("Starting fwknopd"))
            || fs::read_to_string(s.path("fwknopd.err"))
                .is_ok_and(|l| l.contains("Starting fwknopd"))
    });
    // The pcap loop starts after the banner.
    std::thread::sleep(Duration::from_millis(500));
    d
}

#[test]
#[ignore = "needs root"]
fn our_client_opens_fwknopd() {
    let s = Setup::new("[options]\n").prepare();
    let _d = fwknopd(&s, &access_conf(30));
    assert!(!s.connects(SERVER_V4), "tcp/22 is dropped");
    our_spa(&s, SERVER_V4, CLIENT_V4);
    let out = || {
        fs::read_to_string(s.path("fwknopd.log")).unwrap_or_default()
            + &fs::read_to_string(s.path("fwknopd.err")).unwrap_or_default()
    };
    wait_for(
        &format!("fwknopd to open tcp/22\n{}", out()),
        Duration::from_secs(5),
        || s.connects_within(SERVER_V4, Duration::from_millis(300)),
    );
    let chain = s.iptables_s("FWKNOP_INPUT");
    assert!(
        chain.contains("198.18.0.2/32") && chain.contains("--dport 22"),
        "{chain}\n{}",
        out()
    );
}

#[test]
#[ignore = "needs root"]
fn cmd_cycle_commands_open_and_close_with_the_address() {
    let access = format!(
        "SOURCE 198.18.0.0/24\n    KEY_BASE64 {KEY}\n    HMAC_KEY_BASE64 {HMAC}\n    \
         CMD_CYCLE_OPEN iptables -I INPUT -s $IP -p tcp --dport 22 -j ACCEPT\n    \
         CMD_CYCLE_CLOSE iptables -D INPUT -s $IP -p tcp --dport 22 -j ACCEPT\n    \
         CMD_CYCLE_TIMER 3\n"
    );
    let s = server("[options]\n", &access, &[]);
    fwknop_access(&s, SERVER_V4, CLIENT_V4, &[]);
    s.wait_open(SERVER_V4);
    let input = s.iptables_s("INPUT");
    assert!(
        input.contains("-A INPUT -s 198.18.0.2/32 -p tcp -m tcp --dport 22 -j ACCEPT"),
        "{input}"
    );
    wait_for("the close command", Duration::from_secs(8), || {
        !s.iptables_s("INPUT").contains("198.18.0.2")
    });
    assert!(!s.connects(SERVER_V4));
}

#[test]
#[ignore = "needs root"]
fn a_replay_after_a_restart_is_still_refused() {
    let mut s = server("[options]\n", &access_conf(30), &[]);
    let pcap = s.path("spa.pcap");
    capture_while(&s, &pcap, || {
        fwknop_access(&s, SERVER_V4, CLIENT_V4, &[]);
    });
    s.wait_open(SERVER_V4);
    s.stop();
    let path = s.path("access.conf").display().to_string();
    s.restart(&["--access-conf", &path]);
    assert!(
        s.connects(SERVER_V4),
        "the grant was kept across the restart"
    );
    // Stopped with --close-at-exit, so that an open port afterwards could
    // only come from the replay.
    s.stop();
    s.restart(&["--access-conf", &path, "--close-at-exit"]);
    s.stop();
    s.restart(&["--access-conf", &path]);
    assert!(!s.connects(SERVER_V4), "closed at the last exit");
    replay(&s, &pcap);
    wait_for("the replay to be refused", Duration::from_secs(3), || {
        s.log().contains("SPA packet refused: replayed packet")
    });
    assert!(
        !s.connects(SERVER_V4),
        "a replay after a restart opens nothing"
    );
}

#[test]
#[ignore = "needs root"]
fn sighup_rereads_access_conf_new_keys_apply() {
    let s = server("[options]\n", &access_conf(30), &[]);
    // Rotate the keys: the new access.conf has the other ones.
    fs::write(
        s.path("access.conf"),
        access_conf(30)
            .replace(KEY, OTHER_KEY)
            .replace(HMAC, OTHER_HMAC),
    )
    .unwrap();
    s.signal("-HUP");
    wait_for("the reload", Duration::from_secs(5), || {
        s.log().contains("configuration reloaded")
    });
    fwknop_access(&s, SERVER_V4, CLIENT_V4, &[]);
    // With -v the refusal of a bad HMAC is logged (at debug).
    wait_for("the old keys to be refused", Duration::from_secs(3), || {
        count(&s, "SPA packet refused: HMAC does not verify") == 1
    });
    assert!(!s.connects(SERVER_V4));
    fwknop_with(
        &s,
        SERVER_V4,
        "tcp/22",
        CLIENT_V4,
        (OTHER_KEY, OTHER_HMAC),
        &[],
    );
    s.wait_open(SERVER_V4);
    assert_eq!(count(&s, "SPA request of user"), 1, "{}", s.log());
}

#[test]
#[ignore = "needs root"]
fn the_client_timeout_overrides_fw_access_timeout() {
    // fwknop -f 2: message type 3, a grant of 2 s instead of the stanza's 30.
    let s = server("[options]\n", &access_conf(30), &[]);
    fwknop_access(&s, SERVER_V4, CLIENT_V4, &["-f", "2"]);
    let opened = Instant::now();
    s.wait_open(SERVER_V4);
    wait_for("the 2 s grant to close", Duration::from_secs(6), || {
        !s.connects_within(SERVER_V4, Duration::from_millis(300))
    });
    let lasted = opened.elapsed();
    assert!(lasted < Duration::from_secs(5), "lasted {lasted:?}");
}

/// `GET /metrics` on `addr` from inside the server namespace: the body.
fn scrape(s: &Server, addr: &str) -> String {
    use std::io::{Read, Write};
    s.pair
        .server
        .enter(|| {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(c, "GET /metrics HTTP/1.1\r\nHost: knockd\r\n\r\n").unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap()
}

#[test]
#[ignore = "needs root"]
fn the_metrics_endpoint_counts_spa_requests_and_refusals_by_reason() {
    let addr = "127.0.0.1:9466";
    let s = server("[options]\n", &access_conf(30), &["--metrics", addr]);
    wait_for("the endpoint", Duration::from_secs(5), || {
        s.pair
            .server
            .enter(|| std::net::TcpStream::connect(addr).is_ok())
            .unwrap()
    });
    let before = scrape(&s, addr);
    assert!(before.contains("knock_spa_accepted_total 0\n"), "{before}");
    assert!(
        before.contains("knock_spa_rejects_total{reason=\"bad_hmac\"} 0\n"),
        "{before}"
    );
    fwknop_access(&s, SERVER_V4, CLIENT_V4, &[]);
    s.wait_open(SERVER_V4);
    fwknop_with(&s, SERVER_V4, "tcp/22", CLIENT_V4, (KEY, OTHER_HMAC), &[]);
    wait_for("the refusal", Duration::from_secs(5), || {
        count(&s, "SPA packet refused: HMAC does not verify") == 1
    });
    let after = scrape(&s, addr);
    assert!(after.contains("knock_spa_accepted_total 1\n"), "{after}");
    assert!(
        after.contains("knock_spa_rejects_total{reason=\"bad_hmac\"} 1\n"),
        "{after}"
    );
    assert!(
        after.contains("knock_door_opens_total{door=\"stanza1\"} 1\n"),
        "{after}"
    );
    assert!(
        !after.contains(CLIENT_V4),
        "no address in a label:\n{after}"
    );
}
