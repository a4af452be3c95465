//! Value syntax shared by knockd.conf, sequence files and TOML: steps,
//! flags, durations, booleans, networks.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use ipnet::IpNet;
use knock_core::{FlagFilter, Proto, Step, TcpFlags, MAX_STEPS};

use crate::error::{ConfigError, Location, StepError};
use crate::model::{BlacklistRule, GrantPrefix};

/// Parses one knockd sequence entry: `port[:proto]`, protocol tcp by default.
pub fn parse_step(text: &str) -> Result<Step, StepError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(StepError::Empty);
    }
    let (port, proto) = match text.split_once(':') {
        Some((port, proto)) => (port.trim(), Some(proto.trim())),
        None => (text, None),
    };
    let port = parse_port(port)?;
    let proto = match proto {
        None => Proto::Tcp,
        Some(p) => p.parse().map_err(|_| StepError::UnknownProtocol)?,
    };
    Ok(Step { proto, port })
}

/// Parses one `open` entry: `proto/port`.
pub fn parse_open(text: &str) -> Result<Step, StepError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(StepError::Empty);
    }
    let Some((proto, port)) = text.split_once('/') else {
        return Err(StepError::NotANumber);
    };
    let proto: Proto = proto
        .trim()
        .parse()
        .map_err(|_| StepError::UnknownProtocol)?;
    let port = parse_port(port.trim())?;
    Ok(Step { proto, port })
}

/// Writes an `open` entry: `tcp/22`.
pub(crate) fn open_to_string(step: &Step) -> String {
    format!("{}/{}", step.proto, step.port)
}

fn parse_port(text: &str) -> Result<u16, StepError> {
    if text.is_empty() {
        return Err(StepError::Empty);
    }
    if let Some((a, b)) = text.split_once('-') {
        if !a.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.trim().bytes().all(|c| c.is_ascii_digit())
        {
            return Err(StepError::Range);
        }
    }
    if !text.bytes().all(|c| c.is_ascii_digit()) {
        return Err(StepError::NotANumber);
    }
    let digits = text.trim_start_matches('0');
    if digits.len() > 5 {
        return Err(StepError::PortTooLarge);
    }
    let n: u32 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| StepError::NotANumber)?
    };
    match n {
        0 => Err(StepError::PortZero),
        1..=65535 => u16::try_from(n).map_err(|_| StepError::PortTooLarge),
        _ => Err(StepError::PortTooLarge),
    }
}

/// The pieces of a comma-separated list with the 0-based character column
/// of each piece's first non-space character.
pub(crate) fn split_list(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut col = 0;
    for piece in text.split(',') {
        let lead = piece.chars().take_while(|c| c.is_whitespace()).count();
        out.push((col + lead, piece.trim()));
        col += piece.chars().count() + 1;
    }
    out
}

/// Parses a knockd sequence (`7000,8000:udp,9000:tcp`). `at` has the
/// column of the value's first character.
pub(crate) fn parse_sequence(
    text: &str,
    at: &Location,
    key: &str,
) -> Result<Vec<Step>, ConfigError> {
    let base = at.column.unwrap_or(1);
    let mut steps = Vec::new();
    for (col, piece) in split_list(text) {
        let step = parse_step(piece).map_err(|reason| ConfigError::BadStep {
            at: at.with_column(base + col),
            key: key.to_owned(),
            text: piece.to_owned(),
            reason,
        })?;
        steps.push(step);
    }
    if steps.len() > MAX_STEPS {
        return Err(ConfigError::TooManySteps {
            at: at.clone(),
            text: text.to_owned(),
            count: steps.len(),
        });
    }
    Ok(steps)
}

/// Writes a sequence in knockd syntax: `7000:tcp,8000:udp`.
pub fn sequence_to_string(steps: &[Step]) -> String {
    steps
        .iter()
        .map(Step::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a list of `proto/port` entries (`tcp/22,udp/1194`) given as
/// `key` (`open`, `OPEN_PORTS`, `RESTRICT_PORTS`).
pub(crate) fn parse_open_list(
    text: &str,
    key: &str,
    at: &Location,
) -> Result<Vec<Step>, ConfigError> {
    let base = at.column.unwrap_or(1);
    split_list(text)
        .into_iter()
        .map(|(col, piece)| {
            parse_open(piece).map_err(|reason| ConfigError::BadStep {
                at: at.with_column(base + col),
                key: key.to_owned(),
                text: piece.to_owned(),
                reason,
            })
        })
        .collect()
}

/// Parses one `tcpflags` entry (`syn`, `!ack`) into the filter.
pub(crate) fn add_flag(filter: &mut FlagFilter, entry: &str) -> Result<(), &'static str> {
    if entry.is_empty() {
        return Err("empty entry (a doubled or trailing comma?)");
    }
    if entry.chars().any(char::is_whitespace) {
        return Err("spaces inside tcpflags");
    }
    let (clear, name) = match entry.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, entry),
    };
    let flag = TcpFlags::from_name(name).map_err(|_| "unknown flag")?;
    let (mine, other) = if clear {
        (&mut filter.clear, filter.set)
    } else {
        (&mut filter.set, filter.clear)
    };
    if !other.is_disjoint(flag) {
        return Err("a flag both required and forbidden");
    }
    *mine = mine.union(flag);
    Ok(())
}

