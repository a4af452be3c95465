//! The daemon shell: reads the clocks, waits for a packet or the engine's
//! next deadline, feeds the [`Engine`] and applies its [`Action`]s. The
//! `knockd` example is command-line glue around [`Daemon`].
//!
//! Everything that decides lives in the engine; this module only moves
//! bytes: the capture source in, the firewall sinks, the command runner,
//! the log, the state file and the one-time sequence files out. There are
//! no periodic wake-ups when idle: the loop sleeps in the capture source
//! until a packet, the engine's deadline, a finished command (the runner
//! wakes the loop through [`MultiSource::set_waker`](knock_capture::MultiSource::set_waker))
//! or a signal.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use knock_capture::{CaptureError, Captured, Next, Source, Widening};
use knock_config::{AtomicFile, BlacklistReach, Config, FirewallKind, SequenceFile};
use knock_core::{Limits, Listen, Timestamp};
use knock_firewall::{CommandRunner, FirewallSink, Grant, Job, RunnerConfig};

mod log;
pub mod metrics;
mod notify;
mod placement;
pub use log::Logger;
pub use metrics::{DoorMetrics, MetricsSnapshot};
pub use placement::{place_doors, Placed, Placements, Refused};

use crate::engine::{
    Action, Applied, Durability, Engine, EngineError, EngineOptions, GrantAction, How, Level, Now,
    Snapshot,
};

/// A firewall sink as the daemon holds it.
pub type BoxedSink = Box<dyn FirewallSink<Error = knock_firewall::Error> + Send>;

/// Errors that stop the daemon from starting (running errors are logged).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration is not valid for the engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A firewall sink could not be set up.
    #[error("firewall: {0}")]
    Firewall(#[from] knock_firewall::Error),
    /// The capture source failed.
    #[error("capture: {0}")]
    Capture(#[from] CaptureError),
    /// A log file could not be opened.
    #[error("log file {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file the daemon must be able to write cannot be written (a
    /// one-time sequence file, the state directory).
    #[error("{what} cannot be written: {source}")]
    Unwritable {
        /// What it is for.
        what: String,
        /// Why.
        source: Box<knock_config::ConfigError>,
    },
    /// A native door whose grants the host's firewall would drop.
    #[error(transparent)]
    Refused(#[from] Box<Refused>),
    /// A door needs a firewall this binary was built without.
    #[error(
        "[{door}] firewall = nftables: this knockd was built without the nftables feature; \
         use firewall = iptables or auto (or a build with the default features)"
    )]
    NotBuilt {
        /// The door.
        door: String,
    },
    /// The metrics endpoint cannot be served.
    #[error("metrics: cannot serve on {addr}: {source}")]
    Metrics {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The state directory cannot be used.
    #[error("state directory {path}: {source}")]
    State {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How the daemon runs, beyond what knockd.conf says.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DaemonOptions {
    /// Print one JSON object per decision on stdout (`--events-json`).
    pub events_json: bool,
    /// Ignore IPv6 knocks (`-4`).
    pub only_ipv4: bool,
    /// Log every knock and decision (`-v`).
    pub verbose: bool,
    /// Where the engine's state is kept across restarts.
    pub state_dir: PathBuf,
    /// Matcher limits.
    pub limits: Limits,
    /// Close every open grant at exit instead of keeping it for the next start.
    pub close_at_exit: bool,
    /// A command still running after this long is killed and reported.
    pub command_timeout: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            events_json: false,
            only_ipv4: false,
            verbose: false,
            state_dir: PathBuf::from("/var/lib/knock-rs"),
            limits: Limits::default(),
            close_at_exit: false,
            command_timeout: Duration::from_secs(60),
        }
    }
}

/// The clocks, read once per loop turn.
#[derive(Clone, Copy, Debug)]
struct Clock {
    start: Instant,
}

impl Clock {
    fn now(&self) -> Now {
        let mono = Timestamp::from_micros(
            u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX),
        );
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Now::new(mono, unix)
    }

    fn instant(&self, t: Timestamp) -> Instant {
        self.start + Duration::from_micros(t.as_micros())
    }
}

/// The nftables table our sink keeps.
#[cfg(feature = "nftables")]
fn nft_config(config: &Config) -> knock_firewall::NftConfig {
    let mut nft = knock_firewall::NftConfig::default();
    for d in &config.doors {
        if d.firewall == FirewallKind::Nftables {
            nft.doors.push(
                knock_firewall::NftDoor::new(d.name.clone(), d.open.clone(), d.grant_lifetime())
                    .with_prefix(d.grant_prefix.v4, d.grant_prefix.v6),
            );
        }
    }
    nft.blocklist = blocking_firewall(config) == Some(FirewallKind::Nftables);
    nft.block_reach = block_reach(config);
    nft
}

