//! The nftables sink against the real kernel, inside namespaces the test creates.
#![cfg(feature = "nftables")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod support;

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use knock_core::Step;
use knock_firewall::{BlockReach, FirewallSink, Grant, NftChecked, NftConfig, NftDoor, NftSink};
use knock_testnet::{echoes, Pair, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6};

const WAIT: Duration = Duration::from_millis(700);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn config(lifetime: Duration, prefix_v4: u8) -> NftConfig {
    NftConfig {
        doors: vec![
            NftDoor::new("ssh", vec![Step::tcp(22)], Some(lifetime)).with_prefix(prefix_v4, 128)
        ],
        ..NftConfig::default()
    }
}

fn pair() -> Pair {
    let pair = Pair::new().expect("namespaces (root?)");
    pair.server.tcp_listen(22).unwrap();
    pair
}

fn connects(pair: &Pair, server: &str) -> bool {
    pair.client.tcp_connect(ip(server), 22, WAIT)
}

fn ssh_grant(src: &str, id: u64, secs: u64) -> Grant {
    Grant::new("ssh", ip(src), id, vec![Step::tcp(22)])
        .with_expiry(Some(SystemTime::now() + Duration::from_secs(secs)))
}

#[test]
#[ignore = "needs root"]
fn nft_open_close_extend_v4_v6() {
    let pair = pair();
    pair.server
        .enter(|| {
            let mut sink = NftSink::new(config(Duration::from_secs(30), 32)).unwrap();
            assert!(!connects(&pair, SERVER_V4), "guarded before any open");
            for (client, server) in [(CLIENT_V4, SERVER_V4), (CLIENT_V6, SERVER_V6)] {
                let g = ssh_grant(client, 1, 60);
                sink.open(&g).unwrap();
                sink.open(&g).unwrap(); // idempotent
                assert!(connects(&pair, server), "open {client}");
                sink.close(&g).unwrap();
                sink.close(&g).unwrap(); // idempotent
                assert!(!connects(&pair, server), "closed {client}");
            }
            // Extending refreshes the element's timeout.
            let g = ssh_grant(CLIENT_V4, 2, 5);
            sink.open(&g).unwrap();
            let set = pair
                .server
                .run(&["nft", "list", "set", "inet", "knock", "d0_ssh_4"])
                .unwrap();
            assert!(
                set.contains("198.18.0.2 timeout 4s") || set.contains("198.18.0.2 timeout 5s"),
                "{set}"
            );
            sink.extend(&ssh_grant(CLIENT_V4, 2, 500)).unwrap();
            let set = pair
                .server
                .run(&["nft", "list", "set", "inet", "knock", "d0_ssh_4"])
                .unwrap();
            assert!(set.contains("198.18.0.2 timeout 8m"), "{set}");
            // A restart keeps the element (the kernel owns it).
            drop(sink);
            let mut sink = NftSink::new(config(Duration::from_secs(30), 32)).unwrap();
            assert!(connects(&pair, SERVER_V4), "grant survives a restart");
            sink.reconcile(SystemTime::now()).unwrap();
            assert!(connects(&pair, SERVER_V4));
            sink.remove().unwrap();
        })
        .unwrap();
}

#[test]
#[ignore = "needs root"]
fn nft_prefix_grant_covers_the_network() {
    let pair = pair();
    pair.server
        .enter(|| {
            let mut sink = NftSink::new(config(Duration::from_secs(30), 24)).unwrap();
            let g = ssh_grant("198.18.0.77", 1, 60).with_prefix(24, 64);
            sink.open(&g).unwrap();
            let set = pair
                .server
                .run(&["nft", "list", "set", "inet", "knock", "d0_ssh_4"])
                .unwrap();
            assert!(set.contains("198.18.0.0"), "{set}");
            assert!(connects(&pair, SERVER_V4), "198.18.0.2 is in 198.18.0.0/24");
            sink.close(&g).unwrap();
            assert!(!connects(&pair, SERVER_V4));
        })
        .unwrap();
}

fn block_set(pair: &Pair, v6: bool) -> String {
    let set = if v6 { "block6" } else { "block4" };
    pair.server
        .run(&["nft", "list", "set", "inet", "knock", set])
        .unwrap()
}

