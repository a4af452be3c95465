//! knockd's log, with levels: the log file, syslog and stderr.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use knock_capture::InterfaceEvent;

use super::DaemonError;
use crate::engine::Level;

/// knockd's log: `[YYYY-MM-DD HH:MM] msg` lines in LogFile, syslog, and
/// `tracing` (whose default filter puts warnings and errors on stderr).
///
/// Log-file lines are buffered: a flood of first knocks (one `Stage 1` line
/// each) must not cost a `write(2)` per packet. Buffered lines reach the file
/// within [`Logger::FLUSH_AFTER`]: the daemon's loop wakes for
/// [`Logger::flush_deadline`] (once, not periodically) and flushes at exit;
/// warnings and errors are flushed at once. Lines of one batch of knocks
/// take the batch's time (the clocks are read once per batch, not per
/// line), and the minute-resolution stamp is formatted once a minute.
///
/// What a flood may not write line by line (per-source stage and timeout
/// lines beyond a sustained rate) is decided before lines reach the
/// logger, by the engine ([`crate::engine::quiet`]); the logger writes what
/// it is given.
pub struct Logger {
    file: Option<std::io::BufWriter<std::fs::File>>,
    syslog: Option<UnixDatagram>,
    unflushed_since: Option<Instant>,
    /// The time of the daemon's current batch ([`Logger::set_now`]), used
    /// instead of reading the clocks for every line.
    now: Option<(Instant, Duration)>,
    /// The `[YYYY-MM-DD HH:MM]` stamp and the Unix minute it is for: the
    /// stamp has minute resolution, so it is formatted once a minute.
    stamp: (u64, String),
}

impl Logger {
    /// Opens the log file (appending) and/or the syslog socket.
    ///
    /// # Errors
    /// The log file cannot be opened.
    pub fn new(log_file: Option<&Path>, use_syslog: bool) -> Result<Logger, DaemonError> {
        let file = match log_file {
            Some(p) => Some(std::io::BufWriter::with_capacity(
                64 * 1024,
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| DaemonError::Log {
                        path: p.to_owned(),
                        source,
                    })?,
            )),
            None => None,
        };
        let syslog = if use_syslog {
            UnixDatagram::unbound()
                .and_then(|s| s.connect("/dev/log").map(|()| s))
                .map_err(|e| tracing::warn!("syslog unavailable: {e}"))
                .ok()
        } else {
            None
        };
        Ok(Logger {
            file,
            syslog,
            unflushed_since: None,
            now: None,
            stamp: (u64::MAX, String::new()),
        })
    }

    /// The longest a log-file line waits in the buffer.
    pub const FLUSH_AFTER: Duration = Duration::from_millis(200);

    /// Logs one line at info level.
    pub fn log(&mut self, msg: &str) {
        self.line(Level::Info, msg);
    }

    /// Logs one line at `level`.
    pub fn line(&mut self, level: Level, msg: &str) {
        let (prio, tag) = match level {
            Level::Error => {
                tracing::error!("{msg}");
                (27, "error: ")
            }
            Level::Warn => {
                tracing::warn!("{msg}");
                (28, "warning: ")
            }
            Level::Info => {
                tracing::info!("{msg}");
                (29, "")
            }
            Level::Debug => {
                tracing::debug!("{msg}");
                (31, "")
            }
        };
        if self.file.is_some() {
            let (mono, unix) = self.now();
            let minute = unix.as_secs() / 60;
            if self.stamp.0 != minute {
                self.stamp = (minute, stamp(unix));
            }
            if let Some(f) = &mut self.file {
                let _ = writeln!(f, "[{}] {tag}{msg}", self.stamp.1);
            }
            if level <= Level::Warn {
                self.flush();
            } else {
                match self.unflushed_since {
                    None => self.unflushed_since = Some(mono),
                    Some(t) if mono.saturating_duration_since(t) >= Self::FLUSH_AFTER => {
                        self.flush()
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(s) = &self.syslog {
            // LOG_DAEMON with the line's priority.
            let _ = s.send(format!("<{prio}>knockd: {tag}{msg}").as_bytes());
        }
    }

    /// Logs a change of a capture interface: a failure as a warning (an
    /// interface missing or down, expected back) or an error (unusable
    /// until someone acts), and the return as a warning too, so that the
    /// end of a warning reaches wherever the warning went (stderr at the
    /// default verbosity). One line per change: retries are not logged.
    pub fn interface(&mut self, ev: &InterfaceEvent) {
        match ev {
            InterfaceEvent::Down {
                name,
                error,
                may_recover: true,
            } => self.line(
                Level::Warn,
                &format!("not listening on {name}: {error}; listening once it is there and up"),
            ),
            InterfaceEvent::Down { name, error, .. } => self.line(
                Level::Error,
                &format!("cannot listen on {name}: {error}; retrying"),
            ),
            InterfaceEvent::Up { name } => {
                self.line(Level::Warn, &format!("listening on {name} (again)"))
            }
            other => self.line(
                Level::Warn,
                &format!("interface {}: {other:?}", other.name()),
            ),
        }
    }

    /// Logs why the daemon cannot start, as an error, and hands the error
    /// back (the caller exits; it need not print it again).
    pub fn fatal(&mut self, e: DaemonError) -> DaemonError {
        self.line(
            Level::Error,
            &format!("cannot start: {}", crate::error_line(&e)),
        );
        e
    }

    /// When buffered lines must be written (`None`: nothing buffered).
    pub fn flush_deadline(&self) -> Option<Instant> {
        self.unflushed_since.map(|t| t + Self::FLUSH_AFTER)
    }

    /// Writes buffered lines to the log file.
    pub fn flush(&mut self) {
        if let Some(f) = &mut self.file {
            if let Err(e) = f.flush() {
                tracing::error!("log file: {e}");
            }
        }
        self.unflushed_since = None;
    }

    pub(super) fn flush_if_due(&mut self) {
        let (mono, _) = self.now();
        if self.flush_deadline().is_some_and(|t| t <= mono) {
            self.flush();
        }
    }

    /// Lines from now on are of a batch handled at `mono` (Unix time
    /// `unix`), until [`Logger::clear_now`]: the clocks are not read per line.
    pub(super) fn set_now(&mut self, mono: Instant, unix: Duration) {
        self.now = Some((mono, unix));
    }

    /// Lines from now on read the clocks themselves.
    pub(super) fn clear_now(&mut self) {
        self.now = None;
    }

    /// The batch's time, or the clocks'.
    fn now(&self) -> (Instant, Duration) {
        self.now.unwrap_or_else(|| {
            (
                Instant::now(),
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            )
        })
    }
}

/// knockd's `YYYY-MM-DD HH:MM` in local time, for Unix time `unix`.
fn stamp(unix: Duration) -> String {
    let secs = i64::try_from(unix.as_secs()).unwrap_or(i64::MAX);
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(t) => t
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M")
            .to_string(),
        None => chrono::Local::now().format("%Y-%m-%d %H:%M").to_string(),
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        self.flush();
    }
}
