//! Which local disk receives which remote volume when no `--map` says so: by identity
//! (the volume's GPT disk GUID, else its MBR disk signature, found on exactly one local
//! disk), else by size (the smallest free disk that holds the volume). Every choice
//! says why, so the operator (and the `mapping` event) can check it.

use super::map::{MapTo, Mapping};
use super::select::{self, Selector};
use crate::disks::Disk;
use crate::source::VolumeInfo;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How a target was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Given by `--map`, `failback.map` or the preset.
    Explicit,
    /// The only local disk with the volume's GPT disk GUID.
    GptGuid,
    /// The only local disk with the volume's MBR disk signature.
    MbrId,
    /// The only free local disk large enough.
    OnlyFit,
    /// The smallest of several free local disks large enough: a guess.
    BestFit,
}

impl Reason {
    /// Whether the choice is proven (given, or by identity) rather than made by size;
    /// unattended runs accept only proven choices, and the only fit when told to.
    pub fn proven(self) -> bool {
        !matches!(self, Reason::OnlyFit | Reason::BestFit)
    }
}

/// One volume's target and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub volume: String,
    /// `None`: excluded.
    pub target: Option<PathBuf>,
    pub reason: Reason,
    /// The reason in words, e.g. "GPT disk GUID 0fc63daf-... found on this disk only".
    pub why: String,
}

/// Why no mapping could be proposed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(
        "volume {volume}: its {what} {id} is on several local disks ({disks}): map it with failback.map=VOLUME=/dev/DISK"
    )]
    Ambiguous {
        volume: String,
        what: &'static str,
        id: String,
        disks: String,
    },
    #[error(
        "volume {volume} ({size} bytes): no free local disk is large enough: map it with failback.map=VOLUME=/dev/DISK or skip it with VOLUME=EXCLUDE"
    )]
    NoFit { volume: String, size: u64 },
    #[error(
        "volume {volume}: {target} was chosen as {why}, a guess; unattended runs do not guess: map it with failback.map=VOLUME=/dev/DISK"
    )]
    Guess {
        volume: String,
        target: String,
        why: String,
    },
    #[error(
        "volume {volume}: {target} was chosen by size alone ({why}); unattended runs take only a mapping given or proven by identity: map it with failback.map=VOLUME=/dev/DISK, or allow the only fit with map_by_size = true in the preset (failback.map_by_size=1)"
    )]
    BySize {
        volume: String,
        target: String,
        why: String,
    },
}

/// Proposes a target for every volume among `disks` (the boot medium never), under
/// `dev_dir` (normally `/dev`).
pub fn propose(
    volumes: &[VolumeInfo],
    disks: &[Disk],
    dev_dir: &Path,
) -> Result<Vec<Choice>, Error> {
    let mut free: Vec<&Disk> = disks.iter().filter(|d| !d.boot_medium).collect();
    let mut chosen: Vec<Option<Choice>> = vec![None; volumes.len()];
    let target = |d: &Disk| Some(dev_dir.join(&d.name));

    for (slot, volume) in chosen.iter_mut().zip(volumes) {
        let keys = [
            (
                Reason::GptGuid,
                "GPT disk GUID",
                &volume.gpt_guid,
                gpt_of as KeyOf,
            ),
            (Reason::MbrId, "MBR disk signature", &volume.mbr_id, mbr_of),
        ];
        for (reason, what, id, of) in keys {
            let Some(id) = id else { continue };
            let same = |d: &&Disk| of(d).as_ref().is_some_and(|x| x.eq_ignore_ascii_case(id));
            let matches: Vec<&Disk> = free.iter().copied().filter(same).collect();
            match matches[..] {
                [] => continue,
                [disk] => {
                    *slot = Some(Choice {
                        volume: volume.id.clone(),
                        target: target(disk),
                        reason,
                        why: format!("{what} {id} found on this disk only"),
                    });
                    free.retain(|d| d.name != disk.name);
                }
                _ => {
                    return Err(Error::Ambiguous {
                        volume: volume.id.clone(),
                        what,
                        id: id.clone(),
                        disks: names(&matches),
                    });
                }
            }
            break;
        }
    }

    // By size, largest volume first so that it gets first pick.
    let mut rest: Vec<usize> = (0..volumes.len())
        .filter(|&i| chosen[i].is_none())
        .collect();
    rest.sort_by_key(|&i| std::cmp::Reverse(volumes[i].size));
    for i in rest {
        let volume = &volumes[i];
        let mut fits: Vec<&Disk> = free
            .iter()
            .copied()
            .filter(|d| d.size >= volume.size)
            .collect();
        fits.sort_by_key(|d| (d.size, d.name.clone()));
        let Some(&disk) = fits.first() else {
            return Err(Error::NoFit {
                volume: volume.id.clone(),
                size: volume.size,
            });
        };
        let (reason, why) = if fits.len() == 1 {
            (
                Reason::OnlyFit,
                format!(
                    "the only free local disk that holds {} ({} >= {} bytes)",
                    volume.id, disk.size, volume.size
                ),
            )
        } else {
            (
                Reason::BestFit,
                format!(
                    "the smallest of {} free local disks that hold {} ({})",
                    fits.len(),
                    volume.id,
                    names(&fits)
                ),
            )
        };
        chosen[i] = Some(Choice {
            volume: volume.id.clone(),
            target: target(disk),
            reason,
            why,
        });
        free.retain(|d| d.name != disk.name);
    }
    Ok(chosen
        .into_iter()
        .map(|c| c.expect("every volume chosen"))
        .collect())
}

