//! Open grants and cooldowns, with their own timer heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::IpAddr;

use crate::decision::{Decision, DoorId, GrantId, Queue};
use crate::hasher::SourceHasher;
use crate::time::Timestamp;

#[derive(Clone, Copy, Debug)]
struct GrantState {
    id: GrantId,
    /// When the grant closes; `None` once closed (or for doors without a lifetime).
    close_at: Option<Timestamp>,
    /// Until when the source may not knock this door again.
    cooldown_until: Option<Timestamp>,
}

impl GrantState {
    fn next_deadline(&self) -> Option<Timestamp> {
        match (self.close_at, self.cooldown_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The result of an open, for the matcher's statistics.
pub(crate) enum Opened {
    New,
    Extended,
    NewAfterEviction,
}

pub(crate) struct Grants {
    map: HashMap<(IpAddr, DoorId), GrantState, SourceHasher>,
    /// The ids of the grants with a pending close.
    ids: HashSet<u64, SourceHasher>,
    heap: BinaryHeap<Reverse<(Timestamp, IpAddr, DoorId)>>,
    next_id: u64,
    max: usize,
}

impl Grants {
    pub(crate) fn new(max: usize, hasher: SourceHasher) -> Self {
        Grants {
            map: HashMap::with_hasher(hasher),
            ids: HashSet::with_hasher(hasher),
            heap: BinaryHeap::new(),
            next_id: 1,
            max: max.max(1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Grants with a pending close, for persistence and inspection: by
    /// closing time, then source, then door.
    pub(crate) fn open_grants(&self) -> Vec<(DoorId, IpAddr, GrantId, Timestamp)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .filter_map(|(&(src, door), s)| s.close_at.map(|c| (door, src, s.id, c)))
            .collect();
        v.sort_by_key(|&(door, src, _, c)| (c, src, door));
        v
    }

    pub(crate) fn in_cooldown(&self, src: IpAddr, door: DoorId, now: Timestamp) -> bool {
        !self.map.is_empty()
            && self
                .map
                .get(&(src, door))
                .and_then(|s| s.cooldown_until)
                .is_some_and(|c| c > now)
    }

    fn schedule(&mut self, key: (IpAddr, DoorId)) {
        if let Some(t) = self.map.get(&key).and_then(GrantState::next_deadline) {
            self.heap.push(Reverse((t, key.0, key.1)));
        }
        if self.heap.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            let entries: Vec<_> = map
                .iter()
                .filter_map(|(&(s, d), st)| st.next_deadline().map(|t| Reverse((t, s, d))))
                .collect();
            self.heap = BinaryHeap::from(entries);
        }
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

    /// Opens (or extends) the grant of `src` at `door`.
    ///
    /// With a lifetime: a grant with a pending close is extended (same id),
    /// otherwise a new grant replaces whatever was remembered. Without one:
    /// an `Open` without close; a pending close at the same door stays, and
    /// the cooldown (if any) starts.
    pub(crate) fn open(
        &mut self,
        door: DoorId,
        src: IpAddr,
        now: Timestamp,
        lifetime: Option<core::time::Duration>,
        cooldown: core::time::Duration,
        out: &mut Queue,
    ) -> Opened {
        let key = (src, door);
        let cooldown_until = (!cooldown.is_zero()).then(|| now + cooldown);
        let Some(until) = lifetime.map(|l| now + l) else {
            let grant = self.announce_open(door, src, None, out);
            if let Some(c) = cooldown_until {
                let evicted = self.make_room(key, out);
                let state = self.map.entry(key).or_insert(GrantState {
                    id: grant,
                    close_at: None,
                    cooldown_until: None,
                });
                state.cooldown_until = Some(c);
                self.schedule(key);
                if evicted {
                    return Opened::NewAfterEviction;
                }
            }
            return Opened::New;
        };
        if let Some(state) = self.map.get_mut(&key) {
            if state.close_at.is_some() {
                state.close_at = Some(until);
                state.cooldown_until = cooldown_until.or(state.cooldown_until);
                let grant = state.id;
                out.push_back(Decision::Extended {
                    door,
                    src,
                    grant,
                    until,
                });
                self.schedule(key);
                return Opened::Extended;
            }
        }
        let grant = self.announce_open(door, src, Some(until), out);
        let evicted = self.make_room(key, out);
        self.map.insert(
            key,
            GrantState {
                id: grant,
                close_at: Some(until),
                cooldown_until,
            },
        );
        self.ids.insert(grant.0);
        self.schedule(key);
        if evicted {
            Opened::NewAfterEviction
        } else {
            Opened::New
        }
    }

    /// Makes room for `key` if it is new and the map is full. Returns
    /// whether a grant was evicted.
    fn make_room(&mut self, key: (IpAddr, DoorId), out: &mut Queue) -> bool {
        if self.map.contains_key(&key) || self.map.len() < self.max {
            return false;
        }
        self.evict_earliest(out);
        true
    }

    fn evict_earliest(&mut self, out: &mut Queue) {
        while let Some(Reverse((t, src, door))) = self.heap.pop() {
            let key = (src, door);
            if self.map.get(&key).and_then(GrantState::next_deadline) == Some(t) {
                if let Some(state) = self.map.remove(&key) {
                    if state.close_at.is_some() {
                        self.ids.remove(&state.id.0);
                        out.push_back(Decision::Close {
                            door,
                            src,
                            grant: state.id,
                        });
                    }
                }
                return;
            }
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Closes the grants and ends the cooldowns due at `at` (at most
    /// `budget` heap entries, counted down). Returns how many closes were
    /// emitted.
    pub(crate) fn fire(&mut self, at: Timestamp, budget: &mut usize, out: &mut Queue) -> u64 {
        let mut closes = 0;
        while *budget > 0 {
            let Some(&Reverse((t, src, door))) = self.heap.peek() else {
                break;
            };
            if t > at {
                break;
            }
            self.heap.pop();
            *budget -= 1;
            let key = (src, door);
            let Some(state) = self.map.get_mut(&key) else {
                continue;
            };
            if state.next_deadline() != Some(t) {
                continue; // stale
            }
            if state.close_at.is_some_and(|c| c <= at) {
                state.close_at = None;
                closes += 1;
                self.ids.remove(&state.id.0);
                out.push_back(Decision::Close {
                    door,
                    src,
                    grant: state.id,
                });
            }
            if state.cooldown_until.is_some_and(|c| c <= at) {
                state.cooldown_until = None;
            }
            if state.next_deadline().is_none() {
                self.map.remove(&key);
            } else {
                self.schedule(key);
            }
        }
        closes
    }

    /// Re-inserts a grant known from outside (state restored after a
    /// restart) with its own id: refused if `src` has a grant with a
    /// pending close at `door`, or `id` is taken by one.
    pub(crate) fn restore(
        &mut self,
        door: DoorId,
        src: IpAddr,
        until: Timestamp,
        id: u64,
        out: &mut Queue,
    ) -> Option<(GrantId, bool)> {
        let key = (src, door);
        if self.ids.contains(&id) || self.map.get(&key).is_some_and(|s| s.close_at.is_some()) {
            return None;
        }
        let evicted = self.make_room(key, out);
        let grant = GrantId(id);
        let state = self.map.entry(key).or_insert(GrantState {
            id: grant,
            close_at: None,
            cooldown_until: None,
        });
        state.id = grant;
        state.close_at = Some(until);
        self.ids.insert(id);
        self.reserve(id.saturating_add(1));
        self.schedule(key);
        Some((grant, evicted))
    }
}
