//! The knockd runtime: config + matcher + capture source + firewall sinks in
//! one event loop. The `knockd` example is command-line glue around [`Daemon`].
//!
//! The loop sleeps in the capture source until a packet arrives or the
//! matcher's next deadline ([`Matcher::poll_timeout`]); there are no periodic
//! wake-ups when idle. Signals interrupt the wait: the caller's flags for
//! stop and reload are checked on every wake-up.
//!
//! Time-derived doors: the daemon derives the sequences of windows w-1, w and
//! w+1 from the wall clock ([`knock_config::derive`]) and gives them to the
//! matcher ([`Matcher::set_windows`]); the next window boundary is one of the
//! loop's deadlines. The scanner blacklist's [`Decision::Blocked`] goes to the
//! blocking sink (nftables, else iptables: one is created for the blocklist
//! when no door uses a native firewall).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use knock_capture::{CaptureError, Next, Source};
use knock_config::{Config, FirewallKind};
use knock_core::{Decision, DoorId, GrantId, Limits, Matcher, Timestamp};
use knock_firewall::{CommandConfig, CommandSink, DoorCommands, FirewallSink, Grant};

/// A firewall sink as the daemon holds it.
pub type BoxedSink = Box<dyn FirewallSink<Error = knock_firewall::Error> + Send>;

/// Errors that stop the daemon from starting (running errors are logged).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration's doors are not valid for the matcher.
    #[error("invalid doors: {0}")]
    Doors(#[from] knock_core::DoorError),
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
    /// Where pending stop commands are kept across restarts.
    pub state_dir: PathBuf,
    /// Matcher limits.
    pub limits: Limits,
    /// Run pending stop commands at exit instead of keeping them for the next start.
    pub close_at_exit: bool,
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
        }
    }
}

/// Monotonic time as the matcher's [`Timestamp`], and its wall-clock twin.
#[derive(Clone, Copy, Debug)]
struct Clock {
    start: Instant,
    wall_start: SystemTime,
}

impl Clock {
    fn new() -> Self {
        Clock {
            start: Instant::now(),
            wall_start: SystemTime::now(),
        }
    }
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX))
    }
    fn instant(&self, t: Timestamp) -> Instant {
        self.start + Duration::from_micros(t.as_micros())
    }
    fn wall(&self, t: Timestamp) -> SystemTime {
        self.wall_start + Duration::from_micros(t.as_micros())
    }
}

/// knockd's log: `[YYYY-MM-DD HH:MM] msg` lines in LogFile, syslog, and `tracing`.
///
/// Log-file lines are buffered: a flood of first knocks (one `Stage 1` line
/// each) must not cost a `write(2)` per packet. Buffered lines reach the file
/// within [`Logger::FLUSH_AFTER`]: the daemon's loop wakes for
/// [`Logger::flush_deadline`] (once, not periodically) and flushes at exit.
pub struct Logger {
    file: Option<std::io::BufWriter<std::fs::File>>,
    syslog: Option<UnixDatagram>,
    unflushed_since: Option<Instant>,
}

