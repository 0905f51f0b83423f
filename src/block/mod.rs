//! The block: the unit of the whole system (512 KiB, the EBS block size), its SHA-256,
//! and block hashing: SHA-256 of each block, all-zero blocks recognised without hashing,
//! and the whole-volume digest (SHA-256 over the ordered block SHA-256s, as EBS's
//! "LINEAR" checksum aggregation does).
//!
//! Planning hashes whole volumes on both sides, so it hashes [`BATCH`] blocks at once
//! ([`block_hashes`]): one SHA-256 is a serial chain of rounds whose latency leaves the
//! CPU's SHA unit idle part of the time, and interleaving independent blocks
//! (`tape-sha256`'s multi-buffer kernels) fills it: 1.6-1.8x the single-block rate
//! here (SHA-NI, AMD EPYC). Same SHA-256, checked against `sha2` below.

pub mod holes;

use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// The block size of the whole system (the EBS block size).
pub const BLOCK_SIZE: u64 = 512 * 1024;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// True if every byte is zero. Scans 64 bytes at a time so it vectorises; random
/// data exits on the first chunk.
pub fn is_zero(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(64);
    for c in &mut chunks {
        if c.iter().fold(0u8, |a, b| a | b) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|b| *b == 0)
}

/// SHA-256 of `len` zero bytes (cached for a full block).
pub fn zero_hash(len: usize) -> Hash {
    static FULL: OnceLock<Hash> = OnceLock::new();
    if len as u64 == BLOCK_SIZE {
        *FULL.get_or_init(|| Sha256::digest(vec![0u8; len]).into())
    } else {
        Sha256::digest(vec![0u8; len]).into()
    }
}

/// SHA-256 of a block, skipping the work for an all-zero one.
pub fn block_hash(data: &[u8]) -> Hash {
    if is_zero(data) {
        zero_hash(data.len())
    } else {
        Sha256::digest(data).into()
    }
}

/// Blocks hashed together by [`block_hashes`] (four keep the SHA-NI kernel's four
/// streams busy; more gain nothing).
pub const BATCH: usize = 4;

/// SHA-256 of each block, the non-zero ones hashed side by side; the same values
/// as [`block_hash`] of each.
pub fn block_hashes(blocks: &[&[u8]]) -> Vec<Hash> {
    let mut out = vec![[0u8; 32]; blocks.len()];
    let (mut data, mut at) = (Vec::with_capacity(blocks.len()), Vec::new());
    for (k, b) in blocks.iter().enumerate() {
        if is_zero(b) {
            out[k] = zero_hash(b.len());
        } else {
            data.push(*b);
            at.push(k);
        }
    }
    let mut hashed = vec![[0u8; 32]; data.len()];
    tape_sha256::hash_many(&data, &mut hashed);
    for (k, h) in at.into_iter().zip(hashed) {
        out[k] = h;
    }
    out
}

/// The whole-volume digest from its block hashes, in order.
pub fn linear_digest(hashes: &[Hash]) -> Hash {
    let mut d = LinearDigest::default();
    d.update(hashes);
    d.finish()
}

/// The whole-volume digest fed a window of block hashes at a time, in order: the
/// same value as [`linear_digest`] of them all, without holding them all.
#[derive(Clone, Default)]
pub struct LinearDigest(Sha256);

impl LinearDigest {
    /// Feeds the next block hashes.
    pub fn update(&mut self, hashes: &[Hash]) {
        for h in hashes {
            self.0.update(h);
        }
    }

    pub fn finish(self) -> Hash {
        self.0.finalize().into()
    }
}

/// Buffers of 128 KiB and more are mapped and unmapped each time they are made and
/// dropped. Each window's threads make their buffers anew; glibc's threshold, which
/// rises to the largest buffer freed, would put them in per-thread arenas that keep
/// what they held, and the client's RSS grew with the number of windows (19 MiB at
/// 1 GiB, 39 MiB at 16 TiB; 15 MiB at 16 TiB with the threshold fixed). The agent's
/// block reads alike (48 MiB at 16 TiB, 11 MiB fixed).
pub fn fixed_mmap_threshold() {
    // SAFETY: mallopt only changes a setting of the allocator; any thread may call it.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection_and_hashes_agree_with_plain_sha256() {
        let mut block = vec![0u8; BLOCK_SIZE as usize];
        assert!(is_zero(&block));
        assert_eq!(block_hash(&block), <Hash>::from(Sha256::digest(&block)));
        block[BLOCK_SIZE as usize - 1] = 1;
        assert!(!is_zero(&block));
        assert_eq!(block_hash(&block), <Hash>::from(Sha256::digest(&block)));
        let short = vec![0u8; 1000];
        assert_eq!(block_hash(&short), <Hash>::from(Sha256::digest(&short)));
        assert!(!is_zero(&[0, 0, 0, 9]));
    }

    #[test]
    fn batched_hashes_are_plain_sha256() {
        // Pseudo-random blocks of the sizes the engine hashes: full, a short tail,
        // one byte, zeros, and batches of every length up to two batches.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        let bs = BLOCK_SIZE as usize;
        let blocks = [
            random(bs),
            vec![0u8; bs],
            random(bs - 4096 + 17),
            random(1),
            random(bs),
            random(64),
            random(bs),
            vec![0u8; 1000],
            random(55),
        ];
        for n in 0..=blocks.len() {
            let slices: Vec<&[u8]> = blocks[..n].iter().map(Vec::as_slice).collect();
            let want: Vec<Hash> = slices.iter().map(|b| Sha256::digest(b).into()).collect();
            assert_eq!(block_hashes(&slices), want, "{n} blocks");
        }
    }

    #[test]
    fn linear_digest_depends_on_order() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_ne!(linear_digest(&[a, b]), linear_digest(&[b, a]));
        let mut cat = Vec::new();
        cat.extend_from_slice(&a);
        cat.extend_from_slice(&b);
        assert_eq!(linear_digest(&[a, b]), <Hash>::from(Sha256::digest(&cat)));
    }

    #[test]
    fn a_digest_fed_window_by_window_is_the_whole_volume_digest() {
        // 23 blocks in windows of 5 (the last one short), and of 1 and 23.
        let hashes: Vec<Hash> = (0..23u8).map(|k| [k.wrapping_mul(37); 32]).collect();
        for window in [1, 5, 23] {
            let mut d = LinearDigest::default();
            for w in hashes.chunks(window) {
                d.update(w);
            }
            assert_eq!(d.finish(), linear_digest(&hashes), "windows of {window}");
        }
    }
}
