//! The host's own packet filter at the input hook, and what it does with a
//! grant's packets.
//!
//! In nftables an `accept` in one base chain does not override a `drop` in
//! another: a grant only takes effect if no other base chain on the input
//! hook (of any table of the `ip`, `ip6` or `inet` family, at any priority)
//! drops its packets. iptables-nft, ufw and firewalld all keep their rules
//! there; iptables-legacy keeps its own tables. [`HostRuleset::read`] reads
//! both, and [`HostRuleset::fate`] says what happens to a new connection
//! to a door's port once our accept is in place.
//!
//! The analysis is symbolic: one packet, a new connection (TCP SYN or UDP)
//! to the door's port from an address we do not know, not on loopback,
//! addressed to this host. Each match of a rule is true, false or unknown
//! for it (`ct state new` is true, `iifname "lo"` false, `ip saddr
//! 10.0.0.0/8` unknown, and so is anything not modelled: marks, limits,
//! iptables extensions the listing does not spell out). A rule applies
//! only when all its matches are true, so a conditional accept does not
//! accept for everyone and a conditional drop does not drop for everyone.
//! So an accept behind an unknown match (one reached only through an
//! `-m addrtype` the JSON hides, say) is not counted, and the answer may
//! name a drop that does not happen: the daemon then refuses or picks
//! another place for its accept instead of reporting a door open that is
//! not. A drop behind an unknown match (`ip saddr 203.0.113.0/24 drop`) is
//! taken to be for someone else and is not reported.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};

use knock_core::{Proto, Step};
use serde_json::Value;

use crate::error::Error;

/// Where a sink puts its accept for a grant: the base chains it replaces
/// in the analysis are not asked again (our accept decides there).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// Our own nftables table (`inet <name>`), its base chain `input`.
    NftTable(String),
    /// The iptables sink: a jump at the top of `INPUT` of the `filter`
    /// table (iptables-nft: `ip filter INPUT` / `ip6 filter INPUT`).
    IptablesInput,
}

/// Which tool manages the chain that drops (for the message and the choice
/// of sink).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Manager {
    /// iptables over nftables (`ip filter INPUT` and its user chains).
    Iptables,
    /// iptables-legacy (its own tables, not in nftables).
    IptablesLegacy,
    /// ufw (iptables chains named `ufw-*`).
    Ufw,
    /// firewalld (`inet firewalld`).
    Firewalld,
    /// A native nftables table.
    Nftables,
}

/// What would drop a grant's packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropper {
    /// `ip`, `ip6` or `inet` (`iptables-legacy` or `ip6tables-legacy` for
    /// the legacy tables).
    pub family: String,
    /// The table.
    pub table: String,
    /// The base chain whose verdict drops (the chain hooked at input).
    pub chain: String,
    /// The policy or rule that drops (`policy drop`, or the rule as text
    /// with the chain it is in when reached through a jump).
    pub what: String,
    /// Who manages it.
    pub manager: Manager,
}

impl std::fmt::Display for Dropper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} table {} chain {}: {}",
            self.family, self.table, self.chain, self.what
        )
    }
}

/// What the host does with a new connection to a door's port (a TCP SYN
/// or a UDP datagram from an arbitrary address, not on loopback) after our
/// accept.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fate {
    /// Nothing drops it.
    Passes,
    /// This drops (or rejects) it.
    Dropped(Dropper),
}

/// The host's ruleset at the input hook.
#[derive(Clone, Debug, Default)]
pub struct HostRuleset {
    tables: Vec<Table>,
}

/// The most output a ruleset listing may have (a host with hundreds of
/// thousands of rules is not one we can reason about anyway).
const MAX_OUTPUT: u64 = 32 << 20;

/// How deep jumps may nest before the analysis stops following them
/// (nftables itself refuses more than 16 levels; loops end here).
const MAX_DEPTH: usize = 16;

/// How many rules the walk for one packet may look at in all.
const MAX_STEPS: usize = 1_000_000;

