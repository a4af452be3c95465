//! What the host's own firewall does with a grant's packets: rulesets
//! captured from real namespaces (`tests/data/ruleset/`, see each
//! fixture's note below for how it was built) and, as root, rulesets the
//! tests build in namespaces of their own and read back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use knock_core::Step;
use knock_firewall::{Fate, HostRuleset, Manager, Placement};
use knock_testnet::Netns;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ruleset");

fn ours() -> Placement {
    Placement::NftTable("knock".into())
}

fn nft(name: &str) -> HostRuleset {
    let text = std::fs::read_to_string(format!("{DATA}/{name}")).unwrap();
    HostRuleset::from_nft_json(&text).unwrap()
}

fn save(name: &str) -> String {
    std::fs::read_to_string(format!("{DATA}/{name}")).unwrap()
}

/// The dropper of `fate`, or a failure saying it passes.
fn dropped(fate: Fate) -> knock_firewall::Dropper {
    match fate {
        Fate::Dropped(d) => d,
        other => panic!("expected a drop, got {other:?}"),
    }
}

// iptables_guide.json: `iptables -P INPUT DROP`, `-A INPUT -i lo -j ACCEPT`,
// `-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`
// (iptables-nft), then `nft -j list ruleset`.
#[test]
fn iptables_guide_drops_by_policy_unless_our_jump_is_in_input() {
    let host = nft("iptables_guide.json");
    let d = dropped(host.fate(false, Step::tcp(22), &ours()));
    assert_eq!(d.family, "ip");
    assert_eq!(d.table, "filter");
    assert_eq!(d.chain, "INPUT");
    assert_eq!(d.what, "policy drop");
    assert_eq!(d.manager, Manager::Iptables);
    assert_eq!(d.to_string(), "ip table filter chain INPUT: policy drop");
    assert!(matches!(
        host.fate(false, Step::udp(53), &ours()),
        Fate::Dropped(_)
    ));
    assert_eq!(
        host.fate(false, Step::tcp(22), &Placement::IptablesInput),
        Fate::Passes
    );
    // Only IPv4 was set up.
    assert_eq!(host.fate(true, Step::tcp(22), &ours()), Fate::Passes);
}

// nft_policy_drop.json: `table inet fw { chain input { type filter hook
// input priority filter; policy drop; ct state established,related accept } }`;
// nft_policy_drop_allow22.json: the same plus `tcp dport 22 accept`.
#[test]
fn native_policy_drop_drops_for_both_placements() {
    let host = nft("nft_policy_drop.json");
    for v6 in [false, true] {
        for placement in [ours(), Placement::IptablesInput] {
            let d = dropped(host.fate(v6, Step::tcp(22), &placement));
            assert_eq!(
                (d.family.as_str(), d.table.as_str(), d.chain.as_str()),
                ("inet", "fw", "input")
            );
            assert_eq!(d.what, "policy drop");
            assert_eq!(d.manager, Manager::Nftables);
        }
    }
}

#[test]
fn native_accept_of_the_port_passes() {
    let host = nft("nft_policy_drop_allow22.json");
    for v6 in [false, true] {
        assert_eq!(host.fate(v6, Step::tcp(22), &ours()), Fate::Passes);
        // Another port, or UDP to the same port, still meets the policy.
        assert!(matches!(
            host.fate(v6, Step::tcp(23), &ours()),
            Fate::Dropped(_)
        ));
        assert!(matches!(
            host.fate(v6, Step::udp(22), &ours()),
            Fate::Dropped(_)
        ));
    }
    // Our own table is never the dropper.
    let ours_named_fw = Placement::NftTable("fw".into());
    assert_eq!(
        host.fate(false, Step::tcp(23), &ours_named_fw),
        Fate::Passes
    );
}

// ufw_deny.json / ufw_allow22.json: tests/data/ruleset/ufw-netns.sh (ufw
// 0.36.2 over iptables-nft in a namespace) with "default deny incoming"
// "--force enable", then "allow 22/tcp"; the .ip.save/.ip6.save files are
// `iptables-nft-save -t filter` / `ip6tables-nft-save -t filter` of the
// same namespace (the JSON does not say what iptables' own matches, such as
// `-m addrtype`, test).
fn ufw(name: &str) -> HostRuleset {
    nft(&format!("{name}.json"))
        .with_iptables_nft_save(false, &save(&format!("{name}.ip.save")))
        .unwrap()
        .with_iptables_nft_save(true, &save(&format!("{name}.ip6.save")))
        .unwrap()
}

