//! Time-derived sequences: the one derivation the daemon and the client share.
//!
//! A door with `sequence_secret_file` has no fixed sequence. For each time
//! window `w` both sides compute the same sequence from a shared secret, the
//! door's name and `w`; the daemon accepts the sequences of windows `w-1`,
//! `w` and `w+1` (clock skew), each at most once.
//!
//! # The derivation, version 1 (precise enough to reimplement)
//!
//! **Inputs.** The secret `K`: the bytes of the secret file with trailing
//! ASCII whitespace (space, tab, CR, LF) removed; it must not be empty. The
//! door name `N` (the section name, UTF-8, at most 65,535 bytes). The period
//! `P` in milliseconds (`sequence_period`, at least 1 ms). The port range
//! `lo..=hi` (`sequence_ports`, `1 <= lo <= hi <= 65535`) and `n = hi - lo + 1`.
//! The protocol list `R`: the protocols of `sequence_protocols` without
//! duplicates, in the order **tcp before udp** whatever the order written;
//! `k = len(R)` (1 or 2). The length `L` (`sequence_length`, `1 <= L <= n`).
//!
//! **Window.** `w = floor(T / P)` where `T` is the Unix time in milliseconds
//! (UTC, leap seconds ignored, as `time(2)`).
//!
//! **Blocks.** For `c = 0, 1, 2, ...` the block `B_c` is
//! `HMAC-SHA256(key = K, message = M_c)` (RFC 2104, 32 bytes) with
//!
//! ```text
//! M_c = "knock-rs derive v1"   (18 ASCII bytes, no terminator)
//!    || 0x00
//!    || len(N) as u16, big-endian
//!    || N
//!    || w as u64, big-endian
//!    || c as u32, big-endian
//! ```
//!
//! **Sampling, without bias.** Read each block as eight big-endian `u32`
//! values `x`, in order, block after block. Let `m = n * k` and
//! `limit = 2^32 - (2^32 mod m)`. A value `x >= limit` is rejected (so that
//! every residue is equally likely). Otherwise `v = x mod m`, the port is
//! `lo + floor(v / k)` and the protocol `R[v mod k]`. If the port is already
//! in the sequence (with either protocol) the value is rejected too.
//! Otherwise the step is appended. Stop when the sequence has `L` steps.
//! (Implementations may give up after 1,024 blocks; with `L <= n` that never
//! happens in practice.)
//!
//! Test vectors are in `knock-config/tests/derive_vectors.rs`; a 30-line
//! Python version is in README.md ("Beyond knockd").

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use knock_core::{Proto, Step};
use sha2::Sha256;

use crate::model::DerivedSequence;

/// The domain-separation prefix of every HMAC message (version 1).
pub const DOMAIN: &[u8] = b"knock-rs derive v1";

/// The most HMAC blocks one derivation reads.
pub const MAX_BLOCKS: u32 = 1024;

/// A shared secret (its `Debug` does not show it).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// It cannot be read: missing, permissions, not a regular file (a FIFO
    /// would block), larger than [`MAX_SECRET_FILE_SIZE`].
    #[error(transparent)]
    File(#[from] crate::file::FileError),
    /// It is empty (or only whitespace).
    #[error("it is empty (expected a secret, e.g. 32 random bytes: head -c 32 /dev/urandom | base64 > FILE)")]
    Empty,
    /// Everyone may read it.
    #[error("it is readable by everyone (mode {mode:04o}); chmod 600 it")]
    WorldReadable {
        /// The file's permission bits.
        mode: u32,
    },
}

/// The largest secret file read (64 KiB: anything larger is surely not a
/// secret file).
pub const MAX_SECRET_FILE_SIZE: u64 = 65_536;

