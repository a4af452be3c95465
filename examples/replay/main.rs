//! `replay`: runs a capture file through a knockd configuration and prints
//! what the daemon would have decided, one JSON object per line.
//!
//! ```text
//! replay [-c knockd.conf | --config-toml knock.toml] [capture.pcap(ng)]
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
//! Without a configuration it reads `examples/data/knockd.conf`, without a
//! capture `examples/data/knock.pcapng`. Exit status: 0 the whole capture
//! was replayed; 1 an error (configuration, unreadable or damaged capture;
//! the lines before the damage are printed); 2 a usage error.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use knock::daemon::derive_windows;
use knock::report::{describe, secs};
use knock_capture::{Next, ReplaySource, Source};
use knock_config::Config;
use knock_core::{Limits, Listen, Matcher, Proto, Timestamp};

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

    /// The pcap or pcapng file (default: examples/data/knock.pcapng).
    capture: Option<PathBuf>,
}

/// The demo data shipped with the crate.
fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data")
        .join(name)
}

/// Replays a capture, printing decisions as they come.
struct Replay<'a> {
    config: &'a Config,
    matcher: Matcher,
    listen_generation: u64,
    out: std::io::StdoutLock<'static>,
    /// The config has time-derived doors.
    derived: bool,
    /// Each derived door's window of the moment.
    windows: HashMap<String, u64>,
    /// Warnings already printed (once each).
    warned: HashSet<String>,
}

impl Replay<'_> {
    /// What the source must pass: the doors' knocks, or with derived doors
    /// everything (their ports change with the clock).
    fn listen(&self) -> Vec<Listen> {
        let mut set = self.matcher.listen_set();
        if self.derived {
            set.extend([Listen::any(Proto::Tcp), Listen::any(Proto::Udp)]);
        }
        set
    }

    /// Gives derived doors the sequences of the windows around `now` (Unix
    /// time, as packet timestamps are).
    fn derive(&mut self, now: Timestamp) {
        if !self.derived {
            return;
        }
        let unix = Duration::from_micros(now.as_micros());
        let lines = derive_windows(
            self.config,
            &mut self.matcher,
            &mut self.windows,
            unix,
            false,
            false,
        );
        for line in lines {
            if self.warned.insert(line.clone()) {
                eprintln!("replay: {line}");
            }
        }
    }

    fn drain(&mut self, now: Timestamp) -> Result<()> {
        use std::io::Write;
        while let Some(d) = self.matcher.poll_decision() {
            let line = describe(&d, now, &self.matcher, self.config, secs);
            serde_json::to_writer(&mut self.out, &line)?;
            writeln!(self.out)?;
        }
        Ok(())
    }

    /// Fires every timer due at or before `now`, each at its own time.
    fn run_timers_until(&mut self, now: Option<Timestamp>) -> Result<()> {
        // Every call either fires a timer or clamps it to `now`, so this ends;
        // the bound only guards against a core bug turning into a hang.
        for _ in 0..100_000_000u64 {
            match self.matcher.poll_timeout() {
                Some(t) if now.is_none_or(|n| t <= n) => {
                    self.matcher.handle_timeout(t);
                    self.drain(t)?;
                }
                _ => return Ok(()),
            }
        }
        bail!("the matcher's timers did not settle")
    }
}

fn run(args: &Args) -> Result<()> {
    let config = match (&args.config, &args.config_toml) {
        (_, Some(toml)) => Config::from_toml_file(toml)?,
        (Some(conf), None) => Config::from_knockd_file(conf)?,
        (None, None) => Config::from_knockd_file(data("knockd.conf"))?,
    };
    let capture = args.capture.clone().unwrap_or_else(|| data("knock.pcapng"));
    let matcher = Matcher::new(config.core_doors(), Limits::default())
        .context("the configuration's doors")?;
    let shown = capture.display();
    let mut source =
        ReplaySource::open(&capture).with_context(|| format!("{shown}: cannot open capture"))?;
    let mut replay = Replay {
        config: &config,
        listen_generation: matcher.listen_generation(),
        matcher,
        out: std::io::stdout().lock(),
        derived: config.doors.iter().any(|d| d.derived().is_some()),
        windows: HashMap::new(),
        warned: HashSet::new(),
    };
    source.set_listen(&replay.listen())?;
    loop {
        let next = source
            .next_event(None)
            .with_context(|| format!("{shown}: damaged capture"))?;
        let captured = match next {
            Next::Event(c) => c,
            Next::End => break,
            Next::Deadline => continue,
        };
        let now = captured.event.time;
        replay.run_timers_until(Some(now))?;
        replay.derive(now);
        replay.matcher.handle_event(now, &captured.event);
        replay.drain(now)?;
        // A consumed one-time sequence changes what the kernel would pass.
        if replay.matcher.listen_generation() != replay.listen_generation {
            replay.listen_generation = replay.matcher.listen_generation();
            source.set_listen(&replay.listen())?;
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
