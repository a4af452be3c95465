//! The replay cache: the SHA-256 of every authenticated packet, kept while
//! the packet's timestamp could still pass the window.

use std::collections::{BTreeSet, HashSet};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::wire::B64;

/// A packet's digest (SHA-256 of the datagram's payload, as fwknopd keys
/// its digest cache).
pub type PacketDigest = [u8; 32];

/// The digest of `payload`.
pub fn digest(payload: &[u8]) -> PacketDigest {
    Sha256::digest(payload).into()
}

/// One remembered packet, as persisted: its digest in base64 and until when
/// (Unix seconds) it must be remembered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SavedDigest {
    /// The SHA-256 of the packet, base64 without padding.
    pub digest: String,
    /// Unix time (seconds) after which the packet's timestamp can no longer
    /// pass the window, so it need not be remembered.
    pub until: u64,
}

/// The default number of packets remembered.
pub const DEFAULT_REPLAY_CAPACITY: usize = 65_536;

/// Bounded set of packet digests, each with an end. Only authenticated
/// packets enter it (their HMAC verified), so it cannot be filled by
/// someone without a key; when it is full anyway, new packets are refused
/// (fail closed) rather than old ones forgotten.
#[derive(Clone, Debug)]
pub struct ReplayCache {
    seen: HashSet<PacketDigest>,
    by_end: BTreeSet<(u64, PacketDigest)>,
    capacity: usize,
    inserted: u64,
}

impl Default for ReplayCache {
    fn default() -> Self {
        ReplayCache::new(DEFAULT_REPLAY_CAPACITY)
    }
}

impl ReplayCache {
    /// An empty cache for at most `capacity` packets.
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            seen: HashSet::new(),
            by_end: BTreeSet::new(),
            capacity,
            inserted: 0,
        }
    }

    /// How many packets are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// How many packets were added so far (what changed since a snapshot
    /// was taken: compare this, not [`len`](Self::len), which pruning
    /// lowers).
    pub fn inserted(&self) -> u64 {
        self.inserted
    }

    /// Whether `d` was seen.
    pub fn contains(&self, d: &PacketDigest) -> bool {
        self.seen.contains(d)
    }

    /// Forgets the packets whose end is before `now` (Unix seconds).
    pub fn prune(&mut self, now: u64) {
        while let Some(&(end, d)) = self.by_end.first() {
            if end >= now {
                break;
            }
            self.by_end.remove(&(end, d));
            self.seen.remove(&d);
        }
    }

    /// Remembers `d` until `until`; false if the cache is full.
    pub fn insert(&mut self, d: PacketDigest, until: u64, now: u64) -> bool {
        self.prune(now);
        if self.seen.contains(&d) {
            return true;
        }
        if self.seen.len() >= self.capacity {
            return false;
        }
        self.seen.insert(d);
        self.by_end.insert((until, d));
        self.inserted += 1;
        true
    }

    /// What to persist, soonest end first.
    pub fn saved(&self) -> Vec<SavedDigest> {
        self.by_end
            .iter()
            .map(|(until, d)| SavedDigest {
                digest: B64.encode(d),
                until: *until,
            })
            .collect()
    }

    /// Adds what a previous run persisted (those not over at `now`);
    /// returns the entries that could not be read.
    pub fn restore(&mut self, saved: &[SavedDigest], now: u64) -> Vec<String> {
        let mut bad = Vec::new();
        for s in saved {
            let mut d = [0u8; 33];
            match B64.decode_slice(s.digest.as_bytes(), &mut d) {
                Ok(32) => {
                    let mut x = [0u8; 32];
                    x.copy_from_slice(&d[..32]);
                    if s.until >= now && !self.insert(x, s.until, now) {
                        bad.push(format!("{} (cache full)", s.digest));
                    }
                }
                _ => bad.push(s.digest.clone()),
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_the_end_then_forgets() {
        let mut c = ReplayCache::new(4);
        let d = digest(b"packet");
        assert!(c.insert(d, 100, 10));
        assert!(c.contains(&d));
        c.prune(100);
        assert!(c.contains(&d));
        c.prune(101);
        assert!(!c.contains(&d));
    }

    #[test]
    fn full_refuses_new_packets() {
        let mut c = ReplayCache::new(2);
        assert!(c.insert(digest(b"a"), 100, 0));
        assert!(c.insert(digest(b"b"), 100, 0));
        assert!(!c.insert(digest(b"c"), 100, 0));
        assert!(c.contains(&digest(b"a")));
        // Once the old ones are over there is room again.
        assert!(c.insert(digest(b"c"), 300, 101));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn saved_and_restored() {
        let mut c = ReplayCache::new(8);
        c.insert(digest(b"a"), 100, 0);
        c.insert(digest(b"b"), 50, 0);
        let saved = c.saved();
        assert_eq!(saved[0].until, 50);
        let mut d = ReplayCache::new(8);
        let mut with_bad = saved.clone();
        with_bad.push(SavedDigest {
            digest: "!!".into(),
            until: 100,
        });
        assert_eq!(d.restore(&with_bad, 60), vec!["!!".to_owned()]);
        assert!(d.contains(&digest(b"a")));
        assert!(!d.contains(&digest(b"b")), "over at 60");
    }
}
