//! Holes of sparse image files: a run the file system holds no data for reads as
//! zeros, so its blocks' hashes are known without reading them. Both sides ask
//! `lseek(SEEK_DATA)`; on a block device (where SEEK_DATA finds data everywhere) or a
//! file system without it, every block is read as before.

use super::{BATCH, BLOCK_SIZE, Hash, block_hashes, zero_hash};
use nix::unistd::{Whence, lseek};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// The holes of one file, asked as blocks come in order; the hole found last is
/// remembered, so that a run of hole blocks costs one `lseek`. `lseek` moves the
/// file offset, which positioned reads and writes do not use.
pub struct Holes<'f> {
    file: &'f File,
    size: u64,
    /// A run known to be a hole.
    hole: Range<u64>,
}

impl<'f> Holes<'f> {
    /// The holes of `file`, `size` bytes long.
    pub fn new(file: &'f File, size: u64) -> Self {
        Self {
            file,
            size,
            hole: 0..0,
        }
    }

    /// True if `offset..offset+len` is a hole (reads as zeros); false for data, or
    /// when unsure.
    pub fn contains(&mut self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        if len == 0 {
            return false;
        }
        if self.hole.start <= offset && end <= self.hole.end {
            return true;
        }
        let Ok(start) = libc::off_t::try_from(offset) else {
            return false;
        };
        let next_data = match lseek(self.file, start, Whence::SeekData) {
            Ok(data) => data as u64,
            // ENXIO: no data at or after `offset` (within the file).
            Err(nix::errno::Errno::ENXIO) => self.size,
            // Anything else (e.g. EINVAL, no SEEK_DATA support): unsure.
            Err(_) => return false,
        };
        if next_data > offset {
            self.hole = offset..next_data;
        }
        end <= next_data
    }
}

/// The SHA-256 of blocks `blocks` of `file` (`size` bytes long): those in holes
/// without reading them, the others read and hashed [`BATCH`] at a time.
pub fn file_block_hashes(file: &File, size: u64, blocks: Range<u64>) -> std::io::Result<Vec<Hash>> {
    let bs = BLOCK_SIZE as usize;
    let mut holes = Holes::new(file, size);
    let mut out = Vec::with_capacity((blocks.end - blocks.start) as usize);
    let mut buf = vec![0u8; BATCH * bs];
    let mut read: Vec<(usize, usize)> = Vec::with_capacity(BATCH);
    let mut i = blocks.start;
    while i < blocks.end {
        read.clear();
        while i < blocks.end && read.len() < BATCH {
            let len = (size - i * BLOCK_SIZE).min(BLOCK_SIZE) as usize;
            if holes.contains(i * BLOCK_SIZE, len as u64) {
                out.push(zero_hash(len));
            } else {
                // Its hash goes here once the batch is hashed.
                let slot = read.len() * bs;
                file.read_exact_at(&mut buf[slot..slot + len], i * BLOCK_SIZE)?;
                read.push((out.len(), len));
                out.push(Hash::default());
            }
            i += 1;
        }
        let data: Vec<&[u8]> = (read.iter().zip(buf.chunks(bs)))
            .map(|(&(_, len), slot)| &slot[..len])
            .collect();
        for (&(at, _), h) in read.iter().zip(block_hashes(&data)) {
            out[at] = h;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_and_data_of_a_sparse_file_hash_as_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse.img");
        let bs = BLOCK_SIZE;
        // 40 blocks and a short tail; data in blocks 3, 4 (part), 17 and the tail.
        let size = 40 * bs + 5000;
        let file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        file.set_len(size).unwrap();
        file.write_all_at(&[7u8; 4096], 3 * bs + 9).unwrap();
        file.write_all_at(&[8u8; 100], 4 * bs).unwrap();
        file.write_all_at(&[9u8; 3 * 4096], 17 * bs + 4096).unwrap();
        file.write_all_at(&[1u8; 10], 40 * bs + 4000).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let want: Vec<Hash> = bytes
            .chunks(bs as usize)
            .map(|b| Sha256::digest(b).into())
            .collect();
        for range in [0..41, 2..19, 17..18, 39..41, 5..5] {
            let got = file_block_hashes(&file, size, range.clone()).unwrap();
            assert_eq!(
                got,
                want[range.start as usize..range.end as usize],
                "{range:?}"
            );
        }
        // Data is never taken for a hole, whatever was asked before.
        let mut holes = Holes::new(&file, size);
        assert!(!holes.contains(3 * bs, bs));
        assert!(!holes.contains(40 * bs, 5000), "the tail");
        for k in [0, 10, 20, 16, 17] {
            let h = holes.contains(k * bs, bs);
            assert!(
                !h || bytes[(k * bs) as usize..][..bs as usize]
                    .iter()
                    .all(|&b| b == 0)
            );
        }
        assert!(
            !holes.contains(39 * bs, 2 * bs),
            "runs past the data of the tail"
        );
    }
}
