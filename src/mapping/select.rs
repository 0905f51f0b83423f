//! How a target disk is named: a path (`/dev/sdb`, an image file), or a name that stays
//! the same across boots when `sdX` order does not (several controllers probe in any
//! order, and the image has no udev for `/dev/disk/by-id`): `serial:SERIAL`, `wwn:WWN`,
//! `path:PCI-PATH`, matched against what disk discovery reads from sysfs (the `disks`
//! event shows each disk's serial, wwn and path).

use crate::disks::Disk;
use std::fmt;
use std::path::{Path, PathBuf};

/// A target disk as the mapping names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Path(PathBuf),
    Serial(String),
    Wwn(String),
    ByPath(String),
}

/// Why a selector names no single disk.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{selector} matches no local disk; the disks are: {disks}")]
    NoMatch { selector: String, disks: String },
    #[error("{selector} matches several local disks ({matches}); the disks are: {disks}")]
    Several {
        selector: String,
        matches: String,
        disks: String,
    },
}

impl Selector {
    /// `serial:…`, `wwn:…`, `path:…`, else a path.
    pub fn parse(text: &str) -> Selector {
        let named = |prefix: &str| text.strip_prefix(prefix).map(|v| v.trim().to_string());
        if let Some(s) = named("serial:") {
            Selector::Serial(s)
        } else if let Some(w) = named("wwn:") {
            Selector::Wwn(w)
        } else if let Some(p) = named("path:") {
            Selector::ByPath(p)
        } else {
            Selector::Path(PathBuf::from(text))
        }
    }

    /// The path itself, or the one disk among `disks` (under `dev_dir`) the name matches.
    pub fn resolve(&self, disks: &[Disk], dev_dir: &Path) -> Result<PathBuf, Error> {
        let matches: Vec<&Disk> = match self {
            Selector::Path(path) => return Ok(path.clone()),
            Selector::Serial(s) => disks
                .iter()
                .filter(|d| d.serial.as_deref() == Some(s.as_str()))
                .collect(),
            Selector::Wwn(w) => disks
                .iter()
                .filter(|d| d.wwn.as_deref().is_some_and(|x| same_wwn(x, w)))
                .collect(),
            Selector::ByPath(p) => disks
                .iter()
                .filter(|d| d.path.as_deref() == Some(p.as_str()))
                .collect(),
        };
        match matches[..] {
            [disk] => Ok(dev_dir.join(&disk.name)),
            [] => Err(Error::NoMatch {
                selector: self.to_string(),
                disks: listed(disks),
            }),
            _ => Err(Error::Several {
                selector: self.to_string(),
                matches: matches
                    .iter()
                    .map(|d| format!("/dev/{}", d.name))
                    .collect::<Vec<_>>()
                    .join(", "),
                disks: listed(disks),
            }),
        }
    }
}

/// As the mapping takes it back.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Path(p) => write!(f, "{}", p.display()),
            Selector::Serial(s) => write!(f, "serial:{s}"),
            Selector::Wwn(w) => write!(f, "wwn:{w}"),
            Selector::ByPath(p) => write!(f, "path:{p}"),
        }
    }
}

/// sysfs says `naa.5000c500a1b2c3d4`, udev's links and vendors' tools `0x5000c500a1b2c3d4`:
/// the same name, in any case.
fn same_wwn(a: &str, b: &str) -> bool {
    let bare = |w: &str| {
        let w = w.trim().to_ascii_lowercase();
        ["naa.", "eui.", "0x"]
            .iter()
            .find_map(|p| w.strip_prefix(p).map(str::to_string))
            .unwrap_or(w)
    };
    bare(a) == bare(b)
}

/// Each disk with the names a selector can use, for the refusal.
fn listed(disks: &[Disk]) -> String {
    if disks.is_empty() {
        return "none found".into();
    }
    disks
        .iter()
        .map(|d| {
            let mut s = format!("/dev/{}", d.name);
            for (key, value) in [("serial", &d.serial), ("wwn", &d.wwn), ("path", &d.path)] {
                if let Some(v) = value {
                    s += &format!(" {key}:{v}");
                }
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disks() -> Vec<Disk> {
        let disk = |name: &str, serial: &str, wwn: Option<&str>, path: &str| Disk {
            name: name.into(),
            serial: Some(serial.into()),
            wwn: wwn.map(Into::into),
            path: Some(path.into()),
            ..Disk::default()
        };
        vec![
            disk(
                "sda",
                "SN-A",
                Some("naa.5000c500a1b2c3d4"),
                "pci-0000:00:04.0-scsi-0:0:0:0",
            ),
            disk("sdb", "SN-B", None, "pci-0000:00:05.0-scsi-0:0:0:0"),
            disk("sdc", "SN-B", None, "pci-0000:00:05.0-scsi-0:0:1:0"),
        ]
    }

    #[test]
    fn each_form_names_its_disk() {
        let dev = Path::new("/dev");
        let find = |text: &str| Selector::parse(text).resolve(&disks(), dev);
        assert_eq!(find("serial:SN-A"), Ok("/dev/sda".into()));
        assert_eq!(find("wwn:0x5000C500A1B2C3D4"), Ok("/dev/sda".into()));
        assert_eq!(find("wwn:naa.5000c500a1b2c3d4"), Ok("/dev/sda".into()));
        assert_eq!(
            find("path:pci-0000:00:05.0-scsi-0:0:1:0"),
            Ok("/dev/sdc".into())
        );
        assert_eq!(find("/dev/sdz"), Ok("/dev/sdz".into()), "a path is kept");
    }

    #[test]
    fn none_or_several_are_refused_with_the_disks_listed() {
        let err = Selector::parse("serial:SN-X")
            .resolve(&disks(), Path::new("/dev"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("serial:SN-X matches no local disk"),
            "{err}"
        );
        assert!(
            err.contains("/dev/sdc serial:SN-B path:pci-0000:00:05.0-scsi-0:0:1:0"),
            "{err}"
        );
        let err = Selector::parse("serial:SN-B")
            .resolve(&disks(), Path::new("/dev"))
            .unwrap_err();
        assert!(
            matches!(&err, Error::Several { matches, .. } if matches == "/dev/sdb, /dev/sdc"),
            "{err}"
        );
    }

    #[test]
    fn the_text_round_trips() {
        for text in [
            "serial:X 1",
            "wwn:naa.1",
            "path:pci-0000:00:04.0",
            "/dev/sda",
        ] {
            assert_eq!(Selector::parse(text).to_string(), text);
        }
    }
}
