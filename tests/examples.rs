//! Tests of the `knock` (client) and `replay` examples, run as a user runs
//! them: the example binaries are built with cargo (once per test run) and
//! executed. Also the generator of `examples/data/knock.pcapng`:
//! `REGENERATE=1 cargo test --test examples demo_capture` rewrites it.
//!
//! Tests marked `needs root` create network namespaces (knock-testnet) and
//! capture with tcpdump on the server side; run them with
//! `cargo test --test examples -- --include-ignored` as root.
#![cfg(all(feature = "capture", feature = "config", feature = "firewall"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

mod common;

use knock_capture::{craft, Next, ReplaySource, Source};
use knock_core::{Proto, TcpFlags};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Locating (and building) the example binaries.

/// The path of example `name`, built once for the whole test binary with
/// the profile this test was built with.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(build_examples).as_ref().unwrap();
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Builds `knock` and `replay` and returns the directory they are in.
fn build_examples() -> Result<PathBuf, String> {
    // This test runs as target/<profile>/deps/examples-<hash>.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("unexpected test binary location")?
        .to_owned();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--quiet",
        "--example",
        "knock",
        "--example",
        "replay",
    ])
    .arg("--manifest-path")
    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
    // Put them next to this test, whatever the target directory is.
    .arg("--target-dir")
    .arg(profile_dir.parent().ok_or("no target dir")?);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of the examples failed: {status}"));
    }
    Ok(profile_dir.join("examples"))
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data")
        .join(name)
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------
// The demo capture and its generator.

const T0: u64 = 1_700_000_000;
const SERVER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const ALICE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const BOB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const CAROL: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// A frame of the demo: milliseconds after T0 and the Ethernet bytes.
type Frame = (u64, Vec<u8>);

fn tcp4(ms: u64, src: Ipv4Addr, port: u16, flags: TcpFlags) -> Frame {
    let ip = craft::ipv4(
        src,
        SERVER4,
        6,
        &[],
        craft::Frag::default(),
        &craft::tcp(40000 + port % 1000, port, flags),
    );
    (ms, craft::ethernet(&[], craft::ETH_IPV4, &ip))
}

fn udp4(ms: u64, src: Ipv4Addr, port: u16) -> Frame {
    let ip = craft::ipv4(
        src,
        SERVER4,
        17,
        &[],
        craft::Frag::default(),
        &craft::udp(41000, port, &[0]),
    );
    (ms, craft::ethernet(&[], craft::ETH_IPV4, &ip))
}

fn tcp6(ms: u64, port: u16) -> Frame {
    let ip = craft::ipv6(
        CAROL,
        SERVER6,
        &[],
        6,
        &craft::tcp(42000, port, TcpFlags::SYN),
    );
    (ms, craft::ethernet(&[], craft::ETH_IPV6, &ip))
}

fn udp6(ms: u64, port: u16) -> Frame {
    let ip = craft::ipv6(CAROL, SERVER6, &[], 17, &craft::udp(42001, port, &[0]));
    (ms, craft::ethernet(&[], craft::ETH_IPV6, &ip))
}

fn arp(ms: u64) -> Frame {
    // Who has 198.18.0.1? Tell 198.18.0.2.
    let mut p = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    p.extend_from_slice(&craft::SRC_MAC);
    p.extend_from_slice(&ALICE.octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&SERVER4.octets());
    (ms, craft::ethernet(&[], 0x0806, &p))
}

/// The story of `examples/data/knock.pcapng`; the expected replay is in
/// `replay_default_run_prints_the_demo_story`.
fn demo_frames() -> Vec<Frame> {
    use TcpFlags as F;
    let syn = F::SYN;
    vec![
        arp(0),
        // Noise: alice tries ssh (closed) and asks a DNS server.
        tcp4(20, ALICE, 22, syn),
        udp4(100, ALICE, 53),
        // Alice knocks openSSH in the wrong order: 7000, 9000.
        tcp4(500, ALICE, 7000, syn),
        tcp4(700, ALICE, 9000, syn),
        // Then right: 7000, 8000, 9000, with noise in between (a packet of
        // the wrong flags on a knock port, and an unrelated port).
        tcp4(2000, ALICE, 7000, syn),
        tcp4(2200, ALICE, 7000, F::ACK),
        tcp4(2300, ALICE, 443, syn),
        tcp4(2400, ALICE, 8000, syn),
        tcp4(2600, ALICE, 9000, syn),
        // Bob starts openSSH and gives up: expires 5 s later.
        tcp4(3000, BOB, 7000, syn),
        // Carol, over IPv6, knocks the mixed door (tcp, udp, tcp).
        tcp6(4000, 12345),
        udp6(4200, 54321),
        udp6(4250, 5353),
        tcp6(4400, 24680),
        // Alice reaches ssh now.
        tcp4(5000, ALICE, 22, syn),
        tcp4(5001, ALICE, 22, F::ACK),
        // Alice closes with the reversed sequence.
        tcp4(9000, ALICE, 9000, syn),
        tcp4(9200, ALICE, 8000, syn),
        tcp4(9400, ALICE, 7000, syn),
    ]
}

