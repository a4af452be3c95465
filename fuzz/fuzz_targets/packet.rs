//! Arbitrary bytes as a frame of every link type: an event or a typed
//! reason, never a panic; an event always comes from a TCP or UDP header
//! that was inside the buffer.
#![no_main]
use knock_capture::{parse, LinkType};
use knock_core::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for link in LinkType::ALL {
        if parse(link, data, Timestamp::ZERO).is_ok() {
            // IPv4 (20) + UDP (8) is the smallest frame that can carry a knock.
            assert!(data.len() >= 28, "event from {} bytes", data.len());
        }
    }
});