impl HostRuleset {
    /// Reads the ruleset of the calling thread's network namespace:
    /// `nft -j list ruleset`; for an iptables-nft `filter` table with
    /// iptables' own matches in it (which the JSON does not spell out),
    /// also `iptables-nft-save -t filter` / `ip6tables-nft-save -t filter`;
    /// and `iptables-legacy-save` / `ip6tables-legacy-save` where those
    /// programs are installed (they print only the tables in use).
    ///
    /// # Errors
    /// The ruleset cannot be read (no permission, `nft` missing, output
    /// that does not parse or is larger than 32 MiB).
    pub fn read() -> Result<HostRuleset, Error> {
        let json = run_bounded("nft", &["-j", "list", "ruleset"])?;
        let mut host = HostRuleset::from_nft_json(&json)?;
        for v6 in [false, true] {
            if host.has_xt(v6) {
                let program = if v6 {
                    "ip6tables-nft-save"
                } else {
                    "iptables-nft-save"
                };
                match run_bounded(program, &["-t", "filter"]) {
                    Ok(text) => host = host.with_iptables_nft_save(v6, &text)?,
                    // Without it, iptables' own matches stay unknown.
                    Err(Error::MissingBinary { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            let program = if v6 {
                "ip6tables-legacy-save"
            } else {
                "iptables-legacy-save"
            };
            match run_bounded(program, &[]) {
                Ok(text) => host = host.with_iptables_legacy_save(v6, &text)?,
                Err(Error::MissingBinary { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(host)
    }

    /// The ruleset printed by `nft -j list ruleset`.
    ///
    /// # Errors
    /// The text is not that JSON.
    pub fn from_nft_json(json: &str) -> Result<HostRuleset, Error> {
        let bad = |detail: String| Error::Config(format!("nft -j list ruleset: {detail}"));
        let root: Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let items = root
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no `nftables` array".into()))?;
        let mut host = HostRuleset::default();
        // Named sets (their elements), chains, then the rules of the chains
        // (the listing keeps rule order).
        let mut sets: BTreeMap<(String, String), Sets> = BTreeMap::new();
        for item in items {
            if let Some(set) = item.get("set") {
                if let (Some(family), Some(table), Some(name)) = (
                    str_of(set, "family"),
                    str_of(set, "table"),
                    str_of(set, "name"),
                ) {
                    let elems = set
                        .get("elem")
                        .and_then(Value::as_array)
                        .map(|elems| elems.iter().map(element).collect())
                        .unwrap_or_default();
                    sets.entry((family.to_owned(), table.to_owned()))
                        .or_default()
                        .insert(name.to_owned(), Value::Array(elems));
                }
            }
        }
        for item in items {
            if let Some(c) = item.get("chain") {
                let (Some(family), Some(table), Some(name)) =
                    (str_of(c, "family"), str_of(c, "table"), str_of(c, "name"))
                else {
                    return Err(bad(format!("a chain without family, table or name: {c}")));
                };
                let Some(t) = host.nft_table(family, table) else {
                    continue;
                };
                let base = (str_of(c, "hook") == Some("input")).then(|| Base {
                    prio: c.get("prio").and_then(Value::as_i64).unwrap_or(0),
                    policy_drop: str_of(c, "policy") == Some("drop"),
                });
                t.chains.insert(
                    name.to_owned(),
                    Chain {
                        base,
                        rules: Vec::new(),
                    },
                );
            }
        }
        for item in items {
            if let Some(r) = item.get("rule") {
                let (Some(family), Some(table), Some(chain)) =
                    (str_of(r, "family"), str_of(r, "table"), str_of(r, "chain"))
                else {
                    return Err(bad(format!("a rule without family, table or chain: {r}")));
                };
                let Some(t) = host.nft_table(family, table) else {
                    continue;
                };
                let no_sets = Sets::new();
                let table_sets = sets
                    .get(&(family.to_owned(), table.to_owned()))
                    .unwrap_or(&no_sets);
                let rule = nft_rule(r, &t.chains, table_sets);
                match t.chains.get_mut(chain) {
                    Some(c) => c.rules.push(rule),
                    None => {
                        return Err(bad(format!(
                            "a rule of chain {chain} that is not listed in {family} {table}"
                        )))
                    }
                }
            }
        }
        Ok(host)
    }

    /// Adds the `filter` table printed by `iptables-nft-save -t filter`
    /// (`ip6tables-nft-save` with `v6`); it replaces the `ip filter` (`ip6
    /// filter`) table read from `nft`, whose iptables matches the JSON does
    /// not spell out. Text without a `filter` table changes nothing.
    ///
    /// # Errors
    /// The text does not parse.
    pub fn with_iptables_nft_save(mut self, v6: bool, text: &str) -> Result<HostRuleset, Error> {
        let family = if v6 { "ip6" } else { "ip" };
        if let Some(chains) = parse_save(text, &format!("{family}tables-nft-save"))? {
            self.tables
                .retain(|t| !(t.family == family && t.name == "filter" && !t.legacy));
            self.tables.push(Table {
                family: family.into(),
                v4: !v6,
                v6,
                name: "filter".into(),
                legacy: false,
                chains,
            });
        }
        Ok(self)
    }

    /// Adds the `filter` table printed by `iptables-legacy-save`
    /// (`ip6tables-legacy-save` with `v6`). Text without a `filter` table
    /// (no legacy table in use) changes nothing.
    ///
    /// # Errors
    /// The text does not parse.
    pub fn with_iptables_legacy_save(mut self, v6: bool, text: &str) -> Result<HostRuleset, Error> {
        let family = if v6 {
            "ip6tables-legacy"
        } else {
            "iptables-legacy"
        };
        if let Some(chains) = parse_save(text, &format!("{family}-save"))? {
            self.tables.retain(|t| t.family != family);
            self.tables.push(Table {
                family: family.into(),
                v4: !v6,
                v6,
                name: "filter".into(),
                legacy: true,
                chains,
            });
        }
        Ok(self)
    }

    /// What the host does with a new connection to `step` over IPv6
    /// (`v6`) or IPv4, with our accept at `placement`.
    ///
    /// Every base chain at the input hook that sees the packet is asked in
    /// priority order, except the one our accept decides in. A rule
    /// applies only if each of its matches surely holds for a new
    /// connection from any address not on loopback: a conditional accept
    /// (`ip saddr 10.0.0.0/8 accept`) does not accept for everyone, and a
    /// conditional drop does not drop for everyone.
    pub fn fate(&self, v6: bool, step: Step, placement: &Placement) -> Fate {
        let packet = Packet {
            v6,
            proto: match step.proto {
                Proto::Tcp => TCP,
                Proto::Udp => UDP,
            },
            port: step.port,
        };
        let mut bases: Vec<(&Table, &str, &Chain, i64)> = Vec::new();
        for t in &self.tables {
            if !(if v6 { t.v6 } else { t.v4 }) {
                continue;
            }
            for (name, c) in &t.chains {
                if let Some(base) = &c.base {
                    if !t.decided_by(name, placement) {
                        bases.push((t, name, c, base.prio));
                    }
                }
            }
        }
        bases.sort_by_key(|b| b.3);
        for (t, name, chain, _) in bases {
            let mut walk = Walk {
                table: t,
                packet,
                steps: 0,
            };
            let what = match walk.chain(name, chain, 0) {
                Outcome::Accept => continue,
                Outcome::Drop(what) => what,
                Outcome::End => {
                    if chain.base.as_ref().is_some_and(|b| b.policy_drop) {
                        "policy drop".to_owned()
                    } else {
                        continue;
                    }
                }
            };
            return Fate::Dropped(Dropper {
                family: t.family.clone(),
                table: t.name.clone(),
                chain: name.to_owned(),
                what,
                manager: t.manager(),
            });
        }
        Fate::Passes
    }

    /// The nftables table `family name`, made on first use; `None` for
    /// families that never see an IP packet at the input hook.
    fn nft_table(&mut self, family: &str, name: &str) -> Option<&mut Table> {
        let (v4, v6) = match family {
            "ip" => (true, false),
            "ip6" => (false, true),
            "inet" => (true, true),
            _ => return None,
        };
        let at = match self
            .tables
            .iter()
            .position(|t| !t.legacy && t.family == family && t.name == name)
        {
            Some(at) => at,
            None => {
                self.tables.push(Table {
                    family: family.into(),
                    v4,
                    v6,
                    name: name.into(),
                    legacy: false,
                    chains: BTreeMap::new(),
                });
                self.tables.len() - 1
            }
        };
        self.tables.get_mut(at)
    }

    /// Whether the iptables-nft `filter` table of the family has iptables'
    /// own matches, which only `iptables-nft-save` spells out.
    fn has_xt(&self, v6: bool) -> bool {
        let family = if v6 { "ip6" } else { "ip" };
        self.tables.iter().any(|t| {
            !t.legacy
                && t.family == family
                && t.name == "filter"
                && t.chains.values().any(|c| c.rules.iter().any(|r| r.xt))
        })
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;

/// Our symbolic packet: a new connection from an arbitrary address, not on
/// loopback, to this host.
#[derive(Clone, Copy, Debug)]
struct Packet {
    v6: bool,
    proto: u8,
    port: u16,
}

/// Whether a match holds for our packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    fn of(b: bool) -> Tri {
        if b {
            Tri::True
        } else {
            Tri::False
        }
    }
}

/// One match of a rule.
#[derive(Clone, Debug)]
enum Test {
    /// Known without looking at the packet (`ct state new`, `iifname "lo"`,
    /// or something we do not understand).
    Is(Tri),
    /// The address family (`meta nfproto ipv6`, `ip6 ...` payloads).
    V6(bool),
    /// A field of the IPv6 (`v6`) or IPv4 header: false for the other
    /// family, unknown (an address, say) for its own, negated or not.
    Header { v6: bool },
    /// The layer 4 protocol is (not, with `negate`) one of these.
    L4 { protos: Vec<u8>, negate: bool },
    /// The destination port is (not) in these ranges; `proto` is the
    /// protocol the match implies (`tcp dport`), none for `th dport`.
    Dport {
        proto: Option<u8>,
        ranges: Vec<(u16, u16)>,
        negate: bool,
    },
}

impl Test {
    fn eval(&self, p: Packet) -> Tri {
        match self {
            Test::Is(t) => *t,
            Test::V6(v6) => Tri::of(*v6 == p.v6),
            Test::Header { v6 } if *v6 != p.v6 => Tri::False,
            Test::Header { .. } => Tri::Unknown,
            Test::L4 { protos, negate } => Tri::of(protos.contains(&p.proto) != *negate),
            Test::Dport {
                proto,
                ranges,
                negate,
            } => {
                if proto.is_some_and(|pr| pr != p.proto) {
                    return Tri::False;
                }
                let inside = ranges.iter().any(|&(a, b)| a <= p.port && p.port <= b);
                Tri::of(inside != *negate)
            }
        }
    }
}

/// What a rule does when all its matches hold.
#[derive(Clone, Debug)]
enum Verdict {
    Accept,
    Drop,
    Jump(String),
    Goto(String),
    Return,
    /// A verdict map (`ct state vmap { ... }`): the first entry whose key
    /// surely matches decides.
    Map(Vec<(Test, Verdict)>),
    /// No verdict (`counter`, `log`): the next rule is asked.
    Continue,
}

#[derive(Clone, Debug)]
struct Rule {
    tests: Vec<Test>,
    verdict: Verdict,
    /// The rule as short text, with its handle or number.
    text: String,
    /// Whether it has an iptables match that the JSON does not spell out.
    xt: bool,
}

#[derive(Clone, Debug)]
struct Base {
    prio: i64,
    policy_drop: bool,
}

#[derive(Clone, Debug)]
struct Chain {
    /// Set for a base chain hooked at input.
    base: Option<Base>,
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Table {
    /// `ip`, `ip6`, `inet`, `iptables-legacy` or `ip6tables-legacy`.
    family: String,
    v4: bool,
    v6: bool,
    name: String,
    legacy: bool,
    chains: BTreeMap<String, Chain>,
}

impl Table {
    /// Whether our accept at `placement` decides in this table's base chain `chain`.
    fn decided_by(&self, chain: &str, placement: &Placement) -> bool {
        match placement {
            Placement::NftTable(name) => {
                !self.legacy && self.family == "inet" && self.name == *name && chain == "input"
            }
            Placement::IptablesInput => {
                (self.legacy || self.family == "ip" || self.family == "ip6")
                    && self.name == "filter"
                    && chain == "INPUT"
            }
        }
    }

    fn manager(&self) -> Manager {
        if self.name.starts_with("ufw") || self.chains.keys().any(|c| c.starts_with("ufw")) {
            Manager::Ufw
        } else if self.legacy {
            Manager::IptablesLegacy
        } else if self.family == "inet" && self.name == "firewalld" {
            Manager::Firewalld
        } else if (self.family == "ip" || self.family == "ip6") && self.name == "filter" {
            Manager::Iptables
        } else {
            Manager::Nftables
        }
    }
}

enum Outcome {
    Accept,
    Drop(String),
    /// The end of the chain or a `return`.
    End,
}

struct Walk<'a> {
    table: &'a Table,
    packet: Packet,
    steps: usize,
}

impl Walk<'_> {
    fn chain(&mut self, name: &str, chain: &Chain, depth: usize) -> Outcome {
        for rule in &chain.rules {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Outcome::End;
            }
            if !rule.tests.iter().all(|t| t.eval(self.packet) == Tri::True) {
                continue;
            }
            if let Some(outcome) = self.verdict(name, rule, &rule.verdict, depth) {
                return outcome;
            }
        }
        Outcome::End
    }
}

impl Walk<'_> {
    /// What `verdict` of `rule` (in chain `name`) does; `None` when the
    /// next rule is asked.
    fn verdict(
        &mut self,
        name: &str,
        rule: &Rule,
        verdict: &Verdict,
        depth: usize,
    ) -> Option<Outcome> {
        match verdict {
            Verdict::Accept => Some(Outcome::Accept),
            Verdict::Drop => {
                let mut what = format!("rule {}", rule.text);
                if depth > 0 {
                    what.push_str(&format!(" in chain {name}"));
                }
                Some(Outcome::Drop(what))
            }
            Verdict::Return => Some(Outcome::End),
            Verdict::Continue => None,
            Verdict::Map(entries) => {
                for (test, verdict) in entries {
                    match test.eval(self.packet) {
                        Tri::True => return self.verdict(name, rule, verdict, depth),
                        Tri::False => {}
                        // The packet may take this entry or a later one.
                        Tri::Unknown => return None,
                    }
                }
                None
            }
            Verdict::Jump(target) | Verdict::Goto(target) => {
                // Past the depth bound (a loop) the jump is not followed.
                let next = self.table.chains.get(target)?;
                if depth >= MAX_DEPTH {
                    return None;
                }
                match self.chain(target, next, depth + 1) {
                    Outcome::End if matches!(verdict, Verdict::Jump(_)) => None,
                    other => Some(other),
                }
            }
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A rule of `nft -j list ruleset`.
/// The named sets of a table: their elements by name.
type Sets = BTreeMap<String, Value>;

/// An element of a set as listed: its value without timeout or comment.
fn element(e: &Value) -> Value {
    e.get("elem")
        .and_then(|el| el.get("val"))
        .cloned()
        .unwrap_or_else(|| e.clone())
}

/// `right`, with a named set (`@name`) replaced by its elements; `None`
/// for a set the listing does not have.
fn resolve(right: &Value, sets: &Sets) -> Option<Value> {
    match right.as_str().and_then(|s| s.strip_prefix('@')) {
        Some(name) => sets.get(name).cloned(),
        None => Some(right.clone()),
    }
}

fn nft_rule(r: &Value, chains: &BTreeMap<String, Chain>, sets: &Sets) -> Rule {
    let mut rule = Rule {
        tests: Vec::new(),
        verdict: Verdict::Continue,
        text: String::new(),
        xt: false,
    };
    let mut words = Vec::new();
    let exprs = r.get("expr").and_then(Value::as_array);
    for e in exprs.into_iter().flatten() {
        let Some((key, body)) = e.as_object().and_then(|o| o.iter().next()) else {
            rule.tests.push(Test::Is(Tri::Unknown));
            continue;
        };
        match key.as_str() {
            "match" => {
                let (test, text) = nft_match(body, sets);
                rule.tests.push(test);
                words.push(text);
            }
            "counter" => {}
            "log" => words.push("log".into()),
            "accept" | "drop" | "reject" | "return" => {
                rule.verdict = match key.as_str() {
                    "accept" => Verdict::Accept,
                    "return" => Verdict::Return,
                    _ => Verdict::Drop,
                };
                words.push(key.clone());
            }
            "jump" | "goto" => {
                let target = str_of(body, "target").unwrap_or_default().to_owned();
                words.push(format!("{key} {target}"));
                if !chains.contains_key(&target) {
                    rule.tests.push(Test::Is(Tri::Unknown));
                }
                rule.verdict = if key == "jump" {
                    Verdict::Jump(target)
                } else {
                    Verdict::Goto(target)
                };
            }
            "vmap" => match nft_vmap(body, chains) {
                Some(entries) => {
                    words.push(format!(
                        "{} vmap {}",
                        nft_test(body.get("key").unwrap_or(&Value::Null), &Value::Null).1,
                        show(body.get("data").unwrap_or(&Value::Null))
                    ));
                    rule.verdict = Verdict::Map(entries);
                }
                None => {
                    words.push("vmap".into());
                    rule.tests.push(Test::Is(Tri::Unknown));
                }
            },
            other => {
                if other == "xt" {
                    rule.xt = true;
                    words.push(format!("xt {}", str_of(body, "name").unwrap_or("?")));
                } else {
                    words.push(other.to_owned());
                }
                // A statement we do not model may match or not, or change the packet.
                rule.tests.push(Test::Is(Tri::Unknown));
            }
        }
    }
    let handle = r.get("handle").and_then(Value::as_u64).unwrap_or(0);
    rule.text = format!("`{}` (handle {handle})", words.join(" "));
    rule
}

/// The entries of a verdict map, `None` for one we cannot read.
fn nft_vmap(body: &Value, chains: &BTreeMap<String, Chain>) -> Option<Vec<(Test, Verdict)>> {
    let key = body.get("key")?;
    let data = body.get("data")?;
    let entries = data.get("set").unwrap_or(data).as_array()?;
    entries
        .iter()
        .map(|entry| {
            let [k, v] = entry.as_array()?.as_slice() else {
                return None;
            };
            let (verb, arg) = v.as_object()?.iter().next()?;
            let verdict = match verb.as_str() {
                "accept" => Verdict::Accept,
                "drop" | "reject" => Verdict::Drop,
                "return" => Verdict::Return,
                "continue" => Verdict::Continue,
                "jump" | "goto" => {
                    let target = str_of(arg, "target")?.to_owned();
                    if !chains.contains_key(&target) {
                        return None;
                    }
                    if verb == "jump" {
                        Verdict::Jump(target)
                    } else {
                        Verdict::Goto(target)
                    }
                }
                _ => return None,
            };
            Some((nft_test(key, k).0, verdict))
        })
        .collect()
}

/// A `match` expression: the test and its short text.
fn nft_match(m: &Value, sets: &Sets) -> (Test, String) {
    let op = str_of(m, "op").unwrap_or("?");
    let left = m.get("left").unwrap_or(&Value::Null);
    let right = m.get("right").unwrap_or(&Value::Null);
    let (test, left_text) = match resolve(right, sets) {
        Some(right) => nft_test(left, &right),
        None => (Test::Is(Tri::Unknown), nft_test(left, &Value::Null).1),
    };
    let negate = match op {
        "==" | "in" => false,
        "!=" => true,
        _ => {
            return (
                Test::Is(Tri::Unknown),
                format!("{left_text} {op} {}", show(right)),
            )
        }
    };
    let op_text = if negate { "!= " } else { "" };
    let text = format!("{left_text} {op_text}{}", show(right));
    let test = match (test, negate) {
        (test, false) => test,
        (Test::Is(Tri::True), true) => Test::Is(Tri::False),
        (Test::Is(Tri::False), true) => Test::Is(Tri::True),
        (Test::Is(Tri::Unknown), true) => Test::Is(Tri::Unknown),
        (Test::V6(v6), true) => Test::V6(!v6),
        (header @ Test::Header { .. }, true) => header,
        (Test::L4 { protos, negate }, true) => Test::L4 {
            protos,
            negate: !negate,
        },
        (
            Test::Dport {
                proto,
                ranges,
                negate,
            },
            true,
        ) => Test::Dport {
            proto,
            ranges,
            negate: !negate,
        },
    };
    (test, text)
}

/// The test for `left == right`, and the text of `left`.
fn nft_test(left: &Value, right: &Value) -> (Test, String) {
    let unknown = Test::Is(Tri::Unknown);
    if let Some(p) = left.get("payload") {
        let proto = str_of(p, "protocol").unwrap_or("?");
        let field = str_of(p, "field").unwrap_or("?");
        let text = format!("{proto} {field}");
        let implied = match proto {
            "tcp" => Some(TCP),
            "udp" => Some(UDP),
            "th" => None,
            // An address or other header field: unknown for its family.
            "ip" => return (Test::Header { v6: false }, text),
            "ip6" => return (Test::Header { v6: true }, text),
            "icmp" => Some(1),
            "icmpv6" => Some(58),
            "sctp" => Some(132),
            _ => return (unknown, text),
        };
        if field == "dport" && implied != Some(1) && implied != Some(58) {
            if let Some(ranges) = ports(right) {
                return (
                    Test::Dport {
                        proto: implied,
                        ranges,
                        negate: false,
                    },
                    text,
                );
            }
        }
        // Another field of a protocol: false for other protocols.
        return match implied {
            Some(pr) if pr != TCP && pr != UDP => (
                Test::L4 {
                    protos: vec![pr],
                    negate: false,
                },
                text,
            ),
            _ => (unknown, text),
        };
    }
    if let Some(meta) = left.get("meta") {
        let key = str_of(meta, "key").unwrap_or("?");
        let text = format!("meta {key}");
        let test = match key {
            "l4proto" => match protocols(right) {
                Some(protos) => Test::L4 {
                    protos,
                    negate: false,
                },
                None => unknown,
            },
            "nfproto" | "protocol" => match right.as_str() {
                Some("ipv4" | "ip") => Test::V6(false),
                Some("ipv6" | "ip6") => Test::V6(true),
                _ => unknown,
            },
            // Our packet does not come in on loopback.
            "iifname" | "iif" if right.as_str() == Some("lo") => Test::Is(Tri::False),
            _ => unknown,
        };
        return (test, text);
    }
    if let Some(ct) = left.get("ct") {
        let key = str_of(ct, "key").unwrap_or("?");
        let text = format!("ct {key}");
        if key == "state" {
            if let Some(states) = strings(right) {
                return (Test::Is(Tri::of(states.iter().any(|s| s == "new"))), text);
            }
        }
        return (unknown, text);
    }
    if let Some(fib) = left.get("fib") {
        let text = "fib".to_owned();
        let daddr = fib
            .get("flags")
            .and_then(strings)
            .is_some_and(|f| f == ["daddr"]);
        if daddr && str_of(fib, "result") == Some("type") {
            if let Some(types) = strings(right) {
                // Our packet is addressed to this host.
                return (Test::Is(Tri::of(types.iter().any(|t| t == "local"))), text);
            }
        }
        return (unknown, text);
    }
    (unknown, show(left))
}

/// Strings: one, an array, or a `{"set": [...]}`.
fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        // A named set that was not looked up is no string to compare.
        Value::String(s) if s.starts_with('@') => None,
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_owned)).collect(),
        Value::Object(o) => o.get("set").and_then(strings),
        _ => None,
    }
}

/// Port ranges: a number, `{"range": [a, b]}`, or an array or set of those.
fn ports(v: &Value) -> Option<Vec<(u16, u16)>> {
    let port = |x: &Value| x.as_u64().and_then(|n| u16::try_from(n).ok());
    match v {
        Value::Number(_) => port(v).map(|p| vec![(p, p)]),
        Value::Array(a) => a.iter().try_fold(Vec::new(), |mut all, x| {
            all.extend(ports(x)?);
            Some(all)
        }),
        Value::Object(o) => {
            if let Some(set) = o.get("set") {
                ports(set)
            } else {
                let r = o.get("range")?.as_array()?;
                match r.as_slice() {
                    [a, b] => Some(vec![(port(a)?, port(b)?)]),
                    _ => None,
                }
            }
        }
        _ => None,
    }
}

/// Layer 4 protocols by name or number, one or a set.
fn protocols(v: &Value) -> Option<Vec<u8>> {
    let one = |x: &Value| -> Option<u8> {
        if let Some(n) = x.as_u64() {
            return u8::try_from(n).ok();
        }
        Some(match x.as_str()? {
            "tcp" => TCP,
            "udp" => UDP,
            "icmp" => 1,
            "igmp" => 2,
            "gre" => 47,
            "esp" => 50,
            "ah" => 51,
            "ipv6-icmp" | "icmpv6" => 58,
            "sctp" => 132,
            "udplite" => 136,
            _ => return None,
        })
    };
    match v {
        Value::Array(a) => a.iter().map(one).collect(),
        Value::Object(o) => o.get("set").and_then(protocols),
        _ => one(v).map(|p| vec![p]),
    }
}

/// A value as short nft-like text.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(show).collect();
            format!("{{ {} }}", items.join(", "))
        }
        Value::Object(o) => {
            if let Some(set) = o.get("set") {
                show(set)
            } else if let Some(Value::Array(r)) = o.get("range") {
                let items: Vec<String> = r.iter().map(show).collect();
                items.join("-")
            } else if let Some(p) = o.get("prefix") {
                format!(
                    "{}/{}",
                    p.get("addr").map(show).unwrap_or_default(),
                    p.get("len").map(show).unwrap_or_default()
                )
            } else {
                v.to_string()
            }
        }
        _ => v.to_string(),
    }
}

/// The `filter` table of an `iptables-save` listing (`None` without one):
/// its chains, with `INPUT` as the base chain at the input hook.
fn parse_save(text: &str, program: &str) -> Result<Option<BTreeMap<String, Chain>>, Error> {
    let bad =
        |line: usize, detail: &str| Error::Config(format!("{program}, line {line}: {detail}"));
    let mut chains: Option<BTreeMap<String, Chain>> = None;
    let mut in_filter = false;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(table) = line.strip_prefix('*') {
            in_filter = table == "filter";
            if in_filter {
                chains = Some(BTreeMap::new());
            }
            continue;
        }
        if line == "COMMIT" {
            in_filter = false;
            continue;
        }
        if !in_filter {
            continue;
        }
        let Some(table) = chains.as_mut() else {
            continue;
        };
        if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let (Some(name), Some(policy)) = (words.next(), words.next()) else {
                return Err(bad(n, "a chain without a policy"));
            };
            let base = (name == "INPUT").then(|| Base {
                prio: 0,
                policy_drop: policy == "DROP",
            });
            table.insert(
                name.to_owned(),
                Chain {
                    base,
                    rules: Vec::new(),
                },
            );
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let words = split_words(rest).ok_or_else(|| bad(n, "an unclosed quote"))?;
            let Some((chain, args)) = words.split_first() else {
                return Err(bad(n, "-A without a chain"));
            };
            if !table.contains_key(chain) {
                return Err(bad(
                    n,
                    &format!("a rule of chain {chain}, which is not declared"),
                ));
            }
            let number = table.get(chain).map_or(0, |c| c.rules.len()) + 1;
            let mut rule = save_rule(args, table);
            rule.text = format!("`{}` (rule {number})", args.join(" "));
            if let Some(c) = table.get_mut(chain) {
                c.rules.push(rule);
            }
        } else {
            return Err(bad(n, &format!("not a line of iptables-save: {line}")));
        }
    }
    Ok(chains)
}