/// Writes a minimal pcapng file: one section, one Ethernet interface
/// (`kn0`, microsecond timestamps), one enhanced packet block per frame.
fn pcapng(frames: &[Frame]) -> Vec<u8> {
    fn block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
        let len = u32::try_from(12 + body.len()).unwrap();
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&len.to_le_bytes());
    }
    fn option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
        body.extend_from_slice(&code.to_le_bytes());
        body.extend_from_slice(&u16::try_from(value.len()).unwrap().to_le_bytes());
        body.extend_from_slice(value);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let mut out = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    option(
        &mut shb,
        1,
        b"knock-rs demo capture, written by tests/examples.rs (REGENERATE=1)",
    );
    option(&mut shb, 0, &[]);
    block(&mut out, 0x0A0D_0D0A, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&1u16.to_le_bytes()); // LINKTYPE_ETHERNET
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&65535u32.to_le_bytes());
    option(&mut idb, 2, b"kn0");
    option(&mut idb, 0, &[]);
    block(&mut out, 1, &idb);
    for (ms, frame) in frames {
        let us = (T0 * 1000 + ms) * 1000;
        let len = u32::try_from(frame.len()).unwrap();
        let mut epb = Vec::new();
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&u32::try_from(us >> 32).unwrap().to_le_bytes());
        epb.extend_from_slice(&(us as u32).to_le_bytes());
        epb.extend_from_slice(&len.to_le_bytes());
        epb.extend_from_slice(&len.to_le_bytes());
        epb.extend_from_slice(frame);
        epb.resize(epb.len().next_multiple_of(4), 0);
        block(&mut out, 6, &epb);
    }
    out
}

#[test]
fn demo_capture_is_what_the_generator_writes() {
    let bytes = pcapng(&demo_frames());
    let path = data("knock.pcapng");
    if std::env::var_os("REGENERATE").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    let committed = std::fs::read(&path).unwrap();
    assert!(
        committed == bytes,
        "{} differs from its generator; rerun with REGENERATE=1",
        path.display()
    );
}

// ---------------------------------------------------------------------------
// replay

/// The JSON lines of a replay's stdout.
fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// `(event, door, src)` of every line but the stages.
fn story(lines: &[Value]) -> Vec<(String, String, String)> {
    lines
        .iter()
        .filter(|l| l["event"] != "stage")
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
            (s("event"), s("door"), s("src"))
        })
        .collect()
}

