//! The outer layer of an fwknop packet: AES-256-CBC with fwknop's salted key
//! derivation, base64 without padding, and the HMAC-SHA256 appended.
//!
//! What libfko 2.6.10 does to a plaintext (`lib/fko_encryption.c`,
//! `lib/cipher_funcs.c`, `lib/fko_hmac.c`, `lib/fko_funcs.c`):
//!
//! 1. an 8-byte random salt; key and IV from MD5 over the key bytes and the
//!    salt, OpenSSL's `EVP_BytesToKey` with one round (`D1 = MD5(k‖s)`,
//!    `Di = MD5(Di-1‖k‖s)`; key `D1‖D2`, IV `D3`). In the default CBC mode
//!    the key is used as given (1 to 32 bytes; the pre-2.5 "legacy" mode,
//!    which pads it with `'0'`s, is not supported);
//! 2. `"Salted__" ‖ salt ‖ AES-256-CBC(PKCS#7-padded plaintext)`, base64
//!    with the trailing `=` removed;
//! 3. the HMAC over that base64 text, *including* its first ten characters
//!    `U2FsdGVkX1` (the base64 of `"Salted__"`), base64 without `=`;
//! 4. on the wire: the base64 text without those ten characters, then the
//!    HMAC (43 characters for SHA-256), with nothing between them.
//!
//! A receiver therefore checks the HMAC first (one HMAC over at most
//! [`MAX_PACKET`] bytes) and only then decodes and decrypts.

use aes::Aes256;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::Reject;

/// The base64 of `"Salted__"`, which libfko leaves off the wire.
pub const SALTED_B64: &str = "U2FsdGVkX1";

/// The shortest datagram fwknopd considers (`MIN_SPA_DATA_SIZE`).
pub const MIN_PACKET: usize = 140;

/// The longest datagram fwknopd considers (`MAX_SPA_PACKET_LEN`).
pub const MAX_PACKET: usize = 1500;

/// Length of an HMAC-SHA256 in base64 without padding.
pub const HMAC_B64_LEN: usize = 43;

/// The longest encryption key fwknop accepts (`RIJNDAEL_MAX_KEYSIZE`).
pub const MAX_KEY_LEN: usize = 32;

/// The longest HMAC key fwknopd accepts (`MAX_KEY_LEN` of its configuration).
pub const MAX_HMAC_KEY_LEN: usize = 128;

/// The salt's length.
pub const SALT_LEN: usize = 8;

const BLOCK: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// Base64 as libfko writes it: the standard alphabet, `=` stripped; read
/// back with or without padding, but only in canonical form (no stray bits
/// in the last character), so that one message has one encoding.
pub(crate) const B64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A stanza's keys: the encryption key (fwknop's `KEY` or `KEY_BASE64`)
/// and the HMAC key (`HMAC_KEY` or `HMAC_KEY_BASE64`). Zeroed on drop;
/// `Debug` shows neither.
#[derive(Clone)]
pub struct Keys {
    enc: Zeroizing<Vec<u8>>,
    hmac: Zeroizing<Vec<u8>>,
    /// The HMAC with its key schedule done once, cloned per packet.
    mac: HmacSha256,
}

impl PartialEq for Keys {
    fn eq(&self, other: &Keys) -> bool {
        self.enc == other.enc && self.hmac == other.hmac
    }
}

impl Eq for Keys {}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keys {{ enc: <{} bytes>, hmac: <{} bytes> }}",
            self.enc.len(),
            self.hmac.len()
        )
    }
}

/// Why a key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The encryption key is empty or longer than [`MAX_KEY_LEN`] bytes.
    #[error("the encryption key must be 1 to {MAX_KEY_LEN} bytes, not {0}")]
    EncLength(usize),
    /// The HMAC key is empty or longer than [`MAX_HMAC_KEY_LEN`] bytes.
    #[error("the HMAC key must be 1 to {MAX_HMAC_KEY_LEN} bytes, not {0}")]
    HmacLength(usize),
    /// A `*_BASE64` key is not base64.
    #[error("not base64: {0}")]
    Base64(String),
}

