//! Doors: the compiled description of what opens what.

use core::fmt;
use core::time::Duration;
use std::net::IpAddr;

use crate::error::DoorError;
use crate::event::{Event, Proto, TcpFlags};

/// The longest sequence a door may have (knockd's limit).
pub const MAX_STEPS: usize = 32;

/// The longest `seq_timeout` a door may have.
pub const MAX_SEQ_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// knockd's default `seq_timeout`.
pub const DEFAULT_SEQ_TIMEOUT: Duration = Duration::from_secs(25);

/// One step of a sequence: a port and its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Step {
    /// TCP or UDP.
    pub proto: Proto,
    /// The destination port (1..=65535).
    pub port: u16,
}

impl Step {
    /// A TCP step.
    pub const fn tcp(port: u16) -> Self {
        Step {
            proto: Proto::Tcp,
            port,
        }
    }

    /// A UDP step.
    pub const fn udp(port: u16) -> Self {
        Step {
            proto: Proto::Udp,
            port,
        }
    }

    /// Whether `event` hits this step's port and protocol.
    #[inline]
    pub fn matches(&self, event: &Event) -> bool {
        self.port == event.dst_port && self.proto == event.proto
    }
}

impl fmt::Display for Step {
    /// knockd's syntax: `7000:tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.port, self.proto)
    }
}

/// A door's TCP flag filter (knockd's `tcpflags = syn,!ack`).
///
/// Flags in `set` must be set and flags in `clear` must be clear; other flags
/// do not matter. A TCP knock that fails the filter is ignored by the door:
/// it neither advances nor invalidates an attempt. UDP knocks always pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FlagFilter {
    /// Flags that must be set.
    pub set: TcpFlags,
    /// Flags that must be clear.
    pub clear: TcpFlags,
}

impl FlagFilter {
    /// The filter that accepts everything.
    pub const ANY: FlagFilter = FlagFilter {
        set: TcpFlags::EMPTY,
        clear: TcpFlags::EMPTY,
    };

    /// Whether `flags` pass the filter.
    pub const fn accepts(&self, flags: TcpFlags) -> bool {
        flags.contains(self.set) && flags.is_disjoint(self.clear)
    }

    /// Whether the filter accepts everything.
    pub const fn is_any(&self) -> bool {
        self.set.is_empty() && self.clear.is_empty()
    }
}

impl fmt::Display for FlagFilter {
    /// knockd's syntax: `syn,!ack`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (bang, flags) in [("", self.set), ("!", self.clear)] {
            for name in flags.names() {
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                write!(f, "{bang}{name}")?;
            }
        }
        Ok(())
    }
}

/// The sequences that open a door.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Sequences {
    /// Reusable sequences: any of them opens the door, as often as it is
    /// knocked. Usually one; a sequence file gives several.
    Reusable(Vec<Vec<Step>>),
    /// knockd's `one_time_sequences`: only `list[next]` is active; when it is
    /// used the matcher emits [`Decision::SequenceConsumed`](crate::Decision)
    /// and moves on. When none is left the door is disabled.
    OneTime {
        /// Every sequence of the file, in order.
        list: Vec<Vec<Step>>,
        /// The index of the active sequence.
        next: usize,
    },
    /// Time-derived sequences: `list[i]` is the sequence of time window
    /// `windows[i]` (at most [`WINDOW_SLOTS`] windows, no two equal modulo
    /// [`WINDOW_SLOTS`]). Any of them opens the door, each at most once: a
    /// window whose sequence opened is remembered (the last
    /// [`USED_WINDOWS`] per door) and refused from then on. The caller
    /// derives the sequences and replaces them as time passes with
    /// [`Matcher::set_windows`](crate::Matcher::set_windows); the matcher
    /// never reads a clock. May be empty (the door is dormant).
    Windowed {
        /// The window number of each sequence.
        windows: Vec<u64>,
        /// The sequences, one per window.
        list: Vec<Vec<Step>>,
    },
    /// No knock sequence: the door opens only when the caller says a
    /// request for it was authorized elsewhere
    /// ([`Matcher::handle_authorized`](crate::Matcher::handle_authorized)),
    /// e.g. a Single Packet Authorization packet that verified. Its grants
    /// live, extend and close like any door's.
    Authorized,
}