fn expected_story() -> Vec<(String, String, String)> {
    [
        ("invalidated", "openSSH", "198.18.0.2"),
        ("open", "openSSH", "198.18.0.2"),
        ("open", "openHTTPS", "2001:db8::2"),
        ("expired", "openSSH", "198.18.0.3"),
        ("open", "closeSSH", "198.18.0.2"),
        ("close", "openSSH", "198.18.0.2"),
        ("close", "openHTTPS", "2001:db8::2"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect()
}

#[test]
fn replay_default_run_prints_the_demo_story() {
    let out = run(&mut Command::new(example("replay")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(story(&lines), expected_story());

    let find = |event: &str, door: &str| {
        lines
            .iter()
            .find(|l| l["event"] == event && l["door"] == door)
            .unwrap()
            .clone()
    };
    let open = find("open", "openSSH");
    assert_eq!(
        open["would_run"],
        "/sbin/iptables -I INPUT -s 198.18.0.2 -p tcp --dport 22 -j ACCEPT"
    );
    assert_eq!(open["time"].as_f64(), Some(1_700_000_002.6));
    assert_eq!(open["until"].as_f64(), Some(1_700_000_012.6));
    let close = find("close", "openSSH");
    assert_eq!(close["grant"], open["grant"]);
    assert_eq!(close["time"], open["until"]);
    assert_eq!(
        close["would_run"],
        "/sbin/iptables -D INPUT -s 198.18.0.2 -p tcp --dport 22 -j ACCEPT"
    );
    let https = find("open", "openHTTPS");
    assert_eq!(https["would_open"], serde_json::json!(["tcp/443"]));
    assert_eq!(https["firewall"], "nftables");
    assert!(https.get("would_run").is_none());
    assert_eq!(
        find("close", "openHTTPS")["would_close"],
        https["would_open"]
    );
    let close_ssh = find("open", "closeSSH");
    assert!(
        close_ssh["until"].is_null(),
        "no stop command: never closes"
    );
    // Three stages before each open.
    let stages = |door: &str| {
        lines
            .iter()
            .filter(|l| l["event"] == "stage" && l["door"] == door)
            .count()
    };
    assert_eq!(
        (stages("openSSH"), stages("closeSSH"), stages("openHTTPS")),
        (5, 3, 3)
    );
    // Time only moves forward.
    let times: Vec<f64> = lines.iter().map(|l| l["time"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(
        text(&out.stderr).contains("20 frames"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn replay_explicit_arguments_and_toml_config_give_the_same_story() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("knock.toml");
    let conf = std::fs::read_to_string(data("knockd.conf")).unwrap();
    std::fs::write(&toml, knock_config::knockd_to_toml(&conf).unwrap()).unwrap();
    let default = run(&mut Command::new(example("replay")));
    for args in [
        vec!["-c".into(), data("knockd.conf"), data("knock.pcapng")],
        vec!["--config-toml".into(), toml.clone(), data("knock.pcapng")],
    ] {
        let out = run(Command::new(example("replay")).args(&args));
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), text(&default.stdout), "{args:?}");
    }
}

/// Runs replay on `capture` and checks it ends with 0 or a clear error
/// (exit 1, one line naming the file), never a panic.
fn replay_fails_cleanly(capture: &Path) -> Output {
    let out = run(Command::new(example("replay")).arg(capture));
    let stderr = text(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}: {:?} {stderr}",
        capture.display(),
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    if out.status.code() == Some(1) {
        assert!(stderr.starts_with("replay: error: "), "{stderr}");
        assert!(stderr.contains(&capture.display().to_string()), "{stderr}");
    }
    // Whatever was printed before the damage is well-formed.
    json_lines(&out);
    out
}

#[test]
fn replay_never_panics_on_truncated_or_garbage_captures() {
    let dir = tempfile::tempdir().unwrap();
    let demo = std::fs::read(data("knock.pcapng")).unwrap();
    // Cut inside the section header, inside a packet block, between blocks.
    for len in [0, 3, 4, 20, 60, 100, 130, 500, 1000, 1001, demo.len() - 1] {
        let path = dir.path().join(format!("cut{len}.pcapng"));
        std::fs::write(&path, &demo[..len]).unwrap();
        let out = replay_fails_cleanly(&path);
        assert_eq!(out.status.code(), Some(1), "cut at {len}");
    }
    // A truncated capture still shows what came before the damage.
    let path = dir.path().join("cut1000.pcapng");
    let out = replay_fails_cleanly(&path);
    assert!(text(&out.stderr).contains("damaged capture"));
    assert!(!json_lines(&out).is_empty());

    // Garbage of a few shapes: random bytes, a pcapng magic then noise, a
    // pcap magic then noise, and the demo with bytes flipped.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let mut cases = vec![noise(4096)];
    cases.push([&[0x0a, 0x0d, 0x0d, 0x0a][..], &noise(500)].concat());
    cases.push([&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0][..], &noise(500)].concat());
    for i in 0..20 {
        let mut damaged = demo.clone();
        for b in noise(8).chunks(2) {
            let at = (usize::from(b[0]) * 8 + usize::from(b[1]) + i * 97) % damaged.len();
            damaged[at] ^= b[1] | 1;
        }
        cases.push(damaged);
    }
    for (i, bytes) in cases.iter().enumerate() {
        let path = dir.path().join(format!("garbage{i}"));
        std::fs::write(&path, bytes).unwrap();
        replay_fails_cleanly(&path);
    }
}

#[test]
fn replay_reports_bad_configs_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.conf");
    let out = run(Command::new(example("replay")).arg("-c").arg(&missing));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("missing.conf"));

    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "[door]\n    sequence = 1000-2000\n").unwrap();
    let out = run(Command::new(example("replay")).arg("-c").arg(&bad));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("bad.conf:2"), "{stderr}");

    let out = run(Command::new(example("replay")).args(["-c", "a", "--config-toml", "b"]));
    assert_eq!(out.status.code(), Some(2));
    let out = run(Command::new(example("replay")).arg("/nonexistent/x.pcap"));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/x.pcap"));
}

// ---------------------------------------------------------------------------
// knock: what needs no network

const SEQ_FILE: &str = " 7000,8000:udp,9000\n#8001,8002\n\n 1111:udp,2222\n 1,2,x\n";

#[test]
fn knock_sequence_file_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let seq = dir.path().join("seqs");
    std::fs::write(&seq, SEQ_FILE).unwrap();
    let shown = seq.display().to_string();
    for (line, expect) in [
        ("0", format!("{shown}:0: no such line")),
        ("6", format!("{shown}:6: no such line")),
        (
            "2",
            format!("{shown}:2: the sequence on this line was already used"),
        ),
        ("3", format!("{shown}:3: the line is blank")),
        ("5", format!("{shown}:5:6: sequence file entry \"x\"")),
    ] {
        // The address is never used: the line is checked before any knock.
        let out = run(Command::new(example("knock")).args([
            "198.18.0.1",
            "--sequence-file",
            &shown,
            "--line",
            line,
        ]));
        assert_eq!(out.status.code(), Some(1), "line {line}");
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with("knock: error: "), "{stderr}");
        assert!(stderr.contains(&expect), "line {line}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    let out = run(Command::new(example("knock")).args([
        "198.18.0.1",
        "--sequence-file",
        &format!("{shown}.missing"),
        "--line",
        "1",
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(".missing"));
}

