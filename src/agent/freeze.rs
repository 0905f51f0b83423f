//! `failback serve --freeze`: the file systems mounted from the served block
//! devices are frozen (`FIFREEZE`) for the final pass of a cutover, so that it
//! copies a consistent state, and thawed (`FITHAW`) after it, on any failure and
//! at the timeout. A frozen production file system must never be left behind:
//! [`Freezer`] thaws what it froze when a freeze fails half-way, and when dropped.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Freezing and thawing one mounted file system.
pub trait Fs: Send {
    fn freeze(&mut self, mount: &Path) -> io::Result<()>;
    fn thaw(&mut self, mount: &Path) -> io::Result<()>;
}

/// The kernel's `FIFREEZE`/`FITHAW` on the mount point.
pub struct Ioctl;

/// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` of linux/fs.h.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

fn fs_ioctl(mount: &Path, request: libc::c_ulong) -> io::Result<()> {
    let dir = std::fs::File::open(mount)?;
    // SAFETY: FIFREEZE and FITHAW take no argument beyond the descriptor, which is
    // open for the duration of the call.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), request as _, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Fs for Ioctl {
    fn freeze(&mut self, mount: &Path) -> io::Result<()> {
        fs_ioctl(mount, FIFREEZE)
    }
    fn thaw(&mut self, mount: &Path) -> io::Result<()> {
        fs_ioctl(mount, FITHAW)
    }
}

/// File systems frozen for one cutover.
pub struct Freezer<F: Fs> {
    fs: F,
    frozen: Vec<PathBuf>,
}

impl<F: Fs> Freezer<F> {
    /// Freezes `mounts` in order; when one fails, thaws those frozen already and
    /// says which one failed.
    pub fn freeze(fs: F, mounts: &[PathBuf]) -> Result<Self, String> {
        let mut f = Freezer {
            fs,
            frozen: Vec::new(),
        };
        for m in mounts {
            if let Err(e) = f.fs.freeze(m) {
                let thawed = f.thaw();
                let also = thawed
                    .err()
                    .map(|t| format!("; and thawing failed: {t}"))
                    .unwrap_or_default();
                return Err(format!(
                    "cannot freeze {}: {e} (nothing is left frozen{also})",
                    m.display()
                ));
            }
            f.frozen.push(m.clone());
        }
        Ok(f)
    }

    /// The file systems frozen.
    pub fn frozen(&self) -> &[PathBuf] {
        &self.frozen
    }

    /// Thaws every file system frozen, the last frozen first, going on past a
    /// failure; says the failures.
    pub fn thaw(&mut self) -> Result<(), String> {
        let mut failed = Vec::new();
        while let Some(m) = self.frozen.pop() {
            if let Err(e) = self.fs.thaw(&m) {
                failed.push(format!("cannot thaw {}: {e}", m.display()));
            }
        }
        match failed.is_empty() {
            true => Ok(()),
            false => Err(failed.join("; ")),
        }
    }
}

impl<F: Fs> Drop for Freezer<F> {
    fn drop(&mut self) {
        let _ = self.thaw();
    }
}

/// The mount points of the file systems on `devices` (`major:minor`, a served
/// block device or one of its partitions, see `parent`), from `mountinfo`.
pub fn mounts_on(
    mountinfo: &str,
    devices: &[(u64, u64)],
    parent: impl Fn((u64, u64)) -> Option<(u64, u64)>,
) -> Vec<PathBuf> {
    let mut mounts = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(dev), Some(point)) = (fields.get(2), fields.get(4)) else {
            continue;
        };
        let Some((major, minor)) = dev.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        let dev = (major, minor);
        if devices.contains(&dev) || parent(dev).is_some_and(|p| devices.contains(&p)) {
            // mountinfo escapes spaces and the like as octal.
            mounts.push(PathBuf::from(unescape(point)));
        }
    }
    mounts
}

/// The disk holding partition `dev`, from sysfs.
pub fn sysfs_parent(dev: (u64, u64)) -> Option<(u64, u64)> {
    let base = PathBuf::from(format!("/sys/dev/block/{}:{}", dev.0, dev.1));
    if !base.join("partition").exists() {
        return None;
    }
    let text = std::fs::read_to_string(base.join("../dev")).ok()?;
    let (a, b) = text.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `\040` and the other octal escapes of mountinfo, decoded.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if b[i] == b'\\'
            && let Some(d) = octal
        {
            out.push(
                d.iter()
                    .fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')),
            );
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records the calls; freezing `fail` fails.
    struct Fake {
        calls: Arc<Mutex<Vec<String>>>,
        fail: Option<PathBuf>,
    }

    impl Fs for Fake {
        fn freeze(&mut self, m: &Path) -> io::Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("freeze {}", m.display()));
            match self.fail.as_deref() == Some(m) {
                true => Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
                false => Ok(()),
            }
        }
        fn thaw(&mut self, m: &Path) -> io::Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("thaw {}", m.display()));
            Ok(())
        }
    }

    fn mounts() -> Vec<PathBuf> {
        ["/srv", "/var/lib/db", "/home"].map(PathBuf::from).to_vec()
    }

    fn fake(fail: Option<&str>) -> (Fake, Arc<Mutex<Vec<String>>>) {
        let calls = Arc::default();
        let f = Fake {
            calls: Arc::clone(&calls),
            fail: fail.map(PathBuf::from),
        };
        (f, calls)
    }

    #[test]
    fn a_failed_freeze_thaws_what_was_frozen_and_names_the_mount() {
        let (fs, calls) = fake(Some("/home"));
        let err = Freezer::freeze(fs, &mounts()).err().unwrap();
        assert!(err.starts_with("cannot freeze /home:"), "{err}");
        assert_eq!(
            *calls.lock().unwrap(),
            [
                "freeze /srv",
                "freeze /var/lib/db",
                "freeze /home",
                "thaw /var/lib/db",
                "thaw /srv"
            ]
        );
    }

    #[test]
    fn frozen_file_systems_are_thawed_once_last_first_and_on_drop() {
        let (fs, calls) = fake(None);
        let mut f = Freezer::freeze(fs, &mounts()).unwrap();
        assert_eq!(f.frozen().len(), 3);
        f.thaw().unwrap();
        drop(f);
        assert_eq!(
            calls.lock().unwrap()[3..],
            ["thaw /home", "thaw /var/lib/db", "thaw /srv"]
        );
        // Dropped while frozen (a failure, an agent going down): thawed.
        let (fs, calls) = fake(None);
        drop(Freezer::freeze(fs, &mounts()[..1]).unwrap());
        assert_eq!(*calls.lock().unwrap(), ["freeze /srv", "thaw /srv"]);
    }

    #[test]
    fn the_mounts_of_served_devices_and_their_partitions_are_found() {
        let info = "\
21 1 259:2 / / rw - ext4 /dev/nvme0n1p2 rw
22 21 8:17 / /srv/data\\040x rw - xfs /dev/sdb1 rw
23 21 8:32 / /mnt/whole rw - ext4 /dev/sdc rw
24 21 0:22 / /proc rw - proc proc rw
";
        let parent = |d: (u64, u64)| (d == (8, 17)).then_some((8, 16));
        assert_eq!(
            mounts_on(info, &[(8, 16), (8, 32)], parent),
            [PathBuf::from("/srv/data x"), PathBuf::from("/mnt/whole")]
        );
    }
}
