//! The matcher: the whole per-source state machine.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use crate::blacklist::{Blacklist, Suspects};
use crate::decision::{Decision, DoorId, GrantId, Queue};
use crate::door::{Door, Listen, Sequences, Step, USED_WINDOWS, WINDOW_SLOTS};
use crate::error::DoorError;
use crate::event::{Event, Proto};
use crate::grant::{Grants, Opened};
use crate::hasher::SourceHasher;
use crate::table::{addr_of, key_of, Attempt, Single, SourceTable};
use crate::time::Timestamp;
use crate::timer::{Kind, TimerEntry, Timers};

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
    /// full, the one opened or extended longest ago is closed early (with
    /// one grant lifetime for every door, the one due soonest).
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
}

impl Track {
    /// Whether `event` is the next step of attempt `a` (at this track).
    #[inline]
    fn hits(&self, a: Attempt, event: &Event) -> bool {
        self.steps
            .get(usize::from(a.step))
            .is_some_and(|s| s.matches(event))
    }
}

#[derive(Clone, Debug)]
struct DoorSlot {
    door: Door,
    /// Retired by a reload (kept so that pending closes can name it).
    active: bool,
    /// A windowed door's used windows, newest last (at most `USED_WINDOWS`).
    used: VecDeque<u64>,
}

