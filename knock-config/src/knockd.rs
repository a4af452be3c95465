//! The knockd.conf parser (pure: reads no file).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{ConfigError, Location};
use crate::model::{
    BlacklistReach, Config, DerivedSequence, DoorConfig, FirewallKind, Options, SequenceSource,
};
use crate::spa::{check_door, SpaDoor, SpaKeys, DOOR_KEY_NAMES};
use crate::value::{
    parse_blacklist, parse_bool, parse_capture_ring, parse_duration, parse_flags,
    parse_grant_prefix, parse_net, parse_open_list, parse_port_range, parse_protocols,
    parse_sequence, split_list, CAPTURE_RING_EXPECTED, DURATION_EXPECTED, METRICS_EXPECTED,
};

const OPTION_KEYS: &str =
    "UseSyslog, LogFile, PidFile, Interface, blacklist, blacklist_reach, metrics, \
spa_port, spa_window, capture_ring";
const DOOR_KEYS: &str = "sequence, one_time_sequences, seq_timeout (timeout), tcpflags, start_command (command), \
start_command_6 (command_6), stop_command, stop_command_6, cmd_timeout, target, open, firewall, grant_prefix, \
allow_repeat, cooldown, from, strict, sequence_secret_file, sequence_length, sequence_period, sequence_ports, \
sequence_protocols, spa_key, spa_key_base64, spa_hmac_key, spa_hmac_key_base64, spa_restrict_ports, \
spa_require_source_address, spa_require_username, spa_access_expire";

/// The canonical name of a door key (aliases folded), or `None`.
fn door_key(lower: &str) -> Option<&'static str> {
    Some(match lower {
        "sequence" => "sequence",
        "one_time_sequences" => "one_time_sequences",
        "seq_timeout" | "timeout" => "seq_timeout",
        "tcpflags" => "tcpflags",
        "start_command" | "command" => "start_command",
        "start_command_6" | "command_6" => "start_command_6",
        "stop_command" => "stop_command",
        "stop_command_6" => "stop_command_6",
        "cmd_timeout" => "cmd_timeout",
        "target" => "target",
        "open" => "open",
        "firewall" => "firewall",
        "grant_prefix" => "grant_prefix",
        "allow_repeat" => "allow_repeat",
        "cooldown" => "cooldown",
        "from" => "from",
        "strict" => "strict",
        "sequence_secret_file" => "sequence_secret_file",
        "sequence_length" => "sequence_length",
        "sequence_period" => "sequence_period",
        "sequence_ports" => "sequence_ports",
        "sequence_protocols" => "sequence_protocols",
        "spa_key" => "spa_key",
        "spa_key_base64" => "spa_key_base64",
        "spa_hmac_key" => "spa_hmac_key",
        "spa_hmac_key_base64" => "spa_hmac_key_base64",
        "spa_restrict_ports" => "spa_restrict_ports",
        "spa_require_source_address" => "spa_require_source_address",
        "spa_require_username" => "spa_require_username",
        "spa_access_expire" => "spa_access_expire",
        _ => return None,
    })
}

fn option_key(lower: &str) -> Option<&'static str> {
    Some(match lower {
        "usesyslog" => "usesyslog",
        "logfile" => "logfile",
        "pidfile" => "pidfile",
        "interface" => "interface",
        "blacklist" => "blacklist",
        "blacklist_reach" => "blacklist_reach",
        "metrics" => "metrics",
        "spa_port" => "spa_port",
        "spa_window" => "spa_window",
        "capture_ring" => "capture_ring",
        _ => return None,
    })
}

/// One `key = value` as written.
#[derive(Clone, Debug)]
struct Entry {
    /// The key as written.
    key: String,
    /// The value, trimmed.
    value: String,
    /// Where the value starts.
    at: Location,
}

#[derive(Debug)]
struct Section {
    name: String,
    at: Location,
    entries: HashMap<&'static str, Entry>,
}

impl Section {
    fn insert(&mut self, canonical: &'static str, entry: Entry) -> Result<(), ConfigError> {
        if let Some(first) = self.entries.get(canonical) {
            return Err(ConfigError::DuplicateKey {
                at: entry.at.with_column(1),
                key: entry.key,
                section: self.name.clone(),
                first_line: first.at.line,
            });
        }
        self.entries.insert(canonical, entry);
        Ok(())
    }