/// Splits a rule line into words, honouring double quotes (comments).
fn split_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return None;
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// The matches and target of one `-A` line of `iptables-save`.
fn save_rule(args: &[String], chains: &BTreeMap<String, Chain>) -> Rule {
    let mut rule = Rule {
        tests: Vec::new(),
        verdict: Verdict::Continue,
        text: String::new(),
        xt: false,
    };
    let mut proto: Option<u8> = None;
    let mut negate = false;
    let mut i = 0;
    let value = |i: usize| args.get(i + 1).map(String::as_str).unwrap_or("");
    while let Some(arg) = args.get(i) {
        let arg = arg.as_str();
        if arg == "!" {
            negate = true;
            i += 1;
            continue;
        }
        let v = value(i);
        let mut used = 2;
        match arg {
            "-p" | "--protocol" => {
                proto = protocols(&Value::String(v.to_owned()))
                    .or_else(|| v.parse().ok().map(|n: u8| vec![n]))
                    .and_then(|p| p.first().copied());
                rule.tests.push(match (v, proto) {
                    ("all", _) => Test::Is(if negate { Tri::False } else { Tri::True }),
                    (_, Some(p)) => Test::L4 {
                        protos: vec![p],
                        negate,
                    },
                    _ => Test::Is(Tri::Unknown),
                });
            }
            "-i" | "--in-interface" => rule.tests.push(if v == "lo" {
                Test::Is(Tri::of(negate))
            } else {
                Test::Is(Tri::Unknown)
            }),
            "-m" | "--match" => {
                // Modules whose options we read, or that only load options.
                if !matches!(
                    v,
                    "tcp" | "udp" | "multiport" | "conntrack" | "state" | "addrtype" | "comment"
                ) {
                    rule.tests.push(Test::Is(Tri::Unknown));
                }
            }
            "--comment" => {}
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                let ranges: Option<Vec<(u16, u16)>> = v
                    .split(',')
                    .map(|r| {
                        let (a, b) = r.split_once(':').unwrap_or((r, r));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                rule.tests.push(match (ranges, proto) {
                    (Some(ranges), Some(p)) => Test::Dport {
                        proto: Some(p),
                        ranges,
                        negate,
                    },
                    _ => Test::Is(Tri::Unknown),
                });
            }
            "--ctstate" | "--state" => {
                let new = v.split(',').any(|s| s == "NEW");
                rule.tests.push(Test::Is(Tri::of(new != negate)));
            }
            "--dst-type" => {
                // Our packet is addressed to this host.
                let local = v.split(',').any(|s| s == "LOCAL");
                rule.tests.push(Test::Is(Tri::of(local != negate)));
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                rule.verdict = match v {
                    "ACCEPT" => Verdict::Accept,
                    "DROP" | "REJECT" => Verdict::Drop,
                    "RETURN" => Verdict::Return,
                    "LOG" | "NFLOG" | "ULOG" => Verdict::Continue,
                    chain if chains.contains_key(chain) => {
                        if arg.starts_with("-j") || arg == "--jump" {
                            Verdict::Jump(chain.to_owned())
                        } else {
                            Verdict::Goto(chain.to_owned())
                        }
                    }
                    _ => {
                        // A target extension we do not model (MARK, TARPIT...).
                        rule.tests.push(Test::Is(Tri::Unknown));
                        Verdict::Continue
                    }
                };
            }
            _ => {
                // An option we do not model: unknown, with its values.
                rule.tests.push(Test::Is(Tri::Unknown));
                used = 1;
                while args
                    .get(i + used)
                    .is_some_and(|a| !a.starts_with('-') && a != "!")
                {
                    used += 1;
                }
            }
        }
        negate = false;
        i += used;
    }
    rule
}

/// Runs `program` with `args` and returns its stdout, refusing more than
/// [`MAX_OUTPUT`] bytes.
fn run_bounded(program: &str, args: &[&str]) -> Result<String, Error> {
    let what = format!("read the host's ruleset ({program} {})", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::from_io(what.clone(), program, e))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Error::Config(format!("{what}: no pipes")));
    };
    let (out, err) = std::thread::scope(|s| {
        let err = s.spawn(move || {
            let mut buf = Vec::new();
            let mut stderr = stderr;
            let _ = (&mut stderr).take(64 << 10).read_to_end(&mut buf);
            // Drain the rest so the program never blocks on a full pipe.
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            buf
        });
        let mut buf = Vec::new();
        let read = stdout.take(MAX_OUTPUT + 1).read_to_end(&mut buf);
        (read.map(|_| buf), err.join().unwrap_or_default())
    });
    let too_big = out.as_ref().is_ok_and(|b| b.len() as u64 > MAX_OUTPUT);
    if too_big {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| Error::from_io(what.clone(), program, e))?;
    let out = out.map_err(|e| Error::from_io(what.clone(), program, e))?;
    if too_big {
        return Err(Error::Program {
            what,
            program: program.to_owned(),
            detail: format!("more than {} MiB of output", MAX_OUTPUT >> 20),
        });
    }
    if !status.success() {
        let detail = String::from_utf8_lossy(&err).trim().to_owned();
        let detail = if detail.is_empty() {
            status.to_string()
        } else {
            detail
        };
        return Err(Error::from_program(what, program, detail));
    }
    String::from_utf8(out).map_err(|_| Error::Program {
        what,
        program: program.to_owned(),
        detail: "output that is not UTF-8".into(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

    use super::*;

    #[test]
    fn output_is_bounded() {
        let size = (MAX_OUTPUT + 1).to_string();
        let err = run_bounded("head", &["-c", &size, "/dev/zero"]).unwrap_err();
        assert!(err.to_string().contains("more than 32 MiB"), "{err}");
        assert_eq!(run_bounded("echo", &["ok"]).unwrap(), "ok\n");
    }

    #[test]
    fn failures_say_what_failed() {
        let err = run_bounded("knock-no-such-program", &[]).unwrap_err();
        assert!(matches!(err, Error::MissingBinary { .. }), "{err}");
        let err = run_bounded("sh", &["-c", "echo broken >&2; exit 3"]).unwrap_err();
        assert!(
            matches!(&err, Error::Program { detail, .. } if detail == "broken"),
            "{err}"
        );
    }

    #[test]
    #[ignore = "needs root (to drop it)"]
    fn without_privilege_is_permission_denied() {
        // nft says "Operation not permitted", iptables-legacy-save
        // "Permission denied".
        for program in [&["nft", "list", "ruleset"][..], &["iptables-legacy-save"]] {
            let mut args = vec!["--reuid=65534", "--regid=65534", "--clear-groups"];
            args.extend_from_slice(program);
            let err = run_bounded("setpriv", &args).unwrap_err();
            assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
        }
    }

    #[test]
    fn rule_words_keep_quoted_comments() {
        assert_eq!(
            split_words(r#"INPUT -m comment --comment "a \"b\" c" -j DROP"#).unwrap(),
            [
                "INPUT",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "DROP"
            ]
        );
        assert_eq!(split_words(r#"INPUT --comment "open"#), None);
    }

    #[test]
    fn save_rules_match_what_they_say() {
        let text = "*filter\n:INPUT ACCEPT [0:0]\n:x - [0:0]\n\
            -A INPUT ! -i lo -p udp -m multiport --dports 53,60000:61000 -j x\n\
            -A INPUT -s 198.18.0.0/15 -p tcp -j DROP\n\
            -A INPUT -p tcp -m conntrack --ctstate NEW -m tcp ! --dport 22 -j REJECT\n\
            -A x -j DROP\nCOMMIT\n";
        let host = HostRuleset::default()
            .with_iptables_legacy_save(false, text)
            .unwrap();
        let fate = |step| match host.fate(false, step, &Placement::NftTable("k".into())) {
            Fate::Dropped(d) => d.what,
            Fate::Passes => "passes".into(),
        };
        assert_eq!(fate(Step::udp(60500)), "rule `-j DROP` (rule 1) in chain x");
        assert_eq!(fate(Step::udp(54)), "passes");
        assert_eq!(fate(Step::tcp(22)), "passes");
        assert_eq!(
            fate(Step::tcp(80)),
            "rule `-p tcp -m conntrack --ctstate NEW -m tcp ! --dport 22 -j REJECT` (rule 3)"
        );
        let err = HostRuleset::default()
            .with_iptables_legacy_save(false, "*filter\n-A INPUT -j DROP\n")
            .unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
