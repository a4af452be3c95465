//! fwknopd's access.conf and the SPA door keys of knockd.conf and TOML.

use std::time::Duration;

use knock_config::{Config, ConfigError, FirewallKind};
use knock_core::Step;

const K: &str = "ZxwCwpGiY1Iv/nzNSES5J5LjuyJ6VpuHvBjzhY2bvck=";
const H: &str =
    "913yacJvmZCnAkEMp7qifH1iZ2fJpda27ZO2WLXNbIWtImTr3ITQBGCZWcSzjEJloNi/cyz13s+7LsyNiH4i8w==";

fn access_err(text: &str) -> String {
    match Config::parse_access_conf_str(text, "/etc/fwknop/access.conf") {
        Ok(d) => panic!("accepted: {d:?}"),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn says(msg: &str, pieces: &[&str]) {
    for p in pieces {
        assert!(msg.contains(p), "{msg:?} lacks {p:?}");
    }
}

fn stanza(body: &str) -> String {
    format!("SOURCE ANY\n    KEY_BASE64 {K}\n    HMAC_KEY_BASE64 {H}\n{body}")
}

#[test]
fn several_stanzas_in_order_with_their_rules() {
    let text = format!(
        "{}\n# second\nSOURCE 198.18.0.0/24, 2001:db8::/32\n    KEY correct horse\n    HMAC_KEY_BASE64 {H}\n    \
         OPEN_PORTS tcp/22\n    RESTRICT_PORTS tcp/23\n    REQUIRE_SOURCE_ADDRESS Y\n    \
         ACCESS_EXPIRE 12/31/2027\n    HMAC_DIGEST_TYPE sha256\n",
        stanza("    OPEN_PORTS tcp/22,udp/1194\n    FW_ACCESS_TIMEOUT 5\n")
    );
    let doors = Config::parse_access_conf_str(&text, "access.conf").unwrap();
    // The first stanza is a door per port, the second a single door.
    let names: Vec<&str> = doors.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["stanza1:tcp/22", "stanza1:udp/1194", "stanza2"]);
    assert_eq!(doors[0].cmd_timeout, Duration::from_secs(5));
    assert_eq!(doors[0].open, vec![Step::tcp(22)]);
    assert_eq!(doors[1].open, vec![Step::udp(1194)]);
    assert_eq!(
        doors[1].spa_stanza().unwrap().open_ports,
        vec![Step::tcp(22), Step::udp(1194)]
    );
    let s = doors[2].spa_stanza().unwrap();
    assert_eq!(s.source.len(), 2);
    assert_eq!(s.restrict_ports, vec![Step::tcp(23)]);
    assert!(s.require_source_address);
    assert_eq!(s.expire, Some(Duration::from_secs(1_830_297_599)));
    assert_eq!(s.timeout, knock_spa::DEFAULT_ACCESS_TIMEOUT);
    assert_eq!(doors[2].firewall, FirewallKind::Auto);
}

#[test]
fn errors_name_file_line_and_column() {
    let e = access_err(&stanza("    OPEN_PORTS tcp/22, tcp/0\n"));
    says(&e, &["/etc/fwknop/access.conf:4:24", "tcp/0", "port 0"]);
    let e = access_err(&stanza(
        "    OPEN_PORTS tcp/22\n    FW_ACCESS_TIMEOUT soon\n",
    ));
    says(
        &e,
        &[
            "access.conf:5:23",
            "FW_ACCESS_TIMEOUT",
            "\"soon\"",
            "seconds",
        ],
    );
    let e = access_err(&stanza("    OPEN_PORTS tcp/22\n    OPEN_PORT tcp/23\n"));
    says(
        &e,
        &["access.conf:5:5", "unknown key", "OPEN_PORT", "OPEN_PORTS"],
    );
    let e = access_err("OPEN_PORTS tcp/22\n");
    says(&e, &["access.conf:1:1", "OPEN_PORTS", "outside a section"]);
    let e = access_err("SOURCE 198.18.0.1/15\n");
    says(&e, &["access.conf:1:8", "without host bits"]);
    let e = access_err(&stanza("    OPEN_PORTS tcp/22\n    OPEN_PORTS tcp/23\n"));
    says(&e, &["access.conf:5:5", "set twice", "first on line 4"]);
    let e = access_err(&format!(
        "SOURCE ANY\n    KEY_BASE64 not*base64\n    HMAC_KEY_BASE64 {H}\n    OPEN_PORTS tcp/22\n"
    ));
    says(&e, &["access.conf:2:16", "KEY_BASE64", "base64"]);
    assert!(!e.contains("not*base64"), "a key is not echoed: {e}");
    let e = access_err("SOURCE ANY\n    OPEN_PORTS tcp/22\n    HMAC_KEY_BASE64 aGk=\n");
    says(
        &e,
        &["access.conf:1:1", "stanza1", "needs KEY or KEY_BASE64"],
    );
    let e = access_err(&stanza(""));
    says(&e, &["needs OPEN_PORTS", "or CMD_CYCLE_OPEN"]);
}

#[test]
fn what_is_not_supported_is_refused_clearly() {
    for (line, why) in [
        ("GPG_REMOTE_ID 1234ABCD", "GnuPG"),
        ("ENABLE_CMD_EXEC Y", "command messages"),
        ("FORCE_NAT 198.18.0.9 22", "NAT"),
        ("ENCRYPTION_MODE legacy", "CBC"),
        ("HMAC_DIGEST_TYPE sha512", "sha256"),
        ("CMD_CYCLE_OPEN echo $DST", "$PORT"),
    ] {
        let e = access_err(&stanza(&format!("    OPEN_PORTS tcp/22\n    {line}\n")));
        says(&e, &["access.conf:5:", "not supported", why]);
    }
    let e = access_err("%include_folder /etc/fwknop/access.d\n");
    says(&e, &["access.conf:1:1", "not supported", "%include"]);
}

#[test]
fn cmd_cycle_becomes_commands_with_percent_ip() {
    let doors = Config::parse_access_conf_str(
        &stanza("    CMD_CYCLE_OPEN ipset add allow $IP\n    CMD_CYCLE_CLOSE ipset del allow $SRC\n    CMD_CYCLE_TIMER 7\n"),
        "a",
    )
    .unwrap();
    let d = &doors[0];
    assert_eq!(d.firewall, FirewallKind::Command);
    assert_eq!(d.start_command.as_deref(), Some("ipset add allow %IP%"));
    assert_eq!(d.stop_command.as_deref(), Some("ipset del allow %IP%"));
    assert_eq!(d.cmd_timeout, Duration::from_secs(7));
    assert!(d.open.is_empty());
}

#[test]
fn include_follows_files_and_names_where_it_failed() {
    let dir = tempfile::tempdir().unwrap();
    let inner = crate::write(
        dir.path(),
        "inner.conf",
        &stanza("    OPEN_PORTS tcp/2222\n"),
    );
    let main = crate::write(
        dir.path(),
        "access.conf",
        &format!(
            "{}\n%include {}\n",
            stanza("    OPEN_PORTS tcp/22\n"),
            inner.display()
        ),
    );
    let mut c = Config::parse_knockd_str("[options]\n", "knockd.conf").unwrap();
    c.add_access_conf(&main).unwrap();
    let names: Vec<&str> = c.doors.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["stanza1", "stanza2"]);
    assert_eq!(c.doors[1].open, vec![Step::tcp(2222)]);
    assert_eq!(c.spa_stanzas().len(), 2);

    // An error inside the included file names that file and line.
    crate::write(dir.path(), "inner.conf", &stanza("    OPEN_PORTS tcp/x\n"));
    let mut c = Config::parse_knockd_str("[options]\n", "knockd.conf").unwrap();
    let e = c.add_access_conf(&main).unwrap_err().to_string();
    says(
        &e,
        &[
            &format!("{}:6:1: %include", main.display()),
            &format!("{}:4:16", inner.display()),
        ],
    );
    // A missing one.
    std::fs::remove_file(&inner).unwrap();
    let e = c.add_access_conf(&main).unwrap_err();
    assert!(matches!(e, ConfigError::Include { .. }));
    says(&e.to_string(), &["%include", "inner.conf"]);
    // An include loop ends at the depth limit.
    crate::write(
        dir.path(),
        "loop.conf",
        &format!("%include {}\n", dir.path().join("loop.conf").display()),
    );
    let e = c.add_access_conf(dir.path().join("loop.conf")).unwrap_err();
    says(&e.to_string(), &["nested %include"]);
}