impl Keys {
    /// Keys from raw bytes (`KEY`/`HMAC_KEY` are the bytes of the string).
    ///
    /// # Errors
    /// A key that is empty or too long.
    pub fn new(enc: &[u8], hmac: &[u8]) -> Result<Keys, KeyError> {
        if enc.is_empty() || enc.len() > MAX_KEY_LEN {
            return Err(KeyError::EncLength(enc.len()));
        }
        if hmac.is_empty() || hmac.len() > MAX_HMAC_KEY_LEN {
            return Err(KeyError::HmacLength(hmac.len()));
        }
        let mac = HmacSha256::new_from_slice(hmac).map_err(|_| KeyError::HmacLength(hmac.len()))?;
        Ok(Keys {
            enc: Zeroizing::new(enc.to_vec()),
            hmac: Zeroizing::new(hmac.to_vec()),
            mac,
        })
    }

    /// Keys from fwknop's `KEY_BASE64` and `HMAC_KEY_BASE64` (what
    /// `fwknop --key-gen` prints).
    ///
    /// # Errors
    /// Text that is not base64, or a key of the wrong length.
    pub fn from_base64(enc: &str, hmac: &str) -> Result<Keys, KeyError> {
        let enc = decode_key(enc)?;
        let hmac = decode_key(hmac)?;
        Keys::new(&enc, &hmac)
    }

    /// Both keys in base64 (`KEY_BASE64`, `HMAC_KEY_BASE64`), to write a
    /// configuration back.
    pub fn to_base64(&self) -> (Zeroizing<String>, Zeroizing<String>) {
        let std = base64::engine::general_purpose::STANDARD;
        (
            Zeroizing::new(std.encode(&*self.enc)),
            Zeroizing::new(std.encode(&*self.hmac)),
        )
    }

    /// Decodes one base64 key (either of fwknop's `*_BASE64` values).
    ///
    /// # Errors
    /// Text that is not base64.
    pub fn decode_base64(text: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        decode_key(text)
    }
}

fn decode_key(text: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    B64.decode(text.trim())
        .map(Zeroizing::new)
        .map_err(|e| KeyError::Base64(e.to_string()))
}

/// fwknop's key and IV for `salt` (see the [module documentation](self)).
fn key_iv(key: &[u8], salt: &[u8; SALT_LEN]) -> Zeroizing<[u8; 48]> {
    let mut out = Zeroizing::new([0u8; 48]);
    let mut prev: Option<[u8; 16]> = None;
    for chunk in out.chunks_mut(16) {
        let mut h = Md5::new();
        if let Some(p) = prev {
            h.update(p);
        }
        h.update(key);
        h.update(salt);
        let d: [u8; 16] = h.finalize().into();
        chunk.copy_from_slice(&d);
        prev = Some(d);
    }
    out
}

fn hmac_of(keys: &Keys, ciphertext_b64: &[u8]) -> HmacSha256 {
    let mut mac = keys.mac.clone();
    mac.update(SALTED_B64.as_bytes());
    mac.update(ciphertext_b64);
    mac
}

/// Encrypts and authenticates `plaintext` (an encoded message with its
/// digest, see [`crate::Message::plaintext`]) as the fwknop client does,
/// with `salt` (8 random bytes: the caller's, this crate reads no
/// randomness). Returns the datagram's payload.
pub fn seal(keys: &Keys, plaintext: &[u8], salt: [u8; SALT_LEN]) -> String {
    let kiv = key_iv(&keys.enc, &salt);
    let (key, iv) = kiv.split_at(32);
    let enc = cbc::Encryptor::<Aes256>::new(key.into(), iv.into());
    let mut raw = Vec::with_capacity(plaintext.len() + 2 * BLOCK);
    raw.extend_from_slice(b"Salted__");
    raw.extend_from_slice(&salt);
    raw.extend_from_slice(&enc.encrypt_padded_vec_mut::<Pkcs7>(plaintext));
    let b64 = B64.encode(&raw);
    let tag = hmac_of(
        keys,
        b64.as_bytes().get(SALTED_B64.len()..).unwrap_or_default(),
    )
    .finalize()
    .into_bytes();
    let mut out = String::with_capacity(b64.len() + HMAC_B64_LEN);
    out.push_str(b64.get(SALTED_B64.len()..).unwrap_or_default());
    out.push_str(&B64.encode(tag));
    out
}

/// A datagram that passed the cheap checks: its ciphertext and its HMAC.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outer<'a> {
    pub(crate) ciphertext: &'a [u8],
    tag: &'a [u8],
}

