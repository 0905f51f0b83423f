//! Local disk discovery from sysfs: what block devices this machine has and
//! what identifies them (size, model, serial, removable; GPT disk GUID and MBR
//! disk signature from their first sectors; whether one is our own boot medium).

pub mod by_path;
pub mod identity;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// A whole local disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name, e.g. `sda`, `nvme0n1`, `vda`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
    /// The World Wide Name as sysfs reports it (`naa.5000c500a1b2c3d4`, `eui.…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// The place on the buses, as udev's by-path links name it ([`by_path`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub removable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpt_guid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mbr_id: Option<String>,
    /// Holds the very image this client booted from: never a target.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub boot_medium: bool,
}

impl fmt::Display for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/dev/{:<10} {:>12} bytes ({:.1} GiB)",
            self.name,
            self.size,
            self.size as f64 / (1u64 << 30) as f64
        )?;
        if let Some(m) = &self.model {
            write!(f, "  model {m}")?;
        }
        if let Some(s) = &self.serial {
            write!(f, "  serial {s}")?;
        }
        if let Some(w) = &self.wwn {
            write!(f, "  wwn {w}")?;
        }
        if let Some(p) = &self.path {
            write!(f, "  path {p}")?;
        }
        if let Some(g) = &self.gpt_guid {
            write!(f, "  gpt {g}")?;
        }
        if let Some(m) = &self.mbr_id {
            write!(f, "  mbr {m}")?;
        }
        if self.removable {
            write!(f, "  removable")?;
        }
        if self.boot_medium {
            write!(f, "  (boot medium)")?;
        }
        Ok(())
    }
}

/// Errors while reading sysfs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot list {path}: {source}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds '{value}', not a number")]
    NotANumber { path: PathBuf, value: String },
}

/// Lists the whole disks under `sys_block` (normally `/sys/block`), sorted by name.
/// Virtual devices (loop, ram, zram, device-mapper: no `device` link), optical
/// drives and empty devices are left out.
pub fn discover(sys_block: &Path) -> Result<Vec<Disk>, Error> {
    let entries = fs::read_dir(sys_block).map_err(|source| Error::List {
        path: sys_block.into(),
        source,
    })?;
    let mut disks = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::List {
            path: sys_block.into(),
            source,
        })?;
        let dir = entry.path();
        // Virtual devices have no `device`; optical drives (SCSI type 5) are
        // never failback targets.
        if !dir.join("device").exists()
            || read_attr(&dir.join("device/type")).as_deref() == Some("5")
        {
            continue;
        }
        let sectors = read_number(&dir.join("size"))?;
        if sectors == 0 {
            continue;
        }
        let device = dir.join("device");
        let wwid = read_attr(&dir.join("wwid")).or_else(|| read_attr(&device.join("wwid")));
        disks.push(Disk {
            name: entry.file_name().to_string_lossy().into_owned(),
            // sysfs counts 512-byte sectors whatever the logical block size.
            size: sectors.saturating_mul(512),
            model: read_attr(&device.join("model")),
            serial: read_attr(&dir.join("serial"))
                .or_else(|| read_attr(&device.join("serial")))
                .or_else(|| vpd_serial(&device.join("vpd_pg80")))
                .or_else(|| wwid.as_deref().map(wwid_serial)),
            wwn: wwid.filter(|w| w.starts_with("naa.") || w.starts_with("eui.")),
            path: by_path::of(&dir),
            removable: read_attr(&dir.join("removable")).as_deref() == Some("1"),
            ..Disk::default()
        });
    }
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(disks)
}

/// Reads each disk's first sectors from `dev_dir` (normally `/dev`) for its GPT GUID
/// and MBR id, and marks the disk holding the image `own_image` (the `failback.image`
/// id of the running image) as the boot medium. An unreadable disk keeps no identity.
pub fn identify(disks: &mut [Disk], dev_dir: &Path, own_image: Option<&str>) {
    for disk in disks {
        let Ok(id) = identity::read(&dev_dir.join(&disk.name)) else {
            continue;
        };
        disk.boot_medium = own_image.is_some() && id.image_id.as_deref() == own_image;
        disk.gpt_guid = id.gpt_guid;
        disk.mbr_id = id.mbr_id;
    }
}

fn read_number(path: &Path) -> Result<u64, Error> {
    let text = fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })?;
    let value = text.trim();
    value.parse().map_err(|_| Error::NotANumber {
        path: path.into(),
        value: value.into(),
    })
}