/// How many windows a [`Sequences::Windowed`] door holds at once (w-1, w, w+1).
pub const WINDOW_SLOTS: usize = 3;

/// How many used windows a windowed door remembers.
pub const USED_WINDOWS: usize = 8;

/// A door: a named set of sequences and the rules for knocking them.
///
/// Build one with [`Door::new`] or [`Door::one_time`] and the `with_*`
/// methods; the matcher validates it.
///
/// ```
/// use knock_core::{Door, Step};
/// use std::time::Duration;
///
/// let door = Door::new("openSSH", vec![Step::tcp(7000), Step::tcp(8000), Step::udp(9000)])
///     .with_seq_timeout(Duration::from_secs(10))
///     .with_grant_lifetime(Some(Duration::from_secs(30)));
/// assert_eq!(door.name, "openSSH");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Door {
    /// The door's name (knockd's section name).
    pub name: String,
    /// What opens it.
    pub sequences: Sequences,
    /// The whole sequence must be knocked within this time of its first knock.
    pub seq_timeout: Duration,
    /// TCP flag filter.
    pub tcp_flags: FlagFilter,
    /// Only knocks sent to this address count (knockd's `target`).
    pub target: Option<IpAddr>,
    /// How long a grant lasts: `Some` makes the matcher emit a
    /// [`Close`](crate::Decision::Close) that long after the
    /// [`Open`](crate::Decision::Open) (knockd's `cmd_timeout` with a
    /// `stop_command`); `None` opens without a close.
    pub grant_lifetime: Option<Duration>,
    /// Tolerate an immediate repeat of the step just matched (a
    /// retransmitted SYN) instead of invalidating the attempt.
    pub allow_repeat: bool,
    /// After an open, ignore this source's knocks on this door for this long.
    pub cooldown: Duration,
    /// Only knocks from these networks count; empty means everyone.
    pub from: Vec<ipnet::IpNet>,
    /// Sweep-proof matching: while an attempt at this door is in progress,
    /// any other TCP SYN (without ACK) or UDP datagram from the source (to the
    /// door's target, if it has one) invalidates it, not only the ports of
    /// some door. The listen set then asks for every SYN and datagram.
    pub strict: bool,
}

impl Door {
    /// A door opened by one reusable sequence, with knockd's defaults.
    pub fn new(name: impl Into<String>, sequence: Vec<Step>) -> Self {
        Self::with_sequences(name, Sequences::Reusable(vec![sequence]))
    }

    /// A door with one-time sequences, starting at the first.
    pub fn one_time(name: impl Into<String>, list: Vec<Vec<Step>>) -> Self {
        Self::with_sequences(name, Sequences::OneTime { list, next: 0 })
    }

    /// A door with the given sequences and knockd's defaults.
    pub fn with_sequences(name: impl Into<String>, sequences: Sequences) -> Self {
        Door {
            name: name.into(),
            sequences,
            seq_timeout: DEFAULT_SEQ_TIMEOUT,
            tcp_flags: FlagFilter::ANY,
            target: None,
            grant_lifetime: None,
            allow_repeat: false,
            cooldown: Duration::ZERO,
            from: Vec::new(),
            strict: false,
        }
    }

    /// A door of time-derived sequences, dormant until
    /// [`Matcher::set_windows`](crate::Matcher::set_windows) gives it some.
    pub fn windowed(name: impl Into<String>) -> Self {
        Self::with_sequences(
            name,
            Sequences::Windowed {
                windows: Vec::new(),
                list: Vec::new(),
            },
        )
    }

    /// Sets `seq_timeout`.
    pub fn with_seq_timeout(mut self, t: Duration) -> Self {
        self.seq_timeout = t;
        self
    }

    /// Sets the TCP flag filter.
    pub fn with_tcp_flags(mut self, f: FlagFilter) -> Self {
        self.tcp_flags = f;
        self
    }

    /// Sets the target address.
    pub fn with_target(mut self, target: Option<IpAddr>) -> Self {
        self.target = target;
        self
    }

