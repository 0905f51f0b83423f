//! Checks made before anything is written: is a target mounted, is it the disk the
//! system runs from, is it the medium the image booted from. Pure functions over
//! /proc/self/mountinfo and /sys text so that tests can feed them fakes.

use crate::disks::Disk;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A device number as `(major, minor)`.
pub type DevNum = (u32, u32);

fn split_dev(dev: u64) -> DevNum {
    (libc::major(dev), libc::minor(dev))
}

/// The whole disk a device number belongs to (itself, or the parent of a partition),
/// looked up in `sys` (normally `/sys`).
pub fn whole_disk(sys: &Path, dev: DevNum) -> DevNum {
    let dir = sys.join(format!("dev/block/{}:{}", dev.0, dev.1));
    if dir.join("partition").exists()
        && let Ok(real) = fs::canonicalize(&dir)
        && let Some(parent) = real.parent()
        && let Some(d) = read_devnum(&parent.join("dev"))
    {
        return d;
    }
    dev
}

fn read_devnum(path: &Path) -> Option<DevNum> {
    let s = fs::read_to_string(path).ok()?;
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The disk the running system's `/` lives on, if it lives on a block device.
/// (The boot medium of the failback image itself is recognised by `disks`.)
pub fn boot_disk(sys: &Path) -> Option<DevNum> {
    let dev = split_dev(fs::metadata("/").ok()?.dev());
    if dev.0 == 0 {
        return None; // tmpfs, overlay, initramfs: not on a disk
    }
    Some(whole_disk(sys, dev))
}

/// Where `target` is mounted, if it is: a filesystem on it (or on one of its
/// partitions) per `mountinfo`, or a mount whose source is the target's path.
pub fn mounted(sys: &Path, target: &Path, mountinfo: &str) -> Option<String> {
    let meta = fs::metadata(target).ok()?;
    let canon = fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    let disk = meta
        .file_type()
        .is_block_device()
        .then(|| whole_disk(sys, split_dev(meta.rdev())));
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (Some(devnum), Some(point)) = (f.get(2), f.get(4)) else {
            continue;
        };
        let source = f
            .iter()
            .position(|x| *x == "-")
            .and_then(|i| f.get(i + 2))
            .copied();
        if let Some(src) = source
            && src.starts_with('/')
            && fs::canonicalize(src).unwrap_or_else(|_| PathBuf::from(src)) == canon
        {
            return Some(point.to_string());
        }
        if let Some(disk) = disk
            && let Some((a, b)) = devnum.split_once(':')
            && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
            && whole_disk(sys, (a, b)) == disk
        {
            return Some(point.to_string());
        }
    }
    None
}

/// True if `target` is the boot disk or a partition of it.
pub fn is_boot_disk(sys: &Path, target: &Path, boot: Option<DevNum>) -> bool {
    let Some(boot) = boot else { return false };
    match fs::metadata(target) {
        Ok(m) if m.file_type().is_block_device() => whole_disk(sys, split_dev(m.rdev())) == boot,
        _ => false,
    }
}

/// The disk among `disks` that holds the image booted ([`Disk::boot_medium`]) when
/// `target` is that disk or one of its partitions: never a target, whatever the
/// mapping says.
pub fn boot_medium<'d>(sys: &Path, disks: &'d [Disk], target: &Path) -> Option<&'d Disk> {
    let meta = fs::metadata(target).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    boot_medium_of(sys, disks, split_dev(meta.rdev()))
}

/// [`boot_medium`] for a target's device number; the disks' own numbers are read
/// in `sys` (`block/NAME/dev`).
pub fn boot_medium_of<'d>(sys: &Path, disks: &'d [Disk], target: DevNum) -> Option<&'d Disk> {
    let whole = whole_disk(sys, target);
    disks
        .iter()
        .filter(|d| d.boot_medium)
        .find(|d| read_devnum(&sys.join("block").join(&d.name).join("dev")) == Some(whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_of_the_target_path_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        fs::write(&img, b"x").unwrap();
        let info = format!(
            "36 35 0:50 / /mnt/data rw,noatime shared:1 - ext4 {} rw\n\
             37 35 8:1 / / rw - ext4 /dev/other rw\n",
            img.display()
        );
        let sys = dir.path().join("sys");
        assert_eq!(mounted(&sys, &img, &info).as_deref(), Some("/mnt/data"));
        let other = dir.path().join("other.img");
        fs::write(&other, b"x").unwrap();
        assert_eq!(mounted(&sys, &other, &info), None);
    }

    /// Disk `name` (device `dev`) with one partition (the next minor), as /sys shows
    /// them: `devices/`, `dev/block/MAJ:MIN` and `block/NAME`.
    fn fake_disk(sys: &Path, name: &str, dev: DevNum) {
        let disk = sys.join("devices").join(name);
        let part = disk.join(format!("{name}1"));
        fs::create_dir_all(&part).unwrap();
        fs::write(disk.join("dev"), format!("{}:{}\n", dev.0, dev.1)).unwrap();
        fs::write(part.join("dev"), format!("{}:{}\n", dev.0, dev.1 + 1)).unwrap();
        fs::write(part.join("partition"), "1\n").unwrap();
        for dir in ["dev/block", "block"] {
            fs::create_dir_all(sys.join(dir)).unwrap();
        }
        let link = |to: &Path, at: String| std::os::unix::fs::symlink(to, sys.join(at)).unwrap();
        link(&disk, format!("dev/block/{}:{}", dev.0, dev.1));
        link(&part, format!("dev/block/{}:{}", dev.0, dev.1 + 1));
        link(&disk, format!("block/{name}"));
    }

    #[test]
    fn partitions_map_to_their_disk() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        fake_disk(sys, "vda", (253, 0));
        assert_eq!(whole_disk(sys, (253, 1)), (253, 0));
        assert_eq!(whole_disk(sys, (253, 0)), (253, 0));
        assert_eq!(whole_disk(sys, (8, 0)), (8, 0));
    }

    #[test]
    fn the_boot_medium_and_its_partitions_are_found_and_no_other_disk() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        fake_disk(sys, "sda", (8, 0));
        fake_disk(sys, "sdb", (8, 16));
        let disk = |name: &str, boot_medium| Disk {
            name: name.into(),
            boot_medium,
            ..Disk::default()
        };
        let disks = [disk("sda", false), disk("sdb", true)];
        let found = |dev| boot_medium_of(sys, &disks, dev).map(|d| d.name.as_str());
        assert_eq!(found((8, 16)), Some("sdb"));
        assert_eq!(found((8, 17)), Some("sdb"));
        assert_eq!(found((8, 0)), None);
        assert_eq!(found((8, 32)), None);
        // Not marked as the boot medium: a target like any other.
        let plain = [disk("sda", false), disk("sdb", false)];
        assert!(boot_medium_of(sys, &plain, (8, 17)).is_none());
        // An image file is never the boot medium.
        let img = dir.path().join("disk.img");
        fs::write(&img, b"x").unwrap();
        assert!(boot_medium(sys, &disks, &img).is_none());
    }
}
