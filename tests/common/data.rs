//! Test data: disk images.

use std::path::{Path, PathBuf};

/// A sparse raw disk image of `size` bytes in `dir`.
pub fn disk_image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    path
}
