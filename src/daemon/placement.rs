//! Where native grants go on this host: `firewall = auto` resolved, and
//! explicit `nftables`/`iptables` doors checked, against the host's own
//! ruleset (at start, on reload and by `--check`).
//!
//! In nftables an accept in one base chain does not override a drop in
//! another: a grant in our own table does nothing if the host's firewall
//! drops the port in a chain of its own. So each native door's ports are
//! asked, per address family, what happens to them with our accept in our
//! table, and if they are dropped, with our accept at the top of iptables'
//! `INPUT`. A door whose grants would be dropped either way is refused:
//! the daemon never reports OPEN for a grant the host drops.

use knock_config::{Config, FirewallKind};
use knock_core::Step;
use knock_firewall::{Dropper, Fate, HostRuleset, Manager, Placement};

/// Where one native door's grants go, and why (one line of `--check`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The door.
    pub door: String,
    /// The firewall its grants go to (never [`FirewallKind::Auto`]).
    pub firewall: FirewallKind,
    /// Why there.
    pub why: String,
}

impl std::fmt::Display for Placed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}] grants go to {}: {}",
            self.door,
            self.firewall.as_str(),
            self.why
        )
    }
}

/// The outcome of [`place_doors`].
#[derive(Clone, Debug, Default)]
pub struct Placements {
    /// One per native door, in config order.
    pub doors: Vec<Placed>,
    /// What the operator must hear (the ruleset could not be read, ...).
    pub warnings: Vec<String>,
    /// The host's iptables drops are in the legacy tables: our iptables
    /// chain goes there (`iptables-legacy`).
    pub iptables_legacy: bool,
}

/// A door whose grants the host would drop.
#[derive(Debug, thiserror::Error)]
#[error(
    "[{door}] {step} over {family}: its grants would be dropped by {}{how}; \
     knockd does not start a door whose grants do nothing. Fix: {fix}",
    describe(dropper)
)]
pub struct Refused {
    /// The door.
    pub door: String,
    /// The port, as `tcp/22`.
    pub step: String,
    /// `IPv4` or `IPv6`.
    pub family: &'static str,
    /// What drops.
    pub dropper: Dropper,
    /// With which firewall it was tried (`" even with the grant in iptables"`).
    pub how: String,
    /// What the operator can do.
    pub fix: String,
}

/// The name of our nftables table.
fn nft_table() -> String {
    #[cfg(feature = "nftables")]
    {
        knock_firewall::NftConfig::default().table
    }
    #[cfg(not(feature = "nftables"))]
    {
        "knock".to_owned()
    }
}

fn step_str(s: Step) -> String {
    format!("{}/{}", s.proto, s.port)
}

