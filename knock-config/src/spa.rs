//! Single Packet Authorization doors: fwknop's `access.conf`, and the same
//! settings as door keys in knockd.conf and TOML.
//!
//! An SPA door has no knock sequence: it opens when an fwknop packet
//! verifies with its keys (`knock_spa`). Its other keys are a knock door's:
//! `from` is fwknop's `SOURCE`, `open` its `OPEN_PORTS` (the ports a
//! request may ask for; a request opens those it asks for, no more),
//! `cmd_timeout` its `FW_ACCESS_TIMEOUT`, `start_command`/`stop_command`
//! its `CMD_CYCLE_OPEN`/`CMD_CYCLE_CLOSE` (with `%IP%` for the address the
//! request is for, `%PORT%` and `%PROTO%` for a port asked for and its
//! protocol's number, fwknop's `$PORT` and `$PROTO`).
//!
//! A stanza whose grant depends on the port (native grants, or commands
//! naming `%PORT%`/`%PROTO%`) is one door per port of `open`, named
//! `NAME:tcp/22` (`NAME` alone for a single port): a request opens the
//! door of each port it asks for, each grant closing on its own time
//! ([`per_port`]). Commands that do not name the port run once per
//! request, as in fwknopd.
//!
//! | access.conf | knockd.conf / TOML door key |
//! |---|---|
//! | `SOURCE ANY` / `SOURCE 198.18.0.0/15` | `from` (empty: any) |
//! | `OPEN_PORTS tcp/22` | `open = tcp/22` |
//! | `RESTRICT_PORTS tcp/23` | `spa_restrict_ports` |
//! | `KEY_BASE64`, `KEY` | `spa_key_base64`, `spa_key` |
//! | `HMAC_KEY_BASE64`, `HMAC_KEY` | `spa_hmac_key_base64`, `spa_hmac_key` |
//! | `HMAC_DIGEST_TYPE sha256` | (the only one) |
//! | `FW_ACCESS_TIMEOUT 30` | `cmd_timeout = 30` |
//! | `REQUIRE_SOURCE_ADDRESS Y` | `spa_require_source_address = yes` |
//! | `REQUIRE_USERNAME alice` | `spa_require_username = alice` |
//! | `ACCESS_EXPIRE 12/31/2027`, `ACCESS_EXPIRE_EPOCH` | `spa_access_expire = UNIX SECONDS` |
//! | `CMD_CYCLE_OPEN`, `CMD_CYCLE_CLOSE`, `CMD_CYCLE_TIMER` | `start_command`, `stop_command`, `cmd_timeout` |
//! | `$IP`/`$SRC`, `$PORT`, `$PROTO` in those | `%IP%`, `%PORT%`, `%PROTO%` |
//! | `%include FILE` | |

use std::path::{Path, PathBuf};
use std::time::Duration;

use knock_core::Step;
use knock_spa::{Keys, Stanza};

use crate::error::{ConfigError, Location};
use crate::model::{DoorConfig, FirewallKind, SequenceSource};
use crate::value::{parse_net, parse_open_list, split_list};

/// The names of the four SPA key settings of a knockd.conf or TOML door,
/// in [`SpaKeys::build`]'s order.
pub(crate) const DOOR_KEY_NAMES: [&str; 4] = [
    "spa_key",
    "spa_key_base64",
    "spa_hmac_key",
    "spa_hmac_key_base64",
];

/// How deep `%include`s may nest.
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// An SPA door's own settings (the rest are the door's usual keys).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpaDoor {
    /// The encryption and HMAC keys.
    pub keys: Keys,
    /// `RESTRICT_PORTS`: never opened, even if asked.
    pub restrict_ports: Vec<Step>,
    /// `REQUIRE_SOURCE_ADDRESS`: refuse `0.0.0.0` requests (`fwknop -s`).
    pub require_source_address: bool,
    /// `REQUIRE_USERNAME`.
    pub require_username: Option<String>,
    /// `ACCESS_EXPIRE`: Unix time after which the door grants nothing.
    pub expire: Option<Duration>,
    /// The stanza this door is one port of (`None`: the door is a whole
    /// stanza). See [`per_port`].
    pub part_of: Option<Box<StanzaPart>>,
}

/// The stanza an SPA door opening one of its ports belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StanzaPart {
    /// The stanza's name: the door's as written (`stanza1`, `[ssh]`).
    pub stanza: String,
    /// All its ports (`OPEN_PORTS`): what a request may ask for.
    pub open_ports: Vec<Step>,
}

