//! nftables over netlink (cargo feature `nftables`; rustables is GPL-3.0-or-later).

mod netlink;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use knock_core::{Proto, Step};
use rustables::error::QueryError;
use rustables::expr::{
    Bitwise, Cmp, CmpOp, ConnTrackState, Conntrack, ConntrackKey, HighLevelPayload,
    IPv4HeaderField, IPv6HeaderField, Lookup, Meta, MetaType, NetworkHeaderField,
};
use rustables::{
    Batch, Chain, ChainPolicy, ChainType, Hook, HookClass, MsgType, Protocol, ProtocolFamily, Rule,
    Set, Table,
};

use crate::error::Error;
use crate::grant::{mask, Grant};
use crate::sink::{BlockReach, FirewallSink, Reconciled};
use netlink::{ElemOp, NlSocket, SetInfo};

const NFT_SET_TIMEOUT: u32 = 0x10;
const TYPE_IPV4: u32 = 7;
const TYPE_IPV6: u32 = 8;

/// One door as the nftables sink needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftDoor {
    /// The door's name (what [`Grant::door`] says).
    pub name: String,
    /// The ports its grants open.
    pub ports: Vec<Step>,
    /// The sets' default timeout (the door's grant lifetime); `None`: no default.
    pub lifetime: Option<Duration>,
    /// Grants cover the knocker's network of this width (32: the address alone).
    pub prefix_v4: u8,
    /// Same for IPv6 (128: the address alone).
    pub prefix_v6: u8,
}

impl NftDoor {
    /// A door opening `ports` for `lifetime`, to single addresses.
    pub fn new(name: impl Into<String>, ports: Vec<Step>, lifetime: Option<Duration>) -> Self {
        NftDoor {
            name: name.into(),
            ports,
            lifetime,
            prefix_v4: 32,
            prefix_v6: 128,
        }
    }

    /// Grants cover the knocker's /`v4` or /`v6`.
    pub fn with_prefix(mut self, v4: u8, v6: u8) -> Self {
        self.prefix_v4 = v4.min(32);
        self.prefix_v6 = v6.min(128);
        self
    }
}

/// Configuration of an [`NftSink`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftConfig {
    /// Our table in the `inet` family.
    pub table: String,
    /// The priority of our `input` base chain (default -5: before `filter`).
    pub priority: i32,
    /// Drop new connections to the doors' ports from everyone not in a set
    /// (established connections pass). In nftables an `accept` in one base
    /// chain does not override a `drop` in another, so the knock table must
    /// guard the ports itself; the rest of the ruleset should accept them.
    pub guard: bool,
    /// The doors.
    pub doors: Vec<NftDoor>,
    /// Keep the `block4`/`block6` sets and their rules. Without them and
    /// without doors the table has nothing to hold: [`NftSink::new`]
    /// deletes it (a config that no longer uses nftables leaves no guard
    /// behind), and the sink only closes and unblocks what is left.
    pub blocklist: bool,
    /// Where a block refuses new connections (default: the whole host).
    pub block_reach: BlockReach,
}

impl Default for NftConfig {
    fn default() -> Self {
        NftConfig {
            table: "knock".into(),
            priority: -5,
            guard: true,
            doors: Vec::new(),
            blocklist: true,
            block_reach: BlockReach::Host,
        }
    }
}

impl NftConfig {
    /// Whether the table has anything to hold (doors or the blocklist).
    pub fn holds_anything(&self) -> bool {
        self.blocklist || !self.doors.is_empty()
    }

    /// What nftables cannot hold, found without asking the kernel: a table
    /// name it refuses, a grant lifetime beyond its largest timeout.
    ///
    /// # Errors
    /// [`Error::Config`] naming the value and the limit.
    pub fn check_limits(&self) -> Result<(), Error> {
        if self.table.is_empty()
            || self.table.len() > 32
            || !self
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::Config(format!(
                "nftables table name {:?} (1 to 32 letters, digits, `_` or `-`)",
                self.table
            )));
        }
        for d in &self.doors {
            if let Some(t) = d.lifetime.filter(|&t| t > MAX_TIMEOUT) {
                return Err(Error::Config(format!(
                    "door `{}`: a grant lifetime of {} s is longer than an nftables timeout can be ({} s)",
                    d.name,
                    t.as_secs(),
                    MAX_TIMEOUT.as_secs()
                )));
            }
        }
        Ok(())
    }
}

