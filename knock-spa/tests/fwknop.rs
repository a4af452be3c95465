//! Packets made by the real fwknop 2.6.10 client (`tests/fixtures/make.sh`)
//! against the verifier, and ours against what fwknop printed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use knock_core::Step;
use knock_spa::{seal, Access, Keys, Message, Reject, Stanza, Verifier};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A fixture: the packet, and the fields `fwknop -v` printed.
struct Fixture {
    packet: Vec<u8>,
    fields: Vec<(String, String)>,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let packet = std::fs::read(dir().join(format!("{name}.spa"))).unwrap();
        let packet = packet.trim_ascii_end().to_vec();
        let text = std::fs::read_to_string(dir().join(format!("{name}.txt"))).unwrap();
        // The first dump (before "Generating SPA packet") is what was encoded.
        let fields = text
            .lines()
            .take_while(|l| !l.starts_with("Generating"))
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.trim().to_owned(), v.trim().to_owned()))
            })
            .collect();
        Fixture { packet, fields }
    }

    fn field(&self, key: &str) -> &str {
        &self
            .fields
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key}"))
            .1
    }

    fn timestamp(&self) -> Duration {
        Duration::from_secs(self.field("Timestamp").parse().unwrap())
    }
}

fn keys() -> Keys {
    let text = std::fs::read_to_string(dir().join("keys.txt")).unwrap();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
            .unwrap()
            .to_owned()
    };
    Keys::from_base64(&get("KEY_BASE64"), &get("HMAC_KEY_BASE64")).unwrap()
}

fn verifier() -> Verifier {
    Verifier::new(vec![Stanza::new(keys())])
}

fn src() -> IpAddr {
    "198.18.0.7".parse().unwrap()
}

#[test]
fn access_request_from_fwknop() {
    let f = Fixture::load("access");
    let mut v = verifier();
    let r = v
        .verify(f.timestamp() + Duration::from_secs(3), src(), &f.packet)
        .unwrap();
    let (addr, ports) = f.field("Message String").split_once(',').unwrap();
    assert_eq!(r.addr, addr.parse::<IpAddr>().unwrap());
    assert_eq!(ports, "tcp/22");
    assert_eq!(r.ports, vec![Step::tcp(22)]);
    assert_eq!(r.message.user, f.field("Username"));
    assert_eq!(r.message.rand, f.field("Random Value"));
    assert_eq!(r.message.version, f.field("FKO Version"));
    assert_eq!(r.message.encode(), f.field("Encoded Data"));
    assert_eq!(r.lifetime, knock_spa::DEFAULT_ACCESS_TIMEOUT);
    assert_eq!(v.stats().accepted, 1);
}

#[test]
fn every_fwknop_variant_we_support() {
    for name in ["source", "multi", "timeout", "sha512", "hmac512"] {
        let f = Fixture::load(name);
        let mut v = verifier();
        let got = v.verify(f.timestamp(), src(), &f.packet);
        if name == "hmac512" {
            // An HMAC-SHA512 is 86 characters: its last 43 are not an
            // HMAC-SHA256 of the rest.
            assert_eq!(got.unwrap_err().reason, Reject::Hmac, "{name}");
            continue;
        }
        let r = got.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(r.message.encode(), f.field("Encoded Data"), "{name}");
        match name {
            "source" => assert_eq!(r.addr, src(), "0.0.0.0 is the packet's source"),
            "multi" => assert_eq!(r.ports, vec![Step::tcp(22), Step::udp(53)]),
            "timeout" => assert_eq!(r.lifetime, Duration::from_secs(45)),
            _ => {}
        }
    }
}

#[test]
fn passphrase_key() {
    let f = Fixture::load("passphrase");
    let hmac = Keys::decode_base64(
        "913yacJvmZCnAkEMp7qifH1iZ2fJpda27ZO2WLXNbIWtImTr3ITQBGCZWcSzjEJloNi/cyz13s+7LsyNiH4i8w==",
    )
    .unwrap();
    let keys = Keys::new(b"correct horse", &hmac).unwrap();
    let mut v = Verifier::new(vec![Stanza::new(keys)]);
    let r = v.verify(f.timestamp(), src(), &f.packet).unwrap();
    assert_eq!(r.message.encode(), f.field("Encoded Data"));
}

