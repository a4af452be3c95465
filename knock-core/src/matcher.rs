//! The matcher: the whole per-source state machine.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use crate::blacklist::{Blacklist, Suspects};
use crate::decision::{Decision, DoorId, GrantId, Queue};
use crate::door::{Door, FlagFilter, Listen, Sequences, Step, USED_WINDOWS, WINDOW_SLOTS};
use crate::error::DoorError;
use crate::event::{Event, Proto};
use crate::grant::{Grants, Opened};
use crate::hasher::SourceHasher;
use crate::table::{addr_of, key_of, Attempt, SourceTable};
use crate::time::Timestamp;
use crate::timer::{TimerEntry, TimerHeap};

/// Bounds on what a matcher keeps.
///
/// Every bound is at least 1: build one from [`Limits::default`] with the
/// `with_*` setters, which clamp, and read it with the getters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    max_sources: usize,
    max_grants: usize,
    max_timers_per_call: usize,
    max_suspects: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sources: 1_000_000,
            max_grants: 1_000_000,
            max_timers_per_call: 4096,
            max_suspects: 65_536,
        }
    }
}

impl Limits {
    /// Most sources with a record (default 1,000,000): an attempt in
    /// progress, or idle for up to `seq_timeout` after one. When full, the
    /// least advanced goes first (idle ones before any attempt, except a
    /// source that just opened a door, which keeps its place), oldest first
    /// among equals.
    pub fn max_sources(&self) -> usize {
        self.max_sources
    }

    /// Most grants and cooldowns remembered at once (default 1,000,000). When
    /// full, the one due soonest is closed early.
    pub fn max_grants(&self) -> usize {
        self.max_grants
    }

    /// Most timers one `handle_timeout` (or `handle_event`) call fires
    /// (default 4096); `poll_timeout` reports the rest as due at once.
    pub fn max_timers_per_call(&self) -> usize {
        self.max_timers_per_call
    }

    /// Most sources the [`Blacklist`] remembers (with strikes or blocked;
    /// default 65,536). When full, the oldest entry goes (a blocked one is
    /// unblocked early).
    pub fn max_suspects(&self) -> usize {
        self.max_suspects
    }

    /// Sets [`max_sources`](Limits::max_sources) (at least 1).
    pub fn with_max_sources(mut self, n: usize) -> Self {
        self.max_sources = n.max(1);
        self
    }

    /// Sets [`max_grants`](Limits::max_grants) (at least 1).
    pub fn with_max_grants(mut self, n: usize) -> Self {
        self.max_grants = n.max(1);
        self
    }

    /// Sets [`max_suspects`](Limits::max_suspects) (at least 1).
    pub fn with_max_suspects(mut self, n: usize) -> Self {
        self.max_suspects = n.max(1);
        self
    }

    /// Sets [`max_timers_per_call`](Limits::max_timers_per_call) (at least 1).
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
    /// Attempts dropped because the table was full (idle records that gave
    /// way are not counted).
    pub evicted: u64,
    /// Grants closed early because the grant table was full.
    pub grants_evicted: u64,
    /// Sources with an attempt in progress now (idle records not counted).
    pub sources: usize,
    /// Grants and cooldowns remembered now.
    pub grants: usize,
    /// Knocks that invalidated an attempt at a strict door only because it
    /// is strict (a port no door uses).
    pub strict_invalidations: u64,
    /// Blacklist strikes.
    pub strikes: u64,
    /// Blocked decisions.
    pub blocked: u64,
    /// Events ignored because their source was blocked.
    pub blocked_events: u64,
    /// Sources the blacklist remembers now.
    pub suspects: usize,
}

/// A compiled sequence of one door.
#[derive(Clone, Debug)]
struct Track {
    door: DoorId,
    steps: Box<[Step]>,
    timeout_ms: u32,
    epoch: u8,
    live: bool,
    /// For a windowed door's track: its window.
    window: u64,
    /// A knock of this track's first step begins this track and no other
    /// (it is the only live track that starts there), its door has no
    /// cooldown, and its timeout is the longest (`Matcher::tmax_ms`), so a
    /// record's timer entry is early enough for any restart: a record
    /// parked on it can restart it directly.
    quick_restart: bool,
}

#[derive(Clone, Debug)]
struct DoorSlot {
    door: Door,
    /// Retired by a reload (kept so that pending closes can name it).
    active: bool,
    /// A windowed door's used windows, newest last (at most `USED_WINDOWS`).
    used: VecDeque<u64>,
    /// Opening it changes nothing in the matcher: reusable sequences, no
    /// grant lifetime, no cooldown.
    plain: bool,
}