/// The longest timeout the kernel takes: in milliseconds, times a million,
/// it must fit 64 bits (`nf_msecs_to_jiffies64`); about 584 years.
pub const MAX_TIMEOUT: Duration = Duration::from_millis(u64::MAX / 1_000_000 - 1);

/// What [`NftSink::check`] could verify.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Checked {
    /// The kernel took the whole transaction (and aborted it, as asked).
    Kernel,
    /// Only the static limits: the kernel could not be asked (the reason,
    /// e.g. no permission).
    LimitsOnly(String),
}

#[derive(Clone, Debug)]
struct DoorSets {
    v4: String,
    v6: String,
    prefix_v4: u8,
    prefix_v6: u8,
}

/// Grants as elements of per-door nftables sets that the kernel expires.
///
/// The ruleset (built with rustables, installed in one transaction):
///
/// ```text
/// table inet knock {
///   set block4 { type ipv4_addr; flags timeout; }       set block6 { ... }
///   set d0_ssh_4 { type ipv4_addr; flags timeout; timeout 30s; }   d0_ssh_6 ...
///   chain input { type filter hook input priority -5; policy accept;
///     ip saddr @block4 tcp dport 22 ct state != established,related drop
///     (and ip6; per port of BlockReach::Ports, without `dport` for Host)
///     ip saddr & 255.255.255.255 @d0_ssh_4 tcp dport 22 accept   (and ip6)
///     tcp dport 22 ct state established accept;  tcp dport 22 drop   (guard)
///   }
/// }
/// ```
///
/// An open adds the (masked) address to the door's set with the grant's
/// remaining time as the element's timeout, a block adds the address to
/// `block4`/`block6` until its end; [`close`](FirewallSink::close) and
/// [`unblock`](FirewallSink::unblock) delete the element. The engine calls
/// those on time; the kernel timeouts are the safety net that deletes the
/// element anyway if the daemon was killed, so a port never stays open. One
/// netlink transaction per call on a socket opened by [`NftSink::new`] (in
/// the network namespace of the calling thread), no `nft` process.
#[derive(Debug)]
pub struct NftSink {
    cfg: NftConfig,
    sets: HashMap<String, DoorSets>,
    sock: NlSocket,
}

fn set_name(i: usize, door: &str, fam: char) -> String {
    let clean: String = door
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(16)
        .collect();
    format!("d{i}_{clean}_{fam}")
}

fn query_err(what: String, e: QueryError) -> Error {
    match e {
        QueryError::NetlinkError(nle) => Error::from_errno(what, -nle.error),
        QueryError::NetlinkOpenError(e)
        | QueryError::NetlinkSendError(e)
        | QueryError::NetlinkRecvError(e) => Error::from_errno(what, e as i32),
        other => Error::Kernel {
            what,
            source: io::Error::other(other.to_string()),
        },
    }
}

fn proto(p: Proto) -> Protocol {
    match p {
        Proto::Tcp => Protocol::TCP,
        Proto::Udp => Protocol::UDP,
    }
}

/// `ip saddr` (or `ip6 saddr`) masked to `prefix`, looked up in `set`.
fn saddr_in(mut rule: Rule, v6: bool, prefix: u8, set: &Set) -> Result<Rule, Error> {
    let berr = |e: rustables::error::BuilderError| Error::Config(format!("nftables rule: {e}"));
    rule.add_expr(Meta::new(MetaType::NfProto));
    rule.add_expr(Cmp::new(
        CmpOp::Eq,
        [if v6 {
            libc_nfproto_ipv6()
        } else {
            libc_nfproto_ipv4()
        }],
    ));
    rule.add_expr(
        HighLevelPayload::Network(if v6 {
            NetworkHeaderField::IPv6(IPv6HeaderField::Saddr)
        } else {
            NetworkHeaderField::IPv4(IPv4HeaderField::Saddr)
        })
        .build(),
    );
    let full = if v6 { 128 } else { 32 };
    if prefix < full {
        let m = match mask(
            if v6 {
                IpAddr::from([0xffu8; 16])
            } else {
                IpAddr::from([0xffu8; 4])
            },
            prefix,
        ) {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let zero = vec![0u8; m.len()];
        rule.add_expr(Bitwise::new(m, zero).map_err(berr)?);
    }
    rule.add_expr(Lookup::new(set).map_err(berr)?);
    Ok(rule)
}

/// The rules of a block set: drop what comes from an address in `set` and
/// is not part of (or related to) an established connection, to each port
/// of `reach` or, for [`BlockReach::Host`], to any.
fn block_rules(chain: &Chain, v6: bool, set: &Set, reach: &BlockReach) -> Result<Vec<Rule>, Error> {
    let berr = |e: rustables::error::BuilderError| Error::Config(format!("nftables rule: {e}"));
    let new_only = |mut rule: Rule| -> Result<Rule, Error> {
        let settled = (ConnTrackState::ESTABLISHED | ConnTrackState::RELATED).bits();
        rule.add_expr(Conntrack::new(ConntrackKey::State));
        rule.add_expr(Bitwise::new(settled.to_ne_bytes(), 0u32.to_ne_bytes()).map_err(berr)?);
        rule.add_expr(Cmp::new(CmpOp::Eq, 0u32.to_ne_bytes()));
        Ok(rule.drop())
    };
    let from_set = || {
        saddr_in(
            Rule::new(chain).map_err(berr)?,
            v6,
            if v6 { 128 } else { 32 },
            set,
        )
    };
    match reach {
        BlockReach::Host => Ok(vec![new_only(from_set()?)?]),
        BlockReach::Ports(ports) => ports
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|step| new_only(from_set()?.dport(step.port, proto(step.proto))))
            .collect(),
    }
}

