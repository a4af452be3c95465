//! The configuration model both formats parse into.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use knock_core::{Door, FlagFilter, Proto, Sequences, Step, DEFAULT_SEQ_TIMEOUT};

use crate::derive::Secret;
use crate::seqfile::SequenceFile;

/// knockd's default `cmd_timeout`.
pub const DEFAULT_CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// knockd's default `PidFile`.
pub const DEFAULT_PID_FILE: &str = "/var/run/knockd.pid";

/// knockd's default `Interface`.
pub const DEFAULT_INTERFACE: &str = "eth0";

/// A whole configuration: global options and doors, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The `[options]` section.
    pub options: Options,
    /// The doors, in the order of the file.
    pub doors: Vec<DoorConfig>,
}

/// The `[options]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// `UseSyslog`: log to syslog.
    pub use_syslog: bool,
    /// `LogFile`: log to this file (lines `[YYYY-MM-DD HH:MM] msg`).
    pub log_file: Option<PathBuf>,
    /// `PidFile` (default `/var/run/knockd.pid`).
    pub pid_file: PathBuf,
    /// `Interface` (default `eth0`); ours takes a comma-separated list.
    pub interfaces: Vec<String>,
    /// Extension `blacklist = 3 invalid in 60s for 180s`.
    pub blacklist: Option<BlacklistRule>,
    /// Extension `blacklist_reach = doors|host`: what a block refuses in the
    /// firewall (default `doors`).
    pub blacklist_reach: BlacklistReach,
    /// Extension `metrics = 127.0.0.1:9464`: serve OpenMetrics on this
    /// address and port (`None`: no endpoint, the default).
    pub metrics: Option<SocketAddr>,
    /// Extension `spa_port`: the UDP port SPA packets are sent to
    /// (fwknop's default 62201); used when a door is an SPA door.
    pub spa_port: u16,
    /// Extension `spa_window`: how far an SPA packet's timestamp may be
    /// from the clock (fwknopd's `MAX_SPA_PACKET_AGE`, default 120 s).
    pub spa_window: Duration,
    /// Extension `capture_ring = 32M`: the bytes of the memory-mapped
    /// receive ring of each captured interface (resident memory, per
    /// interface); `Some(0)`: no ring, a `recvfrom(2)` per packet; `None`:
    /// the capture's default (32 MiB). From [`MIN_CAPTURE_RING`] to
    /// [`MAX_CAPTURE_RING`] (see [`parse_capture_ring`]).
    ///
    /// [`MIN_CAPTURE_RING`]: crate::MIN_CAPTURE_RING
    /// [`MAX_CAPTURE_RING`]: crate::MAX_CAPTURE_RING
    /// [`parse_capture_ring`]: crate::parse_capture_ring
    pub capture_ring: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            use_syslog: false,
            log_file: None,
            pid_file: PathBuf::from(DEFAULT_PID_FILE),
            interfaces: vec![DEFAULT_INTERFACE.to_owned()],
            blacklist: None,
            blacklist_reach: BlacklistReach::default(),
            metrics: None,
            spa_port: knock_spa::DEFAULT_PORT,
            spa_window: knock_spa::DEFAULT_WINDOW,
            capture_ring: None,
        }
    }
}

/// Extension `blacklist = N invalid in WINDOW for BLOCK`: a source with `N`
/// strikes (invalidated attempts, or touches of a strict door's non-step
/// ports) within `window` is blocked for `block` (see [`knock_core::Blacklist`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlacklistRule {
    /// How many invalid attempts trigger the block (at least 1).
    pub invalid: u32,
    /// Within how long.
    pub window: Duration,
    /// How long the source is ignored.
    pub block: Duration,
}

impl BlacklistRule {
    pub(crate) fn is_valid(&self) -> bool {
        self.invalid > 0 && !self.window.is_zero() && !self.block.is_zero()
    }
}

/// Extension `blacklist_reach`: where a [`BlacklistRule`] block refuses new
/// connections in the firewall. A block never cuts an established
/// connection, and the matcher ignores the blocked source's knocks in
/// either case.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BlacklistReach {
    /// New connections to the ports the doors protect (every native door's
    /// `open` ports). Strikes can come from spoofed packets, so this keeps
    /// what a spoofer can deny a victim to the doors.
    #[default]
    Doors,
    /// New connections to every port of the host.
    Host,
}

impl BlacklistReach {
    /// The name used in both formats.
    pub const fn as_str(self) -> &'static str {
        match self {
            BlacklistReach::Doors => "doors",
            BlacklistReach::Host => "host",
        }
    }

    pub(crate) fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "doors" => Some(BlacklistReach::Doors),
            "host" => Some(BlacklistReach::Host),
            _ => None,
        }
    }
}

