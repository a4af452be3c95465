//! A small, obviously-correct reference model of the matcher's semantics,
//! and proptests comparing the real matcher against it.
//!
//! The model keeps a plain list of attempts per source and rescans
//! everything on every call: slow, unbounded and easy to read.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use proptest::prelude::*;

use crate::*;

struct RefAttempt {
    door: usize,
    seq: usize,
    step: usize,
}

#[derive(Default)]
struct RefGrant {
    id: u64,
    close_ms: Option<u64>,
    cooldown_ms: Option<u64>,
}

struct Model {
    doors: Vec<Door>,
    attempts: BTreeMap<IpAddr, (u64, Vec<RefAttempt>)>,
    grants: BTreeMap<(IpAddr, usize), RefGrant>,
    next_grant: u64,
    now: u64,
    out: Vec<Decision>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Model {
    fn new(doors: Vec<Door>) -> Self {
        Model {
            doors,
            attempts: BTreeMap::new(),
            grants: BTreeMap::new(),
            next_grant: 1,
            now: 0,
            out: Vec::new(),
        }
    }

    fn id(i: usize) -> DoorId {
        DoorId(i as u32)
    }

    fn active(&self, door: usize) -> Vec<(usize, Vec<Step>)> {
        self.doors[door]
            .active_sequences()
            .map(|(i, s)| (i, s.to_vec()))
            .collect()
    }

    fn is_live(&self, a: &RefAttempt) -> bool {
        self.active(a.door).iter().any(|(i, _)| *i == a.seq)
    }

    fn tick(&mut self, now: u64) {
        self.now = self.now.max(now);
        let now = self.now;
        let mut expired = Vec::new();
        for (src, (start, list)) in self.attempts.iter_mut() {
            list.retain(|a| {
                let t = ms(self.doors[a.door].seq_timeout);
                if now - *start >= t {
                    expired.push(Decision::Expired {
                        door: Self::id(a.door),
                        src: *src,
                        step: a.step as u8,
                    });
                    false
                } else {
                    true
                }
            });
        }
        self.out.extend(expired);
        self.attempts.retain(|_, (_, l)| !l.is_empty());
        let mut closes = Vec::new();
        self.grants.retain(|&(src, door), g| {
            if g.close_ms.is_some_and(|c| c <= now) {
                g.close_ms = None;
                closes.push(Decision::Close {
                    door: Self::id(door),
                    src,
                    grant: GrantId(g.id),
                });
            }
            if g.cooldown_ms.is_some_and(|c| c <= now) {
                g.cooldown_ms = None;
            }
            g.close_ms.is_some() || g.cooldown_ms.is_some()
        });
        self.out.extend(closes);
    }

    fn event(&mut self, now: u64, ev: &Event) {
        self.tick(now);
        let now = self.now;
        let relevant = (0..self.doors.len()).any(|d| {
            self.doors[d].accepts(ev)
                && self
                    .active(d)
                    .iter()
                    .any(|(_, s)| s.iter().any(|st| st.matches(ev)))
        });
        if !relevant {
            return;
        }
        let src = ev.src;
        if let Some((start, list)) = self.attempts.remove(&src) {
            let mut keep = Vec::new();
            let mut opened = Vec::new();
            for mut a in list {
                let door = &self.doors[a.door];
                let seq = door.all_sequences()[a.seq].clone();
                if !door.accepts(ev) {
                    keep.push(a);
                } else if seq[a.step].matches(ev) {
                    a.step += 1;
                    self.out.push(Decision::Stage {
                        door: Self::id(a.door),
                        src,
                        step: a.step as u8,
                    });
                    if a.step == seq.len() {
                        opened.push(a.door);
                    } else {
                        keep.push(a);
                    }
                } else if door.allow_repeat && seq[a.step - 1].matches(ev) {
                    keep.push(a);
                } else {
                    self.out.push(Decision::Invalidated {
                        door: Self::id(a.door),
                        src,
                        step: a.step as u8,
                    });
                }
            }
            for d in opened {
                self.open(d, src, now);
            }
            keep.retain(|a| self.is_live(a));
            if !keep.is_empty() {
                self.attempts.insert(src, (start, keep));
            }
            return;
        }
        let mut list = Vec::new();
        let mut opened = Vec::new();
        for d in 0..self.doors.len() {
            let door = &self.doors[d];
            if !door.accepts(ev) {
                continue;
            }
            let cooling = self
                .grants
                .get(&(src, d))
                .and_then(|g| g.cooldown_ms)
                .is_some_and(|c| c > now);
            if cooling {
                continue;
            }
            for (i, seq) in self.active(d) {
                if seq[0].matches(ev) {
                    self.out.push(Decision::Stage {
                        door: Self::id(d),
                        src,
                        step: 1,
                    });
                    if seq.len() == 1 {
                        opened.push(d);
                    } else {
                        list.push(RefAttempt {
                            door: d,
                            seq: i,
                            step: 1,
                        });
                    }
                }
            }
        }
        for d in opened {
            self.open(d, src, now);
        }
        list.retain(|a| self.is_live(a));
        if !list.is_empty() {
            self.attempts.insert(src, (now, list));
        }
    }

    fn open(&mut self, d: usize, src: IpAddr, now: u64) {
        let door = self.doors[d].clone();
        let until = door.grant_lifetime.map(|l| now + ms(l));
        let cooldown = (!door.cooldown.is_zero()).then(|| now + ms(door.cooldown));
        let existing = self.grants.get_mut(&(src, d));
        match (existing, until) {
            (Some(g), Some(u)) if g.close_ms.is_some() => {
                g.close_ms = Some(u);
                g.cooldown_ms = cooldown.or(g.cooldown_ms);
                self.out.push(Decision::Extended {
                    door: Self::id(d),
                    src,
                    grant: GrantId(g.id),
                    until: Timestamp::from_millis(u),
                });
            }
            _ => {
                let id = self.next_grant;
                self.next_grant += 1;
                self.out.push(Decision::Open {
                    door: Self::id(d),
                    src,
                    grant: GrantId(id),
                    until: until.map(Timestamp::from_millis),
                });
                if until.is_some() || cooldown.is_some() {
                    self.grants.insert(
                        (src, d),
                        RefGrant {
                            id,
                            close_ms: until,
                            cooldown_ms: cooldown,
                        },
                    );
                } else {
                    self.grants.remove(&(src, d));
                }
            }
        }
        if let Sequences::OneTime { list, next } = &mut self.doors[d].sequences {
            let index = *next;
            *next += 1;
            let remaining = list.len() - *next;
            self.out.push(Decision::SequenceConsumed {
                door: Self::id(d),
                index,
                remaining,
            });
            for (_, l) in self.attempts.values_mut() {
                l.retain(|a| a.door != d || a.seq == index + 1);
            }
            self.attempts.retain(|_, (_, l)| !l.is_empty());
        }
    }
}

/// Grant ids depend on the order doors open within one call; compare without them.
fn normalized(mut ds: Vec<Decision>) -> Vec<String> {
    let mut out: Vec<String> = ds
        .iter_mut()
        .map(|d| {
            match d {
                Decision::Open { grant, .. }
                | Decision::Extended { grant, .. }
                | Decision::Close { grant, .. } => *grant = GrantId(0),
                _ => {}
            }
            format!("{d:?}")
        })
        .collect();
    out.sort();
    out
}

const PORTS: [u16; 5] = [1, 2, 3, 4, 5];

fn step() -> impl Strategy<Value = Step> {
    (prop::sample::select(&PORTS[..]), prop::bool::weighted(0.2)).prop_map(|(port, udp)| {
        if udp {
            Step::udp(port)
        } else {
            Step::tcp(port)
        }
    })
}

fn door_strategy(i: usize) -> impl Strategy<Value = Door> {
    let seqs = prop::collection::vec(prop::collection::vec(step(), 1..=4), 1..=3);
    (
        seqs,
        prop::bool::weighted(0.3),
        1u64..=5,
        prop::option::of(1u64..=5),
        any::<bool>(),
        prop::option::weighted(0.3, 1u64..=5),
        prop::bool::weighted(0.3),
    )
        .prop_map(move |(seqs, one_time, t, life, repeat, cooldown, syn)| {
            let seqs = if one_time {
                Sequences::OneTime {
                    list: seqs,
                    next: 0,
                }
            } else {
                Sequences::Reusable(seqs)
            };
            let flags = if syn {
                FlagFilter {
                    set: TcpFlags::SYN,
                    clear: TcpFlags::ACK,
                }
            } else {
                FlagFilter::ANY
            };
            Door::with_sequences(format!("d{i}"), seqs)
                .with_seq_timeout(Duration::from_secs(t))
                .with_grant_lifetime(life.map(Duration::from_secs))
                .with_allow_repeat(repeat)
                .with_cooldown(Duration::from_secs(cooldown.unwrap_or(0)))
                .with_tcp_flags(flags)
        })
}

fn doors() -> impl Strategy<Value = Vec<Door>> {
    (1usize..=3).prop_flat_map(|n| (0..n).map(door_strategy).collect::<Vec<_>>())
}

#[derive(Clone, Debug)]
enum Op {
    Knock {
        src: u8,
        port: u16,
        udp: bool,
        ack: bool,
    },
    Timeout,
}

fn ops() -> impl Strategy<Value = Vec<(u64, Op)>> {
    let op = prop_oneof![
        6 => (0u8..4, 1u16..=6, prop::bool::weighted(0.2), prop::bool::weighted(0.15))
            .prop_map(|(src, port, udp, ack)| Op::Knock { src, port, udp, ack }),
        1 => Just(Op::Timeout),
    ];
    prop::collection::vec((0u64..1_500, op), 0..120)
}

fn src_addr(i: u8) -> IpAddr {
    match i {
        3 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
        i => IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2 + i)),
    }
}

