//! Open grants and cooldowns: a slab of grant states found by (source,
//! door), timed by the matcher's one timer structure (`timer`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use crate::decision::{Decision, DoorId, GrantId, Queue};
use crate::hasher::SourceHasher;
use crate::time::Timestamp;
use crate::timer::{Kind, Timers};

#[derive(Clone, Copy, Debug)]
struct GrantState {
    src: IpAddr,
    door: DoorId,
    id: GrantId,
    /// When the grant closes; `None` once closed (or for doors without a lifetime).
    close_at: Option<Timestamp>,
    /// Until when the source may not knock this door again.
    cooldown_until: Option<Timestamp>,
    /// Its place in the eviction order (see `Grants::order`).
    generation: u32,
}

impl GrantState {
    /// When its timer is due: the close or the cooldown's end, whichever
    /// comes first, in whole milliseconds rounded up.
    fn due_ms(&self) -> Option<u64> {
        let t = match (self.close_at, self.cooldown_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        t.map(|t| t.as_micros().div_ceil(1_000))
    }
}

/// The result of an open, for the matcher's statistics.
pub(crate) enum Opened {
    New,
    Extended,
    NewAfterEviction,
}

pub(crate) struct Grants {
    slots: Vec<Option<GrantState>>,
    free: Vec<u32>,
    map: HashMap<(IpAddr, DoorId), u32, SourceHasher>,
    /// The ids of the grants with a pending close.
    ids: HashSet<u64, SourceHasher>,
    /// Eviction order, least recently opened or extended first:
    /// `(slot, generation)`, stale when the slot's generation differs.
    order: VecDeque<(u32, u32)>,
    next_generation: u32,
    next_id: u64,
    max: usize,
}

impl Grants {
    pub(crate) fn new(max: usize, hasher: SourceHasher) -> Self {
        Grants {
            slots: Vec::new(),
            free: Vec::new(),
            map: HashMap::with_hasher(hasher),
            ids: HashSet::with_hasher(hasher),
            order: VecDeque::new(),
            next_generation: 0,
            next_id: 1,
            max: max.max(1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Slab slots, used or free.
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Grants with a pending close, for persistence and inspection: by
    /// closing time, then source, then door.
    pub(crate) fn open_grants(&self) -> Vec<(DoorId, IpAddr, GrantId, Timestamp)> {
        let mut v: Vec<_> = self
            .slots
            .iter()
            .flatten()
            .filter_map(|s| s.close_at.map(|c| (s.door, s.src, s.id, c)))
            .collect();
        v.sort_by_key(|&(door, src, _, c)| (c, src, door));
        v
    }

    /// Every used slot and when it is due (for a rebuild of the timers).
    pub(crate) fn due(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i as u32, s.as_ref()?.due_ms()?)))
    }

    pub(crate) fn in_cooldown(&self, src: IpAddr, door: DoorId, now: Timestamp) -> bool {
        !self.map.is_empty()
            && self
                .map
                .get(&(src, door))
                .and_then(|&i| self.slots[i as usize].as_ref())
                .and_then(|s| s.cooldown_until)
                .is_some_and(|c| c > now)
    }

    /// The id the next grant gets.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Raises the next id to at least `next`.
    pub(crate) fn reserve(&mut self, next: u64) {
        self.next_id = self.next_id.max(next);
    }

    /// A new grant id, announced with its `Open` decision.
    #[inline]
    fn announce_open(
        &mut self,
        door: DoorId,
        src: IpAddr,
        until: Option<Timestamp>,
        out: &mut Queue,
    ) -> GrantId {
        let grant = GrantId(self.next_id);
        self.next_id = self.next_id.saturating_add(1);
        out.push_back(Decision::Open {
            door,
            src,
            grant,
            until,
        });
        grant
    }

