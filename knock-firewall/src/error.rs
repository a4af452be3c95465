//! Errors of the sinks.

use std::io;

/// What went wrong, and for which grant, door or address.
///
/// `what` names the operation and its object, e.g.
/// ``open grant#3 of door `ssh` for 198.18.0.2``; the daemon logs the error
/// and goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program the sink needs (`iptables`, `ip6tables`, `/bin/sh`) is not installed.
    #[error("{what}: `{program}` not found (is it installed?)")]
    MissingBinary {
        /// The operation.
        what: String,
        /// The program.
        program: String,
    },
    /// The kernel or a program refused for lack of privilege (CAP_NET_ADMIN).
    #[error("{what}: permission denied ({detail})")]
    PermissionDenied {
        /// The operation.
        what: String,
        /// The program's or kernel's words.
        detail: String,
    },
    /// A firewall program failed.
    #[error("{what}: {program} failed: {detail}")]
    Program {
        /// The operation.
        what: String,
        /// The program.
        program: String,
        /// Its stderr or exit status.
        detail: String,
    },
    /// The kernel rejected a netlink request.
    #[error("{what}: kernel error: {source}")]
    Kernel {
        /// The operation.
        what: String,
        /// The errno the kernel returned.
        #[source]
        source: io::Error,
    },
    /// The command queue is full: the burst is larger than the configured bound.
    #[error("{what}: command queue full ({capacity} waiting), command dropped")]
    QueueFull {
        /// The job's [`Job::what`](crate::Job::what).
        what: String,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The grant names a door this sink was not configured with.
    #[error("{what}: unknown door `{door}`")]
    UnknownDoor {
        /// The operation.
        what: String,
        /// The door's name.
        door: String,
    },
    /// The sink cannot do this operation (e.g. an address family it was configured without).
    #[error("{what}: not supported by the {sink} sink")]
    Unsupported {
        /// The operation.
        what: String,
        /// The sink's name.
        sink: &'static str,
    },
    /// A bad configuration value (e.g. a table or chain name).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Another I/O error (spawning a thread or process, a socket).
    #[error("{what}: {source}")]
    Io {
        /// The operation.
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Classifies an I/O error from spawning `program` or talking to the kernel.
    pub(crate) fn from_io(what: String, program: &str, e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::NotFound => Error::MissingBinary {
                what,
                program: program.to_owned(),
            },
            io::ErrorKind::PermissionDenied => Error::PermissionDenied {
                what,
                detail: e.to_string(),
            },
            _ => Error::Io { what, source: e },
        }
    }

    /// Classifies the stderr of a failed firewall program.
    pub(crate) fn from_program(what: String, program: &str, detail: String) -> Error {
        let lower = detail.to_ascii_lowercase();
        if lower.contains("permission denied") || lower.contains("you must be root") {
            Error::PermissionDenied { what, detail }
        } else if lower.contains("no such file or directory") && lower.contains(program) {
            Error::MissingBinary {
                what,
                program: program.to_owned(),
            }
        } else {
            Error::Program {
                what,
                program: program.to_owned(),
                detail,
            }
        }
    }

    /// Classifies an errno from netlink.
    #[cfg_attr(not(feature = "nftables"), allow(dead_code))]
    pub(crate) fn from_errno(what: String, errno: i32) -> Error {
        let source = io::Error::from_raw_os_error(errno);
        if source.kind() == io::ErrorKind::PermissionDenied {
            Error::PermissionDenied {
                what,
                detail: source.to_string(),
            }
        } else {
            Error::Kernel { what, source }
        }
    }
}