#[test]
fn knockd_conf_and_toml_spa_doors_are_the_same() {
    let knockd = format!(
        "[options]\n    spa_port = 62202\n[ssh]\n    spa_key_base64 = {K}\n    spa_hmac_key_base64 = {H}\n    \
         open = tcp/22\n    cmd_timeout = 30\n    from = 198.18.0.0/15\n    spa_require_username = alice\n"
    );
    let a = Config::parse_knockd_str(&knockd, "knockd.conf").unwrap();
    assert_eq!(a.options.spa_port, 62202);
    let toml = a.to_toml_string().unwrap();
    assert!(toml.contains("spa_key_base64"), "{toml}");
    let b = Config::parse_toml_str(&toml, "knock.toml").unwrap();
    assert_eq!(a, b);
    let st = b.doors[0].spa_stanza().unwrap();
    assert_eq!(st.require_username.as_deref(), Some("alice"));
    assert_eq!(st.open_ports, vec![Step::tcp(22)]);
}

#[test]
fn a_door_of_several_ports_is_one_door_per_port_and_converts_back_whole() {
    let knockd = format!(
        "[ssh]\n    spa_key_base64 = {K}\n    spa_hmac_key_base64 = {H}\n    \
         open = tcp/22, tcp/80\n    cmd_timeout = 30\n"
    );
    let a = Config::parse_knockd_str(&knockd, "knockd.conf").unwrap();
    let names: Vec<&str> = a.doors.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["ssh:tcp/22", "ssh:tcp/80"]);
    let toml = a.to_toml_string().unwrap();
    assert_eq!(toml.matches("[[door]]").count(), 1, "{toml}");
    assert!(toml.contains("name = \"ssh\""), "{toml}");
    let b = Config::parse_toml_str(&toml, "knock.toml").unwrap();
    assert_eq!(a, b);
    // A door named like one of the ports' doors is refused.
    let clash = format!("{knockd}[ssh:tcp/80]\n    sequence = 7000\n    command = true\n");
    let e = Config::parse_knockd_str(&clash, "knockd.conf")
        .unwrap_err()
        .to_string();
    says(
        &e,
        &["knockd.conf:", "ssh:tcp/80", "two doors have this name"],
    );
}

