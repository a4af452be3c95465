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

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use knock_capture::{CaptureError, Next, Source, Widening};
use knock_config::{Config, FirewallKind, SequenceFile};
use knock_core::{Limits, Listen, Timestamp};
use knock_firewall::{CommandRunner, FirewallSink, Grant, Job, RunnerConfig};

mod log;
pub use log::Logger;

use crate::engine::{
    Action, Applied, Engine, EngineError, EngineOptions, GrantAction, How, Level, Now, Snapshot,
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

/// Builds the native sinks the config's doors ask for (and, with a
/// `blacklist`, one for the blocklist if no door has one). Commands need
/// no sink: the daemon's [`CommandRunner`] runs what the engine renders.
///
/// # Errors
/// A sink that cannot be set up.
pub fn build_sinks(config: &Config) -> Result<HashMap<FirewallKind, BoxedSink>, DaemonError> {
    let mut sinks: HashMap<FirewallKind, BoxedSink> = HashMap::new();
    #[cfg(feature = "nftables")]
    let mut nft = knock_firewall::NftConfig::default();
    #[cfg(feature = "nftables")]
    let mut has_nft = false;
    let mut has_iptables = false;
    for d in &config.doors {
        match d.firewall {
            FirewallKind::Command => {}
            FirewallKind::Iptables => has_iptables = true,
            #[cfg(feature = "nftables")]
            FirewallKind::Nftables => {
                has_nft = true;
                nft.doors.push(
                    knock_firewall::NftDoor::new(
                        d.name.clone(),
                        d.open.clone(),
                        d.grant_lifetime(),
                    )
                    .with_prefix(d.grant_prefix.v4, d.grant_prefix.v6),
                );
            }
            #[allow(unreachable_patterns)]
            _ => tracing::error!(door = %d.name, "firewall kind not built into this binary"),
        }
    }
    if has_iptables {
        let sink = knock_firewall::IptablesSink::new(knock_firewall::IptablesConfig::default())?;
        sinks.insert(FirewallKind::Iptables, Box::new(sink));
    }
    let blocklist = config.options.blacklist.is_some();
    #[cfg(feature = "nftables")]
    if has_nft || (blocklist && !has_iptables) {
        sinks.insert(
            FirewallKind::Nftables,
            Box::new(knock_firewall::NftSink::new(nft)?),
        );
    }
    #[cfg(not(feature = "nftables"))]
    if blocklist && !has_iptables {
        let sink = knock_firewall::IptablesSink::new(knock_firewall::IptablesConfig::default())?;
        sinks.insert(FirewallKind::Iptables, Box::new(sink));
    }
    Ok(sinks)
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

/// The running daemon.
pub struct Daemon {
    engine: Engine,
    sinks: HashMap<FirewallKind, BoxedSink>,
    runner: CommandRunner,
    /// Commands in flight: what the engine is told when each is done.
    jobs: HashMap<u64, Applied>,
    next_job: u64,
    seqfiles: HashMap<String, SequenceFile>,
    state_file: PathBuf,
    clock: Clock,
    log: Logger,
    opts: DaemonOptions,
    /// A listen set not yet pushed to the source.
    listen: Option<Vec<Listen>>,
    /// How the source's kernel filter was last reported widened (a warning
    /// when the kind of widening changes, not at every listen-set change).
    widened: Option<Widening>,
    /// The end of the runner's wake-up stream that capture sources poll.
    wake: UnixStream,
}

impl Daemon {
    /// Builds the engine, the sinks and the command runner for `config`,
    /// and restores the state a previous run left in the state directory.
    ///
    /// # Errors
    /// An invalid config, a sink that cannot be set up, a state directory
    /// that cannot be created.
    pub fn new(config: Config, opts: DaemonOptions, log: Logger) -> Result<Daemon, DaemonError> {
        let sinks = build_sinks(&config)?;
        Daemon::with_sinks(config, sinks, opts, log)
    }

    /// A daemon with the given sinks (tests use recording or mock sinks).
    ///
    /// # Errors
    /// As [`Daemon::new`], but for the sinks.
    pub fn with_sinks(
        config: Config,
        sinks: HashMap<FirewallKind, BoxedSink>,
        opts: DaemonOptions,
        log: Logger,
    ) -> Result<Daemon, DaemonError> {
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
        let engine = Engine::new(config, eopts, clock.now())?;
        std::fs::create_dir_all(&opts.state_dir).map_err(|source| DaemonError::State {
            path: opts.state_dir.clone(),
            source,
        })?;
        let (wake, notify) = UnixStream::pair().map_err(|source| DaemonError::State {
            path: opts.state_dir.clone(),
            source,
        })?;
        let _ = notify.set_nonblocking(true);
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
            state_file: opts.state_dir.join("engine.state"),
            clock,
            log,
            opts,
            listen: None,
            widened: None,
            wake,
        };
        let now = d.clock.now();
        for (kind, sink) in &mut d.sinks {
            if let Err(e) = sink.reconcile(SystemTime::now()) {
                d.log.line(
                    Level::Warn,
                    &format!("{kind:?} firewall: reconcile failed: {e}"),
                );
            }
        }
        match std::fs::read(&d.state_file) {
            Ok(bytes) => match Snapshot::from_bytes(&bytes) {
                Ok(s) => d.engine.restore(now, s),
                Err(e) => {
                    let bad = d.state_file.with_extension("bad");
                    let _ = std::fs::rename(&d.state_file, &bad);
                    d.log.line(
                        Level::Error,
                        &format!(
                            "{}: {e}; moved to {} (grants it held will not be closed by us)",
                            d.state_file.display(),
                            bad.display()
                        ),
                    );
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => d.log.line(
                Level::Error,
                &format!("{}: cannot read state: {e}", d.state_file.display()),
            ),
        }
        d.apply();
        Ok(d)
    }

    /// Logs a line to the daemon's log.
    pub fn log(&mut self, msg: &str) {
        self.log.log(msg);
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
    /// error the old configuration stays. Never waits for a running command.
    ///
    /// # Errors
    /// An invalid config or a sink that cannot be set up (nothing changed).
    pub fn reload(&mut self, config: Config) -> Result<(), DaemonError> {
        Engine::check(&config, self.opts.limits)?;
        // Native sinks carry the doors' ports; pending state lives in the
        // engine and the kernel, not in the sink objects. On error the old
        // sinks stay.
        self.sinks = build_sinks(&config)?;
        self.seqfiles = sequence_files(&config);
        let now = self.clock.now();
        self.engine.handle_reload(now, config)?;
        self.apply();
        Ok(())
    }

    /// Runs until `stop` is set (or the source ends, for replays).
    /// `reload` is called when `reload_flag` was set, and returns the new config.
    ///
    /// # Errors
    /// The capture source failed (the caller reopens it).
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
                let done = reload().and_then(|c| self.reload(c).map_err(|e| e.to_string()));
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
            self.log.flush_if_due();
            let now = self.clock.now();
            self.commands_done(now);
            match next {
                Ok(Next::Event(c)) => self.engine.handle_event(now, &c.event),
                Ok(Next::Deadline) => self.engine.handle_timeout(now),
                Ok(Next::End) => break,
                Err(e) => return Err(e.into()),
            }
            self.apply();
            self.sync_listen(source)?;
        }
        Ok(())
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
    /// engine has nothing more to say.
    fn apply(&mut self) {
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
            Action::Open(g) => self.grant(g, Phase::Open),
            Action::Extend(g) => self.grant(g, Phase::Extend),
            Action::Close(g) => self.grant(g, Phase::Close),
            Action::Block { src, until } => {
                let until = SystemTime::UNIX_EPOCH + until;
                Some(match self.blocking_sink() {
                    Some(s) => s.block(src, until).map_err(|e| e.to_string()),
                    None => Err("no firewall sink to block it; its knocks are ignored only".into()),
                })
            }
            Action::Unblock { src } => Some(match self.blocking_sink() {
                Some(s) => s.unblock(src).map_err(|e| e.to_string()),
                None => Ok(()),
            }),
            Action::MarkUsed {
                door,
                index,
                remaining,
            } => {
                let marked = self.seqfiles.get_mut(&*door).map(|f| {
                    f.mark_used(index)
                        .map(|m| m.line)
                        .map_err(|e| e.to_string())
                });
                let (level, line) = match marked {
                    Some(Ok(line)) => (
                        Level::Info,
                        format!("{door}: one-time sequence on line {line} used, {remaining} left"),
                    ),
                    Some(Err(e)) => (
                        Level::Error,
                        format!("{door}: cannot mark one-time sequence {index}: {e}"),
                    ),
                    None => (
                        Level::Info,
                        format!("{door}: one-time sequence {index} used (no file)"),
                    ),
                };
                self.log.line(level, &line);
                None
            }
            Action::Listen(set) => {
                self.listen = Some(set);
                None
            }
            Action::Persist(s) => {
                if let Err(e) = knock_config::write_atomically(&self.state_file, &s.to_bytes()) {
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

    /// The sink that blocks: nftables, else iptables.
    fn blocking_sink(&mut self) -> Option<&mut BoxedSink> {
        let kind = [FirewallKind::Nftables, FirewallKind::Iptables]
            .into_iter()
            .find(|k| self.sinks.contains_key(k))?;
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
