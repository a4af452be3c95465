//! Time from `open` to the rule being in force, per sink, against a baseline
//! of spawning `true` in the same process. Needs root (it makes a network
//! namespace and works inside it); skips with a message otherwise.
//!
//! `cargo bench -p knock-firewall --all-features --bench open_latency`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a bench may panic

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use knock_core::Step;
use knock_firewall::{
    CommandRunner, DoorCommands, FirewallSink, Grant, IptablesConfig, IptablesSink, Job,
    RunnerConfig,
};

fn grant(i: u32) -> Grant {
    let src = IpAddr::V4(Ipv4Addr::from(0xC612_0000 + 10 + i)); // 198.18.x.y
    Grant::new("ssh", src, u64::from(i), vec![Step::tcp(22)])
        .with_expiry(Some(SystemTime::now() + Duration::from_secs(60)))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(name: &str, d: Duration, base: Duration, target: &str) {
    println!(
        "{name:<28} median {:>9.3} ms   {:>6.2}x spawn(true)   target {target}",
        d.as_secs_f64() * 1e3,
        d.as_secs_f64() / base.as_secs_f64()
    );
}

fn run() {
    let n = 40;
    let base = median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                Command::new("true").status().unwrap();
                t.elapsed()
            })
            .collect(),
    );
    report("baseline: spawn `true`", base, base, "-");

    #[cfg(feature = "nftables")]
    {
        use knock_firewall::{NftConfig, NftDoor, NftSink};
        let cfg = NftConfig {
            doors: vec![NftDoor::new(
                "ssh",
                vec![Step::tcp(22)],
                Some(Duration::from_secs(60)),
            )],
            ..NftConfig::default()
        };
        let mut sink = NftSink::new(cfg).unwrap();
        let times: Vec<_> = (0..500)
            .map(|i| {
                let g = grant(i);
                let t = Instant::now();
                sink.open(&g).unwrap(); // returns once the kernel acked the transaction
                let d = t.elapsed();
                sink.close(&g).unwrap();
                d
            })
            .collect();
        report("nftables (netlink)", median(times), base, "< 1 ms");
        sink.remove().unwrap();
    }
    #[cfg(not(feature = "nftables"))]
    println!("nftables (netlink)           skipped: build with --features nftables");

    let mut sink = IptablesSink::new(IptablesConfig {
        ipv6: false,
        ..IptablesConfig::default()
    })
    .unwrap();
    let times: Vec<_> = (0..n)
        .map(|i| {
            let g = grant(i);
            let t = Instant::now();
            sink.open(&g).unwrap(); // `iptables -C` then `-A`: the rule is in place on return
            let d = t.elapsed();
            sink.close(&g).unwrap();
            d
        })
        .collect();
    report("iptables (-C, -A)", median(times), base, "< 10 ms");

    let door = DoorCommands::new("iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT")
        .with_stop("iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT");
    let runner = CommandRunner::new(RunnerConfig::default());
    let run_one = |id, command| {
        runner
            .run(Job {
                id,
                what: "bench".into(),
                command,
            })
            .unwrap();
        loop {
            if let Some(d) = runner.poll_done() {
                assert!(d.outcome.is_success(), "{d:?}");
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    let times: Vec<_> = (0..n)
        .map(|i| {
            let src = grant(i).src;
            let t = Instant::now();
            run_one(u64::from(i), door.start_for(src)); // the command has run
            let d = t.elapsed();
            run_one(u64::from(i), door.stop_for(src).unwrap());
            d
        })
        .collect();
    report("commands (sh -c iptables)", median(times), base, "-");
}

fn main() {
    if !knock_testnet::is_root() {
        println!("open_latency: skipped, needs root (network namespaces and firewall rules)");
        return;
    }
    let ns = match knock_testnet::Netns::new("bench") {
        Ok(ns) => ns,
        Err(e) => {
            println!("open_latency: skipped, cannot create a network namespace: {e}");
            return;
        }
    };
    ns.enter(run).unwrap();
}
