//! `knockd`: a drop-in for knockd 0.8, built from the knock-rs crates.
//!
//! Same command line as knockd (`-c`, `-i`, `-d`, `-D`, `-v`, `-V`, `-p`,
//! `-g`, `-l`, `-4`, `-h`), plus `--config-toml`, `--events-json`, `--check`
//! and `--to-toml`. All the logic lives in `knock::daemon`; this is glue:
//! arguments, logging, signals, the capture source and the pid file.
//!
//! ```text
//! knockd -c /etc/knockd.conf -i eth0 -D
//! knockd --check -c /etc/knockd.conf
//! knockd --to-toml -c /etc/knockd.conf > knock.toml
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use knock::capture::{AfPacketSource, CaptureError, LiveConfig, MultiSource, Source, Stats};
use knock::config::Config;
use knock::daemon::{Daemon, DaemonOptions, Logger};
use knock::engine::Level;

mod alloc;
mod caps;

#[global_allocator]
static ALLOCATOR: alloc::TableAdvice = alloc::TableAdvice;

/// Port-knock server (knockd-compatible).
#[derive(Parser, Debug)]
#[command(name = "knockd", version, disable_version_flag = true)]
struct Args {
    /// Use an alternate config file.
    #[arg(short = 'c', long = "config", default_value = "/etc/knockd.conf")]
    config: PathBuf,
    /// Read a TOML config instead of knockd.conf.
    #[arg(long = "config-toml", conflicts_with = "config")]
    config_toml: Option<PathBuf>,
    /// Network interface to listen on (repeatable; `any` for all).
    #[arg(short = 'i', long = "interface")]
    interface: Vec<String>,
    /// Run as a daemon.
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
    /// Output debug messages.
    #[arg(short = 'D', long = "debug")]
    debug: bool,
    /// Be verbose.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Use an alternate pid file.
    #[arg(short = 'p', long = "pidfile")]
    pidfile: Option<PathBuf>,
    /// Use an alternate log file.
    #[arg(short = 'g', long = "logfile")]
    logfile: Option<PathBuf>,
    /// Look up DNS names for log entries (accepted for compatibility; addresses are logged).
    #[arg(short = 'l', long = "lookup")]
    lookup: bool,
    /// Only accept IPv4 knocks.
    #[arg(short = '4', long = "only-ip-v4")]
    only_ipv4: bool,
    /// Display version.
    #[arg(short = 'V', long = "version")]
    version: bool,
    /// Print one JSON object per decision on stdout.
    #[arg(long = "events-json")]
    events_json: bool,
    /// Parse the configuration, print errors and exit (status 1 for an
    /// invalid configuration, or one the firewall cannot hold: as root the
    /// nftables ruleset is tried against the kernel and not applied). As
    /// root it also fails on files it could not write at start; it warns,
    /// without failing, about what a start here would fail on or wait for:
    /// missing CAP_NET_RAW / CAP_NET_ADMIN, interfaces that do not exist.
    #[arg(long = "check")]
    check: bool,
    /// Print the configuration as TOML and exit.
    #[arg(long = "to-toml")]
    to_toml: bool,
    /// Where the engine's state (open grants, blocks, used windows) is kept across restarts.
    #[arg(long = "state-dir", default_value = "/var/lib/knock-rs")]
    state_dir: PathBuf,
    /// Close every open grant at exit instead of keeping it for the next start.
    #[arg(long = "close-at-exit")]
    close_at_exit: bool,
    /// At exit, print the capture and matcher counters (kernel drops
    /// included) as one JSON object on stdout. They are logged either way.
    #[arg(long = "stats-json")]
    stats_json: bool,
    /// Serve OpenMetrics (Prometheus) counters at http://ADDR:PORT/metrics
    /// (overrides `metrics` in `[options]`). Bind it to loopback or a
    /// management address.
    #[arg(long = "metrics", value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// fwknopd's access.conf: its stanzas become Single Packet
    /// Authorization doors (`stanza1`, `stanza2`, ...; a door per port,
    /// `stanza1:tcp/22`, when a stanza has several) beside the
    /// configuration's doors.
    #[arg(long = "access-conf", value_name = "FILE")]
    access_conf: Option<PathBuf>,
}

fn load(args: &Args) -> anyhow::Result<Config> {
    let config = match &args.config_toml {
        Some(p) => Config::from_toml_file(p)?,
        None => Config::from_knockd_file(&args.config)?,
    };
    let mut config = config;
    if let Some(p) = &args.access_conf {
        config.add_access_conf(p)?;
    }
    Ok(config)
}

/// An error the daemon has logged itself (stderr, log file, syslog).
#[derive(Debug)]
struct Logged;

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("see the error logged above")
    }
}

impl std::error::Error for Logged {}

