//! The scanner blacklist: strikes per source within a window, blocks.
//!
//! Kept apart from the source table (whose records must stay small): a
//! bounded slab of *suspects*, sources with at least one strike in the
//! current window or a block in force, found by source, with a FIFO for
//! eviction; window ends and block ends are timed by the matcher's one
//! timer structure (`timer`).

use core::time::Duration;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use crate::decision::{Decision, DoorId, Queue};
use crate::hasher::SourceHasher;
use crate::table::{addr_of, Key};
use crate::time::Timestamp;
use crate::timer::{Kind, Timers};

/// The scanner blacklist rule (knockd.conf `blacklist = 3 invalid in 60s for 180s`).
///
/// A source collects a *strike* for every knock that invalidates one of its
/// attempts, and, once it has a strike, for every knock that *touches* a
/// strict door on a port that is not one of the door's steps (a TCP SYN or
/// UDP datagram; the last four such ports are remembered, so a repeat of one
/// of them is not a new strike). One knock is at most one strike. The window
/// opens at the first strike and lasts `window`; when it is over the strikes
/// are forgotten. At `strikes` strikes within the window the source is
/// blocked for `block`: [`Decision::Blocked`], its attempts are dropped and
/// its knocks ignored until [`Decision::Unblocked`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Blacklist {
    /// Strikes that trigger a block (at least 1).
    pub strikes: u32,
    /// Within how long of the first strike.
    pub window: Duration,
    /// How long the block lasts.
    pub block: Duration,
}

impl Blacklist {
    /// A rule: `strikes` strikes within `window` block for `block`.
    pub fn new(strikes: u32, window: Duration, block: Duration) -> Self {
        Blacklist {
            strikes,
            window,
            block,
        }
    }
}

const RECENT: usize = 4;

#[derive(Clone, Copy, Debug)]
struct Suspect {
    key: Key,
    /// Its place in the eviction order (see `Suspects::order`).
    generation: u32,
    window_start_ms: u64,
    strikes: u32,
    /// The last touched ports (`port_key`s), `u32::MAX` for none.
    recent: [u32; RECENT],
    next_recent: u8,
    blocked_until_ms: Option<u64>,
    door: DoorId,
}

impl Suspect {
    /// When its timer is due: the block's end, or the window's.
    fn due_ms(&self, window_ms: u64) -> u64 {
        self.blocked_until_ms
            .unwrap_or(self.window_start_ms.saturating_add(window_ms))
    }
    fn remember(&mut self, port_key: u32) {
        self.recent[usize::from(self.next_recent) % RECENT] = port_key;
        self.next_recent = self.next_recent.wrapping_add(1);
    }
}

pub(crate) struct Suspects {
    rule: Option<Blacklist>,
    slots: Vec<Option<Suspect>>,
    free: Vec<u32>,
    map: HashMap<Key, u32, SourceHasher>,
    /// Eviction order, oldest first: `(slot, generation)`, stale when the
    /// slot's generation differs.
    order: VecDeque<(u32, u32)>,
    next_generation: u32,
    max: usize,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Suspects {
    pub(crate) fn new(max: usize, hasher: SourceHasher) -> Self {
        Suspects {
            rule: None,
            slots: Vec::new(),
            free: Vec::new(),
            map: HashMap::with_hasher(hasher),
            order: VecDeque::new(),
            next_generation: 0,
            max: max.max(1),
        }
    }

    pub(crate) fn rule(&self) -> Option<Blacklist> {
        self.rule
    }

    fn window_ms(&self) -> u64 {
        self.rule.map_or(0, |r| ms(r.window))
    }

    /// Sets the rule; `None` turns the blacklist off and lifts every block
    /// (emitting `Unblocked`, by block end, then address).
    pub(crate) fn set_rule(&mut self, rule: Option<Blacklist>, out: &mut Queue) {
        let rule = rule.filter(|r| r.strikes > 0 && !r.window.is_zero() && !r.block.is_zero());
        if rule.is_none() {
            for (door, src, _) in self.blocks() {
                out.push_back(Decision::Unblocked { door, src });
            }
            // Their timer entries pop later and find free slots.
            self.map.clear();
            self.order.clear();
            self.free.extend(
                self.slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.is_some())
                    .map(|(i, _)| i as u32),
            );
            self.slots.iter_mut().for_each(|s| *s = None);
        }
        self.rule = rule;
    }

    /// The blocked sources: `(door, src, until)`, by block end, then address.
    pub(crate) fn blocks(&self) -> Vec<(DoorId, IpAddr, Timestamp)> {
        let mut v: Vec<_> = self
            .slots
            .iter()
            .flatten()
            .filter_map(|s| {
                s.blocked_until_ms
                    .map(|u| (s.door, addr_of(&s.key), Timestamp::from_millis(u)))
            })
            .collect();
        v.sort_by_key(|&(door, src, until)| (until, src, door));
        v
    }

    /// Every used slot and when it is due (for a rebuild of the timers).
    pub(crate) fn due(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let window_ms = self.window_ms();
        self.slots
            .iter()
            .enumerate()
            .filter_map(move |(i, s)| Some((i as u32, s.as_ref()?.due_ms(window_ms))))
    }

    /// Slab slots, used or free.
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn get(&self, key: &Key) -> Option<&Suspect> {
        self.map
            .get(key)
            .and_then(|&i| self.slots[i as usize].as_ref())
    }

    pub(crate) fn is_blocked(&self, key: &Key, now_ms: u64) -> bool {
        !self.map.is_empty()
            && self
                .get(key)
                .and_then(|s| s.blocked_until_ms)
                .is_some_and(|u| u > now_ms)
    }