impl Logger {
    /// Opens the log file (appending) and/or the syslog socket.
    pub fn new(
        log_file: Option<&std::path::Path>,
        use_syslog: bool,
    ) -> Result<Logger, DaemonError> {
        let file = match log_file {
            Some(p) => Some(std::io::BufWriter::with_capacity(
                64 * 1024,
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| DaemonError::Log {
                        path: p.to_owned(),
                        source,
                    })?,
            )),
            None => None,
        };
        let syslog = if use_syslog {
            UnixDatagram::unbound()
                .and_then(|s| s.connect("/dev/log").map(|()| s))
                .map_err(|e| tracing::warn!("syslog unavailable: {e}"))
                .ok()
        } else {
            None
        };
        Ok(Logger {
            file,
            syslog,
            unflushed_since: None,
        })
    }

    /// The longest a log-file line waits in the buffer.
    pub const FLUSH_AFTER: Duration = Duration::from_millis(200);

    /// Logs one line.
    pub fn log(&mut self, msg: &str) {
        tracing::info!("{msg}");
        if let Some(f) = &mut self.file {
            let stamp = chrono::Local::now().format("%Y-%m-%d %H:%M");
            let _ = writeln!(f, "[{stamp}] {msg}");
            match self.unflushed_since {
                None => self.unflushed_since = Some(Instant::now()),
                Some(t) if t.elapsed() >= Self::FLUSH_AFTER => self.flush(),
                Some(_) => {}
            }
        }
        if let Some(s) = &self.syslog {
            // LOG_DAEMON | LOG_NOTICE
            let _ = s.send(format!("<29>knockd: {msg}").as_bytes());
        }
    }

    /// When buffered lines must be written (`None`: nothing buffered).
    pub fn flush_deadline(&self) -> Option<Instant> {
        self.unflushed_since.map(|t| t + Self::FLUSH_AFTER)
    }

    /// Writes buffered lines to the log file.
    pub fn flush(&mut self) {
        if let Some(f) = &mut self.file {
            if let Err(e) = f.flush() {
                tracing::warn!("log file: {e}");
            }
        }
        self.unflushed_since = None;
    }

    fn flush_if_due(&mut self) {
        if self.flush_deadline().is_some_and(|t| t <= Instant::now()) {
            self.flush();
        }
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The running daemon.
pub struct Daemon {
    config: Config,
    matcher: Matcher,
    sinks: HashMap<FirewallKind, BoxedSink>,
    grants: HashMap<GrantId, (FirewallKind, Grant)>,
    clock: Clock,
    log: Logger,
    opts: DaemonOptions,
    listen_generation: u64,
    /// For each derived door: the window its sequences were derived for.
    windows: HashMap<String, u64>,
}

/// Builds the sinks the config's doors ask for (and, with a `blacklist`, a
/// native sink for the blocklist if no door has one).
pub fn build_sinks(
    config: &Config,
    opts: &DaemonOptions,
) -> Result<HashMap<FirewallKind, BoxedSink>, DaemonError> {
    let mut sinks: HashMap<FirewallKind, BoxedSink> = HashMap::new();
    let mut commands = CommandConfig::default().state_file(opts.state_dir.join("commands.state"));
    let mut has_commands = false;
    #[cfg(feature = "nftables")]
    let mut nft = knock_firewall::NftConfig::default();
    let mut has_iptables = false;
    for d in &config.doors {
        match d.firewall {
            FirewallKind::Command => {
                if let Some(start) = &d.start_command {
                    let mut c = DoorCommands::new(start.clone()).with_cmd_timeout(d.cmd_timeout);
                    if let Some(s) = &d.start_command_6 {
                        c = c.with_start6(s.clone());
                    }
                    if let Some(s) = &d.stop_command {
                        c = c.with_stop(s.clone());
                    }
                    if let Some(s) = &d.stop_command_6 {
                        c = c.with_stop6(s.clone());
                    }
                    commands = commands.door(d.name.clone(), c);
                    has_commands = true;
                }
            }
            FirewallKind::Iptables => has_iptables = true,
            #[cfg(feature = "nftables")]
            FirewallKind::Nftables => nft.doors.push(
                knock_firewall::NftDoor::new(d.name.clone(), d.open.clone(), d.grant_lifetime())
                    .with_prefix(d.grant_prefix.v4, d.grant_prefix.v6),
            ),
            #[allow(unreachable_patterns)]
            _ => tracing::warn!(door = %d.name, "firewall kind not built into this binary"),
        }
    }
    if has_commands {
        let _ = std::fs::create_dir_all(&opts.state_dir);
        sinks.insert(FirewallKind::Command, Box::new(CommandSink::new(commands)?));
    }
    if has_iptables {
        let sink = knock_firewall::IptablesSink::new(knock_firewall::IptablesConfig::default())?;
        sinks.insert(FirewallKind::Iptables, Box::new(sink));
    }
    let blocklist = config.options.blacklist.is_some();
    #[cfg(feature = "nftables")]
    if !nft.doors.is_empty() || (blocklist && !has_iptables) {
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
    for (kind, sink) in &mut sinks {
        match sink.reconcile(SystemTime::now()) {
            Ok(r) => tracing::info!(
                ?kind,
                expired = r.expired,
                leftovers = r.leftovers,
                kept = r.kept,
                "reconciled"
            ),
            Err(e) => tracing::warn!(?kind, "reconcile failed: {e}"),
        }
    }
    Ok(sinks)
}

/// Gives `matcher` the sequences of windows w-1, w and w+1 at Unix time
/// `unix` for every derived door of `config` whose window is not the one
/// `windows` remembers (every one with `force`), and remembers it. Returns
/// what is worth logging: the errors, and with `verbose` each derivation.
///
/// The daemon calls it with the wall clock, the replay tool with each
/// packet's capture time.
pub fn derive_windows(
    config: &Config,
    matcher: &mut Matcher,
    windows: &mut HashMap<String, u64>,
    unix: std::time::Duration,
    force: bool,
    verbose: bool,
) -> Vec<String> {
    let mut lines = Vec::new();
    for door in &config.doors {
        let Some(d) = door.derived() else { continue };
        let w = knock_config::derive::window_of(unix, d.period);
        if !force && windows.get(&door.name) == Some(&w) {
            continue;
        }
        let Some(id) = matcher.door_id(&door.name) else {
            continue;
        };
        let Some(pairs) = d.windows_around(&door.name, unix) else {
            lines.push(format!("{}: secret not loaded", door.name));
            continue;
        };
        match matcher.set_windows(id, pairs) {
            Ok(()) => {
                windows.insert(door.name.clone(), w);
                if verbose {
                    lines.push(format!("{}: sequences of window {w} derived", door.name));
                }
            }
            Err(e) => lines.push(format!("{}: cannot set windows: {e}", door.name)),
        }
    }
    lines
}

impl Daemon {
    /// Builds the matcher and the sinks for `config`.
    pub fn new(config: Config, opts: DaemonOptions, log: Logger) -> Result<Daemon, DaemonError> {
        let matcher = Matcher::new(config.core_doors(), opts.limits)?;
        let sinks = build_sinks(&config, &opts)?;
        Ok(Daemon::with_sinks(config, matcher, sinks, opts, log))
    }

    /// Derives the sequences of the current windows for every derived door
    /// whose window changed (all of them with `force`).
    pub fn update_windows(&mut self, force: bool) {
        let unix = knock_config::derive::unix_now();
        let lines = derive_windows(
            &self.config,
            &mut self.matcher,
            &mut self.windows,
            unix,
            force,
            self.opts.verbose,
        );
        for l in lines {
            self.log.log(&l);
        }
    }

    /// When the next derived door's window begins.
    fn window_deadline(&self) -> Option<Instant> {
        let unix = knock_config::derive::unix_now();
        let next = self
            .config
            .doors
            .iter()
            .filter_map(|door| {
                let d = door.derived()?;
                let w = knock_config::derive::window_of(unix, d.period);
                Some(knock_config::derive::window_start(
                    w.saturating_add(1),
                    d.period,
                ))
            })
            .min()?;
        Some(Instant::now() + next.saturating_sub(unix))
    }

    /// A daemon with the given sinks (tests use recording or mock sinks).
    pub fn with_sinks(
        config: Config,
        matcher: Matcher,
        sinks: HashMap<FirewallKind, BoxedSink>,
        opts: DaemonOptions,
        log: Logger,
    ) -> Daemon {
        let mut matcher = matcher;
        matcher.set_blacklist(config.options.core_blacklist());
        let mut d = Daemon {
            config,
            matcher,
            sinks,
            grants: HashMap::new(),
            clock: Clock::new(),
            log,
            opts,
            listen_generation: 0,
            windows: HashMap::new(),
        };
        d.update_windows(true);
        d
    }

    /// Logs a line to the daemon's log.
    pub fn log(&mut self, msg: &str) {
        self.log.log(msg);
    }

    /// Makes the next `run` push the listen set to its source (a new source).
    pub fn force_listen_sync(&mut self) {
        self.listen_generation = u64::MAX;
    }

    /// The matcher (for stats and the listen set).
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Replaces the configuration (SIGHUP). Doors that did not change keep
    /// their in-flight attempts; every grant stays and closes on time. On
    /// error the old configuration stays.
    pub fn reload(&mut self, config: Config) -> Result<(), DaemonError> {
        // Validate first: after this nothing about the doors can fail.
        Matcher::new(config.core_doors(), self.opts.limits)?;
        // The new sinks carry the new doors' commands and ports. Pending
        // state lives outside the sink objects (the command sink's state
        // file, nftables elements, iptables rule comments), so drop the old
        // sinks first: the command sink writes its state file on drop, and
        // the new one reads it.
        self.sinks.clear();
        match build_sinks(&config, &self.opts) {
            Ok(sinks) => self.sinks = sinks,
            Err(e) => {
                // Keep acting on the old configuration's doors.
                match build_sinks(&self.config, &self.opts) {
                    Ok(sinks) => self.sinks = sinks,
                    Err(e2) => self.log.log(&format!("firewall sinks lost: {e2}")),
                }
                return Err(e);
            }
        }
        self.matcher.replace_doors(config.core_doors())?;
        self.matcher.set_blacklist(config.options.core_blacklist());
        self.config = config;
        self.update_windows(true);
        self.log.log("configuration reloaded");
        Ok(())
    }

    /// Runs until `stop` is set (or the source ends, for replays).
    /// `reload` is called when `reload_flag` was set, and returns the new config.
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
                match reload()
                    .map_err(|e| e.to_string())
                    .and_then(|c| self.reload(c).map_err(|e| e.to_string()))
                {
                    Ok(()) => {}
                    Err(e) => self.log.log(&format!(
                        "reload failed, keeping the old configuration: {e}"
                    )),
                }
            }
            let matcher_deadline = self.matcher.poll_timeout().map(|t| self.clock.instant(t));
            let deadline = [
                matcher_deadline,
                self.reconcile_deadline(),
                self.window_deadline(),
                self.log.flush_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            let next = source.next_event(deadline);
            self.log.flush_if_due();
            self.reconcile_due();
            self.update_windows(false);
            match next {
                Ok(Next::Event(c)) => {
                    if !(self.opts.only_ipv4 && c.event.src.is_ipv6()) {
                        if self.opts.verbose {
                            self.log.log(&format!(
                                "{}: {} {} port {}",
                                c.event.src, c.event.proto, c.event.tcp_flags, c.event.dst_port
                            ));
                        }
                        self.matcher.handle_event(self.clock.now(), &c.event);
                    }
                }
                Ok(Next::Deadline) => self.matcher.handle_timeout(self.clock.now()),
                Ok(Next::End) => break,
                Err(e) => return Err(e.into()),
            }
            self.apply_decisions();
            self.sync_listen(source)?;
        }
        Ok(())
    }

    /// When a sink that only expires entries in `reconcile` (iptables after a
    /// restart, iptables blocks) next needs it.
    fn reconcile_deadline(&self) -> Option<Instant> {
        let due = self.sinks.values().filter_map(|s| s.next_expiry()).min()?;
        let wait = due
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Some(Instant::now() + wait)
    }

    /// Reconciles the sinks whose next expiry has come.
    fn reconcile_due(&mut self) {
        let now = SystemTime::now();
        let mut lines = Vec::new();
        for (kind, sink) in &mut self.sinks {
            if sink.next_expiry().is_some_and(|t| t <= now) {
                match sink.reconcile(now) {
                    Ok(r) => lines.push(format!(
                        "{kind:?} firewall: {} expired entries removed",
                        r.expired
                    )),
                    Err(e) => lines.push(format!("{kind:?} firewall: reconcile failed: {e}")),
                }
            }
        }
        for l in lines {
            self.log.log(&l);
        }
    }

    fn sync_listen<S: Source + ?Sized>(&mut self, source: &mut S) -> Result<(), DaemonError> {
        let g = self.matcher.listen_generation();
        if g != self.listen_generation {
            source.set_listen(&self.matcher.listen_set())?;
            self.listen_generation = g;
        }
        Ok(())
    }

    fn door_name(&self, id: DoorId) -> String {
        self.matcher
            .door(id)
            .map(|d| d.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    /// Drains the matcher's decisions into the log and the sinks.
    pub fn apply_decisions(&mut self) {
        let now = self.clock.now();
        while let Some(d) = self.matcher.poll_decision() {
            let name = self.door_name(d.door());
            if self.opts.events_json {
                let clock = self.clock;
                let wall = |t: Timestamp| {
                    clock
                        .wall(t)
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64())
                };
                let report = crate::report::describe(&d, now, &self.matcher, &self.config, wall);
                match serde_json::to_string(&report) {
                    Ok(line) => println!("{line}"),
                    Err(e) => tracing::warn!("cannot render decision: {e}"),
                }
            }
            match d {
                Decision::Stage { src, step, .. } => {
                    self.log.log(&format!("{src}: {name}: Stage {step}"))
                }
                Decision::Open {
                    src, grant, until, ..
                } => {
                    self.log.log(&format!("{src}: {name}: OPEN SESAME"));
                    self.open(&name, src, grant, until);
                }
                Decision::Extended {
                    src, grant, until, ..
                } => {
                    self.log.log(&format!("{src}: {name}: grant extended"));
                    if let Some((kind, g)) = self.grants.get_mut(&grant) {
                        g.expires = Some(self.clock.wall(until));
                        let (kind, g) = (*kind, g.clone());
                        self.apply(kind, &g, |s, g| s.extend(g));
                    }
                }
                Decision::Close { src, grant, .. } => {
                    self.log.log(&format!("{src}: {name}: command timeout"));
                    if let Some((kind, g)) = self.grants.remove(&grant) {
                        if kind == FirewallKind::Command {
                            if let Some(cmd) = self
                                .config
                                .door(&name)
                                .and_then(|d| d.stop_command_for(src.is_ipv6()))
                            {
                                self.log.log(&format!(
                                    "{name}: running command: {}",
                                    knock_firewall::substitute(cmd, src)
                                ));
                            }
                        }
                        self.apply(kind, &g, |s, g| s.close(g));
                    }
                }
                Decision::Expired { src, step, .. } => self
                    .log
                    .log(&format!("{src}: {name}: sequence timeout (stage {step})")),
                Decision::Invalidated { src, step, .. } if self.opts.verbose => self
                    .log
                    .log(&format!("{src}: {name}: sequence invalid (stage {step})")),
                Decision::SequenceConsumed {
                    index, remaining, ..
                } => {
                    let file = self
                        .config
                        .door_mut(&name)
                        .and_then(|d| d.sequence_file_mut());
                    let res = file.map(|f| {
                        f.mark_used(index)
                            .map(|m| m.line)
                            .map_err(|e| e.to_string())
                    });
                    match res {
                        Some(Ok(line)) => self.log.log(&format!(
                            "{name}: one-time sequence on line {line} used, {remaining} left"
                        )),
                        Some(Err(e)) => self.log.log(&format!(
                            "{name}: cannot mark one-time sequence {index}: {e}"
                        )),
                        None => self
                            .log
                            .log(&format!("{name}: one-time sequence {index} used (no file)")),
                    }
                }
                Decision::Blocked { src, until, .. } => {
                    let duration = until.saturating_duration_since(now);
                    self.log.log(&format!(
                        "{src}: {name}: blacklisted for {} s (too many invalid knocks)",
                        (duration.as_millis() + 500) / 1000
                    ));
                    self.block(src, duration);
                }
                Decision::Unblocked { src, .. } => self
                    .log
                    .log(&format!("{src}: {name}: blacklist entry expired")),
                _ => {}
            }
        }
    }

    fn open(&mut self, name: &str, src: IpAddr, grant: GrantId, until: Option<Timestamp>) {
        let Some(door) = self.config.door(name) else {
            return;
        };
        let kind = door.firewall;
        let g = Grant::new(name, src, grant, door.open.clone())
            .with_prefix(door.grant_prefix.v4, door.grant_prefix.v6)
            .with_expiry(until.map(|u| self.clock.wall(u)));
        if kind == FirewallKind::Command {
            if let Some(cmd) = door.start_command_for(src.is_ipv6()) {
                self.log.log(&format!(
                    "{name}: running command: {}",
                    knock_firewall::substitute(cmd, src)
                ));
            }
        }
        self.apply(kind, &g, |s, g| s.open(g));
        if until.is_some() {
            self.grants.insert(grant, (kind, g));
        }
    }

    /// Blocks `src` through the blocking sink: nftables, else iptables.
    fn block(&mut self, src: IpAddr, duration: Duration) {
        let kind = [FirewallKind::Nftables, FirewallKind::Iptables]
            .into_iter()
            .find(|k| self.sinks.contains_key(k));
        let Some(sink) = kind.and_then(|k| self.sinks.get_mut(&k)) else {
            self.log.log(&format!(
                "{src}: no firewall sink to block it; knocks ignored only"
            ));
            return;
        };
        if let Err(e) = sink.block(src, duration) {
            self.log
                .log(&format!("{src}: firewall error blocking: {e}"));
        }
    }

    fn apply(
        &mut self,
        kind: FirewallKind,
        g: &Grant,
        op: impl FnOnce(&mut BoxedSink, &Grant) -> Result<(), knock_firewall::Error>,
    ) {
        match self.sinks.get_mut(&kind) {
            Some(s) => {
                if let Err(e) = op(s, g) {
                    self.log.log(&format!("{}: firewall error: {e}", g.door));
                }
            }
            None => self
                .log
                .log(&format!("{}: no {kind:?} firewall sink", g.door)),
        }
    }

    /// Stops: with `close_at_exit`, closes every open grant now; otherwise
    /// pending closes stay with the sinks (state file, kernel timeouts).
    pub fn shutdown(&mut self) {
        if self.opts.close_at_exit {
            let grants: Vec<_> = self.grants.drain().map(|(_, v)| v).collect();
            for (kind, g) in grants {
                self.apply(kind, &g, |s, g| s.close(g));
            }
        }
        self.log.log("shutting down");
        self.log.flush();
    }

    /// Writes buffered log lines now (before the caller sleeps outside `run`).
    pub fn flush_log(&mut self) {
        self.log.flush();
    }
}