impl DoorSlot {
    fn new(door: Door) -> Self {
        DoorSlot {
            door,
            active: true,
            used: VecDeque::new(),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct PortEntry {
    /// Tracks whose first step is this port, in track order.
    first: Vec<u16>,
    /// Doors with this port anywhere in a live track.
    doors: Vec<DoorId>,
}

impl PortEntry {
    /// Whether any door with this port listens to `event`.
    #[inline]
    fn accepts(&self, doors: &[DoorSlot], event: &Event) -> bool {
        match self.doors[..] {
            [d] => doors[d.0 as usize].door.accepts(event),
            ref ds => ds.iter().any(|d| doors[d.0 as usize].door.accepts(event)),
        }
    }
}

/// What one knock did to a source's attempts.
#[derive(Default)]
struct Knocked {
    /// The attempts left began with this knock (their start is now).
    fresh: bool,
    /// A door opened, ending an attempt: the track of the last open,
    /// at step 0 (where an idle record parks, see `SourceTable::park`).
    opened: Option<Attempt>,
    /// The lowest door whose attempt the knock invalidated (a strike).
    invalidated: Option<DoorId>,
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
    /// Every timer: attempts, grants and cooldowns, blacklist windows and blocks.
    timers: Timers,
    grants: Grants,
    decisions: Queue,
    stats: Stats,
    now: Timestamp,
    limits: Limits,
    scratch: Vec<Attempt>,
    /// The tracks a knock completes (reused buffer).
    opens: Vec<u16>,
    listen_generation: u64,
    /// Active strict doors.
    strict: Vec<DoorId>,
    suspects: Suspects,
    /// The longest `seq_timeout` any track has had, in milliseconds: a
    /// held record's timer entry is due by its start plus this.
    tmax_ms: u32,
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
            timers: Timers::default(),
            grants: Grants::new(limits.max_grants, hasher),
            decisions: Queue::default(),
            stats: Stats::default(),
            now: Timestamp::ZERO,
            limits,
            scratch: Vec::new(),
            opens: Vec::new(),
            listen_generation: 0,
            strict: Vec::new(),
            suspects: Suspects::new(limits.max_suspects, hasher),
            tmax_ms: 0,
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

    /// Sizes the index of tracked sources for [`Limits::max_sources`] now,
    /// so that a flood filling the table never stops to rehash it. Costs
    /// about 1 byte per possible source at once (1 MiB for a million; the
    /// rest of the index is only touched as it fills).
    pub fn reserve_sources(&mut self) {
        self.table.reserve(self.limits.max_sources());
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

    /// A hint that knocks from `srcs` are about to be handled, in that
    /// order: starts loading the lines of the source index their lookups
    /// touch, without waiting for them. A caller holding several knocks (a
    /// batch read from a capture ring) hints them a few knocks ahead of
    /// [`handle_event`](Self::handle_event), several at a time, so that
    /// their cache misses (and TLB misses) overlap instead of coming one
    /// after another: under a flood of new sources they are most of a
    /// knock's cost. It changes nothing that can be observed; it costs a
    /// hash of each address, which the next `handle_event` of that address
    /// then does not work out again.
    #[inline]
    pub fn prefetch(&mut self, srcs: impl IntoIterator<Item = IpAddr>) {
        self.table.prefetch(srcs.into_iter().map(key_of));
    }

    /// Handles one knock seen at `now`.
    pub fn handle_event(&mut self, now: Timestamp, event: &Event) {
        let now = self.advance_clock(now);
        let now_ms = now.as_millis();
        if self.timers.peek_ms().is_some_and(|t| t <= now_ms) {
            self.run_timers(now);
        }
        self.stats.events += 1;
        let pk = port_key(event.proto, event.dst_port);
        let port = self.ports.find(pk);
        let entry = port.and_then(|i| self.ports.entries.get(i));
        // A knock some door listens to, or a strict door's touch (another
        // port): anything else is ignored.
        let relevant = entry.is_some_and(|e| e.accepts(&self.doors, event));
        let touched = if self.strict.is_empty() {
            None
        } else {
            self.strict.iter().copied().find(|d| {
                self.doors[d.0 as usize].door.strict_touch(event)
                    && !entry.is_some_and(|e| e.doors.contains(d))
            })
        };
        if !relevant && touched.is_none() {
            self.stats.ignored += 1;
            return;
        }
        let key = key_of(event.src);
        if self.suspects.is_blocked(&key, now_ms) {
            self.stats.blocked_events += 1;
            return;
        }
        if !relevant {
            self.stats.ignored += 1;
        }
        let src = normalized(event.src);
        let hash = self.table.hash_hinted(&key);
        let found = self.table.find(hash, &key);
        match (found, port.filter(|_| relevant), touched) {
            (Some(idx), Some(port), None)
                if self.knock_in_place(idx, src, now, now_ms, event, port) =>
            {
                return; // nothing invalidated: no strike
            }
            (None, Some(port), None) if self.first_knock(key, hash, src, now, event, port) => {
                return; // no attempt to invalidate: no strike
            }
            _ => {}
        }
        self.knock_stored(found, key, hash, src, now, event, port, relevant, touched);
    }

    /// [`handle_event`](Matcher::handle_event) past the lookup, for every
    /// knock [`knock_in_place`](Matcher::knock_in_place) does not take:
    /// the source's attempts are copied out, go through
    /// [`knock`](Matcher::knock), and are stored back; then the blacklist.
    /// Kept out of line so that the usual knock's path stays small.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn knock_stored(
        &mut self,
        found: Option<u32>,
        key: crate::table::Key,
        hash: u64,
        src: IpAddr,
        now: Timestamp,
        event: &Event,
        port: Option<usize>,
        relevant: bool,
        touched: Option<DoorId>,
    ) {
        let now_ms = now.as_millis();
        let pk = port_key(event.proto, event.dst_port);
        let mut buf = std::mem::take(&mut self.scratch);
        let age = match found {
            Some(idx) => {
                self.table.load(idx, &mut buf);
                (now_ms as u32).wrapping_sub(self.table.start_ms(idx))
            }
            None => {
                buf.clear();
                0
            }
        };
        let firsts = if relevant { port } else { None };
        let knocked = self.knock(src, now, event, firsts, age, &mut buf);
        match found {
            Some(idx) if buf.is_empty() && knocked.opened.is_some() => {
                if let Some(parked) = knocked.opened {
                    self.table.park(idx, parked);
                }
            }
            Some(idx) if knocked.fresh => self.restart(idx, now_ms, &buf),
            Some(idx) => self.table.store(idx, &buf),
            None if buf.is_empty() => {}
            None => self.place(key, hash, now_ms, &buf),
        }
        self.scratch = buf;
        if self.suspects.rule().is_none() {
            return;
        }
        let strike = match (knocked.invalidated, touched) {
            (Some(door), _) => Some(door),
            (None, Some(door)) if self.suspects.touch_counts(&key, pk, now_ms) => Some(door),
            _ => None,
        };
        if let Some(door) = strike {
            self.stats.strikes += 1;
            let blocked =
                self.suspects
                    .strike(key, door, pk, now_ms, &mut self.decisions, &mut self.timers);
            self.compact_timers();
            if blocked.is_some() {
                self.stats.blocked += 1;
                if let Some(idx) = self.table.find(hash, &key) {
                    self.table.store(idx, &[]);
                }
            }
        }
    }

    /// Opens (or extends) `src`'s grant at `door`, a door of
    /// [`Sequences::Authorized`], for `lifetime` (`None`: the door's
    /// [`grant_lifetime`](Door::grant_lifetime)), as completing a sequence
    /// would: the same [`Decision::Open`] or [`Decision::Extended`], the
    /// same [`Decision::Close`] when it ends, the door's cooldown. The
    /// caller has authorized the request (a verified SPA packet); the
    /// matcher neither checks the door's `from` nor the blacklist. Returns
    /// false (and does nothing) for a door that is unknown, retired or not
    /// `Authorized`.
    pub fn handle_authorized(
        &mut self,
        now: Timestamp,
        door: DoorId,
        src: IpAddr,
        lifetime: Option<core::time::Duration>,
    ) -> bool {
        let now = self.advance_clock(now);
        if self.timers.peek_ms().is_some_and(|t| t <= now.as_millis()) {
            self.run_timers(now);
        }
        let Some(slot) = self.doors.get(door.0 as usize) else {
            return false;
        };
        if !slot.active || slot.door.sequences != Sequences::Authorized {
            return false;
        }
        let lifetime = lifetime
            .filter(|l| !l.is_zero())
            .or(slot.door.grant_lifetime);
        self.open_door(door, normalized(src), now, lifetime);
        true
    }

    /// Sets (or with `None` removes) the scanner blacklist. Removing it
    /// lifts every block ([`Decision::Unblocked`]); changing it keeps the
    /// blocks and strikes so far.
    pub fn set_blacklist(&mut self, rule: Option<Blacklist>) {
        self.suspects.set_rule(rule, &mut self.decisions);
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
    /// full, the grant opened or extended longest ago is closed early (a
    /// `Close` to drain).
    pub fn restore_grant(
        &mut self,
        door: DoorId,
        src: IpAddr,
        until: Timestamp,
        id: u64,
    ) -> Option<GrantId> {
        self.door(door)?;
        let (grant, evicted) = self.grants.restore(
            door,
            normalized(src),
            until,
            id,
            &mut self.decisions,
            &mut self.timers,
        )?;
        if evicted {
            self.stats.grants_evicted += 1;
        }
        self.compact_timers();
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
        if !self.suspects.restore_block(
            key,
            door,
            until.as_millis(),
            now_ms,
            &mut self.decisions,
            &mut self.timers,
        ) {
            return false;
        }
        let hash = self.table.hash(&key);
        if let Some(idx) = self.table.find(hash, &key) {
            self.table.store(idx, &[]);
        }
        self.compact_timers();
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
        self.timers.peek_ms().map(Timestamp::from_millis)
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
                    });
                }
                Sequences::Authorized => {}
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
        self.tmax_ms = self.tmax_ms.max(max_timeout(&self.tracks));
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
    #[inline]
    fn expire(&mut self, src: IpAddr, age_ms: u32, attempts: &mut Vec<Attempt>) {
        let mut kept = 0;
        for i in 0..attempts.len() {
            let a = attempts[i];
            let Some(t) = self
                .tracks
                .get(a.track as usize)
                .filter(|t| t.live && t.epoch == a.epoch)
            else {
                continue;
            };
            if age_ms >= t.timeout_ms {
                self.stats.expired += 1;
                self.decisions.push_back(Decision::Expired {
                    door: t.door,
                    src,
                    step: a.step,
                });
                continue;
            }
            attempts[kept] = a;
            kept += 1;
        }
        attempts.truncate(kept);
    }

    /// Whether `event` is the next step of attempt `a` (at a door that
    /// takes it: the caller checks `Door::accepts`).
    #[inline]
    fn hits(&self, a: Attempt, event: &Event) -> bool {
        self.tracks[a.track as usize].hits(a, event)
    }

    /// Whether attempt `a` has done every step of its track.
    #[inline]
    fn finished(&self, a: Attempt) -> bool {
        usize::from(a.step) == self.tracks[a.track as usize].steps.len()
    }

    /// Attempt `a` one step on (`event` hit it): counts it and emits `Stage`.
    #[inline]
    fn step_on(&mut self, a: Attempt, src: IpAddr) -> Attempt {
        let a = Attempt {
            step: a.step + 1,
            ..a
        };
        self.stats.stages += 1;
        self.decisions.push_back(Decision::Stage {
            door: self.tracks[a.track as usize].door,
            src,
            step: a.step,
        });
        a
    }

    /// A first knock at track `ti`: if the track is live and its door
    /// takes `event` (flags, target, source, no cooldown for `src`), the
    /// attempt at step 1 (counted, its `Stage` emitted).
    #[inline]
    fn begin(&mut self, ti: u16, src: IpAddr, now: Timestamp, event: &Event) -> Option<Attempt> {
        let t = self.tracks.get(ti as usize)?;
        let door = &self.doors[t.door.0 as usize].door;
        if !t.live
            || !door.accepts(event)
            || (!door.cooldown.is_zero() && self.grants.in_cooldown(src, t.door, now))
        {
            return None;
        }
        self.stats.attempts_started += 1;
        let a = Attempt {
            track: ti,
            step: 0,
            epoch: t.epoch,
        };
        Some(self.step_on(a, src))
    }

    /// [`knock`](Matcher::knock) without copying attempts out and back, for
    /// the usual knocks: record `idx` has one running attempt and `event`
    /// is its next step, or it is parked on a track (see
    /// `SourceTable::park`) that `event` begins, as `knock` would: the
    /// only track that starts on the knock's `port`, at a door without a
    /// cooldown. The same predicates decide, so the outcome is `knock`'s;
    /// in every other case it changes nothing and returns false.
    ///
    /// A knocker who starts again and one who carries on take the same
    /// path: whether the attempt is `fresh` (from step 0) changes values,
    /// not branches, since it is as random as the knockers.
    #[inline]
    fn knock_in_place(
        &mut self,
        idx: u32,
        src: IpAddr,
        now: Timestamp,
        now_ms: u64,
        event: &Event,
        port: usize,
    ) -> bool {
        let Single::One(a) = self.table.single(idx) else {
            return false;
        };
        let Some(t) = self.tracks.get(a.track as usize) else {
            return false;
        };
        let start_ms = self.table.start_ms(idx);
        let age = (now_ms as u32).wrapping_sub(start_ms);
        let fresh = a.step == 0;
        let door = &self.doors[t.door.0 as usize].door;
        let Some(entry) = self.ports.entries.get(port) else {
            return false;
        };
        let first_only = entry.first == [a.track];
        // The door of a track this knock hits has the knock's port: if it
        // is the port's only door, `handle_event` has just seen it accept
        // the knock (`relevant`).
        let accepted = entry.doors == [t.door] || door.accepts(event);
        // `|` and `&`, not `||` and `&&`: one predictable branch, not one
        // per condition on `fresh`.
        let dead = !t.live
            | (t.epoch != a.epoch)
            | ((age >= t.timeout_ms) & !fresh)
            | (fresh & !(first_only & door.cooldown.is_zero()));
        if dead || !t.hits(a, event) || !accepted {
            return false;
        }
        let timeout = u64::from(t.timeout_ms);
        self.stats.attempts_started += u64::from(fresh);
        let a = self.step_on(a, src);
        if self.finished(a) {
            self.open(a.track, src, now);
            let epoch = self.tracks[a.track as usize].epoch;
            self.table.park(
                idx,
                Attempt {
                    step: 0,
                    epoch,
                    ..a
                },
            );
        } else {
            // A mask, not `if`, or the compiler branches on `fresh`.
            let mask = u32::from(fresh).wrapping_neg();
            let new_start = (now_ms as u32 & mask) | (start_ms & !mask);
            self.table.set_single(idx, a, fresh, new_start);
            // A fresh attempt's deadline is new; the record's timer entry
            // is due by its old start + tmax (see `arm_reused`).
            let old_due = now_ms - u64::from(age) + u64::from(self.tmax_ms);
            if fresh & (old_due > now_ms + timeout) {
                self.arm(idx, now_ms + timeout);
            }
        }
        true
    }

    /// [`knock`](Matcher::knock) for a source without a record (a flood's
    /// every knock), without copying attempts out and back: when one
    /// track alone starts on the knock's `port`, it begins it as `knock`
    /// would (the same `begin`), opens at once a one-step sequence and
    /// otherwise gives the source a record. Returns false (and does
    /// nothing) when more tracks start there.
    #[inline]
    fn first_knock(
        &mut self,
        key: crate::table::Key,
        hash: u64,
        src: IpAddr,
        now: Timestamp,
        event: &Event,
        port: usize,
    ) -> bool {
        let ti = match self.ports.entries.get(port).map(|e| &e.first[..]) {
            Some(&[ti]) => ti,
            _ => return false,
        };
        if let Some(a) = self.begin(ti, src, now, event) {
            if self.finished(a) {
                self.open(ti, src, now);
            } else {
                self.place(key, hash, now.as_millis(), &[a]);
            }
        }
        true
    }

    /// The matcher's transition: one knock (`event`, at `now`) against
    /// the attempts of source `src` (`attempts`, in track order, started
    /// `age_ms` ago; empty for a source without any), on every path.
    ///
    /// Attempts past their `seq_timeout` expire first (their timer may not
    /// have fired yet). If some are left, the knock advances each whose
    /// next step it hits, tolerates an allowed repeat, invalidates the
    /// others at doors that listen to it (and at strict doors it touches)
    /// and leaves the rest; it begins nothing. If none is left, it begins
    /// every live track of `first_port` (the knock's port entry, `None`
    /// when no door listens to the knock) whose door takes it. `Stage` and
    /// `Invalidated` come in track order, then the opens.
    fn knock(
        &mut self,
        src: IpAddr,
        now: Timestamp,
        event: &Event,
        first_port: Option<usize>,
        age_ms: u32,
        attempts: &mut Vec<Attempt>,
    ) -> Knocked {
        self.expire(src, age_ms, attempts);
        let mut knocked = Knocked::default();
        let mut opens = std::mem::take(&mut self.opens);
        opens.clear();
        if attempts.is_empty() {
            let Some(p) = first_port.filter(|&p| p < self.ports.entries.len()) else {
                self.opens = opens;
                return knocked;
            };
            for i in 0..self.ports.entries[p].first.len() {
                let ti = self.ports.entries[p].first[i];
                if let Some(a) = self.begin(ti, src, now, event) {
                    if self.finished(a) {
                        opens.push(ti);
                    } else {
                        attempts.push(a);
                    }
                }
            }
            knocked.fresh = true;
        } else {
            let relevant = first_port.is_some();
            let mut kept = 0;
            for i in 0..attempts.len() {
                let a = attempts[i];
                let t = &self.tracks[a.track as usize];
                let door = &self.doors[t.door.0 as usize].door;
                let listens = relevant && door.accepts(event);
                let stays = if listens && self.hits(a, event) {
                    let a = self.step_on(a, src);
                    if self.finished(a) {
                        opens.push(a.track);
                        false
                    } else {
                        attempts[kept] = a;
                        kept += 1;
                        continue;
                    }
                } else if listens
                    && door.allow_repeat
                    && t.steps[usize::from(a.step) - 1].matches(event)
                {
                    true
                } else if listens || door.strict_touch(event) {
                    self.stats.invalidated += 1;
                    self.stats.strict_invalidations += u64::from(!listens);
                    let d = t.door;
                    knocked.invalidated = Some(knocked.invalidated.map_or(d, |o| o.min(d)));
                    self.decisions.push_back(Decision::Invalidated {
                        door: d,
                        src,
                        step: a.step,
                    });
                    false
                } else {
                    true // not a knock this door listens to
                };
                if stays {
                    attempts[kept] = a;
                    kept += 1;
                }
            }
            attempts.truncate(kept);
        }
        for &ti in &opens {
            self.open(ti, src, now);
        }
        if let Some(&ti) = opens.last() {
            knocked.opened = Some(Attempt {
                track: ti,
                step: 0,
                epoch: self.tracks[ti as usize].epoch,
            });
            // An open may have used a one-time sequence or a window that
            // other attempts were on.
            attempts.retain(|a| self.attempt_alive(a));
        }
        self.opens = opens;
        knocked
    }

    /// Gives record `idx` the `attempts` begun at `now_ms` (none: it stays
    /// idle), with a timer entry due by their deadline.
    fn restart(&mut self, idx: u32, now_ms: u64, attempts: &[Attempt]) {
        if attempts.is_empty() {
            self.table.store(idx, attempts);
            return;
        }
        let old_start = self.table.start_ms(idx);
        self.table.restart(idx, now_ms as u32, attempts);
        self.arm_reused(idx, old_start, now_ms, attempts);
    }

    /// Gives a source without a record one for its new `attempts`: a free
    /// slot, or the eviction candidate's when the table is full.
    fn place(&mut self, key: crate::table::Key, hash: u64, now_ms: u64, attempts: &[Attempt]) {
        let start = now_ms as u32;
        let victim = if self.table.held() >= self.limits.max_sources() {
            self.table.eviction_candidate()
        } else {
            None
        };
        let Some(idx) = victim else {
            let idx = self.table.insert(hash, key, start, attempts);
            self.arm(idx, now_ms + self.min_timeout(attempts));
            return;
        };
        let old_start = self.table.start_ms(idx);
        if self.table.evict_into(idx, hash, key, start, attempts) {
            self.stats.evicted += 1;
        }
        self.arm_reused(idx, old_start, now_ms, attempts);
    }

    /// Record `idx`, which had started at `old_start` (ms, wrapping), has
    /// new `attempts` started at `now_ms`. Its timer entry is due by
    /// `old_start + tmax_ms` (see `timer`): a new entry is needed only if
    /// the new deadline is sooner.
    fn arm_reused(&mut self, idx: u32, old_start: u32, now_ms: u64, attempts: &[Attempt]) {
        let deadline = now_ms + self.min_timeout(attempts);
        let age = u64::from((now_ms as u32).wrapping_sub(old_start));
        if now_ms.saturating_sub(age) + u64::from(self.tmax_ms) > deadline {
            self.arm(idx, deadline);
        }
    }

    /// Adds a timer entry for record `idx` at `deadline_ms`.
    fn arm(&mut self, idx: u32, deadline_ms: u64) {
        self.timers.push(Kind::Source, deadline_ms, idx);
        self.compact_timers();
    }

    /// Opens (or extends) `src`'s grant at `door` for `lifetime` and
    /// counts it: what completing a sequence does, and what
    /// [`handle_authorized`](Matcher::handle_authorized) does.
    fn open_door(
        &mut self,
        door_id: DoorId,
        src: IpAddr,
        now: Timestamp,
        lifetime: Option<core::time::Duration>,
    ) {
        let cooldown = self.doors[door_id.0 as usize].door.cooldown;
        let opened = if lifetime.is_none() && cooldown.is_zero() {
            // knockd's door without a stop command: nothing to remember.
            self.grants
                .open_unremembered(door_id, src, &mut self.decisions);
            Opened::New
        } else {
            let opened = self.grants.open(
                door_id,
                src,
                now,
                lifetime,
                cooldown,
                &mut self.decisions,
                &mut self.timers,
            );
            self.compact_timers();
            opened
        };
        match opened {
            Opened::New => self.stats.opens += 1,
            Opened::Extended => self.stats.extended += 1,
            Opened::NewAfterEviction => {
                self.stats.opens += 1;
                self.stats.grants_evicted += 1;
            }
        }
    }

    fn open(&mut self, track: u16, src: IpAddr, now: Timestamp) {
        let door_id = self.tracks[track as usize].door;
        let lifetime = self.doors[door_id.0 as usize].door.grant_lifetime;
        self.open_door(door_id, src, now, lifetime);
        let slot = &mut self.doors[door_id.0 as usize];
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

    /// Fires the timers due at `now`, at most `max_timers_per_call`, in
    /// deadline order; the decisions of those due at the same millisecond
    /// in [`timer_order`].
    fn run_timers(&mut self, now: Timestamp) {
        let now_ms = now.as_millis();
        let mut budget = self.limits.max_timers_per_call;
        let mut buf = std::mem::take(&mut self.scratch);
        while budget > 0 {
            let Some(at_ms) = self.timers.peek_ms().filter(|&t| t <= now_ms) else {
                break;
            };
            let mark = self.decisions.mark();
            while budget > 0 {
                let Some(entry) = self.timers.pop_due(at_ms) else {
                    break;
                };
                budget -= 1;
                let (kind, idx) = (entry.kind(), entry.idx);
                let next = match kind {
                    Kind::Source => self.fire_source(idx, at_ms, &mut buf),
                    Kind::Grant => {
                        let (closed, next) = self.grants.fire(idx, at_ms, &mut self.decisions);
                        self.stats.closes += u64::from(closed);
                        next
                    }
                    Kind::Suspect => self.suspects.fire(idx, at_ms, &mut self.decisions),
                };
                if let Some(due) = next {
                    self.timers.push(kind, due, idx);
                }
            }
            self.decisions.sort_from(mark, timer_order);
        }
        self.scratch = buf;
    }

    /// The timer of source record `idx` popped at `at_ms`: expires the
    /// attempts whose deadline it is, frees the record if none is left.
    /// Returns when it is due next.
    fn fire_source(&mut self, idx: u32, at_ms: u64, buf: &mut Vec<Attempt>) -> Option<u64> {
        if !self.table.is_held(idx) {
            return None; // a spare entry of a freed slot
        }
        self.table.load(idx, buf);
        let src = addr_of(&self.table.key(idx));
        let age = (at_ms as u32).wrapping_sub(self.table.start_ms(idx));
        let before = buf.len();
        self.expire(src, age, buf);
        if buf.is_empty() {
            // Idle, or every attempt is over.
            self.table.free(idx);
            return None;
        }
        if buf.len() != before {
            self.table.store(idx, buf);
        }
        // Early (the record restarted or lost its nearest attempt since):
        // due again at its real deadline.
        Some(at_ms - u64::from(age) + self.min_timeout(buf))
    }

    /// Rebuilds the timers with one entry per live slot if spare entries
    /// pile up (see `timer`). Inline: every event asks, and nearly every
    /// answer is no.
    #[inline]
    fn compact_timers(&mut self) {
        let slots = self.table.slots() + self.grants.slots() + self.suspects.slots();
        if self.timers.len() > 2 * slots + 1024 {
            self.rebuild_timers();
        }
    }

    /// See [`compact_timers`](Self::compact_timers).
    #[cold]
    fn rebuild_timers(&mut self) {
        let now_ms = self.now.as_millis();
        let mut buf = std::mem::take(&mut self.scratch);
        let mut entries = Vec::with_capacity(self.table.held() + self.grants.len());
        let held: Vec<u32> = self.table.held_records().collect();
        for idx in held {
            self.table.load(idx, &mut buf);
            if buf.is_empty() {
                self.table.free(idx);
                continue;
            }
            let age = (now_ms as u32).wrapping_sub(self.table.start_ms(idx));
            let deadline = now_ms - u64::from(age) + self.min_timeout(&buf);
            entries.push(TimerEntry::new(Kind::Source, deadline, idx));
        }
        self.scratch = buf;
        entries.extend(
            self.grants
                .due()
                .map(|(i, due)| TimerEntry::new(Kind::Grant, due, i)),
        );
        entries.extend(
            self.suspects
                .due()
                .map(|(i, due)| TimerEntry::new(Kind::Suspect, due, i)),
        );
        self.timers.rebuild(entries);
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
