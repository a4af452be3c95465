//! Every sink against the real kernel, inside namespaces the test creates.
//! Needs root: `cargo test -p knock-firewall --all-features -- --include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod support;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use knock_core::Step;
use knock_firewall::{
    BlockReach, CommandRunner, Done, DoorCommands, FirewallSink, Grant, IptablesConfig,
    IptablesSink, Job, Outcome, RunnerConfig,
};
use knock_testnet::{echoes, Pair, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6};

const WAIT: Duration = Duration::from_millis(700);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A pair whose server listens on tcp/22 and drops it in INPUT (iptables and ip6tables).
fn guarded_pair() -> Pair {
    let pair = Pair::new().expect("namespaces (root?)");
    for prog in ["iptables", "ip6tables"] {
        pair.server
            .run(&[
                prog, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP",
            ])
            .unwrap();
    }
    pair.server.tcp_listen(22).unwrap();
    pair
}

fn connects(pair: &Pair, server: &str) -> bool {
    pair.client.tcp_connect(ip(server), 22, WAIT)
}

fn ssh_grant(src: &str, id: u64) -> Grant {
    Grant::new("ssh", ip(src), id, vec![Step::tcp(22)])
}

#[test]
#[ignore = "needs root"]
fn iptables_open_close_idempotent_v4_v6() {
    let pair = guarded_pair();
    assert!(!connects(&pair, SERVER_V4));
    assert!(!connects(&pair, SERVER_V6));
    pair.server
        .enter(|| {
            let mut sink = IptablesSink::new(IptablesConfig::default()).unwrap();
            for (client, server, v6) in
                [(CLIENT_V4, SERVER_V4, false), (CLIENT_V6, SERVER_V6, true)]
            {
                let g = ssh_grant(client, 1)
                    .with_expiry(Some(SystemTime::now() + Duration::from_secs(60)));
                sink.open(&g).unwrap();
                sink.open(&g).unwrap();
                assert_eq!(sink.rules(v6).unwrap().len(), 1, "{:?}", sink.rules(v6));
                assert!(connects(&pair, server), "open {client}");
                sink.close(&g).unwrap();
                sink.close(&g).unwrap();
                assert!(sink.rules(v6).unwrap().is_empty());
                assert!(!connects(&pair, server), "closed {client}");
            }
            // A second sink does not add a second jump.
            let _again = IptablesSink::new(IptablesConfig::default()).unwrap();
            let input = pair.server.run(&["iptables", "-S", "INPUT"]).unwrap();
            assert_eq!(input.matches("-j KNOCK").count(), 1, "{input}");
        })
        .unwrap();
}

#[test]
#[ignore = "needs root"]
fn iptables_restart_reconciles_expired_and_leftovers() {
    let pair = guarded_pair();
    pair.server
        .enter(|| {
            let now = SystemTime::now();
            let in_a_minute = now + Duration::from_secs(60);
            {
                let mut sink = IptablesSink::new(IptablesConfig::default()).unwrap();
                sink.open(&ssh_grant(CLIENT_V4, 1).with_expiry(Some(in_a_minute)))
                    .unwrap();
                sink.open(&ssh_grant("198.18.0.9", 2)).unwrap(); // never expires
                sink.block(ip("198.18.0.7"), in_a_minute).unwrap();
                sink.block(ip("2001:db8::7"), now + Duration::from_secs(3600))
                    .unwrap();
                assert!(connects(&pair, SERVER_V4));
            } // the daemon dies
            pair.server
                .run(&["iptables", "-A", "KNOCK", "-s", "192.0.2.1", "-j", "ACCEPT"])
                .unwrap();
            // Restarted two minutes later (as far as reconcile can tell).
            let later = now + Duration::from_secs(120);
            let mut sink = IptablesSink::new(IptablesConfig::default()).unwrap();
            let r = sink.reconcile(later).unwrap();
            // Expired: the grant and the IPv4 block; kept: the endless grant
            // and the IPv6 block; the untagged rule is a leftover.
            assert_eq!((r.expired, r.leftovers, r.kept), (2, 1, 2), "{r:?}");
            assert!(!connects(&pair, SERVER_V4));
            let v4 = sink.rules(false).unwrap();
            assert_eq!(v4.len(), 1, "{v4:?}");
            assert!(v4[0].contains("198.18.0.9"), "{v4:?}");
            let v6 = sink.rules(true).unwrap();
            assert_eq!(v6.len(), 1, "{v6:?}");
            assert!(v6[0].contains("knock-block:until="), "{v6:?}");
        })
        .unwrap();
}

#[test]
#[ignore = "needs root"]
fn iptables_block_until_then_unblock_v4_v6() {
    let pair = guarded_pair();
    pair.server
        .enter(|| {
            let mut sink = IptablesSink::new(IptablesConfig::default()).unwrap();
            for (client, server, v6) in
                [(CLIENT_V4, SERVER_V4, false), (CLIENT_V6, SERVER_V6, true)]
            {
                sink.open(&ssh_grant(client, 1)).unwrap();
                assert!(connects(&pair, server), "granted {client}");
                let until = SystemTime::now() + Duration::from_secs(60);
                sink.block(ip(client), until).unwrap();
                sink.block(ip(client), until).unwrap(); // idempotent
                assert!(!connects(&pair, server), "blocked {client}");
                let blocks = |sink: &IptablesSink| {
                    sink.rules(v6)
                        .unwrap()
                        .into_iter()
                        .filter(|r| r.contains("knock-block:until="))
                        .count()
                };
                assert_eq!(blocks(&sink), 1, "{:?}", sink.rules(v6));
                // A later end replaces the rule, it does not add one.
                sink.block(ip(client), until + Duration::from_secs(60))
                    .unwrap();
                assert_eq!(blocks(&sink), 1, "{:?}", sink.rules(v6));
                assert!(!connects(&pair, server), "still blocked {client}");
                sink.unblock(ip(client)).unwrap();
                assert_eq!(blocks(&sink), 0, "{:?}", sink.rules(v6));
                assert!(connects(&pair, server), "unblocked {client}");
                sink.unblock(ip(client)).unwrap(); // absent: still fine
                sink.unblock(ip(if v6 { "2001:db8::99" } else { "198.18.0.99" }))
                    .unwrap(); // never blocked
                               // The grant was untouched all along.
                assert_eq!(sink.rules(v6).unwrap().len(), 1);
            }
        })
        .unwrap();
}

