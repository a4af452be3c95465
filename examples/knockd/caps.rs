//! What knockd needs from its environment, checked before it starts (and
//! reported by `--check`): the capabilities of the process and the
//! interfaces it is told to listen on.

use knock::capture::interface_names;
use knock::config::{Config, FirewallKind};

/// `CAP_NET_ADMIN` (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
/// `CAP_NET_RAW` (linux/capability.h).
const CAP_NET_RAW: u32 = 13;

/// The effective capabilities of this process (`CapEff` in
/// `/proc/self/status`); `None` when they cannot be read.
fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The capabilities `config` needs that this process lacks, each with why
/// it is needed. Empty when they cannot be read (the start then fails with
/// the kernel's own error, which names CAP_NET_RAW for the capture).
pub(crate) fn missing(config: &Config) -> Vec<String> {
    let Some(eff) = effective() else {
        return Vec::new();
    };
    let has = |cap: u32| eff & (1 << cap) != 0;
    let mut out = Vec::new();
    if !has(CAP_NET_RAW) {
        out.push("CAP_NET_RAW (to capture knocks)".to_owned());
    }
    let native: Vec<&str> = config
        .doors
        .iter()
        .filter(|d| d.firewall != FirewallKind::Command)
        .map(|d| d.name.as_str())
        .collect();
    if !has(CAP_NET_ADMIN) {
        if !native.is_empty() {
            out.push(format!(
                "CAP_NET_ADMIN (for the native firewall of {})",
                native.join(", ")
            ));
        } else if config.options.blacklist.is_some() {
            out.push("CAP_NET_ADMIN (for the blacklist's firewall rules)".to_owned());
        }
    }
    out
}

/// One line saying what is missing and how to fix it.
pub(crate) fn describe(missing: &[String]) -> String {
    format!(
        "missing capability {}: run knockd as root, or grant it \
         (e.g. AmbientCapabilities= in its systemd unit)",
        missing.join(" and ")
    )
}

/// What a start here would fail on or wait for, one line each: missing
/// capabilities, and interfaces that do not exist in this network
/// namespace (a start warns and waits for them).
pub(crate) fn environment(config: &Config, interfaces: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let missing = missing(config);
    if !missing.is_empty() {
        out.push(format!("a start here would fail: {}", describe(&missing)));
    }
    if let Ok(present) = interface_names() {
        for name in interfaces {
            if name != "any" && !present.contains(name) {
                out.push(format!(
                    "interface {name} does not exist here (a start warns and waits for it)"
                ));
            }
        }
    }
    out
}
