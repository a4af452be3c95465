//! One test per error: the message names the file, the line (and column),
//! the offending text and what was expected.

use knock_config::{Config, ConfigError, StepError};

const FILE: &str = "/etc/knockd.conf";

fn err(text: &str) -> ConfigError {
    match Config::from_knockd_str(text, FILE) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e,
    }
}

/// Asserts the message contains every piece.
#[track_caller]
fn says(e: &ConfigError, pieces: &[&str]) {
    let msg = e.to_string();
    for p in pieces {
        assert!(msg.contains(p), "{msg:?} lacks {p:?}");
    }
}

fn door(body: &str) -> String {
    format!("[options]\n  Interface = eth0\n\n[door]\n{body}\n")
}

#[test]
fn unknown_key() {
    let e = err(&door("  sequence = 1,2\n  sequense = 3"));
    assert!(matches!(e, ConfigError::UnknownKey { .. }));
    says(
        &e,
        &[
            "/etc/knockd.conf:6:3",
            "\"sequense\"",
            "[door]",
            "expected one of",
            "sequence",
        ],
    );
}

#[test]
fn unknown_option() {
    let e = err("[options]\n  Verbose = 1\n");
    says(
        &e,
        &[
            "/etc/knockd.conf:2:3",
            "\"Verbose\"",
            "[options]",
            "LogFile",
        ],
    );
}

#[test]
fn bare_word_other_than_usesyslog() {
    let e = err("[options]\n  logfile\n");
    says(
        &e,
        &["/etc/knockd.conf:2:3", "logfile", "expected key = value"],
    );
}

#[test]
fn key_outside_section() {
    let e = err("# comment\nsequence = 1,2,3\n[door]\nsequence = 4\n");
    assert!(matches!(e, ConfigError::KeyOutsideSection { .. }));
    says(
        &e,
        &[
            "/etc/knockd.conf:2:1",
            "\"sequence\"",
            "outside a section",
            "[options]",
        ],
    );
}

#[test]
fn bad_section_header() {
    let e = err("[options\n");
    says(
        &e,
        &["/etc/knockd.conf:1:1", "\"[options\"", "section header"],
    );
}

fn step_err(value: &str, col: usize, entry: &str, reason: StepError, expect: &str) {
    let e = err(&door(&format!("  sequence = {value}")));
    match &e {
        ConfigError::BadStep { reason: r, .. } => assert_eq!(*r, reason, "{e}"),
        _ => panic!("{e}"),
    }
    says(
        &e,
        &[
            &format!("/etc/knockd.conf:5:{col}"),
            &format!("{entry:?}"),
            "sequence",
            expect,
        ],
    );
}

#[test]
fn port_zero() {
    step_err(
        "7000,0,9000",
        19,
        "0",
        StepError::PortZero,
        "port 0 (ports are 1 to 65535)",
    );
}

#[test]
fn port_above_65535() {
    step_err(
        "7000,65536:udp",
        19,
        "65536:udp",
        StepError::PortTooLarge,
        "above 65535",
    );
}

#[test]
fn trailing_comma() {
    step_err("7000,8000,", 24, "", StepError::Empty, "trailing comma");
}

#[test]
fn doubled_comma() {
    step_err("7000,,8000", 19, "", StepError::Empty, "empty entry");
}

#[test]
fn port_range() {
    step_err("1000-2000", 14, "1000-2000", StepError::Range, "port range");
}

#[test]
fn junk_port() {
    step_err(
        "7000,80a",
        19,
        "80a",
        StepError::NotANumber,
        "not a port number",
    );
}

#[test]
fn unknown_protocol() {
    step_err(
        "7000:icmp",
        14,
        "7000:icmp",
        StepError::UnknownProtocol,
        "expected tcp or udp",
    );
}

#[test]
fn unknown_flag() {
    let e = err(&door("  sequence = 1\n  tcpflags = syn,!xmas"));
    assert!(matches!(e, ConfigError::BadFlags { .. }));
    says(
        &e,
        &[
            "/etc/knockd.conf:6:18",
            "\"!xmas\"",
            "unknown flag",
            "fin, syn, rst",
        ],
    );
}

