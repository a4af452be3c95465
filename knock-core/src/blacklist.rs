//! The scanner blacklist: strikes per source within a window, blocks.
//!
//! Kept apart from the source table (whose records must stay small): a
//! bounded map of *suspects*, sources with at least one strike in the
//! current window or a block in force, with a FIFO for eviction and a
//! min-heap of deadlines (window ends and block ends) with lazy invalidation.

use core::time::Duration;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;

use crate::decision::{Decision, DoorId, Queue};
use crate::hasher::SourceHasher;
use crate::table::{addr_of, Key};
use crate::time::Timestamp;

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
    /// When the entry was created (its FIFO generation).
    created_ms: u64,
    window_start_ms: u64,
    strikes: u32,
    /// The last touched ports (`port_key`s), `u32::MAX` for none.
    recent: [u32; RECENT],
    next_recent: u8,
    blocked_until_ms: Option<u64>,
    door: DoorId,
}

impl Suspect {
    fn deadline(&self, window_ms: u64) -> u64 {
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
    map: HashMap<Key, Suspect, SourceHasher>,
    order: VecDeque<(Key, u64)>,
    heap: BinaryHeap<Reverse<(u64, Key)>>,
    max: usize,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Suspects {
    pub(crate) fn new(max: usize, hasher: SourceHasher) -> Self {
        Suspects {
            rule: None,
            map: HashMap::with_hasher(hasher),
            order: VecDeque::new(),
            heap: BinaryHeap::new(),
            max: max.max(1),
        }
    }

    pub(crate) fn rule(&self) -> Option<Blacklist> {
        self.rule
    }

    /// Sets the rule; `None` turns the blacklist off and lifts every block
    /// (emitting `Unblocked`, by block end, then address).
    pub(crate) fn set_rule(&mut self, rule: Option<Blacklist>, out: &mut Queue) {
        let rule = rule.filter(|r| r.strikes > 0 && !r.window.is_zero() && !r.block.is_zero());
        if rule.is_none() {
            for (door, src, _) in self.blocks() {
                out.push_back(Decision::Unblocked { door, src });
            }
            self.map.clear();
            self.order.clear();
            self.heap.clear();
        }
        self.rule = rule;
    }

    /// The blocked sources: `(door, src, until)`, by block end, then address.
    pub(crate) fn blocks(&self) -> Vec<(DoorId, IpAddr, Timestamp)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .filter_map(|(k, s)| {
                s.blocked_until_ms
                    .map(|u| (s.door, addr_of(k), Timestamp::from_millis(u)))
            })
            .collect();
        v.sort_by_key(|&(door, src, until)| (until, src, door));
        v
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
    ) -> bool {
        if self.rule.is_none()
            || self
                .map
                .get(&key)
                .is_some_and(|s| s.blocked_until_ms.is_some())
        {
            return false;
        }
        if !self.map.contains_key(&key) {
            if self.map.len() >= self.max {
                self.evict(out);
            }
            self.order.push_back((key, now_ms));
        }
        let s = self.map.entry(key).or_insert(Suspect {
            created_ms: now_ms,
            window_start_ms: now_ms,
            strikes: 0,
            recent: [u32::MAX; RECENT],
            next_recent: 0,
            blocked_until_ms: None,
            door,
        });
        s.blocked_until_ms = Some(until_ms);
        s.strikes = 0;
        s.recent = [u32::MAX; RECENT];
        s.door = door;
        self.heap.push(Reverse((until_ms, key)));
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn is_blocked(&self, key: &Key, now_ms: u64) -> bool {
        !self.map.is_empty()
            && self
                .map
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
        self.map.get(key).is_some_and(|s| {
            s.blocked_until_ms.is_none()
                && s.strikes > 0
                && now_ms.saturating_sub(s.window_start_ms) < ms(rule.window)
                && !s.recent.contains(&port_key)
        })
    }

    /// Records a strike; returns the block's end if the source is now blocked.
    pub(crate) fn strike(
        &mut self,
        key: Key,
        door: DoorId,
        port_key: u32,
        now_ms: u64,
        out: &mut Queue,
    ) -> Option<u64> {
        let rule = self.rule?;
        let window_ms = ms(rule.window);
        if !self.map.contains_key(&key) {
            if self.map.len() >= self.max {
                self.evict(out);
            }
            self.map.insert(
                key,
                Suspect {
                    created_ms: now_ms,
                    window_start_ms: now_ms,
                    strikes: 0,
                    recent: [u32::MAX; RECENT],
                    next_recent: 0,
                    blocked_until_ms: None,
                    door,
                },
            );
            self.order.push_back((key, now_ms));
            self.heap
                .push(Reverse((now_ms.saturating_add(window_ms), key)));
        }
        let s = self.map.get_mut(&key)?;
        if s.blocked_until_ms.is_some() {
            return None;
        }
        if now_ms.saturating_sub(s.window_start_ms) >= window_ms {
            s.window_start_ms = now_ms;
            s.strikes = 0;
            s.recent = [u32::MAX; RECENT];
            self.heap
                .push(Reverse((now_ms.saturating_add(window_ms), key)));
        }
        s.strikes += 1;
        s.door = door;
        s.remember(port_key);
        if s.strikes < rule.strikes {
            return None;
        }
        let until = now_ms.saturating_add(ms(rule.block));
        s.blocked_until_ms = Some(until);
        s.strikes = 0;
        s.recent = [u32::MAX; RECENT];
        self.heap.push(Reverse((until, key)));
        out.push_back(Decision::Blocked {
            door,
            src: addr_of(&key),
            until: Timestamp::from_millis(until),
        });
        self.compact(window_ms);
        Some(until)
    }

    fn evict(&mut self, out: &mut Queue) {
        while let Some((key, created)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|s| s.created_ms == created) {
                if let Some(s) = self.map.remove(&key) {
                    if s.blocked_until_ms.is_some() {
                        out.push_back(Decision::Unblocked {
                            door: s.door,
                            src: addr_of(&key),
                        });
                    }
                }
                return;
            }
        }
    }

    fn compact(&mut self, window_ms: u64) {
        if self.heap.len() > 2 * self.map.len() + 64 {
            let entries: Vec<_> = self
                .map
                .iter()
                .map(|(k, s)| Reverse((s.deadline(window_ms), *k)))
                .collect();
            self.heap = BinaryHeap::from(entries);
        }
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(k, c)| map.get(k).is_some_and(|s| s.created_ms == *c));
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        self.heap
            .peek()
            .map(|Reverse((t, _))| Timestamp::from_millis(*t))
    }

    /// Ends the blocks and windows due at `at_ms`, at most `budget` heap
    /// entries (counted down).
    pub(crate) fn fire(&mut self, at_ms: u64, budget: &mut usize, out: &mut Queue) {
        let Some(rule) = self.rule else {
            return;
        };
        let window_ms = ms(rule.window);
        while *budget > 0 {
            let Some(&Reverse((t, key))) = self.heap.peek() else {
                break;
            };
            if t > at_ms {
                break;
            }
            self.heap.pop();
            *budget -= 1;
            let Some(s) = self.map.get(&key) else {
                continue;
            };
            if s.deadline(window_ms) != t {
                continue; // stale
            }
            if s.blocked_until_ms.is_some() {
                out.push_back(Decision::Unblocked {
                    door: s.door,
                    src: addr_of(&key),
                });
            }
            self.map.remove(&key);
        }
        self.compact(window_ms);
    }
}