/// Runs `cmd`, failing the test if it has not exited within 10 s (it is
/// killed then).
fn run_promptly(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn knock_refuses_a_fifo_or_device_as_sequence_or_secret_file_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let shown = fifo.display().to_string();
    for (file, what) in [
        (shown.as_str(), "not a regular file (a FIFO)"),
        ("/dev/zero", "not a regular file (a character device)"),
    ] {
        for args in [
            ["--sequence-file", file, "--line", "1"],
            ["--door", "d", "--secret-file", file],
        ] {
            let out = run_promptly(Command::new(example("knock")).arg("198.18.0.1").args(args));
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            let stderr = text(&out.stderr);
            assert!(
                stderr.contains(file) && stderr.contains(what),
                "{args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn knock_usage_errors_exit_2() {
    for args in [
        &[][..],
        &["198.18.0.1"],
        &["198.18.0.1", "0"],
        &["198.18.0.1", "70000"],
        &["198.18.0.1", "7000:icmp"],
        &["198.18.0.1", "1000-2000"],
        &["-4", "-6", "198.18.0.1", "1"],
        &["198.18.0.1", "--sequence-file", "f"],
        &["198.18.0.1", "--line", "1"],
        &["198.18.0.1", "1", "--sequence-file", "f", "--line", "1"],
    ] {
        let out = run(Command::new(example("knock")).args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = run(Command::new(example("knock")).arg("-V"));
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("knock "));
}

#[test]
fn knock_jitter_and_verbose_on_loopback() {
    // Loopback only: three knocks on closed ports of 127.0.0.1.
    let out = run(Command::new(example("knock")).args([
        "-v",
        "--jitter",
        "30",
        "127.0.0.1",
        "61001:udp",
        "61002",
        "61003:udp",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert_eq!(lines[0], "hitting udp 127.0.0.1:61001");
    assert_eq!(lines[2], "hitting tcp 127.0.0.1:61002");
    assert_eq!(lines[4], "hitting udp 127.0.0.1:61003");
    for wait in [lines[1], lines[3]] {
        let ms: u64 = wait
            .strip_prefix("waiting ")
            .and_then(|w| w.strip_suffix(" ms"))
            .unwrap()
            .parse()
            .unwrap();
        assert!(ms <= 30, "{wait}");
    }
}

// ---------------------------------------------------------------------------
// knock on the wire (root): a namespace pair, tcpdump on the server side.

/// A knock as the server saw it: protocol, port, TCP flags.
type Seen = (Proto, u16, TcpFlags);

/// The knocks sent to `server` in the capture `pcap`, in order.
fn knocks_in(pcap: &Path, server: IpAddr) -> Vec<Seen> {
    let mut src = ReplaySource::open(pcap).unwrap();
    let mut seen = Vec::new();
    while let Next::Event(c) = src.next_event(None).unwrap() {
        let e = c.event;
        if e.dst == server {
            seen.push((e.proto, e.dst_port, e.tcp_flags));
        }
    }
    seen
}

/// The knocks the server saw, in order, while `f` ran (tcpdump on its
/// interface).
fn seen_while(pair: &knock_testnet::Pair, server: &str, f: impl FnOnce()) -> Vec<Seen> {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("server.pcap");
    common::capture_while(
        &pair.server,
        knock_testnet::SERVER_IF,
        "tcp or udp",
        &pcap,
        f,
    );
    knocks_in(&pcap, server.parse().unwrap())
}

/// Runs a knock client in the client namespace while the server captures;
/// returns what the server saw.
fn knocks_seen(
    pair: &knock_testnet::Pair,
    server: &str,
    client: &Path,
    args: &[&str],
) -> Vec<Seen> {
    seen_while(pair, server, || {
        let out = pair
            .client
            .command(client.to_str().unwrap())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            client.display(),
            text(&out.stderr)
        );
    })
}

fn syn(port: u16) -> Seen {
    (Proto::Tcp, port, TcpFlags::SYN)
}

fn udp(port: u16) -> Seen {
    (Proto::Udp, port, TcpFlags::EMPTY)
}

const DEBIAN_KNOCK: &str = "/usr/bin/knock";

/// Our client's knocks arrive in order, one SYN or datagram each, exactly
/// as Debian's `knock` sends them for the same arguments.
fn knock_matches_debian(server: &str, family: &str) {
    let pair = knock_testnet::Pair::new().unwrap();
    let ours = example("knock");
    let cases: [(&[&str], Vec<Seen>); 3] = [
        (
            &["7000", "8000:udp", "9000"],
            vec![syn(7000), udp(8000), syn(9000)],
        ),
        // knock's -u turns every knock into UDP, `:tcp` included.
        (
            &["-u", "7001", "7002:tcp", "7003:udp"],
            vec![udp(7001), udp(7002), udp(7003)],
        ),
        (&["-d", "100", "1", "65535:udp"], vec![syn(1), udp(65535)]),
    ];
    // Where we differ on purpose: the protocol is case-insensitive, as in
    // knockd.conf (knock knocks TCP for anything but exactly "udp").
    let args = [family, server, "7004:UDP", "7005:Tcp"];
    let seen = knocks_seen(&pair, server, &ours, &args);
    assert_eq!(seen, vec![udp(7004), syn(7005)], "ours {args:?}");
    for (ports, expected) in cases {
        let args: Vec<&str> = [family, server].iter().chain(ports).copied().collect();
        let seen = knocks_seen(&pair, server, &ours, &args);
        assert_eq!(seen, expected, "ours {args:?}");
        if Path::new(DEBIAN_KNOCK).exists() {
            let debian = knocks_seen(&pair, server, Path::new(DEBIAN_KNOCK), &args);
            assert_eq!(seen, debian, "ours vs Debian knock {args:?}");
        }
    }
}

#[test]
#[ignore = "needs root"]
fn knock_sends_syns_and_datagrams_in_order_ipv4() {
    knock_matches_debian(knock_testnet::SERVER_V4, "-4");
}

#[test]
#[ignore = "needs root"]
fn knock_sends_syns_and_datagrams_in_order_ipv6() {
    knock_matches_debian(knock_testnet::SERVER_V6, "-6");
}

#[test]
#[ignore = "needs root"]
fn knock_sequence_file_line_knocks_that_line() {
    let pair = knock_testnet::Pair::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seq = dir.path().join("seqs");
    std::fs::write(&seq, SEQ_FILE).unwrap();
    let seq = seq.to_str().unwrap();
    let server = knock_testnet::SERVER_V4;
    for (line, expected) in [
        ("1", vec![syn(7000), udp(8000), syn(9000)]),
        ("4", vec![udp(1111), syn(2222)]),
    ] {
        let args = [server, "--sequence-file", seq, "--line", line];
        let seen = knocks_seen(&pair, server, &example("knock"), &args);
        assert_eq!(seen, expected, "line {line}");
    }
    // An error sends nothing.
    let seen = seen_while(&pair, server, || {
        let out = pair
            .client
            .output(&[
                example("knock").to_str().unwrap(),
                server,
                "--sequence-file",
                seq,
                "--line",
                "2",
            ])
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
    });
    assert_eq!(seen, vec![]);
}

#[test]
#[ignore = "needs root"]
fn replay_of_a_real_capture_opens_for_both_clients() {
    // Real knocks (ours, then Debian's) captured by tcpdump as pcap, replayed
    // against the demo configuration.
    let pair = knock_testnet::Pair::new().unwrap();
    let server = knock_testnet::SERVER_V4;
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("server.pcap");
    let mut clients = vec![example("knock")];
    if Path::new(DEBIAN_KNOCK).exists() {
        clients.push(DEBIAN_KNOCK.into());
    }
    common::capture_while(
        &pair.server,
        knock_testnet::SERVER_IF,
        "tcp or udp",
        &pcap,
        || {
            for client in &clients {
                let out = pair
                    .client
                    .output(&[client.to_str().unwrap(), server, "7000", "8000", "9000"])
                    .unwrap();
                assert!(out.status.success());
            }
            let args = [
                "-6",
                knock_testnet::SERVER_V6,
                "12345",
                "54321:udp",
                "24680",
            ];
            let mut ours = vec![example("knock").to_str().unwrap().to_owned()];
            ours.extend(args.iter().map(|a| a.to_string()));
            let ours: Vec<&str> = ours.iter().map(String::as_str).collect();
            assert!(pair.client.output(&ours).unwrap().status.success());
        },
    );

    let out = run(Command::new(example("replay"))
        .arg("-c")
        .arg(data("knockd.conf"))
        .arg(&pcap));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    let opens: Vec<(String, String)> = story(&lines)
        .into_iter()
        .filter(|(e, _, _)| e == "open" || e == "extended")
        .map(|(e, d, s)| (format!("{e} {d}"), s))
        .collect();
    let mut expected = vec![(
        "open openSSH".to_owned(),
        knock_testnet::CLIENT_V4.to_owned(),
    )];
    if clients.len() == 2 {
        // The second client's knock extends the open grant.
        expected.push((
            "extended openSSH".to_owned(),
            knock_testnet::CLIENT_V4.to_owned(),
        ));
    }
    expected.push((
        "open openHTTPS".to_owned(),
        knock_testnet::CLIENT_V6.to_owned(),
    ));
    assert_eq!(opens, expected);
}

#[test]
fn replay_one_time_sequences_print_the_line_to_mark_and_leave_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let otp = dir.path().join("otp");
    let otp_text = " 7000,8000\n 9000,8000\n";
    std::fs::write(&otp, otp_text).unwrap();
    let conf = dir.path().join("knockd.conf");
    std::fs::write(
        &conf,
        format!(
            "[otp]\n    one_time_sequences = {}\n    seq_timeout = 5\n    command = true %IP%\n",
            otp.display()
        ),
    )
    .unwrap();
    let syn = TcpFlags::SYN;
    let capture = dir.path().join("otp.pcapng");
    std::fs::write(
        &capture,
        pcapng(&[
            tcp4(0, ALICE, 7000, syn),
            tcp4(100, ALICE, 8000, syn),
            // A replay of the used line does nothing.
            tcp4(1000, ALICE, 7000, syn),
            tcp4(1100, ALICE, 8000, syn),
            // The next line works.
            tcp4(2000, ALICE, 9000, syn),
            tcp4(2100, ALICE, 8000, syn),
        ]),
    )
    .unwrap();
    let out = run(Command::new(example("replay"))
        .arg("-c")
        .arg(&conf)
        .arg(&capture));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    let events: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] != "stage")
        .map(|l| l["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["open", "sequence_consumed", "open", "sequence_consumed"]
    );
    let marks: Vec<String> = lines
        .iter()
        .filter(|l| l["event"] == "sequence_consumed")
        .map(|l| l["would_mark"].as_str().unwrap().to_owned())
        .collect();
    let shown = otp.display();
    assert_eq!(marks, [format!("{shown}:1"), format!("{shown}:2")]);
    assert_eq!(
        lines.iter().find(|l| l["event"] == "open").unwrap()["would_run"],
        "true 198.18.0.2"
    );
    assert_eq!(
        std::fs::read_to_string(&otp).unwrap(),
        otp_text,
        "replay never writes"
    );
}