#[test]
#[ignore = "needs root"]
fn nft_block_until_then_unblock_v4_v6() {
    let pair = pair();
    pair.server
        .enter(|| {
            let mut sink = NftSink::new(config(Duration::from_secs(30), 32)).unwrap();
            for (client, server, v6) in
                [(CLIENT_V4, SERVER_V4, false), (CLIENT_V6, SERVER_V6, true)]
            {
                sink.open(&ssh_grant(client, 1, 600)).unwrap();
                assert!(connects(&pair, server), "granted {client}");
                let until = SystemTime::now() + Duration::from_secs(300);
                sink.block(ip(client), until).unwrap();
                sink.block(ip(client), until).unwrap(); // idempotent
                assert!(!connects(&pair, server), "blocked {client}");
                let set = block_set(&pair, v6);
                // The element's timeout is until - now: the kernel's safety net.
                assert!(set.contains(&format!("{client} timeout 5m")), "{set}");
                sink.unblock(ip(client)).unwrap();
                assert!(!block_set(&pair, v6).contains(client));
                assert!(connects(&pair, server), "unblocked {client}");
                sink.unblock(ip(client)).unwrap(); // absent: still fine
            }
            // An end already past still blocks for the minimum of 1 s.
            sink.block(ip(CLIENT_V4), SystemTime::now() - Duration::from_secs(10))
                .unwrap();
            let set = block_set(&pair, false);
            assert!(set.contains(&format!("{CLIENT_V4} timeout 1s")), "{set}");
            // nftables has nothing to reconcile: the kernel expires elements.
            let r = sink.reconcile(SystemTime::now()).unwrap();
            assert_eq!((r.expired, r.leftovers, r.kept), (0, 0, 0));
            sink.remove().unwrap();
        })
        .unwrap();
}

#[test]
#[ignore = "needs root"]
fn nft_block_is_expired_by_the_kernel() {
    let pair = pair();
    pair.server
        .enter(|| {
            let mut sink = NftSink::new(config(Duration::from_secs(30), 32)).unwrap();
            sink.open(&ssh_grant(CLIENT_V4, 1, 60)).unwrap();
            assert!(connects(&pair, SERVER_V4));
            // The engine would unblock at `until`; if it is gone, the kernel does.
            sink.block(ip(CLIENT_V4), SystemTime::now() + Duration::from_secs(1))
                .unwrap();
            assert!(!connects(&pair, SERVER_V4), "blocked");
            std::thread::sleep(Duration::from_millis(1200));
            assert!(connects(&pair, SERVER_V4), "block expired");
        })
        .unwrap();
}

/// A TCP session from a granted client to an echo server on tcp/2222 (the
/// door's port), opened before its address is blocked.
fn session_2222(pair: &Pair, server: &str) -> std::net::TcpStream {
    let mut conn = pair
        .client
        .tcp_stream(ip(server), 2222, Duration::from_secs(2))
        .unwrap();
    assert!(echoes(&mut conn, b"before"), "no echo before the block");
    conn
}

#[test]
#[ignore = "needs root"]
fn nft_block_keeps_established_sessions_v4_v6() {
    let pair = pair();
    pair.server.tcp_echo(2222).unwrap();
    pair.server
        .enter(|| {
            let cfg = NftConfig {
                doors: vec![NftDoor::new(
                    "ssh",
                    vec![Step::tcp(2222)],
                    Some(Duration::from_secs(60)),
                )],
                ..NftConfig::default()
            };
            let mut sink = NftSink::new(cfg).unwrap();
            support::block_keeps_established_sessions(&pair, &mut sink);
            sink.remove().unwrap();
        })
        .unwrap();
}

#[test]
#[ignore = "needs root"]
fn nft_block_reach_is_the_ports_or_the_host() {
    let pair = pair();
    pair.server.tcp_echo(2222).unwrap();
    pair.server.tcp_listen(8080).unwrap();
    let connects = |port| pair.client.tcp_connect(ip(SERVER_V4), port, WAIT);
    pair.server
        .enter(|| {
            for (reach, other_port_open) in [
                (
                    BlockReach::Ports(vec![Step::tcp(2222), Step::udp(1194)]),
                    true,
                ),
                (BlockReach::Host, false),
            ] {
                let cfg = NftConfig {
                    doors: vec![NftDoor::new(
                        "ssh",
                        vec![Step::tcp(2222)],
                        Some(Duration::from_secs(60)),
                    )],
                    block_reach: reach.clone(),
                    ..NftConfig::default()
                };
                let mut sink = NftSink::new(cfg).unwrap();
                sink.open(
                    &Grant::new("ssh", ip(CLIENT_V4), 1, vec![Step::tcp(2222)])
                        .with_expiry(Some(SystemTime::now() + Duration::from_secs(60))),
                )
                .unwrap();
                assert!(connects(2222) && connects(8080));
                let mut conn = session_2222(&pair, SERVER_V4);
                sink.block(ip(CLIENT_V4), SystemTime::now() + Duration::from_secs(60))
                    .unwrap();
                assert!(!connects(2222), "{reach:?}: the door's port");
                assert_eq!(connects(8080), other_port_open, "{reach:?}: another port");
                assert!(echoes(&mut conn, b"after"), "{reach:?}: the session");
                sink.unblock(ip(CLIENT_V4)).unwrap();
                assert!(connects(2222) && connects(8080), "{reach:?}: unblocked");
                sink.remove().unwrap();
            }
        })
        .unwrap();
}