    fn take(&mut self, key: &str) -> Option<Entry> {
        self.entries.remove(key)
    }
}

fn bad(entry: &Entry, expected: impl Into<String>) -> ConfigError {
    ConfigError::BadValue {
        at: entry.at.clone(),
        key: entry.key.clone(),
        text: entry.value.clone(),
        expected: expected.into(),
    }
}

/// The entry of a `key = value` line (`None` for a key without `=`).
fn entry(key: &str, value: Option<&str>, at: Location) -> Option<Entry> {
    Some(Entry {
        key: key.to_owned(),
        value: value?.to_owned(),
        at,
    })
}

/// Parses knockd.conf text into a [`Config`] whose sequence files are not
/// loaded yet. Never panics, reads no file.
pub(crate) fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let mut options: Option<Section> = None;
    let mut doors: Vec<Section> = Vec::new();
    let mut use_syslog = false;
    // Which section the following keys go to: None before the first header,
    // Some(None) for [options], Some(Some(i)) for door i.
    let mut current: Option<Option<usize>> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let lead = line.chars().take_while(|c| c.is_whitespace()).count();
        let at = Location::at(file, line_no, lead + 1);
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest
                .strip_suffix(']')
                .map(str::trim)
                .filter(|n| !n.is_empty())
            else {
                return Err(ConfigError::Syntax {
                    at,
                    text: trimmed.to_owned(),
                    expected: "a section header like [options] or [openSSH]",
                });
            };
            if name.eq_ignore_ascii_case("options") {
                options.get_or_insert_with(|| Section {
                    name: "options".to_owned(),
                    at: at.clone(),
                    entries: HashMap::new(),
                });
                current = Some(None);
            } else {
                if let Some(first) = doors.iter().find(|d| d.name == name) {
                    return Err(ConfigError::DuplicateDoor {
                        at,
                        door: name.to_owned(),
                        first_line: first.at.line,
                    });
                }
                doors.push(Section {
                    name: name.to_owned(),
                    at,
                    entries: HashMap::new(),
                });
                current = Some(Some(doors.len() - 1));
            }
            continue;
        }
        let (key, value, value_col) = match line.split_once('=') {
            Some((k, v)) => {
                let before = k.chars().count() + 1;
                let vlead = v.chars().take_while(|c| c.is_whitespace()).count();
                (k.trim(), Some(v.trim()), before + vlead + 1)
            }
            None => (trimmed, None, lead + 1),
        };
        let lower = key.to_ascii_lowercase();
        let Some(section) = current else {
            return Err(ConfigError::KeyOutsideSection {
                at,
                key: key.to_owned(),
            });
        };
        // `key = value`, or the syntax error (after any unknown-key error).
        let line_entry = || {
            entry(key, value, Location::at(file, line_no, value_col)).ok_or_else(|| {
                ConfigError::Syntax {
                    at: at.clone(),
                    text: trimmed.to_owned(),
                    expected: "key = value",
                }
            })
        };
        match section {
            None => {
                if lower == "usesyslog" {
                    if value.is_some() {
                        return Err(ConfigError::UseSyslogValue {
                            at,
                            text: trimmed.to_owned(),
                        });
                    }
                    use_syslog = true;
                    continue;
                }
                let Some(canonical) = option_key(&lower) else {
                    return Err(unknown_or_syntax(at, key, value, "options", OPTION_KEYS));
                };
                let entry = line_entry()?;
                if let Some(opts) = options.as_mut() {
                    opts.insert(canonical, entry)?;
                }
            }
            Some(d) => {
                let name = doors.get(d).map(|s| s.name.clone()).unwrap_or_default();
                let Some(canonical) = door_key(&lower) else {
                    return Err(unknown_or_syntax(at, key, value, &name, DOOR_KEYS));
                };
                let entry = line_entry()?;
                if let Some(s) = doors.get_mut(d) {
                    s.insert(canonical, entry)?;
                }
            }
        }
    }

    let mut opts = Options {
        use_syslog,
        ..Options::default()
    };
    if let Some(mut s) = options {
        build_options(&mut s, &mut opts)?;
    }
    let mut built: Vec<DoorConfig> = Vec::new();
    for s in doors {
        let at = s.at.clone();
        for d in build_door(s)? {
            crate::spa::check_new_name(&built, &d, &at)?;
            built.push(d);
        }
    }
    Ok(Config::new(opts, built))
}

