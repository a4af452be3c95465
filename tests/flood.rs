//! Flood: N first knocks from N distinct spoofed sources (100.64.0.0/10),
//! then the real sequence from 198.18.0.2, written by the `floodgen` example
//! and replayed with `tcpreplay --topspeed` into the client side of a veth
//! while the `knockd` example captures on the server side with a native
//! nftables door. The real knocker must get its grant (a TCP connect to
//! port 22 succeeds), the kernel must have dropped nothing, and the daemon's
//! peak resident memory must stay under [`hwm_bound_kib`].
//!
//! `KNOCK_FLOOD_N` sets N (default 200,000; `.ci/run` runs the default).
//! Root only (namespaces); `.ci/run` runs it with `--include-ignored`.
//!
//! The daemon writes a knockd-style log file (`-g`). knockd writes a
//! `Stage 1` line per first knock, so a flood fills the disk; ours writes
//! such lines up to a sustained rate and summarises the rest, so the test
//! also asserts that every first knock is in the log or counted in a
//! summary, that the file stays small, and that the real knocker's stages
//! and open are in it.

// Test support code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{status_kib, Server, Setup};
use knock_testnet::{wait_for, Pair, Profile, CLIENT_IF, SERVER_IF, SERVER_V4};

/// The release build, brought up to date with `cargo build --release`: the
/// flood is about the packet rate a deployed (release) daemon sustains; a
/// debug build costs about twice the CPU per packet.
/// `KNOCK_FLOOD_PROFILE=debug` uses the test's own profile instead.
fn profile() -> Profile {
    if std::env::var("KNOCK_FLOOD_PROFILE").is_ok_and(|p| p == "debug") {
        Profile::SameAsTest
    } else {
        Profile::Release
    }
}

/// `target/<profile()>/examples/<name>`.
fn example_bin(name: &str) -> PathBuf {
    knock_testnet::example_bin(name, profile()).expect("build example")
}

/// N from `KNOCK_FLOOD_N`, default 200,000.
fn flood_n() -> u32 {
    std::env::var("KNOCK_FLOOD_N")
        .ok()
        .map(|v| v.replace('_', "").parse().expect("KNOCK_FLOOD_N: a number"))
        .unwrap_or(200_000)
}

/// The bound on the daemon's peak resident memory (VmHWM), in KiB: 24 MiB
/// for the process (binary, allocator), the capture ring (mapped into the
/// process: 32 MiB by default, `LiveConfig::ring_frames` x
/// `ring_frame_size`), plus 256 bytes per tracked source, with the
/// matcher's default cap of 1M sources. Measured (release build): 16 MiB
/// at N = 200k before the ring, 48 MiB with it.
fn hwm_bound_kib(n: u32) -> u64 {
    24 * 1024 + 32 * 1024 + u64::from(n.min(1_000_000)) * 256 / 1024
}

/// The most bytes the log file may hold after the flood: a summary every
/// 10 s and up to 10 stage lines a second (plus a burst of 100) whatever N is.
const LOG_BOUND: u64 = 256 * 1024;

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    ticks / hz
}

/// The MAC address of `ifname` inside the server namespace.
fn server_mac(pair: &Pair) -> String {
    let out = pair
        .server
        .run(&["cat", &format!("/sys/class/net/{SERVER_IF}/address")])
        .unwrap();
    out.trim().to_string()
}

/// The namespaces with knockd on `conf` ready to start (tcp/22 listens,
/// no iptables rule: the doors are native nftables ones): the
/// [`profile()`] build, at its default verbosity, `--stats-json` on stdout
/// and no events there. A knockd-style log file (`-g`), as deployments
/// have: one `Stage 1` line per spoofed knock, which must not cost a
/// write(2) per packet.
fn flood_server(conf: &str) -> Server {
    Setup::new(conf)
        .no_iptables_drop()
        .profile(profile())
        .quiet()
        .no_events()
        .args(&["--stats-json"])
        .prepare()
}

/// Writes the flood `floodgen` makes with `args` to `pcap`, addressed to
/// the server's MAC.
fn floodgen(s: &Server, args: &[&str], pcap: &Path) {
    let st = Command::new(example_bin("floodgen"))
        .args(args)
        .args(["--dst-mac", &server_mac(&s.pair)])
        .arg("-o")
        .arg(pcap)
        .status()
        .unwrap();
    assert!(st.success(), "floodgen failed");
}