/// The backend that holds the blocklist's blocks, if the config has one:
/// nftables when it is built in and a door uses it or no door uses
/// iptables, else iptables.
pub fn blocking_firewall(config: &Config) -> Option<FirewallKind> {
    config.options.blacklist.as_ref()?;
    let uses = |k: FirewallKind| config.doors.iter().any(|d| d.firewall == k);
    let nft = cfg!(feature = "nftables")
        && (uses(FirewallKind::Nftables) || !uses(FirewallKind::Iptables));
    Some(if nft {
        FirewallKind::Nftables
    } else {
        FirewallKind::Iptables
    })
}

/// Builds the native sinks the config's doors ask for (and, with a
/// `blacklist`, one for the blocklist if no door has one). Commands need
/// no sink: the daemon's [`CommandRunner`] runs what the engine renders.
///
/// The nftables table is replaced in one transaction: if the kernel
/// refuses it, the table that was there stays as it was, guard, grants and
/// blocks included. A config that no longer uses nftables deletes our
/// table, if there is one (no guard of an old door stays behind); the
/// sink is kept to close the grants and lift the blocks that were in it.
///
/// `iptables_legacy`: our iptables chain goes to the legacy tables
/// ([`Placements::iptables_legacy`]).
///
/// # Errors
/// A sink that cannot be set up.
pub fn build_sinks(
    config: &Config,
    iptables_legacy: bool,
) -> Result<HashMap<FirewallKind, BoxedSink>, DaemonError> {
    let mut sinks: HashMap<FirewallKind, BoxedSink> = HashMap::new();
    check_built(config)?;
    // Our chain left by an earlier configuration needs the sink too (to
    // close what it holds; it is removed once empty). Without iptables on
    // the host there is no chain.
    let leftover = || {
        knock_firewall::IptablesSink::chain_exists(&knock_firewall::IptablesConfig {
            legacy: iptables_legacy,
            ..knock_firewall::IptablesConfig::default()
        })
        .unwrap_or(false)
    };
    if iptables_used(config) || leftover() {
        let sink = knock_firewall::IptablesSink::new(knock_firewall::IptablesConfig {
            block_reach: block_reach(config),
            legacy: iptables_legacy,
            ..knock_firewall::IptablesConfig::default()
        })?;
        sinks.insert(FirewallKind::Iptables, Box::new(sink));
    }
    #[cfg(feature = "nftables")]
    {
        let nft = nft_config(config);
        // Without nftables doors, only a table left by an earlier config
        // needs the sink (to delete it). Not being allowed to look keeps
        // whatever is there: a guard stays closed.
        let leftover = || match knock_firewall::NftSink::table_exists(&nft.table) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(
                    "cannot look for an nftables table left by an earlier configuration: {e}"
                );
                false
            }
        };
        if nft.holds_anything() || leftover() {
            sinks.insert(
                FirewallKind::Nftables,
                Box::new(knock_firewall::NftSink::new(nft)?),
            );
        }
    }
    Ok(sinks)
}

/// Refuses a door on a firewall this binary was built without
/// (`firewall = nftables` without the `nftables` feature): it could never
/// open. `firewall = auto` doors must be placed first ([`place_doors`]).
///
/// # Errors
/// [`DaemonError::NotBuilt`] for the first such door.
pub fn check_built(config: &Config) -> Result<(), DaemonError> {
    let unbuilt = |k: FirewallKind| k == FirewallKind::Nftables && !cfg!(feature = "nftables");
    match config.doors.iter().find(|d| unbuilt(d.firewall)) {
        Some(d) => Err(DaemonError::NotBuilt {
            door: d.name.clone(),
        }),
        None => Ok(()),
    }
}

/// Asks the firewall whether it can hold `config` (`--check`): for
/// nftables, a dry run of the transaction that would install it (the
/// kernel checks it, then aborts it; nothing changes). Returns what could
/// not be checked against the kernel, if anything (no permission, ...).
///
/// # Errors
/// What the firewall refuses.
pub fn check_firewall(config: &Config) -> Result<Option<String>, DaemonError> {
    check_built(config)?;
    #[cfg(feature = "nftables")]
    {
        let nft = nft_config(config);
        if nft.holds_anything() {
            return match knock_firewall::NftSink::check(nft)? {
                knock_firewall::NftChecked::Kernel => Ok(None),
                knock_firewall::NftChecked::LimitsOnly(why) => Ok(Some(format!(
                    "the nftables ruleset was not tried against the kernel ({why}); only its limits were checked"
                ))),
                _ => Ok(None),
            };
        }
    }
    let _ = config;
    Ok(None)
}

