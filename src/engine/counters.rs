//! Per-door counts of the matcher's decisions.
//!
//! The matcher's [`Stats`](knock_core::Stats) count every decision for the
//! whole gateway; the engine sees each decision once, with its door's name,
//! and counts it here too, by door. Nothing else counts them: the metrics
//! endpoint reads these (and the matcher's own counters for what belongs to
//! no door), so the per-door figures always add up to the matcher's.
//!
//! Doors are keyed by name: a reload keeps the counts of the doors it keeps
//! and forgets those of doors that are gone (the label sets stay bounded by
//! the configuration).

use std::collections::BTreeMap;
use std::sync::Arc;

use knock_core::Decision;

/// What one door's decisions were, since the start (or since the door
/// first appeared in the configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DoorStats {
    /// Correct steps, the one that completes the sequence included (`Stage`).
    pub stages: u64,
    /// Sequences completed: the door opened (`Open`).
    pub opens: u64,
    /// Sequences completed again while a grant was open (`Extended`).
    pub extends: u64,
    /// Grants whose lifetime ended (`Close`).
    pub closes: u64,
    /// Attempts that ran out of time (`Expired`).
    pub expiries: u64,
    /// Attempts ended by a wrong knock (`Invalidated`).
    pub invalidations: u64,
    /// Sources blocked by the blacklist on a strike at this door (`Blocked`).
    pub blocks: u64,
}

/// The per-door counts (see the [module documentation](self)).
#[derive(Clone, Debug, Default)]
pub(crate) struct DoorCounts {
    doors: BTreeMap<Arc<str>, DoorStats>,
}

impl DoorCounts {
    /// Counts `d`, a decision about door `name`.
    pub(crate) fn count(&mut self, name: &Arc<str>, d: &Decision) {
        let field: fn(&mut DoorStats) -> &mut u64 = match d {
            Decision::Stage { .. } => |s| &mut s.stages,
            Decision::Open { .. } => |s| &mut s.opens,
            Decision::Extended { .. } => |s| &mut s.extends,
            Decision::Close { .. } => |s| &mut s.closes,
            Decision::Expired { .. } => |s| &mut s.expiries,
            Decision::Invalidated { .. } => |s| &mut s.invalidations,
            Decision::Blocked { .. } => |s| &mut s.blocks,
            _ => return,
        };
        let stats = match self.doors.get_mut(name) {
            Some(s) => s,
            None => self.doors.entry(name.clone()).or_default(),
        };
        *field(stats) += 1;
    }

    /// Forgets the doors for which `keep` is false.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.doors.retain(|name, _| keep(name));
    }

    /// The counts of door `name` (zero if it decided nothing yet).
    pub(crate) fn get(&self, name: &str) -> DoorStats {
        self.doors.get(name).copied().unwrap_or_default()
    }
}