#[test]
fn spaces_inside_tcpflags() {
    let e = err(&door("  sequence = 1\n  tcpflags = syn, ack"));
    says(
        &e,
        &[
            "/etc/knockd.conf:6:18",
            "\"syn, ack\"",
            "spaces inside tcpflags",
            "without spaces",
        ],
    );
}

#[test]
fn contradictory_flags() {
    let e = err(&door("  sequence = 1\n  tcpflags = syn,!syn"));
    says(
        &e,
        &[
            "/etc/knockd.conf:6:18",
            "\"!syn\"",
            "both required and forbidden",
        ],
    );
}

#[test]
fn more_than_32_steps() {
    let seq = (1..=33)
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let e = err(&door(&format!("  sequence = {seq}")));
    assert!(matches!(e, ConfigError::TooManySteps { count: 33, .. }));
    says(
        &e,
        &["/etc/knockd.conf:5", "1,2,3", "33 steps", "at most 32"],
    );
}

#[test]
fn door_with_no_sequence() {
    let e = err(&door("  command = /bin/true"));
    assert!(matches!(e, ConfigError::NoSequence { .. }));
    says(
        &e,
        &[
            "/etc/knockd.conf:4",
            "[door]",
            "no sequence",
            "one_time_sequences",
        ],
    );
}

#[test]
fn missing_sequence_file() {
    let e = err(&door("  one_time_sequences = /nonexistent/knock-rs/otp"));
    assert!(matches!(e, ConfigError::SequenceFileMissing { .. }));
    says(
        &e,
        &[
            "/etc/knockd.conf",
            "[door]",
            "/nonexistent/knock-rs/otp",
            "cannot read",
        ],
    );
}

#[test]
fn empty_sequence_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = crate::write(dir.path(), "empty", "\n\n");
    let e = err(&door(&format!("  sequence = {}", p.display())));
    assert!(matches!(e, ConfigError::EmptySequenceFile { .. }));
    says(&e, &[&p.display().to_string(), "no sequence", "7000:tcp"]);
}

#[test]
fn reusable_file_all_commented_out() {
    let dir = tempfile::tempdir().unwrap();
    let p = crate::write(dir.path(), "seq", "#1000\n#2000\n");
    let e = err(&door(&format!("  sequence = {}", p.display())));
    assert!(matches!(e, ConfigError::EmptySequenceFile { .. }), "{e}");
}

#[test]
fn bad_line_in_sequence_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = crate::write(dir.path(), "otp", " 80:tcp,443:tcp\n 53:udp,1000-2000\n");
    let e = err(&door(&format!("  one_time_sequences = {}", p.display())));
    says(
        &e,
        &[
            &format!("{}:2:9", p.display()),
            "\"1000-2000\"",
            "port range",
        ],
    );
}

#[test]
fn usesyslog_with_a_value() {
    let e = err("[options]\n  UseSyslog = yes\n");
    assert!(matches!(e, ConfigError::UseSyslogValue { .. }));
    says(
        &e,
        &[
            "/etc/knockd.conf:2:3",
            "\"UseSyslog = yes\"",
            "takes no value",
            "bare word",
        ],
    );
}

#[test]
fn duplicate_door() {
    let e = err("[a]\n sequence = 1\n[b]\n sequence = 2\n[a]\n sequence = 3\n");
    assert!(matches!(
        e,
        ConfigError::DuplicateDoor { first_line: 1, .. }
    ));
    says(
        &e,
        &["/etc/knockd.conf:5:1", "[a]", "defined twice", "line 1"],
    );
}

#[test]
fn duplicate_key_through_alias() {
    let e = err(&door("  sequence = 1\n  command = a\n  start_command = b"));
    assert!(matches!(e, ConfigError::DuplicateKey { first_line: 6, .. }));
    says(
        &e,
        &["/etc/knockd.conf:7", "\"start_command\"", "twice", "line 6"],
    );
}