fn unknown_or_syntax(
    at: Location,
    key: &str,
    value: Option<&str>,
    section: &str,
    expected: &'static str,
) -> ConfigError {
    if value.is_none() && key.chars().any(char::is_whitespace) {
        return ConfigError::Syntax {
            at,
            text: key.to_owned(),
            expected: "key = value, a [section] header or a # comment",
        };
    }
    ConfigError::UnknownKey {
        at,
        key: key.to_owned(),
        section: section.to_owned(),
        expected,
    }
}

fn non_empty(entry: &Entry, expected: &str) -> Result<(), ConfigError> {
    if entry.value.is_empty() {
        Err(bad(entry, expected))
    } else {
        Ok(())
    }
}

fn build_options(s: &mut Section, opts: &mut Options) -> Result<(), ConfigError> {
    if let Some(e) = s.take("logfile") {
        non_empty(&e, "a file path")?;
        opts.log_file = Some(PathBuf::from(&e.value));
    }
    if let Some(e) = s.take("pidfile") {
        non_empty(&e, "a file path")?;
        opts.pid_file = PathBuf::from(&e.value);
    }
    if let Some(e) = s.take("interface") {
        let mut list = Vec::new();
        for (_, name) in split_list(&e.value) {
            if name.is_empty() || name.chars().any(char::is_whitespace) || name.len() > 15 {
                return Err(bad(
                    &e,
                    "an interface name, or a comma-separated list of them (eth0, wg0)",
                ));
            }
            list.push(name.to_owned());
        }
        opts.interfaces = list;
    }
    if let Some(e) = s.take("blacklist") {
        opts.blacklist = Some(parse_blacklist(&e.value).ok_or_else(|| {
            bad(
                &e,
                "N invalid in DURATION for DURATION, e.g. 3 invalid in 60s for 180s",
            )
        })?);
    }
    if let Some(e) = s.take("blacklist_reach") {
        opts.blacklist_reach =
            BlacklistReach::from_name(&e.value).ok_or_else(|| bad(&e, "doors or host"))?;
    }
    if let Some(e) = s.take("metrics") {
        opts.metrics = Some(e.value.parse().map_err(|_| bad(&e, METRICS_EXPECTED))?);
    }
    if let Some(e) = s.take("spa_port") {
        opts.spa_port = e
            .value
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad(&e, "a UDP port from 1 to 65535"))?;
    }
    if let Some(e) = s.take("spa_window") {
        opts.spa_window = duration(&e, true)?;
    }
    if let Some(e) = s.take("capture_ring") {
        opts.capture_ring =
            Some(parse_capture_ring(&e.value).ok_or_else(|| bad(&e, CAPTURE_RING_EXPECTED))?);
    }
    Ok(())
}

fn duration(e: &Entry, positive: bool) -> Result<std::time::Duration, ConfigError> {
    match parse_duration(&e.value) {
        Some(d) if !positive || !d.is_zero() => Ok(d),
        Some(_) => Err(bad(e, format!("{DURATION_EXPECTED}, above 0"))),
        None => Err(bad(e, DURATION_EXPECTED)),
    }
}

fn command(e: Option<Entry>) -> Result<Option<String>, ConfigError> {
    e.map(|e| {
        non_empty(&e, "a shell command")?;
        Ok(e.value)
    })
    .transpose()
}