/// What `%PORT%` and `%PROTO%` (fwknop's `$PORT`, `$PROTO`) stand for in
/// the commands of an SPA door.
pub const PORT_VARS: [&str; 2] = ["%PORT%", "%PROTO%"];

/// `command` with `%PORT%` and `%PROTO%` replaced by `port`'s number and
/// its protocol's number (6 for tcp, 17 for udp), as fwknopd does.
pub fn substitute_port(command: &str, port: Step) -> String {
    let proto = match port.proto {
        knock_core::Proto::Tcp => "6",
        knock_core::Proto::Udp => "17",
    };
    command
        .replace("%PORT%", &port.port.to_string())
        .replace("%PROTO%", proto)
}

impl DoorConfig {
    /// Whether the door's commands name the port (`%PORT%`, `%PROTO%`).
    pub fn commands_name_port(&self) -> bool {
        [
            &self.start_command,
            &self.start_command_6,
            &self.stop_command,
            &self.stop_command_6,
        ]
        .into_iter()
        .flatten()
        .any(|c| PORT_VARS.iter().any(|v| c.contains(v)))
    }
}

/// An SPA door as the doors the engine runs: when its grant depends on
/// the port (a native grant, or commands naming `%PORT%`/`%PROTO%`), one
/// door per port of `open`, each opening that port alone, named
/// `NAME:tcp/22` (a single port keeps `NAME`), so that a request opens
/// exactly the ports it asks for; else (commands that do not name the
/// port: run once per request, as in fwknopd) the door itself. Other
/// doors are returned as they are.
///
/// # Errors
/// Commands naming the port without any `open` port to name.
pub(crate) fn per_port(door: DoorConfig, at: &Location) -> Result<Vec<DoorConfig>, ConfigError> {
    let native = door.firewall != FirewallKind::Command;
    let Some(spa) = door.spa() else {
        return Ok(vec![door]);
    };
    if spa.part_of.is_some() {
        return Ok(vec![door]);
    }
    let named = door.commands_name_port();
    if named && door.open.is_empty() {
        return Err(ConfigError::Conflict {
            at: at.clone(),
            door: door.name,
            problem: "%PORT% and %PROTO% ($PORT, $PROTO) need the ports a request may ask for: OPEN_PORTS beside CMD_CYCLE_OPEN in access.conf".to_owned(),
        });
    }
    if !native && !named {
        return Ok(vec![door]);
    }
    let part = StanzaPart {
        stanza: door.name.clone(),
        open_ports: door.open.clone(),
    };
    let single = door.open.len() == 1;
    Ok(door
        .open
        .iter()
        .map(|&port| {
            let mut d = door.clone();
            if !single {
                d.name = format!("{}:{}", door.name, crate::value::open_to_string(&port));
            }
            d.open = vec![port];
            if let SequenceSource::Spa(s) = &mut d.sequence {
                s.part_of = Some(Box::new(part.clone()));
            }
            d
        })
        .collect())
}

impl SpaDoor {
    /// An SPA door's settings with these keys and fwknopd's defaults.
    pub fn new(keys: Keys) -> SpaDoor {
        SpaDoor {
            keys,
            restrict_ports: Vec::new(),
            require_source_address: false,
            require_username: None,
            expire: None,
            part_of: None,
        }
    }
}

impl DoorConfig {
    /// The SPA settings of an SPA door.
    pub fn spa(&self) -> Option<&SpaDoor> {
        match &self.sequence {
            SequenceSource::Spa(s) => Some(s),
            _ => None,
        }
    }

    /// The verifier's stanza of an SPA door: its `from` (`SOURCE`), `open`
    /// (`OPEN_PORTS`: all the stanza's when the door is one port of it),
    /// `cmd_timeout` (`FW_ACCESS_TIMEOUT`) and SPA settings.
    pub fn spa_stanza(&self) -> Option<Stanza> {
        let s = self.spa()?;
        let mut st = Stanza::new(s.keys.clone());
        st.source = self.from.clone();
        st.open_ports = s
            .part_of
            .as_ref()
            .map_or_else(|| self.open.clone(), |p| p.open_ports.clone());
        st.restrict_ports = s.restrict_ports.clone();
        st.timeout = self.cmd_timeout;
        st.require_source_address = s.require_source_address;
        st.require_username = s.require_username.clone();
        st.expire = s.expire;
        Some(st)
    }
}

