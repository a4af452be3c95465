//! The TOML format: schema, errors, conversion from knockd.conf.

use std::time::Duration;

use knock_config::{knockd_to_toml, BlacklistReach, Config, FirewallKind, SequenceSource};
use knock_core::{FlagFilter, Step, TcpFlags};

#[test]
fn documented_example_parses() {
    let text = r#"
[options]
use_syslog = true
log_file = "/var/log/knockd.log"
interfaces = ["eth0", "wg0"]
blacklist = { invalid = 3, window = "60s", block = 180 }
blacklist_reach = "host"

[[door]]
name = "openSSH"
sequence = ["7000:tcp", "8000:udp", "9000"]
seq_timeout = "5s"
tcpflags = ["syn", "!ack"]
start_command = "/sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"
stop_command = "/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"
cmd_timeout = 10
target = "198.18.0.1"

[[door]]
name = "web"
sequence = ["1111", "2222"]
open = ["tcp/443", "udp/1194"]
grant_prefix = [24, 64]
allow_repeat = true
cooldown = "500ms"
from = ["198.18.0.0/15", "2001:db8::/32"]

[[door]]
name = "derived"
sequence_secret_file = "/etc/knock.key"
sequence_length = 4
sequence_protocols = ["tcp", "udp"]
"#;
    // Parse only: the secret file is not there.
    let c = Config::parse_toml_str(text, "knock.toml").unwrap();
    assert!(c.options.use_syslog);
    assert_eq!(c.options.interfaces, ["eth0", "wg0"]);
    assert_eq!(c.options.blacklist.unwrap().block, Duration::from_secs(180));
    assert_eq!(c.options.blacklist_reach, BlacklistReach::Host);
    let d = &c.doors[0];
    assert_eq!(
        d.sequence,
        SequenceSource::Inline(vec![Step::tcp(7000), Step::udp(8000), Step::tcp(9000)])
    );
    assert_eq!(
        d.tcp_flags,
        FlagFilter {
            set: TcpFlags::SYN,
            clear: TcpFlags::ACK
        }
    );
    assert_eq!(d.seq_timeout, Duration::from_secs(5));
    assert_eq!(d.grant_lifetime(), Some(Duration::from_secs(10)));
    let w = &c.doors[1];
    assert_eq!(w.firewall, FirewallKind::Auto);
    assert_eq!(w.cooldown, Duration::from_millis(500));
    assert_eq!(c.core_doors().len(), 3);
}

#[test]
fn knockd_and_toml_mean_the_same() {
    let knockd = "[options]\n UseSyslog\n Interface = ens33\n[openSSH]\n sequence = 7000,8000:udp\n tcpflags = syn,!ack\n command = echo %IP%\n cmd_timeout = 20\n stop_command = echo bye\n";
    let toml = r#"
options = { use_syslog = true, interfaces = ["ens33"] }
[[door]]
name = "openSSH"
sequence = ["7000:tcp", "8000:udp"]
tcpflags = ["!ack", "syn"]
start_command = "echo %IP%"
stop_command = "echo bye"
cmd_timeout = "20s"
"#;
    assert_eq!(
        Config::from_knockd_str(knockd, "k.conf").unwrap(),
        Config::from_toml_str(toml, "k.toml").unwrap()
    );
}

/// A door with `open` and no `firewall` is `auto` (the daemon picks where
/// its grants take effect); `auto` can be written in both formats.
#[test]
fn open_defaults_to_auto_in_both_formats() {
    let knockd = Config::from_knockd_str(
        "[a]\n  sequence = 1,2\n  open = tcp/22\n[b]\n  sequence = 3,4\n  open = tcp/23\n  firewall = auto\n",
        "k.conf",
    )
    .unwrap();
    assert_eq!(knockd.doors[0].firewall, FirewallKind::Auto);
    assert_eq!(knockd.doors[1].firewall, FirewallKind::Auto);
    let toml = Config::from_toml_str(
        "[[door]]\nname = \"a\"\nsequence = [\"1\", \"2\"]\nopen = [\"tcp/22\"]\n[[door]]\nname = \"b\"\nsequence = [\"3\"]\nopen = [\"tcp/23\"]\nfirewall = \"auto\"\n",
        "k.toml",
    )
    .unwrap();
    assert_eq!(toml.doors[0].firewall, FirewallKind::Auto);
    assert_eq!(toml.doors[1].firewall, FirewallKind::Auto);
    let back = Config::from_toml_str(&knockd.to_toml_string().unwrap(), "k.toml").unwrap();
    assert_eq!(back.doors[1].firewall, FirewallKind::Auto);
}