#[test]
fn ufw_default_deny_drops_unless_our_jump_is_in_input() {
    let host = ufw("ufw_deny");
    for v6 in [false, true] {
        let d = dropped(host.fate(v6, Step::tcp(22), &ours()));
        assert_eq!(d.manager, Manager::Ufw, "{d}");
        assert_eq!(d.table, "filter");
        assert_eq!(d.chain, "INPUT");
        assert_eq!(d.family, if v6 { "ip6" } else { "ip" });
        assert_eq!(
            host.fate(v6, Step::tcp(22), &Placement::IptablesInput),
            Fate::Passes
        );
    }
}

#[test]
fn ufw_allow_passes() {
    let host = ufw("ufw_allow22");
    for v6 in [false, true] {
        assert_eq!(
            host.fate(v6, Step::tcp(22), &ours()),
            Fate::Passes,
            "v6 {v6}"
        );
        let d = dropped(host.fate(v6, Step::tcp(2222), &ours()));
        assert_eq!(d.manager, Manager::Ufw, "{d}");
    }
    // The JSON alone hides what ufw-not-local's `-m addrtype` returns for,
    // so its final drop cannot be ruled out: the answer errs towards a drop.
    let d = dropped(nft("ufw_allow22.json").fate(false, Step::tcp(22), &ours()));
    assert!(d.what.contains("chain ufw-not-local"), "{d}");
}

// firewalld_default.json / firewalld_no_ssh.json:
// tests/data/ruleset/firewalld-netns.sh (firewalld 1.3.3, nftables backend,
// on a D-Bus system bus of its own in a namespace) with Debian's default
// configuration (zone public: ssh, dhcpv6-client), then with
// "--remove-service=ssh".
fn assert_firewalld_rejects(host: &HostRuleset, step: Step) {
    for v6 in [false, true] {
        let d = dropped(host.fate(v6, step, &ours()));
        assert_eq!(d.manager, Manager::Firewalld);
        assert_eq!(
            (d.family.as_str(), d.table.as_str(), d.chain.as_str()),
            ("inet", "firewalld", "filter_INPUT")
        );
        assert!(d.what.contains("reject"), "{d}");
        // Not our business, but the iptables jump does not help either.
        assert!(matches!(
            host.fate(v6, step, &Placement::IptablesInput),
            Fate::Dropped(_)
        ));
    }
}

#[test]
fn firewalld_rejects_what_the_zone_does_not_allow() {
    let host = nft("firewalld_default.json");
    for v6 in [false, true] {
        assert_eq!(host.fate(v6, Step::tcp(22), &ours()), Fate::Passes);
    }
    assert_firewalld_rejects(&host, Step::tcp(2222));
    // DHCPv6 is allowed to a link-local address only.
    assert_firewalld_rejects(&host, Step::udp(546));
    assert_firewalld_rejects(&nft("firewalld_no_ssh.json"), Step::tcp(22));
}

// iptables_legacy_guide.save: the guide's three commands with
// iptables-legacy, then `iptables-legacy-save`; ip6tables_legacy_empty.save
// is `ip6tables-legacy-save` of the same namespace (empty: no table in use).
#[test]
fn iptables_legacy_policy_drop() {
    let host = HostRuleset::default()
        .with_iptables_legacy_save(false, &save("iptables_legacy_guide.save"))
        .unwrap()
        .with_iptables_legacy_save(true, &save("ip6tables_legacy_empty.save"))
        .unwrap();
    let d = dropped(host.fate(false, Step::tcp(22), &ours()));
    assert_eq!(d.manager, Manager::IptablesLegacy);
    assert_eq!(d.what, "policy drop");
    assert_eq!((d.table.as_str(), d.chain.as_str()), ("filter", "INPUT"));
    assert_eq!(host.fate(true, Step::tcp(22), &ours()), Fate::Passes);
    assert_eq!(
        host.fate(false, Step::tcp(22), &Placement::IptablesInput),
        Fate::Passes
    );
}

