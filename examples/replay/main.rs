//! `replay`: runs a capture file through a knockd configuration and prints
//! what the daemon would have decided, one JSON object per line.
//!
//! ```text
//! replay [-c knockd.conf | --config-toml knock.toml] [--access-conf access.conf] [capture.pcap(ng)]
//! cargo run --example replay                     # the demo in examples/data/
//! cargo run --example replay -- -c /etc/knockd.conf /tmp/knocks.pcapng
//! ```
//!
//! Time comes from the file's packet timestamps; timers that fall between
//! two packets fire at their own time, and at the end of the file the
//! clock runs on until nothing is pending, so every close is printed.
//! Time-derived doors (`sequence_secret_file`) get the sequences of the
//! windows around each packet's time, as the daemon does with its clock;
//! with such a door every packet is looked at, since the ports move. No
//! root is needed and no firewall is touched: `open` and `close` lines say
//! what each sink would do (`would_run`: a knockd command with `%IP%`
//! substituted; `would_open` / `would_close`: a native grant's ports).
//!
//! ```text
//! {"event":"open","door":"openSSH","src":"198.18.0.2","time":1700000003.3,"grant":1,"until":1700000013.3,"would_run":"/sbin/iptables -I INPUT ..."}
//! ```
//!
//! SPA doors (`spa_key_base64`, or fwknopd's stanzas with `--access-conf`)
//! verify the capture's SPA packets with the packet's time as the clock,
//! so a captured fwknop packet opens as it did (and a second copy of it is
//! a replay).
//!
//! Without a configuration it reads `examples/data/knockd.conf`, without a
//! capture `examples/data/knock.pcapng`. Exit status: 0 the whole capture
//! was replayed; 1 an error (configuration, unreadable or damaged capture;
//! the lines before the damage are printed); 2 a usage error.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use knock::engine::{Action, Engine, EngineOptions, Now};
use knock_capture::{Next, ReplaySource, Source};
use knock_config::Config;
use knock_core::{Listen, Proto, Timestamp};

/// Replays a capture through a knockd configuration and prints the
/// decisions as JSON lines.
#[derive(Debug, Parser)]
#[command(name = "replay", version)]
struct Args {
    /// knockd.conf to use (default: examples/data/knockd.conf).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,

    /// A configuration in knock-rs's TOML format instead.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    config_toml: Option<PathBuf>,

    /// fwknopd's access.conf: its stanzas become SPA doors.
    #[arg(long = "access-conf", value_name = "FILE")]
    access_conf: Option<PathBuf>,

    /// The pcap or pcapng file (default: examples/data/knock.pcapng).
    capture: Option<PathBuf>,
}

/// The demo data shipped with the crate.
fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data")
        .join(name)
}

/// Capture time on both of the engine's clocks: packet timestamps count
/// from the Unix epoch.
fn at(t: Timestamp) -> Now {
    Now::new(t, Duration::from_micros(t.as_micros()))
}

/// The engine driven by the capture's clock, with a dry-run applier: the
/// reports are printed, every action counts as applied, nothing is touched.
struct Replay<W: Write> {
    engine: Engine,
    out: W,
    /// The config has time-derived doors: every packet is passed on.
    derived: bool,
    /// Warnings already printed (once each).
    warned: HashSet<String>,
}

impl<W: Write> Replay<W> {
    /// What the source must pass: the doors' knocks, or with derived doors
    /// everything (their ports change with the clock).
    fn listen(&self, mut set: Vec<Listen>) -> Vec<Listen> {
        if self.derived {
            set.extend([Listen::any(Proto::Tcp), Listen::any(Proto::Udp)]);
        }
        set
    }