/// The choices an explicit mapping makes, for the `mapping` event: a stable name
/// (`serial:…`) is resolved to the one disk among `disks` (under `dev_dir`) it matches.
pub fn explicit(
    mapping: &Mapping,
    disks: &[Disk],
    dev_dir: &Path,
) -> Result<Vec<Choice>, select::Error> {
    mapping
        .iter()
        .map(|(volume, to)| {
            let (target, why) = match to {
                MapTo::Target(Selector::Path(path)) => {
                    (Some(path.clone()), "given by the mapping".into())
                }
                MapTo::Target(name) => (
                    Some(name.resolve(disks, dev_dir)?),
                    format!("given by the mapping as {name}"),
                ),
                MapTo::Exclude => (None, "given by the mapping".into()),
            };
            Ok(Choice {
                volume: volume.clone(),
                target,
                reason: Reason::Explicit,
                why,
            })
        })
        .collect()
}

/// The mapping the choices make; with `unattended`, only proven choices are accepted.
pub fn to_mapping(
    choices: &[Choice],
    unattended: bool,
    map_by_size: bool,
) -> Result<Mapping, Error> {
    let mut mapping = Mapping::new();
    for c in choices {
        let (volume, why) = (c.volume.clone(), c.why.clone());
        let target = c
            .target
            .as_ref()
            .map_or("nothing".to_string(), |t| t.display().to_string());
        match c.reason {
            _ if !unattended || c.reason.proven() => {}
            Reason::OnlyFit if map_by_size => {}
            Reason::OnlyFit => {
                return Err(Error::BySize {
                    volume,
                    target,
                    why,
                });
            }
            _ => {
                return Err(Error::Guess {
                    volume,
                    target,
                    why,
                });
            }
        }
        let to = match &c.target {
            Some(path) => MapTo::path(path.clone()),
            None => MapTo::Exclude,
        };
        mapping.insert(c.volume.clone(), to);
    }
    Ok(mapping)
}

type KeyOf = fn(&Disk) -> &Option<String>;

fn gpt_of(d: &Disk) -> &Option<String> {
    &d.gpt_guid
}

fn mbr_of(d: &Disk) -> &Option<String> {
    &d.mbr_id
}