/// Not a test on its own: the child process of `nft_kill9_leaves_nothing_open`.
#[test]
#[ignore = "needs root"]
fn nft_child_helper() {
    if std::env::var_os("KNOCK_NFT_CHILD").is_none() {
        return;
    }
    let mut sink = NftSink::new(config(Duration::from_secs(2), 32)).unwrap();
    sink.open(&ssh_grant(CLIENT_V4, 1, 2)).unwrap();
    println!("READY");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
#[ignore = "needs root"]
fn nft_kill9_leaves_nothing_open() {
    let pair = pair();
    let exe = std::env::current_exe().unwrap();
    let mut child = pair
        .server
        .command(exe.to_str().unwrap())
        .args([
            "--exact",
            "nft_child_helper",
            "--include-ignored",
            "--nocapture",
        ])
        .env("KNOCK_NFT_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("READY"));
    assert!(ready, "child did not open the grant");
    assert!(connects(&pair, SERVER_V4), "open while the child lives");
    child.kill().unwrap(); // SIGKILL: no clean-up runs
    child.wait().unwrap();
    assert!(
        connects(&pair, SERVER_V4),
        "the kernel keeps the grant for its lifetime"
    );
    std::thread::sleep(Duration::from_millis(2300));
    assert!(
        !connects(&pair, SERVER_V4),
        "the kernel removed the element"
    );
    let set = pair
        .server
        .run(&["nft", "list", "set", "inet", "knock", "d0_ssh_4"])
        .unwrap();
    assert!(!set.contains("198.18.0.2"), "{set}");
}

/// `n` doors; the first, `ssh`, opens tcp/22 plus `extra_ports` more ports,
/// the others open one port each.
fn big_config(n: usize, extra_ports: u16) -> NftConfig {
    let mut ports = vec![Step::tcp(22)];
    ports.extend((0..extra_ports).map(|p| Step::tcp(10_000 + p)));
    let mut doors = vec![NftDoor::new("ssh", ports, Some(Duration::from_secs(30)))];
    for i in 1..n {
        let port = 3000 + u16::try_from(i).unwrap();
        doors.push(NftDoor::new(
            format!("door{i}"),
            vec![Step::tcp(port)],
            Some(Duration::from_secs(30)),
        ));
    }
    NftConfig {
        doors,
        ..NftConfig::default()
    }
}

#[test]
#[ignore = "needs root"]
fn nft_installs_configs_of_many_doors_and_ports() {
    // 60 doors overflowed the receive buffer with acknowledgements
    // (ENOBUFS), 130 doors or 400 ports made one message too big
    // (EMSGSIZE) for the default socket buffers.
    for (doors, extra) in [(60, 0), (130, 0), (1, 399)] {
        let pair = pair();
        pair.server
            .enter(|| {
                let mut sink = NftSink::new(big_config(doors, extra))
                    .unwrap_or_else(|e| panic!("{doors} doors, {} ports: {e}", extra + 1));
                assert!(!connects(&pair, SERVER_V4), "guarded ({doors} doors)");
                sink.open(&ssh_grant(CLIENT_V4, 1, 60)).unwrap();
                assert!(connects(&pair, SERVER_V4), "opened ({doors} doors)");
                let table = pair
                    .server
                    .run(&["nft", "list", "table", "inet", "knock"])
                    .unwrap();
                let last = if extra > 0 {
                    format!("tcp dport {} drop", 10_000 + extra - 1)
                } else {
                    format!("tcp dport {} drop", 3000 + doors - 1)
                };
                assert!(table.contains(&last), "{doors} doors: no `{last}`");
                sink.remove().unwrap();
            })
            .unwrap();
    }
}

#[test]
#[ignore = "needs root"]
fn nft_a_refused_install_keeps_the_previous_table_and_its_elements() {
    let pair = pair();
    pair.server
        .enter(|| {
            let mut sink = NftSink::new(config(Duration::from_secs(30), 32)).unwrap();
            sink.open(&ssh_grant(CLIENT_V4, 1, 600)).unwrap();
            let scanner = ip("198.18.0.66");
            sink.block(scanner, SystemTime::now() + Duration::from_secs(600))
                .unwrap();
            assert!(connects(&pair, SERVER_V4));
            // A lifetime beyond what the kernel takes as a timeout (about
            // 584 years in milliseconds): the kernel refuses the set.
            let huge = config(Duration::from_secs(100_000_000_000), 32);
            let err = NftSink::new(huge).expect_err("the kernel refuses such a timeout");
            assert!(
                err.to_string().contains("longer than an nftables timeout"),
                "{err}"
            );
            // Nothing changed: the guard, the grant and the block are there.
            assert!(connects(&pair, SERVER_V4), "the grant survives");
            assert!(!connects(&pair, SERVER_V6), "the guard still drops");
            let table = pair
                .server
                .run(&["nft", "list", "table", "inet", "knock"])
                .unwrap();
            assert!(table.contains("tcp dport 22 drop"), "{table}");
            assert!(table.contains(CLIENT_V4), "{table}");
            assert!(table.contains("198.18.0.66"), "{table}");
            // The old sink still works on the old table.
            sink.close(&ssh_grant(CLIENT_V4, 1, 600)).unwrap();
            assert!(!connects(&pair, SERVER_V4));
            sink.remove().unwrap();
        })
        .unwrap();
}

#[test]
#[ignore = "needs root"]
fn nft_check_asks_the_kernel_and_changes_nothing() {
    let pair = pair();
    pair.server
        .enter(|| {
            // The ruleset, without the elements' running "expires".
            let list = || {
                let all = pair
                    .server
                    .run(&["nft", "list", "ruleset"])
                    .unwrap_or_default();
                all.lines()
                    .map(|l| l.split(" expires ").next().unwrap_or_default().to_owned())
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            assert_eq!(
                NftSink::check(big_config(140, 0)).unwrap(),
                NftChecked::Kernel
            );
            assert!(!list().contains("knock"), "a check installs nothing");
            let huge = config(Duration::from_secs(100_000_000_000), 32);
            let err = NftSink::check(huge).expect_err("the kernel refuses");
            assert!(err.to_string().contains("longer than"), "{err}");
            // With a table in place, a check of another config leaves it be.
            let mut sink = NftSink::new(config(Duration::from_secs(30), 32)).unwrap();
            sink.open(&ssh_grant(CLIENT_V4, 1, 60)).unwrap();
            let before = list();
            NftSink::check(big_config(3, 0)).unwrap();
            assert_eq!(list(), before);
            assert!(connects(&pair, SERVER_V4));
            sink.remove().unwrap();
        })
        .unwrap();
}

#[test]
#[ignore = "needs root"]
fn nft_a_new_config_replaces_only_what_changed_and_none_removes_the_table() {
    let pair = pair();
    pair.server
        .enter(|| {
            let two = |lifetime| NftConfig {
                doors: vec![
                    NftDoor::new("ssh", vec![Step::tcp(22)], Some(lifetime)),
                    NftDoor::new("web", vec![Step::tcp(443)], Some(lifetime)),
                ],
                ..NftConfig::default()
            };
            let set_list = || {
                pair.server
                    .run(&["nft", "list", "sets", "inet"])
                    .unwrap_or_default()
            };
            let mut sink = NftSink::new(two(Duration::from_secs(30))).unwrap();
            sink.open(&ssh_grant(CLIENT_V4, 1, 600)).unwrap();
            sink.block(
                ip("198.18.0.66"),
                SystemTime::now() + Duration::from_secs(600),
            )
            .unwrap();
            // `web` goes: its sets go, `ssh`'s grant and the block stay.
            drop(sink);
            let sink = NftSink::new(config(Duration::from_secs(30), 32)).unwrap();
            let sets = set_list();
            assert!(!sets.contains("web"), "{sets}");
            assert!(sets.contains("198.18.0.66"), "{sets}");
            assert!(connects(&pair, SERVER_V4), "the grant stays");
            // A new lifetime keeps the set and its elements.
            drop(sink);
            let mut sink = NftSink::new(config(Duration::from_secs(90), 32)).unwrap();
            assert!(connects(&pair, SERVER_V4), "the grant stays");
            // A set of ours of another shape (made by hand) is replaced in
            // the same transaction: the guard never lapses.
            pair.server
                .run(&[
                    "nft",
                    "add",
                    "set",
                    "inet",
                    "knock",
                    "d1_web_4",
                    "{ type ipv4_addr; }",
                ])
                .unwrap();
            let _web = NftSink::new(two(Duration::from_secs(30))).unwrap();
            let web = pair
                .server
                .run(&["nft", "list", "set", "inet", "knock", "d1_web_4"])
                .unwrap();
            assert!(web.contains("timeout 30s"), "{web}");
            assert!(connects(&pair, SERVER_V4), "the grant stays");
            // No doors and no blocklist: nothing to hold, the table goes;
            // the old sink still closes (nothing left) without an error.
            let mut none = NftSink::new(NftConfig {
                blocklist: false,
                ..NftConfig::default()
            })
            .unwrap();
            assert!(!NftSink::table_exists("knock").unwrap());
            sink.close(&ssh_grant(CLIENT_V4, 1, 600)).unwrap();
            none.close(&ssh_grant(CLIENT_V4, 1, 600)).unwrap();
            none.unblock(ip("198.18.0.66")).unwrap();
            assert!(connects(&pair, SERVER_V4), "no guard any more");
        })
        .unwrap();
}