/// How a door's `open` grants are applied.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FirewallKind {
    /// knockd's way: only the shell commands; no native grant (`open` must be empty).
    #[default]
    Command,
    /// Native grants through iptables/ip6tables.
    Iptables,
    /// Native grants through nftables.
    Nftables,
    /// Native grants where they take effect on this host: the daemon reads
    /// the host's ruleset and picks nftables or iptables (the default with
    /// `open`). Resolved before the engine or a sink sees the door.
    Auto,
}

impl FirewallKind {
    /// The name used in both formats.
    pub const fn as_str(self) -> &'static str {
        match self {
            FirewallKind::Command => "command",
            FirewallKind::Iptables => "iptables",
            FirewallKind::Nftables => "nftables",
            FirewallKind::Auto => "auto",
        }
    }

    pub(crate) fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "command" => Some(FirewallKind::Command),
            "iptables" => Some(FirewallKind::Iptables),
            "nftables" => Some(FirewallKind::Nftables),
            "auto" => Some(FirewallKind::Auto),
            _ => None,
        }
    }
}

/// Extension `grant_prefix = 24,64`: a native grant covers the knocker's
/// network of this prefix length instead of its single address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrantPrefix {
    /// IPv4 prefix length (1 to 32, default 32).
    pub v4: u8,
    /// IPv6 prefix length (1 to 128, default 128).
    pub v6: u8,
}

impl Default for GrantPrefix {
    fn default() -> Self {
        GrantPrefix { v4: 32, v6: 128 }
    }
}

impl GrantPrefix {
    pub(crate) fn is_valid(&self) -> bool {
        (1..=32).contains(&self.v4) && (1..=128).contains(&self.v6)
    }

    /// The network a grant for `addr` covers.
    pub fn network(&self, addr: IpAddr) -> IpNet {
        let len = match addr {
            IpAddr::V4(_) => self.v4.min(32),
            IpAddr::V6(_) => self.v6.min(128),
        };
        IpNet::new(addr, len)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(addr))
    }
}

/// A line number that every comparison ignores (where a key was written, for
/// errors found after parsing; equal configurations from both formats stay equal).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KeyLine(pub(crate) usize);

impl PartialEq for KeyLine {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for KeyLine {}
impl std::hash::Hash for KeyLine {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

/// Extension: a time-derived sequence (`sequence_secret_file` and friends).
/// [`crate::derive`] computes the sequence of each time window; the core
/// door is [`knock_core::Door::windowed`], fed by the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DerivedSequence {
    /// `sequence_secret_file`: the shared secret.
    pub secret_file: PathBuf,
    /// `sequence_length` (1 to 32, default 3).
    pub length: usize,
    /// `sequence_period` (default 30 s): how long one derived sequence lives.
    pub period: Duration,
    /// `sequence_ports = 1024-65535` (the default): where derived ports fall.
    pub ports: RangeInclusive<u16>,
    /// `sequence_protocols = tcp,udp` (default tcp).
    pub protocols: Vec<Proto>,
    /// The secret, once loaded ([`Config::load_sequence_files`]).
    pub secret: Option<Secret>,
    /// The line of `sequence_secret_file` (0 for TOML), for errors.
    pub(crate) line: KeyLine,
}

impl DerivedSequence {
    /// Default length of a derived sequence.
    pub const DEFAULT_LENGTH: usize = 3;
    /// Default period of a derived sequence.
    pub const DEFAULT_PERIOD: Duration = Duration::from_secs(30);

    /// A derived sequence with the defaults.
    pub fn new(secret_file: impl Into<PathBuf>) -> Self {
        DerivedSequence {
            secret_file: secret_file.into(),
            length: Self::DEFAULT_LENGTH,
            period: Self::DEFAULT_PERIOD,
            ports: 1024..=65535,
            protocols: vec![Proto::Tcp],
            secret: None,
            line: KeyLine(0),
        }
    }

    /// The most `seq_timeout` may be, in periods: a window's slot in the
    /// matcher changes every 3 periods and its 8-bit epoch must not wrap
    /// while an attempt on it lives.
    pub const MAX_TIMEOUT_PERIODS: u32 = 100;

    /// Checks the parameters against each other and the door's
    /// `seq_timeout`; the error is a sentence for [`ConfigError::Conflict`](crate::ConfigError).
    pub(crate) fn check(&self, seq_timeout: Duration) -> Result<(), String> {
        let n = usize::from(self.ports.end() - self.ports.start()) + 1;
        if n < self.length {
            return Err(format!(
                "sequence_ports {}-{} has {n} ports, fewer than sequence_length = {} (ports do not repeat within a sequence)",
                self.ports.start(),
                self.ports.end(),
                self.length
            ));
        }
        if self.period.is_zero() {
            return Err("sequence_period must be above 0".to_owned());
        }
        if seq_timeout > self.period * Self::MAX_TIMEOUT_PERIODS {
            return Err(format!(
                "seq_timeout ({}) is more than {} times sequence_period ({})",
                crate::duration_to_string(seq_timeout),
                Self::MAX_TIMEOUT_PERIODS,
                crate::duration_to_string(self.period)
            ));
        }
        Ok(())
    }

