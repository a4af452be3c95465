//! iptables / ip6tables through the `iptables` crate.

use std::error::Error as StdError;
use std::io;
use std::net::IpAddr;
use std::time::SystemTime;

use iptables::IPTables;

use crate::error::Error;
use crate::grant::{unix_secs, Grant};
use crate::sink::{BlockReach, FirewallSink, Reconciled};
use knock_core::Step;

/// Configuration of an [`IptablesSink`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IptablesConfig {
    /// Our chain in the `filter` table (letters, digits, `-`, `_`; at most 28).
    pub chain: String,
    /// The built-in chain that jumps to ours (first rule), normally `INPUT`.
    pub parent: String,
    /// Manage IPv4 (`iptables`).
    pub ipv4: bool,
    /// Manage IPv6 (`ip6tables`).
    pub ipv6: bool,
    /// Where a block refuses new connections (default: the whole host).
    pub block_reach: BlockReach,
    /// Use `iptables-legacy`/`ip6tables-legacy` (a host whose firewall is
    /// in the legacy tables) instead of `iptables`/`ip6tables`.
    pub legacy: bool,
}

impl Default for IptablesConfig {
    fn default() -> Self {
        IptablesConfig {
            chain: "KNOCK".into(),
            parent: "INPUT".into(),
            ipv4: true,
            ipv6: true,
            block_reach: BlockReach::Host,
            legacy: false,
        }
    }
}

const TABLE: &str = "filter";

/// A rule without a target that [`IptablesSink::new`] keeps in our chain. It
/// only makes the kernel track connections in this network namespace from
/// the start (it does that only while a rule asks for conntrack): a block's
/// "not established" would otherwise meet a session it never saw begin, and
/// drop it.
const CONNTRACK_SPEC: &str =
    "-m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment knock-conntrack";

/// Grants as iptables rules.
///
/// * One chain of our own (`KNOCK`), jumped to from the first rule of `INPUT`
///   (added once). Everything this sink does happens inside that chain.
/// * One `ACCEPT` rule per grant and port, tagged with the comment
///   `knock:door=NAME,grant=N,until=UNIXSECS` (`until=never` without expiry;
///   characters of the door name other than `[A-Za-z0-9_.-]` become `_`).
/// * `open` checks with `iptables -C` before appending: two opens give one rule.
/// * Blocks are `DROP` rules inserted at the top of the chain, tagged
///   `knock-block:until=UNIXSECS`, that match only packets conntrack does
///   not count as established or related (`-m conntrack ! --ctstate
///   RELATED,ESTABLISHED`): one rule for [`BlockReach::Host`], one per port
///   for [`BlockReach::Ports`]. [`unblock`](FirewallSink::unblock) deletes
///   them.
/// * iptables rules have no expiry of their own and this sink keeps no timer:
///   the engine closes grants and unblocks addresses on time. The `until` in
///   the comments is for [`reconcile`](FirewallSink::reconcile) at the next
///   start-up, which removes the grants and blocks whose time is over (a
///   daemon that died left them) and anything else found in our chain.
pub struct IptablesSink {
    cfg: IptablesConfig,
    v4: Option<IPTables>,
    v6: Option<IPTables>,
}

impl std::fmt::Debug for IptablesSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IptablesSink")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn program(v6: bool) -> &'static str {
    if v6 {
        "ip6tables"
    } else {
        "iptables"
    }
}

/// Turns the `iptables` crate's boxed error into ours.
/// The iptables program for the family: `iptables`/`ip6tables`, or their
/// `-legacy` variants (which support `-C` and `-w`).
fn open_ipt(v6: bool, legacy: bool) -> Result<IPTables, Box<dyn StdError>> {
    if !legacy {
        return iptables::new(v6);
    }
    let cmd = if v6 {
        "ip6tables-legacy"
    } else {
        "iptables-legacy"
    };
    let out = std::process::Command::new(cmd).arg("--version").output()?;
    if !out.status.success() {
        return Err(format!("{cmd} --version: {}", out.status).into());
    }
    Ok(IPTables {
        cmd,
        has_check: true,
        has_wait: true,
        is_numeric: false,
    })
}

fn convert(what: String, v6: bool, e: Box<dyn StdError>) -> Error {
    if let Some(ioe) = e.downcast_ref::<io::Error>() {
        return Error::from_io(
            what,
            program(v6),
            io::Error::new(ioe.kind(), ioe.to_string()),
        );
    }
    Error::from_program(what, program(v6), e.to_string().trim().to_owned())
}

