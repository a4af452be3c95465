//! Open grants and cooldowns, with their own timer heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;

use crate::decision::{Decision, DoorId, GrantId, Queue};
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
    map: HashMap<(IpAddr, DoorId), GrantState>,
    heap: BinaryHeap<Reverse<(Timestamp, IpAddr, DoorId)>>,
    next_id: u64,
    max: usize,
}

impl Grants {
    pub(crate) fn new(max: usize) -> Self {
        Grants {
            map: HashMap::new(),
            heap: BinaryHeap::new(),
            next_id: 1,
            max: max.max(1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Grants with a pending close, for persistence and inspection.
    pub(crate) fn open_grants(
        &self,
    ) -> impl Iterator<Item = (DoorId, IpAddr, GrantId, Timestamp)> + '_ {
        self.map
            .iter()
            .filter_map(|(&(src, door), s)| s.close_at.map(|c| (door, src, s.id, c)))
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

    /// Opens `door` for `src` when the door has neither a grant lifetime nor
    /// a cooldown: `open` without the bookkeeping.
    #[inline]
    pub(crate) fn open_plain(&mut self, door: DoorId, src: IpAddr, out: &mut Queue) {
        self.announce_open(door, src, None, out);
        if !self.map.is_empty() {
            self.map.remove(&(src, door));
        }
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
        self.next_id += 1;
        out.push_back(Decision::Open {
            door,
            src,
            grant,
            until,
        });
        grant
    }

    /// Opens (or extends) the grant of `src` at `door`.
    pub(crate) fn open(
        &mut self,
        door: DoorId,
        src: IpAddr,
        now: Timestamp,
        lifetime: Option<core::time::Duration>,
        cooldown: core::time::Duration,
        out: &mut Queue,
    ) -> Opened {
        if lifetime.is_none() && cooldown.is_zero() {
            // Nothing to remember: knockd's door without a stop command.
            self.open_plain(door, src, out);
            return Opened::New;
        }
        let key = (src, door);
        let until = lifetime.map(|l| now + l);
        let cooldown_until = (!cooldown.is_zero()).then(|| now + cooldown);
        let existing = match until {
            Some(_) => self.map.get_mut(&key),
            None => None,
        };
        if let Some(state) = existing {
            if let (Some(_), Some(until)) = (state.close_at, until) {
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
        let grant = self.announce_open(door, src, until, out);
        let mut evicted = false;
        if !self.map.contains_key(&key) && self.map.len() >= self.max {
            self.evict_earliest(out);
            evicted = true;
        }
        self.map.insert(
            key,
            GrantState {
                id: grant,
                close_at: until,
                cooldown_until,
            },
        );
        self.schedule(key);
        if evicted {
            Opened::NewAfterEviction
        } else {
            Opened::New
        }
    }

    fn evict_earliest(&mut self, out: &mut Queue) {
        while let Some(Reverse((t, src, door))) = self.heap.pop() {
            let key = (src, door);
            if self.map.get(&key).and_then(GrantState::next_deadline) == Some(t) {
                if let Some(state) = self.map.remove(&key) {
                    if state.close_at.is_some() {
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

    /// Closes due grants and ends due cooldowns, at most `budget` of them.
    /// Returns how many closes were emitted.
    pub(crate) fn handle_timeout(
        &mut self,
        now: Timestamp,
        mut budget: usize,
        out: &mut Queue,
    ) -> u64 {
        let mut closes = 0;
        while budget > 0 {
            let Some(&Reverse((t, src, door))) = self.heap.peek() else {
                break;
            };
            if t > now {
                break;
            }
            self.heap.pop();
            budget -= 1;
            let key = (src, door);
            let Some(state) = self.map.get_mut(&key) else {
                continue;
            };
            if state.next_deadline() != Some(t) {
                continue; // stale
            }
            if state.close_at.is_some_and(|c| c <= now) {
                state.close_at = None;
                closes += 1;
                out.push_back(Decision::Close {
                    door,
                    src,
                    grant: state.id,
                });
            }
            if state.cooldown_until.is_some_and(|c| c <= now) {
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

    /// Re-inserts a grant known from outside (state restored after a restart).
    pub(crate) fn restore(&mut self, door: DoorId, src: IpAddr, until: Timestamp) -> GrantId {
        let key = (src, door);
        let id = GrantId(self.next_id);
        self.next_id += 1;
        self.map.insert(
            key,
            GrantState {
                id,
                close_at: Some(until),
                cooldown_until: None,
            },
        );
        self.schedule(key);
        id
    }
}