#[test]
fn bad_durations() {
    for (value, key) in [
        ("25x", "seq_timeout"),
        ("-1", "timeout"),
        ("0", "seq_timeout"),
        ("2d", "seq_timeout"),
        ("", "cmd_timeout"),
        ("1.5", "cooldown"),
    ] {
        let e = err(&door(&format!("  sequence = 1\n  {key} = {value}")));
        assert!(matches!(e, ConfigError::BadValue { .. }), "{e}");
        says(
            &e,
            &["/etc/knockd.conf:6", key, &format!("{value:?}"), "duration"],
        );
    }
}

#[test]
fn bad_target() {
    let e = err(&door("  sequence = 1\n  target = 10.0.0.300"));
    says(
        &e,
        &[
            "/etc/knockd.conf:6:12",
            "target = \"10.0.0.300\"",
            "IPv4 or IPv6 address",
        ],
    );
}

#[test]
fn empty_command() {
    let e = err(&door("  sequence = 1\n  command ="));
    says(
        &e,
        &["/etc/knockd.conf:6", "command = \"\"", "shell command"],
    );
}

#[test]
fn bad_open_entry() {
    let e = err(&door("  sequence = 1\n  open = tcp/22, icmp/1"));
    assert!(matches!(
        e,
        ConfigError::BadStep {
            reason: StepError::UnknownProtocol,
            ..
        }
    ));
    says(&e, &["/etc/knockd.conf:6:18", "open entry \"icmp/1\""]);
    let e = err(&door("  sequence = 1\n  open = tcp/22,"));
    says(
        &e,
        &["/etc/knockd.conf:6:17", "open entry \"\"", "trailing comma"],
    );
}

#[test]
fn bad_firewall() {
    let e = err(&door("  sequence = 1\n  open = tcp/22\n  firewall = pf"));
    says(
        &e,
        &[
            "/etc/knockd.conf:7:14",
            "firewall = \"pf\"",
            "auto, iptables, nftables or command",
        ],
    );
}

#[test]
fn firewall_without_open_and_open_with_command() {
    let e = err(&door("  sequence = 1\n  firewall = iptables"));
    assert!(matches!(e, ConfigError::Conflict { .. }));
    says(
        &e,
        &[
            "/etc/knockd.conf:6",
            "[door]",
            "firewall = iptables needs open",
        ],
    );
    let e = err(&door(
        "  sequence = 1\n  open = tcp/22\n  firewall = command",
    ));
    says(
        &e,
        &[
            "/etc/knockd.conf:6",
            "open needs firewall = auto, iptables or nftables",
        ],
    );
}

#[test]
fn auto_needs_open_too() {
    let e = err(&door("  sequence = 1\n  firewall = auto"));
    says(&e, &["/etc/knockd.conf:6", "firewall = auto needs open"]);
}

#[test]
fn bad_booleans() {
    for key in ["allow_repeat", "strict"] {
        let e = err(&door(&format!("  sequence = 1\n  {key} = maybe")));
        says(
            &e,
            &[
                "/etc/knockd.conf:6",
                &format!("{key} = \"maybe\""),
                "yes or no",
            ],
        );
    }
}

#[test]
fn bad_from() {
    let e = err(&door(
        "  sequence = 1\n  from = 198.18.0.0/15, 198.18.0.1/15",
    ));
    says(
        &e,
        &[
            "/etc/knockd.conf:6:25",
            "\"198.18.0.1/15\"",
            "host bits",
            "198.18.0.0/15",
        ],
    );
    let e = err(&door("  sequence = 1\n  from = example.com"));
    says(
        &e,
        &["/etc/knockd.conf:6:10", "\"example.com\"", "a network like"],
    );
    let e = err(&door("  sequence = 1\n  from = 198.18.0.0/15,"));
    says(&e, &["/etc/knockd.conf:6:24", "empty entry"]);
}