/// Parses knockd's `tcpflags = syn,!ack`.
pub(crate) fn parse_flags(text: &str, at: &Location) -> Result<FlagFilter, ConfigError> {
    if text.chars().any(char::is_whitespace) {
        let col = text.chars().take_while(|c| !c.is_whitespace()).count();
        return Err(ConfigError::BadFlags {
            at: at.with_column(at.column.unwrap_or(1) + col),
            text: text.to_owned(),
            problem: "spaces inside tcpflags",
        });
    }
    let base = at.column.unwrap_or(1);
    let mut filter = FlagFilter::ANY;
    for (col, piece) in split_list(text) {
        add_flag(&mut filter, piece).map_err(|problem| ConfigError::BadFlags {
            at: at.with_column(base + col),
            text: piece.to_owned(),
            problem,
        })?;
    }
    Ok(filter)
}

/// The entries of a flag filter as TOML writes them: `["syn", "!ack"]`.
pub(crate) fn flags_to_list(filter: &FlagFilter) -> Vec<String> {
    filter
        .set
        .names()
        .map(str::to_owned)
        .chain(filter.clear.names().map(|n| format!("!{n}")))
        .collect()
}

/// What a `metrics` value must look like, for error messages.
pub(crate) const METRICS_EXPECTED: &str =
    "an address and a port, like 127.0.0.1:9464 or [::1]:9464";

/// What a `capture_ring` value must look like, for error messages.
pub(crate) const CAPTURE_RING_EXPECTED: &str =
    "a size with K, M or G (1024-based), from 64K to 1G, or 0 for no ring (32M, 1M, 0)";

/// The smallest capture ring (one block of the ring's slots).
pub const MIN_CAPTURE_RING: u64 = 64 << 10;

/// The largest capture ring (it is resident memory, per interface).
pub const MAX_CAPTURE_RING: u64 = 1 << 30;

/// A whole number and the unit written after it (trimmed; empty if none):
/// `25s` is `(25, "s")`, ` 32 M ` is `(32, "M")`.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    if num.is_empty() || num.len() > 20 {
        return None;
    }
    Some((num.parse().ok()?, unit.trim()))
}

/// Parses a `capture_ring` size: 0, or bytes from [`MIN_CAPTURE_RING`] to
/// [`MAX_CAPTURE_RING`] written as a number with an optional unit `K`, `M`
/// or `G` (1024-based, either case): `32M`, `1536K`, `1048576`.
pub fn parse_capture_ring(text: &str) -> Option<u64> {
    let (n, unit) = number_and_unit(text)?;
    let shift = match unit {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        _ => return None,
    };
    let bytes = n.checked_mul(1 << shift)?;
    (bytes == 0 || (MIN_CAPTURE_RING..=MAX_CAPTURE_RING).contains(&bytes)).then_some(bytes)
}

/// Writes a size in the largest exact unit: `32M`, `1536K`, `0`.
pub(crate) fn size_to_string(bytes: u64) -> String {
    match bytes {
        0 => "0".to_owned(),
        b if b % (1 << 30) == 0 => format!("{}G", b >> 30),
        b if b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}K", b >> 10),
        b => b.to_string(),
    }
}

/// What a duration looks like, for error messages.
pub(crate) const DURATION_EXPECTED: &str =
    "a duration: whole seconds (25) or a number with a unit ms, s, m, h (500ms, 25s, 2m)";

/// Parses a duration: whole seconds, or a number with a unit
/// (`ns`, `us`, `ms`, `s`, `m`, `h`, `d`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (n, unit) = number_and_unit(text)?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "us" => Duration::from_micros(n),
        "ns" => Duration::from_nanos(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        "d" => Duration::from_secs(n.checked_mul(86400)?),
        _ => return None,
    };
    Some(d)
}

