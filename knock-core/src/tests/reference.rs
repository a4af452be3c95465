//! A small, obviously-correct reference model of the matcher's semantics,
//! and proptests comparing the real matcher against it.
//!
//! The model keeps a plain list of attempts per source and rescans
//! everything on every call: slow, unbounded and easy to read.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use proptest::prelude::*;

use crate::*;

struct RefAttempt {
    door: usize,
    /// The index in the door's list (not used for windowed doors).
    seq: usize,
    step: usize,
    /// The sequence, as it was when the attempt started.
    steps: Vec<Step>,
    /// For a windowed door: the window.
    window: Option<u64>,
}

struct RefSuspect {
    window_start: u64,
    strikes: u32,
    recent: VecDeque<(Proto, u16)>,
    blocked_until: Option<u64>,
    door: usize,
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
    used: Vec<VecDeque<u64>>,
    blacklist: Option<Blacklist>,
    suspects: BTreeMap<IpAddr, RefSuspect>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Model {
    fn new(doors: Vec<Door>) -> Self {
        Model {
            used: vec![VecDeque::new(); doors.len()],
            doors,
            attempts: BTreeMap::new(),
            grants: BTreeMap::new(),
            next_grant: 1,
            now: 0,
            out: Vec::new(),
            blacklist: None,
            suspects: BTreeMap::new(),
        }
    }

    fn id(i: usize) -> DoorId {
        DoorId(i as u32)
    }

    /// The live sequences: (index, steps, window).
    fn active(&self, door: usize) -> Vec<(usize, Vec<Step>, Option<u64>)> {
        let d = &self.doors[door];
        let windows = d.windows();
        d.active_sequences()
            .map(|(i, s)| (i, s.to_vec(), windows.get(i).copied()))
            .filter(|(_, _, w)| w.is_none_or(|w| !self.used[door].contains(&w)))
            .collect()
    }

    fn is_live(&self, a: &RefAttempt) -> bool {
        self.active(a.door).iter().any(|(i, s, w)| match a.window {
            Some(aw) => *w == Some(aw) && *s == a.steps,
            None => *i == a.seq,
        })
    }

    fn set_windows(&mut self, d: usize, pairs: Vec<(u64, Vec<Step>)>) {
        let (windows, list): (Vec<u64>, Vec<Vec<Step>>) = pairs.iter().cloned().unzip();
        self.doors[d].sequences = Sequences::Windowed { windows, list };
        for (_, l) in self.attempts.values_mut() {
            l.retain(|a| {
                a.door != d
                    || pairs
                        .iter()
                        .any(|(w, s)| Some(*w) == a.window && *s == a.steps)
            });
        }
        self.attempts.retain(|_, (_, l)| !l.is_empty());
    }

    fn blocked(&self, src: IpAddr, now: u64) -> bool {
        self.suspects
            .get(&src)
            .and_then(|s| s.blocked_until)
            .is_some_and(|u| u > now)
    }

    fn touch_counts(&self, src: IpAddr, pk: (Proto, u16), now: u64) -> bool {
        let Some(rule) = self.blacklist else {
            return false;
        };
        self.suspects.get(&src).is_some_and(|s| {
            s.blocked_until.is_none()
                && s.strikes > 0
                && now - s.window_start < ms(rule.window)
                && !s.recent.contains(&pk)
        })
    }

    fn strike(&mut self, src: IpAddr, door: usize, pk: (Proto, u16), now: u64) {
        let Some(rule) = self.blacklist else {
            return;
        };
        let s = self.suspects.entry(src).or_insert(RefSuspect {
            window_start: now,
            strikes: 0,
            recent: VecDeque::new(),
            blocked_until: None,
            door,
        });
        if now - s.window_start >= ms(rule.window) {
            s.window_start = now;
            s.strikes = 0;
            s.recent.clear();
        }
        s.strikes += 1;
        s.door = door;
        s.recent.push_back(pk);
        if s.recent.len() > 4 {
            s.recent.pop_front();
        }
        if s.strikes >= rule.strikes {
            let until = now + ms(rule.block);
            s.blocked_until = Some(until);
            s.strikes = 0;
            s.recent.clear();
            self.out.push(Decision::Blocked {
                door: Self::id(door),
                src,
                until: Timestamp::from_millis(until),
            });
            self.attempts.remove(&src);
        }
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
        if let Some(rule) = self.blacklist {
            let mut unblocked = Vec::new();
            self.suspects.retain(|&src, s| match s.blocked_until {
                Some(u) if u <= now => {
                    unblocked.push(Decision::Unblocked {
                        door: Self::id(s.door),
                        src,
                    });
                    false
                }
                Some(_) => true,
                None => s.window_start + ms(rule.window) > now,
            });
            self.out.extend(unblocked);
        }
    }

    fn event(&mut self, now: u64, ev: &Event) {
        self.tick(now);
        let now = self.now;
        let has_step = |m: &Model, d: usize| {
            m.active(d)
                .iter()
                .any(|(_, s, _)| s.iter().any(|st| st.matches(ev)))
        };
        let relevant =
            (0..self.doors.len()).any(|d| self.doors[d].accepts(ev) && has_step(self, d));
        let touched =
            (0..self.doors.len()).find(|&d| self.doors[d].strict_touch(ev) && !has_step(self, d));
        if !relevant && touched.is_none() {
            return;
        }
        let src = ev.src;
        if self.blocked(src, now) {
            return;
        }
        let pk = (ev.proto, ev.dst_port);
        let mut invalidated = None;
        if let Some((start, list)) = self.attempts.remove(&src) {
            let mut keep = Vec::new();
            let mut opened = Vec::new();
            for mut a in list {
                let door = &self.doors[a.door];
                let seq = a.steps.clone();
                if !relevant || !door.accepts(ev) {
                    if door.strict_touch(ev) {
                        invalidated = Some(invalidated.map_or(a.door, |d: usize| d.min(a.door)));
                        self.out.push(Decision::Invalidated {
                            door: Self::id(a.door),
                            src,
                            step: a.step as u8,
                        });
                    } else {
                        keep.push(a);
                    }
                } else if seq[a.step].matches(ev) {
                    a.step += 1;
                    self.out.push(Decision::Stage {
                        door: Self::id(a.door),
                        src,
                        step: a.step as u8,
                    });
                    if a.step == seq.len() {
                        opened.push((a.door, a.window));
                    } else {
                        keep.push(a);
                    }
                } else if door.allow_repeat && seq[a.step - 1].matches(ev) {
                    keep.push(a);
                } else {
                    invalidated = Some(invalidated.map_or(a.door, |d: usize| d.min(a.door)));
                    self.out.push(Decision::Invalidated {
                        door: Self::id(a.door),
                        src,
                        step: a.step as u8,
                    });
                }
            }
            for (d, w) in opened {
                self.open(d, src, now, w);
            }
            keep.retain(|a| self.is_live(a));
            if !keep.is_empty() {
                self.attempts.insert(src, (start, keep));
            }
        } else if relevant {
            self.start(src, now, ev);
        }
        let strike = match (invalidated, touched) {
            (Some(d), _) => Some(d),
            (None, Some(d)) if self.touch_counts(src, pk, now) => Some(d),
            _ => None,
        };
        if let Some(d) = strike {
            self.strike(src, d, pk, now);
        }
    }

    fn start(&mut self, src: IpAddr, now: u64, ev: &Event) {
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
            for (i, seq, window) in self.active(d) {
                if seq[0].matches(ev) {
                    self.out.push(Decision::Stage {
                        door: Self::id(d),
                        src,
                        step: 1,
                    });
                    if seq.len() == 1 {
                        opened.push((d, window));
                    } else {
                        list.push(RefAttempt {
                            door: d,
                            seq: i,
                            step: 1,
                            steps: seq,
                            window,
                        });
                    }
                }
            }
        }
        for (d, w) in opened {
            self.open(d, src, now, w);
        }
        list.retain(|a| self.is_live(a));
        if !list.is_empty() {
            self.attempts.insert(src, (now, list));
        }
    }