#[test]
fn spa_door_key_errors() {
    let err = |body: &str| {
        Config::parse_knockd_str(&format!("[ssh]\n{body}"), "knockd.conf")
            .unwrap_err()
            .to_string()
    };
    let e = err(&format!("    spa_key_base64 = {K}\n    spa_hmac_key_base64 = {H}\n    sequence = 7000\n    open = tcp/22\n"));
    says(
        &e,
        &[
            "knockd.conf:4:1",
            "sequence and SPA keys exclude each other",
        ],
    );
    let e = err(&format!("    spa_key_base64 = {K}\n    open = tcp/22\n"));
    says(
        &e,
        &[
            "knockd.conf:1:1",
            "needs spa_hmac_key or spa_hmac_key_base64",
        ],
    );
    let e = err("    sequence = 7000\n    spa_require_username = bob\n");
    says(
        &e,
        &[
            "knockd.conf:3:1",
            "spa_require_username needs spa_key_base64",
        ],
    );
    let e = err(&format!(
        "    spa_key = {}\n    spa_hmac_key_base64 = {H}\n    open = tcp/22\n",
        "k".repeat(33)
    ));
    says(&e, &["knockd.conf:2:15", "spa_key", "1 to 32 bytes"]);
    let e = err(&format!(
        "    spa_key_base64 = {K}\n    spa_hmac_key_base64 = {H}\n"
    ));
    says(&e, &["an SPA door needs open"]);
}