#[test]
fn bad_grant_prefix() {
    for v in ["24", "33,64", "24,129", "0,64", "a,b"] {
        let e = err(&door(&format!("  sequence = 1\n  grant_prefix = {v}")));
        says(
            &e,
            &[
                "/etc/knockd.conf:6",
                &format!("grant_prefix = {v:?}"),
                "24,64",
            ],
        );
    }
}

#[test]
fn sequence_sources_exclude_each_other() {
    let e = err(&door("  sequence = 1\n  one_time_sequences = /x"));
    assert!(matches!(e, ConfigError::Conflict { .. }));
    says(
        &e,
        &[
            "/etc/knockd.conf:6",
            "sequence and one_time_sequences exclude each other",
        ],
    );
    let e = err(&door("  sequence = 1\n  sequence_length = 4"));
    says(
        &e,
        &[
            "/etc/knockd.conf:6",
            "sequence_length needs sequence_secret_file",
        ],
    );
}

#[test]
fn bad_derived_values() {
    for (k, v, expect) in [
        ("sequence_length", "33", "1 to 32"),
        ("sequence_length", "0", "1 to 32"),
        ("sequence_period", "0", "above 0"),
        ("sequence_ports", "100", "port range"),
        ("sequence_ports", "2000-1000", "port range"),
        ("sequence_protocols", "tcp,icmp", "tcp,udp"),
    ] {
        let e = err(&door(&format!(
            "  sequence_secret_file = /etc/k\n  {k} = {v}"
        )));
        says(&e, &["/etc/knockd.conf:6", &format!("{k} = {v:?}"), expect]);
    }
}

#[test]
fn bad_blacklist() {
    let e = err("[options]\n  blacklist = 3 invalid within 60s\n");
    says(
        &e,
        &[
            "/etc/knockd.conf:2:15",
            "blacklist = \"3 invalid within 60s\"",
            "3 invalid in 60s for 180s",
        ],
    );
    let e = err("[options]\n  blacklist = 0 invalid in 60s for 180s\n");
    says(&e, &["/etc/knockd.conf:2"]);
}

#[test]
fn bad_blacklist_reach() {
    let e =
        err("[options]\n  blacklist = 3 invalid in 60s for 180s\n  blacklist_reach = everything\n");
    assert!(matches!(e, ConfigError::BadValue { .. }), "{e}");
    says(
        &e,
        &[
            "/etc/knockd.conf:3:21",
            "blacklist_reach = \"everything\"",
            "doors or host",
        ],
    );
    let e = err("[options]\n  blacklist_reach =\n");
    says(&e, &["/etc/knockd.conf:2", "doors or host"]);
    let e = err("[options]\n  blacklist_reach = doors\n  Blacklist_Reach = host\n");
    says(&e, &["/etc/knockd.conf:3", "set twice", "first on line 2"]);
    let e = Config::from_toml_str(
        "[options]\nblacklist = { invalid = 3, window = 60, block = 180 }\nblacklist_reach = \"all\"\n",
        "k.toml",
    )
    .unwrap_err();
    says(&e, &["k.toml:3:19", "unknown variant", "doors", "host"]);
}

#[test]
fn bad_metrics_address() {
    let e = err("[options]\n  Interface = eth0\n  metrics = localhost\n");
    assert!(matches!(e, ConfigError::BadValue { .. }), "{e}");
    says(
        &e,
        &[
            "/etc/knockd.conf:3:13",
            "metrics = \"localhost\"",
            "127.0.0.1:9464",
        ],
    );
    let e = err("[options]\n  metrics = 127.0.0.1\n");
    says(&e, &["/etc/knockd.conf:2", "an address and a port"]);
    let e = err("[options]\n  metrics = ::1:9464\n");
    says(&e, &["/etc/knockd.conf:2", "[::1]:9464"]);
    let e = Config::from_toml_str(
        "[options]\ninterfaces = [\"eth0\"]\nmetrics = \"127.0.0.1:99999\"\n",
        "k.toml",
    )
    .unwrap_err();
    says(
        &e,
        &[
            "k.toml:3:11",
            "options.metrics",
            "127.0.0.1:99999",
            "an address and a port",
        ],
    );
}

