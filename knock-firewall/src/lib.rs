//! # knock-firewall
//!
//! Sinks that apply knock-rs grants and blocks to the firewall, behind one
//! small trait, [`FirewallSink`], and a bounded runner for knockd's shell
//! commands, [`CommandRunner`].
//!
//! **Sinks only apply; the engine owns time.** A sans-IO engine (in the
//! `knock-rs` facade crate) decides when every grant and block begins and
//! ends, renders knockd's commands (`%IP%` substituted) and persists its own
//! state. This crate keeps no timers, schedules nothing and writes no state
//! file: a sink does what it is told when it is told, and the runner runs
//! what it is handed.
//!
//! ```text
//!                 engine (sans-IO: matcher, grant and block deadlines, its own state)
//!                    │                                     │
//!      Grant / (IpAddr, until)                    Job { id, what, command }
//!                    ▼                                     ▼
//!   FirewallSink::open / extend / close           CommandRunner::run
//!                 block / unblock                    (bounded queue, N workers,
//!                 reconcile (start-up only)           sh -c, own process group,
//!     ├─ IptablesSink  our chain, one rule            SIGKILL at max_run_time)
//!     │                per grant and port                   │
//!     └─ NftSink       (feature `nftables`) netlink,   poll_done() -> Done { outcome }
//!                      timeout sets                    (with_notify wakes the engine)
//! ```
//!
//! ## Brief overview
//! * [`Grant`]: door name, knocker address (or its /24, /64 with
//!   [`Grant::with_prefix`]), grant id (`u64`), ports, wall-clock expiry.
//! * [`FirewallSink`]: `open`, `extend`, `close`, `block` (until a time;
//!   new connections only, to the ports of the sink's [`BlockReach`] or to
//!   the whole host), `unblock`, and `reconcile`, called once at start-up. Every operation is
//!   idempotent and returns a typed [`Error`] naming the grant or address and
//!   the cause (missing binary, permission denied, kernel error).
//! * [`IptablesSink`]: `iptables`/`ip6tables` through the `iptables` crate,
//!   our own chain jumped to from INPUT, the end of each grant and block in
//!   its rule comment so that [`FirewallSink::reconcile`] can remove what a
//!   daemon that died left behind once its time is over.
//! * `NftSink` (cargo feature `nftables`, off by default): a table of our own
//!   in the `inet` family, one timeout set per door and family, elements
//!   added over netlink with the grant's or block's end as their timeout.
//!   The engine closes and unblocks on time; the kernel timeouts remain a
//!   safety net, so a port never stays open (nor an address blocked) after a
//!   crash. **The feature pulls in `rustables`, which is GPL-3.0-or-later**:
//!   a binary built with it is GPL-3.0-or-later as a whole. Without the
//!   feature this crate is MIT OR Apache-2.0 throughout.
//! * [`CommandRunner`]: runs rendered commands ([`Job`]) on a bounded worker
//!   pool and reports each [`Done`] with its [`Outcome`] (succeeded, failed
//!   with exit code and stderr excerpt, killed at `max_run_time`, could not
//!   start). [`substitute`] and [`DoorCommands`] render knockd's templates
//!   (`%IP%`, the `_6` fallback) for the engine.
//! * [`FnSink`] (a closure) and [`RecordingSink`] (records calls) for tests
//!   and glue; `MockFirewallSink` (mockall) with the cargo feature `mock`.
//!
//! ## Example
//! ```
//! use std::time::{Duration, SystemTime};
//! use knock_core::Step;
//! use knock_firewall::{
//!     Action, CommandRunner, DoorCommands, FirewallSink, Grant, Job, Outcome, RecordingSink,
//!     RunnerConfig,
//! };
//!
//! // The engine builds a Grant when a knock opens a door ...
//! let now = SystemTime::now();
//! let g = Grant::new("openSSH", "2001:db8::2".parse().unwrap(), 1, vec![Step::tcp(22)])
//!     .with_prefix(24, 64)
//!     .with_expiry(Some(now + Duration::from_secs(30)));
//! assert_eq!(g.cidr(), "2001:db8::/64");
//!
//! // ... and hands it to a sink (here one that records, for tests); 30 s
//! // later, by its own clock, it closes it. A scanner is blocked until a
//! // time the engine chose, and unblocked by the engine then.
//! let rec = RecordingSink::new();
//! let mut sink = rec.clone();
//! sink.open(&g).unwrap();
//! sink.close(&g).unwrap();
//! let scanner = "198.18.0.66".parse().unwrap();
//! sink.block(scanner, now + Duration::from_secs(600)).unwrap();
//! sink.unblock(scanner).unwrap();
//! assert_eq!(rec.actions()[0], Action::Open(g.clone()));
//! assert!(rec.open_grants().is_empty() && rec.blocked().is_empty());
//!
//! // knockd's commands: the engine renders them (`%IP%` is the parsed
//! // address, `_6` falls back to the IPv4 command) and the runner runs them.
//! let door = DoorCommands::new("echo ipset add knock %IP%").with_stop("echo ipset del knock %IP%");
//! assert_eq!(door.start_for(g.src), "echo ipset add knock 2001:db8::2");
//! let runner = CommandRunner::new(RunnerConfig::default());
//! runner.run(Job { id: 1, what: format!("openSSH: start for {}", g.src), command: door.start_for(g.src) })?;
//! let done = loop {
//!     if let Some(done) = runner.poll_done() {
//!         break done; // an event loop would sleep until `with_notify`'s callback
//!     }
//!     std::thread::sleep(Duration::from_millis(5));
//! };
//! assert_eq!((done.id, done.outcome), (1, Outcome::Succeeded));
//! # Ok::<(), knock_firewall::Error>(())
//! ```
//!
//! ## Design
//! The matcher and the engine are sans-IO with their own clock; this crate
//! is the I/O at the edge. Sinks still take wall-clock ends
//! ([`SystemTime`](std::time::SystemTime)) because firewall state outlives
//! the process: the nftables sink gives them to the kernel as element
//! timeouts (a crash safety net, nothing to do on restart), the iptables sink
//! writes them into rule comments and [`FirewallSink::reconcile`] acts on
//! them at the next start-up.
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
mod ruleset;
mod sink;

pub use command::{
    substitute, CommandRunner, CommandStats, Done, DoorCommands, Job, Outcome, RunnerConfig,
};
pub use error::Error;
pub use grant::{mask, Grant};
pub use iptables::{IptablesConfig, IptablesSink};
#[cfg(feature = "nftables")]
pub use nft::{Checked as NftChecked, NftConfig, NftDoor, NftSink, MAX_TIMEOUT as NFT_MAX_TIMEOUT};
pub use ruleset::{Dropper, Fate, HostRuleset, Manager, Placement};
#[cfg(feature = "mock")]
pub use sink::MockFirewallSink;
pub use sink::{Action, BlockReach, FirewallSink, FnSink, Reconciled, RecordingSink};