    /// Sets the grant lifetime (`None`: open without close).
    pub fn with_grant_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.grant_lifetime = lifetime;
        self
    }

    /// Sets duplicate-knock tolerance.
    pub fn with_allow_repeat(mut self, yes: bool) -> Self {
        self.allow_repeat = yes;
        self
    }

    /// Sets the cooldown after an open.
    pub fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Restricts the door to knockers from these networks.
    pub fn with_from(mut self, from: Vec<ipnet::IpNet>) -> Self {
        self.from = from;
        self
    }

    /// Sets sweep-proof (strict) matching.
    pub fn with_strict(mut self, yes: bool) -> Self {
        self.strict = yes;
        self
    }

    /// The sequences that can currently open the door, with their index in
    /// the door's list.
    pub fn active_sequences(&self) -> impl Iterator<Item = (usize, &[Step])> {
        let (skip, take) = match &self.sequences {
            Sequences::Reusable(list) | Sequences::Windowed { list, .. } => (0, list.len()),
            Sequences::OneTime { next, .. } => (*next, 1),
            Sequences::Authorized => (0, 0),
        };
        self.all_sequences()
            .iter()
            .enumerate()
            .skip(skip)
            .take(take)
            .map(|(i, s)| (i, s.as_slice()))
    }

    /// Every sequence of the door, active or not.
    pub fn all_sequences(&self) -> &[Vec<Step>] {
        match &self.sequences {
            Sequences::Reusable(list)
            | Sequences::OneTime { list, .. }
            | Sequences::Windowed { list, .. } => list,
            Sequences::Authorized => &[],
        }
    }

    /// The windows of a windowed door (empty for other doors).
    pub fn windows(&self) -> &[u64] {
        match &self.sequences {
            Sequences::Windowed { windows, .. } => windows,
            _ => &[],
        }
    }

    /// Whether the door has time-derived sequences.
    pub fn is_windowed(&self) -> bool {
        matches!(self.sequences, Sequences::Windowed { .. })
    }

    /// Whether two doors are the same definition, ignoring the current
    /// windows of time-derived sequences (what a reload compares).
    pub fn same_definition(&self, other: &Door) -> bool {
        match (&self.sequences, &other.sequences) {
            (Sequences::Windowed { .. }, Sequences::Windowed { .. }) => {
                let strip = |d: &Door| Door {
                    sequences: Sequences::Reusable(Vec::new()),
                    ..d.clone()
                };
                strip(self) == strip(other)
            }
            _ => self == other,
        }
    }

    /// Whether `event` is a *touch* of this strict door: a TCP SYN without
    /// ACK or a UDP datagram, to the door's target (if any), from an allowed
    /// source. Always false for a door that is not strict.
    pub fn strict_touch(&self, event: &Event) -> bool {
        self.strict
            && (event.proto == Proto::Udp
                || (event.tcp_flags.contains(TcpFlags::SYN)
                    && !event.tcp_flags.contains(TcpFlags::ACK)))
            && self.target.is_none_or(|t| t == event.dst)
            && (self.from.is_empty() || self.from.iter().any(|n| n.contains(&event.src)))
    }

    /// Whether a knock (before looking at its port) is one this door listens to:
    /// the TCP flags pass, the destination is the target, the source is allowed.
    #[inline(always)]
    pub fn accepts(&self, event: &Event) -> bool {
        (event.proto == Proto::Udp || self.tcp_flags.accepts(event.tcp_flags))
            && self.target.is_none_or(|t| t == event.dst)
            && (self.from.is_empty() || self.allows_source(event.src))
    }

    /// Whether `src` is in one of the `from` networks.
    #[inline(never)]
    fn allows_source(&self, src: IpAddr) -> bool {
        self.from.iter().any(|n| n.contains(&src))
    }

    /// Checks the rules the matcher relies on.
    pub fn validate(&self) -> Result<(), DoorError> {
        let door = || self.name.clone();
        if self.name.is_empty() {
            return Err(DoorError::EmptyName);
        }
        let list = self.all_sequences();
        if let Sequences::Windowed { windows, list } = &self.sequences {
            let slots: Vec<u64> = windows.iter().map(|w| w % WINDOW_SLOTS as u64).collect();
            let clash = (1..slots.len()).any(|i| slots[..i].contains(&slots[i]));
            if windows.len() != list.len() || windows.len() > WINDOW_SLOTS || clash {
                return Err(DoorError::BadWindows {
                    door: door(),
                    windows: windows.len(),
                    sequences: list.len(),
                });
            }
        } else if list.is_empty() && self.sequences != Sequences::Authorized {
            return Err(DoorError::NoSequence { door: door() });
        }
        for (index, seq) in list.iter().enumerate() {
            if seq.is_empty() {
                return Err(DoorError::EmptySequence {
                    door: door(),
                    index,
                });
            }
            if seq.len() > MAX_STEPS {
                return Err(DoorError::TooManySteps {
                    door: door(),
                    index,
                    len: seq.len(),
                });
            }
            if seq.iter().any(|s| s.port == 0) {
                return Err(DoorError::PortZero {
                    door: door(),
                    index,
                });
            }
        }
        if let Sequences::OneTime { list, next } = &self.sequences {
            if *next > list.len() {
                return Err(DoorError::OneTimeIndex {
                    door: door(),
                    next: *next,
                    len: list.len(),
                });
            }
        }
        if self.seq_timeout.is_zero() || self.seq_timeout > MAX_SEQ_TIMEOUT {
            return Err(DoorError::SeqTimeout {
                door: door(),
                timeout: self.seq_timeout,
            });
        }
        if self.grant_lifetime.is_some_and(|l| l.is_zero()) {
            return Err(DoorError::ZeroGrantLifetime { door: door() });
        }
        if !self.tcp_flags.set.is_disjoint(self.tcp_flags.clear) {
            return Err(DoorError::ContradictoryFlags {
                door: door(),
                filter: self.tcp_flags,
            });
        }
        Ok(())
    }
}

