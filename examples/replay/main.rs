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
//! clock runs on until nothing is pending, so every close is printed. No
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

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use knock_capture::{Next, ReplaySource, Source};
use knock_config::{Config, DoorConfig, FirewallKind};
use knock_core::{Decision, Limits, Matcher, Step, Timestamp};
use knock_firewall::{substitute, Grant};
use serde::Serialize;

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

/// One output line. Fields that do not apply to an event are left out.
#[derive(Debug, Default, Serialize)]
struct Line {
    event: &'static str,
    door: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    src: Option<IpAddr>,
    /// Seconds since the Unix epoch (file time).
    time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grant: Option<u64>,
    /// `null` on an open that never closes (a door without stop command).
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining: Option<usize>,
    /// The shell command the command sink would run.
    #[serde(skip_serializing_if = "Option::is_none")]
    would_run: Option<String>,
    /// The firewall a native grant would go to.
    #[serde(skip_serializing_if = "Option::is_none")]
    firewall: Option<&'static str>,
    /// The address or network a native grant covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    cidr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    would_open: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    would_close: Option<Vec<String>>,
    /// The sequence-file line a one-time sequence would be marked used on.
    #[serde(skip_serializing_if = "Option::is_none")]
    would_mark: Option<String>,
}

fn secs(t: Timestamp) -> f64 {
    // Exact to the microsecond for any date before 2255 (2^53 µs).
    t.as_micros() as f64 / 1e6
}

fn ports(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|s| format!("{}/{}", s.proto, s.port))
        .collect()
}

/// What the sinks of `door` would do on an open (`opening`) or a close.
fn sink_actions(line: &mut Line, door: &DoorConfig, src: IpAddr, grant: u64, opening: bool) {
    let v6 = src.is_ipv6();
    let command = if opening {
        door.start_command_for(v6)
    } else {
        door.stop_command_for(v6)
    };
    line.would_run = command.map(|c| substitute(c, src));
    if door.firewall != FirewallKind::Command && !door.open.is_empty() {
        let g = Grant::new(
            door.name.clone(),
            src,
            knock_core::GrantId(grant),
            door.open.clone(),
        )
        .with_prefix(door.grant_prefix.v4, door.grant_prefix.v6);
        line.firewall = Some(door.firewall.as_str());
        line.cidr = Some(g.cidr());
        if opening {
            line.would_open = Some(ports(&door.open));
        } else {
            line.would_close = Some(ports(&door.open));
        }
    }
}

/// Turns a decision into its output line.
fn describe(d: &Decision, now: Timestamp, m: &Matcher, config: &Config) -> Line {
    let name = m.door(d.door()).map(|x| x.name.clone()).unwrap_or_default();
    let door = config.door(&name);
    let mut line = Line {
        door: name,
        src: d.src(),
        time: secs(now),
        ..Line::default()
    };
    match *d {
        Decision::Stage { step, .. } => {
            line.event = "stage";
            line.step = Some(step);
        }
        Decision::Open {
            src, grant, until, ..
        } => {
            line.event = "open";
            line.grant = Some(grant.0);
            line.until = Some(until.map(secs));
            if let Some(door) = door {
                sink_actions(&mut line, door, src, grant.0, true);
            }
        }
        Decision::Extended { grant, until, .. } => {
            line.event = "extended";
            line.grant = Some(grant.0);
            line.until = Some(Some(secs(until)));
        }
        Decision::Close { src, grant, .. } => {
            line.event = "close";
            line.grant = Some(grant.0);
            if let Some(door) = door {
                sink_actions(&mut line, door, src, grant.0, false);
            }
        }
        Decision::Expired { step, .. } => {
            line.event = "expired";
            line.step = Some(step);
        }
        Decision::Invalidated { step, .. } => {
            line.event = "invalidated";
            line.step = Some(step);
        }
        Decision::SequenceConsumed {
            index, remaining, ..
        } => {
            line.event = "sequence_consumed";
            line.index = Some(index);
            line.remaining = Some(remaining);
            let file = door.and_then(DoorConfig::sequence_file);
            line.would_mark = file.and_then(|f| {
                let at = f.line_of(index)?;
                Some(format!("{}:{at}", f.path().display()))
            });
        }
        _ => line.event = "unknown",
    }
    line
}

/// Replays a capture, printing decisions as they come.
struct Replay<'a> {
    config: &'a Config,
    matcher: Matcher,
    listen_generation: u64,
    out: std::io::StdoutLock<'static>,
}

impl Replay<'_> {
    fn drain(&mut self, now: Timestamp) -> Result<()> {
        use std::io::Write;
        while let Some(d) = self.matcher.poll_decision() {
            let line = describe(&d, now, &self.matcher, self.config);
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
    source.set_listen(&matcher.listen_set())?;
    let mut replay = Replay {
        config: &config,
        listen_generation: matcher.listen_generation(),
        matcher,
        out: std::io::stdout().lock(),
    };
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
        replay.matcher.handle_event(now, &captured.event);
        replay.drain(now)?;
        // A consumed one-time sequence changes what the kernel would pass.
        if replay.matcher.listen_generation() != replay.listen_generation {
            replay.listen_generation = replay.matcher.listen_generation();
            source.set_listen(&replay.matcher.listen_set())?;
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

/// The error and its causes on one line, without repeating a cause that
/// an error's own message already includes.
fn report(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
    }
    msg
}

fn main() -> ExitCode {
    let args = Args::parse(); // usage errors exit with 2
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replay: error: {}", report(&e));
            ExitCode::from(1)
        }
    }
}
