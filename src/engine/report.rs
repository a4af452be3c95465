//! One decision as a JSON-ready report: what happened and what the
//! engine asks the sinks to do about it. The daemon's `--events-json` and
//! the replay tool print the same lines.

use std::net::IpAddr;

use knock_core::Step;
use serde::Serialize;

use super::How;

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

/// Seconds since the Unix epoch, as reports write times.
pub(crate) fn secs(unix: std::time::Duration) -> f64 {
    unix.as_secs_f64()
}

fn ports(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|s| format!("{}/{}", s.proto, s.port))
        .collect()
}

impl Report {
    /// Fills in what applying `how` to `src` does (an open or a close).
    pub(crate) fn with_how(mut self, how: Option<&How>, src: IpAddr, opening: bool) -> Report {
        match how {
            Some(How::Command { command }) => self.would_run = Some(command.clone()),
            Some(How::Native {
                firewall,
                ports: p,
                prefix_v4,
                prefix_v6,
            }) => {
                self.firewall = Some(firewall.as_str());
                let len = if src.is_ipv6() {
                    *prefix_v6
                } else {
                    *prefix_v4
                };
                self.cidr = Some(format!("{}/{len}", knock_firewall::mask(src, len)));
                if opening {
                    self.would_open = Some(ports(p));
                } else {
                    self.would_close = Some(ports(p));
                }
            }
            None => {}
        }
        self
    }
}
