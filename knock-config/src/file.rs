//! Reading the files a configuration names: the configuration itself,
//! sequence files, one-time sequence files and secret files all go through
//! [`read_regular_file`].
//!
//! Only a regular file is read, and never more than a limit. The type is
//! checked on the descriptor that was opened (not on the path beforehand,
//! which could be swapped in between), and the open itself cannot block: a
//! FIFO is opened non-blocking, seen to be a FIFO and closed, where a plain
//! `open` would wait for a writer forever (hanging `--check`, start-up or a
//! reload). The size is bounded by reading at most one byte past the limit,
//! not by trusting the size the file claims: `/dev/zero` claims 0 bytes and
//! a file being appended to grows after `stat`.

use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::path::Path;

/// Why a file named by a configuration cannot be read. It does not name
/// the file: the error wrapping it does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// Opening or reading failed (missing, permissions, I/O error...).
    #[error("cannot read it: {0}")]
    Io(#[source] std::io::Error),
    /// A FIFO, a device, a directory...: never read.
    #[error("not a regular file ({0})")]
    NotRegular(FileKind),
    /// More bytes than the limit (without reading past it).
    #[error("larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
}

impl FileError {
    /// The OS error, for [`FileError::Io`].
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            FileError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// What a path that is not a regular file turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A named pipe.
    Fifo,
    /// A character device (`/dev/zero`, a terminal...).
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix socket.
    Socket,
    /// Anything else.
    Other,
}

impl FileKind {
    /// What `meta` describes.
    pub(crate) fn of(meta: &Metadata) -> FileKind {
        let t = meta.file_type();
        if t.is_dir() {
            return FileKind::Directory;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if t.is_fifo() {
                return FileKind::Fifo;
            }
            if t.is_char_device() {
                return FileKind::CharDevice;
            }
            if t.is_block_device() {
                return FileKind::BlockDevice;
            }
            if t.is_socket() {
                return FileKind::Socket;
            }
        }
        FileKind::Other
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Socket => "a socket",
            FileKind::Other => "not a file",
        })
    }
}

/// Reads the whole of `path`, which must be a regular file (symlinks are
/// followed) of at most `max` bytes. Never blocks on a FIFO and never
/// holds more than `max + 1` bytes.
///
/// # Errors
/// [`FileError`]: it cannot be opened or read, it is not a regular file,
/// or it has more than `max` bytes.
pub fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let (file, _) = open_regular(path)?;
    read_at_most(file, max)
}

/// Opens `path` for reading without blocking, and checks on the opened
/// descriptor that it is a regular file; also returns its metadata.
pub(crate) fn open_regular(path: &Path) -> Result<(File, Metadata), FileError> {
    let mut options = OpenOptions::new();
    options.read(true);
    open_checked(path, &mut options)
}

/// Opens an existing `path` for writing (without truncating it or blocking)
/// and checks on the opened descriptor that it is a regular file.
pub(crate) fn open_regular_for_write(path: &Path) -> Result<File, FileError> {
    // A FIFO without a reader fails a non-blocking open for writing with
    // ENXIO ("No such device or address"); look first to say what it is.
    // The check on the descriptor below is the one that counts.
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            return Err(FileError::NotRegular(FileKind::of(&meta)));
        }
    }
    let mut options = OpenOptions::new();
    options.write(true);
    open_checked(path, &mut options).map(|(file, _)| file)
}

fn open_checked(path: &Path, options: &mut OpenOptions) -> Result<(File, Metadata), FileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO returns at once instead of waiting for
        // the other end (reads and writes of a regular file ignore the
        // flag). O_NOCTTY: a terminal named by mistake does not become ours.
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options.open(path).map_err(FileError::Io)?;
    let meta = file.metadata().map_err(FileError::Io)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular(FileKind::of(&meta)));
    }
    Ok((file, meta))
}

/// Reads `file` to its end, or fails once it has given more than `max`
/// bytes.
pub(crate) fn read_at_most(file: File, max: u64) -> Result<Vec<u8>, FileError> {
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(FileError::Io)?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge { max });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_up_to_the_limit_and_not_one_byte_more() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_regular_file(&p, 5).unwrap(), b"12345");
        let e = read_regular_file(&p, 4).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { max: 4 }), "{e:?}");
        assert_eq!(e.to_string(), "larger than 4 bytes");
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_regular_file(dir.path(), 10).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a directory)");
        let e = read_regular_file(Path::new("/dev/null"), 10).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a character device)");
        let e = read_regular_file(&dir.path().join("missing"), 10).unwrap_err();
        assert_eq!(
            e.io_error().map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound)
        );
        assert!(e.to_string().starts_with("cannot read it: "), "{e}");
    }
}