fn family(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// `inet fw chain input (policy drop)`, as nft names tables.
fn describe(d: &Dropper) -> String {
    let managed = match d.manager {
        Manager::Ufw => ", managed by ufw",
        Manager::Firewalld => ", managed by firewalld",
        _ => "",
    };
    format!(
        "{} {} chain {} ({}{managed})",
        d.family, d.table, d.chain, d.what
    )
}

/// Whether a sink in iptables comes first where `d` drops.
fn iptables_managed(d: &Dropper) -> bool {
    matches!(
        d.manager,
        Manager::Iptables | Manager::IptablesLegacy | Manager::Ufw
    )
}

/// The first drop of `step`'s packets, over each family, with our accept
/// at `at`.
fn first_drop(
    rs: &HostRuleset,
    families: &[bool],
    open: &[Step],
    at: &Placement,
) -> Option<(bool, Step, Dropper)> {
    families.iter().find_map(|&v6| {
        open.iter().find_map(|&s| match rs.fate(v6, s, at) {
            Fate::Dropped(d) => Some((v6, s, d)),
            _ => None,
        })
    })
}

/// What to tell the operator whose grants `d` drops.
fn fix(step: Step, d: &Dropper, auto: bool) -> String {
    let port = step_str(step);
    let (proto, num) = (step.proto.to_string(), step.port);
    let mut fix = match d.manager {
        Manager::Firewalld => format!(
            "open {port} in firewalld (`firewall-cmd --permanent --add-port={num}/{proto}`, then \
             `firewall-cmd --reload`): knockd's own nftables table keeps it closed to everyone \
             without a grant"
        ),
        Manager::Ufw => format!(
            "allow {port} in ufw (`ufw allow {num}/{proto}`): knockd's own nftables table keeps it \
             closed to everyone without a grant"
        ),
        _ => format!(
            "in that chain, before the drop, accept {port} (`{proto} dport {num} accept`, or \
             `iptables -I INPUT -p {proto} --dport {num} -j ACCEPT` for an iptables chain): \
             knockd's own nftables table (inet {}) keeps it closed to everyone without a grant",
            nft_table()
        ),
    };
    if !auto && iptables_managed(d) {
        fix.push_str("; or remove the `firewall` key (auto): grants then go to iptables");
    }
    fix
}

/// Resolves every `firewall = auto` door of `config` to the firewall where
/// its grants take effect, and checks every explicit native door, against
/// the host's ruleset (read once). `ipv6`: whether IPv6 grants are given
/// at all (not with `--only-ipv4`).
///
/// If the ruleset cannot be read, `auto` doors get nftables and explicit
/// doors stay unchecked, with a warning.
///
/// # Errors
/// The first door whose grants the host would drop wherever they go.
pub fn place_doors(config: &mut Config, ipv6: bool) -> Result<Placements, Box<Refused>> {
    let mut out = Placements::default();
    let native = |k: FirewallKind| k != FirewallKind::Command;
    if !config.doors.iter().any(|d| native(d.firewall)) {
        return Ok(out);
    }
    let families: &[bool] = if ipv6 { &[false, true] } else { &[false] };
    let ours = Placement::NftTable(nft_table());
    let nft_built = cfg!(feature = "nftables");
    let rs = match HostRuleset::read() {
        Ok(rs) => rs,
        Err(e) => {
            out.warnings.push(format!(
                "cannot read the host's firewall ruleset ({e}): native doors are not checked \
                 against it, and `firewall = auto` doors use {}",
                if nft_built { "nftables" } else { "iptables" }
            ));
            for d in config.doors.iter_mut().filter(|d| native(d.firewall)) {
                if d.firewall == FirewallKind::Auto {
                    d.firewall = if nft_built {
                        FirewallKind::Nftables
                    } else {
                        FirewallKind::Iptables
                    };
                }
                out.doors.push(Placed {
                    door: d.name.clone(),
                    firewall: d.firewall,
                    why: "the host's ruleset could not be read (not checked)".to_owned(),
                });
            }
            return Ok(out);
        }
    };
    // Which iptables our chain goes to, once a door needs one.
    let mut legacy: Option<bool> = None;
    for d in config.doors.iter_mut().filter(|d| native(d.firewall)) {
        let refuse = |(v6, step, dropper): (bool, Step, Dropper), how: &str, auto: bool| {
            Box::new(Refused {
                door: d.name.clone(),
                step: step_str(step),
                family: family(v6),
                fix: fix(step, &dropper, auto),
                dropper,
                how: how.to_owned(),
            })
        };
        let in_nft = if nft_built {
            first_drop(&rs, families, &d.open, &ours)
        } else {
            None
        };
        let in_ipt = || first_drop(&rs, families, &d.open, &Placement::IptablesInput);
        let (firewall, why) = match d.firewall {
            FirewallKind::Nftables => match in_nft {
                None => (
                    FirewallKind::Nftables,
                    "set in the config; nothing else on the host drops its ports".to_owned(),
                ),
                Some(drop) => return Err(refuse(drop, " (firewall = nftables)", false)),
            },
            FirewallKind::Iptables => match in_ipt() {
                None => (
                    FirewallKind::Iptables,
                    "set in the config; nothing else on the host drops its ports".to_owned(),
                ),
                Some(drop) => return Err(refuse(drop, " (firewall = iptables)", false)),
            },
            _ if nft_built && in_nft.is_none() => (
                FirewallKind::Nftables,
                "auto: nothing else on the host drops its ports".to_owned(),
            ),
            _ => {
                // Every family and port that nftables would lose must be
                // lost to iptables (or ufw) rules: a jump at the top of
                // INPUT comes first there, and nothing else may drop.
                let nft_drops = if nft_built {
                    all_drops(&rs, families, &d.open, &ours)
                } else {
                    Vec::new()
                };
                if let Some(drop) = nft_drops.iter().find(|(_, _, x)| !iptables_managed(x)) {
                    return Err(refuse(drop.clone(), "", true));
                }
                if let Some(drop) = in_ipt() {
                    return Err(refuse(
                        drop,
                        " even with the grant at the top of iptables' INPUT",
                        true,
                    ));
                }
                let why = match nft_drops.first() {
                    Some((_, _, x)) => format!(
                        "auto: {} would drop them past our nftables table; a jump at the top \
                         of iptables' INPUT comes before it",
                        describe(x)
                    ),
                    None => "auto: this binary has no nftables".to_owned(),
                };
                (FirewallKind::Iptables, why)
            }
        };
        if firewall == FirewallKind::Iptables {
            // Our chain must be in the iptables that drops: the legacy
            // tables or iptables over nftables (one for the whole config).
            let drops = all_drops(&rs, families, &d.open, &ours);
            let old = drops
                .iter()
                .find(|(_, _, x)| x.manager == Manager::IptablesLegacy);
            let new = drops
                .iter()
                .find(|(_, _, x)| matches!(x.manager, Manager::Iptables | Manager::Ufw));
            let wants = match (old, new) {
                (Some(a), Some(_)) => {
                    return Err(refuse(
                        a.clone(),
                        " and by iptables over nftables too: one chain of ours cannot come first in both",
                        true,
                    ))
                }
                (Some(_), None) => Some(true),
                (None, Some(_)) => Some(false),
                (None, None) => None,
            };
            match (legacy, wants, old.or(new)) {
                (Some(l), Some(w), Some(x)) if l != w => {
                    return Err(refuse(
                        x.clone(),
                        " while another door's grants must go to the other iptables (legacy or over nftables)",
                        true,
                    ))
                }
                (_, Some(w), _) => legacy = Some(w),
                _ => {}
            }
        }
        d.firewall = firewall;
        out.doors.push(Placed {
            door: d.name.clone(),
            firewall,
            why,
        });
    }
    out.iptables_legacy = legacy.unwrap_or(false);
    Ok(out)
}

/// Every drop of the door's ports, over each family, with our accept at `at`.
fn all_drops(
    rs: &HostRuleset,
    families: &[bool],
    open: &[Step],
    at: &Placement,
) -> Vec<(bool, Step, Dropper)> {
    families
        .iter()
        .flat_map(|&v6| open.iter().map(move |&s| (v6, s)))
        .filter_map(|(v6, s)| match rs.fate(v6, s, at) {
            Fate::Dropped(x) => Some((v6, s, x)),
            _ => None,
        })
        .collect()
}
