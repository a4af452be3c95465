//! The matcher: the whole per-source state machine.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use crate::decision::{Decision, DoorId, GrantId};
use crate::door::{Door, Listen, Sequences, Step};
use crate::error::DoorError;
use crate::event::{Event, Proto};
use crate::grant::{Grants, Opened};
use crate::table::{addr_of, key_of, Attempt, SourceTable};
use crate::time::Timestamp;
use crate::timer::{TimerEntry, TimerHeap};

/// Bounds on what a matcher keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Most sources with an attempt in progress (default 1,000,000). When
    /// full, the least advanced attempt goes first, oldest first among equals.
    pub max_sources: usize,
    /// Most grants and cooldowns remembered at once (default 1,000,000). When
    /// full, the one due soonest is closed early.
    pub max_grants: usize,
    /// Most timers one `handle_timeout` (or `handle_event`) call fires
    /// (default 4096); `poll_timeout` reports the rest as due at once.
    pub max_timers_per_call: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sources: 1_000_000,
            max_grants: 1_000_000,
            max_timers_per_call: 4096,
        }
    }
}

impl Limits {
    /// Sets `max_sources` (at least 1).
    pub fn with_max_sources(mut self, n: usize) -> Self {
        self.max_sources = n.max(1);
        self
    }

    /// Sets `max_grants` (at least 1).
    pub fn with_max_grants(mut self, n: usize) -> Self {
        self.max_grants = n.max(1);
        self
    }

    /// Sets `max_timers_per_call` (at least 1).
    pub fn with_max_timers_per_call(mut self, n: usize) -> Self {
        self.max_timers_per_call = n.max(1);
        self
    }
}

/// Counters, for logs and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Events handled.
    pub events: u64,
    /// Events no door listens to (port, protocol, flags, target or source).
    pub ignored: u64,
    /// Attempts started by a first knock.
    pub attempts_started: u64,
    /// Correct steps (Stage decisions).
    pub stages: u64,
    /// Open decisions.
    pub opens: u64,
    /// Extended decisions.
    pub extended: u64,
    /// Close decisions.
    pub closes: u64,
    /// Expired decisions.
    pub expired: u64,
    /// Invalidated decisions.
    pub invalidated: u64,
    /// Sources dropped because the table was full.
    pub evicted: u64,
    /// Grants closed early because the grant table was full.
    pub grants_evicted: u64,
    /// Sources tracked now.
    pub sources: usize,
    /// Grants and cooldowns remembered now.
    pub grants: usize,
}

/// A compiled sequence of one door.
#[derive(Clone, Debug)]
struct Track {
    door: DoorId,
    steps: Box<[Step]>,
    timeout_ms: u32,
    epoch: u8,
    live: bool,
}

#[derive(Clone, Debug)]
struct DoorSlot {
    door: Door,
    /// Retired by a reload (kept so that pending closes can name it).
    active: bool,
}

/// A tiny hasher for the port index, whose keys come from the configuration.
#[derive(Default)]
struct PortHasher(u64);

impl Hasher for PortHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Clone, Debug, Default)]
struct PortEntry {
    /// Tracks whose first step is this port.
    first: Vec<u16>,
    /// Doors with this port anywhere in a live track.
    doors: Vec<DoorId>,
}

fn port_key(proto: Proto, port: u16) -> u32 {
    (u32::from(proto == Proto::Udp) << 16) | u32::from(port)
}

/// The sans-IO knock matcher.
///
/// Feed it events with [`handle_event`](Matcher::handle_event) and the passage
/// of time with [`handle_timeout`](Matcher::handle_timeout); drain
/// [`poll_decision`](Matcher::poll_decision) after each call and sleep until
/// [`poll_timeout`](Matcher::poll_timeout). Every call does work bounded by the
/// configuration (number of doors) and [`Limits`], never by the number of
/// tracked sources. Time must not go backwards; if it does it is clamped.
///
/// See the [crate documentation](crate) for an example.
pub struct Matcher {
    doors: Vec<DoorSlot>,
    tracks: Vec<Track>,
    ports: HashMap<u32, PortEntry, BuildHasherDefault<PortHasher>>,
    table: SourceTable,
    timers: TimerHeap,
    grants: Grants,
    decisions: VecDeque<Decision>,
    stats: Stats,
    now: Timestamp,
    limits: Limits,
    scratch: Vec<Attempt>,
    listen_generation: u64,
}

