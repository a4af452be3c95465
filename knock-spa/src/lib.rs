//! # knock-spa
//!
//! Single Packet Authorization, wire-compatible with fwknop 2.6 (FKO
//! protocol 3.0.0) in its Rijndael mode: AES-256-CBC with fwknop's salted
//! key derivation, authenticated with HMAC-SHA256. Sans-IO like the matcher:
//! a datagram's payload, its source address and the time go in; an
//! authorized [`Request`] or a typed [`Reject`] comes out. No sockets,
//! clocks, files or randomness (the encoder takes its salt and random
//! value from the caller).
//!
//! ```text
//!   UDP payload, src, now ─► Verifier::verify ─► Request { addr, ports, lifetime }
//!                                  │                 (the engine opens a grant)
//!             size, base64 ◄───────┤
//!        HMAC-SHA256 first ◄───────┤  a bad packet costs one HMAC
//!   replay cache (SHA-256) ◄───────┤  persisted by the caller
//!  AES-256-CBC, digest, fields ◄───┤
//!   window ±120 s, stanza rules ◄──┘
//!
//!   Message + Keys + salt ─► seal ─► payload (what `fwknop` sends)
//! ```
//!
//! ## Brief overview
//! * [`Keys`]: a stanza's encryption and HMAC keys (`KEY_BASE64`,
//!   `HMAC_KEY_BASE64`, or fwknop's plain `KEY`/`HMAC_KEY`).
//! * [`Stanza`]: an `access.conf` entry's rules (`SOURCE`, `OPEN_PORTS`,
//!   `RESTRICT_PORTS`, `FW_ACCESS_TIMEOUT`, `REQUIRE_SOURCE_ADDRESS`,
//!   `REQUIRE_USERNAME`, `ACCESS_EXPIRE`).
//! * [`Verifier`]: the stanzas, the timestamp window and the [`ReplayCache`];
//!   [`Verifier::verify`] and its [`Stats`] (a counter per [`Reject`]).
//! * [`Message`] and [`seal`]: the client's side, as `fwknop` builds it.
//!
//! ## Why a crate of its own
//! The matcher (`knock-core`) stays free of cryptographic dependencies (it
//! aims at `no_std`); this crate adds the RustCrypto ones (`aes`, `cbc`,
//! `hmac`, `sha2`, `md-5` for fwknop's key derivation only, `base64`) and
//! nothing that does I/O. Like the core it forbids `unsafe` and never
//! panics on input: every packet is a [`Request`] or a [`Reject`].
//!
//! ## Not supported
//! GnuPG mode, command messages (`fwknop -C`), NAT access (`-N`), the
//! legacy IV mode (`-M legacy`), other AES modes and HMACs or digests
//! other than SHA-256 (SHA-384/512 digests inside the message are read).
//!
//! ## Example
//! ```
//! use knock_spa::{seal, Access, Keys, Message, Stanza, Verifier};
//! use knock_core::Step;
//! use std::time::Duration;
//!
//! let keys = Keys::from_base64(
//!     "ZxwCwpGiY1Iv/nzNSES5J5LjuyJ6VpuHvBjzhY2bvck=",
//!     "913yacJvmZCnAkEMp7qifH1iZ2fJpda27ZO2WLXNbIWtImTr3ITQBGCZWcSzjEJloNi/cyz13s+7LsyNiH4i8w==",
//! ).unwrap();
//! let now = Duration::from_secs(1_796_000_000);
//! let want = Access { addr: Some("198.18.0.2".parse().unwrap()), ports: vec![Step::tcp(22)] };
//! let msg = Message::access("alice", now.as_secs(), want, 1234);
//! let packet = seal(&keys, msg.plaintext().as_bytes(), [1, 2, 3, 4, 5, 6, 7, 8]);
//!
//! let mut v = Verifier::new(vec![Stanza::new(keys)]);
//! let src = "198.18.0.9".parse().unwrap();
//! let req = v.verify(now, src, packet.as_bytes()).unwrap();
//! assert_eq!(req.addr.to_string(), "198.18.0.2");
//! // The same packet again is a replay.
//! let again = v.verify(now, src, packet.as_bytes()).unwrap_err();
//! assert_eq!(again.reason, knock_spa::Reject::Replay);
//! ```

#![forbid(unsafe_code)]

mod message;
mod replay;
mod verifier;
pub mod wire;