/// The keys an SPA door may name, read by both formats.
#[derive(Default)]
pub(crate) struct SpaKeys {
    pub(crate) key: Option<(String, Location)>,
    pub(crate) key_base64: Option<(String, Location)>,
    pub(crate) hmac_key: Option<(String, Location)>,
    pub(crate) hmac_key_base64: Option<(String, Location)>,
}

impl SpaKeys {
    pub(crate) fn any(&self) -> bool {
        self.key.is_some()
            || self.key_base64.is_some()
            || self.hmac_key.is_some()
            || self.hmac_key_base64.is_some()
    }

    /// The keys, or the error naming the key at fault. `names` are the
    /// four keys' names in this format (key, key_base64, hmac_key,
    /// hmac_key_base64); `door_at` is where the door starts.
    pub(crate) fn build(
        self,
        names: [&str; 4],
        door: &str,
        door_at: &Location,
    ) -> Result<Keys, ConfigError> {
        let conflict = |at: &Location, problem: String| ConfigError::Conflict {
            at: at.clone(),
            door: door.to_owned(),
            problem,
        };
        let pick =
            |plain: Option<(String, Location)>,
             b64: Option<(String, Location)>,
             plain_name: &str,
             b64_name: &str|
             -> Result<(zeroize::Zeroizing<Vec<u8>>, Location, String), ConfigError> {
                match (plain, b64) {
                    (Some(_), Some((_, at))) => Err(conflict(
                        &at,
                        format!("{plain_name} and {b64_name} exclude each other"),
                    )),
                    (Some((v, at)), None) => Ok((
                        zeroize::Zeroizing::new(v.into_bytes()),
                        at,
                        plain_name.to_owned(),
                    )),
                    (None, Some((v, at))) => {
                        let bytes = Keys::decode_base64(&v).map_err(|e| ConfigError::BadValue {
                            at: at.clone(),
                            key: b64_name.to_owned(),
                            text: "(secret)".to_owned(),
                            expected: format!("base64 (as fwknop --key-gen prints): {e}"),
                        })?;
                        Ok((bytes, at, b64_name.to_owned()))
                    }
                    (None, None) => Err(conflict(
                        door_at,
                        format!("an SPA door needs {plain_name} or {b64_name}"),
                    )),
                }
            };
        let (enc, enc_at, enc_name) = pick(self.key, self.key_base64, names[0], names[1])?;
        let (hmac, hmac_at, hmac_name) =
            pick(self.hmac_key, self.hmac_key_base64, names[2], names[3])?;
        Keys::new(&enc, &hmac).map_err(|e| {
            let (at, key) = match e {
                knock_spa::KeyError::HmacLength(_) => (hmac_at, hmac_name),
                _ => (enc_at, enc_name),
            };
            ConfigError::BadValue {
                at,
                key,
                text: "(secret)".to_owned(),
                expected: e.to_string(),
            }
        })
    }
}

/// Checks what an SPA door must have: an action, and for native grants
/// the ports.
pub(crate) fn check_door(door: &DoorConfig, at: &Location) -> Result<(), ConfigError> {
    let conflict = |problem: &str| ConfigError::Conflict {
        at: at.clone(),
        door: door.name.clone(),
        problem: problem.to_owned(),
    };
    if door.open.is_empty() && door.start_command.is_none() {
        return Err(conflict(
            "an SPA door needs open = proto/port,... (OPEN_PORTS) or start_command (CMD_CYCLE_OPEN)",
        ));
    }
    if door.firewall == FirewallKind::Command && door.start_command.is_none() {
        return Err(conflict(
            "an SPA door with firewall = command needs start_command",
        ));
    }
    Ok(())
}

/// Refuses `door` when `doors` has one of its name already (a door named
/// like one port of an SPA door, `NAME:tcp/22`).
pub(crate) fn check_new_name(
    doors: &[DoorConfig],
    door: &DoorConfig,
    at: &Location,
) -> Result<(), ConfigError> {
    if doors.iter().any(|d| d.name == door.name) {
        return Err(ConfigError::Conflict {
            at: at.clone(),
            door: door.name.clone(),
            problem: "two doors have this name (an SPA door opens each port of open = ... \
                      through a door of its own, NAME:proto/port): rename one"
                .to_owned(),
        });
    }
    Ok(())
}