fn build_door(mut s: Section) -> Result<Vec<DoorConfig>, ConfigError> {
    let name = s.name.clone();
    let conflict = |at: &Location, problem: String| ConfigError::Conflict {
        at: at.clone(),
        door: name.clone(),
        problem,
    };

    let take_secret = |s: &mut Section, k: &str| s.take(k).map(|e| (e.value, e.at));
    let spa_keys = SpaKeys {
        key: take_secret(&mut s, "spa_key"),
        key_base64: take_secret(&mut s, "spa_key_base64"),
        hmac_key: take_secret(&mut s, "spa_hmac_key"),
        hmac_key_base64: take_secret(&mut s, "spa_hmac_key_base64"),
    };
    let spa_extra = [
        "spa_restrict_ports",
        "spa_require_source_address",
        "spa_require_username",
        "spa_access_expire",
    ]
    .map(|k| s.take(k));
    if !spa_keys.any() {
        if let Some(e) = spa_extra.iter().flatten().next() {
            return Err(conflict(
                &e.at.with_column(1),
                format!("{} needs spa_key_base64 (an SPA door)", e.key),
            ));
        }
    }
    let sequence = s.take("sequence");
    let one_time = s.take("one_time_sequences");
    let secret = s.take("sequence_secret_file");
    let derived_keys = [
        "sequence_length",
        "sequence_period",
        "sequence_ports",
        "sequence_protocols",
    ]
    .map(|k| s.take(k));
    let given: Vec<&Entry> = [&sequence, &one_time, &secret]
        .into_iter()
        .flatten()
        .collect();
    if let (true, Some(e)) = (spa_keys.any(), given.first()) {
        return Err(conflict(
            &e.at.with_column(1),
            format!(
                "{} and SPA keys exclude each other (an SPA door has no sequence)",
                e.key
            ),
        ));
    }
    if given.len() > 1 {
        let keys: Vec<&str> = given.iter().map(|e| e.key.as_str()).collect();
        return Err(conflict(
            &given[1].at.with_column(1),
            format!(
                "{} exclude each other (expected exactly one)",
                keys.join(" and ")
            ),
        ));
    }
    if secret.is_none() {
        if let Some(e) = derived_keys.iter().flatten().next() {
            return Err(conflict(
                &e.at.with_column(1),
                format!("{} needs sequence_secret_file", e.key),
            ));
        }
    }
    let mut derived_at = None;
    let source = if spa_keys.any() {
        let mut spa = SpaDoor::new(spa_keys.build(DOOR_KEY_NAMES, &name, &s.at)?);
        let [restrict, require_source, require_user, expire] = spa_extra;
        if let Some(e) = restrict {
            spa.restrict_ports = parse_open_list(&e.value, &e.key, &e.at)?;
        }
        if let Some(e) = require_source {
            spa.require_source_address =
                parse_bool(&e.value).ok_or_else(|| bad(&e, "yes or no"))?;
        }
        if let Some(e) = require_user {
            non_empty(&e, "a user name")?;
            spa.require_username = Some(e.value);
        }
        if let Some(e) = expire {
            spa.expire = Some(std::time::Duration::from_secs(
                e.value.parse().map_err(|_| bad(&e, "Unix seconds"))?,
            ));
        }
        SequenceSource::Spa(spa)
    } else if let Some(e) = sequence {
        non_empty(&e, "a sequence like 7000,8000:udp or a file path")?;
        if e.value.contains('/') {
            SequenceSource::File {
                path: PathBuf::from(&e.value),
                loaded: None,
            }
        } else {
            SequenceSource::Inline(parse_sequence(&e.value, &e.at, &e.key)?)
        }
    } else if let Some(e) = one_time {
        non_empty(&e, "a file path")?;
        SequenceSource::OneTime {
            path: PathBuf::from(&e.value),
            loaded: None,
        }
    } else if let Some(e) = secret {
        non_empty(&e, "a file path")?;
        let mut d = DerivedSequence::new(&e.value);
        d.line = crate::model::KeyLine(e.at.line);
        derived_at = Some(e.at.with_column(1));
        let [length, period, ports, protocols] = derived_keys;
        if let Some(e) = length {
            d.length = e
                .value
                .parse()
                .ok()
                .filter(|n| (1..=knock_core::MAX_STEPS).contains(n))
                .ok_or_else(|| bad(&e, "a number of steps from 1 to 32"))?;
        }
        if let Some(e) = period {
            d.period = duration(&e, true)?;
        }
        if let Some(e) = ports {
            d.ports = parse_port_range(&e.value)
                .ok_or_else(|| bad(&e, "a port range like 1024-65535"))?;
        }
        if let Some(e) = protocols {
            d.protocols =
                parse_protocols(&e.value).ok_or_else(|| bad(&e, "tcp, udp or tcp,udp"))?;
        }
        SequenceSource::Derived(d)
    } else {
        return Err(ConfigError::NoSequence {
            at: s.at.clone(),
            door: name.clone(),
        });
    };

    let mut door = DoorConfig::new(name.clone(), source);
    if let Some(e) = s.take("seq_timeout") {
        door.seq_timeout = duration(&e, true)?;
        if door.seq_timeout > knock_core::MAX_SEQ_TIMEOUT {
            return Err(bad(&e, format!("{DURATION_EXPECTED}, at most one day")));
        }
    }
    if let Some(e) = s.take("tcpflags") {
        non_empty(&e, "tcp flags like syn,!ack")?;
        door.tcp_flags = parse_flags(&e.value, &e.at)?;
    }
    door.start_command = command(s.take("start_command"))?;
    door.start_command_6 = command(s.take("start_command_6"))?;
    door.stop_command = command(s.take("stop_command"))?;
    door.stop_command_6 = command(s.take("stop_command_6"))?;
    if let Some(e) = s.take("cmd_timeout") {
        door.cmd_timeout = duration(&e, true)?;
    }
    if let Some(e) = s.take("target") {
        door.target = Some(
            e.value
                .parse()
                .map_err(|_| bad(&e, "an IPv4 or IPv6 address"))?,
        );
    }
    let open = s.take("open");
    if let Some(e) = &open {
        door.open = parse_open_list(&e.value, "open", &e.at)?;
    }
    let firewall = s.take("firewall");
    door.firewall = match &firewall {
        Some(e) => FirewallKind::from_name(&e.value)
            .ok_or_else(|| bad(e, "auto, iptables, nftables or command"))?,
        None if door.open.is_empty() => FirewallKind::Command,
        None => FirewallKind::Auto,
    };
    match (&open, &firewall, door.firewall) {
        (Some(o), Some(_), FirewallKind::Command) => {
            return Err(conflict(
                &o.at.with_column(1),
                "open needs firewall = auto, iptables or nftables (firewall = command runs only the commands)".to_owned(),
            ))
        }
        (None, Some(f), FirewallKind::Iptables | FirewallKind::Nftables | FirewallKind::Auto) => {
            return Err(conflict(
                &f.at.with_column(1),
                format!("firewall = {} needs open = proto/port,... (e.g. open = tcp/22)", door.firewall.as_str()),
            ))
        }
        _ => {}
    }
    if let Some(e) = s.take("grant_prefix") {
        door.grant_prefix = parse_grant_prefix(&e.value)
            .ok_or_else(|| bad(&e, "IPv4,IPv6 prefix lengths like 24,64 (1-32 and 1-128)"))?;
    }
    if let Some(e) = s.take("allow_repeat") {
        door.allow_repeat = parse_bool(&e.value).ok_or_else(|| bad(&e, "yes or no"))?;
    }
    if let Some(e) = s.take("strict") {
        door.strict = parse_bool(&e.value).ok_or_else(|| bad(&e, "yes or no"))?;
    }
    if let Some(e) = s.take("cooldown") {
        door.cooldown = duration(&e, false)?;
    }
    if let Some(e) = s.take("from") {
        let base = e.at.column.unwrap_or(1);
        for (col, piece) in split_list(&e.value) {
            let net = parse_net(piece).map_err(|expected| ConfigError::BadValue {
                at: e.at.with_column(base + col),
                key: e.key.clone(),
                text: piece.to_owned(),
                expected,
            })?;
            door.from.push(net);
        }
    }
    if let (SequenceSource::Derived(d), Some(at)) = (&door.sequence, &derived_at) {
        d.check(door.seq_timeout)
            .map_err(|problem| conflict(at, problem))?;
    }
    if door.spa().is_some() {
        check_door(&door, &s.at)?;
    }
    if let Some(core) = door.core_door() {
        core.validate().map_err(|source| ConfigError::Door {
            at: s.at.clone(),
            door: name.clone(),
            source,
        })?;
    }
    crate::spa::per_port(door, &s.at)
}