fn names(disks: &[&Disk]) -> String {
    disks
        .iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn volume(id: &str, size: u64, gpt: Option<&str>, mbr: Option<&str>) -> VolumeInfo {
        VolumeInfo {
            id: id.into(),
            size,
            block_size: 512 * 1024,
            gpt_guid: gpt.map(Into::into),
            mbr_id: mbr.map(Into::into),
        }
    }

    fn disk(name: &str, size: u64, gpt: Option<&str>) -> Disk {
        Disk {
            name: name.into(),
            size,
            gpt_guid: gpt.map(Into::into),
            ..Disk::default()
        }
    }

    fn targets(choices: &[Choice]) -> Vec<(String, String, Reason)> {
        choices
            .iter()
            .map(|c| {
                let t = c.target.as_ref().unwrap().display().to_string();
                (c.volume.clone(), t, c.reason)
            })
            .collect()
    }

    #[test]
    fn identity_first_then_the_only_disk_that_fits() {
        // The failback story: system disk by GUID, data disk by size.
        let guid = "6f1e4b0a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
        let vols = [
            volume("system", 256 * MIB, Some(guid), None),
            volume("data", 128 * MIB, None, None),
        ];
        let disks = [
            disk("nvme0n1", 256 * MIB, Some(&guid.to_uppercase())),
            disk("vda", 160 * MIB, None),
        ];
        let choices = propose(&vols, &disks, Path::new("/dev")).unwrap();
        assert_eq!(
            targets(&choices),
            [
                ("system".into(), "/dev/nvme0n1".into(), Reason::GptGuid),
                ("data".into(), "/dev/vda".into(), Reason::OnlyFit),
            ]
        );
        assert!(choices[0].why.contains(guid), "{}", choices[0].why);
        let mapping = to_mapping(&choices, true, true).unwrap();
        assert_eq!(mapping["data"], MapTo::path("/dev/vda"));
        // Without map_by_size, the only fit is refused unattended: the intended disk may
        // be the one missing (its driver did not load), and this one another.
        let err = to_mapping(&choices, true, false).unwrap_err().to_string();
        assert!(
            err.starts_with("volume data: /dev/vda was chosen by size alone")
                && err.contains("map_by_size = true")
                && !err.contains('\n'),
            "{err}"
        );
        assert!(
            to_mapping(&choices[..1], true, false).is_ok(),
            "identity is proof"
        );
        assert!(to_mapping(&choices, false, false).is_ok(), "asked: offered");
    }

    #[test]
    fn size_alone_would_have_swapped_nothing_identity_wins() {
        // Both disks could hold the system volume; the GUID says which one it was.
        let vols = [volume("system", 100 * MIB, None, Some("deadbeef"))];
        let mut sdb = disk("sdb", 200 * MIB, None);
        sdb.mbr_id = Some("deadbeef".into());
        let disks = [disk("sda", 100 * MIB, None), sdb];
        let choices = propose(&vols, &disks, Path::new("/dev")).unwrap();
        assert_eq!(targets(&choices)[0].1, "/dev/sdb");
        assert_eq!(choices[0].reason, Reason::MbrId);
    }

    #[test]
    fn a_guess_is_refused_unattended_and_offered_otherwise() {
        let vols = [volume("data", 10 * MIB, None, None)];
        let disks = [disk("sdb", 50 * MIB, None), disk("sda", 20 * MIB, None)];
        let choices = propose(&vols, &disks, Path::new("/dev")).unwrap();
        assert_eq!(targets(&choices)[0].1, "/dev/sda", "the smallest that fits");
        assert_eq!(choices[0].reason, Reason::BestFit);
        for map_by_size in [false, true] {
            let err = to_mapping(&choices, true, map_by_size)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("do not guess") && err.contains("sda, sdb"),
                "{err}"
            );
        }
        assert!(to_mapping(&choices, false, false).is_ok());
    }

    #[test]
    fn the_boot_medium_is_never_chosen() {
        let vols = [volume("data", 10 * MIB, Some("g"), None)];
        let mut stick = disk("sdz", 64 * MIB, Some("g"));
        stick.boot_medium = true;
        let err = propose(&vols, &[stick], Path::new("/dev")).unwrap_err();
        assert_eq!(
            err,
            Error::NoFit {
                volume: "data".into(),
                size: 10 * MIB
            }
        );
        assert!(err.to_string().contains("EXCLUDE"), "{err}");
    }

    #[test]
    fn a_guid_on_two_disks_is_ambiguous() {
        let vols = [volume("system", MIB, Some("g"), None)];
        let disks = [disk("sda", MIB, Some("g")), disk("sdb", MIB, Some("G"))];
        let err = propose(&vols, &disks, Path::new("/dev")).unwrap_err();
        assert!(err.to_string().contains("sda, sdb"), "{err}");
    }

    #[test]
    fn the_largest_volume_picks_first() {
        // Smallest-first would give "small" the 60 MiB disk and leave "big" nowhere.
        let vols = [
            volume("small", 50 * MIB, None, None),
            volume("big", 100 * MIB, None, None),
        ];
        let disks = [disk("sda", 120 * MIB, None), disk("sdb", 60 * MIB, None)];
        let choices = propose(&vols, &disks, Path::new("/dev")).unwrap();
        assert_eq!(
            targets(&choices),
            [
                ("small".into(), "/dev/sdb".into(), Reason::OnlyFit),
                ("big".into(), "/dev/sda".into(), Reason::OnlyFit),
            ]
        );
    }
}