/// The block set of `src`'s family and its key.
fn block_target(src: IpAddr) -> (&'static str, Vec<u8>) {
    match src {
        IpAddr::V4(a) => ("block4", a.octets().to_vec()),
        IpAddr::V6(a) => ("block6", a.octets().to_vec()),
    }
}

fn timeout_ms(t: Duration) -> u64 {
    u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Whether the kernel's `old` set can become the set `want` in place (same
/// name and shape). A new default timeout (a door's new lifetime) does not
/// count: adding the set again updates it (Linux 6.8 on; older kernels keep
/// the old one, a fallback only, since every grant with an end gives its
/// element its own timeout).
fn same_set(want: &Set, old: &SetInfo) -> bool {
    want.get_name().map(String::as_str) == Some(old.name.as_str())
        && want.get_flags().copied() == Some(old.flags)
        && want.get_key_type().copied() == Some(old.key_type)
        && want.get_key_len().copied() == Some(old.key_len)
}

const fn libc_nfproto_ipv4() -> u8 {
    2
}
const fn libc_nfproto_ipv6() -> u8 {
    10
}

impl NftSink {
    /// Installs (or re-installs) our table, sets and rules, keeping the
    /// elements of sets that already exist (grants survive a restart), and
    /// opens the netlink socket. Works in the network namespace of the calling thread.
    ///
    /// One transaction does it all, however many doors and ports: the
    /// chain's rules are replaced, the sets of doors that are gone (or of
    /// another shape) deleted and the new ones added. The kernel applies
    /// it whole or not at all, so on error the table that was there stays
    /// as it was, guard, grants and blocks included.
    ///
    /// # Errors
    /// The kernel refused (named, with the reason where
    /// [`NftConfig::check_limits`] can tell it), or no netlink socket.
    pub fn new(cfg: NftConfig) -> Result<NftSink, Error> {
        let sink = NftSink::unchecked(cfg)?;
        let mut sock = NlSocket::open()
            .map_err(|e| Error::from_io("open netfilter netlink socket".into(), "netlink", e))?;
        sink.install(&mut sock, true)?;
        Ok(sink)
    }

    /// A dry run of [`NftSink::new`]: the kernel checks the whole
    /// transaction that would install `cfg` (in the network namespace of
    /// the calling thread), then aborts it, as `nft --check` does. Nothing
    /// changes. Without the privilege to ask the kernel, only
    /// [`NftConfig::check_limits`] is checked.
    ///
    /// # Errors
    /// What [`NftSink::new`] would fail with.
    pub fn check(cfg: NftConfig) -> Result<Checked, Error> {
        let limits_only = |cfg: &NftConfig, why: String| {
            cfg.check_limits()?;
            Ok(Checked::LimitsOnly(why))
        };
        let fallback = cfg.clone();
        let sink = match NftSink::unchecked(cfg) {
            Ok(s) => s,
            Err(e @ Error::Config(_)) => return Err(e),
            // No netlink socket: nothing to ask.
            Err(e) => return limits_only(&fallback, e.to_string()),
        };
        let mut sock = match NlSocket::open() {
            Ok(s) => s,
            Err(e) => return limits_only(&fallback, format!("netfilter netlink socket: {e}")),
        };
        match sink.install(&mut sock, false) {
            Ok(()) => Ok(Checked::Kernel),
            Err(Error::PermissionDenied { detail, .. }) => limits_only(&fallback, detail),
            Err(e) => Err(e),
        }
    }

    /// The sink for `cfg`, nothing sent to the kernel yet. The kernel is
    /// the judge of what it can hold; [`NftConfig::check_limits`] explains
    /// a refusal (and stands in for the kernel where it cannot be asked).
    fn unchecked(cfg: NftConfig) -> Result<NftSink, Error> {
        if cfg.table.is_empty()
            || cfg.table.len() > 32
            || !cfg
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::Config(format!(
                "nftables table name {:?}",
                cfg.table
            )));
        }
        let sets = cfg
            .doors
            .iter()
            .enumerate()
            .map(|(i, d)| {
                (
                    d.name.clone(),
                    DoorSets {
                        v4: set_name(i, &d.name, '4'),
                        v6: set_name(i, &d.name, '6'),
                        prefix_v4: d.prefix_v4.min(32),
                        prefix_v6: d.prefix_v6.min(128),
                    },
                )
            })
            .collect();
        let sock = NlSocket::open()
            .map_err(|e| Error::from_io("open netfilter netlink socket".into(), "netlink", e))?;
        Ok(NftSink { cfg, sets, sock })
    }

    /// Whether table `name` exists in the `inet` family (in the network
    /// namespace of the calling thread). `false` too where nftables is not
    /// available at all.
    ///
    /// # Errors
    /// The kernel could not be asked (e.g. no permission).
    pub fn table_exists(name: &str) -> Result<bool, Error> {
        let what = || format!("look for nftables table {name}");
        let mut sock = match NlSocket::open() {
            Ok(s) => s,
            // No nf_tables in this kernel: no table either.
            Err(e) if e.raw_os_error() == Some(93) => return Ok(false),
            Err(e) => return Err(Error::from_io(what(), "netlink", e)),
        };
        match sock.list_tables() {
            Ok(tables) => Ok(tables.iter().any(|t| t == name)),
            Err(Ok(errno)) => Err(Error::from_errno(what(), errno)),
            Err(Err(e)) => Err(Error::from_io(what(), "netlink", e)),
        }
    }

    /// The set messages of one transaction: the sets we want, created,
    /// and the table's other sets, or ours of another shape, deleted
    /// (after the chain's rules, which reference them, are gone).
    fn wanted_sets(&self) -> Vec<Set> {
        let mut id: u32 = 1;
        let mut new_set = |name: &str, v6: bool, timeout: Option<Duration>| {
            let mut s = Set::default()
                .with_table(&self.cfg.table)
                .with_name(name)
                .with_flags(NFT_SET_TIMEOUT)
                .with_key_type(if v6 { TYPE_IPV6 } else { TYPE_IPV4 })
                .with_key_len(if v6 { 16u32 } else { 4u32 })
                .with_id(id);
            id += 1;
            s.family = ProtocolFamily::Inet;
            if let Some(t) = timeout {
                s.set_timeout(timeout_ms(t));
            }
            s
        };
        let mut out = Vec::new();
        if self.cfg.blocklist {
            out.push(new_set("block4", false, None));
            out.push(new_set("block6", true, None));
        }
        for d in &self.cfg.doors {
            let Some(ds) = self.sets.get(&d.name) else {
                continue;
            };
            out.push(new_set(&ds.v4, false, d.lifetime));
            out.push(new_set(&ds.v6, true, d.lifetime));
        }
        out
    }

    /// Installs the ruleset as ONE transaction on `sock`: the kernel
    /// applies all of it or none (the old table, its rules and elements
    /// stay as they were). `commit` false: a dry run.
    fn install(&self, sock: &mut NlSocket, commit: bool) -> Result<(), Error> {
        let what = format!(
            "{} nftables table {}",
            if commit { "install" } else { "check" },
            self.cfg.table
        );
        let existing = match sock.list_sets(&self.cfg.table) {
            Ok(sets) => sets,
            Err(Ok(errno)) => return Err(Error::from_errno(what, errno)),
            Err(Err(e)) => return Err(Error::from_io(what, "netlink", e)),
        };
        let batch = self.transaction(&existing)?;
        let size = batch.len();
        match sock.transact(batch, commit) {
            Ok(()) => Ok(()),
            Err(Ok(errno)) => {
                // Say why, where we can tell.
                let why = match self.cfg.check_limits() {
                    Err(Error::Config(why)) => Some(why),
                    _ => (errno == 90).then(|| {
                        format!(
                            "a ruleset of {} MiB, more than the {} MiB allowed",
                            size >> 20,
                            netlink::MAX_TRANSACTION >> 20
                        )
                    }),
                };
                let what = match why {
                    Some(why) => format!("{what} ({why})"),
                    None => what,
                };
                Err(Error::from_errno(what, errno))
            }
            Err(Err(e)) => Err(Error::from_io(what, "netlink", e)),
        }
    }

    /// The messages of the install transaction, given the sets the table has.
    fn transaction(&self, existing: &[SetInfo]) -> Result<Vec<u8>, Error> {
        let berr = |e: rustables::error::BuilderError| Error::Config(format!("nftables rule: {e}"));
        let table = Table::new(ProtocolFamily::Inet).with_name(&self.cfg.table);
        let mut batch = Batch::new();
        batch.add(&table, MsgType::Add);
        if !self.cfg.holds_anything() {
            // Nothing to guard or block: no table (an absent one is
            // created and deleted in the same transaction: no error).
            batch.add(&table, MsgType::Del);
            return Ok(batch.finalize());
        }
        let chain = Chain::new(&table)
            .with_name("input")
            .with_hook(Hook::new(HookClass::In, self.cfg.priority))
            .with_type(ChainType::Filter)
            .with_policy(ChainPolicy::Accept);
        batch.add(&chain, MsgType::Add);
        // Flush our chain: the rules are rebuilt from the config below.
        batch.add(&Rule::new(&chain).map_err(berr)?, MsgType::Del);

        let wanted = self.wanted_sets();
        for old in existing {
            let keep = wanted.iter().any(|w| same_set(w, old));
            if !keep {
                // A door that is gone, or a set of another shape (made by
                // hand or by another program): it goes, with its elements,
                // in this transaction.
                let mut s = Set::default()
                    .with_table(&self.cfg.table)
                    .with_name(&old.name);
                s.family = ProtocolFamily::Inet;
                batch.add(&s, MsgType::Del);
            }
        }
        for s in &wanted {
            batch.add(s, MsgType::Add);
        }
        let set = |name: &str| {
            wanted
                .iter()
                .find(|s| s.get_name().map(String::as_str) == Some(name))
        };
        // The block sets, when the config has them.
        let blocks = [("block4", false), ("block6", true)]
            .into_iter()
            .filter_map(|(name, v6)| Some((set(name)?, v6)));
        // Blocks first.
        for (set, v6) in blocks {
            for r in block_rules(&chain, v6, set, &self.cfg.block_reach)? {
                batch.add(&r, MsgType::Add);
            }
        }
        let mut guarded = BTreeSet::new();
        for d in &self.cfg.doors {
            let Some(ds) = self.sets.get(&d.name) else {
                continue;
            };
            let (Some(s4), Some(s6)) = (set(&ds.v4), set(&ds.v6)) else {
                continue;
            };
            for &step in &d.ports {
                for (set, v6, prefix) in [(s4, false, ds.prefix_v4), (s6, true, ds.prefix_v6)] {
                    let r = saddr_in(Rule::new(&chain).map_err(berr)?, v6, prefix, set)?
                        .dport(step.port, proto(step.proto))
                        .accept();
                    batch.add(&r, MsgType::Add);
                }
                guarded.insert(step);
            }
        }
        if self.cfg.guard {
            for step in guarded {
                let est = Rule::new(&chain)
                    .map_err(berr)?
                    .dport(step.port, proto(step.proto))
                    .established()
                    .map_err(berr)?
                    .accept();
                batch.add(&est, MsgType::Add);
                let drop = Rule::new(&chain)
                    .map_err(berr)?
                    .dport(step.port, proto(step.proto))
                    .drop();
                batch.add(&drop, MsgType::Add);
            }
        }
        Ok(batch.finalize())
    }

    /// Deletes our table (and every grant and block in it).
    pub fn remove(self) -> Result<(), Error> {
        let table = Table::new(ProtocolFamily::Inet).with_name(&self.cfg.table);
        let mut b = Batch::new();
        b.add(&table, MsgType::Add);
        b.add(&table, MsgType::Del);
        b.send()
            .map_err(|e| query_err(format!("remove nftables table {}", self.cfg.table), e))
    }

    fn target(&self, what: &str, grant: &Grant) -> Result<(String, Vec<u8>), Error> {
        let ds = self
            .sets
            .get(&grant.door)
            .ok_or_else(|| Error::UnknownDoor {
                what: what.to_owned(),
                door: grant.door.clone(),
            })?;
        let (set, prefix) = match grant.src {
            IpAddr::V4(_) => (&ds.v4, ds.prefix_v4),
            IpAddr::V6(_) => (&ds.v6, ds.prefix_v6),
        };
        if grant.prefix_len() != prefix {
            tracing::debug!(grant = %grant, door_prefix = prefix, "grant prefix differs from the door's set; using the door's");
        }
        let key = match mask(grant.src, prefix) {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        Ok((set.clone(), key))
    }

    fn apply(&mut self, what: String, ops: &[ElemOp<'_>], ok_enoent: bool) -> Result<(), Error> {
        match self.sock.apply(ops) {
            Ok(()) => Ok(()),
            Err(Ok(errno)) if ok_enoent && errno == 2 => Ok(()),
            Err(Ok(errno)) => Err(Error::from_errno(what, errno)),
            Err(Err(e)) => Err(Error::from_io(what, "netlink", e)),
        }
    }
}

impl FirewallSink for NftSink {
    type Error = Error;

    /// Adds (or refreshes) the element: one transaction of add, delete, add,
    /// so an existing element gets the new timeout.
    fn open(&mut self, grant: &Grant) -> Result<(), Error> {
        let what = format!("open {grant}");
        let (set, key) = self.target(&what, grant)?;
        let timeout = match grant.remaining(SystemTime::now()) {
            Some(Duration::ZERO) => return Ok(()), // already over
            t => t,
        };
        let table = self.cfg.table.clone();
        let op = |delete, timeout| ElemOp {
            delete,
            table: &table,
            set: &set,
            key: &key,
            timeout,
        };
        let ops = [op(false, None), op(true, None), op(false, timeout)];
        self.apply(what, &ops, false)
    }

    /// Deletes the element. A grant of a door this sink does not have is
    /// closed already: installing the sink deleted the sets of doors that
    /// are gone, with their elements.
    fn close(&mut self, grant: &Grant) -> Result<(), Error> {
        let what = format!("close {grant}");
        if !self.sets.contains_key(&grant.door) {
            return Ok(());
        }
        let (set, key) = self.target(&what, grant)?;
        let table = self.cfg.table.clone();
        let ops = [ElemOp {
            delete: true,
            table: &table,
            set: &set,
            key: &key,
            timeout: None,
        }];
        self.apply(what, &ops, true)
    }

    /// Nothing to do: the kernel has expired what was over, and
    /// [`NftSink::new`] installed the ruleset keeping the elements still
    /// valid.
    fn reconcile(&mut self, _now: SystemTime) -> Result<Reconciled, Error> {
        Ok(Reconciled::default())
    }

    /// Adds (or refreshes) the address in `block4`/`block6` with `until - now`,
    /// rounded up to whole seconds and at least 1 s, as the element's timeout:
    /// the kernel lifts the block by itself if nobody calls
    /// [`unblock`](FirewallSink::unblock).
    fn block(&mut self, src: IpAddr, until: SystemTime) -> Result<(), Error> {
        let what = format!("block {src}");
        let (set, key) = block_target(src);
        let left = until
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let duration = Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0))
            .max(Duration::from_secs(1));
        let table = self.cfg.table.clone();
        let op = |delete, timeout| ElemOp {
            delete,
            table: &table,
            set,
            key: &key,
            timeout,
        };
        let ops = [
            op(false, Some(duration)),
            op(true, None),
            op(false, Some(duration)),
        ];
        self.apply(what, &ops, false)
    }

    /// Deletes the address from `block4`/`block6` (absent: fine).
    fn unblock(&mut self, src: IpAddr) -> Result<(), Error> {
        let what = format!("unblock {src}");
        let (set, key) = block_target(src);
        let table = self.cfg.table.clone();
        let ops = [ElemOp {
            delete: true,
            table: &table,
            set,
            key: &key,
            timeout: None,
        }];
        self.apply(what, &ops, true)
    }
}