impl Secret {
    /// A secret from bytes (trailing ASCII whitespace removed); `None` if empty.
    pub fn from_bytes(bytes: &[u8]) -> Option<Secret> {
        let end = bytes
            .iter()
            .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))?;
        Some(Secret(bytes[..=end].to_vec()))
    }

    /// Reads a secret file: it must be a regular file (checked on the open
    /// descriptor, so a FIFO cannot block us), not readable by everyone, of
    /// at most [`MAX_SECRET_FILE_SIZE`] bytes and not empty.
    ///
    /// # Errors
    /// [`SecretError`].
    pub fn load(path: &Path) -> Result<Secret, SecretError> {
        let (file, meta) = crate::file::open_regular(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o004 != 0 {
                return Err(SecretError::WorldReadable { mode });
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let bytes = crate::file::read_at_most(file, MAX_SECRET_FILE_SIZE)?;
        Secret::from_bytes(&bytes).ok_or(SecretError::Empty)
    }

    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The window of Unix time `unix` (since the epoch) for `period`.
/// A zero period gives window 0.
pub fn window_of(unix: Duration, period: Duration) -> u64 {
    let p = period.as_millis();
    if p == 0 {
        return 0;
    }
    u64::try_from(unix.as_millis() / p).unwrap_or(u64::MAX)
}

/// When window `w` starts, as Unix time.
pub fn window_start(w: u64, period: Duration) -> Duration {
    let ms = u128::from(w).saturating_mul(period.as_millis());
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Unix time now (zero if the clock is before 1970).
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The protocol list of the derivation: deduplicated, tcp before udp.
fn protocols(p: &[Proto]) -> Vec<Proto> {
    let mut out: Vec<Proto> = [Proto::Tcp, Proto::Udp]
        .into_iter()
        .filter(|x| p.contains(x))
        .collect();
    if out.is_empty() {
        out.push(Proto::Tcp);
    }
    out
}

/// The sequence of window `w` for door `door`, as described in the
/// [module documentation](self). `None` only if the parameters are
/// impossible (an empty range, more steps than ports, a door name longer
/// than 65,535 bytes) or, never in practice, after [`MAX_BLOCKS`] blocks.
pub fn derive(secret: &Secret, door: &str, spec: &DerivedSequence, w: u64) -> Option<Vec<Step>> {
    let (lo, hi) = (*spec.ports.start(), *spec.ports.end());
    if lo == 0 || lo > hi {
        return None;
    }
    let n = u64::from(hi - lo) + 1;
    let len = spec.length;
    if len == 0 || len as u64 > n {
        return None;
    }
    let name_len = u16::try_from(door.len()).ok()?;
    let protos = protocols(&spec.protocols);
    let k = protos.len() as u64;
    let m = n * k;
    let limit = (1u64 << 32) - ((1u64 << 32) % m);
    let mut out: Vec<Step> = Vec::with_capacity(len);
    for c in 0..MAX_BLOCKS {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret.0).ok()?;
        mac.update(DOMAIN);
        mac.update(&[0]);
        mac.update(&name_len.to_be_bytes());
        mac.update(door.as_bytes());
        mac.update(&w.to_be_bytes());
        mac.update(&c.to_be_bytes());
        let block = mac.finalize().into_bytes();
        for chunk in block.chunks_exact(4) {
            let x = u64::from(u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
            if x >= limit {
                continue;
            }
            let v = x % m;
            let port = u16::try_from(u64::from(lo) + v / k).ok()?;
            let proto = protos[(v % k) as usize];
            if out.iter().any(|s| s.port == port) {
                continue;
            }
            out.push(Step { proto, port });
            if out.len() == len {
                return Some(out);
            }
        }
    }
    None
}

/// The sequences of windows `w-1`, `w` and `w+1` around Unix time `unix`,
/// for [`knock_core::Matcher::set_windows`] (a window below 0 is left out).
pub fn windows_around(
    secret: &Secret,
    door: &str,
    spec: &DerivedSequence,
    unix: Duration,
) -> Vec<(u64, Vec<Step>)> {
    let w = window_of(unix, spec.period);
    [w.checked_sub(1), Some(w), w.checked_add(1)]
        .into_iter()
        .flatten()
        .filter_map(|w| derive(secret, door, spec, w).map(|s| (w, s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(len: usize, ports: std::ops::RangeInclusive<u16>, p: &[Proto]) -> DerivedSequence {
        let mut d = DerivedSequence::new("/k");
        d.length = len;
        d.ports = ports;
        d.protocols = p.to_vec();
        d
    }

    #[test]
    fn sequences_have_distinct_ports_in_range_and_change_with_inputs() {
        let s = Secret::from_bytes(b"sesame\n").unwrap();
        assert_eq!(s.as_bytes(), b"sesame");
        let sp = spec(8, 20000..=20009, &[Proto::Udp, Proto::Tcp]);
        let a = derive(&s, "ssh", &sp, 7).unwrap();
        assert_eq!(a.len(), 8);
        let mut ports: Vec<u16> = a.iter().map(|s| s.port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 8);
        assert!(a.iter().all(|s| (20000..=20009).contains(&s.port)));
        assert_ne!(derive(&s, "ssh", &sp, 8), Some(a.clone()));
        assert_ne!(derive(&s, "web", &sp, 7), Some(a.clone()));
        // Protocol order as written does not matter.
        let sp2 = spec(8, 20000..=20009, &[Proto::Tcp, Proto::Udp]);
        assert_eq!(derive(&s, "ssh", &sp2, 7), Some(a));
        // Every port of a full range.
        let full = derive(&s, "ssh", &spec(10, 20000..=20009, &[Proto::Tcp]), 1).unwrap();
        assert_eq!(full.len(), 10);
        // Impossible parameters.
        assert_eq!(
            derive(&s, "ssh", &spec(11, 20000..=20009, &[Proto::Tcp]), 1),
            None
        );
        assert_eq!(Secret::from_bytes(b" \n\t"), None);
        assert_eq!(format!("{s:?}"), "Secret(6 bytes)");
    }

    #[test]
    fn sampling_is_uniform_enough() {
        // Range of 3 ports, both protocols: 6 outcomes for the first step.
        let s = Secret::from_bytes(b"k").unwrap();
        let sp = spec(1, 1000..=1002, &[Proto::Tcp, Proto::Udp]);
        let mut counts = std::collections::HashMap::new();
        for w in 0..6000 {
            *counts
                .entry(derive(&s, "d", &sp, w).unwrap()[0])
                .or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), 6);
        assert!(
            counts.values().all(|&c| (850..=1150).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn windows() {
        let p = Duration::from_secs(30);
        assert_eq!(window_of(Duration::from_secs(59), p), 1);
        assert_eq!(window_of(Duration::from_secs(60), p), 2);
        assert_eq!(window_start(2, p), Duration::from_secs(60));
        assert_eq!(window_of(Duration::from_secs(60), Duration::ZERO), 0);
        let s = Secret::from_bytes(b"k").unwrap();
        let sp = spec(3, 1000..=2000, &[Proto::Tcp]);
        let ws = windows_around(&s, "d", &sp, Duration::from_secs(65));
        assert_eq!(ws.iter().map(|w| w.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(windows_around(&s, "d", &sp, Duration::ZERO).len(), 2);
    }
}