#[test]
fn converter_output() {
    let out = knockd_to_toml("[options]\n UseSyslog\n[a]\n sequence = 1,2:udp\n tcpflags = syn\n command = echo \"%IP%\"\n[b]\n one_time_sequences = /etc/otp\n").unwrap();
    assert!(out.contains("use_syslog = true"), "{out}");
    assert!(out.contains(r#"sequence = ["1:tcp", "2:udp"]"#), "{out}");
    assert!(out.contains(r#"tcpflags = ["syn"]"#), "{out}");
    assert!(out.contains(r#"one_time_sequences = "/etc/otp""#), "{out}");
    assert!(out.contains("[[door]]"), "{out}");
    // Parsing without loading: the file need not exist.
    let back = Config::parse_toml_str(&out, "x.toml").unwrap();
    assert_eq!(back, Config::parse_knockd_str("[options]\n UseSyslog\n[a]\n sequence = 1,2:udp\n tcpflags = syn\n command = echo \"%IP%\"\n[b]\n one_time_sequences = /etc/otp\n", "k").unwrap());
    let e = knockd_to_toml("[a]\n sequence = 0\n").unwrap_err();
    assert!(e.to_string().starts_with("knockd.conf:2:13"), "{e}");
}

#[test]
fn sequence_file_via_toml() {
    let dir = tempfile::tempdir().unwrap();
    let p = crate::write(dir.path(), "seq", " 1,2\n 3,4\n");
    let text = format!(
        "[[door]]\nname = \"a\"\nsequence_file = {:?}\n",
        p.display().to_string()
    );
    let c = Config::from_toml_str(&text, "k.toml").unwrap();
    assert_eq!(c.doors[0].sequence_file().unwrap().sequences().len(), 2);
}

fn toml_err(text: &str) -> String {
    match Config::from_toml_str(text, "/etc/knock.toml") {
        Ok(c) => panic!("accepted {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_fields_are_rejected_with_their_line() {
    let m = toml_err("[[door]]\nname = \"a\"\nsequence = [\"1\"]\nsequense = 3\n");
    assert!(m.starts_with("/etc/knock.toml:4:1"), "{m}");
    assert!(m.contains("sequense"), "{m}");
    let m = toml_err("[options]\nverbose = true\n");
    assert!(
        m.starts_with("/etc/knock.toml:2:1") && m.contains("verbose"),
        "{m}"
    );
    let m = toml_err("[door]\n");
    assert!(m.contains("/etc/knock.toml:1"), "{m}");
}

#[test]
fn value_errors_point_at_the_door() {
    let cases = [
        ("sequence = [\"0\"]", "port 0"),
        ("sequence = [\"1000-2000\"]", "port range"),
        ("sequence = [\"1:icmp\"]", "expected tcp or udp"),
        ("sequence = [\"1\"]\ntcpflags = [\"xmas\"]", "unknown flag"),
        (
            "sequence = [\"1\"]\nseq_timeout = \"25x\"",
            "bad duration \"25x\"",
        ),
        ("sequence = [\"1\"]\nseq_timeout = -1", "negative duration"),
        ("sequence = [\"1\"]\nseq_timeout = 0", "above 0"),
        (
            "sequence = [\"1\"]\nopen = [\"tcp/22\"]\nfirewall = \"command\"",
            "open needs firewall",
        ),
        ("sequence = [\"1\"]\nfirewall = \"nftables\"", "needs open"),
        ("sequence = [\"1\"]\nfirewall = \"pf\"", "unknown variant"),
        (
            "sequence = [\"1\"]\ngrant_prefix = [33, 64]",
            "grant_prefix",
        ),
        (
            "sequence = [\"1\"]\nfrom = [\"198.18.0.1/15\"]",
            "host bits",
        ),
        (
            "sequence = [\"1\"]\ntarget = \"nope\"",
            "invalid IP address",
        ),
        (
            "sequence = [\"1\"]\nsequence_file = \"/x\"",
            "exclude each other",
        ),
        ("sequence_length = 3", "needs sequence_secret_file"),
        ("command = \"x\"", "unknown field"),
        ("start_command = \"x\"", "no sequence"),
    ];
    for (body, expect) in cases {
        let m = toml_err(&format!("\n[[door]]\nname = \"a\"\n{body}\n"));
        assert!(m.starts_with("/etc/knock.toml:"), "{m}");
        assert!(m.contains(expect), "{body}: {m}");
    }
    let m = toml_err("[[door]]\nname = \"a\"\nsequence = [\"1\"]\n\n[[door]]\nname = \"a\"\nsequence = [\"2\"]\n");
    assert!(
        m.starts_with("/etc/knock.toml:5:1") && m.contains("line 1"),
        "{m}"
    );
    let many: Vec<String> = (1..=33).map(|p| format!("\"{p}\"")).collect();
    let m = toml_err(&format!(
        "[[door]]\nname = \"a\"\nsequence = [{}]\n",
        many.join(",")
    ));
    assert!(m.contains("33 steps"), "{m}");
}