/// A sysfs text attribute, trimmed; `None` when absent or blank.
fn read_attr(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let value = text.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// The unit serial number of a SCSI/ATA disk: VPD page 0x80 (SPC-4 7.8.19),
/// a 4-byte header (length at bytes 2-3) then the serial, space-padded.
fn vpd_serial(path: &Path) -> Option<String> {
    let page = fs::read(path).ok()?;
    let len = usize::from(u16::from_be_bytes([*page.get(2)?, *page.get(3)?]));
    let serial = String::from_utf8_lossy(page.get(4..4 + len)?)
        .trim()
        .to_string();
    (!serial.is_empty()).then_some(serial)
}

/// libata's `wwid` is `t10.` + vendor (8) + model (40) + serial: keep the serial.
/// Other identifiers (naa., eui.) are the best serial there is: kept whole.
fn wwid_serial(wwid: &str) -> String {
    match wwid.strip_prefix("t10.ATA").and_then(|_| wwid.get(52..)) {
        Some(serial) if !serial.trim().is_empty() => serial.trim().to_string(),
        _ => wwid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_disk(root: &Path, name: &str, sectors: &str, with_device: bool) -> PathBuf {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("size"), sectors).unwrap();
        fs::write(dir.join("removable"), "0\n").unwrap();
        if with_device {
            fs::create_dir_all(dir.join("device")).unwrap();
        }
        dir
    }

    #[test]
    fn finds_real_disks_and_skips_virtual_and_empty_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let sda = fake_disk(tmp.path(), "sda", "262144\n", true);
        fs::write(sda.join("device/model"), "QEMU HARDDISK   \n").unwrap();
        fs::write(sda.join("device/vpd_pg80"), b"\x00\x80\x00\x0a  QM00001 ").unwrap();
        fs::write(sda.join("device/wwid"), "t10.ATA QEMU HARDDISK QM00001\n").unwrap();
        let vda = fake_disk(tmp.path(), "vda", "131072\n", true);
        fs::write(vda.join("serial"), "\n").unwrap();
        fs::write(vda.join("removable"), "1\n").unwrap();
        fake_disk(tmp.path(), "loop0", "2048\n", false);
        fake_disk(tmp.path(), "sr0", "0\n", true);
        let sr1 = fake_disk(tmp.path(), "sr1", "2097151\n", true);
        fs::write(sr1.join("device/type"), "5\n").unwrap();

        let disks = discover(tmp.path()).unwrap();
        assert_eq!(
            disks,
            vec![
                Disk {
                    name: "sda".into(),
                    size: 128 << 20,
                    model: Some("QEMU HARDDISK".into()),
                    serial: Some("QM00001".into()),
                    removable: false,
                    ..Disk::default()
                },
                Disk {
                    name: "vda".into(),
                    size: 64 << 20,
                    model: None,
                    serial: None,
                    removable: true,
                    ..Disk::default()
                },
            ]
        );
    }

    #[test]
    fn the_serial_is_cut_out_of_an_ata_wwid() {
        assert_eq!(
            wwid_serial("t10.ATA     FAILBACK-TEST                           SATA-SN-2"),
            "SATA-SN-2"
        );
        assert_eq!(wwid_serial("naa.5000c500a1b2c3d4"), "naa.5000c500a1b2c3d4");
    }

    #[test]
    fn identify_reads_heads_and_knows_its_own_image() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ours = vec![0u8; identity::HEAD_BYTES];
        ours[32769..32774].copy_from_slice(b"CD001");
        let mark = format!("{}feedface", identity::IMAGE_MARK);
        let at = identity::IMAGE_MARK_OFFSET;
        ours[at..at + mark.len()].copy_from_slice(mark.as_bytes());
        let mut other = ours.clone();
        other[at + mark.len() - 1] = b'0'; // another failback image: a fine target
        fs::write(tmp.path().join("sdb"), &ours).unwrap();
        fs::write(tmp.path().join("sdc"), &other).unwrap();
        let disk = |name: &str| Disk {
            name: name.into(),
            ..Disk::default()
        };
        let mut disks = vec![disk("sda"), disk("sdb"), disk("sdc")];
        identify(&mut disks, tmp.path(), Some("feedface"));
        let medium: Vec<bool> = disks.iter().map(|d| d.boot_medium).collect();
        assert_eq!(
            medium,
            [false, true, false],
            "sda is unreadable: not marked"
        );
        identify(&mut disks, tmp.path(), None);
        assert!(
            disks.iter().all(|d| !d.boot_medium),
            "no own id: nothing marked"
        );
    }

    #[test]
    fn a_garbled_size_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        fake_disk(tmp.path(), "sda", "lots\n", true);
        let err = discover(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("sda/size") && err.contains("lots"), "{err}");
    }
}
