//! The host's own packet filter at the input hook, and what it does with a
//! grant's packets.
//!
//! In nftables an `accept` in one base chain does not override a `drop` in
//! another: a grant only takes effect if no other base chain on the input
//! hook (of any table of the `ip`, `ip6` or `inet` family, at any priority)
//! drops its packets. iptables-nft, ufw and firewalld all keep their rules
//! there; iptables-legacy keeps its own tables. [`HostRuleset::read`] reads
//! both, and [`HostRuleset::fate`] says what happens to a new connection
//! to a door's port once our accept is in place.

use knock_core::Step;

use crate::error::Error;

/// Where a sink puts its accept for a grant: the base chains it replaces
/// in the analysis are not asked again (our accept decides there).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// Our own nftables table (`inet <name>`), its base chain `input`.
    NftTable(String),
    /// The iptables sink: a jump at the top of `INPUT` of the `filter`
    /// table (iptables-nft: `ip filter INPUT` / `ip6 filter INPUT`).
    IptablesInput,
}

/// Which tool manages the chain that drops (for the message and the choice
/// of sink).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Manager {
    /// iptables over nftables (`ip filter INPUT` and its user chains).
    Iptables,
    /// iptables-legacy (its own tables, not in nftables).
    IptablesLegacy,
    /// ufw (iptables chains named `ufw-*`).
    Ufw,
    /// firewalld (`inet firewalld`).
    Firewalld,
    /// A native nftables table.
    Nftables,
}

/// What would drop a grant's packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropper {
    /// `ip`, `ip6` or `inet` (`iptables-legacy` for the legacy tables).
    pub family: String,
    /// The table.
    pub table: String,
    /// The base chain whose verdict drops (the chain hooked at input).
    pub chain: String,
    /// The policy or rule that drops (`policy drop`, or the rule as text
    /// with the chain it is in when reached through a jump).
    pub what: String,
    /// Who manages it.
    pub manager: Manager,
}

impl std::fmt::Display for Dropper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} table {} chain {}: {}",
            self.family, self.table, self.chain, self.what
        )
    }
}

/// What the host does with a new connection to a door's port (a TCP SYN
/// or a UDP datagram from an arbitrary address, not on loopback) after our
/// accept.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fate {
    /// Nothing drops it.
    Passes,
    /// This drops (or rejects) it.
    Dropped(Dropper),
}

/// The host's ruleset at the input hook.
#[derive(Clone, Debug, Default)]
pub struct HostRuleset {
    _private: (),
}

impl HostRuleset {
    /// Reads the ruleset of the calling thread's network namespace.
    ///
    /// # Errors
    /// The ruleset cannot be read (no permission, `nft` missing, output
    /// that does not parse).
    pub fn read() -> Result<HostRuleset, Error> {
        Err(Error::Config(
            "reading the host's ruleset is not built yet".into(),
        ))
    }

    /// What the host does with a new connection to `step` over IPv6
    /// (`v6`) or IPv4, with our accept at `placement`.
    pub fn fate(&self, v6: bool, step: Step, placement: &Placement) -> Fate {
        let _ = (v6, step, placement);
        Fate::Passes
    }
}