/// SIGTERM, wait for the exit, and return the `--stats-json` object.
fn stop(s: &mut Server) -> serde_json::Value {
    s.signal("-TERM");
    s.wait_exit("knockd to exit on SIGTERM", Duration::from_secs(10));
    let out = s.stdout();
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with("{\"capture\""))
        .unwrap_or_else(|| panic!("no stats line in {out:?}"));
    serde_json::from_str(line).unwrap()
}

const NFT_DOOR: &str = "
[openSSH]
    sequence    = 7000,8000,9000
    seq_timeout = 60
    tcpflags    = syn
    open        = tcp/22
    firewall    = nftables
    cmd_timeout = 60
";

#[test]
#[ignore = "needs root"]
fn flood_of_spoofed_first_knocks_does_not_stop_the_real_knocker() {
    let n = flood_n();
    let mut s = flood_server(NFT_DOOR);

    let pcap = s.path("flood.pcap");
    floodgen(&s, &["-n", &n.to_string()], &pcap);

    s.spawn();
    let pid = s.pid();
    let pair = &s.pair;
    let connects = |t: u64| {
        pair.client.tcp_connect(
            SERVER_V4.parse::<IpAddr>().unwrap(),
            22,
            Duration::from_millis(t),
        )
    };
    // The capture socket opens a moment before the table's guard is in.
    wait_for(
        "the nftables guard to drop tcp/22 before the knock",
        Duration::from_secs(5),
        || !connects(300),
    );

    let started = Instant::now();
    let out = pair
        .client
        .run(&[
            "tcpreplay",
            "--topspeed",
            "-i",
            CLIENT_IF,
            pcap.to_str().unwrap(),
        ])
        .unwrap();
    let replay = started.elapsed();
    wait_for(
        "tcp/22 to open for the real knocker",
        Duration::from_secs(30),
        || connects(700),
    );
    let opened_after = started.elapsed();
    let hwm = status_kib(pid, "VmHWM");
    let cpu = cpu_seconds(pid);
    let stats = stop(&mut s);
    eprintln!(
        "N = {n}: replay {replay:.2?} ({}), open after {opened_after:.2?}, \
         daemon CPU {cpu:.2} s, VmHWM {hwm} KiB\nstats: {stats}",
        out.lines()
            .find(|l| l.starts_with("Rated:"))
            .unwrap_or("")
            .trim()
    );

    let frames = u64::from(n) + 3;
    assert_eq!(stats["capture"]["kernel_drops"], 0, "kernel drops: {stats}");
    assert_eq!(stats["capture"]["kernel_packets"], frames, "{stats}");
    assert_eq!(stats["capture"]["events"], frames, "{stats}");
    assert_eq!(stats["matcher"]["opens"], 1, "{stats}");
    // Every first knock is logged or counted in a summary; the file stays
    // small; the real knocker's stages come before its open.
    let log = fs::read_to_string(s.path("knockd.log")).unwrap();
    let spoofed_stages = log
        .lines()
        .filter(|l| l.contains("] 100.") && l.ends_with(": Stage 1"))
        .count() as u64;
    let summarised: u64 = log
        .lines()
        .filter(|l| l.contains("stage and timeout lines from"))
        .map(|l| {
            let after = l.split("] ").nth(1).unwrap_or("");
            let after = after.strip_prefix("warning: ").unwrap_or(after);
            after.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert!(
        (u64::from(n)..=u64::from(n) + 3).contains(&(spoofed_stages + summarised)),
        "{spoofed_stages} stage lines written, {summarised} summarised, of {n}"
    );
    assert_eq!(
        stats["engine"]["log_suppressed"], summarised,
        "the counter and the summaries agree: {stats}"
    );
    let size = fs::metadata(s.path("knockd.log")).unwrap().len();
    assert!(size <= LOG_BOUND, "log file of {size} bytes");
    let mine: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("] ").nth(1))
        .filter(|l| l.starts_with("198.18.0.2: "))
        .collect();
    assert_eq!(
        mine,
        [
            "198.18.0.2: openSSH: Stage 1",
            "198.18.0.2: openSSH: Stage 2",
            "198.18.0.2: openSSH: Stage 3",
            "198.18.0.2: openSSH: OPEN SESAME",
        ],
        "the real knocker in the log"
    );
    assert!(
        hwm <= hwm_bound_kib(n),
        "VmHWM {hwm} KiB over the bound of {} KiB",
        hwm_bound_kib(n)
    );
}

const SPA_KEY: &str = "ZxwCwpGiY1Iv/nzNSES5J5LjuyJ6VpuHvBjzhY2bvck=";
const SPA_HMAC: &str =
    "913yacJvmZCnAkEMp7qifH1iZ2fJpda27ZO2WLXNbIWtImTr3ITQBGCZWcSzjEJloNi/cyz13s+7LsyNiH4i8w==";

/// 50,000 junk datagrams to udp/62201 from spoofed sources (each passes the
/// checks before the HMAC, so each costs one HMAC-SHA256), replayed at
/// 25,000 a second; half a second in, Debian's `fwknop` sends a real
/// packet from 198.18.0.2. Its grant must open within a second, the daemon
/// must stay up and every junk datagram be counted as a bad HMAC.
#[test]
#[ignore = "needs root"]
fn spa_flood_of_junk_does_not_delay_a_real_packet() {
    let n: u32 = 50_000;
    let conf = format!(
        "[spa]\n    spa_key_base64 = {SPA_KEY}\n    spa_hmac_key_base64 = {SPA_HMAC}\n    \
         open = tcp/22\n    firewall = nftables\n    cmd_timeout = 60\n"
    );
    let mut s = flood_server(&conf);
    let pcap = s.path("spa-junk.pcap");
    floodgen(&s, &["--spa", "-n", &n.to_string()], &pcap);
    s.spawn();
    let pair = &s.pair;
    let server: IpAddr = SERVER_V4.parse().unwrap();
    let connects = |t: u64| {
        pair.client
            .tcp_connect(server, 22, Duration::from_millis(t))
    };
    // The capture socket opens a moment before the table's guard is in.
    wait_for(
        "the nftables guard on tcp/22",
        Duration::from_secs(5),
        || !connects(300),
    );

    let mut flood = pair
        .client
        .command("tcpreplay")
        .args(["--pps", "25000", "-i", CLIENT_IF])
        .arg(&pcap)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let home = s.path("home");
    fs::create_dir_all(&home).unwrap();
    let sent = pair
        .client
        .command("fwknop")
        .env("HOME", &home)
        .args([
            "--no-rc-file",
            "--no-save-args",
            "--use-hmac",
            "-D",
            SERVER_V4,
        ])
        .args(["-A", "tcp/22", "-a", "198.18.0.2"])
        .args([
            "--key-base64-rijndael",
            SPA_KEY,
            "--key-base64-hmac",
            SPA_HMAC,
        ])
        .status()
        .unwrap();
    let t0 = Instant::now();
    assert!(sent.success());
    let mut opened = None;
    while t0.elapsed() < Duration::from_secs(5) {
        if connects(100) {
            opened = Some(t0.elapsed());
            break;
        }
    }
    let flooding = flood.try_wait().unwrap().is_none();
    let out = flood.wait_with_output().unwrap();
    assert!(out.status.success());
    let running = s.child.as_mut().unwrap().try_wait().unwrap().is_none();
    assert!(running, "the daemon stays up");
    let cpu = cpu_seconds(s.pid());
    let stats = stop(&mut s);
    let opened = opened.unwrap_or_else(|| panic!("never opened; stats: {stats}"));
    eprintln!(
        "SPA flood of {n}: open {opened:.2?} after the real packet (flood still running: {flooding}), \
         daemon CPU {cpu:.2} s\nstats: {stats}"
    );
    assert!(flooding, "the real packet was sent during the flood");
    assert!(opened < Duration::from_secs(1), "opened after {opened:?}");
    assert_eq!(stats["spa"]["accepted"], 1, "{stats}");
    assert_eq!(stats["capture"]["kernel_drops"], 0, "{stats}");
    assert_eq!(stats["spa"]["refused"]["bad_hmac"], u64::from(n), "{stats}");
}
