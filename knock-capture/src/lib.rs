//! # knock-capture
//!
//! Turns traffic into the [`knock_core::Event`]s the matcher consumes: from
//! a raw `AF_PACKET` socket with a generated kernel BPF filter, from a
//! `pnet` datalink channel, or from a pcap / pcapng file.
//!
//! ```text
//!  NIC ─► kernel BPF (bpf::compile(listen set)) ─► AF_PACKET ring / pnet ─┐
//!  capture.pcap(ng) ──────────────────────────────────────────────────────┤
//!                                                       parse(link, bytes) ─► Event / Reject
//! ```
//!
//! ## Brief overview
//! * [`parse`]: bytes + [`LinkType`] to an [`Event`](knock_core::Event) or a
//!   typed [`Reject`]; never panics. Ethernet with stacked VLAN tags, Linux
//!   cooked v1/v2, raw IP; IPv4 with options, IPv6 with its extension-header
//!   chain; TCP and UDP.
//! * [`Source`]: the one trait. `next_event(deadline)` blocks in `poll(2)`
//!   until a knock or the deadline ([`Next`]); `set_listen` swaps the filter;
//!   `stats` gives [`Stats`] (kernel drops, frames seen, rejects by reason).
//! * [`AfPacketSource`]: the daemon's default, read from a memory-mapped
//!   receive ring (`PACKET_RX_RING`, no system call per frame while frames
//!   keep coming; [`Source::next_queued`] drains it in batches).
//!   [`PnetSource`]: the same over `pnet_datalink` (portable, one read per
//!   frame). [`ReplaySource`]: pcap / pcapng, timestamps from the
//!   file. [`MultiSource`]: several sources (interfaces) at once.
//! * [`bpf`]: the classic-BPF generator, with a small interpreter for tests;
//!   [`Source::filter_widening`] says when a large listen set did not fit
//!   exactly. [`LocalAddrs`]: the host's addresses, for the destination check.
//! * [`craft`]: frame builders for tests, benches and fuzzers; [`fuzz::check`]:
//!   what a fuzz target calls with arbitrary bytes.
//!
//! ## Design
//! The kernel filter is an optimisation, never the decision: it passes every
//! frame that *might* be a knock (IPv6 with extension headers, IPv4
//! fragments, and more when a large listen set had to be widened to fit,
//! see [`bpf::Widening`]) and user space re-checks every frame with
//! [`parse`] and [`knock_core::Listen::matches`]. A frame the filter passed
//! but user space rejects is counted in [`Stats`], not silently lost.
//!
//! Live sources count only traffic for this host, in the kernel filter and
//! again in user space: frames of packet type `PACKET_HOST` without VLAN
//! tags the interface does not terminate, to one of the host's addresses
//! ([`LocalAddrs`]) or to the target of the door whose entry matched.
//! Replays count every packet of the file.
//!
//! ## Example
//! ```
//! use knock_capture::{craft, parse, LinkType, Reject};
//! use knock_core::{Proto, TcpFlags, Timestamp};
//! use std::net::Ipv4Addr;
//!
//! let (client, server) = (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 1));
//! let ip = craft::ipv4(client, server, 6, &[], craft::Frag::default(),
//!                      &craft::tcp(40000, 7000, TcpFlags::SYN));
//! let frame = craft::ethernet(&[(craft::TPID_8021Q, 100)], craft::ETH_IPV4, &ip);
//!
//! let ev = parse(LinkType::Ethernet, &frame, Timestamp::from_secs(1)).unwrap();
//! assert_eq!((ev.src, ev.proto, ev.dst_port, ev.tcp_flags),
//!            (client.into(), Proto::Tcp, 7000, TcpFlags::SYN));
//!
//! assert_eq!(parse(LinkType::Ethernet, &frame[..30], Timestamp::ZERO),
//!            Err(Reject::Truncated(knock_capture::Layer::Ipv4)));
//! ```
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod afpacket;
pub mod bpf;
pub mod craft;
mod error;
pub mod fuzz;
mod local;
mod multi;
mod pace;
mod parse;
mod pnet_source;
mod replay;
mod ring;
mod source;
mod sys;

pub use afpacket::{interface_names, link_of_hw_type, AfPacketSource, LiveConfig};
pub use bpf::Widening;
pub use error::CaptureError;
pub use local::LocalAddrs;
pub use multi::MultiSource;
pub use parse::{
    parse, parse_with_payload, Layer, LinkType, Reject, MAX_EXTENSION_HEADERS, MAX_VLAN_TAGS,
};
pub use pnet_source::PnetSource;
pub use replay::ReplaySource;
pub use source::{Captured, InterfaceEvent, Next, Source, Stats, MAX_PAYLOAD};