    fn open(&mut self, d: usize, src: IpAddr, now: u64, window: Option<u64>) {
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
        if let Some(w) = window {
            let used = &mut self.used[d];
            if used.len() >= USED_WINDOWS {
                used.pop_front();
            }
            used.push_back(w);
            for (_, l) in self.attempts.values_mut() {
                l.retain(|a| a.door != d || a.window != Some(w));
            }
            self.attempts.retain(|_, (_, l)| !l.is_empty());
        } else if let Sequences::OneTime { list, next } = &mut self.doors[d].sequences {
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
        (prop::bool::weighted(0.3), prop::bool::weighted(0.3)),
    )
        .prop_map(
            move |(seqs, one_time, t, life, repeat, cooldown, syn, (windowed, strict))| {
                let seqs = if windowed {
                    Sequences::Windowed {
                        windows: Vec::new(),
                        list: Vec::new(),
                    }
                } else if one_time {
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
                    .with_strict(strict)
            },
        )
}

/// The sequence of window `w` for door `d` in the proptests: a fixed
/// function, as a real derivation is.
fn window_seq(d: usize, w: u64) -> Vec<Step> {
    let len = 1 + (w as usize + d) % 3;
    (0..len)
        .map(|j| {
            let port = PORTS[(w as usize * 7 + j * 3 + d) % PORTS.len()];
            if (w as usize + j) % 4 == 0 {
                Step::udp(port)
            } else {
                Step::tcp(port)
            }
        })
        .collect()
}

fn window_pairs(d: usize, base: u64) -> Vec<(u64, Vec<Step>)> {
    (base - 1..=base + 1)
        .map(|w| (w, window_seq(d, w)))
        .collect()
}

fn blacklist() -> impl Strategy<Value = Option<Blacklist>> {
    prop::option::weighted(0.5, (1u32..=4, 1u64..=3, 1u64..=3)).prop_map(|r| {
        r.map(|(n, w, b)| Blacklist::new(n, Duration::from_secs(w), Duration::from_secs(b)))
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
    /// Windows base-1, base, base+1 for every windowed door.
    SetWindows(u64),
}

fn ops() -> impl Strategy<Value = Vec<(u64, Op)>> {
    let op = prop_oneof![
        6 => (0u8..4, 1u16..=8, prop::bool::weighted(0.2), prop::bool::weighted(0.15))
            .prop_map(|(src, port, udp, ack)| Op::Knock { src, port, udp, ack }),
        1 => Just(Op::Timeout),
        1 => (1u64..=12).prop_map(Op::SetWindows),
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

/// Applies `op` to the matcher (and the model, if given).
fn apply(m: &mut Matcher, model: Option<&mut Model>, op: &Op, t: u64) {
    let now = Timestamp::from_millis(t);
    match (op, event(op, now)) {
        (_, Some(ev)) => {
            m.handle_event(now, &ev);
            if let Some(model) = model {
                model.event(t, &ev);
            }
        }
        (Op::SetWindows(base), None) => {
            // As the daemon does: time first, then the new windows.
            m.handle_timeout(now);
            let mut model = model;
            if let Some(model) = model.as_deref_mut() {
                model.tick(t);
            }
            let ids: Vec<(usize, DoorId)> = m
                .doors()
                .filter(|(_, d)| d.is_windowed())
                .map(|(id, _)| (id.0 as usize, id))
                .collect();
            for (d, id) in ids {
                let pairs = window_pairs(d, *base);
                m.set_windows(id, pairs.clone()).unwrap();
                if let Some(model) = model.as_deref_mut() {
                    model.set_windows(d, pairs);
                }
            }
        }
        (_, None) => {
            m.handle_timeout(now);
            if let Some(model) = model {
                model.tick(t);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The matcher decides exactly what the reference model decides, call by call.
    #[test]
    fn matcher_agrees_with_reference(doors in doors(), ops in ops(), rule in blacklist()) {
        let mut m = Matcher::new(doors.clone(), Limits::default()).unwrap();
        m.set_blacklist(rule);
        let mut model = Model::new(doors);
        model.blacklist = rule;
        let mut t = 0u64;
        for (dt, op) in &ops {
            t += dt;
            apply(&mut m, Some(&mut model), op, t);
            let got: Vec<Decision> = std::iter::from_fn(|| m.poll_decision()).collect();
            let want = std::mem::take(&mut model.out);
            prop_assert_eq!(normalized(got), normalized(want), "after {:?} at {}", op, t);
        }
    }

    /// Under any stream and a tiny cap: no panic, the cap holds, and every
    /// grant with a lifetime is closed exactly once, at its (last) deadline.
    #[test]
    fn cap_holds_and_every_grant_closes_once(doors in doors(), ops in ops(), cap in 1usize..4, rule in blacklist()) {
        let limits = Limits::default().with_max_sources(cap).with_max_grants(1_000).with_max_suspects(cap);
        let mut m = Matcher::new(doors, limits).unwrap();
        m.set_blacklist(rule);
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
            prop_assert!(m.stats().suspects <= cap);
            Ok(())
        };
        for (dt, op) in &ops {
            t += dt;
            let now = Timestamp::from_millis(t);
            apply(&mut m, None, op, t);
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
        prop_assert_eq!(m.stats().suspects, 0);
    }

    /// Replaying the same inputs gives the same decisions.
    #[test]
    fn deterministic(doors in doors(), ops in ops(), rule in blacklist()) {
        let run = |doors: Vec<Door>| {
            let mut m = Matcher::new(doors, Limits::default().with_max_sources(2)).unwrap();
            m.set_blacklist(rule);
            let mut out = Vec::new();
            let mut t = 0;
            for (dt, op) in &ops {
                t += dt;
                apply(&mut m, None, op, t);
                out.extend(std::iter::from_fn(|| m.poll_decision()));
            }
            out
        };
        prop_assert_eq!(run(doors.clone()), run(doors));
    }
}
