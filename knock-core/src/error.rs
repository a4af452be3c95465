//! Errors of building a matcher.

use core::time::Duration;

use crate::door::FlagFilter;

/// Why a door (or a set of doors) cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DoorError {
    /// A door has an empty name.
    #[error("a door has an empty name")]
    EmptyName,
    /// Two doors share a name.
    #[error("door {door:?} is defined twice")]
    DuplicateName {
        /// The name.
        door: String,
    },
    /// A door has no sequence at all.
    #[error("door {door:?} has no sequence")]
    NoSequence {
        /// The door.
        door: String,
    },
    /// A sequence has no step.
    #[error("door {door:?}: sequence {index} is empty")]
    EmptySequence {
        /// The door.
        door: String,
        /// The index of the sequence in the door's list.
        index: usize,
    },
    /// A sequence has more than [`MAX_STEPS`](crate::MAX_STEPS) steps.
    #[error("door {door:?}: sequence {index} has {len} steps (at most 32)")]
    TooManySteps {
        /// The door.
        door: String,
        /// The index of the sequence.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// A step has port 0.
    #[error("door {door:?}: sequence {index} has port 0 (ports are 1 to 65535)")]
    PortZero {
        /// The door.
        door: String,
        /// The index of the sequence.
        index: usize,
    },
    /// A one-time door's active index is past its list.
    #[error("door {door:?}: one-time index {next} is past the {len} sequences")]
    OneTimeIndex {
        /// The door.
        door: String,
        /// The index.
        next: usize,
        /// The number of sequences.
        len: usize,
    },
    /// `seq_timeout` is zero or longer than [`MAX_SEQ_TIMEOUT`](crate::MAX_SEQ_TIMEOUT).
    #[error("door {door:?}: seq_timeout {timeout:?} must be more than 0 and at most one day")]
    SeqTimeout {
        /// The door.
        door: String,
        /// The timeout given.
        timeout: Duration,
    },
    /// A grant lifetime of zero.
    #[error("door {door:?}: a grant lifetime must be more than 0")]
    ZeroGrantLifetime {
        /// The door.
        door: String,
    },
    /// A flag is both required and forbidden.
    #[error("door {door:?}: tcpflags {filter} requires and forbids the same flag")]
    ContradictoryFlags {
        /// The door.
        door: String,
        /// The filter.
        filter: FlagFilter,
    },
    /// More active sequences than the matcher can track.
    #[error("{count} active sequences in all doors (at most {max})")]
    TooManySequences {
        /// How many there are.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A windowed door's windows and sequences do not fit: more than
    /// [`WINDOW_SLOTS`](crate::WINDOW_SLOTS) windows, two equal modulo it,
    /// or not one sequence per window.
    #[error("door {door:?}: {windows} windows with {sequences} sequences (at most 3 windows, distinct modulo 3, one sequence each)")]
    BadWindows {
        /// The door.
        door: String,
        /// How many windows were given.
        windows: usize,
        /// How many sequences were given.
        sequences: usize,
    },
    /// [`Matcher::set_windows`](crate::Matcher::set_windows) on a door that is
    /// not windowed (or not active).
    #[error("door {door:?} has no time-derived sequences")]
    NotWindowed {
        /// The door.
        door: String,
    },
}
