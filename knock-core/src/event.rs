//! What the matcher consumes: one knock as seen on the wire.

use core::fmt;
use core::str::FromStr;
use std::net::IpAddr;

use crate::time::Timestamp;

/// The transport protocol of a knock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Proto {
    /// TCP: a knock is normally a SYN.
    Tcp,
    /// UDP: a knock is one datagram.
    Udp,
}

impl Proto {
    /// `"tcp"` or `"udp"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Proto`] or [`TcpFlags`] name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {text:?} (expected {expected})")]
pub struct UnknownName {
    /// What was being parsed (`"protocol"`, `"tcp flag"`).
    pub what: &'static str,
    /// The text that was not recognised.
    pub text: String,
    /// The accepted names.
    pub expected: &'static str,
}

impl FromStr for Proto {
    type Err = UnknownName;
    /// Case-insensitive `tcp` or `udp`, as knockd accepts them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("tcp") {
            Ok(Proto::Tcp)
        } else if s.eq_ignore_ascii_case("udp") {
            Ok(Proto::Udp)
        } else {
            Err(UnknownName {
                what: "protocol",
                text: s.to_owned(),
                expected: "tcp or udp",
            })
        }
    }
}

/// A set of TCP header flags, with the bit layout of the TCP header's flag byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TcpFlags(u8);

impl TcpFlags {
    /// No flag.
    pub const EMPTY: TcpFlags = TcpFlags(0);
    /// FIN.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// SYN.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// RST.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// PSH.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// ACK.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// URG.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECE.
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// CWR.
    pub const CWR: TcpFlags = TcpFlags(0x80);

    const NAMES: [(&'static str, TcpFlags); 8] = [
        ("fin", TcpFlags::FIN),
        ("syn", TcpFlags::SYN),
        ("rst", TcpFlags::RST),
        ("psh", TcpFlags::PSH),
        ("ack", TcpFlags::ACK),
        ("urg", TcpFlags::URG),
        ("ece", TcpFlags::ECE),
        ("cwr", TcpFlags::CWR),
    ];

    /// Flags from the raw flag byte of a TCP header.
    pub const fn from_bits(bits: u8) -> Self {
        TcpFlags(bits)
    }

    /// The raw flag byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag of `other` is set in `self`.
    pub const fn is_disjoint(self, other: TcpFlags) -> bool {
        self.0 & other.0 == 0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags set in either.
    pub const fn union(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | other.0)
    }

    /// The flags set in both.
    pub const fn intersection(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & other.0)
    }

    /// The flag with this (case-insensitive) name: fin, syn, rst, psh, ack, urg, ece, cwr.
    pub fn from_name(name: &str) -> Result<TcpFlags, UnknownName> {
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, f)| f)
            .ok_or_else(|| UnknownName {
                what: "tcp flag",
                text: name.to_owned(),
                expected: "fin, syn, rst, psh, ack, urg, ece or cwr",
            })
    }

    /// The names of the flags that are set, in header order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .iter()
            .filter(move |(_, f)| self.contains(*f))
            .map(|&(n, _)| n)
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        self.union(rhs)
    }
}

impl fmt::Display for TcpFlags {
    /// Comma-separated lowercase names, e.g. `syn,ack`; empty for no flag.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// One knock: a TCP segment or UDP datagram as seen on the wire.
///
/// Capture backends build these from packets; the matcher only ever sees
/// this `Copy` value, never packet bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Event {
    /// The knocker's address.
    pub src: IpAddr,
    /// The address the knock was sent to.
    pub dst: IpAddr,
    /// TCP or UDP.
    pub proto: Proto,
    /// The destination port.
    pub dst_port: u16,
    /// The TCP flags; empty for UDP.
    pub tcp_flags: TcpFlags,
    /// When the packet was captured (informational: the matcher times
    /// everything by the `now` passed to `handle_event`).
    pub time: Timestamp,
}

impl Event {
    /// A TCP knock with the given flags.
    pub fn tcp(
        src: IpAddr,
        dst: IpAddr,
        dst_port: u16,
        tcp_flags: TcpFlags,
        time: Timestamp,
    ) -> Self {
        Event {
            src,
            dst,
            proto: Proto::Tcp,
            dst_port,
            tcp_flags,
            time,
        }
    }

    /// A UDP knock.
    pub fn udp(src: IpAddr, dst: IpAddr, dst_port: u16, time: Timestamp) -> Self {
        Event {
            src,
            dst,
            proto: Proto::Udp,
            dst_port,
            tcp_flags: TcpFlags::EMPTY,
            time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_parses_case_insensitively_and_rejects_others() {
        assert_eq!("TCP".parse::<Proto>(), Ok(Proto::Tcp));
        assert_eq!("udp".parse::<Proto>(), Ok(Proto::Udp));
        let err = "icmp".parse::<Proto>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown protocol \"icmp\" (expected tcp or udp)"
        );
    }

    #[test]
    fn flags_names_and_display() {
        let f = TcpFlags::SYN | TcpFlags::ACK;
        assert_eq!(f.to_string(), "syn,ack");
        assert_eq!(TcpFlags::from_name("Urg"), Ok(TcpFlags::URG));
        assert!(TcpFlags::from_name("xmas").is_err());
        assert!(f.contains(TcpFlags::SYN));
        assert!(!f.is_disjoint(TcpFlags::ACK));
        assert!(f.is_disjoint(TcpFlags::FIN | TcpFlags::RST));
        assert_eq!(TcpFlags::from_bits(0x12), f);
    }
}