fn event(op: &Op, now: Timestamp) -> Option<Event> {
    let &Op::Knock {
        src,
        port,
        udp,
        ack,
    } = op
    else {
        return None;
    };
    let dst = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    let src = src_addr(src);
    Some(if udp {
        Event::udp(src, dst, port, now)
    } else {
        let flags = if ack { TcpFlags::ACK } else { TcpFlags::SYN };
        Event::tcp(src, dst, port, flags, now)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The matcher decides exactly what the reference model decides, call by call.
    #[test]
    fn matcher_agrees_with_reference(doors in doors(), ops in ops()) {
        let mut m = Matcher::new(doors.clone(), Limits::default()).unwrap();
        let mut model = Model::new(doors);
        let mut t = 0u64;
        for (dt, op) in &ops {
            t += dt;
            let now = Timestamp::from_millis(t);
            match event(op, now) {
                Some(ev) => {
                    m.handle_event(now, &ev);
                    model.event(t, &ev);
                }
                None => {
                    m.handle_timeout(now);
                    model.tick(t);
                }
            }
            let got: Vec<Decision> = std::iter::from_fn(|| m.poll_decision()).collect();
            let want = std::mem::take(&mut model.out);
            prop_assert_eq!(normalized(got), normalized(want), "after {:?} at {}", op, t);
        }
    }

    /// Under any stream and a tiny cap: no panic, the cap holds, and every
    /// grant with a lifetime is closed exactly once, at its (last) deadline.
    #[test]
    fn cap_holds_and_every_grant_closes_once(doors in doors(), ops in ops(), cap in 1usize..4) {
        let limits = Limits::default().with_max_sources(cap).with_max_grants(1_000);
        let mut m = Matcher::new(doors, limits).unwrap();
        let mut pending: BTreeMap<GrantId, Timestamp> = BTreeMap::new();
        let mut closed: BTreeMap<GrantId, u32> = BTreeMap::new();
        let mut t = 0u64;
        let mut prev = Timestamp::ZERO;
        let mut check = |m: &mut Matcher, now: Timestamp, prev: Timestamp| -> Result<(), TestCaseError> {
            while let Some(d) = m.poll_decision() {
                match d {
                    Decision::Open { grant, until: Some(u), .. } | Decision::Extended { grant, until: u, .. } => {
                        pending.insert(grant, u);
                    }
                    Decision::Close { grant, .. } => {
                        let due = pending.remove(&grant);
                        prop_assert!(due.is_some(), "close without open: {:?}", grant);
                        let due = due.unwrap_or(Timestamp::ZERO);
                        prop_assert!(due <= now && due > prev, "closed at {} for {}", now, due);
                        *closed.entry(grant).or_default() += 1;
                    }
                    _ => {}
                }
            }
            prop_assert!(m.stats().sources <= cap);
            Ok(())
        };
        for (dt, op) in &ops {
            t += dt;
            let now = Timestamp::from_millis(t);
            match event(op, now) {
                Some(ev) => m.handle_event(now, &ev),
                None => m.handle_timeout(now),
            }
            check(&mut m, now, prev)?;
            prev = now;
        }
        // Run the clock out: everything still open closes.
        while let Some(next) = m.poll_timeout() {
            let now = next.max(prev);
            m.handle_timeout(now);
            check(&mut m, now, Timestamp::from_micros(prev.as_micros().saturating_sub(1)))?;
            prev = now;
        }
        prop_assert!(pending.is_empty(), "never closed: {:?}", pending);
        prop_assert!(closed.values().all(|&n| n == 1));
        prop_assert_eq!(m.stats().sources, 0);
    }

    /// Replaying the same inputs gives the same decisions.
    #[test]
    fn deterministic(doors in doors(), ops in ops()) {
        let run = |doors: Vec<Door>| {
            let mut m = Matcher::new(doors, Limits::default().with_max_sources(2)).unwrap();
            let mut out = Vec::new();
            let mut t = 0;
            for (dt, op) in &ops {
                t += dt;
                let now = Timestamp::from_millis(t);
                match event(op, now) {
                    Some(ev) => m.handle_event(now, &ev),
                    None => m.handle_timeout(now),
                }
                out.extend(std::iter::from_fn(|| m.poll_decision()));
            }
            out
        };
        prop_assert_eq!(run(doors.clone()), run(doors));
    }
}
