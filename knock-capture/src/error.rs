//! The crate's error type.

use std::io;

/// Why a source could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// A system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done (`"bind kn0"`, `"attach filter"`).
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No interface with this name.
    #[error("no interface named {0:?}")]
    NoSuchInterface(String),
    /// The interface exists but is down (administratively: `ip link set
    /// NAME up` brings it back).
    #[error("interface {0:?} is down")]
    InterfaceDown(String),
    /// The process may not capture: opening an `AF_PACKET` socket needs
    /// `CAP_NET_RAW` in the network namespace's user namespace.
    #[error("{op}: {source} (capturing needs CAP_NET_RAW: run as root or grant the capability)")]
    NotPermitted {
        /// What was being done.
        op: String,
        /// The OS error (`EPERM` or `EACCES`).
        #[source]
        source: io::Error,
    },
    /// The interface's hardware type has no parser here.
    #[error("interface {name:?} has unsupported hardware type {arphrd}")]
    UnsupportedInterface {
        /// The interface.
        name: String,
        /// Its `ARPHRD_*` type.
        arphrd: u16,
    },
    /// A capture file could not be read.
    #[error("capture file: {0}")]
    File(#[from] pcap_file::PcapError),
    /// A capture file uses a link type with no parser here.
    #[error("unsupported capture link type {0}")]
    UnsupportedLinkType(u32),
    /// The generated filter is longer than the kernel accepts.
    #[error("filter too long ({0} instructions)")]
    FilterTooLong(usize),
}

impl CaptureError {
    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Self {
        CaptureError::Io {
            op: op.into(),
            source,
        }
    }

    /// Whether trying again later may succeed with no change to the
    /// configuration or the privileges: the interface is missing (not
    /// created yet, renamed, a typo), down, or went away while read. Every
    /// other failure (no `CAP_NET_RAW`, an unsupported link type, a filter
    /// the kernel refuses) lasts until someone changes something.
    pub fn may_recover(&self) -> bool {
        match self {
            CaptureError::NoSuchInterface(_) | CaptureError::InterfaceDown(_) => true,
            CaptureError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENETDOWN | libc::ENODEV | libc::ENXIO)
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_down_interfaces_may_recover_the_rest_lasts() {
        let os = |errno| io::Error::from_raw_os_error(errno);
        assert!(CaptureError::NoSuchInterface("typo0".into()).may_recover());
        assert!(CaptureError::InterfaceDown("kx0".into()).may_recover());
        assert!(CaptureError::io("recv kx0", os(libc::ENETDOWN)).may_recover());
        assert!(CaptureError::io("bind kx0", os(libc::ENODEV)).may_recover());
        assert!(!CaptureError::io("SO_ATTACH_FILTER", os(libc::EINVAL)).may_recover());
        let denied = CaptureError::NotPermitted {
            op: "socket(AF_PACKET)".into(),
            source: os(libc::EPERM),
        };
        assert!(!denied.may_recover());
        assert!(denied.to_string().contains("CAP_NET_RAW"), "{denied}");
        let unsupported = CaptureError::UnsupportedInterface {
            name: "ip6gre0".into(),
            arphrd: 823,
        };
        assert!(!unsupported.may_recover());
    }
}