// ---- access.conf ---------------------------------------------------------

/// Keys of fwknopd's `access.conf` that are refused, with the reason.
fn refused(key: &str) -> Option<&'static str> {
    Some(match key {
        k if k.starts_with("GPG_") => {
            "GnuPG mode is not supported; use KEY_BASE64 and HMAC_KEY_BASE64 (fwknop --key-gen)"
        }
        "ENABLE_CMD_EXEC"
        | "ENABLE_CMD_SUDO_EXEC"
        | "CMD_EXEC_USER"
        | "CMD_EXEC_GROUP"
        | "CMD_SUDO_EXEC_USER"
        | "CMD_SUDO_EXEC_GROUP" => "command messages (fwknop -C) are refused; use CMD_CYCLE_OPEN",
        "FORCE_NAT" | "FORCE_SNAT" | "FORCE_MASQUERADE" | "DISABLE_DNAT" | "FORWARD_ALL" => {
            "NAT access is not supported"
        }
        "DESTINATION" => "DESTINATION is not supported; the daemon listens on its interfaces",
        "ENCRYPTION_MODE" => "only the default CBC mode is supported",
        "ACCESS_EXPIRE_EPOCH" | "ACCESS_EXPIRE" | "HMAC_DIGEST_TYPE" => return None,
        _ => return None,
    })
}

const ACCESS_KEYS: &str = "SOURCE, OPEN_PORTS, RESTRICT_PORTS, KEY, KEY_BASE64, HMAC_KEY, \
HMAC_KEY_BASE64, HMAC_DIGEST_TYPE, FW_ACCESS_TIMEOUT, REQUIRE_SOURCE_ADDRESS, REQUIRE_USERNAME, \
ACCESS_EXPIRE, ACCESS_EXPIRE_EPOCH, CMD_CYCLE_OPEN, CMD_CYCLE_CLOSE, CMD_CYCLE_TIMER, %include";

/// One stanza as read.
struct Raw {
    at: Location,
    source: Vec<ipnet::IpNet>,
    keys: SpaKeys,
    open: Option<Vec<Step>>,
    restrict: Vec<Step>,
    timeout: Option<Duration>,
    require_source: bool,
    require_user: Option<String>,
    expire: Option<Duration>,
    cmd_open: Option<String>,
    cmd_close: Option<String>,
    cmd_timer: Option<Duration>,
    seen: Vec<(String, usize)>,
}

/// Reads fwknopd's `access.conf` text into SPA doors named `stanza1`,
/// `stanza2`, ... in order (`stanza1:tcp/22`, ... for each port: see
/// [`per_port`]). `include` reads a `%include`d file (its path
/// as written, relative to the working directory as in fwknopd); pure
/// callers pass one that refuses.
pub(crate) fn parse_access(
    text: &str,
    file: &Path,
    include: &mut dyn FnMut(&Path) -> Result<String, ConfigError>,
) -> Result<Vec<DoorConfig>, ConfigError> {
    let mut raws = Vec::new();
    read_access(text, file, include, 0, &mut raws)?;
    let mut doors = Vec::new();
    for (i, r) in raws.into_iter().enumerate() {
        let at = r.at.clone();
        doors.extend(per_port(build_stanza(r, i + 1)?, &at)?);
    }
    Ok(doors)
}

