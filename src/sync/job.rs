//! What to pull where: each mapped remote volume with its opened target, every
//! target checked (not the image's boot medium, not mounted, not the boot disk, large
//! enough, named once) before a single byte is read or written.

use super::target::Target;
use super::{Error, Options};
use crate::block::BLOCK_SIZE;
use crate::mapping::map::{self, MapTo, Mapping};
use crate::mapping::safety;
use crate::mapping::select::Selector;
use crate::source::VolumeInfo;
use std::path::Path;

/// A remote volume and the local target it is pulled into.
pub(super) struct Job {
    pub info: VolumeInfo,
    pub target: Target,
}

impl Job {
    /// Length of block `i` (the last one may be short; none past the end).
    pub fn block_len(&self, i: u64) -> usize {
        let start = i.saturating_mul(BLOCK_SIZE);
        // At most BLOCK_SIZE: fits any usize.
        self.info.size.saturating_sub(start).min(BLOCK_SIZE) as usize
    }

    /// Bytes of the blocks `blocks`.
    pub fn bytes(&self, blocks: impl IntoIterator<Item = u64>) -> u64 {
        blocks.into_iter().map(|i| self.block_len(i) as u64).sum()
    }

    /// Reads block `i` of the target into `buf` (as long as the block).
    pub fn read(&self, i: u64, buf: &mut [u8]) -> Result<(), Error> {
        let off = i * BLOCK_SIZE;
        let t = &self.target;
        t.read_at(buf, off)
            .map_err(|e| Error::io("read", &t.path, off, e))
    }

    /// Writes `data` as block `i` of the target.
    pub fn write(&self, i: u64, data: &[u8]) -> Result<(), Error> {
        let off = i * BLOCK_SIZE;
        let t = &self.target;
        t.write_at(data, off)
            .map_err(|e| Error::io("write", &t.path, off, e))
    }

    /// Flushes the target to the device; a failure is reported at `offset`.
    pub fn flush(&self, offset: u64) -> Result<(), Error> {
        let t = &self.target;
        t.sync().map_err(|e| Error::io("flush", &t.path, offset, e))
    }
}

/// The mapping with its stable names (`serial:…`, `wwn:…`, `path:…`) resolved against
/// the local disks: those discovered at boot, else the ones sysfs lists now.
fn resolved(opts: &Options, mapping: &Mapping) -> Result<Mapping, Error> {
    let named = |to: &MapTo| matches!(to, MapTo::Target(t) if !matches!(t, Selector::Path(_)));
    if !mapping.values().any(named) {
        return Ok(mapping.clone());
    }
    let disks = match &opts.disks[..] {
        [] => crate::disks::discover(&opts.sys.join("block"))?,
        known => known.to_vec(),
    };
    Ok(map::resolve(mapping, &disks, Path::new("/dev"))?)
}

/// Resolves the mapping against the agent's volumes and opens the targets,
/// refusing anything unsafe before a single byte is read or written.
pub(super) fn open_targets(
    opts: &Options,
    volumes: &[VolumeInfo],
    mapping: &Mapping,
) -> Result<Vec<Job>, Error> {
    for name in mapping.keys() {
        if !volumes.iter().any(|v| &v.id == name) {
            let available: Vec<_> = volumes.iter().map(|v| v.id.as_str()).collect();
            return Err(Error::UnknownVolume {
                name: name.clone(),
                available: available.join(", "),
            });
        }
    }
    let mapping = &resolved(opts, mapping)?;
    let mountinfo = std::fs::read_to_string(&opts.mountinfo).unwrap_or_default();
    let boot = match &opts.boot_disk {
        Some(p) => Target::open(p, true).ok().and_then(|t| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(&t.path).ok()?;
            Some(safety::whole_disk(
                &opts.sys,
                (libc::major(m.rdev()), libc::minor(m.rdev())),
            ))
        }),
        None => safety::boot_disk(&opts.sys),
    };
    let mut jobs: Vec<Job> = Vec::new();
    let mut seen: Vec<((u64, u64), String)> = Vec::new();
    for v in volumes {
        let path = match mapping.get(&v.id) {
            Some(MapTo::Target(Selector::Path(p))) => p,
            Some(MapTo::Target(named)) => unreachable!("{named} was resolved"),
            Some(MapTo::Exclude) => continue,
            None if opts.unattended => {
                return Err(Error::Unmapped { name: v.id.clone() });
            }
            None => continue,
        };
        if safety::boot_medium(&opts.sys, &opts.disks, path).is_some() {
            return Err(Error::BootMedium {
                volume: v.id.clone(),
                path: path.clone(),
            });
        }
        if let Some(mount_point) = safety::mounted(&opts.sys, path, &mountinfo) {
            return Err(Error::Mounted {
                path: path.clone(),
                mount_point,
            });
        }
        if safety::is_boot_disk(&opts.sys, path, boot)
            || opts
                .boot_disk
                .as_deref()
                .is_some_and(|b| same_file(b, path))
        {
            return Err(Error::BootDisk { path: path.clone() });
        }
        let target = Target::open(path, opts.dry_run).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        if target.size < v.size {
            return Err(Error::TooSmall {
                path: path.clone(),
                size: target.size,
                volume: v.id.clone(),
                volume_size: v.size,
            });
        }
        let id = target.identity().map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        if let Some((_, first)) = seen.iter().find(|(i, _)| *i == id) {
            return Err(Error::Twice {
                path: path.clone(),
                first: first.clone(),
                second: v.id.clone(),
            });
        }
        seen.push((id, v.id.clone()));
        jobs.push(Job {
            info: v.clone(),
            target,
        });
    }
    if jobs.is_empty() {
        return Err(Error::NothingMapped);
    }
    Ok(jobs)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