impl DoorSlot {
    fn new(door: Door) -> Self {
        DoorSlot {
            plain: matches!(door.sequences, Sequences::Reusable(_))
                && door.grant_lifetime.is_none()
                && door.cooldown.is_zero(),
            door,
            active: true,
            used: VecDeque::new(),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct PortEntry {
    /// Tracks whose first step is this port.
    first: Vec<u16>,
    /// Doors with this port anywhere in a live track.
    doors: Vec<DoorId>,
    /// Set when one door uses this port and it has no target or source
    /// restriction: whether it listens then depends on the TCP flags only.
    only_flags: Option<FlagFilter>,
}

impl PortEntry {
    /// Whether any door with this port listens to `event`.
    #[inline]
    fn accepts(&self, doors: &[DoorSlot], event: &Event) -> bool {
        match self.only_flags {
            Some(f) => event.proto == Proto::Udp || f.accepts(event.tcp_flags),
            None => self
                .doors
                .iter()
                .any(|d| doors[d.0 as usize].door.accepts(event)),
        }
    }
}

/// How far [`Matcher::quick_event`] got.
enum Quick {
    /// Not the usual knock: nothing looked up.
    No,
    /// Handled.
    Done,
    /// Not handled, but the source was looked up: its hash and record.
    Looked(u64, Option<u32>),
}

/// What a first knock did for one track.
enum Begun {
    /// The door does not take it (flags, target, cooldown, dead track).
    No,
    /// An attempt at step 1.
    Attempt(Attempt),
    /// A one-step sequence: the door opens.
    Opens,
}

/// The knock ports: a small open-addressing table from port key to entry.
/// A configuration has a handful of ports, so the table is at most a
/// quarter full and a lookup is one multiply and usually one probe.
#[derive(Clone, Debug, Default)]
struct PortIndex {
    /// `(port key, entry index)`, `EMPTY_PORT` keys unused; length a power of two.
    slots: Vec<(u32, u32)>,
    entries: Vec<PortEntry>,
}

const EMPTY_PORT: u32 = u32::MAX;

impl PortIndex {
    fn slot_of(&self, key: u32) -> usize {
        // Fibonacci hashing; keys are configured, not chosen by knockers.
        (key.wrapping_mul(0x9E37_79B1) >> 16) as usize & (self.slots.len() - 1)
    }

    /// The index of `key`'s entry.
    #[inline]
    fn find(&self, key: u32) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mut i = self.slot_of(key);
        loop {
            let (k, e) = self.slots[i];
            if k == key {
                return Some(e as usize);
            }
            if k == EMPTY_PORT {
                return None;
            }
            i = (i + 1) & (self.slots.len() - 1);
        }
    }

    #[inline]
    fn get(&self, key: u32) -> Option<&PortEntry> {
        self.entries.get(self.find(key)?)
    }

    fn from_map(map: std::collections::BTreeMap<u32, PortEntry>) -> Self {
        let mut index = PortIndex {
            slots: vec![(EMPTY_PORT, 0); (map.len() * 4).next_power_of_two().max(8)],
            entries: Vec::with_capacity(map.len()),
        };
        for (key, entry) in map {
            let mut i = index.slot_of(key);
            while index.slots[i].0 != EMPTY_PORT {
                i = (i + 1) & (index.slots.len() - 1);
            }
            index.slots[i] = (key, index.entries.len() as u32);
            index.entries.push(entry);
        }
        index
    }
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
    ports: PortIndex,
    table: SourceTable,
    timers: TimerHeap,
    grants: Grants,
    decisions: Queue,
    stats: Stats,
    now: Timestamp,
    limits: Limits,
    scratch: Vec<Attempt>,
    listen_generation: u64,
    /// Active strict doors.
    strict: Vec<DoorId>,
    suspects: Suspects,
    /// The lowest door id whose attempt the current event invalidated.
    invalidated_by_event: Option<DoorId>,
    /// The longest `seq_timeout` any track has had, in milliseconds: a
    /// held record's timer entry is due by its start plus this.
    tmax_ms: u32,
    /// No timer is due before this ([`poll_timeout`](Matcher::poll_timeout)
    /// or earlier), so that an event checks one value, not three queues.
    wake: Timestamp,
}

impl Matcher {
    /// Builds a matcher for `doors`, with seed 0: the same as
    /// [`with_seed`](Matcher::with_seed)`(doors, limits, 0)`. Deterministic,
    /// for tests and replays; a daemon facing the network uses `with_seed`
    /// with a random seed.
    pub fn new(doors: Vec<Door>, limits: Limits) -> Result<Matcher, DoorError> {
        Matcher::with_seed(doors, limits, 0)
    }

    /// Builds a matcher for `doors` whose maps of sources hash with
    /// SipHash-1-3 keyed from `seed` ([`SourceHasher`]). Pass a random seed
    /// when knockers are real (spoofed sources could otherwise be chosen to
    /// collide). The decisions do not depend on the seed: only the layout
    /// of the hash tables does.
    pub fn with_seed(doors: Vec<Door>, limits: Limits, seed: u64) -> Result<Matcher, DoorError> {
        validate_all(&doors)?;
        let hasher = SourceHasher::new(seed);
        let mut m = Matcher {
            doors: doors.into_iter().map(DoorSlot::new).collect(),
            tracks: Vec::new(),
            ports: PortIndex::default(),
            table: SourceTable::new(hasher),
            timers: TimerHeap::default(),
            grants: Grants::new(limits.max_grants, hasher),
            decisions: Queue::default(),
            stats: Stats::default(),
            now: Timestamp::ZERO,
            limits,
            scratch: Vec::new(),
            listen_generation: 0,
            strict: Vec::new(),
            suspects: Suspects::new(limits.max_suspects, hasher),
            invalidated_by_event: None,
            tmax_ms: 0,
            wake: Timestamp::MAX,
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
            suspects: self.suspects.len(),
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

    /// Open grants with a pending close: `(door, src, grant, closes_at)`,
    /// by closing time, then source, then door. With
    /// [`next_grant_id`](Matcher::next_grant_id), what a state file keeps
    /// for [`restore_grant`](Matcher::restore_grant).
    pub fn open_grants(&self) -> impl Iterator<Item = (DoorId, IpAddr, GrantId, Timestamp)> + '_ {
        self.grants.open_grants().into_iter()
    }

    /// The id the next grant will get. Grant ids only grow; a restarted
    /// process passes this (saved) to
    /// [`reserve_grant_ids`](Matcher::reserve_grant_ids) so that no id
    /// repeats across restarts.
    pub fn next_grant_id(&self) -> u64 {
        self.grants.next_id()
    }

    /// Raises the next grant id to at least `next` (never lowers it).
    pub fn reserve_grant_ids(&mut self, next: u64) {
        self.grants.reserve(next);
    }

    /// Blocked sources: `(door, src, until)`, the door named in the block's
    /// [`Decision::Blocked`] and when the block ends, by block end, then
    /// address. What a state file keeps for
    /// [`restore_block`](Matcher::restore_block).
    pub fn blocks(&self) -> impl Iterator<Item = (DoorId, IpAddr, Timestamp)> + '_ {
        self.suspects.blocks().into_iter()
    }

    /// The used windows of windowed door `door`, oldest first (at most
    /// [`USED_WINDOWS`]; empty for another or unknown door). What a state
    /// file keeps for [`restore_used_windows`](Matcher::restore_used_windows).
    pub fn used_windows(&self, door: DoorId) -> Vec<u64> {
        self.doors
            .get(door.0 as usize)
            .map(|s| s.used.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The blacklist rule in force.
    pub fn blacklist(&self) -> Option<Blacklist> {
        self.suspects.rule()
    }

    /// Every knock the doors listen to, sorted and without duplicates: what a
    /// capture backend's kernel filter must let through. It changes when a
    /// one-time or time-derived sequence is used, on
    /// [`set_windows`](Matcher::set_windows) and on
    /// [`replace_doors`](Matcher::replace_doors);
    /// [`listen_generation`](Matcher::listen_generation) counts the changes.
    /// A strict door adds the two [`Listen::strict`] entries (every SYN and
    /// datagram).
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
        for id in &self.strict {
            out.extend(Listen::strict(self.doors[id.0 as usize].door.target));
        }
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
        if now >= self.wake {
            self.run_timers(now);
        }
        self.stats.events += 1;
        let pk = port_key(event.proto, event.dst_port);
        let port = self.ports.find(pk);
        let mut looked = None;
        if let Some(i) = port {
            match self.quick_event(i, now, event) {
                Quick::Done => return,
                Quick::Looked(hash, found) => looked = Some((hash, found)),
                Quick::No => {}
            }
        }
        let doors = &self.doors;
        let entry = port.and_then(|i| self.ports.entries.get(i));
        let relevant = entry.is_some_and(|entry| entry.accepts(doors, event));
        // The one door that can use this port accepts the event (flags were
        // its only filter): no need to ask it again.
        let accepted = relevant && entry.is_some_and(|e| e.only_flags.is_some());
        // A strict door this event touches on a port that is not its step.
        let touched = self.strict.iter().copied().find(|d| {
            doors[d.0 as usize].door.strict_touch(event)
                && !self.ports.get(pk).is_some_and(|e| e.doors.contains(d))
        });
        if !relevant && touched.is_none() {
            self.stats.ignored += 1;
            return;
        }
        let key = key_of(event.src);
        let now_ms = now.as_millis();
        if self.suspects.is_blocked(&key, now_ms) {
            self.stats.blocked_events += 1;
            return;
        }
        let src = normalized(event.src);
        // The event's own address when it needs no normalizing (nearly
        // always): decisions then copy it from the event, not from a value
        // just assembled on the stack (a store-forwarding stall per event).
        let src_ref = if src == event.src { &event.src } else { &src };
        let (hash, found) = match looked {
            Some(done) => done,
            None => {
                let hash = self.table.hash(&key);
                (hash, self.table.find(hash, &key))
            }
        };
        self.invalidated_by_event = None;
        let handled = match found {
            _ if !relevant => {
                // A strict door's touch: only ends attempts.
                if let Some(idx) = found {
                    self.advance(idx, src, now_ms, event, false);
                }
                true
            }
            None => false,
            Some(idx) => {
                // quick_event, if it looked the source up, has tried this.
                (looked.is_none() && self.advance_single(idx, src_ref, now, event, accepted))
                    || self.advance(idx, src, now_ms, event, true)
            }
        };
        if let (false, Some(port)) = (handled, port) {
            self.start(port, found, key, hash, src, now, event);
        } else if !relevant {
            self.stats.ignored += 1;
        }
        if self.suspects.rule().is_none() {
            return;
        }
        let strike = match (self.invalidated_by_event.take(), touched) {
            (Some(door), _) => Some(door),
            (None, Some(door)) if self.suspects.touch_counts(&key, pk, now_ms) => Some(door),
            _ => None,
        };
        if let Some(door) = strike {
            self.stats.strikes += 1;
            let blocked = self
                .suspects
                .strike(key, door, pk, now_ms, &mut self.decisions);
            self.rewake();
            if blocked.is_some() {
                self.stats.blocked += 1;
                if let Some(idx) = self.table.find(hash, &key) {
                    self.table.store(idx, &[]);
                }
            }
        }
    }

    /// The usual knock, start to end, with as little as possible live at
    /// once: a port that one door uses with a flags-only filter, no strict
    /// door and no blacklist, and a source whose lone attempt (or parked
    /// track) this knock advances. Short of [`Quick::Done`] it has changed
    /// nothing, and hands over what it looked up.
    #[inline]
    fn quick_event(&mut self, port: usize, now: Timestamp, event: &Event) -> Quick {
        if !self.strict.is_empty() || self.suspects.rule().is_some() {
            return Quick::No;
        }
        let Some(entry) = self.ports.entries.get(port) else {
            return Quick::No;
        };
        if entry.only_flags.is_none()
            || !entry.accepts(&self.doors, event)
            || normalized(event.src) != event.src
        {
            return Quick::No;
        }
        let key = key_of(event.src);
        let hash = self.table.hash(&key);
        let found = self.table.find(hash, &key);
        match found {
            Some(idx) if self.advance_single(idx, &event.src, now, event, true) => Quick::Done,
            _ => Quick::Looked(hash, found),
        }
    }

    /// Sets (or with `None` removes) the scanner blacklist. Removing it
    /// lifts every block ([`Decision::Unblocked`]); changing it keeps the
    /// blocks and strikes so far.
    pub fn set_blacklist(&mut self, rule: Option<Blacklist>) {
        self.suspects.set_rule(rule, &mut self.decisions);
        self.rewake();
    }

    /// Gives windowed door `door` the sequences of these time windows
    /// (at most [`WINDOW_SLOTS`], distinct modulo it), replacing the ones it
    /// had; usually w-1, w and w+1 for the current window w, each time w
    /// changes. A window that keeps its sequence keeps its attempts in
    /// flight; a window that goes, or changes, drops them. A window whose
    /// sequence has opened the door is not live again (the door remembers
    /// its last [`USED_WINDOWS`] used windows). On error nothing changes.
    pub fn set_windows(
        &mut self,
        door: DoorId,
        windows: Vec<(u64, Vec<Step>)>,
    ) -> Result<(), DoorError> {
        let slot = self
            .doors
            .get(door.0 as usize)
            .filter(|s| s.active && s.door.is_windowed())
            .ok_or_else(|| DoorError::NotWindowed {
                door: self
                    .doors
                    .get(door.0 as usize)
                    .map_or_else(|| door.to_string(), |s| s.door.name.clone()),
            })?;
        let (ws, list): (Vec<u64>, Vec<Vec<Step>>) = windows.into_iter().unzip();
        let mut new = slot.door.clone();
        new.sequences = Sequences::Windowed {
            windows: ws.clone(),
            list: list.clone(),
        };
        new.validate()?;
        let used = slot.used.clone();
        self.doors[door.0 as usize].door = new;
        let tracks = self.tracks.iter_mut().filter(|t| t.door == door);
        for (k, t) in tracks.enumerate() {
            let given = ws
                .iter()
                .position(|w| (w % WINDOW_SLOTS as u64) as usize == k);
            match given {
                None => {
                    if t.live || !t.steps.is_empty() {
                        t.live = false;
                        t.steps = Box::new([]);
                        t.epoch = t.epoch.wrapping_add(1);
                    }
                }
                Some(i) => {
                    if t.window == ws[i] && *t.steps == *list[i] && !t.steps.is_empty() {
                        // Unchanged (live again only if its use was forgotten).
                        t.live = !used.contains(&ws[i]);
                        continue;
                    }
                    t.window = ws[i];
                    t.steps = list[i].as_slice().into();
                    t.epoch = t.epoch.wrapping_add(1);
                    t.live = !used.contains(&ws[i]);
                }
            }
        }
        self.rebuild_ports();
        Ok(())
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
                .position(|s| s.active && s.door.same_definition(&door))
                .filter(|&i| !new_active[i]);
            match same {
                Some(i) => {
                    new_active[i] = true;
                    kept.insert(i as u32);
                }
                None => {
                    // A changed windowed door keeps the memory of used windows.
                    let used = self
                        .doors
                        .iter()
                        .find(|s| s.active && s.door.is_windowed() && s.door.name == door.name)
                        .map(|s| s.used.clone())
                        .unwrap_or_default();
                    let mut slot = DoorSlot::new(door);
                    if slot.door.is_windowed() {
                        slot.used = used;
                    }
                    self.doors.push(slot);
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
        let held: Vec<u32> = self.table.held_records().collect();
        let mut buf = std::mem::take(&mut self.scratch);
        for idx in held {
            self.table.load(idx, &mut buf);
            let old = std::mem::take(&mut buf);
            buf.extend(old.iter().filter_map(|a| {
                let nt = *remap.get(a.track as usize)?;
                (nt != u16::MAX).then_some(Attempt { track: nt, ..*a })
            }));
            // Kept attempts keep their timeouts: no deadline moves earlier.
            self.table.store(idx, &buf);
        }
        self.scratch = buf;
        Ok(())
    }

    /// Re-creates a grant known from outside (a state file after a
    /// restart) with exactly its id, so that its `Close`, carrying that id,
    /// is emitted at `until` (at once on the next timer run if `until` has
    /// passed). Refused (`None`) if the door is unknown, if `src` already
    /// has a grant with a pending close at `door`, or if another open grant
    /// has id `id`. Raises the next id above `id`. If the grant table is
    /// full, the grant due soonest is closed early (a `Close` to drain).
    pub fn restore_grant(
        &mut self,
        door: DoorId,
        src: IpAddr,
        until: Timestamp,
        id: u64,
    ) -> Option<GrantId> {
        self.door(door)?;
        let (grant, evicted) =
            self.grants
                .restore(door, normalized(src), until, id, &mut self.decisions)?;
        if evicted {
            self.stats.grants_evicted += 1;
        }
        self.rewake();
        Some(grant)
    }

    /// Blocks `src` until `until` (a block known from outside, restored
    /// after a restart), naming `door` (the door of its
    /// [`Decision::Blocked`]): its knocks are ignored and its attempts
    /// dropped until then, when [`Decision::Unblocked`] is emitted as for
    /// any block. Emits no `Blocked`. Refused (false) without a blacklist
    /// rule ([`set_blacklist`](Matcher::set_blacklist)), for an unknown
    /// door, or if `src` is blocked already.
    pub fn restore_block(&mut self, door: DoorId, src: IpAddr, until: Timestamp) -> bool {
        if self.door(door).is_none() {
            return false;
        }
        let key = key_of(src);
        let now_ms = self.now.as_millis();
        if !self
            .suspects
            .restore_block(key, door, until.as_millis(), now_ms, &mut self.decisions)
        {
            return false;
        }
        let hash = self.table.hash(&key);
        if let Some(idx) = self.table.find(hash, &key) {
            self.table.store(idx, &[]);
        }
        self.rewake();
        true
    }

    /// Adds `windows` (oldest first) to the used windows of windowed door
    /// `door` (a state file after a restart): the door keeps the newest
    /// [`USED_WINDOWS`], and a live sequence of a used window goes dead as
    /// when it is used (its attempts are dropped silently). Does nothing
    /// for another or unknown door.
    pub fn restore_used_windows(&mut self, door: DoorId, windows: &[u64]) {
        let Some(slot) = self
            .doors
            .get_mut(door.0 as usize)
            .filter(|s| s.door.is_windowed())
        else {
            return;
        };
        for &w in windows {
            if !slot.used.contains(&w) {
                slot.used.push_back(w);
            }
        }
        while slot.used.len() > USED_WINDOWS {
            slot.used.pop_front();
        }
        let used = &slot.used;
        let mut changed = false;
        for t in self.tracks.iter_mut().filter(|t| t.door == door) {
            if t.live && used.contains(&t.window) {
                t.live = false;
                t.epoch = t.epoch.wrapping_add(1);
                changed = true;
            }
        }
        if changed {
            self.rebuild_ports();
        }
    }

    // ---- outputs -------------------------------------------------------

    /// The next decision, oldest first.
    #[must_use]
    #[inline]
    pub fn poll_decision(&mut self) -> Option<Decision> {
        self.decisions.pop_front()
    }

    /// When `handle_timeout` should next be called (`None`: no timer).
    /// May be in the past (call it at once) or early (a timer that no longer
    /// matters); both are harmless.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.next_deadline()
    }

    // ---- internals -----------------------------------------------------

    /// Recomputes [`wake`](Matcher::wake) from the three queues.
    fn rewake(&mut self) {
        self.wake = self.poll_timeout().unwrap_or(Timestamp::MAX);
    }

    /// Lowers [`wake`](Matcher::wake) to a new source deadline.
    fn wake_by_ms(&mut self, deadline_ms: u64) {
        self.wake = self.wake.min(Timestamp::from_millis(deadline_ms));
    }

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
            let epoch = |k: usize| kept.and_then(|e| e.get(k)).copied().unwrap_or(0);
            match &slot.door.sequences {
                Sequences::Reusable(list) => {
                    for (k, steps) in list.iter().enumerate() {
                        tracks.push(Track {
                            door: id,
                            steps: steps.as_slice().into(),
                            timeout_ms,
                            epoch: epoch(k),
                            live: !steps.is_empty(),
                            window: 0,
                            quick_restart: false,
                        });
                    }
                }
                Sequences::OneTime { list, next } => {
                    let steps = list.get(*next).map(|s| s.as_slice()).unwrap_or(&[]);
                    tracks.push(Track {
                        door: id,
                        steps: steps.into(),
                        timeout_ms,
                        epoch: epoch(0),
                        live: !steps.is_empty(),
                        window: 0,
                        quick_restart: false,
                    });
                }
                Sequences::Windowed { windows, list } => {
                    // One track per slot (window modulo WINDOW_SLOTS), so that
                    // set_windows can replace one window without moving tracks.
                    for k in 0..WINDOW_SLOTS {
                        let given = windows
                            .iter()
                            .position(|w| (w % WINDOW_SLOTS as u64) as usize == k);
                        let (window, steps) = match given {
                            Some(i) => (windows[i], list.get(i).map_or(&[][..], |s| s.as_slice())),
                            None => (0, &[][..]),
                        };
                        tracks.push(Track {
                            door: id,
                            steps: steps.into(),
                            timeout_ms,
                            epoch: epoch(k),
                            live: !steps.is_empty() && !slot.used.contains(&window),
                            window,
                            quick_restart: false,
                        });
                    }
                }
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
        let mut ports: std::collections::BTreeMap<u32, PortEntry> = Default::default();
        self.strict = self
            .doors()
            .filter(|(_, d)| d.strict)
            .map(|(id, _)| id)
            .collect();
        for t in &mut self.tracks {
            t.quick_restart = false;
        }
        for (ti, t) in self.tracks.iter().enumerate() {
            if !t.live {
                continue;
            }
            for (si, s) in t.steps.iter().enumerate() {
                let e = ports.entry(port_key(s.proto, s.port)).or_default();
                if si == 0 {
                    e.first.push(ti as u16);
                }
                if !e.doors.contains(&t.door) {
                    e.doors.push(t.door);
                }
            }
        }
        for e in ports.values_mut() {
            e.only_flags = match e.doors[..] {
                [d] => {
                    let door = &self.doors[d.0 as usize].door;
                    (door.target.is_none() && door.from.is_empty()).then_some(door.tcp_flags)
                }
                _ => None,
            };
        }
        self.tmax_ms = self.tmax_ms.max(max_timeout(&self.tracks));
        for e in ports.values() {
            if let [ti] = e.first[..] {
                let t = &mut self.tracks[ti as usize];
                t.quick_restart = self.doors[t.door.0 as usize].door.cooldown.is_zero()
                    && t.timeout_ms == self.tmax_ms;
            }
        }
        self.ports = PortIndex::from_map(ports);
        self.listen_generation += 1;
    }

    fn attempt_alive(&self, a: &Attempt) -> bool {
        self.tracks
            .get(a.track as usize)
            .is_some_and(|t| t.live && t.epoch == a.epoch)
    }

    /// Drops dead attempts and expires old ones (emitting `Expired` in
    /// the attempts' order, which stays).
    fn expire(&mut self, src: IpAddr, age_ms: u32, attempts: &mut Vec<Attempt>) {
        attempts.retain(|a| {
            let Some(t) = self
                .tracks
                .get(a.track as usize)
                .filter(|t| t.live && t.epoch == a.epoch)
            else {
                return false;
            };
            if age_ms >= t.timeout_ms {
                self.stats.expired += 1;
                self.decisions.push_back(Decision::Expired {
                    door: t.door,
                    src,
                    step: a.step,
                });
                return false;
            }
            true
        });
    }

    /// Applies `event` to the attempts of record `idx`. Returns false if the
    /// record had no live attempt left (the event is then a first knock).
    /// An event no door listens to (`relevant` false: a strict door's touch)
    /// only affects attempts at strict doors.
    ///
    /// Attempts only ever go away here, so the record's deadline can only
    /// move later and its timer entry stays early enough (see `timer`).
    fn advance(
        &mut self,
        idx: u32,
        src: IpAddr,
        now_ms: u64,
        event: &Event,
        relevant: bool,
    ) -> bool {
        let mut buf = std::mem::take(&mut self.scratch);
        self.table.load(idx, &mut buf);
        if buf.is_empty() {
            // Idle.
            self.scratch = buf;
            return false;
        }
        let age = (now_ms as u32).wrapping_sub(self.table.start_ms(idx));
        self.expire(src, age, &mut buf);
        if buf.is_empty() {
            self.table.store(idx, &buf);
            self.scratch = buf;
            return false;
        }
        let now = Timestamp::from_millis(now_ms).max(self.now);
        // Every attempt in track order, then the opens (as on a first
        // knock): the attempts that stay keep their order.
        let mut opens: Vec<u16> = Vec::new();
        let mut kept = 0;
        for i in 0..buf.len() {
            let mut a = buf[i];
            let t = &self.tracks[a.track as usize];
            let door = &self.doors[t.door.0 as usize].door;
            let stays = if !relevant || !door.accepts(event) {
                // Not a knock this door listens to: only a strict door's
                // touch matters.
                let touch = door.strict_touch(event);
                if touch {
                    self.stats.strict_invalidations += 1;
                    let (d, step) = (t.door, a.step);
                    self.invalidate(d, src, step);
                }
                !touch
            } else if t.steps[usize::from(a.step)].matches(event) {
                a.step += 1;
                let (door_id, done) = (t.door, usize::from(a.step) == t.steps.len());
                self.stage(door_id, src, a.step);
                if done {
                    opens.push(a.track);
                }
                !done
            } else if door.allow_repeat && t.steps[usize::from(a.step) - 1].matches(event) {
                true
            } else {
                let (d, step) = (t.door, a.step);
                self.invalidate(d, src, step);
                false
            };
            if stays {
                buf[kept] = a;
                kept += 1;
            }
        }
        buf.truncate(kept);
        for &track in &opens {
            self.open(track, src, now);
        }
        // An open may have used a one-time sequence that other attempts were on.
        if !opens.is_empty() {
            buf.retain(|a| {
                self.tracks
                    .get(a.track as usize)
                    .is_some_and(|t| t.live && t.epoch == a.epoch)
            });
        }
        self.table.store(idx, &buf);
        self.scratch = buf;
        true
    }

    /// The common case, without copying attempts out and back: record
    /// `idx` has one live, unexpired attempt and `event` is its next step;
    /// or it is idle, parked at step 0 of a track (`SourceTable::park`) that
    /// `event` begins, as the only track that begins on its port, at a door
    /// without a cooldown (`Track::quick_restart`). Returns
    /// false (having changed nothing) in every other case.
    ///
    /// A knocker who starts again and one who carries on take the same
    /// path: whether the attempt is `fresh` (from step 0) changes values,
    /// not branches, since it is as random as the knockers.
    ///
    /// `accepted`: every door that could match `event` accepts it.
    fn advance_single(
        &mut self,
        idx: u32,
        src: &IpAddr,
        now: Timestamp,
        event: &Event,
        accepted: bool,
    ) -> bool {
        let Some(a) = self.table.single(idx) else {
            return false;
        };
        let Some(t) = self.tracks.get(a.track as usize) else {
            return false;
        };
        let now_ms = now.as_millis();
        let start_ms = self.table.start_ms(idx);
        let age = (now_ms as u32).wrapping_sub(start_ms);
        let fresh = a.step == 0;
        let door = &self.doors[t.door.0 as usize].door;
        // `|` and `&`, not `||` and `&&`: one predictable branch, not one
        // per condition on `fresh`.
        let dead = !t.live
            | (t.epoch != a.epoch)
            | ((age >= t.timeout_ms) & !fresh)
            | (!t.quick_restart & fresh);
        if dead
            || !t
                .steps
                .get(usize::from(a.step))
                .is_some_and(|s| s.matches(event))
            || !(accepted || door.accepts(event))
        {
            return false;
        }
        let step = a.step + 1;
        let (door_id, len) = (t.door, t.steps.len());
        self.stats.attempts_started += u64::from(fresh);
        self.stage(door_id, *src, step);
        if usize::from(step) == len {
            self.table.park(idx, Attempt { step: 0, ..a });
            self.open(a.track, *src, now);
        } else {
            // A mask, not `if`, or the compiler branches on `fresh`.
            let mask = u32::from(fresh).wrapping_neg();
            let new_start = (now_ms as u32 & mask) | (start_ms & !mask);
            self.table
                .step_single(idx, Attempt { step, ..a }, fresh, new_start);
            // A fresh attempt's deadline is new, and the slot's timer entry
            // is due by its old start + tmax (see `place`): early enough,
            // since a quick restart's track has the longest timeout.
        }
        true
    }

    /// An attempt at `door` ended by a wrong knock after `step` steps: count
    /// it, remember it for the blacklist (the lowest door id of this event)
    /// and emit `Invalidated`.
    fn invalidate(&mut self, door: DoorId, src: IpAddr, step: u8) {
        self.stats.invalidated += 1;
        self.invalidated_by_event = Some(self.invalidated_by_event.map_or(door, |o| o.min(door)));
        self.decisions
            .push_back(Decision::Invalidated { door, src, step });
    }

    /// A knock from a source with no attempt: start one per door it begins.
    /// `port` is the event's entry in the port index, `found` the source's
    /// (idle) record if it has one.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        port: usize,
        found: Option<u32>,
        key: crate::table::Key,
        hash: u64,
        src: IpAddr,
        now: Timestamp,
        event: &Event,
    ) {
        let Some(entry) = self.ports.entries.get(port) else {
            return;
        };
        if let [ti] = entry.first[..] {
            // One sequence begins on this port (the usual case): no buffer.
            match self.begin(ti, src, now, event) {
                Begun::Attempt(a) => self.place(found, key, hash, now, &[a]),
                Begun::Opens => self.open(ti, src, now),
                Begun::No => {}
            }
            return;
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let mut opens = Vec::new();
        for i in 0..entry.first.len() {
            let ti = self.ports.entries[port].first[i];
            match self.begin(ti, src, now, event) {
                Begun::Attempt(a) => buf.push(a),
                Begun::Opens => opens.push(ti),
                Begun::No => {}
            }
        }
        // Every Stage first, then the opens, as knockd logs them.
        for &ti in &opens {
            self.open(ti, src, now);
        }
        if !opens.is_empty() {
            // An open may have used a one-time sequence others started on.
            buf.retain(|a| self.attempt_alive(a));
        }
        if !buf.is_empty() {
            self.place(found, key, hash, now, &buf);
        }
        self.scratch = buf;
    }

    /// The first knock of track `ti`: if the track's door takes it, counts
    /// it and emits its `Stage`.
    fn begin(&mut self, ti: u16, src: IpAddr, now: Timestamp, event: &Event) -> Begun {
        let Some(t) = self.tracks.get(ti as usize) else {
            return Begun::No;
        };
        let door = &self.doors[t.door.0 as usize].door;
        if !t.live
            || !door.accepts(event)
            || (!door.cooldown.is_zero() && self.grants.in_cooldown(src, t.door, now))
        {
            return Begun::No;
        }
        let (door_id, one_step, epoch) = (t.door, t.steps.len() == 1, t.epoch);
        self.stats.attempts_started += 1;
        self.stage(door_id, src, 1);
        if one_step {
            return Begun::Opens;
        }
        Begun::Attempt(Attempt {
            track: ti,
            step: 1,
            epoch,
        })
    }

    /// A correct knock: `src` has done `step` steps of `door`.
    #[inline]
    fn stage(&mut self, door: DoorId, src: IpAddr, step: u8) {
        self.stats.stages += 1;
        self.decisions
            .push_back(Decision::Stage { door, src, step });
    }

    /// Gives the source's new `attempts` a record: its idle one (`found`), a
    /// free slot, or the eviction candidate's when the table is full; and
    /// makes sure the record's timer entry is due by its deadline.
    fn place(
        &mut self,
        found: Option<u32>,
        key: crate::table::Key,
        hash: u64,
        now: Timestamp,
        attempts: &[Attempt],
    ) {
        let now_ms = now.as_millis();
        let start = now_ms as u32;
        let deadline = now_ms + self.min_timeout(attempts);
        let reused = match found {
            Some(idx) => Some(idx),
            None if self.table.held() >= self.limits.max_sources => self.table.eviction_candidate(),
            None => None,
        };
        let Some(idx) = reused else {
            let idx = self.table.insert(hash, key, start, attempts);
            self.arm(idx, deadline);
            return;
        };
        let old_start = self.table.start_ms(idx);
        if found.is_some() {
            self.table.restart(idx, start, attempts);
        } else if self.table.evict_into(idx, hash, key, start, attempts) {
            self.stats.evicted += 1;
        }
        // The slot's timer entry is due by its old start + tmax: early
        // enough unless the new deadline is sooner.
        let age = u64::from(start.wrapping_sub(old_start));
        if now_ms.saturating_sub(age) + u64::from(self.tmax_ms) > deadline {
            self.arm(idx, deadline);
        }
    }

    /// Adds a timer entry for record `idx` at `deadline_ms`.
    fn arm(&mut self, idx: u32, deadline_ms: u64) {
        self.timers.push(deadline_ms, idx);
        self.wake_by_ms(deadline_ms);
        self.compact_timers();
    }

    fn open(&mut self, track: u16, src: IpAddr, now: Timestamp) {
        let door_id = self.tracks[track as usize].door;
        let slot = &mut self.doors[door_id.0 as usize];
        if slot.plain {
            // knockd's usual door: nothing to remember, nothing to close.
            self.grants.open_plain(door_id, src, &mut self.decisions);
            self.stats.opens += 1;
            return;
        }
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
        if let Some(t) = self.grants.next_deadline() {
            self.wake = self.wake.min(t);
        }
        if slot.door.is_windowed() {
            let t = &mut self.tracks[track as usize];
            if slot.used.len() >= USED_WINDOWS {
                slot.used.pop_front();
            }
            slot.used.push_back(t.window);
            t.live = false;
            t.epoch = t.epoch.wrapping_add(1);
            self.rebuild_ports();
        } else if let Sequences::OneTime { list, next } = &mut slot.door.sequences {
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

    /// The earliest pending timer of any kind.
    fn next_deadline(&self) -> Option<Timestamp> {
        let a = self.timers.peek_ms().map(Timestamp::from_millis);
        let b = self.grants.next_deadline();
        let c = self.suspects.next_deadline();
        [a, b, c].into_iter().flatten().min()
    }

    /// Fires the timers due at `now`, at most `max_timers_per_call`, in
    /// deadline order; those due at the same instant in [`timer_order`].
    fn run_timers(&mut self, now: Timestamp) {
        let mut budget = self.limits.max_timers_per_call;
        let mut buf = std::mem::take(&mut self.scratch);
        while budget > 0 {
            let Some(at) = self.next_deadline().filter(|&t| t <= now) else {
                break;
            };
            let before = budget;
            let mark = self.decisions.mark();
            self.fire_sources(at, &mut budget, &mut buf);
            self.stats.closes += self.grants.fire(at, &mut budget, &mut self.decisions);
            self.suspects
                .fire(at.as_millis(), &mut budget, &mut self.decisions);
            self.decisions.sort_from(mark, timer_order);
            if budget == before {
                break; // nothing could fire (cannot happen; never spin)
            }
        }
        self.scratch = buf;
        self.rewake();
    }

    /// Fires the source timers due at `at`: expires the attempts whose
    /// deadline it is, frees records with none left.
    fn fire_sources(&mut self, at: Timestamp, budget: &mut usize, buf: &mut Vec<Attempt>) {
        let at_ms = at.as_millis();
        while *budget > 0 {
            let Some(entry) = self.timers.pop_due(at_ms) else {
                break;
            };
            *budget -= 1;
            let idx = entry.idx;
            if !self.table.is_held(idx) {
                continue; // a spare entry of a freed slot
            }
            self.table.load(idx, buf);
            let src = addr_of(&self.table.key(idx));
            let age = (at_ms as u32).wrapping_sub(self.table.start_ms(idx));
            let before = buf.len();
            self.expire(src, age, buf);
            if buf.is_empty() {
                // Idle, or every attempt is over.
                self.table.free(idx);
                continue;
            }
            if buf.len() != before {
                self.table.store(idx, buf);
            }
            // Early (the record restarted or lost its nearest attempt
            // since): due again at its real deadline.
            let deadline = at_ms - u64::from(age) + self.min_timeout(buf);
            self.timers.push(deadline, idx);
        }
    }

    /// Rebuilds the timer heap with one entry per held record if spare
    /// entries pile up (they only arise when a reused slot needs an earlier
    /// entry than the one it has, with doors of different timeouts).
    fn compact_timers(&mut self) {
        if self.timers.len() <= 2 * self.table.slots() + 1024 {
            return;
        }
        let now_ms = self.now.as_millis();
        let mut buf = std::mem::take(&mut self.scratch);
        let mut entries = Vec::with_capacity(self.table.held());
        let held: Vec<u32> = self.table.held_records().collect();
        for idx in held {
            self.table.load(idx, &mut buf);
            if buf.is_empty() {
                self.table.free(idx);
                continue;
            }
            let age = (now_ms as u32).wrapping_sub(self.table.start_ms(idx));
            let deadline = now_ms - u64::from(age) + self.min_timeout(&buf);
            entries.push(TimerEntry::new(deadline, idx));
        }
        self.scratch = buf;
        self.timers.rebuild(entries);
        self.rewake();
    }

    /// The shortest `seq_timeout` among `attempts`' tracks, in milliseconds.
    fn min_timeout(&self, attempts: &[Attempt]) -> u64 {
        attempts
            .iter()
            .filter_map(|a| self.tracks.get(a.track as usize))
            .map(|t| u64::from(t.timeout_ms))
            .min()
            .unwrap_or(0)
    }
}

/// The order of the decisions of timers due at the same instant: expiries,
/// then closes, then block ends; each by source address, then door (the
/// attempts of one source at one door in track order).
fn timer_order(d: &Decision) -> (u8, Option<IpAddr>, DoorId) {
    let rank = match d {
        Decision::Expired { .. } => 0,
        Decision::Close { .. } => 1,
        _ => 2,
    };
    (rank, d.src(), d.door())
}

/// The longest `seq_timeout` among `tracks`, in milliseconds.
fn max_timeout(tracks: &[Track]) -> u32 {
    tracks.iter().map(|t| t.timeout_ms).max().unwrap_or(0)
}

/// The address the matcher reports for `src`: IPv4-mapped IPv6 addresses
/// are their IPv4 host (the same key, see `table::key_of`).
fn normalized(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(src, IpAddr::V4),
        v4 => v4,
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
