//! The value a sink acts on: one grant of one door to one knocker.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use knock_core::{Step, Timestamp};

/// One grant: open `ports` of door `door` to `src` (or its network, see
/// [`Grant::with_prefix`]) until `expires`.
///
/// Expiry is wall-clock time ([`SystemTime`]) because it outlives the
/// process: it is written into iptables rule comments (read back by
/// [`FirewallSink::reconcile`](crate::FirewallSink::reconcile) after a
/// restart) and becomes the timeout of nftables set elements. Use [`Grant::expiry_from`] to turn the matcher's
/// [`Timestamp`] into one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    /// The door's name (from the config section).
    pub door: String,
    /// The knocker's address, as parsed from the packet header.
    pub src: IpAddr,
    /// The grant's identity, chosen by whoever makes the grant (unique per
    /// door and source while the grant lasts); written into iptables rule
    /// comments and shown as `grant#N` in messages.
    pub id: u64,
    /// The ports to open (the door's `open` ports).
    pub ports: Vec<Step>,
    /// When the grant ends; `None`: never (knockd's door without `stop_command`).
    pub expires: Option<SystemTime>,
    /// Prefix width for IPv4 sources (32: the address alone; 24: its /24).
    pub prefix_v4: u8,
    /// Prefix width for IPv6 sources (128: the address alone; 64: its /64).
    pub prefix_v6: u8,
}

impl Grant {
    /// A grant for `src` alone (/32 or /128) that never expires.
    pub fn new(door: impl Into<String>, src: IpAddr, id: u64, ports: Vec<Step>) -> Self {
        Grant {
            door: door.into(),
            src,
            id,
            ports,
            expires: None,
            prefix_v4: 32,
            prefix_v6: 128,
        }
    }

    /// Sets the wall-clock expiry.
    pub fn with_expiry(mut self, expires: Option<SystemTime>) -> Self {
        self.expires = expires;
        self
    }

    /// Covers the knocker's network instead of its address alone (values are
    /// clamped to 0..=32 and 0..=128).
    pub fn with_prefix(mut self, v4: u8, v6: u8) -> Self {
        self.prefix_v4 = v4.min(32);
        self.prefix_v6 = v6.min(128);
        self
    }

    /// Converts the matcher's `until` into wall-clock time, given one moment
    /// known on both clocks (`now` on the matcher's clock is `wall_now`).
    pub fn expiry_from(until: Timestamp, now: Timestamp, wall_now: SystemTime) -> SystemTime {
        wall_now + until.saturating_duration_since(now)
    }

    /// The prefix width that applies to [`Grant::src`].
    pub fn prefix_len(&self) -> u8 {
        match self.src {
            IpAddr::V4(_) => self.prefix_v4.min(32),
            IpAddr::V6(_) => self.prefix_v6.min(128),
        }
    }

    /// The network base address: `src` with the host bits cleared.
    pub fn network(&self) -> IpAddr {
        mask(self.src, self.prefix_len())
    }

    /// `network/prefix_len`, as iptables and nft write it.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network(), self.prefix_len())
    }

    /// Time left until expiry at `now` (`None`: never expires; zero: already over).
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        self.expires
            .map(|e| e.duration_since(now).unwrap_or(Duration::ZERO))
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "grant#{} of door `{}` for {}",
            self.id, self.door, self.src
        )
    }
}

/// `addr` with all but the first `len` bits cleared.
pub fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let len = u32::from(len.min(32));
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let len = u32::from(len.min(128));
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// Seconds since the Unix epoch (0 for times before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_masks_host_bits() {
        let g = Grant::new("ssh", "198.18.0.77".parse().unwrap(), 1, vec![]).with_prefix(24, 64);
        assert_eq!(g.cidr(), "198.18.0.0/24");
        let g6 = Grant::new("ssh", "2001:db8::1:2".parse().unwrap(), 1, vec![]).with_prefix(24, 64);
        assert_eq!(g6.cidr(), "2001:db8::/64");
        let plain = Grant::new("ssh", "2001:db8::2".parse().unwrap(), 1, vec![]);
        assert_eq!(plain.cidr(), "2001:db8::2/128");
        assert_eq!(mask("1.2.3.4".parse().unwrap(), 0).to_string(), "0.0.0.0");
    }

    #[test]
    fn expiry_maps_clocks() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_000);
        let e = Grant::expiry_from(Timestamp::from_secs(15), Timestamp::from_secs(5), wall);
        assert_eq!(unix_secs(e), 1_010);
        let g = Grant::new("d", "1.2.3.4".parse().unwrap(), 1, vec![]).with_expiry(Some(e));
        assert_eq!(g.remaining(wall), Some(Duration::from_secs(10)));
        assert_eq!(
            g.remaining(e + Duration::from_secs(3)),
            Some(Duration::ZERO)
        );
    }
}