/// One entry of a matcher's listen set: knocks a capture backend must deliver.
///
/// Build a kernel filter that passes every packet matching any entry;
/// passing more is harmless (the matcher ignores it), passing less loses knocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct Listen {
    /// The protocol.
    pub proto: Proto,
    /// The destination port (0 when [`any_port`](Listen::any_port) is set).
    pub port: u16,
    /// The entry asks for every destination port (a strict door's SYNs and
    /// datagrams); `port` is then 0.
    pub any_port: bool,
    /// For TCP: flags that must be set.
    pub flags_set: TcpFlags,
    /// For TCP: flags that must be clear.
    pub flags_clear: TcpFlags,
    /// The destination address, if the door has a target.
    pub dst: Option<IpAddr>,
    /// The caller reads the data of the UDP datagrams this entry matches (a
    /// Single Packet Authorization packet): a capture keeps their payload.
    /// A knock is only its headers, so for the other entries it keeps none.
    pub payload: bool,
}

impl Listen {
    /// The entry for one step of a door.
    pub fn new(step: Step, flags: FlagFilter, dst: Option<IpAddr>) -> Self {
        let flags = match step.proto {
            Proto::Tcp => flags,
            Proto::Udp => FlagFilter::ANY,
        };
        Listen {
            proto: step.proto,
            port: step.port,
            any_port: false,
            flags_set: flags.set,
            flags_clear: flags.clear,
            dst,
            payload: false,
        }
    }

    /// This entry with [`payload`](Listen::payload) set: its datagrams'
    /// data is wanted, not only their headers.
    #[must_use]
    pub fn with_payload(self) -> Self {
        Listen {
            payload: true,
            ..self
        }
    }

    /// The entries of a strict door: every TCP SYN without ACK and every UDP
    /// datagram, to `dst` if given.
    pub fn strict(dst: Option<IpAddr>) -> [Self; 2] {
        [
            Listen {
                proto: Proto::Tcp,
                port: 0,
                any_port: true,
                flags_set: TcpFlags::SYN,
                flags_clear: TcpFlags::ACK,
                dst,
                payload: false,
            },
            Listen {
                proto: Proto::Udp,
                port: 0,
                any_port: true,
                flags_set: TcpFlags::EMPTY,
                flags_clear: TcpFlags::EMPTY,
                dst,
                payload: false,
            },
        ]
    }

    /// Every packet of `proto`, to any port and with any flags: for a source
    /// that must not filter on the doors of the moment (a replay, whose
    /// time-derived doors change ports with the capture's clock).
    pub fn any(proto: Proto) -> Self {
        Listen {
            proto,
            port: 0,
            any_port: true,
            flags_set: TcpFlags::EMPTY,
            flags_clear: TcpFlags::EMPTY,
            dst: None,
            payload: false,
        }
    }

