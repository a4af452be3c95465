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
    /// Whether each door (by id) is active: a reload retires doors.
    active: Vec<bool>,
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
            active: vec![true; doors.len()],
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

    /// The live sequences: (index, steps, window), in the matcher's track
    /// order: a windowed door's by window modulo [`WINDOW_SLOTS`], other
    /// doors' by index.
    fn active(&self, door: usize) -> Vec<(usize, Vec<Step>, Option<u64>)> {
        if !self.active[door] {
            return Vec::new();
        }
        let d = &self.doors[door];
        let windows = d.windows();
        let mut v: Vec<_> = d
            .active_sequences()
            .map(|(i, s)| (i, s.to_vec(), windows.get(i).copied()))
            .filter(|(_, _, w)| w.is_none_or(|w| !self.used[door].contains(&w)))
            .collect();
        v.sort_by_key(|(i, _, w)| w.map_or(*i as u64, |w| w % WINDOW_SLOTS as u64));
        v
    }

    /// A reload, as documented on `Matcher::replace_doors`: a door whose
    /// definition is unchanged keeps its id and attempts; a new or changed
    /// door gets the next id (a changed windowed door keeps the used
    /// windows of the door of its name); other attempts go silently.
    fn replace_doors(&mut self, doors: Vec<Door>) {
        let old = self.doors.len();
        let mut active = vec![false; old];
        for door in doors {
            let same = (0..old).find(|&i| self.active[i] && self.doors[i].same_definition(&door));
            match same {
                Some(i) if !active[i] => active[i] = true,
                _ => {
                    let used = (0..old)
                        .find(|&i| {
                            self.active[i]
                                && self.doors[i].is_windowed()
                                && self.doors[i].name == door.name
                        })
                        .filter(|_| door.is_windowed())
                        .map(|i| self.used[i].clone())
                        .unwrap_or_default();
                    self.used.push(used);
                    self.doors.push(door);
                    active.push(true);
                }
            }
        }
        self.active = active;
        let active = &self.active;
        for (_, l) in self.attempts.values_mut() {
            l.retain(|a| active[a.door]);
        }
        self.attempts.retain(|_, (_, l)| !l.is_empty());
    }

    fn set_blacklist(&mut self, rule: Option<Blacklist>) {
        if rule.is_none() {
            let mut lifted: Vec<(u64, IpAddr, usize)> = self
                .suspects
                .iter()
                .filter_map(|(&src, s)| s.blocked_until.map(|u| (u, src, s.door)))
                .collect();
            lifted.sort();
            for (_, src, door) in lifted {
                self.out.push(Decision::Unblocked {
                    door: Self::id(door),
                    src,
                });
            }
            self.suspects.clear();
        }
        self.blacklist = rule;
    }

    /// `Matcher::restore_grant`.
    fn restore_grant(&mut self, door: usize, src: IpAddr, until: u64, id: u64) -> Option<u64> {
        let taken = self
            .grants
            .get(&(src, door))
            .is_some_and(|g| g.close_ms.is_some())
            || self
                .grants
                .values()
                .any(|g| g.close_ms.is_some() && g.id == id);
        if door >= self.doors.len() || taken {
            return None;
        }
        let g = self.grants.entry((src, door)).or_default();
        g.id = id;
        g.close_ms = Some(until);
        self.next_grant = self.next_grant.max(id + 1);
        Some(id)
    }

    /// What `Matcher::open_grants` lists.
    fn open_grants(&self) -> Vec<(DoorId, IpAddr, GrantId, Timestamp)> {
        let mut v: Vec<_> = self
            .grants
            .iter()
            .filter_map(|(&(src, d), g)| {
                g.close_ms
                    .map(|c| (Self::id(d), src, GrantId(g.id), Timestamp::from_millis(c)))
            })
            .collect();
        v.sort_by_key(|&(d, src, _, c)| (c, src, d));
        v
    }

    /// What `Matcher::blocks` lists.
    fn blocks(&self) -> Vec<(DoorId, IpAddr, Timestamp)> {
        let mut v: Vec<_> = self
            .suspects
            .iter()
            .filter_map(|(&src, s)| {
                s.blocked_until
                    .map(|u| (Self::id(s.door), src, Timestamp::from_millis(u)))
            })
            .collect();
        v.sort_by_key(|&(d, src, u)| (u, src, d));
        v
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

    /// Fires every timer due at `now`, in the matcher's documented order:
    /// by deadline; at one deadline expiries, then closes, then block ends,
    /// each by source, then door (one source's attempts at one door in
    /// track order).
    fn tick(&mut self, now: u64) {
        self.now = self.now.max(now);
        let now = self.now;
        let mut due: Vec<(u64, u8, IpAddr, usize, Decision)> = Vec::new();
        for (src, (start, list)) in self.attempts.iter_mut() {
            list.retain(|a| {
                let t = ms(self.doors[a.door].seq_timeout);
                if now - *start >= t {
                    let d = Decision::Expired {
                        door: Self::id(a.door),
                        src: *src,
                        step: a.step as u8,
                    };
                    due.push((*start + t, 0, *src, a.door, d));
                    false
                } else {
                    true
                }
            });
        }
        self.attempts.retain(|_, (_, l)| !l.is_empty());
        self.grants.retain(|&(src, door), g| {
            if let Some(c) = g.close_ms.filter(|&c| c <= now) {
                g.close_ms = None;
                let d = Decision::Close {
                    door: Self::id(door),
                    src,
                    grant: GrantId(g.id),
                };
                due.push((c, 1, src, door, d));
            }
            if g.cooldown_ms.is_some_and(|c| c <= now) {
                g.cooldown_ms = None;
            }
            g.close_ms.is_some() || g.cooldown_ms.is_some()
        });
        if let Some(rule) = self.blacklist {
            self.suspects.retain(|&src, s| match s.blocked_until {
                Some(u) if u <= now => {
                    let d = Decision::Unblocked {
                        door: Self::id(s.door),
                        src,
                    };
                    due.push((u, 2, src, s.door, d));
                    false
                }
                Some(_) => true,
                None => s.window_start + ms(rule.window) > now,
            });
        }
        due.sort_by_key(|&(t, rank, src, door, _)| (t, rank, src, door));
        self.out.extend(due.into_iter().map(|x| x.4));
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
        let touched = (0..self.doors.len())
            .find(|&d| self.active[d] && self.doors[d].strict_touch(ev) && !has_step(self, d));
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
            if !self.active[d] || !door.accepts(ev) {
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
                match (until, cooldown) {
                    // A new grant replaces what was remembered.
                    (Some(_), _) => {
                        self.grants.insert(
                            (src, d),
                            RefGrant {
                                id,
                                close_ms: until,
                                cooldown_ms: cooldown,
                            },
                        );
                    }
                    // No grant to remember; a pending close stays.
                    (None, Some(c)) => {
                        let g = self.grants.entry((src, d)).or_insert(RefGrant {
                            id,
                            close_ms: None,
                            cooldown_ms: None,
                        });
                        g.cooldown_ms = Some(c);
                    }
                    (None, None) => {}
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
    /// `prefetch` of sources, after the time (a hint: the model only
    /// ticks; the knocks that follow may or may not be of those sources).
    Prefetch(Vec<u8>),
    /// Windows base-1, base, base+1 for every windowed door.
    SetWindows(u64),
    /// A reload: for each door index i (0..3), 0 drops it, 1 keeps the
    /// case's door i (if any), 2 puts the given door (named like it).
    Replace(Vec<(u8, Door)>),
    /// The case's blacklist rule on (true) or off.
    Blacklist(bool),
    /// `restore_grant` (door ids past the doors are unknown).
    RestoreGrant {
        door: u8,
        src: u8,
        secs: u64,
        id: u64,
    },
}

fn ops() -> impl Strategy<Value = Vec<(u64, Op)>> {
    let replace = (0..3)
        .map(|i| (0u8..3, door_strategy(i)))
        .collect::<Vec<_>>()
        .prop_map(Op::Replace);
    let op = prop_oneof![
        12 => (0u8..4, 1u16..=8, prop::bool::weighted(0.2), prop::bool::weighted(0.15))
            .prop_map(|(src, port, udp, ack)| Op::Knock { src, port, udp, ack }),
        2 => Just(Op::Timeout),
        4 => prop::collection::vec(0u8..4, 1..5).prop_map(Op::Prefetch),
        2 => (1u64..=12).prop_map(Op::SetWindows),
        1 => replace,
        1 => any::<bool>().prop_map(Op::Blacklist),
        1 => (0u8..5, 0u8..4, 0u64..=5, 1u64..=12)
            .prop_map(|(door, src, secs, id)| Op::RestoreGrant { door, src, secs, id }),
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

/// What a case starts with, for the ops that refer to it.
struct Case<'a> {
    doors: &'a [Door],
    rule: Option<Blacklist>,
}

/// Applies `op` to the matcher (and the model, if given).
fn apply(m: &mut Matcher, mut model: Option<&mut Model>, op: &Op, t: u64, case: &Case) {
    let now = Timestamp::from_millis(t);
    if let Some(ev) = event(op, now) {
        m.handle_event(now, &ev);
        if let Some(model) = model {
            model.event(t, &ev);
        }
        return;
    }
    // As the daemon does: time first, then the change.
    m.handle_timeout(now);
    if let Some(model) = model.as_deref_mut() {
        model.tick(t);
    }
    match op {
        Op::SetWindows(base) => {
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
        Op::Replace(choices) => {
            let doors: Vec<Door> = choices
                .iter()
                .enumerate()
                .filter_map(|(i, (c, new))| match c {
                    1 => case.doors.get(i).cloned(),
                    2 => Some(new.clone()),
                    _ => None,
                })
                .collect();
            m.replace_doors(doors.clone()).unwrap();
            if let Some(model) = model {
                model.replace_doors(doors);
            }
        }
        Op::Blacklist(on) => {
            let rule = case.rule.filter(|_| *on);
            m.set_blacklist(rule);
            if let Some(model) = model {
                model.set_blacklist(rule);
            }
        }
        &Op::RestoreGrant {
            door,
            src,
            secs,
            id,
        } => {
            let (src, until) = (src_addr(src), t + secs * 1_000);
            let got = m
                .restore_grant(
                    DoorId(u32::from(door)),
                    src,
                    Timestamp::from_millis(until),
                    id,
                )
                .map(GrantId::get);
            if let Some(model) = model {
                let want = model.restore_grant(usize::from(door), src, until, id);
                assert_eq!(got, want, "restore_grant({door}, {src}, {until}, {id})");
            }
        }
        Op::Prefetch(srcs) => m.prefetch(srcs.iter().map(|&s| src_addr(s))),
        Op::Timeout | Op::Knock { .. } => {}
    }
}

proptest! {
    // 512 cases unless PROPTEST_CASES says otherwise (for longer runs).
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
    ))]

    /// The matcher decides exactly what the reference model decides, call
    /// by call, in the same order and with the same grant ids; its grants
    /// and blocks are the model's.
    #[test]
    fn matcher_agrees_with_reference(doors in doors(), ops in ops(), rule in blacklist()) {
        let case = Case { doors: &doors, rule };
        let mut m = Matcher::new(doors.clone(), Limits::default()).unwrap();
        m.set_blacklist(rule);
        let mut model = Model::new(doors.clone());
        model.blacklist = rule;
        let mut t = 0u64;
        for (dt, op) in &ops {
            t += dt;
            apply(&mut m, Some(&mut model), op, t, &case);
            let got: Vec<Decision> = std::iter::from_fn(|| m.poll_decision()).collect();
            let want = std::mem::take(&mut model.out);
            prop_assert_eq!(got, want, "after {:?} at {}", op, t);
            prop_assert_eq!(m.open_grants().collect::<Vec<_>>(), model.open_grants());
            prop_assert_eq!(m.blocks().collect::<Vec<_>>(), model.blocks());
            prop_assert_eq!(m.next_grant_id(), model.next_grant);
        }
    }

    /// Under any stream and a tiny cap: no panic, the cap holds, and every
    /// grant with a lifetime is closed exactly once, at its (last) deadline.
    #[test]
    fn cap_holds_and_every_grant_closes_once(doors in doors(), ops in ops(), cap in 1usize..4, rule in blacklist()) {
        let case = Case { doors: &doors, rule };
        let limits = Limits::default().with_max_sources(cap).with_max_grants(1_000).with_max_suspects(cap);
        let mut m = Matcher::new(doors.clone(), limits).unwrap();
        m.set_blacklist(rule);
        // Grant -> (due, restored already due: closes at the next timer run).
        let mut pending: BTreeMap<GrantId, (Timestamp, bool)> = BTreeMap::new();
        let mut closed: BTreeMap<GrantId, u32> = BTreeMap::new();
        let mut t = 0u64;
        let mut prev = Timestamp::ZERO;
        let check = |m: &mut Matcher, pending: &mut BTreeMap<GrantId, (Timestamp, bool)>, closed: &mut BTreeMap<GrantId, u32>, now: Timestamp, prev: Timestamp| -> Result<(), TestCaseError> {
            while let Some(d) = m.poll_decision() {
                match d {
                    Decision::Open { grant, until: Some(u), .. } | Decision::Extended { grant, until: u, .. } => {
                        pending.insert(grant, (u, false));
                    }
                    Decision::Close { grant, .. } => {
                        let due = pending.remove(&grant);
                        prop_assert!(due.is_some(), "close without open: {:?}", grant);
                        let (due, late) = due.unwrap_or((Timestamp::ZERO, false));
                        prop_assert!(due <= now && (due > prev || late), "closed at {} for {}", now, due);
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
            if let Op::RestoreGrant { door, src, secs, id } = *op {
                // As `apply` does, with the restored grant pending like an
                // opened one (closed at the next timer run if already due).
                m.handle_timeout(now);
                check(&mut m, &mut pending, &mut closed, now, prev)?;
                let until = Timestamp::from_millis(t + secs * 1_000);
                if let Some(g) = m.restore_grant(DoorId(u32::from(door)), src_addr(src), until, id) {
                    pending.insert(g, (until, until <= now));
                    closed.remove(&g); // a closed grant's id may come back
                }
            } else {
                apply(&mut m, None, op, t, &case);
            }
            check(&mut m, &mut pending, &mut closed, now, prev)?;
            prev = now;
        }
        // Run the clock out: everything still open closes.
        while let Some(next) = m.poll_timeout() {
            let now = next.max(prev);
            m.handle_timeout(now);
            check(&mut m, &mut pending, &mut closed, now, Timestamp::from_micros(prev.as_micros().saturating_sub(1)))?;
            prev = now;
        }
        prop_assert!(pending.is_empty(), "never closed: {:?}", pending);
        prop_assert!(closed.values().all(|&n| n == 1));
        prop_assert_eq!(m.stats().sources, 0);
        prop_assert_eq!(m.stats().suspects, 0);
    }

    /// Replaying the same inputs gives the same decisions.
    #[test]
    fn deterministic(doors in doors(), ops in ops(), rule in blacklist(), seed in any::<u64>()) {
        let case = Case { doors: &doors, rule };
        let run = |seed: u64| {
            let limits = Limits::default().with_max_sources(2).with_max_grants(2);
            let mut m = Matcher::with_seed(doors.clone(), limits, seed).unwrap();
            m.set_blacklist(rule);
            let mut out = Vec::new();
            let mut t = 0;
            for (dt, op) in &ops {
                t += dt;
                apply(&mut m, None, op, t, &case);
                out.extend(std::iter::from_fn(|| m.poll_decision()));
            }
            out
        };
        let first = run(0);
        prop_assert_eq!(&first, &run(0));
        prop_assert_eq!(&first, &run(seed), "the seed changed a decision");
    }
}
