//! # knock-core
//!
//! The sans-IO heart of knock-rs: a deterministic port-knocking matcher.
//! Knock [`Event`]s go in, [`Decision`]s come out, and time is a value the
//! caller passes in. There are no sockets, threads, clocks, files or
//! processes here, so the same matcher runs a live daemon, replays a capture
//! file or sits inside a fuzzer.
//!
//! ```text
//!   capture (AF_PACKET, pnet, pcap)          firewall (nftables, iptables, sh)
//!            │ Event                                    ▲ Open / Close
//!            ▼                                          │
//!   handle_event(now, &ev) ──► Matcher ──► poll_decision()
//!   handle_timeout(now)    ──►         ──► poll_timeout() ─► sleep until
//! ```
//!
//! ## Brief overview
//! * [`Door`]: a named set of [`Step`] sequences plus knockd's rules
//!   (`seq_timeout`, `tcpflags`, `target`, one-time sequences) and ours
//!   (`allow_repeat`, `cooldown`, `from`, `strict`, time-derived
//!   [`Sequences::Windowed`]).
//! * [`Matcher`]: the per-source state machine. Call order: after every
//!   `handle_event` or `handle_timeout`, drain `poll_decision` until `None`,
//!   then wait for the next packet or until `poll_timeout`. Time must only move
//!   forward (it is clamped otherwise) and is resolved to the millisecond.
//! * [`Decision`]: `Stage`, `Open`, `Extended`, `Close`, `Expired`,
//!   `Invalidated`, `SequenceConsumed`, `Blocked`, `Unblocked`. Sinks, not
//!   the core, turn them into firewall rules or commands.
//! * [`Blacklist`]: the scanner rule ([`Matcher::set_blacklist`]): a source
//!   with too many strikes (invalidated attempts, touches of a strict door's
//!   non-step ports) within a window is [`Decision::Blocked`] and ignored
//!   until [`Decision::Unblocked`]. Its own bounded table
//!   ([`Limits::max_suspects`]), O(1) per event.
//! * [`Sequences::Authorized`]: a door without a sequence, opened by
//!   [`Matcher::handle_authorized`] when the caller has authorized a request
//!   (a Single Packet Authorization packet verified by `knock-spa`); its
//!   grants live and close like any door's.
//! * [`Listen`]: what a capture backend's kernel filter must let through
//!   ([`Matcher::listen_set`]).
//!
//! ## Which state lives where
//! Everything is owned by the [`Matcher`], bounded by [`Limits`]:
//! * per source: one record in a slab table (its attempts, when they
//!   started, its place on the eviction lists), found through an index
//!   keyed by the address;
//! * per grant or cooldown, and per suspect or blocked source: an entry in
//!   the grants' and the blacklist's slabs;
//! * every deadline (attempts, grants, cooldowns, blacklist windows and
//!   blocks): one timer heap, the only clock-driven structure;
//! * per door: its compiled sequences, its used windows, its one-time
//!   progress.
//!
//! What a door *does* (commands, firewall ports) is not here: the
//! `knock-rs` facade's engine owns it, and the I/O that applies it.
//!
//! ## Determinism
//! The same doors, calls and times give the same decisions in the same
//! order. The maps of sources hash with SipHash-1-3 keyed from a seed
//! ([`SourceHasher`]): [`Matcher::new`] uses seed 0 (tests, replays), a
//! daemon facing the network passes a random one to
//! [`Matcher::with_seed`]. The seed changes no decision.
//!
//! Decisions come in this order. One event: its `Stage`s and
//! `Invalidated`s in track order (by door id, then the sequence's index;
//! a windowed door's by window modulo [`WINDOW_SLOTS`]), then the opens
//! (`Open` or `Extended`, a one-time door's `SequenceConsumed`) in the same
//! order, then a `Blocked`. Timers (before an event, or in
//! `handle_timeout`): by deadline; at the same instant expiries, then
//! closes, then block ends, each by source address, then door. Lifting the
//! blacklist (`set_blacklist(None)`): `Unblocked` by block end, then
//! address.
//!
//! ## Restarts
//! What must outlive a process is the caller's to save and hand back:
//! grants ([`Matcher::open_grants`], [`Matcher::next_grant_id`]; then
//! [`Matcher::restore_grant`], which keeps each grant's [`GrantId`], and
//! [`Matcher::reserve_grant_ids`]), blocks ([`Matcher::blocks`],
//! [`Matcher::restore_block`]) and the used windows of time-derived doors
//! ([`Matcher::used_windows`], [`Matcher::restore_used_windows`]).
//!
//! ## Semantics
//! knockd's, per source address: a knock from a source with no attempt starts
//! one for every door whose first step it hits; later knocks advance the
//! attempts whose next step they hit and invalidate the others (that knock
//! does not start a new attempt); an attempt must finish within its door's
//! `seq_timeout` of its first knock. Knocks no door listens to are ignored, as
//! are TCP knocks with the wrong flags for a door. Unlike knockd, an expiry
//! removes only its own attempt, expiry is driven by `handle_timeout` rather
//! than the next packet, doors sharing a prefix (1,2 and 1,2,3) all fire, a
//! repeat knock can be tolerated (`allow_repeat`), a re-knock while a grant is
//! open extends it instead of opening twice, and state is bounded by [`Limits`].
//!
//! ## Beyond knockd
//! * **Strict doors** (`Door::strict`): while an attempt is in progress, any
//!   TCP SYN (without ACK) or UDP datagram from the source to another port
//!   invalidates it, not only the ports of some door; [`Matcher::listen_set`]
//!   then asks for every SYN and datagram ([`Listen::any_port`]), so a
//!   port-ordered sweep of 1-65535 never opens an ascending sequence.
//! * **Time-derived sequences** ([`Door::windowed`]): the caller derives the
//!   sequences of windows w-1, w and w+1 from its clock and a secret
//!   (knock-config's `derive` module) and hands them over with
//!   [`Matcher::set_windows`] whenever w changes; the core never reads a
//!   clock. Each window's sequence opens at most once (the door remembers its
//!   last [`USED_WINDOWS`] used windows, also across a reload).
//! * **Scanner blacklist** ([`Blacklist`]), see above.
//! * **Source allow-lists** (`Door::from`): knocks from elsewhere are not
//!   seen by the door.
//!
//! ## Example
//! ```
//! use knock_core::{Decision, Door, Event, Limits, Matcher, Step, TcpFlags, Timestamp};
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::Duration;
//!
//! let door = Door::new("openSSH", vec![Step::tcp(7000), Step::tcp(8000), Step::udp(9000)])
//!     .with_grant_lifetime(Some(Duration::from_secs(10)));
//! // Seed 0 here; a daemon passes a random seed (`Matcher::with_seed`).
//! let mut m = Matcher::new(vec![door], Limits::default()).unwrap();
//! let (me, server): (IpAddr, IpAddr) = (Ipv4Addr::new(198, 18, 0, 2).into(), Ipv4Addr::new(198, 18, 0, 1).into());
//!
//! let t = Timestamp::from_secs(100);
//! m.handle_event(t, &Event::tcp(me, server, 7000, TcpFlags::SYN, t));
//! m.handle_event(t, &Event::tcp(me, server, 8000, TcpFlags::SYN, t));
//! m.handle_event(t, &Event::udp(me, server, 9000, t));
//!
//! let decisions: Vec<Decision> = std::iter::from_fn(|| m.poll_decision()).collect();
//! assert!(matches!(decisions.last(), Some(Decision::Open { src, .. }) if *src == me));
//!
//! // Ten seconds later the grant closes.
//! let wake = m.poll_timeout().unwrap();
//! assert_eq!(wake, Timestamp::from_secs(110));
//! let (door, src, grant, until) = m.open_grants().next().unwrap();
//!
//! // A restarted process would get the grant back with its id.
//! let mut again = Matcher::with_seed(m.doors().map(|(_, d)| d.clone()).collect(), Limits::default(), 7).unwrap();
//! again.reserve_grant_ids(m.next_grant_id());
//! assert_eq!(again.restore_grant(door, src, until, grant.get()), Some(grant));
//!
//! m.handle_timeout(wake);
//! assert!(matches!(m.poll_decision(), Some(Decision::Close { grant: g, .. }) if g == grant));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod blacklist;
mod decision;
mod door;
mod error;
mod event;
mod grant;
mod hasher;
mod index;
mod matcher;
mod table;
mod time;
mod timer;

pub use blacklist::Blacklist;
pub use decision::{Decision, DoorId, GrantId};
pub use door::{
    Door, FlagFilter, Listen, Sequences, Step, DEFAULT_SEQ_TIMEOUT, MAX_SEQ_TIMEOUT, MAX_STEPS,
    USED_WINDOWS, WINDOW_SLOTS,
};
pub use error::DoorError;
pub use event::{Event, Proto, TcpFlags, UnknownName};
pub use hasher::{SourceHash, SourceHasher};
pub use matcher::{Limits, Matcher, Stats};
pub use time::Timestamp;

#[cfg(test)]
mod tests;
