//! The engine: one sans-IO state machine for a whole knock gateway.
//!
//! [`Engine`] owns everything that decides: the configuration's doors and
//! what each does when it opens ([`How`]), the [`Matcher`], time-derived
//! windows, the blacklist, every grant's and block's end, closes not yet
//! confirmed, and the state a restart must not forget ([`Snapshot`]). It
//! reads no clock, file, socket or process: time comes in as [`Now`] (the
//! monotonic and the wall clock, read once by the caller), and everything
//! the world must do comes out as [`Action`]s.
//!
//! ```text
//!  SPA datagram ─► handle_spa(now, src, payload): knock_spa::Verifier, then
//!                  the door's grant through the Matcher (handle_datagram routes)
//!  knock Event ─► handle_event(now, ev)      ┌──────────── Engine ────────────┐
//!  deadline    ─► handle_timeout(now)        │ Matcher (attempts, grants,     │
//!  SIGHUP      ─► handle_reload(now, config) │  cooldowns, blocks, windows)   │
//!  sink/command result ─► handle_applied(..) │ door plans: How per door       │
//!                                            │ closes in flight, snapshot     │
//!                                            └──┬─────────────────────────────┘
//!   poll_action() ─► Open/Extend/Close (How) · Block/Unblock · MarkUsed
//!                    Listen · Persist(Snapshot, Durability) · Log(level, line) · Report
//!   poll_timeout() ─► when to call handle_timeout next
//! ```
//!
//! ## Which state lives where
//! * Attempts, grants' lifetimes, cooldowns, blocks, used windows: the
//!   [`Matcher`] (knock-core). The engine never keeps a second clock for
//!   them: a grant closes when the matcher says `Close`.
//! * What a door does, the rendered commands, grants whose close is in
//!   flight or must be retried, the windows derived so far: the engine.
//! * Firewall rules and running commands: the world. Sinks only apply what
//!   the engine says; nftables' kernel timeouts remain as a safety net for
//!   a crash.
//! * On disk: the last [`Action::Persist`] snapshot (the shell writes it
//!   before applying the actions that follow it, so a grant is on disk
//!   before its door opens), and knockd's marks in one-time sequence files.
//!
//! ## Call order
//! After every `handle_*` call, drain [`Engine::poll_action`] until `None`
//! and apply the actions in order; then wait for a packet or until
//! [`Engine::poll_timeout`]. Time must not go backwards (it is clamped).
//!
//! ## Example
//! ```
//! use knock::engine::{Action, Engine, EngineOptions, Now};
//! use knock::config::Config;
//! use knock::core::{Event, TcpFlags, Timestamp};
//! use std::time::Duration;
//!
//! let conf = "[ssh]\n sequence = 7000,8000\n cmd_timeout = 5\n \
//!             start_command = /sbin/iptables -I INPUT -s %IP% -j ACCEPT\n \
//!             stop_command = /sbin/iptables -D INPUT -s %IP% -j ACCEPT\n";
//! let config = Config::from_knockd_str(conf, "knockd.conf").unwrap();
//! let at = |s: u64| Now::new(Timestamp::from_secs(s), Duration::from_secs(1_700_000_000 + s));
//! let mut engine = Engine::new(config, EngineOptions::default(), at(0)).unwrap();
//!
//! let (me, server) = ("198.18.0.2".parse().unwrap(), "198.18.0.1".parse().unwrap());
//! for port in [7000, 8000] {
//!     engine.handle_event(at(1), &Event::tcp(me, server, port, TcpFlags::SYN, Timestamp::from_secs(1)));
//! }
//! let actions: Vec<Action> = std::iter::from_fn(|| engine.poll_action()).collect();
//! // The grant is persisted before the door opens.
//! let persist = actions.iter().position(|a| matches!(a, Action::Persist(..))).unwrap();
//! let open = actions.iter().position(|a| matches!(a, Action::Open(_))).unwrap();
//! assert!(persist < open);
//!
//! // Five seconds later the engine closes it, with the stop command rendered.
//! assert_eq!(engine.poll_timeout(), Some(Timestamp::from_secs(6)));
//! engine.handle_timeout(at(6));
//! let close = std::iter::from_fn(|| engine.poll_action())
//!     .find_map(|a| match a { Action::Close(g) => Some(g), _ => None })
//!     .unwrap();
//! assert_eq!(
//!     close.how,
//!     knock::engine::How::Command { command: "/sbin/iptables -D INPUT -s 198.18.0.2 -j ACCEPT".into() }
//! );
//! ```

mod counters;
mod once;
mod plan;
pub mod quiet;
mod report;
mod snapshot;
mod spa;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use knock_config::derive::{window_of, window_start};
use knock_config::Config;
use knock_core::{
    Decision, Door, DoorId, Event, Limits, Listen, Matcher, Proto, Sequences, Step, Timestamp,
};
use knock_spa::Reject;

use counters::DoorCounts;
pub use counters::DoorStats;
use once::UsedOnce;
use plan::DoorPlan;
pub use plan::How;
pub use report::Report;
pub use snapshot::{SavedBlock, SavedGrant, SavedSequences, SavedWindows, Snapshot, SnapshotError};
use spa::SpaDoors;

/// One moment on both clocks: the monotonic one (the matcher's time) and
/// the wall clock (Unix time, for derived windows and what outlives the
/// process). The caller reads both once per call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub mono: Timestamp,
    /// Time since the Unix epoch.
    pub unix: Duration,
}

impl Now {
    /// The moment `mono` on the monotonic clock, `unix` on the wall clock.
    pub fn new(mono: Timestamp, unix: Duration) -> Now {
        Now { mono, unix }
    }

    /// The wall-clock time of monotonic time `t`.
    pub fn unix_of(&self, t: Timestamp) -> Duration {
        if t >= self.mono {
            self.unix + t.saturating_duration_since(self.mono)
        } else {
            self.unix
                .saturating_sub(self.mono.saturating_duration_since(t))
        }
    }

