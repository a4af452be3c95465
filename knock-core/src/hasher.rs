//! The keyed hash of every map whose keys a knocker chooses (source
//! addresses are spoofable): SipHash-1-3 with keys derived from a seed.

use core::hash::{BuildHasher, Hasher};

use siphasher::sip::SipHasher13;

/// The hasher of the matcher's source table (and its grant and blacklist
/// maps): SipHash-1-3 keyed from a 64-bit seed (see
/// [`Matcher::with_seed`](crate::Matcher::with_seed)).
///
/// The same seed gives the same hashes, so a matcher is deterministic; a
/// daemon passes a random seed so that knockers cannot aim at collisions.
/// Public so that a benchmark's baseline map can hash exactly as the
/// matcher does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceHasher {
    k0: u64,
    k1: u64,
}

impl SourceHasher {
    /// The hasher for `seed`.
    pub const fn new(seed: u64) -> Self {
        // Two keys from one seed: the seed and its bytes reversed, mixed
        // with SipHash's own initialisation constant (both keys differ
        // even for a seed of 0).
        SourceHasher {
            k0: seed,
            k1: seed.swap_bytes() ^ 0x736f_6d65_7073_6575,
        }
    }
}

impl Default for SourceHasher {
    /// The hasher of seed 0 (that of [`Matcher::new`](crate::Matcher::new)).
    fn default() -> Self {
        SourceHasher::new(0)
    }
}

/// The hashing state of a [`SourceHasher`].
#[derive(Clone, Debug)]
pub struct SourceHash(SipHasher13);

impl Hasher for SourceHash {
    #[inline]
    fn finish(&self) -> u64 {
        self.0.finish()
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0.write_u8(i);
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.0.write_u16(i);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.0.write_u32(i);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0.write_u64(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.0.write_usize(i);
    }
}

impl BuildHasher for SourceHasher {
    type Hasher = SourceHash;
    #[inline]
    fn build_hasher(&self) -> SourceHash {
        SourceHash(SipHasher13::new_with_keys(self.k0, self.k1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_hash_other_seed_other_hash() {
        let (a, b) = (SourceHasher::new(7), SourceHasher::new(8));
        assert_eq!(a.hash_one(42u32), SourceHasher::new(7).hash_one(42u32));
        assert_ne!(a.hash_one(42u32), b.hash_one(42u32));
        assert_eq!(SourceHasher::default(), SourceHasher::new(0));
    }
}