    /// Opens `door` for `src` when the door has neither a grant lifetime
    /// nor a cooldown: an `Open` without close, nothing to remember (a
    /// grant with a pending close at the same door, restored from outside,
    /// stays).
    #[inline]
    pub(crate) fn open_unremembered(&mut self, door: DoorId, src: IpAddr, out: &mut Queue) {
        self.announce_open(door, src, None, out);
    }

    /// Moves slot `i` to the end of the eviction order.
    fn touch(&mut self, i: u32) {
        let g = self.next_generation;
        self.next_generation = g.wrapping_add(1);
        if let Some(s) = self.slots[i as usize].as_mut() {
            s.generation = g;
        }
        self.order.push_back((i, g));
        if self.order.len() > 2 * self.map.len() + 64 {
            let slots = &self.slots;
            self.order.retain(|&(i, g)| {
                slots[i as usize]
                    .as_ref()
                    .is_some_and(|s| s.generation == g)
            });
        }
    }

    /// Applies `change` to slot `i` and arms a timer entry if it is now due
    /// sooner than before (a later deadline keeps the entry it has: it pops
    /// early and re-arms, see `timer`).
    fn update(&mut self, i: u32, timers: &mut Timers, change: impl FnOnce(&mut GrantState)) {
        let Some(s) = self.slots[i as usize].as_mut() else {
            return;
        };
        let before = s.due_ms();
        change(s);
        if let Some(due) = s.due_ms() {
            if before.is_none_or(|b| due < b) {
                timers.push(Kind::Grant, due, i);
            }
        }
    }

    /// A new slot for `state` (evicting the oldest grant if full). Returns
    /// it and whether a grant was evicted.
    fn insert(&mut self, state: GrantState, out: &mut Queue, timers: &mut Timers) -> (u32, bool) {
        let evicted = self.map.len() >= self.max;
        if evicted {
            self.evict_oldest(out);
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.map.insert((state.src, state.door), i);
        if state.close_at.is_some() {
            self.ids.insert(state.id.0);
        }
        if let Some(due) = state.due_ms() {
            timers.push(Kind::Grant, due, i);
        }
        self.slots[i as usize] = Some(state);
        self.touch(i);
        (i, evicted)
    }

    fn remove(&mut self, i: u32) -> Option<GrantState> {
        let s = self.slots.get_mut(i as usize)?.take()?;
        self.map.remove(&(s.src, s.door));
        if s.close_at.is_some() {
            self.ids.remove(&s.id.0);
        }
        self.free.push(i);
        Some(s)
    }

    /// Closes the least recently opened or extended grant (or forgets a
    /// cooldown) to make room.
    fn evict_oldest(&mut self, out: &mut Queue) {
        while let Some((i, g)) = self.order.pop_front() {
            let live = self.slots[i as usize]
                .as_ref()
                .is_some_and(|s| s.generation == g);
            if !live {
                continue;
            }
            if let Some(s) = self.remove(i) {
                if s.close_at.is_some() {
                    out.push_back(Decision::Close {
                        door: s.door,
                        src: s.src,
                        grant: s.id,
                    });
                }
            }
            return;
        }
    }

    /// Opens (or extends) the grant of `src` at `door`.
    ///
    /// With a lifetime: a grant with a pending close is extended (same id),
    /// otherwise a new grant replaces whatever was remembered. Without one:
    /// an `Open` without close; a pending close at the same door stays, and
    /// the cooldown (if any) starts.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        &mut self,
        door: DoorId,
        src: IpAddr,
        now: Timestamp,
        lifetime: Option<core::time::Duration>,
        cooldown: core::time::Duration,
        out: &mut Queue,
        timers: &mut Timers,
    ) -> Opened {
        let existing = self.map.get(&(src, door)).copied();
        let cooldown_until = (!cooldown.is_zero()).then(|| now + cooldown);
        let Some(until) = lifetime.map(|l| now + l) else {
            let id = self.announce_open(door, src, None, out);
            let Some(c) = cooldown_until else {
                return Opened::New;
            };
            if let Some(i) = existing {
                self.update(i, timers, |s| s.cooldown_until = Some(c));
                self.touch(i);
                return Opened::New;
            }
            let state = GrantState {
                src,
                door,
                id,
                close_at: None,
                cooldown_until: Some(c),
                generation: 0,
            };
            return match self.insert(state, out, timers) {
                (_, true) => Opened::NewAfterEviction,
                (_, false) => Opened::New,
            };
        };
        if let Some(i) = existing {
            let state = self.slots[i as usize].as_ref();
            if let Some(grant) = state.filter(|s| s.close_at.is_some()).map(|s| s.id) {
                self.update(i, timers, |s| {
                    s.close_at = Some(until);
                    s.cooldown_until = cooldown_until.or(s.cooldown_until);
                });
                self.touch(i);
                out.push_back(Decision::Extended {
                    door,
                    src,
                    grant,
                    until,
                });
                return Opened::Extended;
            }
            // A cooldown only: the new grant takes its slot.
            let id = self.announce_open(door, src, Some(until), out);
            self.ids.insert(id.0);
            self.update(i, timers, |s| {
                s.id = id;
                s.close_at = Some(until);
                s.cooldown_until = cooldown_until;
            });
            self.touch(i);
            return Opened::New;
        }
        let id = self.announce_open(door, src, Some(until), out);
        let state = GrantState {
            src,
            door,
            id,
            close_at: Some(until),
            cooldown_until,
            generation: 0,
        };
        match self.insert(state, out, timers) {
            (_, true) => Opened::NewAfterEviction,
            (_, false) => Opened::New,
        }
    }