/// Writes a duration in the largest exact unit: `25s`, `500ms`.
pub fn duration_to_string(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        format!("{}s", d.as_secs())
    } else if nanos % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else if nanos % 1_000 == 0 {
        format!("{}us", d.as_micros())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// Parses yes/no, true/false, on/off (case-insensitive).
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    let t = text.trim().to_ascii_lowercase();
    match t.as_str() {
        "yes" | "true" | "on" => Some(true),
        "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// Parses one `from` entry: a network in canonical form, or an address.
pub(crate) fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("a network, not an empty entry (a doubled or trailing comma?)".to_owned());
    }
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    let net: IpNet = text
        .parse()
        .map_err(|_| "a network like 198.18.0.0/15 or 2001:db8::/32, or an address".to_owned())?;
    if net.trunc() != net {
        return Err(format!("a network without host bits set ({})", net.trunc()));
    }
    Ok(net)
}

/// Parses `grant_prefix = 24,64`.
pub(crate) fn parse_grant_prefix(text: &str) -> Option<GrantPrefix> {
    let (a, b) = text.split_once(',')?;
    let v4: u8 = a.trim().parse().ok()?;
    let v6: u8 = b.trim().parse().ok()?;
    let p = GrantPrefix { v4, v6 };
    p.is_valid().then_some(p)
}

/// Parses `sequence_ports = 1024-65535`.
pub(crate) fn parse_port_range(text: &str) -> Option<RangeInclusive<u16>> {
    let (a, b) = text.split_once('-')?;
    let a = parse_port(a.trim()).ok()?;
    let b = parse_port(b.trim()).ok()?;
    (a < b).then_some(a..=b)
}

/// Parses `sequence_protocols = tcp,udp`.
pub(crate) fn parse_protocols(text: &str) -> Option<Vec<Proto>> {
    let mut out = Vec::new();
    for piece in text.split(',') {
        let p: Proto = piece.trim().parse().ok()?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Parses `blacklist = 3 invalid in 60s for 180s`.
pub(crate) fn parse_blacklist(text: &str) -> Option<BlacklistRule> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let [n, invalid, in_, window, for_, block] = words.as_slice() else {
        return None;
    };
    if !invalid.eq_ignore_ascii_case("invalid")
        || !in_.eq_ignore_ascii_case("in")
        || !for_.eq_ignore_ascii_case("for")
    {
        return None;
    }
    let rule = BlacklistRule {
        invalid: n.parse().ok()?,
        window: parse_duration(window)?,
        block: parse_duration(block)?,
    };
    rule.is_valid().then_some(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        assert_eq!(parse_step("7000"), Ok(Step::tcp(7000)));
        assert_eq!(parse_step(" 8000:UDP "), Ok(Step::udp(8000)));
        assert_eq!(parse_step("65535:tcp"), Ok(Step::tcp(65535)));
        assert_eq!(parse_step(""), Err(StepError::Empty));
        assert_eq!(parse_step("0"), Err(StepError::PortZero));
        assert_eq!(parse_step("65536"), Err(StepError::PortTooLarge));
        assert_eq!(
            parse_step("99999999999999999999999"),
            Err(StepError::PortTooLarge)
        );
        assert_eq!(parse_step("1000-2000"), Err(StepError::Range));
        assert_eq!(parse_step("80:icmp"), Err(StepError::UnknownProtocol));
        assert_eq!(parse_step("x80"), Err(StepError::NotANumber));
        assert_eq!(parse_open("udp/1194"), Ok(Step::udp(1194)));
        assert_eq!(parse_open("22"), Err(StepError::NotANumber));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("25"), Some(Duration::from_secs(25)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("99999999999999999999h"), None);
        for d in ["25s", "500ms", "7us", "3ns", "0s"] {
            assert_eq!(duration_to_string(parse_duration(d).unwrap()), d);
        }
    }

    #[test]
    fn extension_values() {
        assert_eq!(
            parse_grant_prefix("24,64"),
            Some(GrantPrefix { v4: 24, v6: 64 })
        );
        assert_eq!(parse_grant_prefix("33,64"), None);
        assert_eq!(parse_port_range("1024-65535"), Some(1024..=65535));
        assert_eq!(parse_port_range("2000-1000"), None);
        assert_eq!(
            parse_protocols("tcp, UDP"),
            Some(vec![Proto::Tcp, Proto::Udp])
        );
        assert_eq!(
            parse_blacklist("3 invalid in 60s for 180s"),
            Some(BlacklistRule {
                invalid: 3,
                window: Duration::from_secs(60),
                block: Duration::from_secs(180)
            })
        );
        assert_eq!(parse_blacklist("3 bad in 60s for 180s"), None);
        assert!(parse_net("198.18.0.1/15").is_err());
        assert_eq!(
            parse_net("2001:db8::/32").map(|n| n.to_string()),
            Ok("2001:db8::/32".to_owned())
        );
    }
}
