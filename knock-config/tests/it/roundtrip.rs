//! knockd.conf -> model -> TOML -> model is the identity.

use std::fmt::Write;

use knock_config::{knockd_to_toml, Config};
use proptest::prelude::*;

/// One door of a generated knockd.conf, as text lines.
fn door_lines() -> impl Strategy<Value = Vec<String>> {
    let step =
        (1u16..=65535, prop::bool::ANY, prop::bool::ANY).prop_map(|(p, udp, explicit)| {
            match (udp, explicit) {
                (true, _) => format!("{p}:udp"),
                (false, true) => format!("{p}:TCP"),
                (false, false) => p.to_string(),
            }
        });
    let seq =
        prop::collection::vec(step, 1..=32).prop_map(|s| format!("sequence = {}", s.join(",")));
    let flags = prop::sample::subsequence(
        vec!["syn", "!ack", "fin", "!rst", "psh", "urg", "!ece", "cwr"],
        0..4,
    )
    .prop_map(|f| {
        if f.is_empty() {
            String::new()
        } else {
            format!("tcpflags = {}", f.join(","))
        }
    });
    let cmd = "[a-zA-Z0-9 %/=\"'#\\\\._-]{0,40}".prop_map(|s| s.trim().to_owned());
    let opt = |key: &'static str, s: BoxedStrategy<String>| {
        prop::option::of(s).prop_map(move |v| v.map(|v| format!("{key} = {v}")).unwrap_or_default())
    };
    let cmd_line = move |key: &'static str| {
        opt(
            key,
            cmd.clone()
                .prop_filter("non-empty", |c| !c.is_empty())
                .boxed(),
        )
    };
    let dur = prop_oneof![
        (1u64..86400).prop_map(|s| s.to_string()),
        (1u64..100000).prop_map(|m| format!("{m}ms"))
    ];
    let net = prop_oneof![
        Just("198.18.0.0/15".to_owned()),
        Just("2001:db8::/32".to_owned()),
        Just("203.0.113.7".to_owned()),
        (0u8..=255).prop_map(|b| format!("10.{b}.0.0/16")),
    ];
    let open = prop::collection::vec((prop::bool::ANY, 1u16..=65535), 1..4).prop_map(|v| {
        v.into_iter()
            .map(|(u, p)| format!("{}/{p}", if u { "udp" } else { "tcp" }))
            .collect::<Vec<_>>()
            .join(",")
    });
    (
        (
            seq,
            flags,
            opt("seq_timeout", dur.clone().boxed()),
            opt("cmd_timeout", dur.clone().boxed()),
        ),
        (
            cmd_line("command"),
            cmd_line("start_command_6"),
            cmd_line("stop_command"),
            cmd_line("stop_command_6"),
        ),
        (
            opt(
                "target",
                prop_oneof![
                    Just("198.18.0.1".to_owned()),
                    Just("2001:db8::1".to_owned())
                ]
                .boxed(),
            ),
            prop::option::of((open, prop::sample::select(vec!["", "iptables", "nftables"]))),
            opt(
                "grant_prefix",
                (1u8..=32, 1u8..=128)
                    .prop_map(|(a, b)| format!("{a},{b}"))
                    .boxed(),
            ),
            opt(
                "allow_repeat",
                prop::sample::select(vec!["yes", "no"])
                    .prop_map(str::to_owned)
                    .boxed(),
            ),
            opt("cooldown", dur.boxed()),
            opt(
                "from",
                prop::collection::vec(net, 1..4)
                    .prop_map(|v| v.join(", "))
                    .boxed(),
            ),
            opt(
                "strict",
                prop::sample::select(vec!["yes", "no"])
                    .prop_map(str::to_owned)
                    .boxed(),
            ),
        ),
    )
        .prop_map(
            |((seq, flags, st, ct), (c, c6, s, s6), (target, open, gp, ar, cd, from, strict))| {
                let mut lines = vec![
                    seq, flags, st, ct, c, c6, s, s6, target, gp, ar, cd, from, strict,
                ];
                if let Some((o, fw)) = open {
                    lines.push(format!("open = {o}"));
                    if !fw.is_empty() {
                        lines.push(format!("firewall = {fw}"));
                    }
                }
                lines.retain(|l| !l.is_empty());
                lines
            },
        )
}

