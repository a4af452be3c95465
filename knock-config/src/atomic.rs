//! Files replaced whole, crash-safely: the engine's state, one-time
//! sequence files.
//!
//! A write goes to a temporary file in the same directory, which is then
//! renamed over the file: readers see the old content or the new, never a
//! mix. [`AtomicFile`] resolves the path once (symlinks followed) for a
//! file written again and again; [`write_atomically`] and
//! [`replace_atomically`] resolve it at each call.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::file::{FileError, FileKind};

/// A file replaced whole, crash-safely ([`AtomicFile::write`],
/// [`AtomicFile::replace`]), with its path resolved once, when it is made:
/// symlinks are followed then, not at each write, so a file written often
/// (the daemon's state, at every open) costs no path resolution per write.
/// Writes go where the path pointed at that time, even if a symlink on it
/// changes later.
///
/// An existing file keeps its permissions (and, where allowed, its owner);
/// a new one gets the process's defaults. An existing path that is not a
/// regular file (a FIFO, a device, a directory) is left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AtomicFile {
    /// The file (symlinks followed).
    target: PathBuf,
    /// Its directory.
    dir: PathBuf,
    /// Our temporary file there (its name has our pid).
    tmp: PathBuf,
}

impl AtomicFile {
    /// Resolves `path`: the file it names, following symlinks; for a file
    /// that does not exist yet, the file of that name in its directory
    /// (resolved the same way, if it exists).
    ///
    /// # Errors
    /// [`ConfigError::Io`] when the path cannot be resolved for another
    /// reason than a missing file or directory (a symlink loop, a
    /// directory we may not search).
    pub fn new(path: impl AsRef<Path>) -> Result<AtomicFile, ConfigError> {
        let path = path.as_ref();
        let name = path.file_name();
        let target = match fs::canonicalize(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // The file (or its directory) is missing: resolve the
                // directory if it is there, keep the name as given.
                let parent = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                match (fs::canonicalize(parent), name) {
                    (Ok(d), Some(n)) => d.join(n),
                    _ => path.to_owned(),
                }
            }
            Err(e) => return Err(io("cannot resolve", path)(e)),
        };
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.knock-rs-{}.tmp", std::process::id()));
        Ok(AtomicFile { target, dir, tmp })
    }

    /// The file written: the path given to [`AtomicFile::new`], resolved.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Replaces the file's content (or creates it) durably: the temporary
    /// file is fsynced before the rename, the directory after it. A power
    /// loss then leaves the new content.
    ///
    /// # Errors
    /// [`ConfigError::Io`] naming the step and the file;
    /// [`ConfigError::File`] for an existing path that is not a regular file.
    pub fn write(&self, bytes: &[u8]) -> Result<(), ConfigError> {
        self.put(bytes, true)
    }

    /// [`AtomicFile::write`] without the fsyncs: readers, and this process
    /// after a crash, see the old content or the new, never a mix; a power
    /// loss may bring back the old content. For state whose loss in a power
    /// cut does no harm; it costs no wait for the disk.
    ///
    /// # Errors
    /// As [`AtomicFile::write`].
    pub fn replace(&self, bytes: &[u8]) -> Result<(), ConfigError> {
        self.put(bytes, false)
    }

    /// Whether [`AtomicFile::write`] could replace (or create) the file
    /// now, without changing it: an existing file must be a regular file
    /// that opens for writing (a FIFO is refused, not waited on), and its
    /// directory must take the temporary file (created and removed again).
    ///
    /// # Errors
    /// [`ConfigError::Io`] naming the file or directory and the cause (a
    /// read-only filesystem, permissions); [`ConfigError::File`] for a path
    /// that is not a regular file.
    pub fn check_writable(&self) -> Result<(), ConfigError> {
        let AtomicFile { target, tmp, .. } = self;
        match crate::file::open_regular_for_write(target) {
            Ok(_) => {}
            Err(FileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(FileError::Io(e)) => return Err(io("cannot write", target)(e)),
            Err(source) => {
                return Err(ConfigError::File {
                    path: target.clone(),
                    source,
                })
            }
        }
        let probe = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp);
        match probe {
            Ok(_) => fs::remove_file(tmp).map_err(io("cannot remove", tmp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io("cannot create", tmp)(e)),
        }
    }

    /// The temporary file renamed over the target, fsynced (with the
    /// directory) if `sync`.
    fn put(&self, bytes: &[u8], sync: bool) -> Result<(), ConfigError> {
        let AtomicFile { target, dir, tmp } = self;
        let meta = match fs::metadata(target) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("cannot stat", target)(e)),
        };
        if let Some(meta) = meta.as_ref().filter(|m| !m.is_file()) {
            // Never replace a FIFO, a device or a directory with a file.
            return Err(ConfigError::File {
                path: target.clone(),
                source: FileError::NotRegular(FileKind::of(meta)),
            });
        }
        let open = || {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(tmp)
        };
        let mut file = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // A leftover of ours from a crash (the name has our pid).
                fs::remove_file(tmp).map_err(io("cannot remove stale", tmp))?;
                open().map_err(io("cannot create", tmp))?
            }
            Err(e) => return Err(io("cannot create", tmp)(e)),
        };
        let result = (|| {
            file.write_all(bytes).map_err(io("cannot write", tmp))?;
            if let Some(meta) = &meta {
                file.set_permissions(meta.permissions())
                    .map_err(io("cannot chmod", tmp))?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::MetadataExt;
                    // Best effort: only root may give the file away.
                    let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
                }
            }
            if sync {
                file.sync_all().map_err(io("cannot fsync", tmp))?;
            }
            fs::rename(tmp, target).map_err(io("cannot rename over", target))
        })();
        if result.is_err() {
            let _ = fs::remove_file(tmp);
        }
        result?;
        // The rename is durable once the directory is.
        if !sync {
            return Ok(());
        }
        if let Ok(d) = fs::File::open(dir) {
            d.sync_all().map_err(io("cannot fsync directory", dir))?;
        }
        Ok(())
    }
}