fn read_access(
    text: &str,
    file: &Path,
    include: &mut dyn FnMut(&Path) -> Result<String, ConfigError>,
    depth: usize,
    out: &mut Vec<Raw>,
) -> Result<(), ConfigError> {
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let lead = line.chars().take_while(|c| c.is_whitespace()).count();
        let at = Location::at(file, i + 1, lead + 1);
        let (key, value) = match trimmed.split_once(|c: char| c.is_whitespace()) {
            Some((k, v)) => (k, v.trim()),
            None => (trimmed, ""),
        };
        let value_at = Location::at(
            file,
            i + 1,
            lead + 1 + trimmed.len() - value.len().min(trimmed.len()),
        );
        let bad = |expected: &str| ConfigError::BadValue {
            at: value_at.clone(),
            key: key.to_owned(),
            text: value.to_owned(),
            expected: expected.to_owned(),
        };
        if key == "%include" {
            if value.is_empty() {
                return Err(bad("a file path"));
            }
            let path = PathBuf::from(value);
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(bad("fewer nested %include levels (at most 8)"));
            }
            let wrap = |source| ConfigError::Include {
                at: at.clone(),
                path: path.clone(),
                source: Box::new(source),
            };
            let inner = include(&path).map_err(wrap)?;
            read_access(&inner, &path, include, depth + 1, out).map_err(wrap)?;
            continue;
        }
        if key == "%include_folder" {
            return Err(ConfigError::Unsupported {
                at,
                key: key.to_owned(),
                why: "name each file with %include".to_owned(),
            });
        }
        if key == "SOURCE" {
            let mut source = Vec::new();
            if !value.eq_ignore_ascii_case("ANY") {
                let base = value_at.column.unwrap_or(1);
                for (col, piece) in split_list(value) {
                    source.push(parse_net(piece).map_err(|expected| ConfigError::BadValue {
                        at: value_at.with_column(base + col),
                        key: key.to_owned(),
                        text: piece.to_owned(),
                        expected: format!("ANY, or {expected}"),
                    })?);
                }
            }
            out.push(Raw {
                at: at.clone(),
                source,
                keys: SpaKeys::default(),
                open: None,
                restrict: Vec::new(),
                timeout: None,
                require_source: false,
                require_user: None,
                expire: None,
                cmd_open: None,
                cmd_close: None,
                cmd_timer: None,
                seen: vec![("SOURCE".to_owned(), i + 1)],
            });
            continue;
        }
        let Some(r) = out.last_mut() else {
            return Err(ConfigError::KeyOutsideSection {
                at,
                key: key.to_owned(),
            });
        };
        if let Some(why) = refused(key) {
            return Err(ConfigError::Unsupported {
                at,
                key: key.to_owned(),
                why: why.to_owned(),
            });
        }
        if let Some((_, first)) = r.seen.iter().find(|(k, _)| k == key) {
            return Err(ConfigError::DuplicateKey {
                at,
                key: key.to_owned(),
                section: format!("stanza of line {}", r.at.line),
                first_line: *first,
            });
        }
        r.seen.push((key.to_owned(), i + 1));
        let secret = |r: &mut Option<(String, Location)>| {
            if value.is_empty() {
                return Err(bad("a key"));
            }
            *r = Some((value.to_owned(), value_at.clone()));
            Ok(())
        };
        let secs = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|&s| s > 0)
                .map(Duration::from_secs)
                .ok_or_else(|| bad("a number of seconds above 0"))
        };
        let yes_no = || match value.to_ascii_uppercase().as_str() {
            "Y" | "YES" => Ok(true),
            "N" | "NO" => Ok(false),
            _ => Err(bad("Y or N")),
        };
        match key {
            "KEY" => secret(&mut r.keys.key)?,
            "KEY_BASE64" => secret(&mut r.keys.key_base64)?,
            "HMAC_KEY" => secret(&mut r.keys.hmac_key)?,
            "HMAC_KEY_BASE64" => secret(&mut r.keys.hmac_key_base64)?,
            "HMAC_DIGEST_TYPE" => {
                if !value.eq_ignore_ascii_case("sha256") {
                    return Err(ConfigError::Unsupported {
                        at: value_at.clone(),
                        key: format!("{key} {value}"),
                        why: "only sha256 (fwknop's default) is supported".to_owned(),
                    });
                }
            }
            "OPEN_PORTS" => r.open = Some(parse_open_list(value, key, &value_at)?),
            "RESTRICT_PORTS" => r.restrict = parse_open_list(value, key, &value_at)?,
            "FW_ACCESS_TIMEOUT" => r.timeout = Some(secs()?),
            "CMD_CYCLE_TIMER" => r.cmd_timer = Some(secs()?),
            "REQUIRE_SOURCE_ADDRESS" => r.require_source = yes_no()?,
            "REQUIRE_USERNAME" => {
                if value.is_empty() {
                    return Err(bad("a user name"));
                }
                r.require_user = Some(value.to_owned());
            }
            "ACCESS_EXPIRE" => {
                r.expire = Some(parse_date(value).ok_or_else(|| bad("a date MM/DD/YYYY"))?)
            }
            "ACCESS_EXPIRE_EPOCH" => {
                r.expire = Some(
                    value
                        .parse::<u64>()
                        .map(Duration::from_secs)
                        .map_err(|_| bad("Unix seconds"))?,
                )
            }
            "CMD_CYCLE_OPEN" => r.cmd_open = Some(cycle_command(value, &value_at, key)?),
            "CMD_CYCLE_CLOSE" => {
                if !value.eq_ignore_ascii_case("NONE") {
                    r.cmd_close = Some(cycle_command(value, &value_at, key)?);
                }
            }
            _ => {
                return Err(ConfigError::UnknownKey {
                    at,
                    key: key.to_owned(),
                    section: format!("stanza of line {}", r.at.line),
                    expected: ACCESS_KEYS,
                })
            }
        }
    }
    Ok(())
}

