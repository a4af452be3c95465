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

/// How many characters of a quoted entry or door name an error shows.
pub const EXCERPT_CHARS: usize = 40;

/// How many characters of a parser's message an error shows at most.
const MESSAGE_CHARS: usize = 300;

/// `text` cut after `max` characters: the part kept and whether it was cut.
fn cut(text: &str, max: usize) -> (&str, bool) {
    match text.char_indices().nth(max) {
        Some((i, _)) => (&text[..i], true),
        None => (text, false),
    }
}

/// Text from a file quoted in an error: `"text"` (Rust string syntax) when
/// short, else `"its first 40 characters…" (N bytes)`, so that a 100 kB
/// line never ends up whole in a log line.
fn quoted(text: &str) -> Excerpt<'_> {
    Excerpt {
        text,
        kind: ExcerptKind::Quoted,
    }
}

/// A door or section name: as is when short, else `first 40 chars… (N bytes)`.
fn name(text: &str) -> Excerpt<'_> {
    Excerpt {
        text,
        kind: ExcerptKind::Name,
    }
}

/// A parser's message, which may quote the text it rejects: every word of
/// more than 40 characters is cut to 40 and `…`, and the whole to 300.
fn parser_message(text: &str) -> Excerpt<'_> {
    Excerpt {
        text,
        kind: ExcerptKind::Message,
    }
}

/// See [`quoted`], [`name`] and [`parser_message`].
struct Excerpt<'a> {
    text: &'a str,
    kind: ExcerptKind,
}

enum ExcerptKind {
    Quoted,
    Name,
    Message,
}

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shown, was_cut) = cut(self.text, EXCERPT_CHARS);
        let ellipsis = if was_cut { "…" } else { "" };
        match self.kind {
            ExcerptKind::Quoted => {
                // As `{:?}` writes it, with the ellipsis inside the quotes.
                let debug = format!("{shown:?}");
                let open = debug.strip_suffix('"').unwrap_or(&debug);
                write!(f, "{open}{ellipsis}\"")?;
            }
            ExcerptKind::Name => write!(f, "{shown}{ellipsis}")?,
            ExcerptKind::Message => {
                let mut out = String::new();
                for word in self.text.split_inclusive(char::is_whitespace) {
                    match cut(word, EXCERPT_CHARS) {
                        (w, false) => out.push_str(w),
                        (w, true) => {
                            out.push_str(w);
                            out.push('…');
                            // Keep the separator the word ended with.
                            if let Some(c) = word.chars().last().filter(|c| c.is_whitespace()) {
                                out.push(c);
                            }
                        }
                    }
                }
                let (all, too_long) = cut(&out, MESSAGE_CHARS);
                return write!(f, "{all}{}", if too_long { "…" } else { "" });
            }
        }
        if was_cut {
            write!(f, " ({} bytes)", self.text.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_keep_short_text_and_cut_long_text() {
        assert_eq!(quoted("a\"b").to_string(), r#""a\"b""#);
        let long = format!("{}\"{}", "x".repeat(39), "y".repeat(100));
        assert_eq!(
            quoted(&long).to_string(),
            format!(r#""{}\"…" (140 bytes)"#, "x".repeat(39))
        );
        assert_eq!(name("web").to_string(), "web");
        assert_eq!(
            name(&"é".repeat(50)).to_string(),
            format!("{}… (100 bytes)", "é".repeat(40))
        );
        let msg = format!("unknown variant `{}`, expected `a` or `b`", "z".repeat(99));
        assert_eq!(
            parser_message(&msg).to_string(),
            format!("unknown variant `{}… expected `a` or `b`", "z".repeat(39))
        );
        assert_eq!(
            parser_message(&"ab ".repeat(200))
                .to_string()
                .chars()
                .count(),
            MESSAGE_CHARS + 1
        );
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
/// Text from the file longer than [`EXCERPT_CHARS`] characters is shown as
/// an excerpt with its length (`"99999999…" (100000 bytes)`); the fields
/// keep it whole.
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
    #[error("{at}: {}: expected {expected}", quoted(.text))]
    Syntax {
        /// Where.
        at: Location,
        /// The line.
        text: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A key this section does not know.
    #[error("{at}: unknown key {} in [{}] (expected one of: {expected})", quoted(.key), name(.section))]
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
    #[error("{at}: {} outside a section (expected [options] or [door name] first)", quoted(.key))]
    KeyOutsideSection {
        /// Where.
        at: Location,
        /// The key.
        key: String,
    },
    /// A key given twice in one section (aliases count as the same key).
    #[error("{at}: {} is set twice in [{}] (first on line {first_line})", quoted(.key), name(.section))]
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
    #[error("{at}: door [{}] is defined twice (first on line {first_line})", name(.door))]
    DuplicateDoor {
        /// Where the second one is.
        at: Location,
        /// The name.
        door: String,
        /// Where the first one is (0 when unknown).
        first_line: usize,
    },
    /// A value of the wrong shape (duration, address, boolean...).
    #[error("{at}: {key} = {}: expected {expected}", quoted(.text))]
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
    #[error("{at}: {key} entry {}: {reason}", quoted(.text))]
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
    #[error("{at}: tcpflags {}: {problem} (expected a comma-separated list without spaces of fin, syn, rst, psh, ack, urg, ece, cwr, each optionally prefixed by !)", quoted(.text))]
    BadFlags {
        /// Where (the column points at the entry).
        at: Location,
        /// The entry (or the whole value for spaces).
        text: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A sequence longer than [`knock_core::MAX_STEPS`].
    #[error("{at}: sequence {} has {count} steps (at most 32)", quoted(.text))]
    TooManySteps {
        /// Where.
        at: Location,
        /// The sequence as written.
        text: String,
        /// How many steps it has.
        count: usize,
    },
    /// A door without `sequence`, `one_time_sequences` or `sequence_secret_file`.
    #[error("{at}: door [{}] has no sequence (expected sequence, one_time_sequences or sequence_secret_file)", name(.door))]
    NoSequence {
        /// Where the door's section starts.
        at: Location,
        /// The door.
        door: String,
    },
    /// Two keys that exclude each other, or a key that needs another.
    #[error("{at}: door [{}]: {problem}", name(.door))]
    Conflict {
        /// Where the door's section starts (or the offending key).
        at: Location,
        /// The door.
        door: String,
        /// What does not fit together.
        problem: String,
    },
    /// `UseSyslog` with a value.
    #[error("{at}: UseSyslog takes no value (found {}); write the bare word `UseSyslog` to log to syslog, or leave it out", quoted(.text))]
    UseSyslogValue {
        /// Where.
        at: Location,
        /// The line.
        text: String,
    },
    /// A sequence file that does not exist or cannot be read (also one that
    /// is not a regular file, or is too large).
    #[error("{at}: door [{}]: cannot read sequence file {}: {source}", name(.door), path.display())]
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
    #[error("{at}: {}", parser_message(.message))]
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
    #[error("{at}: door [{}]: {source}", name(.door))]
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
    #[error("{at}: door [{}]: secret file {}: {source}", name(.door), path.display())]
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
    /// A key of fwknop's `access.conf` (or an SPA key) that is understood
    /// but not supported here.
    #[error("{at}: {key} is not supported: {why}")]
    Unsupported {
        /// Where.
        at: Location,
        /// The key as written.
        key: String,
        /// Why, and what to do instead.
        why: String,
    },
    /// An `access.conf` `%include` that cannot be followed.
    #[error("{at}: %include {}: {source}", path.display())]
    Include {
        /// Where the `%include` is.
        at: Location,
        /// The file it names.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: Box<ConfigError>,
    },
}
