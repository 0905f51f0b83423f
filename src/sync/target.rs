//! A local write target: an image file or a block device, written in place with
//! positioned writes.

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