    /// Whether `event` is one this entry asks for.
    #[inline]
    pub fn matches(&self, event: &Event) -> bool {
        self.proto == event.proto
            && (self.any_port || self.port == event.dst_port)
            && (event.proto == Proto::Udp
                || FlagFilter {
                    set: self.flags_set,
                    clear: self.flags_clear,
                }
                .accepts(event.tcp_flags))
            && self.dst.is_none_or(|d| d == event.dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ev(flags: TcpFlags) -> Event {
        Event::tcp(
            Ipv4Addr::new(198, 18, 0, 2).into(),
            Ipv4Addr::new(198, 18, 0, 1).into(),
            7000,
            flags,
            crate::Timestamp::ZERO,
        )
    }

    #[test]
    fn flag_filter_semantics() {
        let f = FlagFilter {
            set: TcpFlags::SYN,
            clear: TcpFlags::ACK,
        };
        assert!(f.accepts(TcpFlags::SYN));
        assert!(f.accepts(TcpFlags::SYN | TcpFlags::ECE));
        assert!(!f.accepts(TcpFlags::SYN | TcpFlags::ACK));
        assert!(!f.accepts(TcpFlags::ACK));
        assert_eq!(f.to_string(), "syn,!ack");
        assert!(FlagFilter::ANY.accepts(TcpFlags::RST));
    }

    #[test]
    fn door_accepts_checks_flags_target_and_source() {
        let door = Door::new("d", vec![Step::tcp(7000)]).with_tcp_flags(FlagFilter {
            set: TcpFlags::SYN,
            clear: TcpFlags::EMPTY,
        });
        assert!(door.accepts(&ev(TcpFlags::SYN)));
        assert!(!door.accepts(&ev(TcpFlags::ACK)));
        let door = door.with_target(Some(Ipv4Addr::new(198, 18, 0, 9).into()));
        assert!(!door.accepts(&ev(TcpFlags::SYN)));
        let door =
            Door::new("d", vec![Step::tcp(7000)]).with_from(vec!["198.19.0.0/16".parse().unwrap()]);
        assert!(!door.accepts(&ev(TcpFlags::SYN)));
    }

    #[test]
    fn validation_rejects_each_bad_shape() {
        let ok = Door::new("d", vec![Step::tcp(1)]);
        assert_eq!(ok.validate(), Ok(()));
        assert!(matches!(
            Door::new("", vec![Step::tcp(1)]).validate(),
            Err(DoorError::EmptyName)
        ));
        assert!(matches!(
            Door::new("d", vec![]).validate(),
            Err(DoorError::EmptySequence { index: 0, .. })
        ));
        assert!(matches!(
            Door::new("d", vec![Step::tcp(1); 33]).validate(),
            Err(DoorError::TooManySteps { len: 33, .. })
        ));
        assert!(matches!(
            Door::new("d", vec![Step::tcp(0)]).validate(),
            Err(DoorError::PortZero { .. })
        ));
        assert!(matches!(
            ok.clone().with_seq_timeout(Duration::ZERO).validate(),
            Err(DoorError::SeqTimeout { .. })
        ));
        assert!(matches!(
            ok.clone()
                .with_grant_lifetime(Some(Duration::ZERO))
                .validate(),
            Err(DoorError::ZeroGrantLifetime { .. })
        ));
        assert!(matches!(
            ok.clone()
                .with_tcp_flags(FlagFilter {
                    set: TcpFlags::SYN,
                    clear: TcpFlags::SYN
                })
                .validate(),
            Err(DoorError::ContradictoryFlags { .. })
        ));
        assert!(matches!(
            Door::with_sequences(
                "d",
                Sequences::OneTime {
                    list: vec![],
                    next: 0
                }
            )
            .validate(),
            Err(DoorError::NoSequence { .. })
        ));
    }

    #[test]
    fn one_time_door_exposes_only_the_active_sequence() {
        let mut d = Door::one_time("d", vec![vec![Step::tcp(1)], vec![Step::udp(2)]]);
        assert_eq!(
            d.active_sequences().collect::<Vec<_>>(),
            vec![(0, &[Step::tcp(1)][..])]
        );
        d.sequences = Sequences::OneTime {
            list: d.all_sequences().to_vec(),
            next: 2,
        };
        assert_eq!(d.active_sequences().count(), 0);
    }
}