    /// The sequences of windows w-1, w and w+1 around Unix time `unix`, for
    /// door `door` (`None` until the secret is loaded).
    pub fn windows_around(&self, door: &str, unix: Duration) -> Option<Vec<(u64, Vec<Step>)>> {
        let secret = self.secret.as_ref()?;
        Some(crate::derive::windows_around(secret, door, self, unix))
    }
}

/// Where a door's sequences come from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SequenceSource {
    /// `sequence = 7000,8000:udp`.
    Inline(Vec<Step>),
    /// `sequence = /path`: a file of reusable sequences, any of which opens.
    File {
        /// The file.
        path: PathBuf,
        /// Its content, once loaded ([`Config::load_sequence_files`]).
        loaded: Option<SequenceFile>,
    },
    /// `one_time_sequences = /path`: each unused line once, in order.
    OneTime {
        /// The file.
        path: PathBuf,
        /// Its content, once loaded ([`Config::load_sequence_files`]).
        loaded: Option<SequenceFile>,
    },
    /// `sequence_secret_file = /path` and friends: time-derived sequences.
    Derived(DerivedSequence),
    /// No sequence: Single Packet Authorization (`spa_key_base64` and
    /// friends, or an `access.conf` stanza). The core door is
    /// [`Sequences::Authorized`].
    Spa(crate::spa::SpaDoor),
}

/// One door: the matcher's part and the actions.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DoorConfig {
    /// The section name.
    pub name: String,
    /// What opens it.
    pub sequence: SequenceSource,
    /// `seq_timeout` / `timeout` (default 25 s).
    pub seq_timeout: Duration,
    /// `tcpflags`.
    pub tcp_flags: FlagFilter,
    /// `target`.
    pub target: Option<IpAddr>,
    /// `start_command` / `command`.
    pub start_command: Option<String>,
    /// `start_command_6` / `command_6` (IPv6 knockers; falls back to `start_command`).
    pub start_command_6: Option<String>,
    /// `stop_command`.
    pub stop_command: Option<String>,
    /// `stop_command_6` (IPv6 knockers; falls back to `stop_command`).
    pub stop_command_6: Option<String>,
    /// `cmd_timeout` (default 10 s): how long a grant lasts.
    pub cmd_timeout: Duration,
    /// Extension `open = tcp/22,udp/1194`: native grants.
    pub open: Vec<Step>,
    /// Extension `firewall`: how `open` is applied (default `auto` with
    /// `open`, command without).
    pub firewall: FirewallKind,
    /// Extension `grant_prefix = 24,64`.
    pub grant_prefix: GrantPrefix,
    /// Extension `allow_repeat = yes`.
    pub allow_repeat: bool,
    /// Extension `cooldown = N`.
    pub cooldown: Duration,
    /// Extension `from = 198.18.0.0/15, 2001:db8::/32`.
    pub from: Vec<IpNet>,
    /// Extension `strict = yes`: sweep-proof matching ([`knock_core::Door::strict`]).
    pub strict: bool,
}

impl DoorConfig {
    /// A door with knockd's defaults and no action.
    pub fn new(name: impl Into<String>, sequence: SequenceSource) -> Self {
        DoorConfig {
            name: name.into(),
            sequence,
            seq_timeout: DEFAULT_SEQ_TIMEOUT,
            tcp_flags: FlagFilter::ANY,
            target: None,
            start_command: None,
            start_command_6: None,
            stop_command: None,
            stop_command_6: None,
            cmd_timeout: DEFAULT_CMD_TIMEOUT,
            open: Vec::new(),
            firewall: FirewallKind::Command,
            grant_prefix: GrantPrefix::default(),
            allow_repeat: false,
            cooldown: Duration::ZERO,
            from: Vec::new(),
            strict: false,
        }
    }

    /// How long a grant lasts: `cmd_timeout` when something must be closed
    /// (a stop command or native `open`), `None` otherwise (knockd's door
    /// without `stop_command`).
    pub fn grant_lifetime(&self) -> Option<Duration> {
        (self.stop_command.is_some() || self.stop_command_6.is_some() || !self.open.is_empty())
            .then_some(self.cmd_timeout)
    }

