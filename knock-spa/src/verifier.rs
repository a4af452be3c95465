//! The verifier: a datagram, its source and the time in; an authorized
//! [`Request`] or a [`Reject`] out.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use knock_core::Step;

use crate::message::Message;
use crate::replay::{digest, ReplayCache, SavedDigest, DEFAULT_REPLAY_CAPACITY};
use crate::wire::{self, Keys};
use crate::{Reject, Stats};

/// fwknopd's default `MAX_SPA_PACKET_AGE`: a packet whose timestamp is
/// further than this from the server's clock is refused.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(120);

/// fwknopd's default `FW_ACCESS_TIMEOUT`.
pub const DEFAULT_ACCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// One access stanza (fwknop's `access.conf` entry): who may ask, with
/// which keys, for what.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stanza {
    /// `SOURCE`: the networks a packet may come from (empty: `ANY`).
    pub source: Vec<IpNet>,
    /// `KEY`/`KEY_BASE64` and `HMAC_KEY`/`HMAC_KEY_BASE64`.
    pub keys: Keys,
    /// `OPEN_PORTS`: the ports a request may ask for (empty: any port not
    /// in `restrict_ports`).
    pub open_ports: Vec<Step>,
    /// `RESTRICT_PORTS`: ports never opened.
    pub restrict_ports: Vec<Step>,
    /// `FW_ACCESS_TIMEOUT`: how long a grant lasts (a client timeout, `-f`,
    /// overrides it as in fwknopd).
    pub timeout: Duration,
    /// `REQUIRE_SOURCE_ADDRESS`: refuse `0.0.0.0` (`fwknop -s`).
    pub require_source_address: bool,
    /// `REQUIRE_USERNAME`.
    pub require_username: Option<String>,
    /// `ACCESS_EXPIRE`/`ACCESS_EXPIRE_EPOCH`: Unix time after which the
    /// stanza grants nothing.
    pub expire: Option<Duration>,
}

impl Stanza {
    /// A stanza for any source with these keys and fwknopd's defaults.
    pub fn new(keys: Keys) -> Stanza {
        Stanza {
            source: Vec::new(),
            keys,
            open_ports: Vec::new(),
            restrict_ports: Vec::new(),
            timeout: DEFAULT_ACCESS_TIMEOUT,
            require_source_address: false,
            require_username: None,
            expire: None,
        }
    }

    fn admits(&self, src: IpAddr) -> bool {
        self.source.is_empty() || self.source.iter().any(|n| n.contains(&src))
    }

    fn allows(&self, port: &Step) -> bool {
        !self.restrict_ports.contains(port)
            && (self.open_ports.is_empty() || self.open_ports.contains(port))
    }
}

/// An authorized request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Request {
    /// The index of the stanza that authorized it.
    pub stanza: usize,
    /// The address to open for: the message's, or the packet's source for
    /// `0.0.0.0`.
    pub addr: IpAddr,
    /// The ports asked for (each allowed by the stanza), each once.
    pub ports: Vec<Step>,
    /// How long the grant lasts.
    pub lifetime: Duration,
    /// The decoded message.
    pub message: Message,
}

/// A refusal: why, and which stanza got furthest (if any admitted the
/// source).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: Reject,
    /// The stanza whose check failed last.
    pub stanza: Option<usize>,
}

/// The verifier. See the [crate documentation](crate).
#[derive(Clone, Debug)]
pub struct Verifier {
    stanzas: Vec<Stanza>,
    window: Duration,
    replay: ReplayCache,
    stats: Stats,
}

impl Verifier {
    /// A verifier for `stanzas` (tried in order, as fwknopd does), with
    /// fwknopd's 120 s window and a replay cache of
    /// [`DEFAULT_REPLAY_CAPACITY`] packets.
    pub fn new(stanzas: Vec<Stanza>) -> Verifier {
        Verifier {
            stanzas,
            window: DEFAULT_WINDOW,
            replay: ReplayCache::new(DEFAULT_REPLAY_CAPACITY),
            stats: Stats::default(),
        }
    }

    /// Sets the timestamp window (fwknopd's `MAX_SPA_PACKET_AGE`).
    pub fn with_window(mut self, window: Duration) -> Verifier {
        self.window = window;
        self
    }

    /// Sets the replay cache's capacity.
    pub fn with_replay_capacity(mut self, capacity: usize) -> Verifier {
        self.replay = ReplayCache::new(capacity);
        self
    }

    /// The stanzas.
    pub fn stanzas(&self) -> &[Stanza] {
        &self.stanzas
    }

