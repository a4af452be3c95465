//! End-to-end tests of what knockd cannot do (issue 8): strict doors against
//! a port sweep, the scanner blacklist, time-derived sequences with our
//! `knock` client, per-door `from` and `grant_prefix`. Our `knockd` runs in a
//! server namespace; knocks come from a client namespace that has a second
//! address (198.18.0.3), used by the sweeper or the neighbour. Root only
//! (but `knockd --check` on FIFOs and devices); `.ci/run` runs them with
//! `--include-ignored`.

// Test support code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use knock_testnet::{echoes, wait_for, CLIENT_V4, SERVER_V4};

mod common;
use common::{example_bin, Server, Setup};

/// The client namespace's second address.
const NEIGHBOUR: &str = "198.18.0.3";

/// Sends one SYN from `src` to every port of `lo..=hi` of `dst`, as fast as
/// a raw socket goes (no handshake: a port-ordered scan).
const SWEEP: &str = r#"
import socket, struct, sys
src, dst, lo, hi = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.bind((src, 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, 20)
def csum(b):
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
for p in range(lo, hi + 1):
    h = struct.pack('!HHIIBBHHH', 40000, p, 1, 0, 5 << 4, 2, 1024, 0, 0)
    h = h[:16] + struct.pack('!H', csum(pseudo + h)) + h[18:]
    while True:
        try:
            s.sendto(h, (dst, 0))
            break
        except BlockingIOError:
            pass
"#;

/// Knocks `port:proto ...` from source address `src` (one SYN or datagram
/// each, 100 ms apart).
const KNOCK_FROM: &str = r#"
import socket, sys, time
src, dst = sys.argv[1], sys.argv[2]
for t in sys.argv[3:]:
    p, k = t.split(':')
    if k == 'udp':
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((src, 0)); s.sendto(b'k', (dst, int(p)))
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.bind((src, 0)); s.setblocking(False); s.connect_ex((dst, int(p)))
    s.close(); time.sleep(0.1)
"#;

/// Exit 0 if a TCP connect from `src` to `dst:22` completes within 0.7 s.
const CONNECT_FROM: &str = r#"
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.settimeout(0.7)
try:
    s.connect((sys.argv[2], 22)); sys.exit(0)
except Exception:
    sys.exit(1)
"#;

/// What these tests add to the shared harness.
trait Beyond {
    fn opens(&self, src: &str) -> usize;
    fn knock_from(&self, src: &str, ports: &[&str]);
    fn sweep_from(&self, src: &str) -> Child;
    fn connects_from(&self, src: &str) -> bool;
    fn wait_open_from(&self, src: &str);
    fn iptables_accepts(&self) -> String;
}

impl Beyond for Server {
    /// Opens of `door` for `src` so far, from the events.
    fn opens(&self, src: &str) -> usize {
        self.events()
            .lines()
            .filter(|l| {
                l.contains("\"event\":\"open\"") && l.contains(&format!("\"src\":\"{src}\""))
            })
            .count()
    }

    /// Knocks `port:proto`s from the client namespace's address `src`.
    fn knock_from(&self, src: &str, ports: &[&str]) {
        let mut args = vec!["python3", "-c", KNOCK_FROM, src, SERVER_V4];
        args.extend_from_slice(ports);
        self.pair.client.run(&args).unwrap();
    }

    fn sweep_from(&self, src: &str) -> Child {
        self.pair
            .client
            .command("python3")
            .args(["-c", SWEEP, src, SERVER_V4, "1", "65535"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn connects_from(&self, src: &str) -> bool {
        self.pair
            .client
            .output(&["python3", "-c", CONNECT_FROM, src, SERVER_V4])
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn wait_open_from(&self, src: &str) {
        wait_for(
            &format!("tcp/22 open to {src}\n{}", self.log()),
            Duration::from_secs(5),
            || self.connects_from(src),
        );
    }

    fn iptables_accepts(&self) -> String {
        self.pair.server.run(&["iptables", "-S", "INPUT"]).unwrap()
    }
}

const STRICT: &str = "
[ssh]
    sequence    = 7000,8000,9000
    seq_timeout = 25
    strict      = yes
    command     = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
";

#[test]
#[ignore = "needs root"]
fn a_port_sweep_never_opens_a_strict_door_and_the_real_knocker_still_does() {
    let s = Setup::new(STRICT).client_addr("198.18.0.3/24").start();
    let t = Instant::now();
    let mut sweep = s.sweep_from(NEIGHBOUR);
    // The real knocker knocks while the sweep runs.
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    assert!(sweep.wait().unwrap().success());
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "the sweep must fit in seq_timeout"
    );
    s.wait_open_from(CLIENT_V4);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.opens(NEIGHBOUR), 0, "the sweep opened:\n{}", s.log());
    assert!(!s.connects_from(NEIGHBOUR));
    assert!(
        s.events().contains(&format!(
            "\"event\":\"invalidated\",\"door\":\"ssh\",\"src\":\"{NEIGHBOUR}\""
        )),
        "{}",
        s.events()
    );
    assert!(!s.iptables_accepts().contains(NEIGHBOUR));
}

#[test]
#[ignore = "needs root"]
fn the_blacklist_blocks_a_sweeper_others_are_unaffected_and_the_block_expires() {
    let conf = format!("[options]\n    blacklist = 3 invalid in 60s for 8s\n{STRICT}");
    let s = Setup::new(&conf).client_addr("198.18.0.3/24").start();
    // The door opens through a shell command, whose ports the daemon cannot
    // know: with the default reach a block refuses nothing in the firewall,
    // and the operator is told so (in the log and on stderr).
    let warning = "no door has native `open` ports, so with blacklist_reach = doors";
    let stderr = fs::read_to_string(s.path("stderr.log")).unwrap();
    assert!(stderr.contains(warning), "{stderr}");
    let mut sweep = s.sweep_from(NEIGHBOUR);
    assert!(sweep.wait().unwrap().success());
    wait_for(
        &format!("the block\n{}", s.log()),
        Duration::from_secs(5),
        || {
            s.log()
                .contains(&format!("{NEIGHBOUR}: ssh: blacklisted for 8 s"))
        },
    );
    let blocked_at = Instant::now();
    // The blocklist is in nftables (the daemon made a sink for it).
    let table = s
        .pair
        .server
        .run(&["nft", "list", "set", "inet", "knock", "block4"])
        .unwrap();
    assert!(table.contains(NEIGHBOUR), "{table}");
    // Even the right sequence from the blocked source does nothing...
    s.knock_from(NEIGHBOUR, &["7000:tcp", "8000:tcp", "9000:tcp"]);
    // ... while another source opens.
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open_from(CLIENT_V4);
    assert_eq!(s.opens(NEIGHBOUR), 0, "{}", s.log());
    assert!(
        blocked_at.elapsed() < Duration::from_secs(8),
        "test too slow"
    );
    // The block expires; then the same source may knock.
    wait_for("the block to end", Duration::from_secs(12), || {
        s.log()
            .contains(&format!("{NEIGHBOUR}: ssh: blacklist entry expired"))
    });
    std::thread::sleep(Duration::from_millis(300));
    s.knock_from(NEIGHBOUR, &["7000:tcp", "8000:tcp", "9000:tcp"]);
    s.wait_open_from(NEIGHBOUR);
    assert_eq!(s.opens(NEIGHBOUR), 1);
}

/// A door of time-derived sequences (the secret in `{DIR}/door.key`).
const DERIVED_CONF: &str = "
[derived]
    sequence_secret_file = {DIR}/door.key
    sequence_length      = 3
    sequence_period      = 60
    sequence_ports       = 20000-20999
    sequence_protocols   = tcp,udp
    command              = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
";

#[test]
#[ignore = "needs root"]
fn time_derived_sequences_open_once_per_window_with_our_client() {
    let s = Setup::new(DERIVED_CONF)
        .client_addr("198.18.0.3/24")
        .file("door.key", "a shared secret\n", 0o600)
        .start();
    let knock = example_bin("knock");
    let knock = knock.to_str().unwrap();
    let conf_path = s.path("knockd.conf");
    let conf_path = conf_path.to_str().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The sequence of this window, as our client computes it.
    let printed = s
        .pair
        .client
        .run(&[
            knock,
            "--door",
            "derived",
            "-c",
            conf_path,
            "--time",
            &now.to_string(),
            "--print",
            SERVER_V4,
        ])
        .unwrap();
    let steps: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(steps.len(), 3, "{printed}");
    // Knocked with Debian's client: it opens.
    s.knock(SERVER_V4, &steps);
    s.wait_open_from(CLIENT_V4);
    assert_eq!(s.opens(CLIENT_V4), 1);
    // A replay of the same sequence (same window, even from elsewhere) does not.
    s.pair
        .server
        .run(&[
            "iptables", "-D", "INPUT", "-s", CLIENT_V4, "-p", "tcp", "--dport", "22", "-j",
            "ACCEPT",
        ])
        .unwrap();
    s.knock(SERVER_V4, &steps);
    s.knock_from(NEIGHBOUR, &steps);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(s.opens(CLIENT_V4), 1, "a replay opened:\n{}", s.log());
    assert_eq!(s.opens(NEIGHBOUR), 0, "a replay opened:\n{}", s.log());
    assert!(!s.connects_from(CLIENT_V4));
    // Our client knocking for the next window (a clock 60 s ahead) opens:
    // w+1 is accepted.
    s.pair
        .client
        .run(&[
            knock,
            "-d",
            "100",
            "--door",
            "derived",
            "--secret-file",
            s.path("door.key").to_str().unwrap(),
            "--length",
            "3",
            "--period",
            "60",
            "--ports",
            "20000-20999",
            "--protocols",
            "udp,tcp",
            "--time",
            &(now + 60).to_string(),
            SERVER_V4,
        ])
        .unwrap();
    s.wait_open_from(CLIENT_V4);
    assert_eq!(s.opens(CLIENT_V4), 2);
}

/// A capture of a derived knock, taken with tcpdump while our client knocks,
/// replays to the same open: the replay tool derives the windows of the
/// packets' own time. With another secret it opens nothing.
#[test]
#[ignore = "needs root"]
fn a_captured_derived_knock_replays_to_the_same_open() {
    let s = Setup::new(DERIVED_CONF)
        .file("door.key", "a shared secret\n", 0o600)
        .file("other.key", "another secret\n", 0o600)
        .start();
    let pcap = s.path("knock.pcap");
    let conf_path = s.path("knockd.conf");
    common::capture_while(
        &s.pair.server,
        knock_testnet::SERVER_IF,
        "tcp or udp",
        &pcap,
        || {
            s.pair
                .client
                .run(&[
                    example_bin("knock").to_str().unwrap(),
                    "--door",
                    "derived",
                    "-c",
                    conf_path.to_str().unwrap(),
                    SERVER_V4,
                ])
                .unwrap();
            s.wait_open_from(CLIENT_V4);
        },
    );

    let replay = |conf: &str| -> String {
        let out = Command::new(example_bin("replay"))
            .arg("-c")
            .arg(s.path(conf))
            .arg(&pcap)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let opens = |lines: &str| {
        lines
            .lines()
            .filter(|l| l.contains(r#""event":"open""#) && l.contains(CLIENT_V4))
            .count()
    };
    let lines = replay("knockd.conf");
    assert_eq!(opens(&lines), 1, "{lines}");
    assert!(lines.contains(r#""door":"derived""#), "{lines}");
    fs::write(
        s.path("other.conf"),
        fs::read_to_string(&conf_path)
            .unwrap()
            .replace("door.key", "other.key"),
    )
    .unwrap();
    let lines = replay("other.conf");
    assert_eq!(opens(&lines), 0, "{lines}");
}

#[test]
#[ignore = "needs root"]
fn bad_secret_files_stop_knockd_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("door.key");
    let conf = dir.path().join("knockd.conf");
    fs::write(
        &conf,
        format!("[d]\n    sequence_secret_file = {}\n", key.display()),
    )
    .unwrap();
    let check = || {
        let out = Command::new(example_bin("knockd"))
            .args(["--check", "-c", conf.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let at = format!("{}:2", conf.display());
    let msg = check();
    assert!(msg.contains(&at) && msg.contains("cannot read it"), "{msg}");
    fs::write(&key, "\n").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let msg = check();
    assert!(msg.contains(&at) && msg.contains("it is empty"), "{msg}");
    fs::write(&key, "secret\n").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let msg = check();
    assert!(
        msg.contains(&at) && msg.contains("readable by everyone"),
        "{msg}"
    );
}

/// `knockd --check` on a configuration naming a FIFO (a sequence file, a
/// one-time file, a secret file, the configuration itself, the state file)
/// or a device exits 1 at once, saying which file and why, instead of
/// blocking on the FIFO or reading the device forever. Needs no root.
#[test]
fn check_refuses_fifos_and_devices_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let conf = dir.path().join("knockd.conf");
    let state_dir = tempfile::tempdir().unwrap();
    let check = |conf: &std::path::Path| {
        let mut child = Command::new(example_bin("knockd"))
            .args(["--check", "-c", conf.to_str().unwrap()])
            .arg("--state-dir")
            .arg(state_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("knockd --check still running after 5 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for (key, file, what) in [
        ("sequence_secret_file", &fifo, "not a regular file (a FIFO)"),
        ("sequence", &fifo, "not a regular file (a FIFO)"),
        ("one_time_sequences", &fifo, "not a regular file (a FIFO)"),
        (
            "sequence",
            &std::path::PathBuf::from("/dev/zero"),
            "not a regular file (a character device)",
        ),
    ] {
        fs::write(&conf, format!("[d]\n    {key} = {}\n", file.display())).unwrap();
        let msg = check(&conf);
        let shown = file.display().to_string();
        assert!(
            msg.contains(&conf.display().to_string()) && msg.contains(&shown) && msg.contains(what),
            "{key}: {msg}"
        );
    }
    let msg = check(&fifo);
    assert!(
        msg.contains(&fifo.display().to_string()) && msg.contains("not a regular file (a FIFO)"),
        "{msg}"
    );
    // A good configuration, but a FIFO where the state is kept.
    let state = state_dir.path().join("engine.state");
    nix::unistd::mkfifo(&state, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    fs::write(&conf, "[d]\n    sequence = 7000,8000\n").unwrap();
    let msg = check(&conf);
    assert!(
        msg.contains(&state.display().to_string()) && msg.contains("not a regular file (a FIFO)"),
        "{msg}"
    );
}

#[test]
#[ignore = "needs root"]
fn from_restricts_the_knockers_and_grant_prefix_widens_the_grant() {
    let conf = format!(
        "
[ssh]
    sequence     = 7000,8000
    from         = {CLIENT_V4}/32
    open         = tcp/22
    firewall     = nftables
    grant_prefix = 24,64
    cmd_timeout  = 30
"
    );
    let s = Setup::new(&conf)
        .client_addr("198.18.0.3/24")
        .no_iptables_drop()
        .start();
    assert!(!s.connects_from(CLIENT_V4), "the guard must drop tcp/22");
    // A knock from an address outside `from` is ignored.
    s.knock_from(NEIGHBOUR, &["7000:tcp", "8000:tcp"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.opens(NEIGHBOUR), 0, "{}", s.log());
    assert!(!s.connects_from(NEIGHBOUR));
    // The allowed knocker opens for its whole /24: the neighbour gets in too.
    s.knock(SERVER_V4, &["7000", "8000"]);
    s.wait_open_from(CLIENT_V4);
    assert!(
        s.connects_from(NEIGHBOUR),
        "grant_prefix = 24 must cover {NEIGHBOUR}"
    );
    let table = s
        .pair
        .server
        .run(&["nft", "list", "table", "inet", "knock"])
        .unwrap();
    assert!(table.contains("198.18.0.0 "), "{table}");
    assert!(
        s.events().contains("\"cidr\":\"198.18.0.0/24\""),
        "{}",
        s.events()
    );
}

/// The door of the blacklist-reach tests: a strict door whose native grant
/// opens tcp/2222, where an echo server listens.
const REACH_DOOR: &str = "
[ssh]
    sequence    = 7000,8000,9000
    seq_timeout = 25
    strict      = yes
    open        = tcp/2222
    firewall    = {FIREWALL}
    cmd_timeout = 120
";

/// The port the door protects (an echo server) and an unrelated open port.
const PROTECTED: u16 = 2222;
const UNRELATED: u16 = 8080;

/// A legitimate knocker opens the door and holds a TCP session to the
/// protected port; then raw SYNs carrying its address (what a spoofer sends:
/// no handshake, and the server cannot tell them from the real ones) get
/// that address blacklisted. The session survives the block, new
/// connections to the protected port are refused, and a new connection to
/// an unrelated open port works with the default reach and not with
/// `blacklist_reach = host`.
fn a_block_keeps_established_sessions(firewall: &str, reach: Option<&str>) {
    let mut conf = "[options]\n    blacklist = 3 invalid in 60s for 60s\n".to_owned();
    if let Some(r) = reach {
        conf.push_str(&format!("    blacklist_reach = {r}\n"));
    }
    conf.push_str(&REACH_DOOR.replace("{FIREWALL}", firewall));
    let s = Setup::new(&conf).no_iptables_drop().start();
    if firewall == "iptables" {
        // The operator's INPUT drops the protected port; the daemon's KNOCK
        // chain (jumped to first) accepts the grants.
        s.pair
            .server
            .run(&[
                "iptables",
                "-A",
                "INPUT",
                "-p",
                "tcp",
                "--dport",
                &PROTECTED.to_string(),
                "-j",
                "DROP",
            ])
            .unwrap();
    }
    s.pair.server.tcp_echo(PROTECTED).unwrap();
    s.pair.server.tcp_listen(UNRELATED).unwrap();
    let server = SERVER_V4.parse().unwrap();
    let connects = |port| {
        s.pair
            .client
            .tcp_connect(server, port, Duration::from_millis(700))
    };
    assert!(!connects(PROTECTED), "the door's port must be closed");
    assert!(connects(UNRELATED));

    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    wait_for(
        &format!("tcp/{PROTECTED} open\n{}", s.log()),
        Duration::from_secs(5),
        || connects(PROTECTED),
    );
    let mut session = s
        .pair
        .client
        .tcp_stream(server, PROTECTED, Duration::from_secs(2))
        .unwrap();
    assert!(echoes(&mut session, b"before the block"));

    // Spoofed SYNs from the knocker's address: 7000 starts an attempt, 7001
    // invalidates it (strike 1), 7002 and 7003 touch the strict door (2, 3).
    let spoof = s
        .pair
        .client
        .output(&["python3", "-c", SWEEP, CLIENT_V4, SERVER_V4, "7000", "7003"])
        .unwrap();
    assert!(spoof.status.success(), "{spoof:?}");
    wait_for(
        &format!("the block\n{}", s.log()),
        Duration::from_secs(5),
        || {
            s.log()
                .contains(&format!("{CLIENT_V4}: ssh: blacklisted for"))
        },
    );

    let rules = || match firewall {
        "iptables" => s.pair.server.run(&["iptables", "-S"]).unwrap(),
        _ => s.pair.server.run(&["nft", "list", "ruleset"]).unwrap(),
    };
    // The log line comes before the sink call: wait for the block itself.
    wait_for(
        &format!("the block in {firewall}\n{}", rules()),
        Duration::from_secs(5),
        || match firewall {
            "iptables" => rules().contains("knock-block:until="),
            _ => s
                .pair
                .server
                .run(&["nft", "list", "set", "inet", "knock", "block4"])
                .unwrap()
                .contains(CLIENT_V4),
        },
    );
    assert!(
        echoes(&mut session, b"after the block"),
        "the block cut an established session ({firewall})\n{}\n{}",
        rules(),
        s.log()
    );
    assert!(
        !connects(PROTECTED),
        "a new connection from the blocked source reached the protected port ({firewall})\n{}",
        rules()
    );
    match reach {
        Some("host") => assert!(
            !connects(UNRELATED),
            "blacklist_reach = host must refuse new connections to every port ({firewall})"
        ),
        _ => assert!(
            connects(UNRELATED),
            "the default reach must not refuse an unrelated port ({firewall})"
        ),
    }
    // Even the right sequence from the blocked source does nothing.
    assert_eq!(s.opens(CLIENT_V4), 1);
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.opens(CLIENT_V4), 1, "{}", s.log());
    assert!(echoes(&mut session, b"still there"));
}

#[test]
#[ignore = "needs root"]
fn an_nftables_block_keeps_established_sessions_and_spares_unrelated_ports() {
    a_block_keeps_established_sessions("nftables", None);
}

#[test]
#[ignore = "needs root"]
fn an_iptables_block_keeps_established_sessions_and_spares_unrelated_ports() {
    a_block_keeps_established_sessions("iptables", None);
}

#[test]
#[ignore = "needs root"]
fn an_nftables_block_of_reach_host_refuses_every_new_connection() {
    a_block_keeps_established_sessions("nftables", Some("host"));
}

#[test]
#[ignore = "needs root"]
fn an_iptables_block_of_reach_host_refuses_every_new_connection() {
    a_block_keeps_established_sessions("iptables", Some("host"));
}
