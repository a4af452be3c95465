//! Arbitrary bytes as knockd.conf: an error or a config, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cfg) = knock_config::Config::parse_knockd_str(&text, "fuzz.conf") {
        let _ = cfg.core_doors();
        let _ = cfg.to_toml_string();
    }
});