    /// Whether a touch of `port_key` by `key` now is a new strike: the source
    /// has a strike in its current window and has not touched that port lately.
    pub(crate) fn touch_counts(&self, key: &Key, port_key: u32, now_ms: u64) -> bool {
        let Some(rule) = self.rule else {
            return false;
        };
        self.get(key).is_some_and(|s| {
            s.blocked_until_ms.is_none()
                && s.strikes > 0
                && now_ms.saturating_sub(s.window_start_ms) < ms(rule.window)
                && !s.recent.contains(&port_key)
        })
    }

    /// The slot of `key`, a new one (evicting the oldest if full) if it
    /// has none, with a timer entry for the new one's window.
    fn slot_of(
        &mut self,
        key: Key,
        door: DoorId,
        now_ms: u64,
        out: &mut Queue,
        timers: &mut Timers,
    ) -> u32 {
        if let Some(&i) = self.map.get(&key) {
            return i;
        }
        if self.map.len() >= self.max {
            self.evict(out);
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        let s = Suspect {
            key,
            generation,
            window_start_ms: now_ms,
            strikes: 0,
            recent: [u32::MAX; RECENT],
            next_recent: 0,
            blocked_until_ms: None,
            door,
        };
        timers.push(Kind::Suspect, s.due_ms(self.window_ms()), i);
        self.slots[i as usize] = Some(s);
        self.map.insert(key, i);
        self.order.push_back((i, generation));
        if self.order.len() > 2 * self.map.len() + 64 {
            let slots = &self.slots;
            self.order.retain(|&(i, g)| {
                slots[i as usize]
                    .as_ref()
                    .is_some_and(|s| s.generation == g)
            });
        }
        i
    }

    /// Blocks slot `i` until `until_ms` (arming a timer entry if that is
    /// sooner than its window's end).
    fn block(&mut self, i: u32, door: DoorId, until_ms: u64, timers: &mut Timers) {
        let window_ms = self.window_ms();
        let Some(s) = self.slots[i as usize].as_mut() else {
            return;
        };
        let before = s.due_ms(window_ms);
        s.blocked_until_ms = Some(until_ms);
        s.strikes = 0;
        s.recent = [u32::MAX; RECENT];
        s.door = door;
        if until_ms < before {
            timers.push(Kind::Suspect, until_ms, i);
        }
    }

    /// Blocks `key` until `until_ms` (a block known from outside, restored
    /// after a restart), without a `Blocked` decision. Refused (false)
    /// without a rule or if the source is blocked already.
    pub(crate) fn restore_block(
        &mut self,
        key: Key,
        door: DoorId,
        until_ms: u64,
        now_ms: u64,
        out: &mut Queue,
        timers: &mut Timers,
    ) -> bool {
        if self.rule.is_none() || self.get(&key).is_some_and(|s| s.blocked_until_ms.is_some()) {
            return false;
        }
        let i = self.slot_of(key, door, now_ms, out, timers);
        self.block(i, door, until_ms, timers);
        true
    }

    /// Records a strike; returns the block's end if the source is now blocked.
    pub(crate) fn strike(
        &mut self,
        key: Key,
        door: DoorId,
        port_key: u32,
        now_ms: u64,
        out: &mut Queue,
        timers: &mut Timers,
    ) -> Option<u64> {
        let rule = self.rule?;
        let window_ms = ms(rule.window);
        let i = self.slot_of(key, door, now_ms, out, timers);
        let s = self.slots[i as usize].as_mut()?;
        if s.blocked_until_ms.is_some() {
            return None;
        }
        if now_ms.saturating_sub(s.window_start_ms) >= window_ms {
            // A new window: due later, the entry it has re-arms.
            s.window_start_ms = now_ms;
            s.strikes = 0;
            s.recent = [u32::MAX; RECENT];
        }
        s.strikes += 1;
        s.door = door;
        s.remember(port_key);
        if s.strikes < rule.strikes {
            return None;
        }
        let until = now_ms.saturating_add(ms(rule.block));
        self.block(i, door, until, timers);
        out.push_back(Decision::Blocked {
            door,
            src: addr_of(&key),
            until: Timestamp::from_millis(until),
        });
        Some(until)
    }

    fn remove(&mut self, i: u32) -> Option<Suspect> {
        let s = self.slots.get_mut(i as usize)?.take()?;
        self.map.remove(&s.key);
        self.free.push(i);
        Some(s)
    }

    /// Forgets the oldest suspect (unblocking it if blocked) to make room.
    fn evict(&mut self, out: &mut Queue) {
        while let Some((i, g)) = self.order.pop_front() {
            let live = self.slots[i as usize]
                .as_ref()
                .is_some_and(|s| s.generation == g);
            if !live {
                continue;
            }
            if let Some(s) = self.remove(i) {
                if s.blocked_until_ms.is_some() {
                    out.push_back(Decision::Unblocked {
                        door: s.door,
                        src: addr_of(&s.key),
                    });
                }
            }
            return;
        }
    }

    /// The timer of slot `i` popped at `at_ms`: ends its block (emitting
    /// `Unblocked`) or its window if due, forgetting the suspect. Returns
    /// when the slot is due next (`None`: it is gone, or was already).
    pub(crate) fn fire(&mut self, i: u32, at_ms: u64, out: &mut Queue) -> Option<u64> {
        let window_ms = self.window_ms();
        let s = self.slots.get(i as usize)?.as_ref()?;
        let due = s.due_ms(window_ms);
        if due > at_ms {
            return Some(due); // early: the window moved on since
        }
        let s = self.remove(i)?;
        if s.blocked_until_ms.is_some() {
            out.push_back(Decision::Unblocked {
                door: s.door,
                src: addr_of(&s.key),
            });
        }
        None
    }
}
