//! Test data: disk images, seeded random volumes and older states of them, and their
//! block hashes and digest.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The block size of a pull.
pub const BS: usize = 512 * 1024;

/// A small, fast, seeded PRNG (xorshift64*).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Random bytes, seeded.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// A copy of `base` with `changed` blocks (chosen by `seed`) replaced by fresh data.
pub fn mutate(base: &[u8], changed: &[usize], seed: u64) -> Vec<u8> {
    let mut v = base.to_vec();
    let mut rng = Rng::new(seed);
    for &b in changed {
        let end = ((b + 1) * BS).min(v.len());
        rng.fill(&mut v[b * BS..end]);
    }
    v
}

pub fn block_hashes(data: &[u8]) -> Vec<[u8; 32]> {
    data.chunks(BS).map(|c| Sha256::digest(c).into()).collect()
}

/// The indexes of the blocks that differ between `a` and `b`.
pub fn differing_blocks(a: &[u8], b: &[u8]) -> Vec<usize> {
    let (a, b) = (block_hashes(a), block_hashes(b));
    let pairs = a.iter().zip(&b).enumerate();
    pairs.filter(|(_, (x, y))| x != y).map(|(i, _)| i).collect()
}

/// The whole-volume digest as documented: SHA-256 over the block SHA-256s in order.
pub fn linear_digest(data: &[u8]) -> String {
    let mut h = Sha256::new();
    for b in block_hashes(data) {
        h.update(b);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A sparse raw disk image of `size` bytes in `dir`.
pub fn disk_image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    path
}

/// [`disk_image`] with `bytes` at `offset`: garbage where a pull must write.
pub fn disk_image_with(dir: &Path, name: &str, size: u64, offset: u64, bytes: &[u8]) -> PathBuf {
    let path = disk_image(dir, name, size);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, bytes, offset).unwrap();
    path
}