fn knockd_conf() -> impl Strategy<Value = String> {
    (
        prop::bool::ANY,
        prop::option::of("[a-z]{1,8}"),
        prop::collection::vec("[a-z0-9]{1,6}", 1..3),
        prop::option::of((1u32..10, 1u64..600, 1u64..6000)),
        prop::option::of(prop::sample::select(vec!["doors", "host", "Host"])),
        prop::collection::vec(door_lines(), 0..5),
    )
        .prop_map(|(syslog, log, ifaces, bl, reach, doors)| {
            let mut s = String::from("# generated\n[options]\n");
            if syslog {
                s.push_str("    UseSyslog\n");
            }
            if let Some(l) = log {
                let _ = writeln!(s, "    LogFile = /var/log/{l}.log");
            }
            let _ = writeln!(s, "    Interface = {}", ifaces.join(","));
            if let Some((n, w, b)) = bl {
                let _ = writeln!(s, "    blacklist = {n} invalid in {w}s for {b}s");
            }
            if let Some(r) = reach {
                let _ = writeln!(s, "    blacklist_reach = {r}");
            }
            for (i, lines) in doors.iter().enumerate() {
                let _ = writeln!(s, "\n[door{i}]");
                for l in lines {
                    let _ = writeln!(s, "    {l}");
                }
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn knockd_model_toml_model_is_identity(conf in knockd_conf()) {
        let model = Config::from_knockd_str(&conf, "gen.conf").unwrap();
        let toml = model.to_toml_string().unwrap();
        let back = Config::from_toml_str(&toml, "gen.toml").unwrap();
        prop_assert_eq!(&back, &model, "{}", toml);
        prop_assert_eq!(knockd_to_toml(&conf).unwrap(), toml.clone());
        // And TOML -> model -> TOML is stable.
        prop_assert_eq!(back.to_toml_string().unwrap(), toml);
    }

    #[test]
    fn parsers_never_panic(text in "(?s).{0,400}") {
        let _ = Config::parse_knockd_str(&text, "fuzz.conf");
        let _ = Config::parse_toml_str(&text, "fuzz.toml");
        let _ = knock_config::SequenceFile::parse(&text, "fuzz.seq");
    }

    #[test]
    fn line_noise_in_a_door_never_panics(lines in prop::collection::vec("[a-z_]{1,12} ?= ?[ -~]{0,20}", 0..8)) {
        let text = format!("[options]\n[d]\nsequence = 1\n{}\n", lines.join("\n"));
        let _ = Config::parse_knockd_str(&text, "fuzz.conf");
    }
}

#[test]
fn file_backed_and_derived_doors_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let seq = crate::write(dir.path(), "seq", " 1,2\n 3:udp\n");
    let otp = crate::write(dir.path(), "otp", "#5,6\n 7,8\n");
    let key = crate::secret(dir.path(), "key", "sesame\n");
    let conf = format!(
        "[options]\n  blacklist = 3 invalid in 60s for 180s\n[a]\n  sequence = {}\n  tcpflags = syn,!ack\n[b]\n  one_time_sequences = {}\n  cmd_timeout = 25\n  stop_command = x\n[c]\n  sequence_secret_file = {}\n  sequence_ports = 2000-3000\n",
        seq.display(),
        otp.display(),
        key.display()
    );
    let model = Config::from_knockd_str(&conf, "k.conf").unwrap();
    let toml = model.to_toml_string().unwrap();
    assert_eq!(
        Config::from_toml_str(&toml, "k.toml").unwrap(),
        model,
        "{toml}"
    );
    assert_eq!(model.core_doors().len(), 3);
}