#[test]
fn command_and_nat_messages_are_refused() {
    for name in ["command", "nat"] {
        let f = Fixture::load(name);
        let mut v = verifier();
        let e = v.verify(f.timestamp(), src(), &f.packet).unwrap_err();
        assert_eq!(e.reason, Reject::Unsupported, "{name}");
        assert_eq!(v.stats().rejected(Reject::Unsupported), 1);
    }
}

#[test]
fn wrong_hmac_key_costs_no_decryption() {
    let f = Fixture::load("access");
    let enc = Keys::decode_base64("ZxwCwpGiY1Iv/nzNSES5J5LjuyJ6VpuHvBjzhY2bvck=").unwrap();
    let mut v = Verifier::new(vec![Stanza::new(
        Keys::new(&enc, b"another hmac key").unwrap(),
    )]);
    let e = v.verify(f.timestamp(), src(), &f.packet).unwrap_err();
    assert_eq!(e.reason, Reject::Hmac);
    assert_eq!(v.stats().rejected(Reject::Hmac), 1);
    assert!(
        v.replay_cache().is_empty(),
        "an unauthenticated packet is not remembered"
    );
}

#[test]
fn wrong_encryption_key_is_told_apart() {
    let f = Fixture::load("access");
    let hmac = Keys::decode_base64(
        "913yacJvmZCnAkEMp7qifH1iZ2fJpda27ZO2WLXNbIWtImTr3ITQBGCZWcSzjEJloNi/cyz13s+7LsyNiH4i8w==",
    )
    .unwrap();
    let mut v = Verifier::new(vec![Stanza::new(Keys::new(&[9; 32], &hmac).unwrap())]);
    let e = v.verify(f.timestamp(), src(), &f.packet).unwrap_err();
    assert_eq!(e.reason, Reject::Decrypt);
    assert_eq!(v.stats().rejected(Reject::Decrypt), 1);
}

#[test]
fn stale_and_future_timestamps_are_refused() {
    // fwknop --time-offset-minus 600: ten minutes old when made.
    let f = Fixture::load("stale");
    let made = Fixture::load("access").timestamp();
    let mut v = verifier();
    let e = v.verify(made, src(), &f.packet).unwrap_err();
    assert_eq!(e.reason, Reject::Stale);
    // A fresh packet two minutes and a second early (the client's clock
    // ahead) is refused too; at the edge of the window it passes.
    let f = Fixture::load("access");
    let mut v = verifier();
    let early = f.timestamp() - Duration::from_secs(121);
    assert_eq!(
        v.verify(early, src(), &f.packet).unwrap_err().reason,
        Reject::Stale
    );
    let mut v = verifier();
    assert!(v
        .verify(f.timestamp() + Duration::from_secs(120), src(), &f.packet)
        .is_ok());
}

#[test]
fn replay_is_refused_and_survives_a_restart() {
    let f = Fixture::load("access");
    let now = f.timestamp();
    let mut v = verifier();
    assert!(v.verify(now, src(), &f.packet).is_ok());
    let e = v.verify(now, src(), &f.packet).unwrap_err();
    assert_eq!(e.reason, Reject::Replay);
    // From another source too.
    let other: IpAddr = "198.18.0.99".parse().unwrap();
    assert_eq!(
        v.verify(now, other, &f.packet).unwrap_err().reason,
        Reject::Replay
    );
    assert_eq!(v.stats().rejected(Reject::Replay), 2);
    // A new process with the saved cache.
    let saved = v.saved_replay();
    let mut w = verifier();
    assert!(w.restore_replay(&saved, now).is_empty());
    assert_eq!(
        w.verify(now, src(), &f.packet).unwrap_err().reason,
        Reject::Replay
    );
    // With the salted prefix put back, it is not SPA at all.
    let mut prefixed = b"U2FsdGVkX1".to_vec();
    prefixed.extend_from_slice(&f.packet);
    assert_eq!(
        w.verify(now, src(), &prefixed).unwrap_err().reason,
        Reject::NotSpa
    );
}