/// The checks before any cryptography: the length fwknopd accepts, no
/// `U2FsdGVkX1` prefix (a replayed packet with the prefix added must not
/// look new), only base64 characters.
pub(crate) fn outer(payload: &[u8]) -> Result<Outer<'_>, Reject> {
    if payload.len() < MIN_PACKET || payload.len() > MAX_PACKET {
        return Err(Reject::NotSpa);
    }
    if payload.starts_with(SALTED_B64.as_bytes()) {
        return Err(Reject::NotSpa);
    }
    if !payload
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        return Err(Reject::NotSpa);
    }
    let (ciphertext, tag) = payload.split_at(payload.len() - HMAC_B64_LEN);
    Ok(Outer { ciphertext, tag })
}

/// Whether the HMAC verifies under `keys` (constant time).
pub(crate) fn hmac_ok(keys: &Keys, outer: Outer<'_>) -> bool {
    let mut tag = [0u8; 33];
    match B64.decode_slice(outer.tag, &mut tag) {
        Ok(32) => hmac_of(keys, outer.ciphertext)
            .verify_slice(&tag[..32])
            .is_ok(),
        _ => false,
    }
}

/// Decodes and decrypts the ciphertext of a packet whose HMAC verified.
/// A failure here means the encryption key is wrong (or the sender is not
/// libfko): the HMAC proved the bytes are the sender's.
pub(crate) fn open(keys: &Keys, outer: Outer<'_>) -> Result<Zeroizing<Vec<u8>>, Reject> {
    let mut text = Vec::with_capacity(SALTED_B64.len() + outer.ciphertext.len());
    text.extend_from_slice(SALTED_B64.as_bytes());
    text.extend_from_slice(outer.ciphertext);
    let raw = B64.decode(&text).map_err(|_| Reject::Decrypt)?;
    if raw.len() < 2 * BLOCK || raw.len() % BLOCK != 0 || !raw.starts_with(b"Salted__") {
        return Err(Reject::Decrypt);
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&raw[SALT_LEN..BLOCK]);
    let kiv = key_iv(&keys.enc, &salt);
    let (key, iv) = kiv.split_at(32);
    cbc::Decryptor::<Aes256>::new(key.into(), iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(&raw[BLOCK..])
        .map(Zeroizing::new)
        .map_err(|_| Reject::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(b"0123456789abcdef0123456789abcdef", b"hmac key").unwrap()
    }

    #[test]
    fn seal_then_open() {
        let k = keys();
        let pt = b"1234567890123456:YWxpY2U:1:3.0.0:1:MTk4LjE4LjAuMix0Y3AvMjI:digestdigestdigestdigestdigestdigestdigest";
        let packet = seal(&k, pt, [7; 8]);
        let o = outer(packet.as_bytes()).unwrap();
        assert!(hmac_ok(&k, o));
        assert_eq!(open(&k, o).unwrap().as_slice(), pt);
    }

    #[test]
    fn keys_are_bounded_and_redacted() {
        assert_eq!(Keys::new(b"", b"x"), Err(KeyError::EncLength(0)));
        assert_eq!(Keys::new(&[1; 33], b"x"), Err(KeyError::EncLength(33)));
        assert_eq!(Keys::new(b"x", &[1; 129]), Err(KeyError::HmacLength(129)));
        assert!(matches!(
            Keys::from_base64("not base64!", "aGk="),
            Err(KeyError::Base64(_))
        ));
        let shown = format!("{:?}", keys());
        assert!(!shown.contains("0123"), "{shown}");
    }

    #[test]
    fn outer_refuses_before_cryptography() {
        assert_eq!(outer(&[b'A'; MIN_PACKET - 1]).err(), Some(Reject::NotSpa));
        assert_eq!(outer(&[b'A'; MAX_PACKET + 1]).err(), Some(Reject::NotSpa));
        let mut p = SALTED_B64.as_bytes().to_vec();
        p.extend_from_slice(&[b'A'; 200]);
        assert_eq!(outer(&p).err(), Some(Reject::NotSpa));
        let mut p = vec![b'A'; 200];
        p[100] = b'=';
        assert_eq!(outer(&p).err(), Some(Reject::NotSpa));
        assert!(outer(&[b'A'; 200]).is_ok());
    }
}