    /// The monotonic time of wall-clock time `unix`.
    pub fn mono_of(&self, unix: Duration) -> Timestamp {
        if unix >= self.unix {
            self.mono.saturating_add(unix - self.unix)
        } else {
            Timestamp::from_micros(
                self.mono.as_micros().saturating_sub(
                    u64::try_from((self.unix - unix).as_micros()).unwrap_or(u64::MAX),
                ),
            )
        }
    }
}

/// How important a [`Action::Log`] line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed: a door may be in the wrong state.
    Error,
    /// Something the operator should know.
    Warn,
    /// knockd's usual lines (stages, opens, closes).
    Info,
    /// Details (`-v`).
    Debug,
}

/// One grant, as a sink or command runner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantAction {
    /// The grant's id, unique across restarts.
    pub grant: u64,
    /// The door's name.
    pub door: Arc<str>,
    /// The knocker.
    pub src: IpAddr,
    /// When the grant ends (Unix time; `None`: never).
    pub until: Option<Duration>,
    /// What to do.
    pub how: How,
}

/// What an applied action was, for [`Engine::handle_applied`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Applied {
    /// [`Action::Open`] of this grant.
    Open(u64),
    /// [`Action::Extend`] of this grant.
    Extend(u64),
    /// [`Action::Close`] of this grant.
    Close(u64),
    /// [`Action::Block`] of this source.
    Block(IpAddr),
    /// [`Action::Unblock`] of this source.
    Unblock(IpAddr),
}

/// How durable an [`Action::Persist`] must be before what follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// On disk before what follows (fsync of the file and its directory):
    /// the snapshot records what must never be undone, a consumed one-time
    /// sequence or an SPA packet in the replay cache, which a power loss
    /// must not make usable again.
    Synced,
    /// In place (written and renamed over, no fsync): enough for grants
    /// and blocks, which must survive a crash of the process; a power loss
    /// takes the firewall's own state with it.
    Written,
}

/// Something the shell must do, in order.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Action {
    /// Open a grant (run its start command or add its firewall entries).
    Open(GrantAction),
    /// A grant lasts longer: refresh its firewall entries (native grants only).
    Extend(GrantAction),
    /// Close a grant (run its stop command or remove its entries).
    Close(GrantAction),
    /// Refuse new connections from `src` (within the sinks' reach,
    /// `blacklist_reach`; established ones pass) until `until` (Unix time).
    Block {
        /// The source.
        src: IpAddr,
        /// When the engine will unblock it.
        until: Duration,
    },
    /// Lift the block of `src`.
    Unblock {
        /// The source.
        src: IpAddr,
    },
    /// Mark the one-time sequence `sequence` of `door` used in its file
    /// (knockd's record of it; the engine's own is in the snapshot, which
    /// comes first). It comes before the `Open` that the sequence allowed:
    /// a shell that could record the use neither in the snapshot nor in the
    /// file must not apply that `Open` (see [`Engine::handle_unrecorded`]).
    MarkUsed {
        /// The door.
        door: Arc<str>,
        /// The sequence used.
        sequence: Vec<Step>,
        /// Unused sequences left.
        remaining: usize,
    },
    /// The knocks the capture must pass changed.
    Listen(Vec<Listen>),
    /// Write this snapshot (atomically), as durably as [`Durability`] says,
    /// before applying what follows. It comes before the actions of the
    /// same step, except when all of them are opens (or extensions) of
    /// nftables grants with an end: the kernel ends those by itself, so
    /// they do not wait for the write, which follows them.
    Persist(Snapshot, Durability),
    /// A log line (knockd's format, without the timestamp).
    Log(Level, String),
    /// One decision as a report (with [`EngineOptions::reports`]).
    Report(Report),
}

impl Action {
    /// What to tell [`Engine::handle_applied`] once this action was applied.
    pub fn applied(&self) -> Option<Applied> {
        match self {
            Action::Open(g) => Some(Applied::Open(g.grant)),
            Action::Extend(g) => Some(Applied::Extend(g.grant)),
            Action::Close(g) => Some(Applied::Close(g.grant)),
            Action::Block { src, .. } => Some(Applied::Block(*src)),
            Action::Unblock { src } => Some(Applied::Unblock(*src)),
            _ => None,
        }
    }
}

/// How the engine runs, beyond the configuration.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct EngineOptions {
    /// Matcher limits.
    pub limits: Limits,
    /// The seed of the matcher's hasher (a daemon passes a random one).
    pub seed: u64,
    /// Log every knock and invalidation (`-v`).
    pub verbose: bool,
    /// Ignore IPv6 knocks (`-4`).
    pub only_ipv4: bool,
    /// Emit an [`Action::Report`] per decision (`--events-json`, replay).
    pub reports: bool,
}

impl EngineOptions {
    /// Sets the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Sets the hasher seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Sets `verbose`.
    pub fn with_verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }
    /// Sets `only_ipv4`.
    pub fn with_only_ipv4(mut self, only_ipv4: bool) -> Self {
        self.only_ipv4 = only_ipv4;
        self
    }
    /// Sets `reports`.
    pub fn with_reports(mut self, reports: bool) -> Self {
        self.reports = reports;
        self
    }
}

/// Why the engine refused a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The configuration's doors are not valid for the matcher.
    #[error("invalid doors: {0}")]
    Doors(#[from] knock_core::DoorError),
    /// A knock door uses the SPA port: its knocks would be read as SPA
    /// packets.
    #[error("door [{door}] knocks on udp/{port}, the SPA port (spa_port): choose another port for one of them")]
    SpaPortClash {
        /// The knock door.
        door: String,
        /// The SPA port.
        port: u16,
    },
}

/// Refuses a knock door with a UDP step on the SPA port, when there are SPA
/// doors (datagrams to that port go to the verifier, not the matcher).
fn check_spa_port(config: &Config) -> Result<(), EngineError> {
    if config.doors.iter().all(|d| d.spa().is_none()) {
        return Ok(());
    }
    let port = config.options.spa_port;
    for d in config.core_doors() {
        let clash = d
            .all_sequences()
            .iter()
            .flatten()
            .any(|s| s.proto == Proto::Udp && s.port == port);
        if clash {
            return Err(EngineError::SpaPortClash { door: d.name, port });
        }
    }
    Ok(())
}

