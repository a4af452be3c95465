//! # knock-config
//!
//! Turns a knockd.conf (unchanged: every knockd 0.8 directive) or the typed
//! TOML format into [`knock_core::Door`]s plus the settings the daemon and
//! the firewall sinks need, and keeps one-time sequence files up to date,
//! crash-safely and in knockd's on-disk format.
//!
//! ```text
//!  knockd.conf ──parse_knockd_str──┐                       ┌─► core_doors() ─► knock_core::Matcher
//!                                  ├─► Config ─load_sequence_files─► Config ─┤
//!  knock.toml ───parse_toml_str────┘   (pure)        (reads files)          └─► DoorConfig: commands, open,
//!                                                                                 firewall, grant_prefix, ...
//! ```
//!
//! ## Brief overview
//! * [`Config`]: [`Options`] (`[options]`) and [`DoorConfig`]s in file order.
//!   `from_knockd_str`/`from_knockd_file`/`from_toml_str`/`from_toml_file`
//!   parse and load sequence files; `parse_knockd_str`/`parse_toml_str` only
//!   parse (no I/O, for fuzzing and conversion). [`Config::core_doors`] gives
//!   the matcher's doors; [`Config::to_toml_string`] and [`knockd_to_toml`]
//!   write TOML.
//! * [`DoorConfig`]: the matcher's part ([`DoorConfig::core_door`]) and the
//!   actions: knockd's start/stop commands (`%IP%` left in; substituting it is
//!   the firewall crate's job), `cmd_timeout`, and our native `open` grants.
//! * [`SequenceFile`]: `sequence = /path` and `one_time_sequences = /path`.
//!   When the matcher emits `SequenceConsumed { door, index, .. }`, call
//!   `config.door_mut(name)?.sequence_file_mut()?.mark_used(index)`.
//! * [`ConfigError`]: one error type; every variant names the file, the line
//!   (and column where it helps), the offending text (an excerpt of
//!   [`EXCERPT_CHARS`] characters when it is longer) and what was expected.
//! * [`read_regular_file`]: how every file a configuration names is read
//!   (the configuration, sequence and secret files): only a regular file,
//!   opened without blocking (a FIFO is refused, not waited on) and read up
//!   to a limit, whatever size it claims (`/dev/zero` is refused too).
//! * [`AtomicFile`]: how files are written (one-time sequence files, the
//!   daemon's state): replaced whole through a temporary file and a rename,
//!   the path resolved once for a file written often; [`write_atomically`]
//!   resolves it at each call.
//!
//! The knockd.conf dialect, its quirks and our extension keys are described
//! in [`knockd_conf`]; the TOML schema in [`toml_schema`].
//!
//! ## Design
//! Two stages, as in ripgrep's low/high-level arguments: parsing only looks
//! at text and validates everything it can there (with line and column);
//! loading reads the sequence files a configuration names. A configuration
//! that loads is one the core accepts (every door passes
//! [`knock_core::Door::validate`]).
//!
//! ## Example
//! ```
//! use knock_config::{Config, FirewallKind};
//! use knock_core::Step;
//! use std::time::Duration;
//!
//! let conf = "
//! [options]
//!     UseSyslog
//!     Interface = ens33
//!
//! [openSSH]
//!     sequence    = 7000,8000:udp,9000
//!     seq_timeout = 5
//!     tcpflags    = syn
//!     command     = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
//!
//! [web]
//!     sequence = 1111,2222
//!     open     = tcp/443
//!     cmd_timeout = 30
//! ";
//! let config = Config::from_knockd_str(conf, "/etc/knockd.conf")?;
//! assert!(config.options.use_syslog);
//! assert_eq!(config.options.interfaces, ["ens33"]);
//!
//! let doors = config.core_doors();
//! assert_eq!(doors[0].all_sequences()[0], [Step::tcp(7000), Step::udp(8000), Step::tcp(9000)]);
//! assert_eq!(doors[0].seq_timeout, Duration::from_secs(5));
//! assert_eq!(doors[0].grant_lifetime, None); // no stop_command: open only
//! assert_eq!(config.doors[1].firewall, FirewallKind::Auto); // resolved by the daemon
//! assert_eq!(doors[1].grant_lifetime, Some(Duration::from_secs(30)));
//!
//! // The same doors as TOML, and back.
//! let toml = config.to_toml_string()?;
//! assert_eq!(Config::from_toml_str(&toml, "knock.toml")?, config);
//! # Ok::<(), knock_config::ConfigError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod atomic;
pub mod derive;
mod error;
mod file;
mod knockd;
pub mod knockd_conf;
mod model;
mod seqfile;
pub mod spa;
mod toml_format;
pub mod toml_schema;
mod value;

/// What this crate's unit tests share.
#[cfg(test)]
mod test_util {
    use std::path::{Path, PathBuf};