#[test]
fn metrics_address_in_both_formats() {
    let c = Config::from_knockd_str("[options]\n  metrics = [::1]:9464\n", FILE).unwrap();
    assert_eq!(c.options.metrics, Some("[::1]:9464".parse().unwrap()));
    let t = Config::from_toml_str("[options]\nmetrics = \"[::1]:9464\"\n", "k.toml").unwrap();
    assert_eq!(t.options.metrics, c.options.metrics);
    // The converter keeps it.
    let back = Config::from_toml_str(&c.to_toml_string().unwrap(), "k.toml").unwrap();
    assert_eq!(back.options.metrics, c.options.metrics);
    let none = Config::from_knockd_str("[options]\n  Interface = eth0\n", FILE).unwrap();
    assert_eq!(none.options.metrics, None);
}

#[test]
fn capture_ring_in_both_formats() {
    let knockd = |v: &str| {
        Config::from_knockd_str(&format!("[options]\n  capture_ring = {v}\n"), FILE)
            .unwrap()
            .options
            .capture_ring
    };
    let toml = |v: &str| {
        Config::from_toml_str(&format!("[options]\ncapture_ring = {v}\n"), "k.toml")
            .unwrap()
            .options
            .capture_ring
    };
    for (text, bytes) in [
        ("32M", 32 << 20),
        ("1M", 1 << 20),
        ("1m", 1 << 20),
        ("32 M", 32 << 20),
        ("64K", 64 << 10),
        ("1G", 1 << 30),
        ("131072", 128 << 10),
        ("0", 0),
    ] {
        assert_eq!(knockd(text), Some(bytes), "{text}");
        assert_eq!(toml(&format!("\"{text}\"")), Some(bytes), "{text}");
    }
    // TOML also takes a number of bytes.
    assert_eq!(toml("0"), Some(0));
    assert_eq!(toml("1048576"), Some(1 << 20));
    // Not given: the capture's default.
    let none = Config::from_knockd_str("[options]\n  Interface = eth0\n", FILE).unwrap();
    assert_eq!(none.options.capture_ring, None);
    // The converter keeps it, in the largest exact unit.
    for (text, written) in [("1M", "\"1M\""), ("0", "\"0\""), ("1536K", "\"1536K\"")] {
        let c = Config::from_knockd_str(&format!("[options]\n  capture_ring = {text}\n"), FILE)
            .unwrap();
        let t = c.to_toml_string().unwrap();
        assert!(t.contains(&format!("capture_ring = {written}")), "{t}");
        let back = Config::from_toml_str(&t, "k.toml").unwrap();
        assert_eq!(back.options.capture_ring, c.options.capture_ring);
    }
    assert!(!none.to_toml_string().unwrap().contains("capture_ring"));
}

#[test]
fn bad_capture_ring() {
    for bad in [
        "32X",
        "M",
        "-1M",
        "1.5M",
        "32 MB",
        "",
        "1T",
        "99999999999999999999",
        "1K",
        "63K",
        "2G",
    ] {
        let e = err(&format!(
            "[options]\n  Interface = eth0\n  capture_ring = {bad}\n"
        ));
        assert!(matches!(e, ConfigError::BadValue { .. }), "{bad}: {e}");
        says(
            &e,
            &[
                "/etc/knockd.conf:3:18",
                &format!("capture_ring = \"{bad}\""),
                "0 for no ring",
                "64K to 1G",
            ],
        );
    }
    let toml_err = |bad: &str| {
        Config::from_toml_str(
            &format!("[options]\ninterfaces = [\"eth0\"]\ncapture_ring = {bad}\n"),
            "k.toml",
        )
        .unwrap_err()
    };
    for bad in ["\"32X\"", "\"1K\"", "2147483648", "-1"] {
        let e = toml_err(bad);
        assert!(matches!(e, ConfigError::BadValue { .. }), "{bad}: {e}");
        says(
            &e,
            &[
                "k.toml:3:16",
                "options.capture_ring",
                bad.trim_matches('"'),
                "64K to 1G",
            ],
        );
    }
    // Neither a string nor a number: the TOML reader's error, at the value.
    says(&toml_err("true"), &["k.toml:3:16", "boolean", "64K to 1G"]);
}