pub use message::{Access, Kind, Message, PROTOCOL_VERSION};
pub use replay::{digest, PacketDigest, ReplayCache, SavedDigest, DEFAULT_REPLAY_CAPACITY};
pub use verifier::{Refusal, Request, Stanza, Verifier, DEFAULT_ACCESS_TIMEOUT, DEFAULT_WINDOW};
pub use wire::{seal, KeyError, Keys};

/// fwknop's default SPA port (`udp/62201`).
pub const DEFAULT_PORT: u16 = 62201;

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reject {
    /// Not an SPA packet: its size, a `U2FsdGVkX1` prefix, or a character
    /// outside base64. No cryptography was done.
    NotSpa,
    /// No stanza's `SOURCE` admits the sender.
    NoStanza,
    /// The HMAC does not verify with any admitting stanza's key (a wrong
    /// HMAC key, or junk).
    Hmac,
    /// The HMAC verified but the ciphertext does not decrypt: a wrong
    /// encryption key.
    Decrypt,
    /// Decrypted, but the message's digest does not match.
    Digest,
    /// Decrypted, but the fields are not what libfko writes.
    Malformed,
    /// A message this implementation refuses: command, NAT access, an MD5
    /// or SHA-1 digest.
    Unsupported,
    /// The same packet was seen before.
    Replay,
    /// The timestamp is outside the window.
    Stale,
    /// The stanza's `ACCESS_EXPIRE` has passed.
    Expired,
    /// `0.0.0.0` with `REQUIRE_SOURCE_ADDRESS`, or an address no grant can
    /// be for.
    Address,
    /// The user is not `REQUIRE_USERNAME`.
    User,
    /// A port the stanza does not open.
    Port,
    /// The replay cache is full: refused rather than forget a packet.
    CacheFull,
}

impl Reject {
    /// Every reason, in counter order.
    pub const ALL: [Reject; 14] = [
        Reject::NotSpa,
        Reject::NoStanza,
        Reject::Hmac,
        Reject::Decrypt,
        Reject::Digest,
        Reject::Malformed,
        Reject::Unsupported,
        Reject::Replay,
        Reject::Stale,
        Reject::Expired,
        Reject::Address,
        Reject::User,
        Reject::Port,
        Reject::CacheFull,
    ];

    /// A short name (logs, statistics).
    pub const fn as_str(self) -> &'static str {
        match self {
            Reject::NotSpa => "not_spa",
            Reject::NoStanza => "no_stanza",
            Reject::Hmac => "bad_hmac",
            Reject::Decrypt => "bad_key",
            Reject::Digest => "bad_digest",
            Reject::Malformed => "malformed",
            Reject::Unsupported => "unsupported",
            Reject::Replay => "replay",
            Reject::Stale => "stale",
            Reject::Expired => "expired",
            Reject::Address => "address",
            Reject::User => "user",
            Reject::Port => "port",
            Reject::CacheFull => "replay_cache_full",
        }
    }

    /// A sentence for logs.
    pub const fn describe(self) -> &'static str {
        match self {
            Reject::NotSpa => "not an SPA packet",
            Reject::NoStanza => "no access stanza for this source",
            Reject::Hmac => "HMAC does not verify (wrong HMAC key or not from a client)",
            Reject::Decrypt => "HMAC verified but decryption failed (wrong encryption key)",
            Reject::Digest => "message digest does not match",
            Reject::Malformed => "malformed message",
            Reject::Unsupported => "unsupported message (command, NAT, or MD5/SHA-1 digest)",
            Reject::Replay => "replayed packet",
            Reject::Stale => "timestamp outside the window",
            Reject::Expired => "access stanza expired",
            Reject::Address => "address not allowed",
            Reject::User => "user not allowed",
            Reject::Port => "port not allowed",
            Reject::CacheFull => "replay cache full",
        }
    }

    fn index(self) -> usize {
        Reject::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// The verifier's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests authorized.
    pub accepted: u64,
    rejected: [u64; Reject::ALL.len()],
}

impl Stats {
    /// How many datagrams were refused for `reason`.
    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejected[reason.index()]
    }

    /// Every reason with its count.
    pub fn reasons(&self) -> impl Iterator<Item = (Reject, u64)> + '_ {
        Reject::ALL.iter().map(|&r| (r, self.rejected(r)))
    }

    fn count(&mut self, reason: Reject) {
        self.rejected[reason.index()] += 1;
    }
}
