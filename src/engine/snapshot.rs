//! The engine's persistent state: what a restart must not forget.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::How;

/// Everything a restarted engine needs to keep its promises: open grants
/// (and closes not yet confirmed), blocks, used time windows, and the next
/// grant id, so that ids never repeat across restarts.
///
/// Times are Unix milliseconds (wall clock), since a monotonic clock does
/// not survive a restart. [`Snapshot::to_bytes`] and
/// [`Snapshot::from_bytes`] are the file format (JSON, versioned).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// The format version ([`Snapshot::VERSION`]).
    pub version: u32,
    /// The id the next grant gets.
    pub next_grant: u64,
    /// Grants with a pending close, and closes not yet confirmed.
    pub grants: Vec<SavedGrant>,
    /// Blocked sources.
    pub blocks: Vec<SavedBlock>,
    /// Each time-derived door's used windows.
    pub used_windows: Vec<SavedWindows>,
    /// One-time sequences used and not yet marked in their file (or not
    /// yet seen marked): never accepted again.
    #[serde(default)]
    pub used_sequences: Vec<SavedSequences>,
    /// The SPA replay cache: packets seen whose timestamp could still pass
    /// the window (empty in snapshots from before SPA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spa_replay: Vec<knock_spa::SavedDigest>,
}

/// One grant in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedGrant {
    /// The grant's id.
    pub id: u64,
    /// The door's name.
    pub door: String,
    /// The knocker.
    pub src: IpAddr,
    /// When it closes, Unix milliseconds.
    pub until_ms: u64,
    /// How to close it (as rendered when it opened).
    pub close: How,
    /// The close was already started and not confirmed.
    pub closing: bool,
}

/// One block in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBlock {
    /// The door of the strike that blocked it.
    pub door: String,
    /// The blocked source.
    pub src: IpAddr,
    /// When the block ends, Unix milliseconds.
    pub until_ms: u64,
}

/// One door's used windows in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedWindows {
    /// The door's name.
    pub door: String,
    /// Its used windows, oldest first.
    pub windows: Vec<u64>,
}

/// One door's used one-time sequences in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSequences {
    /// The door's name.
    pub door: String,
    /// The sequences, as knockd.conf writes them (`7000:tcp,8000:udp`).
    pub sequences: Vec<String>,
}

/// A snapshot that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("state snapshot: {0}")]
pub struct SnapshotError(String);

impl Snapshot {
    /// The format version this build writes and reads.
    pub const VERSION: u32 = 1;

    /// The snapshot as bytes (one JSON object and a newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Reads a snapshot written by [`to_bytes`](Self::to_bytes).
    ///
    /// # Errors
    /// Bytes that are not a snapshot, or one of another version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let s: Snapshot =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        if s.version != Self::VERSION {
            return Err(SnapshotError(format!(
                "version {} (this build reads {})",
                s.version,
                Self::VERSION
            )));
        }
        Ok(s)
    }
}