    /// The start command for a knocker of this family (IPv6 falls back to
    /// the IPv4 one, as in knockd). `%IP%` is still in it.
    pub fn start_command_for(&self, ipv6: bool) -> Option<&str> {
        let v6 = if ipv6 {
            self.start_command_6.as_deref()
        } else {
            None
        };
        v6.or(self.start_command.as_deref())
    }

    /// The stop command for a knocker of this family (IPv6 falls back to
    /// the IPv4 one). `%IP%` is still in it.
    pub fn stop_command_for(&self, ipv6: bool) -> Option<&str> {
        let v6 = if ipv6 {
            self.stop_command_6.as_deref()
        } else {
            None
        };
        v6.or(self.stop_command.as_deref())
    }

    /// The sequence file (reusable or one-time), once loaded.
    pub fn sequence_file(&self) -> Option<&SequenceFile> {
        match &self.sequence {
            SequenceSource::File { loaded, .. } | SequenceSource::OneTime { loaded, .. } => {
                loaded.as_ref()
            }
            _ => None,
        }
    }

    /// The sequence file, to [`mark_used`](SequenceFile::mark_used) a
    /// one-time sequence when the core emits `SequenceConsumed`.
    pub fn sequence_file_mut(&mut self) -> Option<&mut SequenceFile> {
        match &mut self.sequence {
            SequenceSource::File { loaded, .. } | SequenceSource::OneTime { loaded, .. } => {
                loaded.as_mut()
            }
            _ => None,
        }
    }

    /// The time-derived sequence parameters, for a derived door.
    pub fn derived(&self) -> Option<&DerivedSequence> {
        match &self.sequence {
            SequenceSource::Derived(d) => Some(d),
            _ => None,
        }
    }

    /// The core door, or `None` when the core cannot run it: a sequence
    /// file not loaded, or a one-time file with no unused line left (the
    /// door is disabled, as in knockd). A derived door is a
    /// [`Door::windowed`] without windows: the daemon gives it the
    /// sequences of the current windows ([`DerivedSequence::windows_around`]).
    pub fn core_door(&self) -> Option<Door> {
        let sequences = match &self.sequence {
            SequenceSource::Inline(steps) => Sequences::Reusable(vec![steps.clone()]),
            SequenceSource::File { loaded, .. } => {
                Sequences::Reusable(loaded.as_ref()?.sequences())
            }
            SequenceSource::OneTime { loaded, .. } => {
                let list = loaded.as_ref()?.sequences();
                if list.is_empty() {
                    return None;
                }
                Sequences::OneTime { list, next: 0 }
            }
            SequenceSource::Derived(_) => Sequences::Windowed {
                windows: Vec::new(),
                list: Vec::new(),
            },
            SequenceSource::Spa(_) => Sequences::Authorized,
        };
        Some(
            Door::with_sequences(self.name.clone(), sequences)
                .with_seq_timeout(self.seq_timeout)
                .with_tcp_flags(self.tcp_flags)
                .with_target(self.target)
                .with_grant_lifetime(self.grant_lifetime())
                .with_allow_repeat(self.allow_repeat)
                .with_cooldown(self.cooldown)
                .with_from(self.from.clone())
                .with_strict(self.strict),
        )
    }
}

impl Config {
    /// A configuration with default options and these doors.
    pub fn new(options: Options, doors: Vec<DoorConfig>) -> Self {
        Config { options, doors }
    }

    /// The doors the core can run, for `knock_core::Matcher::new`, in file
    /// order. Doors the core cannot run (see [`DoorConfig::core_door`])
    /// are left out; map the matcher's doors back by name with
    /// [`Config::door`].
    pub fn core_doors(&self) -> Vec<Door> {
        self.doors
            .iter()
            .filter_map(DoorConfig::core_door)
            .collect()
    }

    /// The door with this name.
    pub fn door(&self, name: &str) -> Option<&DoorConfig> {
        self.doors.iter().find(|d| d.name == name)
    }

    /// The ports the doors protect: every door's native `open` ports, sorted,
    /// each once (what a `blacklist_reach = doors` block refuses). Doors that
    /// open through shell commands add none: the daemon cannot know theirs.
    pub fn protected_ports(&self) -> Vec<Step> {
        let mut ports: Vec<Step> = self.doors.iter().flat_map(|d| d.open.clone()).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// The door with this name, mutably (to mark one-time sequences).
    pub fn door_mut(&mut self, name: &str) -> Option<&mut DoorConfig> {
        self.doors.iter_mut().find(|d| d.name == name)
    }
}

impl Options {
    /// The blacklist rule for the core ([`knock_core::Matcher::set_blacklist`]).
    pub fn core_blacklist(&self) -> Option<knock_core::Blacklist> {
        self.blacklist
            .map(|b| knock_core::Blacklist::new(b.invalid, b.window, b.block))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new(Options::default(), Vec::new())
    }
}