/// Counters beyond the matcher's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Opens, extends and blocks a sink or command refused.
    pub apply_failures: u64,
    /// Closes and unblocks that failed (each try).
    pub close_failures: u64,
    /// Grants restored from a snapshot.
    pub restored: u64,
    /// Per-source log lines (stages, timeouts) summarised instead of
    /// written, under a flood.
    pub log_suppressed: u64,
}

/// A grant with a pending close.
#[derive(Clone, Debug)]
struct Held {
    door: Arc<str>,
    src: IpAddr,
    until: Duration,
    close: Option<How>,
}

/// A close that was started and not confirmed.
#[derive(Clone, Debug)]
struct Closing {
    grant: GrantAction,
    tries: u32,
    /// When to try again (`None`: in flight).
    retry_at: Option<Timestamp>,
}

/// How often a failed close is tried before the engine gives up on it.
pub const CLOSE_TRIES: u32 = 5;

/// The first wait before a failed close is tried again (doubling).
pub const CLOSE_RETRY: Duration = Duration::from_secs(2);

/// The sans-IO gateway engine. See the [module documentation](self).
pub struct Engine {
    matcher: Matcher,
    plans: HashMap<DoorId, DoorPlan>,
    held: BTreeMap<u64, Held>,
    closing: BTreeMap<u64, Closing>,
    /// Derived doors: the window their sequences were derived for.
    windows: HashMap<DoorId, u64>,
    /// When the next derived window begins (Unix time).
    next_window: Option<Duration>,
    opts: EngineOptions,
    now: Now,
    out: VecDeque<Action>,
    staged: Vec<Action>,
    dirty: bool,
    /// What made the snapshot dirty must be synced to disk
    /// ([`Durability::Synced`]).
    durable: bool,
    listen_generation: u64,
    stats: EngineStats,
    /// The matcher's decisions counted by door.
    door_stats: DoorCounts,
    /// The configuration's doors as loaded, before used one-time sequences
    /// are taken out.
    base_doors: Vec<Door>,
    used_once: UsedOnce,
    /// The SPA doors' verifier (`None`: no SPA door).
    spa: Option<SpaDoors>,
    /// The SPA port of the last `Listen` sent.
    listen_spa: Option<u16>,
    /// The rate limit of per-source lines (stages, timeouts).
    quiet: quiet::Quiet,
    /// The last `Stage` decision (source, door, step): an `Open` follows
    /// its last stage.
    last_stage: Option<(IpAddr, DoorId, u8)>,
}

