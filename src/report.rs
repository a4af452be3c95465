//! One decision as a JSON-ready report: what happened and what each
//! firewall sink does (or would do) about it. Used by the daemon's
//! `--events-json` and by the replay tool, so both print the same lines.

use std::net::IpAddr;

use knock_config::{Config, DoorConfig, FirewallKind};
use knock_core::{Decision, Matcher, Step, Timestamp};
use knock_firewall::{substitute, Grant};
use serde::Serialize;

/// One decision, ready for `serde_json`. Fields that do not apply to an
/// event are left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// What happened: `stage`, `open`, `extended`, `close`, `expired`,
    /// `invalidated`, `sequence_consumed`, `blocked`, `unblocked`.
    pub event: &'static str,
    /// The door's name.
    pub door: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The knocker.
    pub src: Option<IpAddr>,
    /// Seconds since the Unix epoch (file time in a replay, wall clock in the daemon).
    pub time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Steps done (stage, expired, invalidated).
    pub step: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The grant's id (open, extended, close).
    pub grant: Option<u64>,
    /// When the grant closes (or a block ends), in seconds since the Unix
    /// epoch; `null` on an open that never closes (a door without stop command).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The used one-time sequence's index in the door's list.
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// One-time sequences left.
    pub remaining: Option<usize>,
    /// The shell command the command sink would run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_run: Option<String>,
    /// The firewall a native grant would go to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firewall: Option<&'static str>,
    /// The address or network a native grant covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Ports a native grant opens (`tcp/22`).
    pub would_open: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Ports a native grant closes.
    pub would_close: Option<Vec<String>>,
    /// The sequence-file line a one-time sequence would be marked used on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_mark: Option<String>,
}

/// A timestamp as seconds, for timestamps that count from the Unix epoch.
pub fn secs(t: Timestamp) -> f64 {
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
fn sink_actions(line: &mut Report, door: &DoorConfig, src: IpAddr, grant: u64, opening: bool) {
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

/// Turns a decision into its report. `time` converts the matcher's
/// timestamps to seconds since the Unix epoch (the file's time in a replay,
/// the wall clock in the daemon).
pub fn describe(
    d: &Decision,
    now: Timestamp,
    m: &Matcher,
    config: &Config,
    time: impl Fn(Timestamp) -> f64,
) -> Report {
    let name = m.door(d.door()).map(|x| x.name.clone()).unwrap_or_default();
    let door = config.door(&name);
    let mut line = Report {
        door: name,
        src: d.src(),
        time: time(now),
        ..Report::default()
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
            line.until = Some(until.map(&time));
            if let Some(door) = door {
                sink_actions(&mut line, door, src, grant.0, true);
            }
        }
        Decision::Extended { grant, until, .. } => {
            line.event = "extended";
            line.grant = Some(grant.0);
            line.until = Some(Some(time(until)));
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
        Decision::Blocked { until, .. } => {
            line.event = "blocked";
            line.until = Some(Some(time(until)));
        }
        Decision::Unblocked { .. } => line.event = "unblocked",
        _ => line.event = "unknown",
    }
    line
}