#[test]
fn rules_through_jumps_name_their_chain_and_loops_end() {
    let json = r#"{"nftables": [
      {"table": {"family": "inet", "name": "t", "handle": 1}},
      {"chain": {"family": "inet", "table": "t", "name": "in", "handle": 1, "type": "filter",
                 "hook": "input", "prio": 0, "policy": "accept"}},
      {"chain": {"family": "inet", "table": "t", "name": "a", "handle": 2}},
      {"chain": {"family": "inet", "table": "t", "name": "b", "handle": 3}},
      {"rule": {"family": "inet", "table": "t", "chain": "in", "handle": 4,
                "expr": [{"jump": {"target": "a"}}]}},
      {"rule": {"family": "inet", "table": "t", "chain": "a", "handle": 5,
                "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}}, {"jump": {"target": "a"}}]}},
      {"rule": {"family": "inet", "table": "t", "chain": "a", "handle": 6,
                "expr": [{"match": {"op": "in", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [22, {"range": [8000, 8080]}]}}}, {"goto": {"target": "b"}}]}},
      {"rule": {"family": "inet", "table": "t", "chain": "b", "handle": 7,
                "expr": [{"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"drop": null}]}},
      {"rule": {"family": "inet", "table": "t", "chain": "b", "handle": 8,
                "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "198.18.0.0", "len": 15}}}}, {"accept": null}]}},
      {"rule": {"family": "inet", "table": "t", "chain": "b", "handle": 9,
                "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"reject": null}]}}
    ]}"#;
    let host = HostRuleset::from_nft_json(json).unwrap();
    // A loop (udp/53 jumps to its own chain) ends without an answer for it.
    assert_eq!(host.fate(false, Step::udp(53), &ours()), Fate::Passes);
    let d = dropped(host.fate(false, Step::tcp(8001), &ours()));
    assert_eq!(d.chain, "in");
    assert!(
        d.what.contains("chain b") && d.what.contains("handle 7"),
        "{d}"
    );
    // The accept for one source does not accept for all: the reject decides.
    let d = dropped(host.fate(true, Step::tcp(22), &ours()));
    assert!(
        d.what.contains("reject") && d.what.contains("handle 9"),
        "{d}"
    );
    assert_eq!(host.fate(false, Step::tcp(9000), &ours()), Fate::Passes);
}

#[test]
fn bad_input_is_an_error() {
    assert!(HostRuleset::from_nft_json("not json").is_err());
    assert!(HostRuleset::from_nft_json(r#"{"nftables": 3}"#).is_err());
    assert!(HostRuleset::default()
        .with_iptables_legacy_save(false, "*filter\n:INPUT\n")
        .is_err());
}

// As root: rulesets built in a namespace of the test's own, read back.

fn read_in(ns: &Netns) -> HostRuleset {
    ns.enter(HostRuleset::read).unwrap().unwrap()
}

#[test]
#[ignore = "needs root"]
fn read_the_iptables_guide() {
    let ns = Netns::new("rs-ipt").expect("namespace (root?)");
    ns.run(&["iptables", "-P", "INPUT", "DROP"]).unwrap();
    ns.run(&["iptables", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"])
        .unwrap();
    let host = read_in(&ns);
    let d = dropped(host.fate(false, Step::tcp(22), &ours()));
    assert_eq!(
        (d.manager, d.what.as_str()),
        (Manager::Iptables, "policy drop")
    );
    assert_eq!(
        host.fate(false, Step::tcp(22), &Placement::IptablesInput),
        Fate::Passes
    );
    ns.run(&[
        "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
    ])
    .unwrap();
    assert_eq!(
        read_in(&ns).fate(false, Step::tcp(22), &ours()),
        Fate::Passes
    );
}

#[test]
#[ignore = "needs root"]
fn read_a_native_policy_drop() {
    let ns = Netns::new("rs-nft").expect("namespace (root?)");
    let fixture = format!("{DATA}/nft_policy_drop.json");
    ns.run(&["nft", "-j", "-f", &fixture]).unwrap();
    let d = dropped(read_in(&ns).fate(true, Step::tcp(22), &ours()));
    assert_eq!(d.to_string(), "inet table fw chain input: policy drop");
    ns.run(&[
        "nft", "add", "rule", "inet", "fw", "input", "tcp", "dport", "22", "accept",
    ])
    .unwrap();
    assert_eq!(
        read_in(&ns).fate(true, Step::tcp(22), &ours()),
        Fate::Passes
    );
}

#[test]
#[ignore = "needs root"]
fn read_ufw() {
    let ns = Netns::new("rs-ufw").expect("namespace (root?)");
    let dir = std::env::temp_dir().join(format!("knock-ufw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!("{DATA}/ufw-netns.sh");
    let ufw = |cmds: &[&str]| {
        let mut args = vec![script.as_str(), ns.name(), dir.to_str().unwrap()];
        args.extend_from_slice(cmds);
        knock_testnet::run(&args).unwrap();
    };
    ufw(&["default deny incoming", "--force enable"]);
    let d = dropped(read_in(&ns).fate(false, Step::tcp(22), &ours()));
    assert_eq!(d.manager, Manager::Ufw, "{d}");
    ufw(&["allow 22/tcp"]);
    let host = read_in(&ns);
    std::fs::remove_dir_all(&dir).unwrap();
    for v6 in [false, true] {
        assert_eq!(
            host.fate(v6, Step::tcp(22), &ours()),
            Fate::Passes,
            "v6 {v6}"
        );
        assert!(matches!(
            host.fate(v6, Step::tcp(23), &ours()),
            Fate::Dropped(_)
        ));
    }
}

#[test]
#[ignore = "needs root"]
fn read_iptables_legacy() {
    let ns = Netns::new("rs-leg").expect("namespace (root?)");
    ns.run(&["iptables-legacy", "-P", "INPUT", "DROP"]).unwrap();
    let host = read_in(&ns);
    let d = dropped(host.fate(false, Step::tcp(22), &ours()));
    assert_eq!(d.manager, Manager::IptablesLegacy);
    assert_eq!(
        d.to_string(),
        "iptables-legacy table filter chain INPUT: policy drop"
    );
    assert_eq!(host.fate(true, Step::tcp(22), &ours()), Fate::Passes);
    ns.run(&[
        "iptables-legacy",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "22",
        "-j",
        "ACCEPT",
    ])
    .unwrap();
    assert_eq!(
        read_in(&ns).fate(false, Step::tcp(22), &ours()),
        Fate::Passes
    );
}

// nft_vmap.json: `table inet filter` with chain input (policy drop):
// `ct state vmap { established : accept, related : accept, invalid : drop }`,
// `iif "lo" accept`, `tcp dport vmap { 22 : accept, 80 : jump web }`, and
// chain web: `ip saddr 198.18.0.0/15 accept`, `drop`.
#[test]
fn verdict_maps_decide_by_their_key() {
    let host = nft("nft_vmap.json");
    for v6 in [false, true] {
        assert_eq!(host.fate(v6, Step::tcp(22), &ours()), Fate::Passes);
        let d = dropped(host.fate(v6, Step::tcp(80), &ours()));
        assert!(
            d.what.contains("in chain web") && d.what.contains("handle 4"),
            "{d}"
        );
        let d = dropped(host.fate(v6, Step::tcp(443), &ours()));
        assert_eq!(d.what, "policy drop");
        assert!(matches!(
            host.fate(v6, Step::udp(22), &ours()),
            Fate::Dropped(_)
        ));
    }
}

#[test]
#[ignore = "needs root and firewalld"]
fn read_firewalld() {
    let ns = Netns::new("rs-fwd").expect("namespace (root?)");
    let dir = std::env::temp_dir().join(format!("knock-fwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!("{DATA}/firewalld-netns.sh");
    knock_testnet::run(&[
        &script,
        ns.name(),
        dir.to_str().unwrap(),
        "--add-port=2222/tcp",
    ])
    .unwrap();
    let host = read_in(&ns);
    drop(ns); // ends firewalld and its D-Bus
    std::fs::remove_dir_all(&dir).unwrap();
    for v6 in [false, true] {
        assert_eq!(host.fate(v6, Step::tcp(2222), &ours()), Fate::Passes);
        assert_eq!(host.fate(v6, Step::tcp(22), &ours()), Fate::Passes);
    }
    assert_firewalld_rejects(&host, Step::tcp(2223));
}

// nft_named_sets.json: `table ip6 fw6` with sets allowed (interval:
// 22, 8000-8080) and blocked (2222), chain input (priority filter - 5,
// policy accept): `tcp dport @blocked drop`, `tcp dport != @allowed drop`.
#[test]
fn named_sets_are_looked_up() {
    let host = nft("nft_named_sets.json");
    assert_eq!(host.fate(true, Step::tcp(22), &ours()), Fate::Passes);
    assert_eq!(host.fate(true, Step::tcp(8080), &ours()), Fate::Passes);
    let d = dropped(host.fate(true, Step::tcp(2222), &ours()));
    assert!(d.what.contains("@blocked"), "{d}");
    let d = dropped(host.fate(true, Step::tcp(23), &ours()));
    assert!(d.what.contains("!= @allowed"), "{d}");
    // Only IPv6, and only TCP.
    assert_eq!(host.fate(false, Step::tcp(23), &ours()), Fate::Passes);
    assert_eq!(host.fate(true, Step::udp(23), &ours()), Fate::Passes);
}