    /// Applies the engine's actions at `now`; returns a new listen set.
    fn drain(&mut self, now: Now) -> Result<Option<Vec<Listen>>> {
        let mut listen = None;
        loop {
            let mut applied = Vec::new();
            while let Some(a) = self.engine.poll_action() {
                if let Some(done) = a.applied() {
                    applied.push(done);
                }
                match a {
                    Action::Report(r) => {
                        serde_json::to_writer(&mut self.out, &r)?;
                        writeln!(self.out)?;
                    }
                    Action::Log(level, line)
                        if level <= knock::engine::Level::Warn
                            && self.warned.insert(line.clone()) =>
                    {
                        eprintln!("replay: {line}");
                    }
                    Action::Listen(set) => listen = Some(self.listen(set)),
                    _ => {}
                }
            }
            if applied.is_empty() {
                return Ok(listen);
            }
            for done in applied {
                self.engine.handle_applied(now, done, Ok(()));
            }
        }
    }

    /// Fires every timer due at or before `until` (`None`: every one the
    /// matcher holds), each at its own time.
    fn run_timers_until(&mut self, until: Option<Timestamp>) -> Result<Option<Vec<Listen>>> {
        let mut listen = None;
        // Every call either fires a timer or moves the clock to it, so this
        // ends; the bound only guards against a bug turning into a hang.
        for _ in 0..100_000_000u64 {
            let next = match until {
                Some(_) => self.engine.poll_timeout(),
                None => self.engine.matcher().poll_timeout(),
            };
            match next {
                Some(t) if until.is_none_or(|n| t <= n) => {
                    self.engine.handle_timeout(at(t));
                    if let Some(l) = self.drain(at(t))? {
                        listen = Some(l);
                    }
                }
                _ => return Ok(listen),
            }
        }
        bail!("the engine's timers did not settle")
    }
}

fn run(args: &Args) -> Result<()> {
    let config = match (&args.config, &args.config_toml) {
        (_, Some(toml)) => Config::from_toml_file(toml)?,
        (Some(conf), None) => Config::from_knockd_file(conf)?,
        (None, None) => Config::from_knockd_file(data("knockd.conf"))?,
    };
    let mut config = config;
    if let Some(p) = &args.access_conf {
        config.add_access_conf(p)?;
    }
    let capture = args.capture.clone().unwrap_or_else(|| data("knock.pcapng"));
    let shown = capture.display();
    let mut source =
        ReplaySource::open(&capture).with_context(|| format!("{shown}: cannot open capture"))?;
    let derived = config.doors.iter().any(|d| d.derived().is_some());
    let engine = Engine::new(
        config,
        EngineOptions::default().with_reports(true),
        at(Timestamp::ZERO),
    )
    .context("the configuration's doors")?;
    let mut replay = Replay {
        engine,
        out: std::io::stdout().lock(),
        derived,
        warned: HashSet::new(),
    };
    if let Some(set) = replay.drain(at(Timestamp::ZERO))? {
        source.set_listen(&set)?;
    }
    let mut started = false;
    loop {
        let next = source
            .next_event(None)
            .with_context(|| format!("{shown}: damaged capture"))?;
        let captured = match next {
            Next::Event(c) => c,
            Next::End => break,
            // One capture file: no interfaces to change.
            Next::Deadline | Next::Interface(_) => continue,
        };
        let now = captured.event.time;
        if !started {
            // The engine started at time 0: jump to the capture's time at
            // once (derived windows for now, not every one since 1970).
            started = true;
            replay.engine.handle_timeout(at(now));
        }
        let timers = replay.run_timers_until(Some(now))?;
        replay
            .engine
            .handle_datagram(at(now), &captured.event, captured.payload.as_deref());
        // A consumed one-time sequence changes what the kernel would pass.
        if let Some(set) = replay.drain(at(now))?.or(timers) {
            source.set_listen(&set)?;
        }
    }
    replay.run_timers_until(None)?;
    let stats = source.stats();
    eprintln!(
        "replay: {shown}: {} frames, {} knocks seen, {} not for any door, {} not parsed",
        stats.received,
        stats.events,
        stats.unmatched,
        stats.rejected_total() + stats.unsupported_link,
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse(); // usage errors exit with 2
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replay: error: {}", knock::error_line(&*e));
            ExitCode::from(1)
        }
    }
}
