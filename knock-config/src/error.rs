//! The one error type of this crate.

use std::fmt;
use std::path::PathBuf;

use knock_core::DoorError;

/// Where in which file something went wrong.
///
/// Displays as `file:line:column` (`file:line` without a column, `file`
/// alone when the line is unknown). Lines and columns are 1-based; columns
/// count characters, not bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Location {
    /// The file (or the name given for text parsed from memory).
    pub file: PathBuf,
    /// The 1-based line, 0 when unknown.
    pub line: usize,
    /// The 1-based column, when it helps.
    pub column: Option<usize>,
}

impl Location {
    /// A line of a file.
    pub fn new(file: impl Into<PathBuf>, line: usize) -> Self {
        Location {
            file: file.into(),
            line,
            column: None,
        }
    }

    /// A line and column of a file.
    pub fn at(file: impl Into<PathBuf>, line: usize, column: usize) -> Self {
        Location {
            file: file.into(),
            line,
            column: Some(column),
        }
    }

    /// The same place with a column.
    pub(crate) fn with_column(&self, column: usize) -> Self {
        Location {
            column: Some(column),
            ..self.clone()
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        Ok(())
    }
}

/// What is wrong with one entry of a sequence (`7000:tcp`) or an `open`
/// entry (`tcp/22`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// Nothing between two commas, or a trailing comma.
    #[error("empty entry (a doubled or trailing comma?)")]
    Empty,
    /// Port 0.
    #[error("port 0 (ports are 1 to 65535)")]
    PortZero,
    /// A port above 65535.
    #[error("port above 65535")]
    PortTooLarge,
    /// `1000-2000`: knockd reads it as 1000; a sequence lists single ports.
    #[error("a port range; a sequence lists single ports, e.g. 1000,2000")]
    Range,
    /// Not a decimal port number.
    #[error("not a port number")]
    NotANumber,
    /// A protocol other than tcp or udp.
    #[error("unknown protocol (expected tcp or udp)")]
    UnknownProtocol,
}

