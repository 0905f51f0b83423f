//! A local write target: an image file or a block device, written in place with
//! positioned writes.

use crate::block::holes::Holes;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// An open target.
pub struct Target {
    pub path: PathBuf,
    file: File,
    pub size: u64,
    pub is_device: bool,
}

impl Target {
    /// Opens `path` for reading and (unless `read_only`) writing. A block device is
    /// opened exclusively (`O_EXCL`): the kernel refuses it while it is mounted.
    pub fn open(path: &Path, read_only: bool) -> std::io::Result<Self> {
        let is_device = std::fs::metadata(path)?.file_type().is_block_device();
        let mut opts = OpenOptions::new();
        opts.read(true).write(!read_only);
        if is_device && !read_only {
            opts.custom_flags(libc::O_EXCL);
        }
        let mut file = opts.open(path)?;
        let size = file.seek(SeekFrom::End(0))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            is_device,
        })
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    pub fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    /// The holes of an image file, asked block after block (`None` for a device,
    /// which is read whole).
    pub fn holes(&self) -> Option<Holes<'_>> {
        (!self.is_device).then(|| Holes::new(&self.file, self.size))
    }

    /// True if `offset..offset+len` of an image file is a hole (reads as zeros), as
    /// `lseek(SEEK_DATA)` tells; false for a device, or when unsure.
    pub fn is_hole(&self, offset: u64, len: u64) -> bool {
        self.holes().is_some_and(|mut h| h.contains(offset, len))
    }

    /// Flushes data to the device (fdatasync).
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Identity for "the same target named twice": device and inode.
    pub fn identity(&self) -> std::io::Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let m = self.file.metadata()?;
        Ok(if self.is_device {
            (u64::MAX, m.rdev())
        } else {
            (m.dev(), m.ino())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_of_a_sparse_image_are_seen_and_data_is_not_taken_for_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.img");
        let mb = 1u64 << 20;
        std::fs::File::create(&path)
            .unwrap()
            .set_len(8 * mb)
            .unwrap();
        let t = Target::open(&path, false).unwrap();
        t.write_at(&[7u8; 4096], 3 * mb + 100).unwrap();
        // Whether a filesystem reports holes at all is its choice; data never is one.
        assert!(!t.is_hole(3 * mb, mb));
        assert!(!t.is_hole(2 * mb, 2 * mb));
        assert!(!t.is_hole(3 * mb + 4000, 8));
        assert!(!t.is_hole(7 * mb, 2 * mb), "runs past the end");
        for off in [0, mb, 5 * mb, 7 * mb] {
            if t.is_hole(off, mb) {
                let mut buf = vec![1u8; mb as usize];
                t.read_at(&mut buf, off).unwrap();
                assert!(buf.iter().all(|&b| b == 0));
            }
        }
    }
}