/// `CMD_CYCLE_OPEN`/`CLOSE`: fwknop's `$IP` and `$SRC` become `%IP%`,
/// `$PORT` and `$PROTO` `%PORT%` and `%PROTO%` (see [`substitute_port`]);
/// the other substitutions are refused.
fn cycle_command(value: &str, at: &Location, key: &str) -> Result<String, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::BadValue {
            at: at.clone(),
            key: key.to_owned(),
            text: String::new(),
            expected: "a shell command".to_owned(),
        });
    }
    for var in ["$PKT_SRC", "$DST", "$TIMEOUT", "$CLIENT_TIMEOUT"] {
        if value.contains(var) {
            return Err(ConfigError::Unsupported {
                at: at.clone(),
                key: format!("{key} {var}"),
                why: "only $IP (and $SRC), $PORT and $PROTO can be substituted".to_owned(),
            });
        }
    }
    Ok(value
        .replace("$IP", "%IP%")
        .replace("$SRC", "%IP%")
        .replace("$PORT", "%PORT%")
        .replace("$PROTO", "%PROTO%"))
}

/// fwknop's `ACCESS_EXPIRE MM/DD/YYYY` (the end of that day, UTC).
fn parse_date(text: &str) -> Option<Duration> {
    let mut it = text.split('/');
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    let y: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days + 1)
        .ok()
        .map(|d| Duration::from_secs(d * 86_400 - 1))
}