/// Replaces `path`'s content (or creates it) crash-safely and durably,
/// resolving the path now: [`AtomicFile::write`] of
/// [`AtomicFile::new`]`(path)`. For a file written once in a while (a
/// one-time sequence file); make an [`AtomicFile`] for one written often.
///
/// # Errors
/// As [`AtomicFile::new`] and [`AtomicFile::write`].
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    AtomicFile::new(path)?.write(bytes)
}

/// [`write_atomically`] without the fsyncs ([`AtomicFile::replace`]).
///
/// # Errors
/// As [`AtomicFile::new`] and [`AtomicFile::replace`].
pub fn replace_atomically(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    AtomicFile::new(path)?.replace(bytes)
}

/// Whether [`write_atomically`] could replace (or create) `path` now
/// ([`AtomicFile::check_writable`]).
///
/// # Errors
/// As [`AtomicFile::new`] and [`AtomicFile::check_writable`].
pub fn check_writable(path: &Path) -> Result<(), ConfigError> {
    AtomicFile::new(path)?.check_writable()
}

fn io(action: &'static str, p: &Path) -> impl FnOnce(std::io::Error) -> ConfigError {
    let p = p.to_owned();
    move |source| ConfigError::Io {
        path: p,
        action,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::write;

    /// Every way of writing: the per-call functions and a handle.
    type Put = fn(&Path, &[u8]) -> Result<(), ConfigError>;
    const PUTS: [Put; 4] = [
        write_atomically,
        replace_atomically,
        |p, b| AtomicFile::new(p)?.write(b),
        |p, b| AtomicFile::new(p)?.replace(b),
    ];

    #[test]
    fn write_atomically_creates_a_missing_file_and_replaces_an_existing_one() {
        for write in PUTS {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("state");
            write(&p, b"one\n").unwrap();
            assert_eq!(fs::read(&p).unwrap(), b"one\n");
            write(&p, b"two\n").unwrap();
            assert_eq!(fs::read(&p).unwrap(), b"two\n");
            // No temporary file is left beside it.
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
            let missing_dir = dir.path().join("no/such/dir/state");
            let e = write(&missing_dir, b"x").unwrap_err();
            assert!(matches!(e, ConfigError::Io { .. }), "{e}");
            assert!(e.to_string().contains("no/such/dir"), "{e}");
        }
    }

    #[test]
    fn a_handle_writes_again_and_again_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // Made before the file exists, as the daemon's at its first start.
        let f = AtomicFile::new(dir.path().join("state")).unwrap();
        for i in 0..10u8 {
            if i % 2 == 0 {
                f.write(&[i; 3]).unwrap();
            } else {
                f.replace(&[i; 3]).unwrap();
            }
            assert_eq!(fs::read(dir.path().join("state")).unwrap(), [i; 3]);
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        }
        f.check_writable().unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A handle writes where the path pointed when it was made: through a
    /// symlinked file and through a symlinked directory, even after the
    /// symlink is pointed elsewhere (a call of `write_atomically` follows
    /// the link of the moment).
    #[cfg(unix)]
    #[test]
    fn a_handle_writes_where_the_path_pointed_when_it_was_made() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["a", "b"] {
            fs::create_dir(d.join(sub)).unwrap();
            write(&d.join(sub), "state", "old\n");
        }
        // A symlinked file.
        symlink(d.join("a/state"), d.join("state")).unwrap();
        let f = AtomicFile::new(d.join("state")).unwrap();
        assert_eq!(f.path(), fs::canonicalize(d.join("a/state")).unwrap());
        fs::remove_file(d.join("state")).unwrap();
        symlink(d.join("b/state"), d.join("state")).unwrap();
        f.write(b"one\n").unwrap();
        assert_eq!(fs::read(d.join("a/state")).unwrap(), b"one\n");
        assert_eq!(fs::read(d.join("b/state")).unwrap(), b"old\n");
        assert!(fs::symlink_metadata(d.join("state"))
            .unwrap()
            .file_type()
            .is_symlink());
        write_atomically(&d.join("state"), b"now\n").unwrap();
        assert_eq!(fs::read(d.join("b/state")).unwrap(), b"now\n");
        assert_eq!(fs::read(d.join("a/state")).unwrap(), b"one\n");

        // A symlinked directory, the file not there yet (a state directory
        // that is a link, at the first start).
        symlink(d.join("a"), d.join("cur")).unwrap();
        let f = AtomicFile::new(d.join("cur/new")).unwrap();
        fs::remove_file(d.join("cur")).unwrap();
        symlink(d.join("b"), d.join("cur")).unwrap();
        f.replace(b"two\n").unwrap();
        assert_eq!(fs::read(d.join("a/new")).unwrap(), b"two\n");
        assert!(!d.join("b/new").exists());
        for sub in ["a", "b"] {
            assert_eq!(
                fs::read_dir(d.join(sub)).unwrap().count(),
                1 + usize::from(sub == "a")
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn check_writable_refuses_a_fifo_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(check_writable(&path).map_err(|e| e.to_string()));
        });
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("check_writable blocked on the FIFO");
        let e = result.unwrap_err();
        assert!(
            e.contains(&fifo.display().to_string()) && e.contains("not a regular file (a FIFO)"),
            "{e}"
        );
        let e = check_writable(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file (a directory)"), "{e}");
        // A regular file and a missing one are fine.
        let file = write(dir.path(), "f", "x");
        check_writable(&file).unwrap();
        check_writable(&dir.path().join("missing")).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn write_atomically_leaves_a_fifo_or_directory_alone() {
        use std::os::unix::fs::FileTypeExt;
        for write in PUTS {
            let dir = tempfile::tempdir().unwrap();
            let fifo = dir.path().join("fifo");
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            let e = write(&fifo, b"x").unwrap_err();
            assert!(e.to_string().contains("not a regular file (a FIFO)"), "{e}");
            assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
            let e = write(dir.path(), b"x").unwrap_err();
            assert!(
                e.to_string().contains("not a regular file (a directory)"),
                "{e}"
            );
            // Nothing else was created.
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        }
        // A handle made while the path was a file refuses what replaced it.
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "state", "x");
        let f = AtomicFile::new(&p).unwrap();
        fs::remove_file(&p).unwrap();
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = f.write(b"y").unwrap_err();
        assert!(e.to_string().contains("not a regular file (a FIFO)"), "{e}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
