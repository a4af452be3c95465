//! Arbitrary bytes as a TOML config: an error or a config, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cfg) = knock_config::Config::parse_toml_str(&text, "fuzz.toml") {
        let _ = cfg.core_doors();
    }
});
