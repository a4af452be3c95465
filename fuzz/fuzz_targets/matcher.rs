//! The matcher under an arbitrary stream of events, timeouts, reloads and
//! restored state (grants, blocks, used windows).
//! Invariants: no panic, the source table stays under its cap, every grant
//! with a lifetime is closed exactly once and never before its deadline.
#![no_main]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use knock_core::{
    Blacklist, Decision, Door, Event, FlagFilter, GrantId, Limits, Matcher, Step, TcpFlags,
    Timestamp,
};
use libfuzzer_sys::fuzz_target;

const CAP: usize = 8;

/// Reads small numbers off the input, yielding zeros when it runs out.
struct Bytes<'a>(&'a [u8]);
impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn more(&self) -> bool {
        !self.0.is_empty()
    }
}

fn doors(b: &mut Bytes) -> Vec<Door> {
    let n = 1 + b.u8() % 3;
    (0..n)
        .map(|i| {
            let seqs: Vec<Vec<Step>> = (0..1 + b.u8() % 3)
                .map(|_| {
                    (0..1 + b.u8() % 5)
                        .map(|_| {
                            let x = b.u8();
                            let port = 1 + u16::from(x % 6);
                            if x & 0x80 != 0 {
                                Step::udp(port)
                            } else {
                                Step::tcp(port)
                            }
                        })
                        .collect()
                })
                .collect();
            let flags = b.u8();
            let door = if flags & 0x40 != 0 {
                // Windowed: sequences arrive later through set_windows.
                Door::windowed(format!("d{i}"))
            } else if flags & 1 != 0 {
                Door::one_time(format!("d{i}"), seqs)
            } else {
                Door::with_sequences(format!("d{i}"), knock_core::Sequences::Reusable(seqs))
            };
            door.with_seq_timeout(Duration::from_millis(1 + u64::from(b.u8()) * 20))
                .with_grant_lifetime(
                    (flags & 2 != 0).then(|| Duration::from_millis(1 + u64::from(b.u8()) * 20)),
                )
                .with_allow_repeat(flags & 4 != 0)
                .with_strict(flags & 0x20 != 0)
                .with_cooldown(Duration::from_millis(if flags & 8 != 0 {
                    u64::from(b.u8()) * 10
                } else {
                    0
                }))
                .with_tcp_flags(if flags & 16 != 0 {
                    FlagFilter {
                        set: TcpFlags::SYN,
                        clear: TcpFlags::ACK,
                    }
                } else {
                    FlagFilter::ANY
                })
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let limits = Limits::default()
        .with_max_sources(CAP)
        .with_max_timers_per_call(1 + usize::from(b.u8() % 16));
    let seed = u64::from(b.u8());
    let Ok(mut m) = Matcher::with_seed(doors(&mut b), limits, seed) else {
        return;
    };
    let rule = b.u8();
    let rule = Blacklist::new(
        1 + u32::from(rule >> 5),
        Duration::from_millis(u64::from(b.u8()) * 20),
        Duration::from_millis(1 + u64::from(b.u8()) * 20),
    );
    m.set_blacklist(Some(rule).filter(|_| b.u8() & 1 != 0));
    let mut pending: BTreeMap<GrantId, Timestamp> = BTreeMap::new();
    let mut t = 0u64;
    let server = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    let drain = |m: &mut Matcher, pending: &mut BTreeMap<GrantId, Timestamp>, now: Timestamp| {
        while let Some(d) = m.poll_decision() {
            match d {
                Decision::Open {
                    grant,
                    until: Some(u),
                    ..
                }
                | Decision::Extended {
                    grant, until: u, ..
                } => {
                    pending.insert(grant, u);
                }
                Decision::Close { grant, .. } => {
                    let due = pending
                        .remove(&grant)
                        .expect("close of an unknown or closed grant");
                    assert!(due <= now, "closed early");
                }
                _ => {}
            }
        }
        assert!(m.stats().sources <= CAP);
    };
    while b.more() {
        let op = b.u8();
        t += u64::from(b.u8()) * 7;
        let now = Timestamp::from_millis(t);
        let door = |m: &Matcher, x: u8| {
            let ids: Vec<_> = m.doors().map(|(id, _)| id).collect();
            ids.get(usize::from(x) % ids.len().max(1)).copied()
        };
        let src = |s: u8| IpAddr::V4(Ipv4Addr::new(198, 18, 1, s % 16));
        match op % 12 {
            0 => m.handle_timeout(now),
            3 => {
                let (d, s, secs, id) = (b.u8(), b.u8(), b.u8(), b.u8());
                if let Some(d) = door(&m, d) {
                    let until = Timestamp::from_millis(t + u64::from(secs) * 20);
                    if let Some(g) = m.restore_grant(d, src(s), until, u64::from(id)) {
                        assert_eq!(g.get(), u64::from(id));
                        assert!(m.next_grant_id() > g.get());
                        pending.insert(g, until);
                    }
                }
            }
            4 => {
                let (d, s, ms) = (b.u8(), b.u8(), b.u8());
                if let Some(d) = door(&m, d) {
                    let until = Timestamp::from_millis(t + u64::from(ms) * 20);
                    m.restore_block(d, src(s), until);
                }
            }
            5 => m.set_blacklist(Some(rule).filter(|_| b.u8() & 1 != 0)),
            6 => {
                let (d, w) = (b.u8(), b.u8());
                if let Some(d) = door(&m, d) {
                    let used = m.used_windows(d);
                    m.restore_used_windows(d, &[u64::from(w), u64::from(w) + 1]);
                    assert!(m.used_windows(d).len() >= used.len().min(knock_core::USED_WINDOWS));
                }
            }
            1 => {
                let new = doors(&mut b);
                let _ = m.replace_doors(new);
            }
            2 if b.u8() & 3 == 0 => {
                // New windows for a windowed door (errors for others are fine).
                let ids: Vec<_> = m.doors().map(|(id, _)| id).collect();
                if let Some(&id) = ids.get(usize::from(b.u8()) % ids.len().max(1)) {
                    let w = u64::from(b.u8());
                    let windows = (0..1 + b.u8() % 3)
                        .map(|k| {
                            (
                                w + u64::from(k),
                                vec![Step::tcp(1 + u16::from(b.u8() % 6)), Step::udp(2)],
                            )
                        })
                        .collect();
                    let _ = m.set_windows(id, windows);
                }
            }
            _ => {
                let s = b.u8();
                let src = if s & 0x80 != 0 {
                    IpAddr::V6(Ipv6Addr::new(
                        0x2001,
                        0xdb8,
                        0,
                        0,
                        0,
                        0,
                        0,
                        u16::from(s % 16),
                    ))
                } else {
                    IpAddr::V4(Ipv4Addr::new(198, 18, 1, s % 16))
                };
                let port = u16::from(b.u8() % 8);
                let ev = if op & 0x40 != 0 {
                    Event::udp(src, server, port, now)
                } else {
                    Event::tcp(src, server, port, TcpFlags::from_bits(b.u8()), now)
                };
                m.handle_event(now, &ev);
            }
        }
        drain(&mut m, &mut pending, now);
    }
    // Run the clock out: every open grant closes exactly once.
    let mut guard = 0;
    while let Some(next) = m.poll_timeout() {
        let now = next.max(Timestamp::from_millis(t));
        m.handle_timeout(now);
        drain(&mut m, &mut pending, now);
        guard += 1;
        assert!(guard < 100_000, "timers never settle");
    }
    assert!(pending.is_empty(), "grants never closed: {pending:?}");
});
