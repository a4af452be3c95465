//! What the matcher decides.

use core::fmt;
use std::net::IpAddr;

use crate::time::Timestamp;

/// A door's identity inside one [`Matcher`](crate::Matcher).
///
/// Ids are stable for the matcher's lifetime: a reload keeps the id of every
/// door whose definition did not change and gives changed doors new ids, so a
/// pending [`Decision::Close`] always names the door that opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DoorId(pub(crate) u32);

impl DoorId {
    /// The id as a number (for logs and maps).
    pub const fn index(self) -> u32 {
        self.0
    }
}

impl fmt::Display for DoorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "door#{}", self.0)
    }
}

/// The identity of one grant (one [`Open`](Decision::Open) and its
/// [`Close`](Decision::Close)), unique within a matcher and, when the caller
/// carries ids over ([`Matcher::restore_grant`](crate::Matcher::restore_grant),
/// [`Matcher::reserve_grant_ids`](crate::Matcher::reserve_grant_ids)), across
/// restarts.
///
/// Opaque: only the matcher makes one; [`get`](GrantId::get) gives the
/// number (for a firewall rule's comment or a state file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GrantId(pub(crate) u64);

impl GrantId {
    /// The id as a number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "grant#{}", self.0)
    }
}

/// Something the I/O layer should act on or log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "event", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Decision {
    /// `src` knocked step `step` (1-based) of `door` correctly.
    Stage {
        /// The door.
        door: DoorId,
        /// The knocker.
        src: IpAddr,
        /// How many steps are done, this one included.
        step: u8,
    },
    /// `src` completed `door`'s sequence: open the door for it.
    Open {
        /// The door.
        door: DoorId,
        /// The knocker.
        src: IpAddr,
        /// The grant's identity; its [`Close`](Decision::Close) carries the same.
        grant: GrantId,
        /// When the matcher will close it (`None`: never, knockd's door without `stop_command`).
        until: Option<Timestamp>,
    },
    /// `src` completed `door` again while its grant was open: the grant lasts
    /// longer and nothing needs to be opened twice.
    Extended {
        /// The door.
        door: DoorId,
        /// The knocker.
        src: IpAddr,
        /// The grant, as in its [`Open`](Decision::Open).
        grant: GrantId,
        /// The new closing time.
        until: Timestamp,
    },
    /// The grant's lifetime is over: close the door for `src`.
    Close {
        /// The door.
        door: DoorId,
        /// The knocker.
        src: IpAddr,
        /// The grant, as in its [`Open`](Decision::Open).
        grant: GrantId,
    },
    /// `src`'s attempt at `door` ran out of time after `step` steps.
    Expired {
        /// The door.
        door: DoorId,
        /// The knocker.
        src: IpAddr,
        /// Steps done before it expired.
        step: u8,
    },
    /// `src` knocked a wrong port, ending its attempt at `door` after `step` steps.
    Invalidated {
        /// The door.
        door: DoorId,
        /// The knocker.
        src: IpAddr,
        /// Steps done before the wrong knock.
        step: u8,
    },
    /// One-time sequence `index` of `door` was used: mark it in the file.
    /// The listen set has changed.
    SequenceConsumed {
        /// The door.
        door: DoorId,
        /// The index of the used sequence in the door's list.
        index: usize,
        /// How many unused sequences are left (0: the door is now disabled).
        remaining: usize,
    },
    /// `src` reached the [`Blacklist`](crate::Blacklist) threshold (its last
    /// strike was at `door`): block it in the firewall until `until`. The
    /// matcher ignores its knocks and drops its attempts until then.
    Blocked {
        /// The door of the strike that tipped the balance.
        door: DoorId,
        /// The scanner.
        src: IpAddr,
        /// When the block ends (an [`Unblocked`](Decision::Unblocked) follows then).
        until: Timestamp,
    },
    /// The block of `src` is over: its knocks count again.
    Unblocked {
        /// The door named in its [`Blocked`](Decision::Blocked).
        door: DoorId,
        /// The source.
        src: IpAddr,
    },
}

impl Decision {
    /// The door the decision is about.
    pub fn door(&self) -> DoorId {
        match *self {
            Decision::Stage { door, .. }
            | Decision::Open { door, .. }
            | Decision::Extended { door, .. }
            | Decision::Close { door, .. }
            | Decision::Expired { door, .. }
            | Decision::Invalidated { door, .. }
            | Decision::SequenceConsumed { door, .. }
            | Decision::Blocked { door, .. }
            | Decision::Unblocked { door, .. } => door,
        }
    }

    /// The knocker the decision is about, if it is about one.
    pub fn src(&self) -> Option<IpAddr> {
        match *self {
            Decision::Stage { src, .. }
            | Decision::Open { src, .. }
            | Decision::Extended { src, .. }
            | Decision::Close { src, .. }
            | Decision::Expired { src, .. }
            | Decision::Invalidated { src, .. }
            | Decision::Blocked { src, .. }
            | Decision::Unblocked { src, .. } => Some(src),
            Decision::SequenceConsumed { .. } => None,
        }
    }
}

/// Decisions waiting for `poll_decision`, oldest first: a vector and a read
/// cursor. A push is a plain `Vec::push` (the decision is written in place,
/// not built on the stack and copied), and the vector is reset when drained,
/// which callers do after every call.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    items: Vec<Decision>,
    head: usize,
}

impl Queue {
    #[inline]
    pub(crate) fn push_back(&mut self, d: Decision) {
        self.items.push(d);
    }

    /// How many decisions were ever pushed since the last reset: a mark for
    /// [`sort_from`](Queue::sort_from).
    pub(crate) fn mark(&self) -> usize {
        self.items.len()
    }

    /// Sorts the decisions pushed since `mark` (stably) by `key`.
    pub(crate) fn sort_from<K: Ord>(&mut self, mark: usize, key: impl FnMut(&Decision) -> K) {
        if let Some(tail) = self.items.get_mut(mark..) {
            tail.sort_by_key(key);
        }
    }

    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<Decision> {
        let d = self.items.get(self.head).copied();
        if d.is_some() {
            self.head += 1;
        } else if self.head > 0 {
            self.items.clear();
            self.head = 0;
        }
        d
    }
}
