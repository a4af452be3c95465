//! Arbitrary bytes as a knockd sequence file: an error or a list, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(f) = knock_config::SequenceFile::parse(&text, "fuzz.seq") {
        for i in 0..f.entries().len() {
            let _ = f.line_of(i);
        }
    }
});