    /// Writes `text` to `name` in `dir`; its path.
    pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

use std::path::Path;

pub use atomic::{check_writable, replace_atomically, write_atomically, AtomicFile};
pub use error::{ConfigError, Location, StepError, EXCERPT_CHARS};
pub use file::{read_regular_file, FileError, FileKind};
pub use model::{
    BlacklistReach, BlacklistRule, Config, DerivedSequence, DoorConfig, FirewallKind, GrantPrefix,
    Options, SequenceSource, DEFAULT_CMD_TIMEOUT, DEFAULT_INTERFACE, DEFAULT_PID_FILE,
};
pub use seqfile::{Marked, SequenceEntry, SequenceFile, MAX_SEQUENCE_FILE_SIZE};
pub use value::{
    duration_to_string, parse_capture_ring, parse_duration, parse_open, parse_step,
    sequence_to_string, MAX_CAPTURE_RING, MIN_CAPTURE_RING,
};

/// The largest configuration file read (4 MiB).
pub const MAX_CONFIG_FILE_SIZE: u64 = 4 << 20;

impl Config {
    /// Parses knockd.conf text without reading any file: sequence files
    /// named by the doors stay unloaded (see
    /// [`load_sequence_files`](Self::load_sequence_files)). `origin` names the
    /// text in errors. Never panics.
    ///
    /// # Errors
    /// Any syntax or value error, with its line and column.
    pub fn parse_knockd_str(text: &str, origin: impl AsRef<Path>) -> Result<Config, ConfigError> {
        knockd::parse(text, origin.as_ref())
    }

    /// Parses knockd.conf text and loads the sequence files it names.
    ///
    /// # Errors
    /// As [`parse_knockd_str`](Self::parse_knockd_str), and missing, empty or
    /// malformed sequence files.
    pub fn from_knockd_str(text: &str, origin: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let mut c = Self::parse_knockd_str(text, origin.as_ref())?;
        c.load_sequence_files(origin)?;
        Ok(c)
    }

    /// Reads a knockd.conf and the sequence files it names.
    ///
    /// # Errors
    /// As [`from_knockd_str`](Self::from_knockd_str), and
    /// [`ConfigError::File`] (missing, not a regular file, larger than
    /// [`MAX_CONFIG_FILE_SIZE`]) or a file that is not UTF-8.
    pub fn from_knockd_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = read_text(path)?;
        Self::from_knockd_str(&text, path)
    }

    /// Parses the TOML format without reading any file. Never panics.
    ///
    /// # Errors
    /// TOML syntax, unknown fields, wrong types and every value error of
    /// the knockd.conf parser.
    pub fn parse_toml_str(text: &str, origin: impl AsRef<Path>) -> Result<Config, ConfigError> {
        toml_format::parse(text, origin.as_ref())
    }

    /// Parses the TOML format and loads the sequence files it names.
    ///
    /// # Errors
    /// As [`parse_toml_str`](Self::parse_toml_str) and
    /// [`load_sequence_files`](Self::load_sequence_files).
    pub fn from_toml_str(text: &str, origin: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let mut c = Self::parse_toml_str(text, origin.as_ref())?;
        c.load_sequence_files(origin)?;
        Ok(c)
    }

