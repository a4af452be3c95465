//! Sequence files: `sequence = /path` and `one_time_sequences = /path`.
//!
//! knockd's format: one sequence per line (`7000,8000:udp`, usually written
//! with a leading space), blank lines and lines starting with `#` skipped. In
//! a one-time file a used line has had its first byte overwritten with `#`.
//! Unlike knockd, an unparsable line is an error with its line number (knockd
//! skips it and later marks the wrong line).

use std::path::{Path, PathBuf};

use knock_core::Step;

use crate::atomic::{check_writable, write_atomically};
use crate::error::{ConfigError, Location};
use crate::value::{parse_sequence, sequence_to_string};

/// The largest sequence file read (1 MiB).
pub const MAX_SEQUENCE_FILE_SIZE: u64 = 1 << 20;

/// One unused sequence line of a file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SequenceEntry {
    /// The 1-based line number.
    pub line: usize,
    /// The byte offset of the line's first byte.
    pub offset: usize,
    /// The sequence.
    pub steps: Vec<Step>,
}

/// The result of [`SequenceFile::mark_used`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Marked {
    /// The line that now starts with `#`.
    pub line: usize,
    /// Whether the file had changed on disk and was re-read first.
    pub reread: bool,
}

/// A loaded sequence file.
///
/// [`sequences`](Self::sequences) is the list the core door gets: index `i`
/// of a `SequenceConsumed { index: i, .. }` is [`entries()[i]`](Self::entries),
/// whose line [`mark_used(i)`](Self::mark_used) invalidates on disk. The list
/// stays as loaded (the core's indices refer to it) until the configuration
/// is reloaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceFile {
    path: PathBuf,
    entries: Vec<SequenceEntry>,
    /// The file as we last read or wrote it.
    snapshot: Vec<u8>,
}

impl SequenceFile {
    /// Reads and parses a sequence file.
    ///
    /// # Errors
    /// [`ConfigError::File`] (missing, not a regular file, over
    /// [`MAX_SEQUENCE_FILE_SIZE`]), a line that does
    /// not parse (with its number and column), a file without any sequence
    /// line at all ([`ConfigError::EmptySequenceFile`]). A one-time file
    /// whose lines are all used parses, with no entry.
    pub fn load(path: impl AsRef<Path>) -> Result<SequenceFile, ConfigError> {
        let path = path.as_ref();
        let bytes = read_limited(path, MAX_SEQUENCE_FILE_SIZE)?;
        Self::parse_bytes(bytes, path)
    }