/// Whether a door or the blocklist of `config` uses iptables.
fn iptables_used(config: &Config) -> bool {
    config
        .doors
        .iter()
        .any(|d| d.firewall == FirewallKind::Iptables)
        || blocking_firewall(config) == Some(FirewallKind::Iptables)
}

/// Logs where native grants go (and warnings on stderr too).
fn place_log(log: &mut Logger, placed: &Placements) {
    for w in &placed.warnings {
        log.line(Level::Warn, w);
    }
    for p in &placed.doors {
        log.line(Level::Info, &p.to_string());
    }
}

/// Where the firewall's blocks reach (`blacklist_reach`).
fn block_reach(config: &Config) -> knock_firewall::BlockReach {
    match config.options.blacklist_reach {
        BlacklistReach::Host => knock_firewall::BlockReach::Host,
        _ => knock_firewall::BlockReach::Ports(config.protected_ports()),
    }
}

/// A warning for a `blacklist` whose blocks can refuse nothing in the
/// firewall: `blacklist_reach = doors` and no door with native `open` ports
/// (the daemon cannot know the ports of shell commands).
fn blacklist_reach_warning(config: &Config) -> Option<String> {
    let doors_only = !matches!(config.options.blacklist_reach, BlacklistReach::Host);
    (config.options.blacklist.is_some() && doors_only && config.protected_ports().is_empty()).then(
        || {
            "blacklist: no door has native `open` ports, so with blacklist_reach = doors a block \
         only makes the daemon ignore the source's knocks; set blacklist_reach = host to \
         refuse its new connections in the firewall"
                .to_owned()
        },
    )
}

/// A random hasher seed for the matcher.
fn random_seed() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The sequence files whose lines the daemon marks, by door name.
fn sequence_files(config: &Config) -> HashMap<String, SequenceFile> {
    config
        .doors
        .iter()
        .filter_map(|d| Some((d.name.clone(), d.sequence_file()?.clone())))
        .collect()
}

/// Checks what the daemon must be able to write, as it would at start
/// (and `--check` does): the state directory (or, if it does not exist yet,
/// the directory it would be created in) and every one-time sequence file,
/// where a used sequence is marked. Nothing is changed.
///
/// # Errors
/// [`DaemonError::Unwritable`] for the first that cannot be written.
pub fn preflight(config: &Config, opts: &DaemonOptions) -> Result<(), DaemonError> {
    let existing = opts
        .state_dir
        .ancestors()
        .find(|d| d.is_dir())
        .unwrap_or(&opts.state_dir);
    let probe = if existing == opts.state_dir {
        opts.state_dir.join(STATE_FILE)
    } else {
        existing.join(".knock-rs-state-dir")
    };
    knock_config::check_writable(&probe).map_err(|source| DaemonError::Unwritable {
        what: format!("the state directory {}", opts.state_dir.display()),
        source: Box::new(source),
    })?;
    for d in &config.doors {
        if let knock_config::SequenceSource::OneTime {
            loaded: Some(f), ..
        } = &d.sequence
        {
            f.check_writable()
                .map_err(|source| DaemonError::Unwritable {
                    what: format!(
                        "[{}] one_time_sequences {} (used sequences are marked there)",
                        d.name,
                        f.path().display()
                    ),
                    source: Box::new(source),
                })?;
        }
    }
    Ok(())
}

/// The most knocks handled at one reading of the clocks.
const BATCH: usize = 1024;

/// How many knocks of a batch are read ahead of the one being handled (at
/// least; at most twice as many): when only this many are left, this many
/// more are read, then hinted to the engine ([`Engine::prefetch`]) one
/// after the other. Under a flood of new sources, the memory a knock's
/// lookup touches is then on its way while the knocks before it are
/// handled, and the hints' page walks (a source index that misses the TLB
/// costs one per knock) overlap rather than come one at a time.
const AHEAD: usize = 4;

/// The knocks of a batch handled one at a time, as they are read, before
/// the daemon reads [`AHEAD`]: a knock that changes the listen set (a
/// one-time sequence used) has the source filter the knocks behind it
/// with the new set, and no client knocks a sequence this long in the
/// time of one batch; a flood does, and is read ahead after them.
const CALM: usize = 32;

/// The state file's name in the state directory.
const STATE_FILE: &str = "engine.state";