fn build_stanza(r: Raw, n: usize) -> Result<DoorConfig, ConfigError> {
    let name = format!("stanza{n}");
    let keys = r.keys.build(
        ["KEY", "KEY_BASE64", "HMAC_KEY", "HMAC_KEY_BASE64"],
        &name,
        &r.at,
    )?;
    let mut spa = SpaDoor::new(keys);
    spa.restrict_ports = r.restrict;
    spa.require_source_address = r.require_source;
    spa.require_username = r.require_user;
    spa.expire = r.expire;
    let mut door = DoorConfig::new(name, SequenceSource::Spa(spa));
    door.from = r.source;
    door.cmd_timeout = r
        .cmd_timer
        .or(r.timeout)
        .unwrap_or(knock_spa::DEFAULT_ACCESS_TIMEOUT);
    if let Some(open) = r.cmd_open {
        door.start_command = Some(open);
        door.stop_command = r.cmd_close;
        door.firewall = FirewallKind::Command;
        door.open = r.open.unwrap_or_default();
        // With commands, OPEN_PORTS only restricts what may be asked.
    } else {
        door.open = r.open.unwrap_or_default();
        if door.open.is_empty() {
            return Err(ConfigError::Conflict {
                at: r.at,
                door: door.name,
                problem:
                    "a stanza needs OPEN_PORTS (the ports a request may open) or CMD_CYCLE_OPEN"
                        .to_owned(),
            });
        }
        door.firewall = FirewallKind::Auto;
    }
    check_door(&door, &r.at)?;
    Ok(door)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "ZxwCwpGiY1Iv/nzNSES5J5LjuyJ6VpuHvBjzhY2bvck=";
    const H: &str =
        "913yacJvmZCnAkEMp7qifH1iZ2fJpda27ZO2WLXNbIWtImTr3ITQBGCZWcSzjEJloNi/cyz13s+7LsyNiH4i8w==";

    fn parse(text: &str) -> Result<Vec<DoorConfig>, ConfigError> {
        parse_access(text, Path::new("access.conf"), &mut |p| {
            Err(ConfigError::File {
                path: p.to_owned(),
                source: crate::file::FileError::Io(std::io::ErrorKind::NotFound.into()),
            })
        })
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("01/01/1970"), Some(Duration::from_secs(86_399)));
        assert_eq!(
            parse_date("12/31/2027"),
            Some(Duration::from_secs(1_830_297_599))
        );
        assert_eq!(parse_date("13/01/2027"), None);
        assert_eq!(parse_date("2027-01-01"), None);
    }

    #[test]
    fn a_typical_stanza() {
        let text = format!(
            "# fwknopd access.conf\nSOURCE ANY\n    OPEN_PORTS tcp/22, udp/1194\n    KEY_BASE64 {K}\n    HMAC_KEY_BASE64 {H}\n    FW_ACCESS_TIMEOUT 5\n    REQUIRE_USERNAME alice\n"
        );
        let doors = parse(&text).unwrap();
        // One door per port, each opening its port alone; the verifier
        // admits either.
        let names: Vec<&str> = doors.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["stanza1:tcp/22", "stanza1:udp/1194"]);
        assert_eq!(doors[0].open, vec![Step::tcp(22)]);
        assert_eq!(doors[1].open, vec![Step::udp(1194)]);
        for d in &doors {
            assert_eq!(d.cmd_timeout, Duration::from_secs(5));
            assert_eq!(d.firewall, FirewallKind::Auto);
            let st = d.spa_stanza().unwrap();
            assert!(st.source.is_empty());
            assert_eq!(st.open_ports, vec![Step::tcp(22), Step::udp(1194)]);
            assert_eq!(st.require_username.as_deref(), Some("alice"));
            assert_eq!(st.keys, Keys::from_base64(K, H).unwrap());
        }
        let config = crate::Config::new(crate::Options::default(), doors);
        let stanzas = config.spa_stanzas();
        assert_eq!(stanzas.len(), 1);
        assert_eq!(stanzas[0].name, "stanza1");
        assert_eq!(
            stanzas[0].doors,
            vec![
                ("stanza1:tcp/22".to_owned(), vec![Step::tcp(22)]),
                ("stanza1:udp/1194".to_owned(), vec![Step::udp(1194)]),
            ]
        );
    }

    #[test]
    fn a_single_port_keeps_the_stanza_name() {
        let text = format!("SOURCE ANY\nOPEN_PORTS tcp/22\nKEY_BASE64 {K}\nHMAC_KEY_BASE64 {H}\n");
        let doors = parse(&text).unwrap();
        let names: Vec<&str> = doors.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["stanza1"]);
    }

    #[test]
    fn cycle_commands_name_the_port_or_run_once() {
        let stanza = |cmds: &str| {
            format!("SOURCE ANY\nOPEN_PORTS tcp/22, udp/53\nKEY_BASE64 {K}\nHMAC_KEY_BASE64 {H}\n{cmds}")
        };
        let doors = parse(&stanza(
            "CMD_CYCLE_OPEN allow $IP $PROTO/$PORT\nCMD_CYCLE_CLOSE deny $SRC $PORT\n",
        ))
        .unwrap();
        let names: Vec<&str> = doors.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["stanza1:tcp/22", "stanza1:udp/53"]);
        assert_eq!(
            doors[0].start_command.as_deref(),
            Some("allow %IP% %PROTO%/%PORT%")
        );
        assert_eq!(doors[1].stop_command.as_deref(), Some("deny %IP% %PORT%"));
        // Without $PORT/$PROTO the command runs once per request.
        let doors = parse(&stanza("CMD_CYCLE_OPEN allow $IP\n")).unwrap();
        let names: Vec<&str> = doors.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["stanza1"]);
        assert_eq!(doors[0].open, vec![Step::tcp(22), Step::udp(53)]);
        // $PORT needs OPEN_PORTS to take it from.
        let text = format!(
            "SOURCE ANY\nKEY_BASE64 {K}\nHMAC_KEY_BASE64 {H}\nCMD_CYCLE_OPEN allow $IP $PORT\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("OPEN_PORTS") && err.contains("access.conf:1"),
            "{err}"
        );
        // The substitutions fwknop has and we lack are still refused.
        let err = parse(&stanza("CMD_CYCLE_OPEN allow $IP $TIMEOUT\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("$TIMEOUT"), "{err}");
    }

    #[test]
    fn substitute_port_uses_fwknops_protocol_numbers() {
        assert_eq!(substitute_port("x %PROTO% %PORT%", Step::tcp(22)), "x 6 22");
        assert_eq!(substitute_port("%PORT%/%PROTO%", Step::udp(53)), "53/17");
    }
}
