//! newc cpio writer (the initramfs format the kernel unpacks; see the kernel's
//! Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! Reproducible by construction: entries are emitted sorted by path with their
//! parents, inodes numbered in that order, nlink 1, uid/gid 0 and one fixed mtime.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What an entry is.
#[derive(Debug, Clone)]
pub enum Kind {
    Dir,
    /// A regular file whose content is read from the host at write time.
    FileFrom(PathBuf),
    /// A regular file with content given here.
    Bytes(Vec<u8>),
    CharDev {
        major: u32,
        minor: u32,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    /// Permission bits only; the type bits come from `kind`.
    perm: u32,
}

/// Errors while writing an archive.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path} for the initramfs: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {size} bytes is more than a newc entry can hold (4 GiB)")]
    TooBig { path: String, size: usize },
    #[error("cannot write the archive: {0}")]
    Write(#[from] io::Error),
}

/// An archive being assembled. Paths are relative to the archive root (`init`,
/// `lib/modules/...`), without a leading slash.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an entry, and any missing parent directories.
    pub fn add(&mut self, path: &str, kind: Kind, perm: u32) {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = Path::new(&path).parent();
        while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.entries
                .entry(dir.to_string_lossy().into_owned())
                .or_insert(Entry {
                    kind: Kind::Dir,
                    perm: 0o755,
                });
            parent = dir.parent();
        }
        self.entries.insert(path, Entry { kind, perm });
    }

    /// Writes the archive, trailer included, with every mtime set to `mtime`.
    pub fn write(&self, mtime: u32, out: &mut impl Write) -> Result<(), Error> {
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (mode, data, rdev): (u32, Vec<u8>, (u32, u32)) = match &entry.kind {
                Kind::Dir => (0o040000, Vec::new(), (0, 0)),
                Kind::FileFrom(src) => {
                    let data = std::fs::read(src).map_err(|source| Error::Read {
                        path: src.clone(),
                        source,
                    })?;
                    (0o100000, data, (0, 0))
                }
                Kind::Bytes(data) => (0o100000, data.clone(), (0, 0)),
                Kind::CharDev { major, minor } => (0o020000, Vec::new(), (*major, *minor)),
            };
            let size = u32::try_from(data.len()).map_err(|_| Error::TooBig {
                path: path.clone(),
                size: data.len(),
            })?;
            write_entry(out, ino, mode | entry.perm, mtime, rdev, path, &data, size)?;
        }
        write_entry(out, 0, 0, 0, (0, 0), "TRAILER!!!", &[], 0)
    }
}

/// One header + name + data, each padded to 4 bytes.
#[allow(clippy::too_many_arguments)]
fn write_entry(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    mtime: u32,
    (rmajor, rminor): (u32, u32),
    name: &str,
    data: &[u8],
    size: u32,
) -> Result<(), Error> {
    // namesize counts the terminating NUL.
    let namesize = name.len() + 1;
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{mtime:08x}{size:08x}{:08x}{:08x}{rmajor:08x}{rminor:08x}{namesize:08x}{:08x}",
        0, 0, 1, 0, 0, 0
    );
    let mut written = 0;
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    written += header.len() + namesize;
    let pad = padding(written);
    out.write_all(&[0; 3][..pad])?;
    written += pad;
    out.write_all(data)?;
    written += data.len();
    out.write_all(&[0; 3][..padding(written)])?;
    Ok(())
}

fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back a newc archive: (name, mode, ino, data) per entry, trailer excluded.
    fn parse(mut buf: &[u8]) -> Vec<(String, u32, u32, Vec<u8>)> {
        let field = |h: &[u8], i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + i * 8..14 + i * 8]).unwrap(), 16)
                .unwrap()
        };
        let mut out = Vec::new();
        loop {
            assert_eq!(&buf[..6], b"070701");
            let (ino, mode, size, namesize) = (
                field(buf, 0),
                field(buf, 1),
                field(buf, 6) as usize,
                field(buf, 11) as usize,
            );
            let name = std::str::from_utf8(&buf[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            let data_at = (110 + namesize).div_ceil(4) * 4;
            let data = buf[data_at..data_at + size].to_vec();
            buf = &buf[(data_at + size).div_ceil(4) * 4..];
            if name == "TRAILER!!!" {
                assert!(buf.is_empty());
                return out;
            }
            out.push((name, mode, ino, data));
        }
    }

    #[test]
    fn entries_come_sorted_with_parents_and_padded() {
        let mut a = Archive::new();
        a.add("/lib/modules/x.ko", Kind::Bytes(b"abcde".to_vec()), 0o644);
        a.add("init", Kind::Bytes(b"\x7fELF".to_vec()), 0o755);
        a.add("dev/console", Kind::CharDev { major: 5, minor: 1 }, 0o600);
        let mut buf = Vec::new();
        a.write(1234, &mut buf).unwrap();
        assert_eq!(buf.len() % 4, 0);
        let entries = parse(&buf);
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/x.ko"
            ]
        );
        assert_eq!(entries[1].1, 0o020600);
        assert_eq!(entries[2].1, 0o100755);
        assert_eq!(entries[3].1, 0o040755);
        assert_eq!(entries[5].3, b"abcde");
        let inodes: Vec<_> = entries.iter().map(|e| e.2).collect();
        assert_eq!(inodes, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn same_entries_in_any_order_give_the_same_bytes() {
        let build = |order: &[&str]| {
            let mut a = Archive::new();
            for p in order {
                a.add(p, Kind::Bytes(p.as_bytes().to_vec()), 0o644);
            }
            let mut buf = Vec::new();
            a.write(99, &mut buf).unwrap();
            buf
        };
        assert_eq!(build(&["a/b", "c", "a/d"]), build(&["c", "a/d", "a/b"]));
        assert_ne!(build(&["a/b"]), build(&["a/c"]));
    }

    #[test]
    fn a_missing_source_file_is_named() {
        let mut a = Archive::new();
        a.add(
            "init",
            Kind::FileFrom("/nonexistent/failback".into()),
            0o755,
        );
        let err = a.write(0, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/failback"), "{err}");
    }
}