    /// Parses the text of a sequence file (no I/O); `path` names it in
    /// errors and is where [`mark_used`](Self::mark_used) writes.
    ///
    /// # Errors
    /// As [`load`](Self::load), without the I/O ones.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<SequenceFile, ConfigError> {
        Self::parse_bytes(text.as_bytes().to_vec(), path.as_ref())
    }

    fn parse_bytes(bytes: Vec<u8>, path: &Path) -> Result<SequenceFile, ConfigError> {
        let (entries, used) = parse_entries(&bytes, path)?;
        if entries.is_empty() && used == 0 {
            return Err(ConfigError::EmptySequenceFile {
                path: path.to_owned(),
            });
        }
        Ok(SequenceFile {
            path: path.to_owned(),
            entries,
            snapshot: bytes,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The unused sequence lines, in file order.
    pub fn entries(&self) -> &[SequenceEntry] {
        &self.entries
    }

    /// The unused sequences, in file order (the core door's list).
    pub fn sequences(&self) -> Vec<Vec<Step>> {
        self.entries.iter().map(|e| e.steps.clone()).collect()
    }

    /// The 1-based line of sequence `index`.
    pub fn line_of(&self, index: usize) -> Option<usize> {
        self.entries.get(index).map(|e| e.line)
    }

    /// Marks sequence `index` used on disk: writes `#` over its line's first
    /// byte, as knockd does, but crash-safe: the new content goes to a
    /// temporary file in the same directory, which is fsynced and renamed
    /// over the original (following a symlink), then the directory is
    /// fsynced. Permissions (and, where allowed, ownership) are kept.
    ///
    /// If the file changed on disk since it was read (an edit, knockd or
    /// another copy of us), it is re-read and the sequence located again (an
    /// unused line with the same steps, preferably on the same line number)
    /// instead of clobbering the edit.
    ///
    /// # Errors
    /// [`ConfigError::NoSuchSequence`] for a bad index,
    /// [`ConfigError::SequenceGone`] when the sequence is no longer an
    /// unused line of the file (nothing is written), a changed file that no
    /// longer parses, [`ConfigError::File`] when it can no longer be read
    /// (or is no longer a regular file), and [`ConfigError::Io`] writing it.
    pub fn mark_used(&mut self, index: usize) -> Result<Marked, ConfigError> {
        let Some(target) = self.entries.get(index) else {
            return Err(ConfigError::NoSuchSequence {
                path: self.path.clone(),
                index,
                len: self.entries.len(),
            });
        };
        let target = target.clone();
        self.mark(&target)
    }

    /// Marks the unused line holding `steps` used on disk, as
    /// [`mark_used`](Self::mark_used) does (the line where it was loaded if
    /// it is still there, else another unused line with the same steps).
    ///
    /// # Errors
    /// As [`mark_used`](Self::mark_used); [`ConfigError::SequenceGone`] when
    /// no unused line of the file holds `steps`.
    pub fn mark_sequence(&mut self, steps: &[Step]) -> Result<Marked, ConfigError> {
        let target = match self.entries.iter().find(|e| e.steps == steps) {
            Some(e) => e.clone(),
            None => SequenceEntry {
                line: 0,
                offset: 0,
                steps: steps.to_vec(),
            },
        };
        self.mark(&target)
    }

    /// Whether [`mark_used`](Self::mark_used) could write the file now: the
    /// file opens for writing and its directory takes the temporary file
    /// (a read-only filesystem, a read-only file or a directory we may not
    /// write is refused here rather than when a sequence is used).
    ///
    /// # Errors
    /// [`ConfigError::Io`] naming the file or directory and the cause.
    pub fn check_writable(&self) -> Result<(), ConfigError> {
        check_writable(&self.path)
    }

    fn mark(&mut self, target: &SequenceEntry) -> Result<Marked, ConfigError> {
        let current = read_limited(&self.path, MAX_SEQUENCE_FILE_SIZE)?;
        let reread = current != self.snapshot;
        let (on_disk, _) = parse_entries(&current, &self.path)?;
        let found = on_disk
            .iter()
            .find(|e| e.line == target.line && e.steps == target.steps)
            .or_else(|| on_disk.iter().find(|e| e.steps == target.steps));
        let Some(found) = found else {
            return Err(ConfigError::SequenceGone {
                path: self.path.clone(),
                line: target.line,
                sequence: sequence_to_string(&target.steps),
            });
        };
        let line = found.line;
        let mut new = current;
        if let Some(b) = new.get_mut(found.offset) {
            *b = b'#';
        }
        write_atomically(&self.path, &new)?;
        self.snapshot = new;
        Ok(Marked { line, reread })
    }
}

/// The unused entries and the count of used (`#`) lines.
fn parse_entries(bytes: &[u8], path: &Path) -> Result<(Vec<SequenceEntry>, usize), ConfigError> {
    let mut entries = Vec::new();
    let mut used = 0;
    let mut offset = 0;
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let start = offset;
        offset += raw.len() + 1;
        let Ok(line) = std::str::from_utf8(raw) else {
            return Err(ConfigError::NotText {
                path: path.to_owned(),
                line: line_no,
            });
        };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('#') {
            used += 1;
            continue;
        }
        let lead = line.chars().take_while(|c| c.is_whitespace()).count();
        let at = Location::at(path, line_no, lead + 1);
        let steps = parse_sequence(trimmed, &at, "sequence file")?;
        entries.push(SequenceEntry {
            line: line_no,
            offset: start,
            steps,
        });
    }
    Ok((entries, used))
}

/// Reads a whole regular file of at most `max` bytes
/// ([`read_regular_file`](crate::read_regular_file)).
pub(crate) fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>, ConfigError> {
    crate::file::read_regular_file(path, max).map_err(|source| ConfigError::File {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::write;
    use std::fs;

    #[test]
    fn parses_lines_with_leading_space_and_skips_used_ones() {
        let f = SequenceFile::parse(
            "# header\n 80:tcp,443:tcp,53:udp\n\n#2000,3000\n 7000\r\n",
            "/x",
        )
        .unwrap();
        assert_eq!(
            f.sequences(),
            vec![
                vec![Step::tcp(80), Step::tcp(443), Step::udp(53)],
                vec![Step::tcp(7000)]
            ]
        );
        assert_eq!(f.line_of(0), Some(2));
        assert_eq!(f.line_of(1), Some(5));
        assert_eq!(f.entries()[1].offset, 44);
    }

    #[test]
    fn bad_line_names_file_line_and_column() {
        let err = SequenceFile::parse(" 80:tcp\n 90,0,100\n", "/etc/seq").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/seq:2:5: "), "{msg}");
        assert!(msg.contains("\"0\"") && msg.contains("port 0"), "{msg}");
    }

    #[test]
    fn empty_file_is_an_error_but_all_used_is_not() {
        let err = SequenceFile::parse("\n# only a comment? no: a used line counts\n", "/s");
        assert!(err.is_ok());
        let err = SequenceFile::parse("\n  \n", "/etc/empty").unwrap_err();
        assert!(matches!(err, ConfigError::EmptySequenceFile { .. }));
        assert!(err.to_string().contains("/etc/empty"), "{err}");
    }

    #[test]
    fn missing_file_names_it() {
        let err = SequenceFile::load("/nonexistent/knock-rs/seq").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/knock-rs/seq"),
            "{err}"
        );
    }

    #[test]
    fn mark_used_writes_hash_over_first_byte_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "ots", " 1000,2000\n 3000,4000:udp\n 5000\n");
        let mut f = SequenceFile::load(&p).unwrap();
        assert_eq!(
            f.mark_used(0).unwrap(),
            Marked {
                line: 1,
                reread: false
            }
        );
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "#1000,2000\n 3000,4000:udp\n 5000\n"
        );
        assert_eq!(
            f.mark_used(1).unwrap(),
            Marked {
                line: 2,
                reread: false
            }
        );
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "#1000,2000\n#3000,4000:udp\n 5000\n"
        );
        // No temporary file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // Reloading gives the remaining sequence only.
        assert_eq!(
            SequenceFile::load(&p).unwrap().sequences(),
            vec![vec![Step::tcp(5000)]]
        );
        assert!(matches!(
            f.mark_used(7),
            Err(ConfigError::NoSuchSequence {
                index: 7,
                len: 3,
                ..
            })
        ));
    }

    #[test]
    fn mark_used_rereads_a_file_changed_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "ots", " 1000\n 2000\n 3000\n");
        let mut f = SequenceFile::load(&p).unwrap();
        // An admin prepends a comment and appends a line while we run.
        fs::write(&p, "# rotated\n 1000\n 2000\n 3000\n 4000\n").unwrap();
        assert_eq!(
            f.mark_used(1).unwrap(),
            Marked {
                line: 3,
                reread: true
            }
        );
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "# rotated\n 1000\n#2000\n 3000\n 4000\n"
        );
        // Someone removes 3000: we refuse to mark anything.
        fs::write(&p, "# rotated\n 1000\n#2000\n 4000\n").unwrap();
        let err = f.mark_used(2).unwrap_err();
        assert!(
            matches!(err, ConfigError::SequenceGone { line: 3, .. }),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "# rotated\n 1000\n#2000\n 4000\n"
        );
    }

    #[cfg(unix)]
    #[test]
    fn mark_used_keeps_permissions_and_follows_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "real", " 1000\n");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let mut f = SequenceFile::load(&link).unwrap();
        f.mark_used(0).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&p).unwrap(), "#1000\n");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }
}
