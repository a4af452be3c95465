//! # knock-firewall
//!
//! Sinks that turn knock-rs grants into firewall state, behind one small
//! trait, [`FirewallSink`].
//!
//! ```text
//!   knock_core::Decision::Open / Extended / Close
//!            │  (daemon: DoorId -> door name, ports, lifetime)
//!            ▼
//!         Grant ──► FirewallSink::open / extend / close / reconcile / block
//!                        ├─ CommandSink   knockd's start/stop commands (/bin/sh -c)
//!                        ├─ IptablesSink  our chain, one rule per grant and port
//!                        └─ NftSink       (feature `nftables`) netlink, kernel-side expiry
//! ```
//!
//! ## Brief overview
//! * [`Grant`]: door name, knocker address (or its /24, /64 with
//!   [`Grant::with_prefix`]), grant id, ports, wall-clock expiry.
//! * [`FirewallSink`]: `open`, `extend`, `close`, `reconcile`, `block`; every
//!   operation is idempotent and returns a typed [`Error`] naming the grant
//!   and the cause (missing binary, permission denied, kernel error).
//! * [`CommandSink`]: knockd-compatible commands with `%IP%` ([`substitute`]),
//!   run by a bounded worker pool, stop commands kept in a crash-safe state
//!   file.
//! * [`IptablesSink`]: `iptables`/`ip6tables` through the `iptables` crate,
//!   our own chain jumped to from INPUT, expiry in the rule comment so that
//!   [`FirewallSink::reconcile`] can remove what is over after a restart.
//! * `NftSink` (cargo feature `nftables`, off by default): a table of our own
//!   in the `inet` family, one timeout set per door and family, elements
//!   added over netlink with their own timeout, so the kernel closes the door
//!   even if the daemon was killed. **The feature pulls in `rustables`, which
//!   is GPL-3.0-or-later**: a binary built with it is GPL-3.0-or-later as a
//!   whole. Without the feature this crate is MIT OR Apache-2.0 throughout.
//! * [`FnSink`] (a closure) and [`RecordingSink`] (records calls) for tests
//!   and glue.
//!
//! ## Example
//! ```
//! use knock_firewall::{Action, DoorCommands, FirewallSink, Grant, RecordingSink};
//! use knock_core::Step;
//!
//! // The daemon builds a Grant from Decision::Open and the door's config ...
//! let g = Grant::new("openSSH", "2001:db8::2".parse().unwrap(), 1, vec![Step::tcp(22)])
//!     .with_prefix(24, 64);
//! assert_eq!(g.cidr(), "2001:db8::/64");
//!
//! // ... and hands it to a sink (here one that records, for tests).
//! let rec = RecordingSink::new();
//! let mut sink = rec.clone();
//! sink.open(&g).unwrap();
//! assert_eq!(rec.actions(), vec![Action::Open(g.clone())]);
//!
//! // knockd's commands: `%IP%` is the parsed address, `_6` falls back to the IPv4 command.
//! let door = DoorCommands::new("ipset add knock %IP%").with_stop("ipset del knock %IP%");
//! assert_eq!(door.start_for(g.src), "ipset add knock 2001:db8::2");
//! assert_eq!(door.stop_for(g.src).as_deref(), Some("ipset del knock 2001:db8::2"));
//! ```
//!
//! ## Design
//! Decisions come from a sans-IO matcher with its own clock; sinks keep
//! wall-clock expiries because firewall state outlives the process. The
//! nftables sink lets the kernel expire grants (nothing to do on restart);
//! the iptables and command sinks write the expiry down (rule comment, state
//! file) and [`FirewallSink::reconcile`] acts on it after a restart.
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![warn(unreachable_pub)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod command;
mod error;
mod grant;
mod iptables;
#[cfg(feature = "nftables")]
mod nft;
mod sink;

pub use command::{
    substitute, CommandRunner, CommandStats, Done, DoorCommands, Job, Outcome, RunnerConfig,
};
pub use error::Error;
pub use grant::{mask, Grant};
pub use iptables::{IptablesConfig, IptablesSink};
#[cfg(feature = "nftables")]
pub use nft::{NftConfig, NftDoor, NftSink};
#[cfg(feature = "mock")]
pub use sink::MockFirewallSink;
pub use sink::{Action, FirewallSink, FnSink, Reconciled, RecordingSink};
