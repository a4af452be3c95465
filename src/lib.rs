//! # knock-rs
//!
//! A facade over the knock-rs crates: [`core`] (the sans-IO matcher) and,
//! behind features, [`capture`], [`firewall`] and [`config`]; plus the
//! sans-IO gateway engine (`engine`, feature `engine`) that turns a
//! configuration, knocks and the passage of time into firewall actions, and
//! the daemon shell that drives it (`daemon`, feature `daemon`). Feature
//! `cli` builds the programs `knockd-rs` and `knock-rs` (`cargo install`).
//!
//! ## Which state lives where
//! * knock-core's `Matcher`: attempts, grants' lifetimes, cooldowns, blocks,
//!   used windows; the only clock that decides when anything ends.
//! * `engine::Engine`: each door's action, rendered commands, closes not yet
//!   confirmed, derived windows, the snapshot a restart restores.
//! * `daemon`: nothing that decides; the capture source, the sinks, the
//!   command runner, the log and the files it writes.
//!
//! ```
//! let door = knock::core::Door::new("ssh", vec![knock::core::Step::tcp(7000)]);
//! assert!(knock::core::Matcher::new(vec![door], Default::default()).is_ok());
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use knock_core as core;

#[cfg(feature = "capture")]
pub use knock_capture as capture;
#[cfg(feature = "config")]
pub use knock_config as config;
#[cfg(feature = "firewall")]
pub use knock_firewall as firewall;
#[cfg(feature = "engine")]
pub use knock_spa as spa;

#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "engine")]
pub mod engine;

/// An error and its causes on one line (`a: b: c`), without repeating a
/// cause that an error's own message already includes: what the example
/// programs print before exiting with an error.
pub fn error_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = String::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
        next = err.source();
    }
    msg
}
