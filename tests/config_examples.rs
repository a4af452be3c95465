//! The shipped example configurations parse, mean the same in both formats,
//! and the demo data's config matches the demo capture's doors.

// Test code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use knock::config::Config;

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn knockd_conf_and_its_toml_twin_are_the_same_config() {
    let conf = Config::from_knockd_str(&read("knockd.conf"), "examples/knockd.conf").unwrap();
    let toml = Config::from_toml_str(&read("knockd.toml"), "examples/knockd.toml").unwrap();
    assert_eq!(
        conf, toml,
        "regenerate examples/knockd.toml with `knockd --to-toml`"
    );
    let names: Vec<&str> = conf.doors.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        ["openSSH", "closeSSH", "openHTTPS", "openVPN", "wallet"]
    );
    assert_eq!(conf.core_doors().len(), 5);
}

#[test]
fn the_example_config_builds_a_matcher() {
    let conf = Config::from_knockd_str(&read("knockd.conf"), "examples/knockd.conf").unwrap();
    let m = knock::core::Matcher::new(conf.core_doors(), Default::default()).unwrap();
    assert!(m.listen_set().iter().any(|l| l.port == 54321));
}
