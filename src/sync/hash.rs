//! Block hashing: SHA-256 of each block, all-zero blocks recognised without hashing,
//! and the whole-volume digest (SHA-256 over the ordered block SHA-256s, as EBS's
//! "LINEAR" checksum aggregation does).

use crate::source::{BLOCK_SIZE, Hash};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

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

/// The whole-volume digest from its block hashes, in order.
pub fn linear_digest(hashes: &[Hash]) -> Hash {
    let mut h = Sha256::new();
    for b in hashes {
        h.update(b);
    }
    h.finalize().into()
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
    fn linear_digest_depends_on_order() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_ne!(linear_digest(&[a, b]), linear_digest(&[b, a]));
        let mut cat = Vec::new();
        cat.extend_from_slice(&a);
        cat.extend_from_slice(&b);
        assert_eq!(linear_digest(&[a, b]), <Hash>::from(Sha256::digest(&cat)));
    }
}