#[test]
fn bad_interface() {
    let e = err("[options]\n  Interface = eth0,,wg0\n");
    says(
        &e,
        &[
            "/etc/knockd.conf:2:15",
            "Interface = \"eth0,,wg0\"",
            "interface name",
        ],
    );
}

#[test]
fn not_utf8_and_missing_config() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("knockd.conf");
    std::fs::write(&p, b"[a]\nsequence = 1\ncommand = \xff\n").unwrap();
    let e = Config::from_knockd_file(&p).unwrap_err();
    says(&e, &[&format!("{}: line 3", p.display()), "UTF-8"]);
    let e = Config::from_knockd_file(dir.path().join("nope")).unwrap_err();
    says(&e, &["nope", "cannot read"]);
}

#[test]
fn derived_ranges_too_small_and_timeouts_too_long() {
    let e = err(&door(
        "  sequence_secret_file = /etc/k\n  sequence_length = 5\n  sequence_ports = 2000-2003",
    ));
    assert!(matches!(e, ConfigError::Conflict { .. }));
    says(
        &e,
        &[
            "/etc/knockd.conf:5:1",
            "sequence_ports 2000-2003 has 4 ports, fewer than sequence_length = 5",
        ],
    );
    let e = err(&door(
        "  sequence_secret_file = /etc/k\n  sequence_period = 1s\n  seq_timeout = 2m",
    ));
    says(
        &e,
        &[
            "/etc/knockd.conf:5:1",
            "more than 100 times sequence_period",
        ],
    );
    // The same in TOML.
    let toml = "[[door]]\nname = \"d\"\nsequence_secret_file = \"/etc/k\"\nsequence_length = 3\nsequence_ports = \"2000-2001\"\n";
    let e = Config::from_toml_str(toml, "k.toml").unwrap_err();
    says(
        &e,
        &["k.toml:", "has 2 ports, fewer than sequence_length = 3"],
    );
    let toml =
        "[[door]]\nname = \"d\"\nsequence_secret_file = \"/etc/k\"\nsequence_period = \"0s\"\n";
    let e = Config::from_toml_str(toml, "k.toml").unwrap_err();
    says(&e, &["k.toml:", "sequence_period", "above 0"]);
}

#[test]
fn secret_file_missing_empty_or_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let conf =
        |path: &std::path::Path| door(&format!("  sequence_secret_file = {}", path.display()));

    let missing = dir.path().join("nope.key");
    let e = err(&conf(&missing));
    assert!(matches!(e, ConfigError::SecretFile { .. }));
    says(
        &e,
        &[
            "/etc/knockd.conf:5",
            "door [door]",
            "nope.key",
            "cannot read it",
        ],
    );

    let empty = crate::secret(dir.path(), "empty.key", " \n");
    says(
        &err(&conf(&empty)),
        &["/etc/knockd.conf:5", "empty.key", "it is empty"],
    );

    let open = crate::secret(dir.path(), "open.key", "sesame\n");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    says(
        &err(&conf(&open)),
        &[
            "/etc/knockd.conf:5",
            "open.key",
            "readable by everyone (mode 0644)",
            "chmod 600",
        ],
    );

    // A good one loads, and derives.
    let good = crate::secret(dir.path(), "good.key", "sesame\n");
    let c = Config::from_knockd_str(&conf(&good), FILE).unwrap();
    let d = c.doors[0].derived().unwrap();
    assert_eq!(d.secret.as_ref().unwrap().as_bytes(), b"sesame");
    let ws = d
        .windows_around("door", std::time::Duration::from_secs(3_000))
        .unwrap();
    assert_eq!(ws.iter().map(|w| w.0).collect::<Vec<_>>(), [99, 100, 101]);
    assert!(
        !format!("{c:?}").contains("sesame"),
        "the secret leaks in Debug"
    );
}