    /// Reads a TOML configuration and the sequence files it names.
    ///
    /// # Errors
    /// As [`from_toml_str`](Self::from_toml_str) and those of reading the
    /// file (as [`from_knockd_file`](Self::from_knockd_file)).
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = read_text(path)?;
        Self::from_toml_str(&text, path)
    }

    /// Writes the configuration in the TOML format (every door's timeouts
    /// explicit, other defaults left out). Loaded sequence files are written
    /// as their paths.
    ///
    /// # Errors
    /// Only if the serializer fails, which the model does not allow.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml_format::to_string(self)
    }

    /// Loads every sequence file and secret file the doors name and are not
    /// loaded yet, then checks each door as the core would. Relative paths are relative
    /// to the working directory, as in knockd. `origin` names the
    /// configuration in errors.
    ///
    /// # Errors
    /// [`ConfigError::SequenceFileMissing`] (missing, not a regular file,
    /// larger than [`MAX_SEQUENCE_FILE_SIZE`]),
    /// [`ConfigError::EmptySequenceFile`] (also for a reusable file whose
    /// lines are all commented out), [`ConfigError::SecretFile`] (missing,
    /// not a regular file, too large, empty or world-readable),
    /// malformed lines, and [`ConfigError::Door`].
    pub fn load_sequence_files(&mut self, origin: impl AsRef<Path>) -> Result<(), ConfigError> {
        let origin = origin.as_ref();
        for door in &mut self.doors {
            if let SequenceSource::Derived(d) = &mut door.sequence {
                if d.secret.is_none() {
                    d.secret = Some(derive::Secret::load(&d.secret_file).map_err(|source| {
                        ConfigError::SecretFile {
                            at: Location::new(origin, d.line.0),
                            door: door.name.clone(),
                            path: d.secret_file.clone(),
                            source,
                        }
                    })?);
                }
                continue;
            }
            let (path, loaded, reusable) = match &mut door.sequence {
                SequenceSource::File { path, loaded } => (path, loaded, true),
                SequenceSource::OneTime { path, loaded } => (path, loaded, false),
                _ => continue,
            };
            if loaded.is_some() {
                continue;
            }
            let file = SequenceFile::load(&*path).map_err(|e| match e {
                ConfigError::File { source, .. } => ConfigError::SequenceFileMissing {
                    at: Location::new(origin, 0),
                    door: door.name.clone(),
                    path: path.clone(),
                    source,
                },
                e => e,
            })?;
            if reusable && file.entries().is_empty() {
                return Err(ConfigError::EmptySequenceFile { path: path.clone() });
            }
            *loaded = Some(file);
            if let Some(core) = door.core_door() {
                core.validate().map_err(|source| ConfigError::Door {
                    at: Location::new(origin, 0),
                    door: door.name.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }
}

impl Config {
    /// Parses fwknopd's `access.conf` text into SPA doors (`stanza1`,
    /// `stanza2`, ... in file order), reading no file: a `%include` is an
    /// error. See [`spa`] for the keys.
    ///
    /// # Errors
    /// Unknown and unsupported keys, bad values, stanzas without keys or
    /// ports, each with file, line and column.
    pub fn parse_access_conf_str(
        text: &str,
        origin: impl AsRef<Path>,
    ) -> Result<Vec<DoorConfig>, ConfigError> {
        spa::parse_access(text, origin.as_ref(), &mut |p| {
            Err(ConfigError::Unsupported {
                at: Location::new(p, 0),
                key: "%include".to_owned(),
                why: "text parsed from memory cannot include files".to_owned(),
            })
        })
    }

    /// Reads fwknopd's `access.conf` (following `%include`s, relative to
    /// the working directory as in fwknopd) and adds its stanzas to the
    /// doors, as SPA doors `stanza1`, `stanza2`, ...
    ///
    /// # Errors
    /// As [`parse_access_conf_str`](Self::parse_access_conf_str), files
    /// that cannot be read, and a stanza name that is already a door.
    pub fn add_access_conf(&mut self, path: impl AsRef<Path>) -> Result<(), ConfigError> {
        let path = path.as_ref();
        let text = read_text(path)?;
        let doors = spa::parse_access(&text, path, &mut |p| read_text(p))?;
        for d in doors {
            if self.door(&d.name).is_some() {
                return Err(ConfigError::DuplicateDoor {
                    at: Location::new(path, 0),
                    door: d.name,
                    first_line: 0,
                });
            }
            self.doors.push(d);
        }
        Ok(())
    }

    /// The SPA doors' stanzas, in order, each with its name and its doors
    /// (with the ports each opens): one door, or one per port (see
    /// [`spa::SpaDoor::part_of`]).
    pub fn spa_stanzas(&self) -> Vec<SpaStanza> {
        let mut out: Vec<SpaStanza> = Vec::new();
        for d in &self.doors {
            let (Some(spa), Some(stanza)) = (d.spa(), d.spa_stanza()) else {
                continue;
            };
            let door = (d.name.clone(), d.open.clone());
            match &spa.part_of {
                Some(p) => match out.iter_mut().find(|s| s.name == p.stanza) {
                    Some(s) => s.doors.push(door),
                    None => out.push(SpaStanza {
                        name: p.stanza.clone(),
                        stanza,
                        doors: vec![door],
                    }),
                },
                None => out.push(SpaStanza {
                    name: d.name.clone(),
                    stanza,
                    doors: vec![door],
                }),
            }
        }
        out
    }
}

/// An SPA stanza and the doors that open its ports
/// ([`Config::spa_stanzas`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SpaStanza {
    /// Its name (`stanza1`, or the door's as written).
    pub name: String,
    /// What the verifier checks.
    pub stanza: knock_spa::Stanza,
    /// Its doors, each with the ports it opens: a request opens those of
    /// the ports it asks for (a single door opens whatever is asked).
    pub doors: Vec<(String, Vec<knock_core::Step>)>,
}

/// Converts knockd.conf text to the TOML format without reading any file
/// (sequence files stay paths).
///
/// # Errors
/// Whatever [`Config::parse_knockd_str`] rejects (errors name the file
/// `knockd.conf`).
pub fn knockd_to_toml(text: &str) -> Result<String, ConfigError> {
    Config::parse_knockd_str(text, "knockd.conf")?.to_toml_string()
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    let bytes = seqfile::read_limited(path, MAX_CONFIG_FILE_SIZE)?;
    String::from_utf8(bytes).map_err(|e| {
        let line = e
            .as_bytes()
            .get(..e.utf8_error().valid_up_to())
            .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() + 1);
        ConfigError::NotText {
            path: path.to_owned(),
            line,
        }
    })
}