    /// Replaces the stanzas (a reload); the replay cache stays.
    pub fn set_stanzas(&mut self, stanzas: Vec<Stanza>) {
        self.stanzas = stanzas;
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The replay cache.
    pub fn replay_cache(&self) -> &ReplayCache {
        &self.replay
    }

    /// The replay cache to persist.
    pub fn saved_replay(&self) -> Vec<SavedDigest> {
        self.replay.saved()
    }

    /// Restores a persisted replay cache; returns unreadable entries.
    pub fn restore_replay(&mut self, saved: &[SavedDigest], now: Duration) -> Vec<String> {
        self.replay.restore(saved, now.as_secs())
    }

    /// Verifies one datagram's `payload` from `src`, at Unix time `now`.
    ///
    /// Order, cheapest first: the size and alphabet; the stanzas whose
    /// `SOURCE` admits `src`; for each, its HMAC (a packet without a valid
    /// HMAC costs one HMAC-SHA256 per admitting stanza and nothing more);
    /// for the first whose HMAC verifies, the replay cache, decryption,
    /// the digest and fields (the packet then enters the replay cache,
    /// whatever follows, as in fwknopd), the timestamp window, the
    /// stanza's expiry, its address, user and port rules.
    ///
    /// # Errors
    /// The [`Refusal`]; it is counted in [`stats`](Verifier::stats).
    pub fn verify(
        &mut self,
        now: Duration,
        src: IpAddr,
        payload: &[u8],
    ) -> Result<Request, Refusal> {
        let r = self.check(now, src, payload);
        match &r {
            Ok(_) => self.stats.accepted += 1,
            Err(e) => self.stats.count(e.reason),
        }
        r
    }

    fn check(&mut self, now: Duration, src: IpAddr, payload: &[u8]) -> Result<Request, Refusal> {
        let refuse = |reason, stanza| Refusal { reason, stanza };
        let outer = wire::outer(payload).map_err(|r| refuse(r, None))?;
        let mut admitted = false;
        let mut best: Option<Refusal> = None;
        for (i, stanza) in self.stanzas.iter().enumerate() {
            if !stanza.admits(src) {
                continue;
            }
            admitted = true;
            if !wire::hmac_ok(&stanza.keys, outer) {
                continue;
            }
            // Authenticated: from here on the packet is the key holder's.
            let d = digest(payload);
            if self.replay.contains(&d) {
                return Err(refuse(Reject::Replay, Some(i)));
            }
            let message = match wire::open(&stanza.keys, outer).and_then(|p| Message::decode(&p)) {
                Ok(m) => m,
                Err(reason) => {
                    // Another stanza may hold the same HMAC key and another
                    // encryption key.
                    best = Some(refuse(reason, Some(i)));
                    continue;
                }
            };
            let now_s = now.as_secs();
            let until = message
                .timestamp
                .max(now_s)
                .saturating_add(self.window.as_secs());
            if !self.replay.insert(d, until, now_s) {
                return Err(refuse(Reject::CacheFull, Some(i)));
            }
            return check_policy(stanza, i, now, self.window, src, message);
        }
        Err(best.unwrap_or(refuse(
            if admitted {
                Reject::Hmac
            } else {
                Reject::NoStanza
            },
            None,
        )))
    }
}

fn check_policy(
    stanza: &Stanza,
    i: usize,
    now: Duration,
    window: Duration,
    src: IpAddr,
    message: Message,
) -> Result<Request, Refusal> {
    let refuse = |reason| Refusal {
        reason,
        stanza: Some(i),
    };
    if now.as_secs().abs_diff(message.timestamp) > window.as_secs() {
        return Err(refuse(Reject::Stale));
    }
    if stanza.expire.is_some_and(|e| now > e) {
        return Err(refuse(Reject::Expired));
    }
    let addr = match message.access.addr {
        Some(a) => a,
        None if stanza.require_source_address => return Err(refuse(Reject::Address)),
        None => src,
    };
    if addr.is_unspecified() || addr.is_multicast() {
        return Err(refuse(Reject::Address));
    }
    if stanza
        .require_username
        .as_ref()
        .is_some_and(|u| *u != message.user)
    {
        return Err(refuse(Reject::User));
    }
    if !message.access.ports.iter().all(|p| stanza.allows(p)) {
        return Err(refuse(Reject::Port));
    }
    let mut ports = message.access.ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let lifetime = match message.client_timeout {
        Some(t) if t > 0 => Duration::from_secs(u64::from(t)),
        _ => stanza.timeout,
    };
    Ok(Request {
        stanza: i,
        addr,
        ports,
        lifetime,
        message,
    })
}