/// The running daemon.
pub struct Daemon {
    engine: Engine,
    sinks: HashMap<FirewallKind, BoxedSink>,
    runner: CommandRunner,
    /// Commands in flight: what the engine is told when each is done.
    jobs: HashMap<u64, Applied>,
    next_job: u64,
    seqfiles: HashMap<String, SequenceFile>,
    state_file: AtomicFile,
    clock: Clock,
    log: Logger,
    opts: DaemonOptions,
    /// A listen set not yet pushed to the source.
    listen: Option<Vec<Listen>>,
    /// Knocks read ahead in a batch (see [`AHEAD`]): empty between
    /// batches, kept for its allocation.
    ahead: VecDeque<Captured>,
    /// How the source's kernel filter was last reported widened (a warning
    /// when the kind of widening changes, not at every listen-set change).
    widened: Option<Widening>,
    /// The end of the runner's wake-up stream that capture sources poll.
    wake: UnixStream,
    /// The other end, where a scrape wakes the loop ([`metrics`]).
    poke: UnixStream,
    /// Why the last snapshot could not be saved (`None`: it was).
    unsaved: Option<String>,
    /// Doors whose used one-time sequence was recorded neither in the
    /// snapshot nor in its file, with why: their next `Open` is held back.
    unrecorded: HashMap<Arc<str>, String>,
    /// The sink that holds blocks ([`blocking_firewall`]).
    blocker: Option<FirewallKind>,
    /// The sinks were built from the config ([`Daemon::new`]): our iptables
    /// chain is removed when nothing uses it any more.
    own_sinks: bool,
    /// A door or the blocklist of the current config uses iptables.
    ipt_in_use: bool,
    /// Our iptables chain is in the legacy tables.
    ipt_legacy: bool,
    /// What the service manager was told (after [`Daemon::notify_ready`]).
    readiness: Option<notify::Readiness>,
    /// The metrics endpoint, if served ([`Daemon::serve_metrics`]).
    metrics: Option<metrics::Endpoint>,
}

impl Daemon {
    /// Builds the engine, the sinks and the command runner for `config`,
    /// and restores the state a previous run left in the state directory.
    ///
    /// # Errors
    /// An invalid config, a sink that cannot be set up, a state directory
    /// that cannot be created.
    pub fn new(
        mut config: Config,
        opts: DaemonOptions,
        mut log: Logger,
    ) -> Result<Daemon, DaemonError> {
        let placed = place_doors(&mut config, !opts.only_ipv4)
            .map_err(|e| log.fatal(DaemonError::from(e)))?;
        place_log(&mut log, &placed);
        let sinks = build_sinks(&config, placed.iptables_legacy).map_err(|e| log.fatal(e))?;
        let ipt_used = iptables_used(&config);
        let mut d = Daemon::with_sinks(config, sinks, opts, log)?;
        d.own_sinks = true;
        d.ipt_in_use = ipt_used;
        d.ipt_legacy = placed.iptables_legacy;
        d.retire_iptables(ipt_used);
        Ok(d)
    }

