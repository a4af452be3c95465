//! knockd's log, with levels: the log file, syslog and stderr.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use super::DaemonError;
use crate::engine::Level;

/// knockd's log: `[YYYY-MM-DD HH:MM] msg` lines in LogFile, syslog, and
/// `tracing` (whose default filter puts warnings and errors on stderr).
///
/// Log-file lines are buffered: a flood of first knocks (one `Stage 1` line
/// each) must not cost a `write(2)` per packet. Buffered lines reach the file
/// within [`Logger::FLUSH_AFTER`]: the daemon's loop wakes for
/// [`Logger::flush_deadline`] (once, not periodically) and flushes at exit;
/// warnings and errors are flushed at once.
pub struct Logger {
    file: Option<std::io::BufWriter<std::fs::File>>,
    syslog: Option<UnixDatagram>,
    unflushed_since: Option<Instant>,
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
        if let Some(f) = &mut self.file {
            let stamp = chrono::Local::now().format("%Y-%m-%d %H:%M");
            let _ = writeln!(f, "[{stamp}] {tag}{msg}");
            if level <= Level::Warn {
                self.flush();
            } else {
                match self.unflushed_since {
                    None => self.unflushed_since = Some(Instant::now()),
                    Some(t) if t.elapsed() >= Self::FLUSH_AFTER => self.flush(),
                    Some(_) => {}
                }
            }
        }
        if let Some(s) = &self.syslog {
            // LOG_DAEMON with the line's priority.
            let _ = s.send(format!("<{prio}>knockd: {tag}{msg}").as_bytes());
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
        if self.flush_deadline().is_some_and(|t| t <= Instant::now()) {
            self.flush();
        }
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        self.flush();
    }
}
