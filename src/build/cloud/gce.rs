//! Google Compute Engine's import format: a gzip-compressed GNU tar (GCE asks for the
//! oldgnu format, whose header magic is "ustar  \0") holding one file, `disk.raw`, whose
//! size is a whole number of GiB.
//!
//! Reproducible: fixed mode, owner 0:0 and mtime (SOURCE_DATE_EPOCH); the gzip header
//! carries no file name and mtime 0 (RFC 1952 2.3.1: "no time stamp is available").

use flate2::{Compression, GzBuilder};
use std::io::{self, Read, Write};

/// The size GCE wants: `len` rounded up to a whole GiB.
pub fn disk_size(len: u64) -> u64 {
    len.div_ceil(1 << 30).max(1) << 30
}

/// Writes `disk` padded with zeros to [`disk_size`] as `disk.raw` in a tar.gz into `out`.
pub fn write(out: &mut dyn Write, disk: &[u8], epoch: u64) -> io::Result<()> {
    let size = disk_size(disk.len() as u64);
    let gz = GzBuilder::new().mtime(0).write(out, Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_path("disk.raw")?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(epoch);
    header.set_cksum();
    let padding = io::repeat(0).take(size - disk.len() as u64);
    tar.append(&header, disk.chain(padding))?;
    tar.into_inner()?.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_whole_gib() {
        assert_eq!(disk_size(0), 1 << 30);
        assert_eq!(disk_size(35 << 20), 1 << 30);
        assert_eq!(disk_size(1 << 30), 1 << 30);
        assert_eq!(disk_size((1 << 30) + 1), 2 << 30);
    }
}