fn plans(matcher: &Matcher, config: &Config) -> HashMap<DoorId, DoorPlan> {
    config
        .doors
        .iter()
        .filter_map(|d| Some((matcher.door_id(&d.name)?, DoorPlan::new(d))))
        .collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Engine {
    /// Checks that `config` would start an engine (what
    /// [`handle_reload`](Self::handle_reload) checks first).
    ///
    /// # Errors
    /// Doors the matcher refuses.
    pub fn check(config: &Config, limits: Limits) -> Result<(), EngineError> {
        Matcher::new(config.core_doors(), limits)?;
        check_spa_port(config)
    }

    /// An engine for `config`, starting at `now`.
    ///
    /// # Errors
    /// Doors the matcher refuses.
    pub fn new(config: Config, opts: EngineOptions, now: Now) -> Result<Engine, EngineError> {
        check_spa_port(&config)?;
        let base_doors = config.core_doors();
        let mut matcher = Matcher::with_seed(base_doors.clone(), opts.limits, opts.seed)?;
        // A flood must not pause the engine to rehash a growing table.
        matcher.reserve_sources();
        matcher.set_blacklist(config.options.core_blacklist());
        let mut e = Engine {
            plans: plans(&matcher, &config),
            matcher,
            held: BTreeMap::new(),
            closing: BTreeMap::new(),
            windows: HashMap::new(),
            next_window: None,
            opts,
            now,
            out: VecDeque::new(),
            staged: Vec::new(),
            dirty: false,
            durable: false,
            listen_generation: u64::MAX,
            stats: EngineStats::default(),
            door_stats: DoorCounts::default(),
            base_doors,
            used_once: UsedOnce::default(),
            spa: None,
            listen_spa: None,
            quiet: quiet::Quiet::new(opts.seed),
            last_stage: None,
        };
        e.spa = SpaDoors::new(&config, &e.matcher, None);
        e.update_windows(true);
        e.finish();
        Ok(e)
    }

    // ---- getters -------------------------------------------------------

    /// The matcher (stats, doors, listen set).
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// The engine's own counters.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            log_suppressed: self.quiet.total(),
            ..self.stats
        }
    }

    /// The decisions of door `name` so far, counted by kind (zero for a door
    /// that decided nothing yet, or that is not configured).
    pub fn door_stats(&self, name: &str) -> DoorStats {
        self.door_stats.get(name)
    }

    /// What the capture must pass now: the doors' knocks and, with SPA
    /// doors, the datagrams to the SPA port.
    pub fn listen_set(&self) -> Vec<Listen> {
        let mut l = self.matcher.listen_set();
        if let Some(s) = &self.spa {
            l.push(s.listen());
        }
        l
    }

    /// The UDP port SPA packets are read from (`None`: no SPA door).
    pub fn spa_port(&self) -> Option<u16> {
        self.spa.as_ref().map(|s| s.port)
    }

    /// The SPA verifier's counters: requests accepted and datagrams
    /// refused by reason (`None`: no SPA door).
    pub fn spa_stats(&self) -> Option<knock_spa::Stats> {
        self.spa.as_ref().map(|s| *s.verifier.stats())
    }

    /// The state to persist, as of now.
    pub fn snapshot(&self) -> Snapshot {
        let now = self.now;
        let mut grants: Vec<SavedGrant> = Vec::new();
        for (&id, h) in &self.held {
            if let Some(close) = &h.close {
                grants.push(SavedGrant {
                    id,
                    door: h.door.to_string(),
                    src: h.src,
                    until_ms: millis(h.until),
                    close: close.clone(),
                    closing: false,
                });
            }
        }
        for (&id, c) in &self.closing {
            grants.push(SavedGrant {
                id,
                door: c.grant.door.to_string(),
                src: c.grant.src,
                until_ms: millis(c.grant.until.unwrap_or(now.unix)),
                close: c.grant.how.clone(),
                closing: true,
            });
        }
        let name = |id: DoorId| self.matcher.door(id).map(|d| d.name.clone());
        let blocks = self
            .matcher
            .blocks()
            .filter_map(|(door, src, until)| {
                Some(SavedBlock {
                    door: name(door)?,
                    src,
                    until_ms: millis(now.unix_of(until)),
                })
            })
            .collect();
        let mut used_windows: Vec<SavedWindows> = self
            .plans
            .iter()
            .filter(|(_, p)| p.derived.is_some())
            .filter_map(|(&id, p)| {
                let windows = self.matcher.used_windows(id);
                (!windows.is_empty()).then(|| SavedWindows {
                    door: p.name.to_string(),
                    windows,
                })
            })
            .collect();
        used_windows.sort_by(|a, b| a.door.cmp(&b.door));
        Snapshot {
            version: Snapshot::VERSION,
            next_grant: self.matcher.next_grant_id(),
            grants,
            blocks,
            used_windows,
            used_sequences: self.used_once.saved(),
            spa_replay: self
                .spa
                .as_ref()
                .map(|s| s.verifier.saved_replay())
                .unwrap_or_default(),
        }
    }

    // ---- inputs --------------------------------------------------------

    /// Restores what a previous run persisted: grants close on time (those
    /// overdue, of a door that is gone, or whose close was in flight close at
    /// once), blocks last until their end, used windows stay used, and grant
    /// ids continue after the last one issued.
    pub fn restore(&mut self, now: Now, snapshot: Snapshot) {
        self.tick(now);
        for bad in self.used_once.restore(&snapshot.used_sequences) {
            self.log(
                Level::Error,
                format!("state: unreadable used one-time sequence {bad}, skipped"),
            );
        }
        if let Err(e) = self.apply_used_once() {
            self.log(Level::Error, format!("state: used one-time sequences: {e}"));
        }
        self.matcher.reserve_grant_ids(snapshot.next_grant);
        if let Some(spa) = &mut self.spa {
            for bad in spa.verifier.restore_replay(&snapshot.spa_replay, now.unix) {
                self.staged.push(Action::Log(
                    Level::Error,
                    format!("state: unreadable SPA replay cache entry {bad}, skipped"),
                ));
            }
        }
        for w in &snapshot.used_windows {
            if let Some(id) = self.matcher.door_id(&w.door) {
                self.matcher.restore_used_windows(id, &w.windows);
            }
        }
        for b in snapshot.blocks {
            let until = Duration::from_millis(b.until_ms);
            let door = self.matcher.door_id(&b.door);
            let restored = until > now.unix
                && door.is_some_and(|d| self.matcher.restore_block(d, b.src, now.mono_of(until)));
            if !restored {
                self.log(Level::Info, format!("{}: block over, lifting it", b.src));
                self.staged.push(Action::Unblock { src: b.src });
            }
        }
        for g in snapshot.grants {
            let door: Arc<str> = Arc::from(g.door.as_str());
            let until = Duration::from_millis(g.until_ms);
            let id = self
                .matcher
                .door_id(&g.door)
                .filter(|_| !g.closing && until > now.unix);
            let restored = id.and_then(|d| {
                self.matcher
                    .restore_grant(d, g.src, now.mono_of(until), g.id)
            });
            self.stats.restored += 1;
            self.dirty = true;
            if let Some(grant) = restored {
                self.log(
                    Level::Info,
                    format!(
                        "{}: {}: grant restored, closes in {} s",
                        g.src,
                        door,
                        (until - now.unix).as_secs()
                    ),
                );
                self.held.insert(
                    grant.get(),
                    Held {
                        door,
                        src: g.src,
                        until,
                        close: Some(g.close),
                    },
                );
            } else {
                self.log(
                    Level::Info,
                    format!("{}: {}: restored grant is over, closing it", g.src, door),
                );
                self.start_close(GrantAction {
                    grant: g.id,
                    door,
                    src: g.src,
                    until: Some(until),
                    how: g.close,
                });
            }
        }
        self.reassert();
        self.finish();
    }

    /// Handles one knock seen at `now`.
    pub fn handle_event(&mut self, now: Now, event: &Event) {
        self.tick(now);
        if !(self.opts.only_ipv4 && event.src.is_ipv6()) {
            if self.opts.verbose {
                self.log(
                    Level::Debug,
                    format!(
                        "{}: {} {} port {}",
                        event.src, event.proto, event.tcp_flags, event.dst_port
                    ),
                );
            }
            self.matcher.handle_event(self.now.mono, event);
            self.decisions();
        }
        self.finish();
    }

    /// A hint that `events` are about to be handled, in that order: see
    /// [`Matcher::prefetch`](knock_core::Matcher::prefetch). Changes
    /// nothing that can be observed.
    #[inline]
    pub fn prefetch<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        self.matcher.prefetch(events.into_iter().map(|e| e.src));
    }

    /// Handles one captured datagram or segment: an SPA packet (UDP to
    /// [`spa_port`](Self::spa_port), with its `payload`) goes to
    /// [`handle_spa`](Self::handle_spa), anything else is a knock
    /// ([`handle_event`](Self::handle_event)).
    pub fn handle_datagram(&mut self, now: Now, event: &Event, payload: Option<&[u8]>) {
        match self.spa_port() {
            Some(p) if event.proto == Proto::Udp && event.dst_port == p => {
                self.handle_spa(now, event.src, payload.unwrap_or_default());
            }
            _ => self.handle_event(now, event),
        }
    }

    /// Handles one SPA packet from `src`: verified by the SPA doors'
    /// stanzas; an authorized request opens (or extends) its door's grant
    /// for the address it names, through the matcher like a knock door's
    /// open. Refusals are counted ([`spa_stats`](Self::spa_stats)) and
    /// logged: at `Warn` those of packets whose HMAC verified (replays,
    /// stale timestamps, a wrong encryption key, a policy refusal), at most
    /// one a second (the next says how many were left out), at `Debug`
    /// with `-v` the rest (junk and wrong HMAC keys: a flood must not flood
    /// the log).
    pub fn handle_spa(&mut self, now: Now, src: IpAddr, payload: &[u8]) {
        self.tick(now);
        let unix = self.now.unix;
        let Some(spa) = self
            .spa
            .as_mut()
            .filter(|_| !(self.opts.only_ipv4 && src.is_ipv6()))
        else {
            self.finish();
            return;
        };
        let before = spa.verifier.replay_cache().inserted();
        let verdict = spa.verifier.verify(unix, src, payload);
        let cached = spa.verifier.replay_cache().inserted() != before;
        self.dirty |= cached;
        self.durable |= cached;
        match verdict {
            Ok(req) => {
                let stanza = spa.doors.get(req.stanza);
                let name = stanza.map_or_else(|| Arc::from("?"), |s| s.name.clone());
                let doors = stanza.map_or_else(
                    || Err(format!("{name}: SPA stanza not loaded")),
                    |s| s.for_ports(&req.ports),
                );
                let ports: Vec<String> = req
                    .ports
                    .iter()
                    .map(|p| format!("{}/{}", p.proto, p.port))
                    .collect();
                let addr = req.addr;
                self.log(
                    Level::Info,
                    format!(
                        "{src}: {name}: SPA request of user {} for {addr} {}",
                        req.message.user,
                        ports.join(",")
                    ),
                );
                // One door per port asked for (or the stanza's single
                // door): the grant is exactly the access asked for.
                match doors {
                    Ok(doors) => {
                        for (door_name, d) in doors {
                            let lifetime = self
                                .matcher
                                .door(d)
                                .and_then(|x| x.grant_lifetime)
                                .map(|_| req.lifetime);
                            if !self
                                .matcher
                                .handle_authorized(self.now.mono, d, addr, lifetime)
                            {
                                self.log(Level::Error, format!("{door_name}: SPA door not loaded"));
                            }
                        }
                    }
                    Err(fault) => self.log(Level::Error, format!("{src}: {fault}: nothing opened")),
                }
                self.decisions();
            }
            Err(r) => {
                let quiet = matches!(r.reason, Reject::NotSpa | Reject::NoStanza | Reject::Hmac);
                let name = r
                    .stanza
                    .and_then(|i| spa.doors.get(i))
                    .map_or_else(String::new, |s| format!("{}: ", s.name));
                let line = format!("{src}: {name}SPA packet refused: {}", r.reason);
                if !quiet {
                    if let Some(left_out) = spa.warn_due(self.now.mono) {
                        let more = if left_out > 0 {
                            format!(" ({left_out} more refusals in the last second not logged)")
                        } else {
                            String::new()
                        };
                        self.log(Level::Warn, line + &more);
                    }
                } else if self.opts.verbose {
                    self.log(Level::Debug, line);
                }
            }
        }
        self.finish();
    }

    /// Handles the passage of time: grants, blocks and attempts that are
    /// over, derived windows that begin, closes to retry.
    pub fn handle_timeout(&mut self, now: Now) {
        self.tick(now);
        self.matcher.handle_timeout(self.now.mono);
        self.decisions();
        let due: Vec<u64> = self
            .closing
            .iter()
            .filter(|(_, c)| c.retry_at.is_some_and(|t| t <= self.now.mono))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            if let Some(c) = self.closing.get_mut(&id) {
                c.retry_at = None;
                let g = c.grant.clone();
                self.staged.push(Action::Close(g));
            }
        }
        self.finish();
    }

    /// Replaces the configuration (SIGHUP). Doors that did not change keep
    /// their attempts; every grant stays and closes on time as it was
    /// opened. On error nothing changes.
    ///
    /// # Errors
    /// Doors the matcher refuses.
    pub fn handle_reload(&mut self, now: Now, config: Config) -> Result<(), EngineError> {
        self.tick(now);
        check_spa_port(&config)?;
        let base_doors = config.core_doors();
        let mut used_once = self.used_once.clone();
        used_once.prune(&base_doors);
        self.matcher.replace_doors(used_once.filter(&base_doors))?;
        self.base_doors = base_doors;
        self.used_once = used_once;
        self.matcher.set_blacklist(config.options.core_blacklist());
        self.plans = plans(&self.matcher, &config);
        let matcher = &self.matcher;
        self.door_stats
            .retain(|name| matcher.door_id(name).is_some());
        self.spa = SpaDoors::new(&config, &self.matcher, self.spa.take());
        self.owe_marks();
        self.reassert();
        self.windows.clear();
        self.update_windows(true);
        self.decisions();
        self.dirty = true;
        self.log(Level::Info, "configuration reloaded".to_owned());
        self.finish();
        Ok(())
    }

    /// The shell did not apply the `Open` of grant `grant` because the
    /// one-time sequence that allowed it could be recorded neither in the
    /// persisted snapshot nor in its file (`why`): a restart could accept
    /// that sequence again, so the door stays shut. The grant needs no close.
    pub fn handle_unrecorded(&mut self, now: Now, grant: u64, why: &str) {
        self.tick(now);
        self.stats.apply_failures += 1;
        if let Some(h) = self.held.remove(&grant) {
            self.dirty = true;
            self.log(
                Level::Error,
                format!(
                    "{}: {}: not opening: the one-time sequence used could not be recorded ({why})",
                    h.src, h.door
                ),
            );
        } else {
            self.log(
                Level::Error,
                format!(
                    "grant {grant}: not opening: the one-time sequence used could not be recorded ({why})"
                ),
            );
        }
        self.finish();
    }

    /// The outcome of an applied [`Action`] (`Err`: what went wrong).
    /// Failures are logged as errors; a failed close is tried again
    /// ([`CLOSE_TRIES`] times, [`CLOSE_RETRY`] apart, doubling) and stays in
    /// the snapshot until it succeeds.
    pub fn handle_applied(&mut self, now: Now, applied: Applied, result: Result<(), String>) {
        self.tick(now);
        match (applied, result) {
            (Applied::Close(id), Ok(())) => self.dirty |= self.closing.remove(&id).is_some(),
            (Applied::Close(id), Err(e)) => {
                self.stats.close_failures += 1;
                let mono = self.now.mono;
                let line = match self.closing.get_mut(&id) {
                    Some(c) if c.tries + 1 < CLOSE_TRIES => {
                        c.tries += 1;
                        let wait = CLOSE_RETRY * (1 << (c.tries - 1));
                        c.retry_at = Some(mono.saturating_add(wait));
                        Some(format!(
                            "{}: {}: close failed ({e}); trying again in {} s",
                            c.grant.src,
                            c.grant.door,
                            wait.as_secs()
                        ))
                    }
                    Some(_) => self.closing.remove(&id).map(|c| {
                        self.dirty = true;
                        format!(
                            "{}: {}: close failed {CLOSE_TRIES} times ({e}); giving up: {}",
                            c.grant.src,
                            c.grant.door,
                            describe(&c.grant.how)
                        )
                    }),
                    None => None,
                };
                if let Some(line) = line {
                    self.log(Level::Error, line);
                }
            }
            (applied @ (Applied::Open(id) | Applied::Extend(id)), Err(e)) => {
                self.stats.apply_failures += 1;
                let who = self
                    .held
                    .get(&id)
                    .map(|h| format!("{}: {}", h.src, h.door))
                    .unwrap_or_else(|| format!("grant {id}"));
                let what = match applied {
                    Applied::Open(_) => "open failed",
                    _ => "the grant is no longer in the firewall",
                };
                self.log(Level::Error, format!("{who}: {what}: {e}"));
            }
            (Applied::Block(src), Err(e)) => {
                self.stats.apply_failures += 1;
                self.log(Level::Error, format!("{src}: block failed: {e}"));
            }
            (Applied::Unblock(src), Err(e)) => {
                self.stats.close_failures += 1;
                self.log(Level::Error, format!("{src}: unblock failed: {e}"));
            }
            _ => {}
        }
        self.finish();
    }

    /// Stops: with `close_all`, closes every open grant now; otherwise the
    /// grants stay, persisted, for the next start.
    pub fn handle_shutdown(&mut self, now: Now, close_all: bool) {
        self.tick(now);
        if close_all {
            let held = std::mem::take(&mut self.held);
            for (grant, h) in held {
                self.log(
                    Level::Info,
                    format!("{}: {}: closing at exit", h.src, h.door),
                );
                if let Some(how) = h.close {
                    self.start_close(GrantAction {
                        grant,
                        door: h.door,
                        src: h.src,
                        until: Some(h.until),
                        how,
                    });
                }
            }
        }
        self.dirty = true;
        if let Some(line) = self.quiet.summary(self.now.mono, true) {
            self.log(Level::Warn, line);
        }
        self.log(Level::Info, "shutting down".to_owned());
        self.finish();
    }

    // ---- outputs -------------------------------------------------------

    /// The next action, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// Whether [`poll_action`](Self::poll_action) has an action to give.
    #[must_use]
    #[inline]
    pub fn has_actions(&self) -> bool {
        !self.out.is_empty()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let window = self.next_window.map(|w| self.now.mono_of(w));
        let retry = self.closing.values().filter_map(|c| c.retry_at).min();
        [
            self.matcher.poll_timeout(),
            window,
            retry,
            self.quiet.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- internals -----------------------------------------------------

    fn tick(&mut self, now: Now) {
        if now.mono >= self.now.mono {
            self.now = now;
        }
        if self.next_window.is_some_and(|w| self.now.unix >= w) {
            self.update_windows(false);
        }
    }

    fn log(&mut self, level: Level, line: String) {
        self.staged.push(Action::Log(level, line));
    }

    fn report(&self, event: &'static str, door: &Arc<str>, src: Option<IpAddr>) -> Report {
        Report {
            event,
            door: door.to_string(),
            src,
            time: report::secs(self.now.unix),
            ..Report::default()
        }
    }

    /// Derives the sequences of windows w-1, w and w+1 for every derived
    /// door whose window changed (every one with `force`).
    fn update_windows(&mut self, force: bool) {
        let unix = self.now.unix;
        let mut next: Option<Duration> = None;
        let mut lines = Vec::new();
        let mut derived: Vec<(DoorId, &DoorPlan)> = self
            .plans
            .iter()
            .filter(|(_, p)| p.derived.is_some())
            .map(|(&id, p)| (id, p))
            .collect();
        derived.sort_by_key(|(id, _)| *id);
        let mut updates = Vec::new();
        for (id, plan) in derived {
            let Some(d) = &plan.derived else { continue };
            let w = window_of(unix, d.period);
            let start = window_start(w.saturating_add(1), d.period);
            next = Some(next.map_or(start, |n| n.min(start)));
            if !force && self.windows.get(&id) == Some(&w) {
                continue;
            }
            match d.windows_around(&plan.name, unix) {
                Some(pairs) => updates.push((id, w, pairs, plan.name.clone())),
                None => lines.push((Level::Error, format!("{}: secret not loaded", plan.name))),
            }
        }
        self.next_window = next;
        for (id, w, pairs, name) in updates {
            match self.matcher.set_windows(id, pairs) {
                Ok(()) => {
                    self.windows.insert(id, w);
                    if self.opts.verbose {
                        lines.push((
                            Level::Debug,
                            format!("{name}: sequences of window {w} derived"),
                        ));
                    }
                }
                Err(e) => lines.push((Level::Error, format!("{name}: cannot set windows: {e}"))),
            }
        }
        for (level, line) in lines {
            self.log(level, line);
        }
    }

    /// Starts closing a grant: remembered until confirmed.
    fn start_close(&mut self, grant: GrantAction) {
        self.closing.insert(
            grant.grant,
            Closing {
                grant: grant.clone(),
                tries: 0,
                retry_at: None,
            },
        );
        self.dirty = true;
        self.staged.push(Action::Close(grant));
    }

    /// Builds the matcher's doors again without the used one-time
    /// sequences (after a restore added some), keeping each door's plan,
    /// and asks for the marks still owed.
    fn apply_used_once(&mut self) -> Result<(), EngineError> {
        self.used_once.prune(&self.base_doors);
        if self.used_once.iter().next().is_none() {
            return Ok(());
        }
        self.matcher
            .replace_doors(self.used_once.filter(&self.base_doors))?;
        let plans = std::mem::take(&mut self.plans);
        self.plans = plans
            .into_values()
            .filter_map(|p| Some((self.matcher.door_id(&p.name)?, p)))
            .collect();
        self.owe_marks();
        Ok(())
    }

    /// A `MarkUsed` for every used one-time sequence whose file still lists
    /// it as unused (a mark that failed, or a file edited back).
    fn owe_marks(&mut self) {
        let owed: Vec<(Arc<str>, Vec<Step>)> = self
            .used_once
            .iter()
            .map(|(door, s)| (Arc::from(door), s.clone()))
            .collect();
        for (door, sequence) in owed {
            let remaining = self
                .matcher
                .door_id(&door)
                .and_then(|id| self.matcher.door(id))
                .map_or(0, |d| match &d.sequences {
                    Sequences::OneTime { list, next } => list.len().saturating_sub(*next),
                    _ => 0,
                });
            self.staged.push(Action::MarkUsed {
                door,
                sequence,
                remaining,
            });
        }
    }

    /// Asks the firewall to hold again every native grant and block the
    /// engine holds, as `Extend` and `Block` (both idempotent): after a
    /// restore (a reboot empties the kernel's sets) and a reload (a door's
    /// sets may have been built anew, the blocklist may have moved to
    /// another backend). Commands are not run again.
    fn reassert(&mut self) {
        for (&id, h) in &self.held {
            if let Some(how @ How::Native { .. }) = &h.close {
                self.staged.push(Action::Extend(GrantAction {
                    grant: id,
                    door: h.door.clone(),
                    src: h.src,
                    until: Some(h.until),
                    how: how.clone(),
                }));
            }
        }
        let now = self.now;
        let blocks: Vec<Action> = self
            .matcher
            .blocks()
            .map(|(_, src, until)| Action::Block {
                src,
                until: now.unix_of(until),
            })
            .collect();
        self.staged.extend(blocks);
    }

    /// Turns the matcher's decisions into actions.
    fn decisions(&mut self) {
        while let Some(d) = self.matcher.poll_decision() {
            self.decision(d);
        }
    }

    fn decision(&mut self, d: Decision) {
        // The hot path of a flood: a stage line that is not written needs
        // nothing else (not even the door's name).
        if let Decision::Stage { door, src, step } = d {
            self.last_stage = Some((src, door, step));
            if !self.opts.reports && !self.quiet.admit(self.now.mono, src) {
                return;
            }
        }
        let name: Arc<str> = match self.plans.get(&d.door()) {
            Some(p) => p.name.clone(),
            None => Arc::from(
                self.matcher
                    .door(d.door())
                    .map_or_else(|| d.door().to_string(), |x| x.name.clone()),
            ),
        };
        self.door_stats.count(&name, &d);
        let now = self.now;
        let reports = self.opts.reports;
        match d {
            Decision::Stage { src, step, .. } => {
                // Without reports, `admit` let it through above.
                let admitted = if reports {
                    let mut r = self.report("stage", &name, Some(src));
                    r.step = Some(step);
                    self.staged.push(Action::Report(r));
                    self.quiet.admit(now.mono, src)
                } else {
                    true
                };
                if admitted {
                    self.quiet.written(now.mono, src, &name, step);
                    self.log(Level::Info, format!("{src}: {name}: Stage {step}"));
                }
            }
            Decision::Open {
                door,
                src,
                grant,
                until,
            } => {
                let plan = self.plans.get(&door);
                let open = plan.and_then(|p| p.opening(src));
                let close = plan.and_then(|p| p.closing(src));
                let until = until.map(|t| now.unix_of(t));
                if reports {
                    let mut r = self.report("open", &name, Some(src));
                    r.grant = Some(grant.get());
                    r.until = Some(until.map(report::secs));
                    let r = r.with_how(open.as_ref(), src, true);
                    self.staged.push(Action::Report(r));
                }
                // Stages a flood kept out of the log are written now.
                let steps = match self.last_stage.take() {
                    Some((s, d, step)) if s == src && d == door => step,
                    _ => 0,
                };
                for step in self.quiet.missing_stages(now.mono, src, &name, steps) {
                    self.log(Level::Info, format!("{src}: {name}: Stage {step}"));
                }
                self.log(Level::Info, format!("{src}: {name}: OPEN SESAME"));
                if let Some(until) = until {
                    self.held.insert(
                        grant.get(),
                        Held {
                            door: name.clone(),
                            src,
                            until,
                            close,
                        },
                    );
                    self.dirty = true;
                }
                if let Some(how) = open {
                    if let How::Command { command } = &how {
                        self.log(Level::Info, format!("{name}: running command: {command}"));
                    }
                    self.staged.push(Action::Open(GrantAction {
                        grant: grant.get(),
                        door: name,
                        src,
                        until,
                        how,
                    }));
                }
            }
            Decision::Extended {
                src, grant, until, ..
            } => {
                let until = now.unix_of(until);
                if reports {
                    let mut r = self.report("extended", &name, Some(src));
                    r.grant = Some(grant.get());
                    r.until = Some(Some(report::secs(until)));
                    self.staged.push(Action::Report(r));
                }
                self.log(Level::Info, format!("{src}: {name}: grant extended"));
                if let Some(h) = self.held.get_mut(&grant.get()) {
                    h.until = until;
                    self.dirty = true;
                    // Commands have nothing to refresh; native entries carry
                    // a kernel timeout (the crash safety net) to push back.
                    let native = self
                        .plans
                        .get(&d.door())
                        .and_then(|p| p.opening(src))
                        .filter(|h| matches!(h, How::Native { .. }));
                    if let Some(how) = native {
                        self.staged.push(Action::Extend(GrantAction {
                            grant: grant.get(),
                            door: name,
                            src,
                            until: Some(until),
                            how,
                        }));
                    }
                }
            }
            Decision::Close { src, grant, .. } => {
                let held = self.held.remove(&grant.get());
                let close = held.as_ref().and_then(|h| h.close.clone());
                if reports {
                    let mut r = self.report("close", &name, Some(src));
                    r.grant = Some(grant.get());
                    let r = r.with_how(close.as_ref(), src, false);
                    self.staged.push(Action::Report(r));
                }
                self.log(Level::Info, format!("{src}: {name}: command timeout"));
                self.dirty |= held.is_some();
                if let (Some(h), Some(how)) = (held, close) {
                    if let How::Command { command } = &how {
                        self.log(Level::Info, format!("{name}: running command: {command}"));
                    }
                    self.start_close(GrantAction {
                        grant: grant.get(),
                        door: h.door,
                        src,
                        until: Some(h.until),
                        how,
                    });
                }
            }
            Decision::Expired { src, step, .. } => {
                if reports {
                    let mut r = self.report("expired", &name, Some(src));
                    r.step = Some(step);
                    self.staged.push(Action::Report(r));
                }
                if self.quiet.admit(now.mono, src) {
                    self.log(
                        Level::Info,
                        format!("{src}: {name}: sequence timeout (stage {step})"),
                    );
                }
            }
            Decision::Invalidated { src, step, .. } => {
                if reports {
                    let mut r = self.report("invalidated", &name, Some(src));
                    r.step = Some(step);
                    self.staged.push(Action::Report(r));
                }
                if self.opts.verbose && self.quiet.admit(now.mono, src) {
                    self.log(
                        Level::Info,
                        format!("{src}: {name}: sequence invalid (stage {step})"),
                    );
                }
            }
            Decision::SequenceConsumed {
                door,
                index,
                remaining,
            } => {
                let Some(sequence) = self.matcher.door(door).and_then(|d| match &d.sequences {
                    Sequences::OneTime { list, .. } => list.get(index).cloned(),
                    _ => None,
                }) else {
                    return;
                };
                if reports {
                    let mut r = self.report("sequence_consumed", &name, None);
                    r.index = Some(index);
                    r.remaining = Some(remaining);
                    r.would_mark = self
                        .plans
                        .get(&door)
                        .and_then(|p| p.one_time_line(&sequence));
                    self.staged.push(Action::Report(r));
                }
                // Recorded in the snapshot, which goes out before any action
                // of this batch; the mark goes before the open it allowed.
                self.used_once.record(&name, sequence.clone());
                self.dirty = true;
                self.durable = true;
                let at = self
                    .staged
                    .iter()
                    .rposition(|a| matches!(a, Action::Open(g) if g.door == name))
                    .unwrap_or(self.staged.len());
                self.staged.insert(
                    at,
                    Action::MarkUsed {
                        door: name,
                        sequence,
                        remaining,
                    },
                );
            }
            Decision::Blocked { src, until, .. } => {
                let until_unix = now.unix_of(until);
                if reports {
                    let mut r = self.report("blocked", &name, Some(src));
                    r.until = Some(Some(report::secs(until_unix)));
                    self.staged.push(Action::Report(r));
                }
                let secs = (until.saturating_duration_since(now.mono).as_millis() + 500) / 1000;
                self.log(
                    Level::Warn,
                    format!("{src}: {name}: blacklisted for {secs} s (too many invalid knocks)"),
                );
                self.dirty = true;
                self.staged.push(Action::Block {
                    src,
                    until: until_unix,
                });
            }
            Decision::Unblocked { src, .. } => {
                if reports {
                    let r = self.report("unblocked", &name, Some(src));
                    self.staged.push(Action::Report(r));
                }
                self.log(
                    Level::Info,
                    format!("{src}: {name}: blacklist entry expired"),
                );
                self.dirty = true;
                self.staged.push(Action::Unblock { src });
            }
            _ => {}
        }
    }

    /// Ends a call: the snapshot first (when something persistent changed),
    /// then the call's actions, then the listen set if it changed.
    fn finish(&mut self) {
        if let Some(line) = self.quiet.summary(self.now.mono, false) {
            self.log(Level::Warn, line);
        }
        if std::mem::take(&mut self.dirty) {
            let durability = if std::mem::take(&mut self.durable) {
                Durability::Synced
            } else {
                Durability::Written
            };
            // The snapshot goes first unless nothing staged needs it to:
            // see `needs_record_first`.
            let first =
                durability == Durability::Synced || self.staged.iter().any(needs_record_first);
            let persist = Action::Persist(self.snapshot(), durability);
            if first {
                self.out.push_back(persist);
                self.out.extend(self.staged.drain(..));
            } else {
                self.out.extend(self.staged.drain(..));
                self.out.push_back(persist);
            }
        } else if !self.staged.is_empty() {
            // (An `Option<Action>` moved on every knock is a 272-byte copy.)
            self.out.extend(self.staged.drain(..));
        }
        let g = self.matcher.listen_generation();
        let spa = self.spa_port();
        if g != self.listen_generation || spa != self.listen_spa {
            self.listen_generation = g;
            self.listen_spa = spa;
            self.out.push_back(Action::Listen(self.listen_set()));
        }
    }
}

/// Whether `a` must wait for the snapshot of the same step to be written:
/// a crash between the two must not leave it applied and unrecorded. Only
/// the opening (or extending) of an nftables element with an end does not:
/// the kernel removes the element at its end by itself, so a grant lost
/// with the process still closes on time, and the open is not delayed by
/// the write (the rename alone costs 0.1-0.4 ms on this kind of disk).
/// Closes must wait: one applied but unrecorded would be held again by the
/// next start. Log lines, reports and listen sets change nothing outside.
fn needs_record_first(a: &Action) -> bool {
    match a {
        Action::Open(g) | Action::Extend(g) => {
            !(g.until.is_some()
                && matches!(
                    g.how,
                    How::Native {
                        firewall: knock_config::FirewallKind::Nftables,
                        ..
                    }
                ))
        }
        Action::Log(..) | Action::Report(_) | Action::Listen(_) => false,
        _ => true,
    }
}

/// A grant's `How`, for messages.
fn describe(how: &How) -> String {
    match how {
        How::Command { command } => format!("run `{command}` by hand"),
        How::Native {
            firewall, ports, ..
        } => format!(
            "remove its {} entries for {} by hand",
            firewall.as_str(),
            ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}