fn sanitize(door: &str) -> String {
    door.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

fn until_str(t: Option<SystemTime>) -> String {
    t.map_or_else(|| "never".to_owned(), |t| unix_secs(t).to_string())
}

/// What our comment says about a rule.
#[derive(Debug, PartialEq, Eq)]
enum Tag {
    Grant {
        door: String,
        grant: u64,
        until: Option<u64>,
    },
    Block {
        until: u64,
    },
    /// The rule of [`CONNTRACK_SPEC`].
    Conntrack,
}

/// Parses one line of `iptables -S CHAIN` (`-A CHAIN ...`): the rule spec and our tag.
fn parse_rule(line: &str, chain: &str) -> Option<(String, Option<String>, Option<Tag>)> {
    let spec = line
        .strip_prefix("-A ")?
        .strip_prefix(chain)?
        .trim()
        .to_owned();
    let tokens: Vec<&str> = spec.split_whitespace().collect();
    let src = tokens
        .iter()
        .position(|t| *t == "-s")
        .and_then(|i| tokens.get(i + 1))
        .map(|s| (*s).to_owned());
    let comment = tokens
        .iter()
        .position(|t| *t == "--comment")
        .and_then(|i| tokens.get(i + 1))
        .map(|c| c.trim_matches('"'));
    let tag = comment.and_then(parse_tag);
    Some((spec, src, tag))
}

fn parse_tag(c: &str) -> Option<Tag> {
    if c == "knock-conntrack" {
        return Some(Tag::Conntrack);
    }
    if let Some(rest) = c.strip_prefix("knock-block:until=") {
        return rest.parse().ok().map(|until| Tag::Block { until });
    }
    let rest = c.strip_prefix("knock:")?;
    let (mut door, mut grant, mut until) = (None, None, None);
    for kv in rest.split(',') {
        match kv.split_once('=')? {
            ("door", v) => door = Some(v.to_owned()),
            ("grant", v) => grant = v.parse().ok(),
            ("until", "never") => until = Some(None),
            ("until", v) => until = Some(Some(v.parse().ok()?)),
            _ => return None,
        }
    }
    Some(Tag::Grant {
        door: door?,
        grant: grant?,
        until: until?,
    })
}

impl IptablesSink {
    /// Finds the programs, creates our chain and the jump from `parent` if missing.
    pub fn new(cfg: IptablesConfig) -> Result<IptablesSink, Error> {
        let ok = !cfg.chain.is_empty()
            && cfg.chain.len() <= 28
            && cfg
                .chain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(Error::Config(format!(
                "iptables chain name {:?}: use 1-28 letters, digits, `-` or `_`",
                cfg.chain
            )));
        }
        let mut sink = IptablesSink {
            v4: None,
            v6: None,
            cfg,
        };
        for v6 in [false, true] {
            if (v6 && !sink.cfg.ipv6) || (!v6 && !sink.cfg.ipv4) {
                continue;
            }
            let what = format!("set up chain {}", sink.cfg.chain);
            let ipt = open_ipt(v6, sink.cfg.legacy).map_err(|e| convert(what.clone(), v6, e))?;
            sink.setup(&ipt, v6)?;
            if v6 {
                sink.v6 = Some(ipt);
            } else {
                sink.v4 = Some(ipt);
            }
        }
        Ok(sink)
    }

    /// Whether our chain exists (in either family `cfg` manages): a sink
    /// is then needed to close what an earlier configuration left there.
    ///
    /// # Errors
    /// iptables cannot be run or asked.
    pub fn chain_exists(cfg: &IptablesConfig) -> Result<bool, Error> {
        for v6 in [false, true] {
            if (v6 && !cfg.ipv6) || (!v6 && !cfg.ipv4) {
                continue;
            }
            let what = format!("look for chain {}", cfg.chain);
            let ipt = open_ipt(v6, cfg.legacy).map_err(|e| convert(what.clone(), v6, e))?;
            if ipt
                .chain_exists(TABLE, &cfg.chain)
                .map_err(|e| convert(what, v6, e))?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes our chain and the jump to it, in each family where the
    /// chain holds no grant and no block (only the conntrack rule this
    /// sink keeps, or nothing). A chain that still holds something stays
    /// (the next start reconciles it). Returns whether nothing of ours is
    /// left.
    ///
    /// # Errors
    /// iptables cannot be run or refuses a change.
    pub fn retire(cfg: &IptablesConfig) -> Result<bool, Error> {
        let mut gone = true;
        for v6 in [false, true] {
            if (v6 && !cfg.ipv6) || (!v6 && !cfg.ipv4) {
                continue;
            }
            let chain = &cfg.chain;
            let what = format!("remove chain {chain} ({})", program(v6));
            let ipt = open_ipt(v6, cfg.legacy).map_err(|e| convert(what.clone(), v6, e))?;
            if !ipt
                .chain_exists(TABLE, chain)
                .map_err(|e| convert(what.clone(), v6, e))?
            {
                continue;
            }
            let rules = ipt
                .list(TABLE, chain)
                .map_err(|e| convert(what.clone(), v6, e))?;
            let holds = rules.iter().any(|l| match parse_rule(l, chain) {
                Some((_, _, Some(Tag::Conntrack))) | None => false,
                Some(_) => true,
            });
            if holds {
                gone = false;
                continue;
            }
            let jump = format!("-j {chain}");
            while ipt
                .exists(TABLE, &cfg.parent, &jump)
                .map_err(|e| convert(what.clone(), v6, e))?
            {
                ipt.delete(TABLE, &cfg.parent, &jump)
                    .map_err(|e| convert(what.clone(), v6, e))?;
            }
            ipt.flush_chain(TABLE, chain)
                .map_err(|e| convert(what.clone(), v6, e))?;
            ipt.delete_chain(TABLE, chain)
                .map_err(|e| convert(what.clone(), v6, e))?;
        }
        Ok(gone)
    }

    fn setup(&self, ipt: &IPTables, v6: bool) -> Result<(), Error> {
        let chain = &self.cfg.chain;
        let what = format!("set up chain {chain} ({})", program(v6));
        let exists = ipt
            .chain_exists(TABLE, chain)
            .map_err(|e| convert(what.clone(), v6, e))?;
        if !exists {
            ipt.new_chain(TABLE, chain)
                .map_err(|e| convert(what.clone(), v6, e))?;
        }
        let tracked = ipt
            .exists(TABLE, chain, CONNTRACK_SPEC)
            .map_err(|e| convert(what.clone(), v6, e))?;
        if !tracked {
            ipt.append(TABLE, chain, CONNTRACK_SPEC)
                .map_err(|e| convert(what.clone(), v6, e))?;
        }
        let jump = format!("-j {chain}");
        let jumps = ipt
            .exists(TABLE, &self.cfg.parent, &jump)
            .map_err(|e| convert(what.clone(), v6, e))?;
        if !jumps {
            ipt.insert(TABLE, &self.cfg.parent, &jump, 1)
                .map_err(|e| convert(what, v6, e))?;
        }
        Ok(())
    }

    fn family(&self, what: &str, addr: IpAddr) -> Result<(&IPTables, bool), Error> {
        let v6 = addr.is_ipv6();
        let ipt = if v6 { &self.v6 } else { &self.v4 };
        ipt.as_ref()
            .map(|i| (i, v6))
            .ok_or_else(|| Error::Unsupported {
                what: what.to_owned(),
                sink: if v6 {
                    "iptables (IPv6 disabled)"
                } else {
                    "iptables (IPv4 disabled)"
                },
            })
    }

    /// The rule spec of one port of a grant (what `-C`, `-A` and `-D` take).
    pub fn rule_spec(grant: &Grant, port: Step) -> String {
        format!(
            "-s {cidr} -p {p} -m {p} --dport {port} -m comment --comment knock:door={door},grant={id},until={until} -j ACCEPT",
            cidr = grant.cidr(),
            p = port.proto,
            port = port.port,
            door = sanitize(&grant.door),
            id = grant.id,
            until = until_str(grant.expires),
        )
    }

    /// The rule specs of a block of `cidr` until `until` (UNIX seconds):
    /// new connections only (established and related packets pass), to each
    /// port of `reach` or, for [`BlockReach::Host`], to any.
    pub fn block_specs(reach: &BlockReach, cidr: &str, until: u64) -> Vec<String> {
        const NEW_ONLY: &str = "-m conntrack ! --ctstate RELATED,ESTABLISHED";
        let tail = format!("{NEW_ONLY} -m comment --comment knock-block:until={until} -j DROP");
        match reach {
            BlockReach::Host => vec![format!("-s {cidr} {tail}")],
            BlockReach::Ports(ports) => ports
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|step| {
                    format!(
                        "-s {cidr} -p {p} -m {p} --dport {port} {tail}",
                        p = step.proto,
                        port = step.port
                    )
                })
                .collect(),
        }
    }

    fn list(&self, ipt: &IPTables, v6: bool, what: &str) -> Result<Vec<String>, Error> {
        ipt.list(TABLE, &self.cfg.chain)
            .map_err(|e| convert(what.to_owned(), v6, e))
    }

    /// Deletes the rules of our chain for which `pred` holds. Returns how many.
    fn delete_where(
        &self,
        ipt: &IPTables,
        v6: bool,
        what: &str,
        mut pred: impl FnMut(Option<&str>, Option<&Tag>) -> bool,
    ) -> Result<usize, Error> {
        let mut n = 0;
        for line in self.list(ipt, v6, what)? {
            let Some((spec, src, tag)) = parse_rule(&line, &self.cfg.chain) else {
                continue;
            };
            if pred(src.as_deref(), tag.as_ref()) {
                ipt.delete(TABLE, &self.cfg.chain, &spec)
                    .map_err(|e| convert(what.to_owned(), v6, e))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The rules of our chain, as `iptables -S` prints them (for tests and
    /// debugging), without the conntrack rule that [`IptablesSink::new`]
    /// keeps there.
    pub fn rules(&self, v6: bool) -> Result<Vec<String>, Error> {
        let ipt = if v6 { &self.v6 } else { &self.v4 };
        match ipt {
            Some(ipt) => Ok(self
                .list(ipt, v6, "list rules")?
                .into_iter()
                .filter(|l| {
                    l.starts_with("-A ")
                        && !matches!(
                            parse_rule(l, &self.cfg.chain),
                            Some((_, _, Some(Tag::Conntrack)))
                        )
                })
                .collect()),
            None => Ok(Vec::new()),
        }
    }

    fn reconcile_family(
        &self,
        ipt: &IPTables,
        v6: bool,
        now: u64,
        out: &mut Reconciled,
    ) -> Result<(), Error> {
        let what = format!("reconcile chain {} ({})", self.cfg.chain, program(v6));
        self.setup(ipt, v6)?;
        let (mut expired, mut leftovers, mut kept) = (0, 0, 0);
        self.delete_where(ipt, v6, &what, |_, tag| match tag {
            Some(Tag::Grant { until: None, .. }) => {
                kept += 1;
                false
            }
            Some(Tag::Grant { until: Some(u), .. }) | Some(Tag::Block { until: u }) => {
                if *u <= now {
                    expired += 1;
                    true
                } else {
                    kept += 1;
                    false
                }
            }
            Some(Tag::Conntrack) => false,
            None => {
                leftovers += 1;
                true
            }
        })?;
        out.expired += expired;
        out.leftovers += leftovers;
        out.kept += kept;
        Ok(())
    }
}

impl FirewallSink for IptablesSink {
    type Error = Error;

    fn open(&mut self, grant: &Grant) -> Result<(), Error> {
        let what = format!("open {grant}");
        let (ipt, v6) = self.family(&what, grant.src)?;
        for &port in &grant.ports {
            let spec = Self::rule_spec(grant, port);
            let present = ipt
                .exists(TABLE, &self.cfg.chain, &spec)
                .map_err(|e| convert(what.clone(), v6, e))?;
            if !present {
                ipt.append(TABLE, &self.cfg.chain, &spec)
                    .map_err(|e| convert(what.clone(), v6, e))?;
            }
        }
        Ok(())
    }

    fn extend(&mut self, grant: &Grant) -> Result<(), Error> {
        // Add the rules with the new expiry first, then drop the old ones:
        // the port never closes in between.
        self.open(grant)?;
        let what = format!("extend {grant}");
        let (ipt, v6) = self.family(&what, grant.src)?;
        let (door, id, cidr) = (sanitize(&grant.door), grant.id, grant.cidr());
        let until = grant.expires.map(unix_secs);
        self.delete_where(ipt, v6, &what, |src, tag| {
            matches!(tag, Some(Tag::Grant { door: d, grant: g, until: u })
                if *d == door && *g == id && *u != until)
                && src == Some(cidr.as_str())
        })?;
        Ok(())
    }

    fn close(&mut self, grant: &Grant) -> Result<(), Error> {
        let what = format!("close {grant}");
        let (ipt, v6) = self.family(&what, grant.src)?;
        let (door, id, cidr) = (sanitize(&grant.door), grant.id, grant.cidr());
        self.delete_where(ipt, v6, &what, |src, tag| {
            matches!(tag, Some(Tag::Grant { door: d, grant: g, .. }) if *d == door && *g == id)
                && src == Some(cidr.as_str())
        })?;
        Ok(())
    }

    fn reconcile(&mut self, now: SystemTime) -> Result<Reconciled, Error> {
        let now = unix_secs(now);
        let mut out = Reconciled::default();
        for (ipt, v6) in [(&self.v4, false), (&self.v6, true)] {
            if let Some(ipt) = ipt {
                self.reconcile_family(ipt, v6, now, &mut out)?;
            }
        }
        Ok(out)
    }

    fn block(&mut self, src: IpAddr, until: SystemTime) -> Result<(), Error> {
        let what = format!("block {src}");
        let (ipt, v6) = self.family(&what, src)?;
        let cidr = format!("{src}/{}", if v6 { 128 } else { 32 });
        let until = unix_secs(until);
        for spec in Self::block_specs(&self.cfg.block_reach, &cidr, until) {
            let present = ipt
                .exists(TABLE, &self.cfg.chain, &spec)
                .map_err(|e| convert(what.clone(), v6, e))?;
            if !present {
                ipt.insert(TABLE, &self.cfg.chain, &spec, 1)
                    .map_err(|e| convert(what.clone(), v6, e))?;
            }
        }
        // An earlier block of the same address is superseded.
        self.delete_where(ipt, v6, &what, |s, tag| {
            matches!(tag, Some(Tag::Block { until: u }) if *u != until) && s == Some(cidr.as_str())
        })?;
        Ok(())
    }

    /// Deletes every block rule of `src`. An address of a family this sink
    /// does not manage cannot be blocked here, so that succeeds too.
    fn unblock(&mut self, src: IpAddr) -> Result<(), Error> {
        let what = format!("unblock {src}");
        let Ok((ipt, v6)) = self.family(&what, src) else {
            return Ok(());
        };
        let cidr = format!("{src}/{}", if v6 { 128 } else { 32 });
        self.delete_where(ipt, v6, &what, |s, tag| {
            matches!(tag, Some(Tag::Block { .. })) && s == Some(cidr.as_str())
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rule_spec_round_trips_through_parse() {
        let g = Grant::new("open SSH!", "198.18.0.2".parse().unwrap(), 4, vec![])
            .with_expiry(Some(SystemTime::UNIX_EPOCH + Duration::from_secs(99)));
        let spec = IptablesSink::rule_spec(&g, Step::tcp(22));
        assert!(spec.contains("door=open_SSH_,grant=4,until=99"), "{spec}");
        let line = format!(
            "-A KNOCK {}",
            spec.replace("--comment knock", "--comment \"knock") + ""
        );
        let line = line.replace(" -j ACCEPT", "\" -j ACCEPT");
        let (_, src, tag) = parse_rule(&line, "KNOCK").unwrap();
        assert_eq!(src.as_deref(), Some("198.18.0.2/32"));
        assert_eq!(
            tag,
            Some(Tag::Grant {
                door: "open_SSH_".into(),
                grant: 4,
                until: Some(99)
            })
        );
        assert_eq!(
            parse_tag("knock-block:until=5"),
            Some(Tag::Block { until: 5 })
        );
        assert_eq!(
            parse_tag("knock:door=x,grant=1,until=never"),
            Some(Tag::Grant {
                door: "x".into(),
                grant: 1,
                until: None
            })
        );
        assert_eq!(parse_tag("knock-conntrack"), Some(Tag::Conntrack));
        assert_eq!(parse_tag("something else"), None);
        assert!(parse_rule("-N KNOCK", "KNOCK").is_none());
    }

    #[test]
    fn block_specs_are_new_connections_only_per_port_or_host() {
        let host = IptablesSink::block_specs(&BlockReach::Host, "198.18.0.7/32", 9);
        assert_eq!(
            host,
            ["-s 198.18.0.7/32 -m conntrack ! --ctstate RELATED,ESTABLISHED -m comment --comment knock-block:until=9 -j DROP"]
        );
        let ports = BlockReach::Ports(vec![Step::udp(1194), Step::tcp(22), Step::tcp(22)]);
        let specs = IptablesSink::block_specs(&ports, "2001:db8::7/128", 9);
        assert_eq!(specs.len(), 2, "{specs:?}");
        assert!(
            specs[0].starts_with(
                "-s 2001:db8::7/128 -p tcp -m tcp --dport 22 -m conntrack ! --ctstate"
            ),
            "{specs:?}"
        );
        assert!(specs[1].contains("-p udp -m udp --dport 1194"), "{specs:?}");
        for spec in specs.iter().chain(&host) {
            let line = format!("-A KNOCK {spec}");
            let (_, src, tag) = parse_rule(&line, "KNOCK").unwrap();
            assert!(src.is_some_and(|s| s.ends_with("/32") || s.ends_with("/128")));
            assert_eq!(tag, Some(Tag::Block { until: 9 }));
        }
        assert!(
            IptablesSink::block_specs(&BlockReach::Ports(vec![]), "198.18.0.7/32", 9).is_empty()
        );
    }
}
