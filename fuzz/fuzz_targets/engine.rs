//! The engine under an arbitrary stream of knocks, time (both clocks, the
//! wall clock jumping too), reloads, failed and confirmed actions, crashes
//! (a new engine restoring the last snapshot) and shutdowns.
//! Invariants: no panic, every snapshot reads back as itself, and after a
//! crash-free tail every grant with a close is closed.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use knock::config::Config;
use knock::core::{Event, TcpFlags, Timestamp};
use knock::engine::{Action, Applied, Engine, EngineOptions, Now, Snapshot};
use libfuzzer_sys::fuzz_target;

const CONFIGS: [&str; 3] = [
    "[a]\n sequence = 1,2,3\n cmd_timeout = 2\n start_command = add %IP%\n stop_command = del %IP%\n\
     [b]\n sequence = 2,1:udp\n open = tcp/22\n firewall = iptables\n cmd_timeout = 1\n",
    "[options]\n blacklist = 2 invalid in 5s for 3s\n\
     [a]\n sequence = 1,2,3\n cmd_timeout = 3\n start_command = add %IP%\n stop_command = del %IP%\n\
     [c]\n sequence = 3,2\n strict = yes\n cooldown = 1\n open = udp/53\n",
    "[a]\n sequence = 1,2\n start_command = add %IP%\n start_command_6 = add6 %IP%\n",
];

struct Bytes<'a>(&'a [u8]);
impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
}

fn config(i: u8) -> Config {
    Config::from_knockd_str(CONFIGS[usize::from(i) % CONFIGS.len()], "fuzz.conf")
        .unwrap_or_default()
}

fn drain(e: &mut Engine, disk: &mut Option<Snapshot>, pending: &mut Vec<Applied>) {
    while let Some(a) = e.poll_action() {
        if let Action::Persist(s, _) = &a {
            let back = Snapshot::from_bytes(&s.to_bytes()).ok();
            assert_eq!(back.as_ref(), Some(s), "a snapshot reads back as itself");
            *disk = Some(s.clone());
        }
        if let Some(done) = a.applied() {
            pending.push(done);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let (mut mono, mut unix) = (0u64, 1_700_000_000_000u64);
    let now = |mono: u64, unix: u64| {
        Now::new(Timestamp::from_millis(mono), Duration::from_millis(unix))
    };
    let Ok(mut e) = Engine::new(config(b.u8()), EngineOptions::default(), now(mono, unix)) else {
        return;
    };
    let mut disk = None;
    let mut pending = Vec::new();
    drain(&mut e, &mut disk, &mut pending);
    while !b.0.is_empty() {
        let op = b.u8();
        match op % 8 {
            0..=2 => {
                let src = match b.u8() % 3 {
                    0 => IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
                    1 => IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3)),
                    _ => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
                };
                let port = u16::from(1 + b.u8() % 4);
                let dst = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
                let t = Timestamp::from_millis(mono);
                let ev = if op & 0x10 != 0 {
                    Event::udp(src, dst, port, t)
                } else {
                    Event::tcp(src, dst, port, TcpFlags::SYN, t)
                };
                e.handle_event(now(mono, unix), &ev);
            }
            3 => {
                let d = u64::from(b.u8()) * 50;
                mono += d;
                // The wall clock mostly follows, sometimes jumps.
                unix = match b.u8() % 8 {
                    0 => unix.saturating_sub(60_000),
                    1 => unix + 3_600_000,
                    _ => unix + d,
                };
                e.handle_timeout(now(mono, unix));
            }
            4 => {
                let _ = e.handle_reload(now(mono, unix), config(b.u8()));
            }
            5 => {
                let ok = b.u8() % 2 == 0;
                for a in std::mem::take(&mut pending) {
                    let r = if ok { Ok(()) } else { Err("refused".to_owned()) };
                    e.handle_applied(now(mono, unix), a, r);
                }
            }
            6 => {
                // A crash: a new process restores what was written.
                mono = 0;
                unix += u64::from(b.u8()) * 100;
                let Ok(mut fresh) = Engine::new(config(b.u8()), EngineOptions::default(), now(mono, unix))
                else {
                    return;
                };
                if let Some(s) = disk.clone() {
                    fresh.restore(now(mono, unix), s);
                }
                e = fresh;
                pending.clear();
            }
            _ => e.handle_shutdown(now(mono, unix), b.u8() % 2 == 0),
        }
        drain(&mut e, &mut disk, &mut pending);
    }
    // A tail without crashes: confirm everything, let time run out.
    for _ in 0..10_000 {
        for a in std::mem::take(&mut pending) {
            e.handle_applied(now(mono, unix), a, Ok(()));
        }
        drain(&mut e, &mut disk, &mut pending);
        let Some(t) = e.poll_timeout() else { break };
        let t = t.as_millis().max(mono);
        unix += t - mono;
        mono = t;
        e.handle_timeout(now(mono, unix));
        drain(&mut e, &mut disk, &mut pending);
    }
    for a in std::mem::take(&mut pending) {
        e.handle_applied(now(mono, unix), a, Ok(()));
    }
    drain(&mut e, &mut disk, &mut pending);
    if e.poll_timeout().is_none() {
        if let Some(s) = &disk {
            assert!(s.grants.is_empty(), "grants left open at the end: {s:?}");
        }
    }
});
