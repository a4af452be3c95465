//! The inner layer: fwknop's colon-separated fields and their digest
//! (`lib/fko_encode.c`, `lib/fko_decode.c`).
//!
//! ```text
//! rand(16 digits):b64(user):timestamp:version:type:b64(message)[:b64(server_auth)][:client_timeout]:b64(digest)
//! ```
//!
//! base64 without `=`; the digest (SHA-256 by default) is over everything
//! before its colon. Message types 1 (access) and 3 (access with a client
//! timeout) are read; command messages (0) and the NAT types (2, 4, 5, 6)
//! are refused as [`Reject::Unsupported`].

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use base64::Engine;
use knock_core::{Proto, Step};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::wire::B64;
use crate::Reject;

/// fwknop's protocol version, written by the encoder.
pub const PROTOCOL_VERSION: &str = "3.0.0";

/// Field limits (`lib/fko_limits.h`).
const MAX_USER_B64: usize = 64;
const MAX_TIMESTAMP: usize = 12;
const MAX_VERSION: usize = 8;
const MAX_MESSAGE_B64: usize = 256;
const RAND_LEN: usize = 16;

/// The message types this crate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// 1: an access request (`fwknop -A`).
    Access,
    /// 3: an access request with a client timeout (`fwknop -A ... -f N`).
    ClientTimeoutAccess,
}

impl Kind {
    fn number(self) -> u8 {
        match self {
            Kind::Access => 1,
            Kind::ClientTimeoutAccess => 3,
        }
    }
}

/// The access an SPA message asks for: `ADDRESS,proto/port[,proto/port...]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// The address to open for; `None` is fwknop's `0.0.0.0` (`fwknop -s`):
    /// the packet's source.
    pub addr: Option<IpAddr>,
    /// The ports, in the message's order.
    pub ports: Vec<Step>,
}

impl Access {
    fn parse(text: &str) -> Option<Access> {
        let mut parts = text.split(',');
        let addr: IpAddr = parts.next()?.parse().ok()?;
        let addr = (addr != IpAddr::V4(Ipv4Addr::UNSPECIFIED)).then_some(addr);
        let ports = parts
            .map(|p| {
                let (proto, port) = p.split_once('/')?;
                let proto = match proto {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    _ => return None,
                };
                if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
                Some(Step { proto, port })
            })
            .collect::<Option<Vec<Step>>>()?;
        (!ports.is_empty()).then_some(Access { addr, ports })
    }

    fn render(&self) -> String {
        let mut s = match self.addr {
            Some(a) => a.to_string(),
            None => Ipv4Addr::UNSPECIFIED.to_string(),
        };
        for p in &self.ports {
            let _ = write!(s, ",{}/{}", p.proto, p.port);
        }
        s
    }
}

/// One decoded SPA message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Message {
    /// The 16-digit random value (what makes two requests differ).
    pub rand: String,
    /// The user name the client sent (`fwknop -U`, else its login).
    pub user: String,
    /// The client's Unix time, in seconds.
    pub timestamp: u64,
    /// The client's protocol version (`3.0.0` for fwknop 2.6).
    pub version: String,
    /// The message type.
    pub kind: Kind,
    /// What it asks for.
    pub access: Access,
    /// `server_auth` (unused by fwknopd 2.6; kept, not checked).
    pub server_auth: Option<String>,
    /// The client's timeout (`-f`), type 3 only.
    pub client_timeout: Option<u32>,
}

impl Message {
    /// An access request as the fwknop client builds it; `rand` is any
    /// number, written as 16 digits (the caller's randomness).
    pub fn access(user: &str, timestamp: u64, access: Access, rand: u64) -> Message {
        Message {
            rand: format!("{:016}", rand % 10_000_000_000_000_000),
            user: user.to_owned(),
            timestamp,
            version: PROTOCOL_VERSION.to_owned(),
            kind: Kind::Access,
            access,
            server_auth: None,
            client_timeout: None,
        }
    }

    /// Asks for this timeout (fwknop's `-f`): message type 3.
    pub fn with_client_timeout(mut self, secs: u32) -> Message {
        self.kind = Kind::ClientTimeoutAccess;
        self.client_timeout = Some(secs);
        self
    }

