//! Arbitrary bytes through the SPA decoder three ways, never a panic:
//! as a datagram (size, alphabet, HMAC: almost always refused there), as
//! a decrypted plaintext (`Message::decode`: every field parser), and
//! sealed with the verifier's own keys so that the bytes reach decryption,
//! the digest and the fields as an authenticated packet would. An accepted
//! message or request always names ports and re-encodes to a plaintext
//! that decodes to the same message.
#![no_main]
use std::time::Duration;

use knock_spa::{seal, Keys, Message, Stanza, Verifier};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "ZxwCwpGiY1Iv/nzNSES5J5LjuyJ6VpuHvBjzhY2bvck=";
const HMAC: &str =
    "913yacJvmZCnAkEMp7qifH1iZ2fJpda27ZO2WLXNbIWtImTr3ITQBGCZWcSzjEJloNi/cyz13s+7LsyNiH4i8w==";

fuzz_target!(|data: &[u8]| {
    let Ok(keys) = Keys::from_base64(KEY, HMAC) else {
        return;
    };
    let mut v = Verifier::new(vec![Stanza::new(keys.clone())]);
    let now = Duration::from_secs(1_796_089_354);
    let src = std::net::IpAddr::from([198, 18, 0, 7]);
    let _ = v.verify(now, src, data);
    if let Ok(m) = Message::decode(data) {
        assert!(!m.access.ports.is_empty());
        let again = Message::decode(m.plaintext().as_bytes());
        assert_eq!(again.as_ref(), Ok(&m));
    }
    let sealed = seal(&keys, data, [1, 2, 3, 4, 5, 6, 7, 8]);
    if let Ok(r) = v.verify(now, src, sealed.as_bytes()) {
        assert!(!r.ports.is_empty());
        let again = Message::decode(r.message.plaintext().as_bytes());
        assert_eq!(again.as_ref(), Ok(&r.message));
    }
});