    /// A daemon with the given sinks (tests use recording or mock sinks).
    /// The host's ruleset is not read here: a `firewall = auto` door is
    /// given to the nftables sink ([`Daemon::new`] resolves it first).
    ///
    /// # Errors
    /// As [`Daemon::new`], but for the sinks. Like [`Daemon::new`], the
    /// error is also logged (stderr, log file, syslog).
    pub fn with_sinks(
        mut config: Config,
        sinks: HashMap<FirewallKind, BoxedSink>,
        opts: DaemonOptions,
        mut log: Logger,
    ) -> Result<Daemon, DaemonError> {
        for d in &mut config.doors {
            if d.firewall == FirewallKind::Auto {
                d.firewall = FirewallKind::Nftables;
            }
        }
        let clock = Clock {
            start: Instant::now(),
        };
        let eopts = EngineOptions::default()
            .with_limits(opts.limits)
            .with_seed(random_seed())
            .with_verbose(opts.verbose)
            .with_only_ipv4(opts.only_ipv4)
            .with_reports(opts.events_json);
        let seqfiles = sequence_files(&config);
        let blocker = blocking_firewall(&config);
        let reach_warning = blacklist_reach_warning(&config);
        let ready = (|| {
            std::fs::create_dir_all(&opts.state_dir).map_err(|source| DaemonError::State {
                path: opts.state_dir.clone(),
                source,
            })?;
            preflight(&config, &opts)?;
            // Resolved once: the state is written at every open.
            let state_file =
                AtomicFile::new(opts.state_dir.join(STATE_FILE)).map_err(|source| {
                    DaemonError::Unwritable {
                        what: format!("the state directory {}", opts.state_dir.display()),
                        source: Box::new(source),
                    }
                })?;
            let engine = Engine::new(config, eopts, clock.now())?;
            let pair = UnixStream::pair().map_err(|source| DaemonError::State {
                path: opts.state_dir.clone(),
                source,
            })?;
            Ok((engine, pair, state_file))
        })();
        let (engine, (wake, notify), state_file) = ready.map_err(|e| log.fatal(e))?;
        let _ = notify.set_nonblocking(true);
        let poke = notify.try_clone().map_err(|source| {
            log.fatal(DaemonError::State {
                path: opts.state_dir.clone(),
                source,
            })
        })?;
        let runner = CommandRunner::new(RunnerConfig {
            max_run_time: opts.command_timeout,
            ..RunnerConfig::default()
        })
        .with_notify(move || {
            // A full buffer already wakes the loop.
            let _ = (&notify).write(&[1]);
        });
        let mut d = Daemon {
            engine,
            sinks,
            runner,
            jobs: HashMap::new(),
            next_job: 1,
            seqfiles,
            state_file,
            clock,
            log,
            opts,
            listen: None,
            ahead: VecDeque::with_capacity(AHEAD),
            widened: None,
            wake,
            poke,
            unsaved: None,
            unrecorded: HashMap::new(),
            blocker,
            own_sinks: false,
            ipt_in_use: true,
            ipt_legacy: false,
            readiness: None,
            metrics: None,
        };
        if let Some(w) = reach_warning {
            d.log.line(Level::Warn, &w);
        }
        let now = d.clock.now();
        for (kind, sink) in &mut d.sinks {
            if let Err(e) = sink.reconcile(SystemTime::now()) {
                d.log.line(
                    Level::Warn,
                    &format!("{kind:?} firewall: reconcile failed: {e}"),
                );
            }
        }
        // Our own file, so no size limit; but only a regular file: a FIFO
        // put there would block start-up.
        let state_path = d.state_file.path().to_owned();
        match knock_config::read_regular_file(&state_path, u64::MAX) {
            Ok(bytes) => match Snapshot::from_bytes(&bytes) {
                Ok(s) => d.engine.restore(now, s),
                Err(e) => {
                    let bad = state_path.with_extension("bad");
                    let _ = std::fs::rename(&state_path, &bad);
                    d.log.line(
                        Level::Error,
                        &format!(
                            "{}: {e}; moved to {} (grants it held will not be closed by us)",
                            state_path.display(),
                            bad.display()
                        ),
                    );
                }
            },
            Err(e)
                if e.io_error().map(std::io::Error::kind) == Some(std::io::ErrorKind::NotFound) => {
            }
            Err(e) => d.log.line(
                Level::Error,
                &format!("{}: cannot read state: {e}", state_path.display()),
            ),
        }
        d.apply();
        Ok(d)
    }

    /// Logs a line to the daemon's log.
    pub fn log(&mut self, msg: &str) {
        self.log.log(msg);
    }

    /// Logs a line at `level` (warnings and errors reach stderr too).
    pub fn log_line(&mut self, level: Level, msg: &str) {
        self.log.line(level, msg);
    }

    /// Logs a change of a capture interface ([`Logger::interface`]).
    pub fn log_interface(&mut self, ev: &knock_capture::InterfaceEvent) {
        self.log.interface(ev);
    }

    /// Makes the next `run` push the listen set to its source (a new source).
    pub fn force_listen_sync(&mut self) {
        self.listen = Some(self.engine.listen_set());
    }

    /// The engine (stats, listen set).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The matcher (stats, listen set).
    pub fn matcher(&self) -> &knock_core::Matcher {
        self.engine.matcher()
    }

    /// A stream for the capture source to wake on
    /// ([`MultiSource::set_waker`](knock_capture::MultiSource::set_waker)):
    /// the command runner writes to it when a command finishes.
    ///
    /// # Errors
    /// The stream cannot be duplicated.
    pub fn waker(&self) -> std::io::Result<UnixStream> {
        self.wake.try_clone()
    }

    /// Replaces the configuration (SIGHUP). Doors that did not change keep
    /// their in-flight attempts; every grant stays and closes on time. On
    /// error the old configuration stays, and so does the firewall: the
    /// nftables table is replaced in one transaction, all or nothing. Never
    /// waits for a running command.
    ///
    /// # Errors
    /// An invalid config or a sink that cannot be set up (nothing changed).
    pub fn reload(&mut self, mut config: Config) -> Result<(), DaemonError> {
        let placed = place_doors(&mut config, !self.opts.only_ipv4)?;
        Engine::check(&config, self.opts.limits)?;
        place_log(&mut self.log, &placed);
        preflight(&config, &self.opts)?;
        // Native sinks carry the doors' ports; pending state lives in the
        // engine and the kernel, not in the sink objects. On error the old
        // sinks stay.
        self.sinks = build_sinks(&config, placed.iptables_legacy)?;
        self.ipt_legacy = placed.iptables_legacy;
        self.blocker = blocking_firewall(&config);
        let ipt_used = iptables_used(&config);
        self.ipt_in_use = ipt_used;
        self.seqfiles = sequence_files(&config);
        let reach_warning = blacklist_reach_warning(&config);
        let now = self.clock.now();
        self.engine.handle_reload(now, config)?;
        if let Some(w) = reach_warning {
            self.log.line(Level::Warn, &w);
        }
        self.apply();
        self.retire_iptables(ipt_used);
        Ok(())
    }