    /// The encoded fields, without the digest.
    pub fn encode(&self) -> String {
        let mut s = format!(
            "{}:{}:{}:{}:{}:{}",
            self.rand,
            B64.encode(self.user.as_bytes()),
            self.timestamp,
            self.version,
            self.kind.number(),
            B64.encode(self.access.render().as_bytes())
        );
        if let Some(a) = &self.server_auth {
            let _ = write!(s, ":{}", B64.encode(a.as_bytes()));
        }
        if let (Kind::ClientTimeoutAccess, Some(t)) = (self.kind, self.client_timeout) {
            let _ = write!(s, ":{t}");
        }
        s
    }

    /// What gets encrypted: the encoded fields, a colon, and their SHA-256
    /// in base64 (fwknop's default digest).
    pub fn plaintext(&self) -> String {
        let encoded = self.encode();
        let digest = B64.encode(Sha256::digest(encoded.as_bytes()));
        format!("{encoded}:{digest}")
    }

    /// Reads a decrypted plaintext: the digest first, then every field.
    ///
    /// # Errors
    /// [`Reject::Digest`] when the digest does not match,
    /// [`Reject::Unsupported`] for command and NAT messages and MD5/SHA-1
    /// digests, [`Reject::Malformed`] for anything else that is not what
    /// libfko writes.
    pub fn decode(plaintext: &[u8]) -> Result<Message, Reject> {
        let text = std::str::from_utf8(plaintext).map_err(|_| Reject::Malformed)?;
        let (encoded, digest) = text.rsplit_once(':').ok_or(Reject::Malformed)?;
        let ok = match digest.len() {
            43 => B64.encode(Sha256::digest(encoded.as_bytes())) == digest,
            64 => B64.encode(Sha384::digest(encoded.as_bytes())) == digest,
            86 => B64.encode(Sha512::digest(encoded.as_bytes())) == digest,
            // MD5 and SHA-1.
            22 | 27 => return Err(Reject::Unsupported),
            _ => return Err(Reject::Malformed),
        };
        if !ok {
            return Err(Reject::Digest);
        }
        let fields: Vec<&str> = encoded.split(':').collect();
        let [rand, user, timestamp, version, kind, message, rest @ ..] = fields.as_slice() else {
            return Err(Reject::Malformed);
        };
        if rand.len() != RAND_LEN || !rand.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Reject::Malformed);
        }
        if user.is_empty() || user.len() > MAX_USER_B64 {
            return Err(Reject::Malformed);
        }
        let user = b64_text(user)
            .filter(|u| valid_user(u))
            .ok_or(Reject::Malformed)?;
        let timestamp = number(timestamp, MAX_TIMESTAMP).ok_or(Reject::Malformed)?;
        if version.is_empty() || version.len() > MAX_VERSION {
            return Err(Reject::Malformed);
        }
        let kind = match *kind {
            "1" => Kind::Access,
            "3" => Kind::ClientTimeoutAccess,
            "0" | "2" | "4" | "5" | "6" => return Err(Reject::Unsupported),
            _ => return Err(Reject::Malformed),
        };
        if message.is_empty() || message.len() > MAX_MESSAGE_B64 {
            return Err(Reject::Malformed);
        }
        let access = b64_text(message)
            .and_then(|m| Access::parse(&m))
            .ok_or(Reject::Malformed)?;
        let (server_auth, client_timeout) = match (kind, rest) {
            (Kind::Access, []) => (None, None),
            (Kind::Access, [auth]) => (Some(b64_text(auth).ok_or(Reject::Malformed)?), None),
            (Kind::ClientTimeoutAccess, [t]) => (None, Some(timeout(t)?)),
            (Kind::ClientTimeoutAccess, [auth, t]) => (
                Some(b64_text(auth).ok_or(Reject::Malformed)?),
                Some(timeout(t)?),
            ),
            _ => return Err(Reject::Malformed),
        };
        Ok(Message {
            rand: (*rand).to_owned(),
            user,
            timestamp,
            version: (*version).to_owned(),
            kind,
            access,
            server_auth,
            client_timeout,
        })
    }
}