pub(crate) fn main() -> ExitCode {
    let args = Args::parse();
    if args.version {
        println!("knockd (knock-rs) {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let level = if args.debug {
        "debug"
    } else if args.verbose {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        // Already on stderr and in the log.
        Err(e) if e.is::<Logged>() => ExitCode::from(1),
        Err(e) => {
            eprintln!("knockd: {}", knock::error_line(&*e));
            ExitCode::from(1)
        }
    }
}

/// Opens the capture on `interfaces` (`any`: every interface), with an
/// empty listen set (the daemon installs its own before the first read)
/// and a receive ring of `ring` bytes per interface (`capture_ring`; `None`:
/// the default). Each interface fails on its own; an error only when none
/// can ever work.
fn open_capture(
    interfaces: &[String],
    ring: Option<u64>,
) -> Result<MultiSource<AfPacketSource>, CaptureError> {
    let live = match ring {
        Some(bytes) => LiveConfig::default().with_ring_bytes(bytes),
        None => LiveConfig::default(),
    };
    if interfaces.iter().any(|i| i == "any") {
        MultiSource::every_interface(&[], &live)
    } else {
        let names: Vec<&str> = interfaces.iter().map(String::as_str).collect();
        MultiSource::open_each(&names, &[], &live)
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut config = load(&args)?;
    let interfaces = if args.interface.is_empty() {
        config.options.interfaces.clone()
    } else {
        args.interface.clone()
    };
    if args.check {
        // What the engine would refuse at start, refused here too, and
        // what the firewall cannot hold (a dry run in the kernel).
        knock::engine::Engine::check(&config, knock::core::Limits::default())?;
        // And what it must be able to write: an error as root (as the
        // daemon runs), a warning for a user checking the file.
        let mut opts = DaemonOptions::default();
        opts.state_dir = args.state_dir.clone();
        if let Err(e) = knock::daemon::preflight(&config, &opts) {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("knockd: warning: {}", knock::error_line(&e));
            } else {
                return Err(e.into());
            }
        }
        // Where each native door's grants go on this host (a door whose
        // grants the host would drop is refused, as at start).
        let placed = knock::daemon::place_doors(&mut config, !args.only_ipv4)?;
        for w in &placed.warnings {
            eprintln!("knockd: warning: {w}");
        }
        for p in &placed.doors {
            println!("{p}");
        }
        if let Some(note) = knock::daemon::check_firewall(&config)? {
            eprintln!("knockd: note: {note}");
        }
        // What this environment lacks is only a warning: the file may be
        // checked elsewhere (as a user, on another host) than it runs.
        for w in caps::environment(&config, &interfaces) {
            eprintln!("knockd: warning: {w}");
        }
        println!("configuration OK: {} door(s)", config.doors.len());
        return Ok(());
    }
    if args.to_toml {
        print!("{}", config.to_toml_string()?);
        return Ok(());
    }
    let log_file = args
        .logfile
        .clone()
        .or_else(|| config.options.log_file.clone());
    let mut log = Logger::new(log_file.as_deref(), config.options.use_syslog)?;
    let missing = caps::missing(&config);
    if !missing.is_empty() {
        log.line(
            Level::Error,
            &format!("cannot start: {}", caps::describe(&missing)),
        );
        return Err(Logged.into());
    }
    // Capture first, before daemonizing: what cannot work at all fails the
    // start on the terminal; an interface missing or down is a warning
    // (it is picked up when it comes).
    let mut source = match open_capture(&interfaces, config.options.capture_ring) {
        Ok(s) => s,
        Err(e) => {
            log.line(
                Level::Error,
                &format!(
                    "cannot start: cannot capture on {}: {}",
                    interfaces.join(", "),
                    knock::error_line(&e)
                ),
            );
            return Err(Logged.into());
        }
    };
    while let Some(ev) = source.poll_interface_event() {
        log.interface(&ev);
    }
    let mut opts = DaemonOptions::default();
    opts.events_json = args.events_json;
    opts.only_ipv4 = args.only_ipv4;
    opts.verbose = args.verbose;
    opts.state_dir = args.state_dir.clone();
    opts.close_at_exit = args.close_at_exit;
    let pid_file = args
        .pidfile
        .clone()
        .unwrap_or_else(|| config.options.pid_file.clone());
    if args.daemon {
        nix::unistd::daemon(false, false).context("daemonize")?;
        // Renamed into place, so that a reader (systemd's PIDFile=) never
        // sees it empty or half written.
        knock::config::replace_atomically(
            &pid_file,
            format!("{}\n", std::process::id()).as_bytes(),
        )
        .with_context(|| format!("write pid file {}", pid_file.display()))?;
    }
    let metrics = args.metrics.or(config.options.metrics);
    let mut daemon = Daemon::new(config, opts, log).map_err(|_| Logged)?;
    if let Some(addr) = metrics {
        if let Err(e) = daemon.serve_metrics(addr) {
            daemon.log_line(
                Level::Error,
                &format!("cannot start: {}", knock::error_line(&e)),
            );
            daemon.shutdown();
            return Err(Logged.into());
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))?;

    daemon.log(&format!(
        "starting up, listening on {}",
        interfaces.join(", ")
    ));
    // A finished command wakes the loop (its result is logged at once).
    let waker = match daemon.waker() {
        Ok(w) => source.set_waker(w).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = waker {
        daemon.log_line(
            Level::Warn,
            &format!("command results wait for the next packet: {e}"),
        );
    }
    // The engine's filter on every interface now: an interface that takes
    // no filter at all (nor any other) means capture cannot work.
    if let Err(e) = source.set_listen(&daemon.engine().listen_set()) {
        daemon.log_line(Level::Error, &format!("capture: {e}"));
    }
    while let Some(ev) = source.poll_interface_event() {
        daemon.log_interface(&ev);
    }
    if source.failed_for_good() {
        daemon.log_line(
            Level::Error,
            &format!(
                "cannot start: no interface of {} can be captured on (see above)",
                interfaces.join(", ")
            ),
        );
        daemon.shutdown();
        return Err(Logged.into());
    }
    daemon.force_listen_sync();
    // Every socket is open with its filter and the firewall is reconciled:
    // a knock from now on is seen.
    daemon.notify_ready(source.interfaces());
    // Interfaces fail and come back on their own inside the source; an
    // error here is the wait itself failing, which nothing can retry.
    let ran = daemon.run(&mut source, &stop, &reload, || {
        let config = load(&args).map_err(|e| knock::error_line(&*e))?;
        if args.metrics.is_none() && config.options.metrics != metrics {
            tracing::warn!("a new metrics address takes effect at the next start");
        }
        Ok(config)
    });
    if let Err(e) = &ran {
        daemon.log_line(Level::Error, &format!("capture failed, stopping: {e}"));
    }
    daemon.notify_stopping();
    let capture = source.stats();
    log_stats(&mut daemon, &capture, args.stats_json);
    daemon.shutdown();
    if args.daemon {
        let _ = std::fs::remove_file(Path::new(&pid_file));
    }
    ran.map_err(|_| Logged)?;
    Ok(())
}

/// Logs the capture and matcher counters; with `json`, also prints them as
/// one JSON object on stdout.
fn log_stats(daemon: &mut Daemon, c: &Stats, json: bool) {
    let m = daemon.matcher().stats();
    let e = daemon.engine().stats();
    daemon.log(&format!(
        "stats: {} frames read, {} knocks, {} rejected, {} not for this host, \
         kernel: {} passed, {} dropped; \
         matcher: {} events, {} sources, {} evicted, {} opens; \
         engine: {} grants restored, {} failed opens or blocks, {} failed closes, \
         {} log lines summarised",
        c.received,
        c.events,
        c.rejected_total(),
        c.not_for_host,
        c.kernel_packets,
        c.kernel_drops,
        m.events,
        m.sources,
        m.evicted,
        m.opens,
        e.restored,
        e.apply_failures,
        e.close_failures,
        e.log_suppressed
    ));
    let spa = daemon.engine().spa_stats();
    if let Some(spa) = &spa {
        let refused: Vec<String> = spa
            .reasons()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{n} {}", r.as_str()))
            .collect();
        daemon.log(&format!(
            "stats: spa: {} accepted, refused: {}",
            spa.accepted,
            if refused.is_empty() {
                "none".to_owned()
            } else {
                refused.join(", ")
            }
        ));
    }
    if json {
        let v = serde_json::json!({
            "capture": {
                "received": c.received,
                "events": c.events,
                "rejected": c.rejected_total(),
                "unmatched": c.unmatched,
                "not_for_host": c.not_for_host,
                "kernel_packets": c.kernel_packets,
                "kernel_drops": c.kernel_drops,
            },
            "matcher": {
                "events": m.events,
                "ignored": m.ignored,
                "attempts_started": m.attempts_started,
                "stages": m.stages,
                "opens": m.opens,
                "expired": m.expired,
                "invalidated": m.invalidated,
                "evicted": m.evicted,
                "sources": m.sources,
                "grants": m.grants,
            },
            "engine": {
                "restored": e.restored,
                "apply_failures": e.apply_failures,
                "close_failures": e.close_failures,
                "log_suppressed": e.log_suppressed,
            },
            "spa": spa.map(|s| {
                let mut refused = serde_json::Map::new();
                for (r, n) in s.reasons() {
                    refused.insert(r.as_str().to_owned(), n.into());
                }
                serde_json::json!({ "accepted": s.accepted, "refused": refused })
            }),
        });
        println!("{v}");
    }
}