    /// The timer of slot `i` popped at `at_ms`: closes the grant and ends
    /// the cooldown if due. Returns whether it closed a grant, and when the
    /// slot is due next (`None`: it is gone, or was already).
    pub(crate) fn fire(&mut self, i: u32, at_ms: u64, out: &mut Queue) -> (bool, Option<u64>) {
        let at = Timestamp::from_millis(at_ms);
        let Some(s) = self.slots.get_mut(i as usize).and_then(Option::as_mut) else {
            return (false, None); // a spare entry of a freed slot
        };
        let mut closed = false;
        if s.close_at.is_some_and(|c| c <= at) {
            s.close_at = None;
            closed = true;
            self.ids.remove(&s.id.0);
            out.push_back(Decision::Close {
                door: s.door,
                src: s.src,
                grant: s.id,
            });
        }
        if s.cooldown_until.is_some_and(|c| c <= at) {
            s.cooldown_until = None;
        }
        let next = s.due_ms();
        if next.is_none() {
            self.remove(i);
        }
        (closed, next)
    }

    /// Re-inserts a grant known from outside (state restored after a
    /// restart) with its own id: refused if `src` has a grant with a
    /// pending close at `door`, or `id` is taken by one. Returns the grant
    /// and whether another was evicted to make room.
    pub(crate) fn restore(
        &mut self,
        door: DoorId,
        src: IpAddr,
        until: Timestamp,
        id: u64,
        out: &mut Queue,
        timers: &mut Timers,
    ) -> Option<(GrantId, bool)> {
        let existing = self.map.get(&(src, door)).copied();
        let open = existing
            .and_then(|i| self.slots[i as usize].as_ref())
            .is_some_and(|s| s.close_at.is_some());
        if self.ids.contains(&id) || open {
            return None;
        }
        let grant = GrantId(id);
        self.reserve(id.saturating_add(1));
        if let Some(i) = existing {
            self.ids.insert(id);
            self.update(i, timers, |s| {
                s.id = grant;
                s.close_at = Some(until);
            });
            self.touch(i);
            return Some((grant, false));
        }
        let state = GrantState {
            src,
            door,
            id: grant,
            close_at: Some(until),
            cooldown_until: None,
            generation: 0,
        };
        let (_, evicted) = self.insert(state, out, timers);
        Some((grant, evicted))
    }
}