fn b64_text(field: &str) -> Option<String> {
    B64.decode(field)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

fn number(field: &str, max_len: usize) -> Option<u64> {
    if field.is_empty() || field.len() > max_len || !field.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    field.parse().ok()
}

/// fwknop's client timeouts go up to 2^16.
fn timeout(field: &str) -> Result<u32, Reject> {
    number(field, 6)
        .filter(|&t| t <= 1 << 16)
        .and_then(|t| u32::try_from(t).ok())
        .ok_or(Reject::Malformed)
}

/// libfko's `validate_username`: printable ASCII without `"/\[]:;|=,+*?<>`.
fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && user
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && !b"\"/\\[]:;|=,+*?<>".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Message {
        Message::access(
            "alice",
            1_796_089_354,
            Access {
                addr: Some("198.18.0.2".parse().unwrap()),
                ports: vec![Step::tcp(22)],
            },
            1_151_345_750_820_416,
        )
    }

    #[test]
    fn encodes_as_the_fwknop_client() {
        // The fields fwknop 2.6.10 printed for this request (tests/fixtures/access.txt).
        assert_eq!(
            req().encode(),
            "1151345750820416:YWxpY2U:1796089354:3.0.0:1:MTk4LjE4LjAuMix0Y3AvMjI"
        );
        assert_eq!(
            req().plaintext(),
            "1151345750820416:YWxpY2U:1796089354:3.0.0:1:MTk4LjE4LjAuMix0Y3AvMjI:LFxcUhK43XNH0zE5P5bygRS/lTtsBfV6E/7J7WqxJP8"
        );
    }

    #[test]
    fn round_trips() {
        let m = req().with_client_timeout(45);
        assert_eq!(Message::decode(m.plaintext().as_bytes()), Ok(m));
        let m = req();
        assert_eq!(Message::decode(m.plaintext().as_bytes()), Ok(m));
    }

    #[test]
    fn a_changed_field_fails_the_digest() {
        let p = req().plaintext().replace(":1796089354:", ":1796089355:");
        assert_eq!(Message::decode(p.as_bytes()), Err(Reject::Digest));
    }

    #[test]
    fn refuses_what_it_does_not_read() {
        let with = |edit: &dyn Fn(&str) -> String| {
            let e = edit(&req().encode());
            let d = B64.encode(Sha256::digest(e.as_bytes()));
            Message::decode(format!("{e}:{d}").as_bytes())
        };
        assert_eq!(with(&|e| e.replace(":1:", ":0:")), Err(Reject::Unsupported));
        assert_eq!(with(&|e| e.replace(":1:", ":2:")), Err(Reject::Unsupported));
        assert_eq!(with(&|e| e.replace(":1:", ":9:")), Err(Reject::Malformed));
        assert_eq!(with(&|e| e[1..].to_owned()), Err(Reject::Malformed));
        assert_eq!(with(&|e| format!("{e}:x:y")), Err(Reject::Malformed));
        let bad_access = B64.encode("198.18.0.2,icmp/0");
        assert_eq!(
            with(&|e| e.replace("MTk4LjE4LjAuMix0Y3AvMjI", &bad_access)),
            Err(Reject::Malformed)
        );
        assert_eq!(Message::decode(b"no colon"), Err(Reject::Malformed));
        assert_eq!(Message::decode(&[0xff, b':', b'x']), Err(Reject::Malformed));
    }

    #[test]
    fn access_addresses() {
        let a = Access::parse("0.0.0.0,tcp/22,udp/53").unwrap();
        assert_eq!(a.addr, None);
        assert_eq!(a.ports, vec![Step::tcp(22), Step::udp(53)]);
        let a = Access::parse("2001:db8::2,tcp/22").unwrap();
        assert_eq!(a.addr, Some("2001:db8::2".parse().unwrap()));
        assert_eq!(a.render(), "2001:db8::2,tcp/22");
        assert!(Access::parse("198.18.0.2").is_none());
        assert!(Access::parse("198.18.0.2,tcp/0").is_none());
        assert!(Access::parse("198.18.0.2,tcp/65536").is_none());
        assert!(Access::parse("198.18.0.2,tcp/+22").is_none());
        assert!(Access::parse("host,tcp/22").is_none());
    }
}
