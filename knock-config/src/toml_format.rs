//! The TOML format: a serde mirror of the model, then the same validation.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Location};
use crate::model::{
    BlacklistReach, BlacklistRule, Config, DerivedSequence, DoorConfig, FirewallKind, GrantPrefix,
    Options, SequenceSource,
};
use crate::spa::{SpaDoor, SpaKeys, DOOR_KEY_NAMES};
use crate::value::{
    add_flag, duration_to_string, flags_to_list, open_to_string, parse_capture_ring,
    parse_duration, parse_net, parse_open, parse_port_range, parse_protocols, parse_step,
    size_to_string, CAPTURE_RING_EXPECTED, DURATION_EXPECTED, METRICS_EXPECTED,
};

/// A duration: whole seconds (`25`) or a string with a unit (`"500ms"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dur(Duration);

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&duration_to_string(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|s| Dur(Duration::from_secs(s)))
                    .map_err(|_| {
                        E::custom(format!(
                            "negative duration {v}; expected {DURATION_EXPECTED}"
                        ))
                    })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).ok_or_else(|| {
                    E::custom(format!("bad duration {v:?}; expected {DURATION_EXPECTED}"))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A size as written: a string with a unit (`"32M"`) or a number of bytes,
/// kept as text and checked with [`parse_capture_ring`] (an error then
/// points at it).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SizeText(String);

impl Serialize for SizeText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SizeText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SizeText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(CAPTURE_RING_EXPECTED)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeText, E> {
                Ok(SizeText(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeText, E> {
                Ok(SizeText(v.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeText, E> {
                Ok(SizeText(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlConfig {
    #[serde(default)]
    options: TomlOptions,
    #[serde(default, rename = "door", skip_serializing_if = "Vec::is_empty")]
    doors: Vec<toml::Spanned<TomlDoor>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlOptions {
    #[serde(default)]
    use_syslog: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interfaces: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blacklist: Option<TomlBlacklist>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blacklist_reach: Option<BlacklistReach>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metrics: Option<toml::Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spa_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spa_window: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capture_ring: Option<toml::Spanned<SizeText>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlBlacklist {
    invalid: u32,
    window: Dur,
    block: Dur,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlDoor {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sequence: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sequence_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    one_time_sequences: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sequence_secret_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sequence_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sequence_period: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sequence_ports: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sequence_protocols: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq_timeout: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcpflags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_command_6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop_command_6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cmd_timeout: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    firewall: Option<FirewallKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grant_prefix: Option<[u8; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allow_repeat: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cooldown: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spa_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spa_key_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spa_hmac_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spa_hmac_key_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spa_restrict_ports: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spa_require_source_address: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spa_require_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spa_access_expire: Option<u64>,
}

/// The 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

pub(crate) fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let raw: TomlConfig = toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map_or((0, 1), |s| line_col(text, s.start));
        ConfigError::Toml {
            at: Location::at(file, line, col),
            message: e.message().trim().to_owned(),
        }
    })?;
    let mut options = Options {
        use_syslog: raw.options.use_syslog,
        log_file: raw.options.log_file,
        ..Options::default()
    };
    let at0 = Location::new(file, 0);
    let bad_opt = |key: &str, text: String, expected: &str| ConfigError::BadValue {
        at: at0.clone(),
        key: format!("options.{key}"),
        text,
        expected: expected.to_owned(),
    };
    if let Some(p) = raw.options.pid_file {
        options.pid_file = p;
    }
    if let Some(list) = raw.options.interfaces {
        if list.is_empty()
            || list
                .iter()
                .any(|n| n.is_empty() || n.chars().any(|c| c.is_whitespace() || c == ','))
        {
            return Err(bad_opt(
                "interfaces",
                format!("{list:?}"),
                "a non-empty list of interface names",
            ));
        }
        options.interfaces = list;
    }
    if let Some(b) = raw.options.blacklist {
        let rule = BlacklistRule {
            invalid: b.invalid,
            window: b.window.0,
            block: b.block.0,
        };
        if !rule.is_valid() {
            return Err(bad_opt(
                "blacklist",
                format!("{rule:?}"),
                "invalid above 0 and durations above 0",
            ));
        }
        options.blacklist = Some(rule);
    }
    if let Some(reach) = raw.options.blacklist_reach {
        options.blacklist_reach = reach;
    }
    if let Some(m) = raw.options.metrics {
        let (line, col) = line_col(text, m.span().start);
        let value = m.into_inner();
        options.metrics = Some(value.parse().map_err(|_| ConfigError::BadValue {
            at: Location::at(file, line, col),
            key: "options.metrics".to_owned(),
            text: value.clone(),
            expected: METRICS_EXPECTED.to_owned(),
        })?);
    }
    if let Some(p) = raw.options.spa_port {
        if p == 0 {
            return Err(bad_opt(
                "spa_port",
                "0".to_owned(),
                "a UDP port from 1 to 65535",
            ));
        }
        options.spa_port = p;
    }
    if let Some(w) = raw.options.spa_window {
        if w.0.is_zero() {
            return Err(bad_opt("spa_window", "0s".to_owned(), "a duration above 0"));
        }
        options.spa_window = w.0;
    }
    if let Some(r) = raw.options.capture_ring {
        let (line, col) = line_col(text, r.span().start);
        let value = r.into_inner().0;
        options.capture_ring =
            Some(
                parse_capture_ring(&value).ok_or_else(|| ConfigError::BadValue {
                    at: Location::at(file, line, col),
                    key: "options.capture_ring".to_owned(),
                    text: value.clone(),
                    expected: CAPTURE_RING_EXPECTED.to_owned(),
                })?,
            );
    }
    let mut doors: Vec<DoorConfig> = Vec::new();
    let mut lines: Vec<usize> = Vec::new();
    for spanned in raw.doors {
        let (line, col) = line_col(text, spanned.span().start);
        let at = Location::at(file, line, col);
        let door = build_door(spanned.into_inner(), &at)?;
        if let Some(i) = doors.iter().position(|d| d.name == door.name) {
            return Err(ConfigError::DuplicateDoor {
                at,
                door: door.name,
                first_line: lines.get(i).copied().unwrap_or(0),
            });
        }
        for d in crate::spa::per_port(door, &at)? {
            crate::spa::check_new_name(&doors, &d, &at)?;
            lines.push(line);
            doors.push(d);
        }
    }
    Ok(Config::new(options, doors))
}

fn build_door(t: TomlDoor, at: &Location) -> Result<DoorConfig, ConfigError> {
    let name = t.name;
    let bad = |key: &str, text: &str, expected: &str| ConfigError::BadValue {
        at: at.clone(),
        key: key.to_owned(),
        text: text.to_owned(),
        expected: expected.to_owned(),
    };
    let conflict = |problem: String| ConfigError::Conflict {
        at: at.clone(),
        door: name.clone(),
        problem,
    };
    if name.is_empty() {
        return Err(bad("name", "", "a non-empty door name"));
    }
    let step_err = |key: &str, text: &str, reason| ConfigError::BadStep {
        at: at.clone(),
        key: key.to_owned(),
        text: text.to_owned(),
        reason,
    };
    let spa_keys = SpaKeys {
        key: t.spa_key.clone().map(|k| (k, at.clone())),
        key_base64: t.spa_key_base64.clone().map(|k| (k, at.clone())),
        hmac_key: t.spa_hmac_key.clone().map(|k| (k, at.clone())),
        hmac_key_base64: t.spa_hmac_key_base64.clone().map(|k| (k, at.clone())),
    };
    let spa_extra = [
        t.spa_restrict_ports.as_ref().map(|_| "spa_restrict_ports"),
        t.spa_require_source_address
            .map(|_| "spa_require_source_address"),
        t.spa_require_username
            .as_ref()
            .map(|_| "spa_require_username"),
        t.spa_access_expire.map(|_| "spa_access_expire"),
    ];
    if !spa_keys.any() {
        if let Some(k) = spa_extra.into_iter().flatten().next() {
            return Err(conflict(format!("{k} needs spa_key_base64 (an SPA door)")));
        }
    }
    let given = [
        spa_keys.any().then_some("spa_key_base64"),
        t.sequence.as_ref().map(|_| "sequence"),
        t.sequence_file.as_ref().map(|_| "sequence_file"),
        t.one_time_sequences.as_ref().map(|_| "one_time_sequences"),
        t.sequence_secret_file
            .as_ref()
            .map(|_| "sequence_secret_file"),
    ];
    let given: Vec<&str> = given.into_iter().flatten().collect();
    if given.len() > 1 {
        return Err(conflict(format!(
            "{} exclude each other (expected exactly one)",
            given.join(" and ")
        )));
    }
    if t.sequence_secret_file.is_none() {
        let derived = [
            t.sequence_length.map(|_| "sequence_length"),
            t.sequence_period.map(|_| "sequence_period"),
            t.sequence_ports.as_ref().map(|_| "sequence_ports"),
            t.sequence_protocols.as_ref().map(|_| "sequence_protocols"),
        ];
        if let Some(k) = derived.into_iter().flatten().next() {
            return Err(conflict(format!("{k} needs sequence_secret_file")));
        }
    }
    let source = if spa_keys.any() {
        let mut spa = SpaDoor::new(spa_keys.build(DOOR_KEY_NAMES, &name, at)?);
        for p in t.spa_restrict_ports.iter().flatten() {
            spa.restrict_ports
                .push(parse_open(p).map_err(|r| step_err("spa_restrict_ports", p, r))?);
        }
        spa.require_source_address = t.spa_require_source_address.unwrap_or(false);
        spa.require_username = t.spa_require_username.clone();
        spa.expire = t.spa_access_expire.map(Duration::from_secs);
        SequenceSource::Spa(spa)
    } else if let Some(list) = t.sequence {
        let steps = list
            .iter()
            .map(|s| parse_step(s).map_err(|r| step_err("sequence", s, r)))
            .collect::<Result<Vec<_>, _>>()?;
        if steps.len() > knock_core::MAX_STEPS {
            return Err(ConfigError::TooManySteps {
                at: at.clone(),
                text: list.join(","),
                count: steps.len(),
            });
        }
        SequenceSource::Inline(steps)
    } else if let Some(path) = t.sequence_file {
        SequenceSource::File { path, loaded: None }
    } else if let Some(path) = t.one_time_sequences {
        SequenceSource::OneTime { path, loaded: None }
    } else if let Some(secret) = t.sequence_secret_file {
        let mut d = DerivedSequence::new(secret);
        if let Some(n) = t.sequence_length {
            if !(1..=knock_core::MAX_STEPS).contains(&n) {
                return Err(bad(
                    "sequence_length",
                    &n.to_string(),
                    "a number of steps from 1 to 32",
                ));
            }
            d.length = n;
        }
        if let Some(p) = t.sequence_period {
            if p.0.is_zero() {
                return Err(bad("sequence_period", "0s", "a duration above 0"));
            }
            d.period = p.0;
        }
        if let Some(r) = t.sequence_ports {
            d.ports = parse_port_range(&r)
                .ok_or_else(|| bad("sequence_ports", &r, "a port range like \"1024-65535\""))?;
        }
        if let Some(p) = t.sequence_protocols {
            d.protocols = parse_protocols(&p.join(",")).ok_or_else(|| {
                bad(
                    "sequence_protocols",
                    &p.join(","),
                    "[\"tcp\"], [\"udp\"] or [\"tcp\", \"udp\"]",
                )
            })?;
        }
        SequenceSource::Derived(d)
    } else {
        return Err(ConfigError::NoSequence {
            at: at.clone(),
            door: name.clone(),
        });
    };
    let mut door = DoorConfig::new(name.clone(), source);
    if let Some(d) = t.seq_timeout {
        if d.0.is_zero() || d.0 > knock_core::MAX_SEQ_TIMEOUT {
            return Err(bad(
                "seq_timeout",
                &duration_to_string(d.0),
                "a duration above 0 and at most one day",
            ));
        }
        door.seq_timeout = d.0;
    }
    if let Some(flags) = t.tcpflags {
        for f in &flags {
            add_flag(&mut door.tcp_flags, f).map_err(|problem| ConfigError::BadFlags {
                at: at.clone(),
                text: f.clone(),
                problem,
            })?;
        }
    }
    door.target = t.target;
    let cmd = |key: &str, c: Option<String>| match c {
        Some(c) if c.trim().is_empty() => Err(bad(key, &c, "a shell command")),
        c => Ok(c),
    };
    door.start_command = cmd("start_command", t.start_command)?;
    door.start_command_6 = cmd("start_command_6", t.start_command_6)?;
    door.stop_command = cmd("stop_command", t.stop_command)?;
    door.stop_command_6 = cmd("stop_command_6", t.stop_command_6)?;
    if let Some(d) = t.cmd_timeout {
        if d.0.is_zero() {
            return Err(bad("cmd_timeout", "0s", "a duration above 0"));
        }
        door.cmd_timeout = d.0;
    }
    let has_open = t.open.is_some();
    if let Some(list) = t.open {
        door.open = list
            .iter()
            .map(|s| parse_open(s).map_err(|r| step_err("open", s, r)))
            .collect::<Result<Vec<_>, _>>()?;
    }
    door.firewall = match t.firewall {
        Some(k) => k,
        None if door.open.is_empty() => FirewallKind::Command,
        None => FirewallKind::Auto,
    };
    match (has_open && !door.open.is_empty(), t.firewall, door.firewall) {
        (true, Some(_), FirewallKind::Command) => {
            return Err(conflict(
                "open needs firewall = \"auto\", \"iptables\" or \"nftables\" (\"command\" runs only the commands)".to_owned(),
            ))
        }
        (false, Some(_), FirewallKind::Iptables | FirewallKind::Nftables | FirewallKind::Auto) => {
            return Err(conflict(format!(
                "firewall = {:?} needs open = [\"tcp/22\", ...]",
                door.firewall.as_str()
            )))
        }
        _ => {}
    }
    if let Some([v4, v6]) = t.grant_prefix {
        let p = GrantPrefix { v4, v6 };
        if !p.is_valid() {
            return Err(bad(
                "grant_prefix",
                &format!("[{v4}, {v6}]"),
                "[IPv4, IPv6] prefix lengths like [24, 64] (1-32 and 1-128)",
            ));
        }
        door.grant_prefix = p;
    }
    door.allow_repeat = t.allow_repeat.unwrap_or(false);
    door.strict = t.strict.unwrap_or(false);
    door.cooldown = t.cooldown.map_or(Duration::ZERO, |d| d.0);
    for s in t.from.unwrap_or_default() {
        door.from
            .push(parse_net(&s).map_err(|expected| ConfigError::BadValue {
                at: at.clone(),
                key: "from".to_owned(),
                text: s.clone(),
                expected,
            })?);
    }
    if let SequenceSource::Derived(d) = &mut door.sequence {
        d.line = crate::model::KeyLine(at.line);
        d.check(door.seq_timeout).map_err(conflict)?;
    }
    if door.spa().is_some() {
        crate::spa::check_door(&door, at)?;
    }
    if let Some(core) = door.core_door() {
        core.validate().map_err(|source| ConfigError::Door {
            at: at.clone(),
            door: name.clone(),
            source,
        })?;
    }
    Ok(door)
}

pub(crate) fn to_string(config: &Config) -> Result<String, ConfigError> {
    let o = &config.options;
    let raw = TomlConfig {
        options: TomlOptions {
            use_syslog: o.use_syslog,
            log_file: o.log_file.clone(),
            pid_file: Some(o.pid_file.clone()),
            interfaces: Some(o.interfaces.clone()),
            blacklist: o.blacklist.map(|b| TomlBlacklist {
                invalid: b.invalid,
                window: Dur(b.window),
                block: Dur(b.block),
            }),
            blacklist_reach: (o.blacklist.is_some()
                || o.blacklist_reach != BlacklistReach::default())
            .then_some(o.blacklist_reach),
            metrics: o.metrics.map(|a| toml::Spanned::new(0..0, a.to_string())),
            spa_port: (o.spa_port != knock_spa::DEFAULT_PORT).then_some(o.spa_port),
            spa_window: (o.spa_window != knock_spa::DEFAULT_WINDOW).then_some(Dur(o.spa_window)),
            capture_ring: o
                .capture_ring
                .map(|b| toml::Spanned::new(0..0, SizeText(size_to_string(b)))),
        },
        doors: config
            .doors
            .iter()
            .enumerate()
            .filter(|(i, d)| !later_part(config, *i, d))
            .map(|(_, d)| toml::Spanned::new(0..0, mirror(d)))
            .collect(),
    };
    toml::to_string(&raw).map_err(|e| ConfigError::TomlWrite {
        message: e.to_string(),
    })
}

/// Whether door `i` opens a port of a stanza an earlier door opens another
/// port of (the stanza is written once, by its first door).
fn later_part(config: &Config, i: usize, d: &DoorConfig) -> bool {
    let stanza = |d: &DoorConfig| {
        d.spa()
            .and_then(|s| s.part_of.as_ref())
            .map(|p| p.stanza.clone())
    };
    let Some(mine) = stanza(d) else {
        return false;
    };
    config
        .doors
        .iter()
        .take(i)
        .any(|e| stanza(e).as_ref() == Some(&mine))
}

fn mirror(d: &DoorConfig) -> TomlDoor {
    let mut t = TomlDoor {
        name: d.name.clone(),
        seq_timeout: Some(Dur(d.seq_timeout)),
        tcpflags: (!d.tcp_flags.is_any()).then(|| flags_to_list(&d.tcp_flags)),
        target: d.target,
        start_command: d.start_command.clone(),
        start_command_6: d.start_command_6.clone(),
        stop_command: d.stop_command.clone(),
        stop_command_6: d.stop_command_6.clone(),
        cmd_timeout: Some(Dur(d.cmd_timeout)),
        open: (!d.open.is_empty()).then(|| d.open.iter().map(open_to_string).collect()),
        firewall: (d.firewall != FirewallKind::Command).then_some(d.firewall),
        grant_prefix: (d.grant_prefix != GrantPrefix::default())
            .then_some([d.grant_prefix.v4, d.grant_prefix.v6]),
        allow_repeat: d.allow_repeat.then_some(true),
        cooldown: (!d.cooldown.is_zero()).then_some(Dur(d.cooldown)),
        from: (!d.from.is_empty()).then(|| d.from.iter().map(ToString::to_string).collect()),
        strict: d.strict.then_some(true),
        ..TomlDoor::default()
    };
    match &d.sequence {
        SequenceSource::Inline(steps) => {
            t.sequence = Some(steps.iter().map(ToString::to_string).collect())
        }
        SequenceSource::File { path, .. } => t.sequence_file = Some(path.clone()),
        SequenceSource::OneTime { path, .. } => t.one_time_sequences = Some(path.clone()),
        SequenceSource::Derived(s) => {
            t.sequence_secret_file = Some(s.secret_file.clone());
            t.sequence_length = Some(s.length);
            t.sequence_period = Some(Dur(s.period));
            t.sequence_ports = Some(format!("{}-{}", s.ports.start(), s.ports.end()));
            t.sequence_protocols =
                Some(s.protocols.iter().map(|p| p.as_str().to_owned()).collect());
        }
        SequenceSource::Spa(s) => {
            let (k, h) = s.keys.to_base64();
            t.spa_key_base64 = Some(k.to_string());
            t.spa_hmac_key_base64 = Some(h.to_string());
            t.spa_restrict_ports = (!s.restrict_ports.is_empty())
                .then(|| s.restrict_ports.iter().map(open_to_string).collect());
            t.spa_require_source_address = s.require_source_address.then_some(true);
            t.spa_require_username = s.require_username.clone();
            t.spa_access_expire = s.expire.map(|e| e.as_secs());
        }
    }
    if let Some(p) = d.spa().and_then(|s| s.part_of.as_ref()) {
        t.name = p.stanza.clone();
        t.open =
            (!p.open_ports.is_empty()).then(|| p.open_ports.iter().map(open_to_string).collect());
    }
    t
}