/// Everything that can go wrong reading a configuration or a sequence file.
///
/// Every variant names the file, the line (and the column where it helps),
/// the offending text and what was expected; [`Display`](fmt::Display)
/// renders all of it on one line, compiler style:
/// `/etc/knockd.conf:7:19: sequence entry "1000-2000": a port range; ...`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be written (reads give [`ConfigError::File`]).
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`"cannot read"`, `"cannot write"`...).
        action: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration or sequence file that cannot be read: missing, not
    /// a regular file, too large.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::file::FileError,
    },
    /// A line that is neither a comment, a `[section]` nor `key = value`.
    #[error("{at}: {text:?}: expected {expected}")]
    Syntax {
        /// Where.
        at: Location,
        /// The line.
        text: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A key this section does not know.
    #[error("{at}: unknown key {key:?} in [{section}] (expected one of: {expected})")]
    UnknownKey {
        /// Where.
        at: Location,
        /// The key as written.
        key: String,
        /// The section.
        section: String,
        /// The keys the section accepts.
        expected: &'static str,
    },
    /// A `key = value` line before the first `[section]`.
    #[error("{at}: {key:?} outside a section (expected [options] or [door name] first)")]
    KeyOutsideSection {
        /// Where.
        at: Location,
        /// The key.
        key: String,
    },
    /// A key given twice in one section (aliases count as the same key).
    #[error("{at}: {key:?} is set twice in [{section}] (first on line {first_line})")]
    DuplicateKey {
        /// Where the second one is.
        at: Location,
        /// The key.
        key: String,
        /// The section.
        section: String,
        /// Where the first one is.
        first_line: usize,
    },
    /// Two doors with the same name.
    #[error("{at}: door [{door}] is defined twice (first on line {first_line})")]
    DuplicateDoor {
        /// Where the second one is.
        at: Location,
        /// The name.
        door: String,
        /// Where the first one is (0 when unknown).
        first_line: usize,
    },
    /// A value of the wrong shape (duration, address, boolean...).
    #[error("{at}: {key} = {text:?}: expected {expected}")]
    BadValue {
        /// Where.
        at: Location,
        /// The key.
        key: String,
        /// The value as written.
        text: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A bad entry in a sequence or an `open` list.
    #[error("{at}: {key} entry {text:?}: {reason}")]
    BadStep {
        /// Where (the column points at the entry).
        at: Location,
        /// The key (`sequence`, `open`) or `sequence file`.
        key: String,
        /// The entry as written.
        text: String,
        /// What is wrong with it.
        reason: StepError,
    },
    /// A bad `tcpflags` entry.
    #[error("{at}: tcpflags {text:?}: {problem} (expected a comma-separated list without spaces of fin, syn, rst, psh, ack, urg, ece, cwr, each optionally prefixed by !)")]
    BadFlags {
        /// Where (the column points at the entry).
        at: Location,
        /// The entry (or the whole value for spaces).
        text: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A sequence longer than [`knock_core::MAX_STEPS`].
    #[error("{at}: sequence {text:?} has {count} steps (at most 32)")]
    TooManySteps {
        /// Where.
        at: Location,
        /// The sequence as written.
        text: String,
        /// How many steps it has.
        count: usize,
    },
    /// A door without `sequence`, `one_time_sequences` or `sequence_secret_file`.
    #[error("{at}: door [{door}] has no sequence (expected sequence, one_time_sequences or sequence_secret_file)")]
    NoSequence {
        /// Where the door's section starts.
        at: Location,
        /// The door.
        door: String,
    },
    /// Two keys that exclude each other, or a key that needs another.
    #[error("{at}: door [{door}]: {problem}")]
    Conflict {
        /// Where the door's section starts (or the offending key).
        at: Location,
        /// The door.
        door: String,
        /// What does not fit together.
        problem: String,
    },
    /// `UseSyslog` with a value.
    #[error("{at}: UseSyslog takes no value (found {text:?}); write the bare word `UseSyslog` to log to syslog, or leave it out")]
    UseSyslogValue {
        /// Where.
        at: Location,
        /// The line.
        text: String,
    },
    /// A sequence file that does not exist or cannot be read (also one that
    /// is not a regular file, or is too large).
    #[error("{at}: door [{door}]: cannot read sequence file {}: {source}", path.display())]
    SequenceFileMissing {
        /// Where the key naming the file is (0 line for TOML).
        at: Location,
        /// The door.
        door: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::file::FileError,
    },
    /// A sequence file without a single sequence line.
    #[error("{}: sequence file has no sequence (expected lines like ` 7000:tcp,8000:udp`)", path.display())]
    EmptySequenceFile {
        /// The file.
        path: PathBuf,
    },
    /// A sequence file that is not UTF-8 text.
    #[error("{}: line {line}: not UTF-8 text", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
        /// The first line that is not UTF-8 (0 when unknown).
        line: usize,
    },
    /// The sequence to mark as used is no longer in the file (it was
    /// edited on disk): nothing was written.
    #[error("{}: sequence {sequence} (line {line} when loaded) is no longer an unused line of the file; not marked", path.display())]
    SequenceGone {
        /// The file.
        path: PathBuf,
        /// Its line when the file was loaded.
        line: usize,
        /// The sequence, knockd syntax.
        sequence: String,
    },
    /// `mark_used` was called with an index the file does not have.
    #[error("{}: no sequence with index {index} (the file has {len})", path.display())]
    NoSuchSequence {
        /// The file.
        path: PathBuf,
        /// The index asked for.
        index: usize,
        /// How many sequences there are.
        len: usize,
    },
    /// The TOML text is not valid TOML or does not fit the schema.
    #[error("{at}: {message}")]
    Toml {
        /// Where.
        at: Location,
        /// The parser's message.
        message: String,
    },
    /// The model cannot be written as TOML.
    #[error("cannot write TOML: {message}")]
    TomlWrite {
        /// The serializer's message.
        message: String,
    },
    /// A door the core rejects.
    #[error("{at}: door [{door}]: {source}")]
    Door {
        /// Where the door is defined.
        at: Location,
        /// The door.
        door: String,
        /// The core's reason.
        #[source]
        source: DoorError,
    },
    /// A `sequence_secret_file` that cannot be used.
    #[error("{at}: door [{door}]: secret file {}: {source}", path.display())]
    SecretFile {
        /// Where `sequence_secret_file` is (line 0 for TOML).
        at: Location,
        /// The door.
        door: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: crate::derive::SecretError,
    },
}
