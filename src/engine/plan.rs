//! What each door does when it opens and closes: built once from the
//! configuration, next to the core door it belongs to.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use knock_config::spa::substitute_port;
use knock_config::{DerivedSequence, DoorConfig, FirewallKind, SequenceEntry};
use knock_core::Step;
use knock_firewall::DoorCommands;
use serde::{Deserialize, Serialize};

/// How a grant is applied (or undone): everything a sink needs, already
/// rendered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum How {
    /// A knockd shell command, `%IP%` already substituted.
    Command {
        /// The command line, for `/bin/sh -c`.
        command: String,
    },
    /// A native grant through a firewall backend.
    Native {
        /// The backend (`iptables` or `nftables`).
        firewall: FirewallKind,
        /// The ports to open or close.
        ports: Vec<Step>,
        /// Prefix width for IPv4 knockers (32: the address alone).
        prefix_v4: u8,
        /// Prefix width for IPv6 knockers (128: the address alone).
        prefix_v6: u8,
    },
}

/// A door's action: knockd's commands, or native grants.
#[derive(Clone, Debug)]
enum DoorAction {
    /// knockd's commands (an empty `start`: the door has none).
    Commands(DoorCommands),
    /// Native grants: the same for every knocker.
    Native(How),
}

/// One active door as the engine needs it beyond the core's [`knock_core::Door`].
#[derive(Clone, Debug)]
pub(crate) struct DoorPlan {
    pub(crate) name: Arc<str>,
    action: DoorAction,
    /// Time-derived sequences: the parameters and secret.
    pub(crate) derived: Option<DerivedSequence>,
    /// A one-time sequence file: its path, and the line of each unused
    /// sequence as loaded.
    one_time: Option<(PathBuf, Vec<SequenceEntry>)>,
}

impl DoorPlan {
    pub(crate) fn new(d: &DoorConfig) -> DoorPlan {
        let action = match d.firewall {
            FirewallKind::Command => {
                // An SPA door opening one port: its commands name it.
                let port = match d.open.as_slice() {
                    [p] if d.spa().is_some() => Some(*p),
                    _ => None,
                };
                let sub = |c: &Option<String>| match port {
                    Some(p) => c.as_deref().map(|c| substitute_port(c, p)),
                    None => c.clone(),
                };
                let mut c = DoorCommands::new(sub(&d.start_command).unwrap_or_default());
                c.start6 = sub(&d.start_command_6);
                c.stop = sub(&d.stop_command);
                c.stop6 = sub(&d.stop_command_6);
                DoorAction::Commands(c)
            }
            firewall => DoorAction::Native(How::Native {
                firewall,
                ports: d.open.clone(),
                prefix_v4: d.grant_prefix.v4,
                prefix_v6: d.grant_prefix.v6,
            }),
        };
        let one_time = match &d.sequence {
            knock_config::SequenceSource::OneTime {
                loaded: Some(f), ..
            } => Some((f.path().to_owned(), f.entries().to_vec())),
            _ => None,
        };
        DoorPlan {
            name: Arc::from(d.name.as_str()),
            action,
            derived: d.derived().cloned(),
            one_time,
        }
    }

    fn how(&self, src: IpAddr, opening: bool) -> Option<How> {
        match &self.action {
            DoorAction::Commands(c) => {
                let command = if opening {
                    Some(c.start_for(src)).filter(|s| !s.is_empty())
                } else {
                    c.stop_for(src)
                };
                command.map(|command| How::Command { command })
            }
            DoorAction::Native(how) => Some(how.clone()),
        }
    }

    /// What opens the door for `src` (`None`: a door without a start command).
    pub(crate) fn opening(&self, src: IpAddr) -> Option<How> {
        self.how(src, true)
    }

    /// What closes it again (`None`: nothing to undo).
    pub(crate) fn closing(&self, src: IpAddr) -> Option<How> {
        self.how(src, false)
    }

    /// `path:line` of the one-time sequence `steps`.
    pub(crate) fn one_time_line(&self, steps: &[Step]) -> Option<String> {
        let (path, lines) = self.one_time.as_ref()?;
        let e = lines.iter().find(|e| e.steps == steps)?;
        Some(format!("{}:{}", path.display(), e.line))
    }
}