#[test]
fn stanza_rules() {
    let f = Fixture::load("access"); // alice asks tcp/22 for 198.18.0.2
    let now = f.timestamp();
    let check = |edit: &dyn Fn(&mut Stanza)| {
        let mut s = Stanza::new(keys());
        edit(&mut s);
        Verifier::new(vec![s])
            .verify(now, src(), &f.packet)
            .map(|r| r.addr)
    };
    assert_eq!(
        check(&|s| s.open_ports = vec![Step::tcp(80)])
            .unwrap_err()
            .reason,
        Reject::Port
    );
    assert_eq!(
        check(&|s| s.restrict_ports = vec![Step::tcp(22)])
            .unwrap_err()
            .reason,
        Reject::Port
    );
    assert!(check(&|s| s.open_ports = vec![Step::tcp(22), Step::tcp(80)]).is_ok());
    assert_eq!(
        check(&|s| s.require_username = Some("bob".into()))
            .unwrap_err()
            .reason,
        Reject::User
    );
    assert!(check(&|s| s.require_username = Some("alice".into())).is_ok());
    assert_eq!(
        check(&|s| s.expire = Some(now - Duration::from_secs(1)))
            .unwrap_err()
            .reason,
        Reject::Expired
    );
    assert_eq!(
        check(&|s| s.source = vec!["198.19.0.0/16".parse().unwrap()])
            .unwrap_err()
            .reason,
        Reject::NoStanza
    );
    assert!(check(&|s| s.source = vec!["198.18.0.0/24".parse().unwrap()]).is_ok());
    // REQUIRE_SOURCE_ADDRESS refuses 0.0.0.0 (fwknop -s), not an address.
    assert!(check(&|s| s.require_source_address = true).is_ok());
    let s = Fixture::load("source");
    let mut st = Stanza::new(keys());
    st.require_source_address = true;
    let e = Verifier::new(vec![st])
        .verify(s.timestamp(), src(), &s.packet)
        .unwrap_err();
    assert_eq!(e.reason, Reject::Address);
}

#[test]
fn second_stanza_with_the_right_key() {
    let f = Fixture::load("access");
    let wrong = Stanza::new(Keys::new(b"k", b"h").unwrap());
    let mut v = Verifier::new(vec![wrong, Stanza::new(keys())]);
    assert_eq!(v.verify(f.timestamp(), src(), &f.packet).unwrap().stanza, 1);
}

#[test]
fn our_packet_matches_fwknop_byte_for_byte() {
    // fwknop's packet carries its salt in the clear (after "Salted__"):
    // sealing the same plaintext with the same salt must give the same bytes.
    let f = Fixture::load("access");
    let mut v = verifier();
    let r = v.verify(f.timestamp(), src(), &f.packet).unwrap();
    let mut full = b"U2FsdGVkX1".to_vec();
    full.extend_from_slice(&f.packet[..f.packet.len() - 43]);
    use base64::Engine;
    let cfg = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent);
    let raw = base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, cfg)
        .decode(&full)
        .unwrap();
    let salt: [u8; 8] = raw[8..16].try_into().unwrap();
    let ours = seal(&keys(), r.message.plaintext().as_bytes(), salt);
    assert_eq!(ours.as_bytes(), f.packet.as_slice());
}

#[test]
fn our_encoder_round_trips() {
    let now = Duration::from_secs(1_796_000_000);
    let msg = Message::access(
        "root",
        now.as_secs(),
        Access {
            addr: Some("2001:db8::2".parse().unwrap()),
            ports: vec![Step::tcp(22)],
        },
        42,
    )
    .with_client_timeout(9);
    let packet = seal(&keys(), msg.plaintext().as_bytes(), [3; 8]);
    let mut v = verifier();
    let r = v
        .verify(now, "2001:db8::9".parse().unwrap(), packet.as_bytes())
        .unwrap();
    assert_eq!(r.addr, "2001:db8::2".parse::<IpAddr>().unwrap());
    assert_eq!(r.lifetime, Duration::from_secs(9));
    assert_eq!(r.message, msg);
}

#[test]
fn garbage_never_panics() {
    let mut v = verifier();
    let now = Duration::from_secs(1_796_000_000);
    let f = Fixture::load("access");
    for len in 0..f.packet.len() {
        let _ = v.verify(now, src(), &f.packet[..len]);
    }
    for i in 0..f.packet.len() {
        let mut p = f.packet.clone();
        p[i] = if p[i] == b'A' { b'B' } else { b'A' };
        let e = v.verify(f.timestamp(), src(), &p).unwrap_err();
        assert!(
            matches!(e.reason, Reject::Hmac | Reject::NotSpa),
            "byte {i}: {e:?}"
        );
    }
}
