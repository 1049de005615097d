//! Every random choice of the project comes from here: an RNG keyed by a seed, a stage name and a
//! stable id (a document id, a query id, a step), so a draw does not depend on the thread count, the
//! world size, the Rust version or the process. A leaf: it imports nothing of the crate.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A stable 64-bit hash (FNV-1a, then a SplitMix64 finaliser): seeds must not depend on the Rust
/// version or the process, which rules out `DefaultHasher`.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff; // separator, so ("ab","c") and ("a","bc") differ
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The RNG of one stage for one stable id.
pub fn keyed_rng(seed: u64, stage: &str, id: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(stable_hash(&[
        &seed.to_le_bytes(),
        stage.as_bytes(),
        id.as_bytes(),
    ]))
}