impl Matcher {
    /// Builds a matcher for `doors`.
    pub fn new(doors: Vec<Door>, limits: Limits) -> Result<Matcher, DoorError> {
        validate_all(&doors)?;
        let mut m = Matcher {
            doors: doors
                .into_iter()
                .map(|door| DoorSlot { door, active: true })
                .collect(),
            tracks: Vec::new(),
            ports: HashMap::default(),
            table: SourceTable::new(),
            timers: TimerHeap::default(),
            grants: Grants::new(limits.max_grants),
            decisions: VecDeque::new(),
            stats: Stats::default(),
            now: Timestamp::ZERO,
            limits,
            scratch: Vec::new(),
            listen_generation: 0,
        };
        m.tracks = m.compile_tracks(&HashMap::new())?;
        m.rebuild_ports();
        Ok(m)
    }

    // ---- getters -------------------------------------------------------

    /// The door with this id (also a door retired by a reload).
    pub fn door(&self, id: DoorId) -> Option<&Door> {
        self.doors.get(id.0 as usize).map(|s| &s.door)
    }

    /// The active doors and their ids.
    pub fn doors(&self) -> impl Iterator<Item = (DoorId, &Door)> {
        self.doors
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active)
            .map(|(i, s)| (DoorId(i as u32), &s.door))
    }

    /// The id of the active door with this name.
    pub fn door_id(&self, name: &str) -> Option<DoorId> {
        self.doors().find(|(_, d)| d.name == name).map(|(id, _)| id)
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            sources: self.table.len(),
            grants: self.grants.len(),
            ..self.stats
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Bytes of heap memory held for tracked sources (table, index, timers).
    pub fn source_state_bytes(&self) -> usize {
        self.table.heap_bytes() + self.timers.heap_bytes()
    }

    /// Open grants with a pending close: `(door, src, grant, closes_at)`.
    pub fn open_grants(&self) -> impl Iterator<Item = (DoorId, IpAddr, GrantId, Timestamp)> + '_ {
        self.grants.open_grants()
    }

    /// Every knock the doors listen to, sorted and without duplicates: what a
    /// capture backend's kernel filter must let through. It changes when a
    /// one-time sequence is used and on [`replace_doors`](Matcher::replace_doors);
    /// [`listen_generation`](Matcher::listen_generation) counts the changes.
    pub fn listen_set(&self) -> Vec<Listen> {
        let mut out: Vec<Listen> = self
            .tracks
            .iter()
            .filter(|t| t.live)
            .flat_map(|t| {
                let door = &self.doors[t.door.0 as usize].door;
                t.steps
                    .iter()
                    .map(move |&s| Listen::new(s, door.tcp_flags, door.target))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Incremented each time the listen set may have changed.
    pub fn listen_generation(&self) -> u64 {
        self.listen_generation
    }

    // ---- inputs --------------------------------------------------------

    /// Handles one knock seen at `now`.
    pub fn handle_event(&mut self, now: Timestamp, event: &Event) {
        let now = self.advance_clock(now);
        self.run_timers(now);
        self.stats.events += 1;
        let pk = port_key(event.proto, event.dst_port);
        let Some(entry) = self.ports.get(&pk) else {
            self.stats.ignored += 1;
            return;
        };
        let doors = &self.doors;
        if !entry
            .doors
            .iter()
            .any(|d| doors[d.0 as usize].door.accepts(event))
        {
            self.stats.ignored += 1;
            return;
        }
        let key = key_of(event.src);
        let src = addr_of(&key);
        let now_ms = now.as_millis();
        let hash = self.table.hash(&key);
        if let Some(idx) = self.table.find(hash, &key) {
            if self.advance(idx, hash, src, now_ms, event) {
                return;
            }
        }
        self.start(key, hash, src, now, event);
    }

    /// Fires every timer due at `now` (at most `max_timers_per_call`).
    /// Calling it early or twice does nothing.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let now = self.advance_clock(now);
        self.run_timers(now);
    }

    /// Replaces the doors (a reload). Doors whose definition is unchanged keep
    /// their id and every in-flight attempt; other attempts are dropped
    /// silently. Open grants all stay and close on time. On error nothing changes.
    pub fn replace_doors(&mut self, doors: Vec<Door>) -> Result<(), DoorError> {
        validate_all(&doors)?;
        let old_tracks = std::mem::take(&mut self.tracks);
        let old_slots = self.doors.clone();
        // Which old door does each new door keep?
        let mut kept: HashSet<u32> = HashSet::new();
        let mut new_active = vec![false; self.doors.len()];
        for door in doors {
            let same = self
                .doors
                .iter()
                .position(|s| s.active && s.door == door)
                .filter(|&i| !new_active[i]);
            match same {
                Some(i) => {
                    new_active[i] = true;
                    kept.insert(i as u32);
                }
                None => {
                    self.doors.push(DoorSlot { door, active: true });
                    new_active.push(true);
                }
            }
        }
        for (slot, active) in self.doors.iter_mut().zip(&new_active) {
            slot.active = *active;
        }
        // Epochs of kept tracks survive.
        let mut epochs = HashMap::new();
        for t in old_tracks.iter().filter(|t| kept.contains(&t.door.0)) {
            epochs.entry(t.door).or_insert_with(Vec::new).push(t.epoch);
        }
        let tracks = match self.compile_tracks(&epochs) {
            Ok(t) => t,
            Err(e) => {
                self.doors = old_slots;
                self.tracks = old_tracks;
                return Err(e);
            }
        };
        // old track index -> new track index, for kept doors (same order per door).
        let mut remap = vec![u16::MAX; old_tracks.len()];
        let mut cursor: HashMap<DoorId, usize> = HashMap::new();
        for (oi, ot) in old_tracks.iter().enumerate() {
            if !kept.contains(&ot.door.0) {
                continue;
            }
            let k = cursor.entry(ot.door).or_insert(0);
            if let Some((ni, _)) = tracks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.door == ot.door)
                .nth(*k)
            {
                remap[oi] = ni as u16;
            }
            *k += 1;
        }
        self.tracks = tracks;
        self.rebuild_ports();
        let live: Vec<u32> = self.table.live().collect();
        let now_ms = self.now.as_millis();
        let mut buf = std::mem::take(&mut self.scratch);
        for idx in live {
            self.table.load(idx, &mut buf);
            let before = self.deadline_ms(idx, &buf, now_ms);
            let old = std::mem::take(&mut buf);
            buf.extend(old.iter().filter_map(|a| {
                let nt = *remap.get(a.track as usize)?;
                (nt != u16::MAX).then_some(Attempt { track: nt, ..*a })
            }));
            if buf.is_empty() {
                self.table.remove(idx);
            } else {
                self.table.store(idx, &buf);
                let after = self.deadline_ms(idx, &buf, now_ms);
                if after != before {
                    if let Some(d) = after {
                        self.timers.push(d, idx);
                    }
                }
            }
        }
        self.scratch = buf;
        self.compact_timers();
        Ok(())
    }

    /// Re-creates a grant known from outside (a state file after a restart),
    /// so that its `Close` is emitted at `until`. Unknown doors are refused.
    pub fn restore_grant(
        &mut self,
        door: DoorId,
        src: IpAddr,
        until: Timestamp,
    ) -> Option<GrantId> {
        self.door(door)?;
        Some(self.grants.restore(door, src, until))
    }

    // ---- outputs -------------------------------------------------------

    /// The next decision, oldest first.
    #[must_use]
    pub fn poll_decision(&mut self) -> Option<Decision> {
        self.decisions.pop_front()
    }

    /// When `handle_timeout` should next be called (`None`: no timer).
    /// May be in the past (call it at once) or early (a timer that no longer
    /// matters); both are harmless.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let a = self.timers.peek_ms().map(Timestamp::from_millis);
        let b = self.grants.next_deadline();
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- internals -----------------------------------------------------

    fn advance_clock(&mut self, now: Timestamp) -> Timestamp {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    fn compile_tracks(&self, epochs: &HashMap<DoorId, Vec<u8>>) -> Result<Vec<Track>, DoorError> {
        let mut tracks = Vec::new();
        for (i, slot) in self.doors.iter().enumerate() {
            if !slot.active {
                continue;
            }
            let id = DoorId(i as u32);
            let timeout_ms = u32::try_from(slot.door.seq_timeout.as_millis()).unwrap_or(u32::MAX);
            let kept = epochs.get(&id);
            let (n, live_steps): (usize, Vec<&[Step]>) = match &slot.door.sequences {
                Sequences::Reusable(list) => {
                    (list.len(), list.iter().map(|s| s.as_slice()).collect())
                }
                Sequences::OneTime { list, next } => (
                    1,
                    vec![list.get(*next).map(|s| s.as_slice()).unwrap_or(&[])],
                ),
            };
            for (k, steps) in live_steps.into_iter().enumerate().take(n) {
                tracks.push(Track {
                    door: id,
                    steps: steps.into(),
                    timeout_ms,
                    epoch: kept.and_then(|e| e.get(k)).copied().unwrap_or(0),
                    live: !steps.is_empty(),
                });
            }
        }
        if tracks.len() > Attempt::MAX_TRACK {
            return Err(DoorError::TooManySequences {
                count: tracks.len(),
                max: Attempt::MAX_TRACK,
            });
        }
        Ok(tracks)
    }

    fn rebuild_ports(&mut self) {
        self.ports.clear();
        for (ti, t) in self.tracks.iter().enumerate() {
            if !t.live {
                continue;
            }
            for (si, s) in t.steps.iter().enumerate() {
                let e = self.ports.entry(port_key(s.proto, s.port)).or_default();
                if si == 0 {
                    e.first.push(ti as u16);
                }
                if !e.doors.contains(&t.door) {
                    e.doors.push(t.door);
                }
            }
        }
        self.listen_generation += 1;
    }

    /// The record's deadline: its start plus the shortest timeout of its live attempts.
    fn deadline_ms(&self, idx: u32, attempts: &[Attempt], now_ms: u64) -> Option<u64> {
        let age = u64::from((now_ms as u32).wrapping_sub(self.table.start_ms(idx)));
        let start = now_ms.saturating_sub(age);
        attempts
            .iter()
            .filter_map(|a| self.tracks.get(a.track as usize))
            .map(|t| u64::from(t.timeout_ms))
            .min()
            .map(|t| start + t)
    }

    fn attempt_alive(&self, a: &Attempt) -> bool {
        self.tracks
            .get(a.track as usize)
            .is_some_and(|t| t.live && t.epoch == a.epoch)
    }

    /// Drops dead attempts and expires old ones. Returns the live ones' count.
    fn expire(&mut self, src: IpAddr, age_ms: u32, attempts: &mut Vec<Attempt>) {
        let mut i = 0;
        while i < attempts.len() {
            let a = attempts[i];
            if !self.attempt_alive(&a) {
                attempts.swap_remove(i);
                continue;
            }
            let t = &self.tracks[a.track as usize];
            if age_ms >= t.timeout_ms {
                self.stats.expired += 1;
                self.decisions.push_back(Decision::Expired {
                    door: t.door,
                    src,
                    step: a.step,
                });
                attempts.swap_remove(i);
                continue;
            }
            i += 1;
        }
    }

    /// Applies `event` to the attempts of record `idx`. Returns false if the
    /// record had no live attempt left (the event is then a first knock).
    fn advance(&mut self, idx: u32, hash: u64, src: IpAddr, now_ms: u64, event: &Event) -> bool {
        let mut buf = std::mem::take(&mut self.scratch);
        self.table.load(idx, &mut buf);
        let age = (now_ms as u32).wrapping_sub(self.table.start_ms(idx));
        let before = self.deadline_ms(idx, &buf, now_ms);
        self.expire(src, age, &mut buf);
        if buf.is_empty() {
            self.table.remove_hashed(idx, hash);
            self.scratch = buf;
            return false;
        }
        let now = Timestamp::from_millis(now_ms).max(self.now);
        let mut i = 0;
        while i < buf.len() {
            let a = &mut buf[i];
            let t = &self.tracks[a.track as usize];
            let door = &self.doors[t.door.0 as usize].door;
            if !door.accepts(event) {
                i += 1;
                continue;
            }
            if t.steps[usize::from(a.step)].matches(event) {
                a.step += 1;
                let (door_id, step, done) = (t.door, a.step, usize::from(a.step) == t.steps.len());
                let track = a.track;
                self.stats.stages += 1;
                self.decisions.push_back(Decision::Stage {
                    door: door_id,
                    src,
                    step,
                });
                if done {
                    buf.swap_remove(i);
                    self.open(track, src, now);
                    continue;
                }
            } else if !(door.allow_repeat && t.steps[usize::from(a.step) - 1].matches(event)) {
                self.stats.invalidated += 1;
                self.decisions.push_back(Decision::Invalidated {
                    door: t.door,
                    src,
                    step: a.step,
                });
                buf.swap_remove(i);
                continue;
            }
            i += 1;
        }
        // An open may have used a one-time sequence that other attempts were on.
        buf.retain(|a| {
            self.tracks
                .get(a.track as usize)
                .is_some_and(|t| t.live && t.epoch == a.epoch)
        });
        if buf.is_empty() {
            self.table.remove_hashed(idx, hash);
        } else {
            self.table.store(idx, &buf);
            let after = self.deadline_ms(idx, &buf, now_ms);
            if after != before {
                if let Some(d) = after {
                    self.timers.push(d, idx);
                }
            }
        }
        self.scratch = buf;
        true
    }

    /// A knock from a source with no attempt: start one per door it begins.
    fn start(
        &mut self,
        key: crate::table::Key,
        hash: u64,
        src: IpAddr,
        now: Timestamp,
        event: &Event,
    ) {
        let pk = port_key(event.proto, event.dst_port);
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let mut opens: [u16; 4] = [0; 4];
        let mut n_opens = 0usize;
        let mut more_opens = Vec::new();
        if let Some(entry) = self.ports.get(&pk) {
            for &ti in &entry.first {
                let t = &self.tracks[ti as usize];
                let door = &self.doors[t.door.0 as usize].door;
                if !t.live || !door.accepts(event) {
                    continue;
                }
                if !door.cooldown.is_zero() && self.grants.in_cooldown(src, t.door, now) {
                    continue;
                }
                self.stats.attempts_started += 1;
                self.stats.stages += 1;
                self.decisions.push_back(Decision::Stage {
                    door: t.door,
                    src,
                    step: 1,
                });
                if t.steps.len() == 1 {
                    if n_opens < opens.len() {
                        opens[n_opens] = ti;
                        n_opens += 1;
                    } else {
                        more_opens.push(ti);
                    }
                } else {
                    buf.push(Attempt {
                        track: ti,
                        step: 1,
                        epoch: t.epoch,
                    });
                }
            }
        }
        for &ti in opens[..n_opens].iter().chain(&more_opens) {
            self.open(ti, src, now);
        }
        buf.retain(|a| self.attempt_alive(a));
        if !buf.is_empty() {
            if self.table.len() >= self.limits.max_sources {
                if let Some(victim) = self.table.eviction_candidate() {
                    self.table.remove(victim);
                    self.stats.evicted += 1;
                }
            }
            let now_ms = now.as_millis();
            let idx = self.table.insert(hash, key, now_ms as u32, &buf);
            if let Some(d) = self.deadline_ms(idx, &buf, now_ms) {
                self.timers.push(d, idx);
            }
            self.compact_timers();
        }
        self.scratch = buf;
    }

    fn open(&mut self, track: u16, src: IpAddr, now: Timestamp) {
        let door_id = self.tracks[track as usize].door;
        let slot = &mut self.doors[door_id.0 as usize];
        let (lifetime, cooldown) = (slot.door.grant_lifetime, slot.door.cooldown);
        match self
            .grants
            .open(door_id, src, now, lifetime, cooldown, &mut self.decisions)
        {
            Opened::New => self.stats.opens += 1,
            Opened::Extended => self.stats.extended += 1,
            Opened::NewAfterEviction => {
                self.stats.opens += 1;
                self.stats.grants_evicted += 1;
            }
        }
        if let Sequences::OneTime { list, next } = &mut slot.door.sequences {
            let index = *next;
            *next += 1;
            let remaining = list.len().saturating_sub(*next);
            let t = &mut self.tracks[track as usize];
            t.epoch = t.epoch.wrapping_add(1);
            match list.get(*next) {
                Some(s) => t.steps = s.as_slice().into(),
                None => t.live = false,
            }
            self.decisions.push_back(Decision::SequenceConsumed {
                door: door_id,
                index,
                remaining,
            });
            self.rebuild_ports();
        }
    }

    fn run_timers(&mut self, now: Timestamp) {
        let now_ms = now.as_millis();
        let source_due = self.timers.peek_ms().is_some_and(|t| t <= now_ms);
        let grant_due = self.grants.next_deadline().is_some_and(|t| t <= now);
        if !source_due && !grant_due {
            return;
        }
        let mut budget = self.limits.max_timers_per_call;
        let mut buf = std::mem::take(&mut self.scratch);
        while budget > 0 {
            let Some(entry) = self.timers.pop_due(now_ms) else {
                break;
            };
            budget -= 1;
            let idx = entry.idx;
            if !self.table.is_live(idx) {
                continue;
            }
            self.table.load(idx, &mut buf);
            if self.deadline_ms(idx, &buf, now_ms) != Some(entry.deadline_ms()) {
                continue; // stale
            }
            let src = addr_of(self.table.key(idx));
            let age = (now_ms as u32).wrapping_sub(self.table.start_ms(idx));
            self.expire(src, age, &mut buf);
            if buf.is_empty() {
                self.table.remove(idx);
            } else {
                self.table.store(idx, &buf);
                if let Some(d) = self.deadline_ms(idx, &buf, now_ms) {
                    self.timers.push(d, idx);
                }
            }
        }
        self.scratch = buf;
        let closes = self.grants.handle_timeout(now, budget, &mut self.decisions);
        self.stats.closes += closes;
    }

    fn compact_timers(&mut self) {
        if self.timers.len() <= 2 * self.table.len() + 1024 {
            return;
        }
        let now_ms = self.now.as_millis();
        let mut buf = Vec::new();
        let mut entries = Vec::with_capacity(self.table.len());
        for idx in self.table.live() {
            self.table.load(idx, &mut buf);
            if let Some(d) = self.deadline_ms(idx, &buf, now_ms) {
                entries.push(TimerEntry::new(d, idx));
            }
        }
        self.timers.rebuild(entries);
    }
}

fn validate_all(doors: &[Door]) -> Result<(), DoorError> {
    for (i, d) in doors.iter().enumerate() {
        d.validate()?;
        if doors[..i].iter().any(|o| o.name == d.name) {
            return Err(DoorError::DuplicateName {
                door: d.name.clone(),
            });
        }
    }
    Ok(())
}