    /// Removes our iptables chain and the jump to it if `in_use` is false
    /// and the chain holds no grant and no block (only for sinks this
    /// daemon built itself). The sink goes too, unless stopping.
    fn retire_iptables(&mut self, in_use: bool) {
        if in_use || !self.own_sinks || !self.sinks.contains_key(&FirewallKind::Iptables) {
            return;
        }
        let cfg = knock_firewall::IptablesConfig {
            legacy: self.ipt_legacy,
            ..knock_firewall::IptablesConfig::default()
        };
        match knock_firewall::IptablesSink::retire(&cfg) {
            Ok(true) => {
                self.sinks.remove(&FirewallKind::Iptables);
            }
            Ok(false) => {}
            Err(e) => self.log.line(
                Level::Warn,
                &format!("iptables firewall: cannot remove our chain: {e}"),
            ),
        }
    }

    /// Runs until `stop` is set (or the source ends, for replays).
    /// `reload` is called when `reload_flag` was set, and returns the new config.
    ///
    /// A [`Next::Interface`] change (one interface of a
    /// [`MultiSource`](knock_capture::MultiSource) failing or back) is
    /// logged, as a warning or an error, and the loop goes on.
    ///
    /// After [`Daemon::notify_ready`], reloads and interface changes are
    /// reported to the service manager too; after
    /// [`Daemon::serve_metrics`], a waiting scrape is answered at the end of
    /// each turn ([`metrics`]).
    ///
    /// # Errors
    /// The capture source failed as a whole.
    pub fn run<S: Source + ?Sized>(
        &mut self,
        source: &mut S,
        stop: &AtomicBool,
        reload_flag: &AtomicBool,
        mut reload: impl FnMut() -> Result<Config, String>,
    ) -> Result<(), DaemonError> {
        self.sync_listen(source)?;
        while !stop.load(Ordering::Relaxed) {
            if reload_flag.swap(false, Ordering::Relaxed) {
                self.notify_reloading();
                let done = reload().and_then(|c| self.reload(c).map_err(|e| e.to_string()));
                self.notify_reloaded(done.is_err());
                if let Err(e) = done {
                    self.log.line(
                        Level::Error,
                        &format!("reload failed, keeping the old configuration: {e}"),
                    );
                }
            }
            let deadline = [
                self.engine.poll_timeout().map(|t| self.clock.instant(t)),
                self.log.flush_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            let next = source.next_event(deadline);
            // One clock read for the whole batch: this wake-up and the
            // knocks queued behind it.
            let now = self.clock.now();
            self.log.set_now(self.clock.instant(now.mono), now.unix);
            self.log.flush_if_due();
            self.commands_done(now);
            match next {
                Ok(Next::Event(c)) => self.handle_captured(now, &c),
                Ok(Next::Deadline) => self.engine.handle_timeout(now),
                Ok(Next::End) => break,
                Ok(Next::Interface(ev)) => {
                    self.log.interface(&ev);
                    self.notify_interface(&ev);
                }
                Err(e) => return Err(e.into()),
            }
            self.apply();
            self.batch(source, now);
            self.log.clear_now();
            self.sync_listen(source)?;
            self.answer_scrape(source);
        }
        Ok(())
    }

    /// The knocks already queued behind the one that woke the loop, at
    /// the time read for it, up to [`BATCH`] (the stop and reload flags
    /// are looked at between batches); a new listen set ends the batch, so
    /// that the source filters with it from the next knock on. Then the
    /// engine's deadlines, once, as a flood never lets the wait time out.
    ///
    /// After the first [`CALM`] knocks, knocks are read [`AHEAD`] to twice
    /// that ahead of the one handled. When a knock changes the listen set,
    /// reading stops and the few read ahead are still handled: the filter
    /// in force when they came let them in, and the engine ignores whatever
    /// no door listens to any more.
    fn batch<S: Source + ?Sized>(&mut self, source: &mut S, now: Now) {
        let mut ahead = std::mem::take(&mut self.ahead);
        for handled in 0.. {
            let calm = handled < CALM;
            let (low, depth) = if calm { (0, 1) } else { (AHEAD, 2 * AHEAD) };
            if ahead.len() <= low {
                let read = ahead.len();
                while ahead.len() < depth && handled < BATCH && self.listen.is_none() {
                    let Some(c) = source.next_queued() else {
                        break;
                    };
                    ahead.push_back(c);
                }
                if !calm {
                    self.engine.prefetch(ahead.range(read..).map(|c| &c.event));
                }
            }
            let Some(c) = ahead.pop_front() else {
                break;
            };
            self.handle_captured(now, &c);
            self.apply();
        }
        self.ahead = ahead;
        if self.engine.poll_timeout().is_some_and(|t| t <= now.mono) {
            self.engine.handle_timeout(now);
            self.apply();
        }
    }

    /// One captured knock or datagram (an SPA packet keeps its payload),
    /// the same whether it woke the loop or was queued behind it.
    fn handle_captured(&mut self, now: Now, c: &Captured) {
        self.engine
            .handle_datagram(now, &c.event, c.payload.as_deref());
    }

    fn sync_listen<S: Source + ?Sized>(&mut self, source: &mut S) -> Result<(), DaemonError> {
        if let Some(set) = self.listen.take() {
            if let Err(e) = source.set_listen(&set) {
                self.listen = Some(set);
                return Err(e.into());
            }
            let widened = source.filter_widening();
            let kind = |w: &Option<Widening>| {
                w.map(|w| (w.any_destination, w.any_flags, w.optmem_limited))
            };
            if kind(&widened) != kind(&self.widened) {
                if let Some(w) = &widened {
                    self.log.line(Level::Warn, &format!("capture: {w}"));
                }
            }
            self.widened = widened;
        }
        Ok(())
    }

    /// Tells the engine about finished commands.
    fn commands_done(&mut self, now: Now) {
        while let Some(done) = self.runner.poll_done() {
            let Some(applied) = self.jobs.remove(&done.id) else {
                continue;
            };
            let result = if done.outcome.is_success() {
                Ok(())
            } else {
                Err(format!("`{}` {}", done.command, done.outcome))
            };
            self.engine.handle_applied(now, applied, result);
        }
    }

    /// Applies the engine's actions, feeding back the results, until the
    /// engine has nothing more to say. Inline: it is asked after every
    /// knock, and a flood's knocks have nothing to apply.
    #[inline]
    fn apply(&mut self) {
        if self.engine.has_actions() || !self.unrecorded.is_empty() {
            self.apply_all();
        }
    }

    /// See [`apply`](Self::apply).
    #[inline(never)]
    fn apply_all(&mut self) {
        loop {
            let mut results = Vec::new();
            while let Some(action) = self.engine.poll_action() {
                let applied = action.applied();
                if let Some(result) = self.apply_one(action) {
                    if let Some(applied) = applied {
                        results.push((applied, result));
                    }
                }
            }
            if results.is_empty() {
                // A mark that failed for a door without an open to hold back.
                self.unrecorded.clear();
                return;
            }
            let now = self.clock.now();
            for (applied, result) in results {
                self.engine.handle_applied(now, applied, result);
            }
        }
    }

    /// Applies one action; `Some(result)` when it is known now (a command's
    /// comes later, from the runner).
    fn apply_one(&mut self, action: Action) -> Option<Result<(), String>> {
        match action {
            Action::Open(g) => match self.unrecorded.remove(&g.door) {
                Some(why) => {
                    let now = self.clock.now();
                    self.engine.handle_unrecorded(now, g.grant, &why);
                    None
                }
                None => self.grant(g, Phase::Open),
            },
            Action::Extend(g) => self.grant(g, Phase::Extend),
            Action::Close(g) => self.grant(g, Phase::Close),
            Action::Block { src, until } => {
                let until = SystemTime::UNIX_EPOCH + until;
                Some(match self.blocking_sink() {
                    Some(s) => s.block(src, until).map_err(|e| e.to_string()),
                    None => Err("no firewall sink to block it; its knocks are ignored only".into()),
                })
            }
            // Every sink: the block may be in one that held the blocklist
            // before a reload (unblocking an address not blocked is fine).
            Action::Unblock { src } => Some(
                self.sinks
                    .values_mut()
                    .map(|s| s.unblock(src).map_err(|e| e.to_string()))
                    .fold(Ok(()), Result::and),
            ),
            Action::MarkUsed {
                door,
                sequence,
                remaining,
            } => {
                let text = knock_config::sequence_to_string(&sequence);
                let marked = self.seqfiles.get_mut(&*door).map(|f| {
                    f.mark_sequence(&sequence)
                        .map(|m| m.line)
                        .map_err(|e| e.to_string())
                });
                let (level, line) = match marked {
                    Some(Ok(line)) => (
                        Level::Info,
                        format!("{door}: one-time sequence on line {line} used, {remaining} left"),
                    ),
                    Some(Err(e)) => {
                        if let Some(state) = &self.unsaved {
                            // Recorded nowhere: its open must not happen.
                            self.unrecorded
                                .insert(door.clone(), format!("state: {state}; file: {e}"));
                        }
                        (
                            Level::Error,
                            format!("{door}: cannot mark one-time sequence {text} used: {e}"),
                        )
                    }
                    None => (
                        Level::Info,
                        format!("{door}: one-time sequence {text} used (no file)"),
                    ),
                };
                self.log.line(level, &line);
                None
            }
            Action::Listen(set) => {
                self.listen = Some(set);
                None
            }
            Action::Persist(s, durability) => {
                let bytes = s.to_bytes();
                let written = match durability {
                    Durability::Synced => self.state_file.write(&bytes),
                    Durability::Written => self.state_file.replace(&bytes),
                };
                self.unsaved = written.err().map(|e| e.to_string());
                if let Some(e) = &self.unsaved {
                    self.log.line(
                        Level::Error,
                        &format!("cannot save the engine's state: {e}"),
                    );
                }
                None
            }
            Action::Log(level, line) => {
                self.log.line(level, &line);
                None
            }
            Action::Report(r) => {
                match serde_json::to_string(&r) {
                    Ok(line) => println!("{line}"),
                    Err(e) => tracing::warn!("cannot render decision: {e}"),
                }
                None
            }
        }
    }

    /// The sink that holds blocks ([`blocking_firewall`]).
    fn blocking_sink(&mut self) -> Option<&mut BoxedSink> {
        let kind = self.blocker?;
        self.sinks.get_mut(&kind)
    }

    /// Opens, extends or closes one grant.
    fn grant(&mut self, g: GrantAction, phase: Phase) -> Option<Result<(), String>> {
        let applied = match phase {
            Phase::Open => Applied::Open(g.grant),
            Phase::Extend => Applied::Extend(g.grant),
            Phase::Close => Applied::Close(g.grant),
        };
        match g.how {
            How::Command { command } => {
                let job = self.next_job;
                self.next_job += 1;
                let what = format!("{}: {} for {}", g.door, phase.as_str(), g.src);
                match self.runner.run(Job {
                    id: job,
                    what,
                    command: command.clone(),
                }) {
                    Ok(()) => {
                        self.jobs.insert(job, applied);
                        None
                    }
                    Err(e) => Some(Err(format!("`{command}`: {e}"))),
                }
            }
            How::Native {
                firewall,
                ports,
                prefix_v4,
                prefix_v6,
            } => {
                let grant = Grant::new(g.door.to_string(), g.src, g.grant, ports)
                    .with_prefix(prefix_v4, prefix_v6)
                    .with_expiry(g.until.map(|u| SystemTime::UNIX_EPOCH + u));
                let Some(sink) = self.sinks.get_mut(&firewall) else {
                    return Some(Err(format!("no {} firewall sink", firewall.as_str())));
                };
                let r = match phase {
                    Phase::Open => sink.open(&grant),
                    Phase::Extend => sink.extend(&grant),
                    Phase::Close => sink.close(&grant),
                };
                // The last grant of a firewall no door uses any more takes
                // our chain with it.
                if matches!(phase, Phase::Close) && firewall == FirewallKind::Iptables && r.is_ok()
                {
                    let in_use = self.ipt_in_use;
                    self.retire_iptables(in_use);
                }
                Some(r.map_err(|e| e.to_string()))
            }
        }
    }

    /// Stops: with `close_at_exit`, closes every open grant now (and waits
    /// a little for their stop commands); otherwise the engine's state,
    /// saved to the state directory, keeps the pending closes for the next
    /// start. Never waits for a start command.
    pub fn shutdown(&mut self) {
        let now = self.clock.now();
        self.engine.handle_shutdown(now, self.opts.close_at_exit);
        self.apply();
        if self.opts.close_at_exit {
            let until = Instant::now() + Duration::from_secs(5);
            while !self.jobs.is_empty() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
                let now = self.clock.now();
                self.commands_done(now);
                self.apply();
            }
        }
        // Nothing of ours stays in iptables if it holds nothing.
        self.retire_iptables(false);
        self.log.flush();
    }

    /// Writes buffered log lines now (before the caller sleeps outside `run`).
    pub fn flush_log(&mut self) {
        self.log.flush();
    }
}

/// Which grant operation a command or sink call is.
#[derive(Clone, Copy, Debug)]
enum Phase {
    Open,
    Extend,
    Close,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Open => "start",
            Phase::Extend => "extend",
            Phase::Close => "stop",
        }
    }
}