#[test]
#[ignore = "needs root"]
fn iptables_block_keeps_established_sessions_v4_v6() {
    let pair = guarded_pair();
    pair.server.tcp_echo(2222).unwrap();
    for prog in ["iptables", "ip6tables"] {
        pair.server
            .run(&[
                prog, "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP",
            ])
            .unwrap();
    }
    pair.server
        .enter(|| {
            let mut sink = IptablesSink::new(IptablesConfig::default()).unwrap();
            support::block_keeps_established_sessions(&pair, &mut sink);
        })
        .unwrap();
}

#[test]
#[ignore = "needs root"]
fn iptables_block_reach_is_the_ports_or_the_host() {
    let pair = guarded_pair();
    pair.server.tcp_echo(2222).unwrap();
    pair.server.tcp_listen(8080).unwrap();
    pair.server
        .run(&[
            "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP",
        ])
        .unwrap();
    let connects = |port| pair.client.tcp_connect(ip(SERVER_V4), port, WAIT);
    pair.server
        .enter(|| {
            for (reach, other_port_open, rules) in [
                (
                    BlockReach::Ports(vec![Step::tcp(2222), Step::udp(1194), Step::tcp(2222)]),
                    true,
                    2,
                ),
                (BlockReach::Host, false, 1),
            ] {
                let mut sink = IptablesSink::new(IptablesConfig {
                    block_reach: reach.clone(),
                    ..IptablesConfig::default()
                })
                .unwrap();
                let g = Grant::new("ssh", ip(CLIENT_V4), 1, vec![Step::tcp(2222)]);
                sink.open(&g).unwrap();
                assert!(connects(2222) && connects(8080));
                let mut conn = pair
                    .client
                    .tcp_stream(ip(SERVER_V4), 2222, Duration::from_secs(2))
                    .unwrap();
                assert!(echoes(&mut conn, b"before"));
                sink.block(ip(CLIENT_V4), SystemTime::now() + Duration::from_secs(60))
                    .unwrap();
                let blocks: Vec<String> = sink
                    .rules(false)
                    .unwrap()
                    .into_iter()
                    .filter(|r| r.contains("knock-block:until="))
                    .collect();
                // One rule per distinct port, or one for the host.
                assert_eq!(blocks.len(), rules, "{reach:?}: {blocks:?}");
                assert!(!connects(2222), "{reach:?}: the door's port");
                assert_eq!(connects(8080), other_port_open, "{reach:?}: another port");
                assert!(echoes(&mut conn, b"after"), "{reach:?}: the session");
                sink.unblock(ip(CLIENT_V4)).unwrap();
                assert!(connects(2222) && connects(8080), "{reach:?}: unblocked");
                sink.close(&g).unwrap();
            }
        })
        .unwrap();
}

/// Runs one job to its end.
fn run_one(runner: &CommandRunner, job: Job) -> Done {
    runner.run(job).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(d) = runner.poll_done() {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "command still running"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
#[ignore = "needs root"]
fn commands_open_and_close_through_iptables() {
    let pair = guarded_pair();
    let ns = pair.server.name();
    let door = DoorCommands::new(format!(
        "ip netns exec {ns} iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"
    ))
    .with_stop(format!(
        "ip netns exec {ns} iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"
    ))
    .with_start6(format!(
        "ip netns exec {ns} ip6tables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"
    ));
    let runner = CommandRunner::new(RunnerConfig::default());
    let job = |id, what: &str, command| Job {
        id,
        what: what.to_owned(),
        command,
    };
    let (v4, v6) = (ip(CLIENT_V4), ip(CLIENT_V6));
    let d = run_one(&runner, job(1, "ssh: start for v4", door.start_for(v4)));
    assert_eq!(d.outcome, Outcome::Succeeded, "{d:?}");
    assert!(connects(&pair, SERVER_V4));
    let d = run_one(
        &runner,
        job(2, "ssh: stop for v4", door.stop_for(v4).unwrap()),
    );
    assert_eq!(d.outcome, Outcome::Succeeded, "{d:?}");
    assert!(!connects(&pair, SERVER_V4));

    let d = run_one(&runner, job(3, "ssh: start for v6", door.start_for(v6)));
    assert_eq!(d.outcome, Outcome::Succeeded, "{d:?}");
    assert!(connects(&pair, SERVER_V6));
    // No stop_command_6: the IPv4 one is rendered, and iptables refuses an IPv6 address.
    let d = run_one(
        &runner,
        job(4, "ssh: stop for v6", door.stop_for(v6).unwrap()),
    );
    assert!(
        matches!(&d.outcome, Outcome::Failed { code: Some(c), stderr } if *c != 0 && !stderr.is_empty()),
        "{d:?}"
    );
    let s = runner.stats();
    assert_eq!((s.succeeded, s.failed), (3, 1), "{s:?}");
}
