//! After a pull with `after = reboot`: the next boot must be the recovered system's.
//! A BMC's virtual CD, a VM's CD-ROM or a USB stick often stays first in the boot
//! order; rebooting as is would boot failback again, find nothing to pull and reboot,
//! forever. So before the reboot an optical boot medium is ejected and, under UEFI,
//! `BootNext` names the recovered disk (its OS's own entry, else a new one for its
//! ESP's `\EFI\BOOT\BOOTX64.EFI`); and a boot that finds nothing to pull does not
//! reboot at all: it says so and waits for the operator.

use super::efi::{self, Vars};
use super::esp;
use super::load_option::{HardDrive, LoadOption, Node};
use super::pull::Pulled;
use crate::config::After;
use crate::disks::{Disk, identity};
use crate::report::{Event, Reporter};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The removable-media path the firmware boots from a disk with no entry of its own.
const DEFAULT_LOADER: &str = "\\EFI\\BOOT\\BOOTX64.EFI";
/// The description of the entry failback adds when the OS has none.
const ENTRY: &str = "failback: recovered system";
/// `CDROMEJECT` (linux/cdrom.h).
const CDROMEJECT: libc::c_ulong = 0x5309;

/// The machine this runs on, as the next boot sees it.
pub struct Machine<'a> {
    /// `/sys/block` and `/dev`.
    pub sys_block: &'a Path,
    pub dev: &'a Path,
    /// The disks found (one may be the boot medium: a USB stick).
    pub disks: &'a [Disk],
    /// `failback.image`: the id of the image booted.
    pub own_image: Option<&'a str>,
    /// The firmware's variables (UEFI only).
    pub efi: Option<Vars>,
}

/// What follows `pulled` instead of `after`: `after` itself, with the next boot
/// prepared when it is a reboot; [`After::Wait`] when a reboot would loop.
pub fn prepare(reporter: &dyn Reporter, pulled: &Pulled, machine: &Machine, after: After) -> After {
    if after != After::Reboot {
        return after;
    }
    let optical = machine
        .own_image
        .and_then(|id| optical_medium(machine.sys_block, machine.dev, id));
    if pulled.summary.changed_nothing() {
        let disk = machine.disks.iter().find(|d| d.boot_medium);
        let medium = optical.or_else(|| disk.map(|d| machine.dev.join(&d.name)));
        reporter.report(&Event::AlreadyRecovered {
            volumes: pulled
                .targets
                .iter()
                .map(|(v, t)| (v.clone(), t.display().to_string()))
                .collect(),
            boot_medium: medium.map(|m| m.display().to_string()),
        });
        return After::Wait;
    }
    if let Some(cd) = optical {
        let message = match eject(&cd) {
            Ok(()) => format!(
                "ejected {} (the failback image) so that the next boot is the recovered system's",
                cd.display()
            ),
            Err(e) => format!(
                "cannot eject {}: {e}; remove it before the next boot",
                cd.display()
            ),
        };
        reporter.report(&Event::Notice { message });
    }
    if let Some(vars) = &machine.efi {
        let targets: Vec<&Path> = pulled.targets.values().map(PathBuf::as_path).collect();
        let message = boot_next(vars, &targets).unwrap_or_else(|e| {
            format!("BootNext not set: {e}; the firmware's boot order decides the next boot")
        });
        reporter.report(&Event::Notice { message });
    }
    After::Reboot
}

/// The optical drive (SCSI type 5 under `sys_block`) holding the image `own_image`.
fn optical_medium(sys_block: &Path, dev: &Path, own_image: &str) -> Option<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(sys_block)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().map(|n| dev.join(n)).find(|path| {
        let name = path.file_name().unwrap_or_default();
        let kind = std::fs::read_to_string(sys_block.join(name).join("device/type"));
        kind.is_ok_and(|t| t.trim() == "5")
            && identity::read(path).is_ok_and(|id| id.image_id.as_deref() == Some(own_image))
    })
}

/// Opens the tray of the optical drive `dev` (the kernel unlocks its door first).
fn eject(dev: &Path) -> std::io::Result<()> {
    let drive = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(dev)?;
    // SAFETY: CDROMEJECT takes no argument; `drive` is an open descriptor.
    let rc = unsafe { libc::ioctl(drive.as_raw_fd(), CDROMEJECT) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `BootNext` to the first of `targets` with an EFI system partition: the
/// firmware's entry for that partition when there is one, else a new entry for its
/// default loader. Returns what it did, in words.
fn boot_next(vars: &Vars, targets: &[&Path]) -> Result<String, String> {
    let mut problems = Vec::new();
    let found = targets.iter().find_map(|t| match esp::find(t) {
        Ok(Some(esp)) => Some((t, esp)),
        Ok(None) => None,
        Err(e) => {
            problems.push(format!("{}: {e}", t.display()));
            None
        }
    });
    let Some((disk, esp)) = found else {
        problems.insert(0, "no recovered disk has an EFI system partition".into());
        return Err(problems.join("; "));
    };
    let existing = vars.boot_options().into_iter().find(|(_, option)| {
        option
            .hard_drive()
            .is_some_and(|hd| hd.is_partition(esp.number, esp.signature))
    });
    let (number, what) = match existing {
        Some((number, option)) => (number, format!("its entry \"{}\"", option.description)),
        None => {
            let option = LoadOption::new(
                ENTRY,
                vec![
                    Node::HardDrive(HardDrive::new(
                        esp.number,
                        esp.start,
                        esp.size,
                        esp.signature,
                    )),
                    Node::File(DEFAULT_LOADER.into()),
                ],
            );
            let number = vars
                .add_boot_option(&option)
                .map_err(|e| format!("cannot add a boot entry: {e}"))?;
            (number, format!("a new entry for {DEFAULT_LOADER}"))
        }
    };
    vars.set_boot_next(number)
        .map_err(|e| format!("cannot write BootNext: {e}"))?;
    Ok(format!(
        "BootNext = {}: {what} on {} partition {}",
        efi::boot_name(number),
        disk.display(),
        esp.number
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::load_option::Signature;
    use crate::sync::Summary;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen(Mutex<Vec<Event>>);
    impl Reporter for Seen {
        fn report(&self, e: &Event) {
            self.0.lock().unwrap().push(e.clone());
        }
    }

    /// A disk image with a GPT whose partition 2 (LBA 6144, 2048 long) is an ESP;
    /// returns its path and the ESP's GUID.
    fn disk_with_esp(dir: &Path) -> (PathBuf, [u8; 16]) {
        let path = dir.join("nvme0n1");
        std::fs::write(&path, vec![0u8; 8 << 20]).unwrap();
        let mut disk = gpt::GptConfig::new().writable(true).create(&path).unwrap();
        disk.add_partition_at("root", 1, 2048, 4096, gpt::partition_types::LINUX_FS, 0)
            .unwrap();
        disk.add_partition_at("esp", 2, 6144, 2048, gpt::partition_types::EFI, 0)
            .unwrap();
        let guid = disk.partitions()[&2].part_guid.to_bytes_le();
        disk.write().unwrap();
        (path, guid)
    }

    fn pulled(blocks: u64, targets: &[(&str, &Path)]) -> Pulled {
        Pulled {
            summary: Summary {
                volumes: targets.len() as u64,
                pulled_blocks: blocks,
                ..Summary::default()
            },
            targets: targets
                .iter()
                .map(|(v, t)| (v.to_string(), t.to_path_buf()))
                .collect(),
        }
    }

    #[test]
    fn boot_next_names_a_new_entry_for_the_default_loader_of_the_esp() {
        let tmp = tempfile::tempdir().unwrap();
        let (disk, guid) = disk_with_esp(tmp.path());
        let vars_dir = tmp.path().join("efivars");
        std::fs::create_dir(&vars_dir).unwrap();
        let vars = Vars::new(&vars_dir);
        // The firmware's own entry (a CD-ROM), and a disk without an ESP first.
        let cd = LoadOption::new("UEFI QEMU DVD-ROM", vec![Node::File("x".into())]);
        vars.add_boot_option(&cd).unwrap();
        let blank = tmp.path().join("vda");
        std::fs::write(&blank, vec![0u8; 1 << 20]).unwrap();

        let said = boot_next(&vars, &[&blank, &disk]).unwrap();
        assert_eq!(
            said,
            format!(
                "BootNext = Boot0001: a new entry for \\EFI\\BOOT\\BOOTX64.EFI on {} partition 2",
                disk.display()
            )
        );
        assert_eq!(vars.boot_next(), Some(1));
        let (_, added) = vars.boot_options().into_iter().nth(1).unwrap();
        assert_eq!(
            added,
            LoadOption::new(
                ENTRY,
                vec![
                    Node::HardDrive(HardDrive::new(2, 6144, 2048, Signature::Gpt(guid))),
                    Node::File(DEFAULT_LOADER.into()),
                ]
            )
        );
    }

    #[test]
    fn boot_next_prefers_the_systems_own_entry_for_its_esp() {
        let tmp = tempfile::tempdir().unwrap();
        let (disk, guid) = disk_with_esp(tmp.path());
        let vars = Vars::new(tmp.path());
        let on = |guid| {
            vec![
                Node::HardDrive(HardDrive::new(2, 6144, 2048, Signature::Gpt(guid))),
                Node::File("\\EFI\\debian\\shimx64.efi".into()),
            ]
        };
        vars.add_boot_option(&LoadOption::new("other disk", on([9; 16])))
            .unwrap();
        vars.add_boot_option(&LoadOption::new("debian", on(guid)))
            .unwrap();
        let said = boot_next(&vars, &[&disk]).unwrap();
        assert!(
            said.starts_with("BootNext = Boot0001: its entry \"debian\""),
            "{said}"
        );
        assert_eq!(vars.boot_next(), Some(1));
        assert_eq!(vars.boot_options().len(), 2, "no entry added");

        let err = boot_next(&vars, &[&tmp.path().join("missing")]).unwrap_err();
        assert!(
            err.starts_with("no recovered disk has an EFI system partition; ")
                && err.contains("missing"),
            "{err}"
        );
    }

    /// An MBR disk (signature 0x0badcafe) whose second primary partition is an ESP.
    fn mbr_disk_with_esp(dir: &Path) -> PathBuf {
        let path = dir.join("sda");
        let mut bytes = vec![0u8; 4 << 20];
        let sector =
            esp::test_disk::mbr_sector(0x0bad_cafe, &[(0x83, 2048, 2048), (0xef, 4096, 2048)]);
        bytes[..512].copy_from_slice(&sector);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn boot_next_on_an_mbr_disk_names_its_esp_by_disk_signature_and_number() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = mbr_disk_with_esp(tmp.path());
        let vars = Vars::new(tmp.path());
        let said = boot_next(&vars, &[&disk]).unwrap();
        assert!(
            said.starts_with("BootNext = Boot0000: a new entry"),
            "{said}"
        );
        let esp = HardDrive::new(2, 4096, 2048, Signature::Mbr(0x0bad_cafe));
        let (_, added) = vars.boot_options().into_iter().next().unwrap();
        assert_eq!(added.hard_drive(), Some(&esp));

        // The system's own entry for that partition is taken; one for partition 1 is not.
        let vars = Vars::new(tmp.path().join("again"));
        std::fs::create_dir(tmp.path().join("again")).unwrap();
        let on = |hd: HardDrive| vec![Node::HardDrive(hd), Node::File("\\EFI\\x.efi".into())];
        let root = HardDrive::new(1, 2048, 2048, Signature::Mbr(0x0bad_cafe));
        vars.add_boot_option(&LoadOption::new("root", on(root)))
            .unwrap();
        vars.add_boot_option(&LoadOption::new("linux", on(esp)))
            .unwrap();
        let said = boot_next(&vars, &[&disk]).unwrap();
        assert!(
            said.starts_with("BootNext = Boot0001: its entry \"linux\""),
            "{said}"
        );
    }

    #[test]
    fn nothing_to_pull_with_reboot_waits_instead_and_says_why() {
        let tmp = tempfile::tempdir().unwrap();
        let disks = [Disk {
            name: "sda".into(),
            boot_medium: true,
            ..Disk::default()
        }];
        let machine = Machine {
            sys_block: tmp.path(),
            dev: Path::new("/dev"),
            disks: &disks,
            own_image: Some("feedface"),
            efi: None,
        };
        let target = Path::new("/dev/nvme0n1");
        let seen = Seen::default();
        let same = pulled(0, &[("system", target)]);
        assert_eq!(prepare(&seen, &same, &machine, After::Reboot), After::Wait);
        let events = seen.0.into_inner().unwrap();
        let [
            Event::AlreadyRecovered {
                volumes,
                boot_medium,
            },
        ] = &events[..]
        else {
            panic!("{events:?}");
        };
        assert_eq!(volumes["system"], "/dev/nvme0n1");
        assert_eq!(boot_medium.as_deref(), Some("/dev/sda"));

        // Other endings are left as they are; a pull that wrote something reboots.
        let seen = Seen::default();
        assert_eq!(
            prepare(&seen, &same, &machine, After::Poweroff),
            After::Poweroff
        );
        let changed = pulled(3, &[("system", target)]);
        assert_eq!(
            prepare(&seen, &changed, &machine, After::Reboot),
            After::Reboot
        );
        assert!(seen.0.into_inner().unwrap().is_empty());
    }

    #[test]
    fn the_optical_boot_medium_is_the_cd_drive_holding_this_image() {
        let tmp = tempfile::tempdir().unwrap();
        let (sys, dev) = (tmp.path().join("sys"), tmp.path().join("dev"));
        let head = |id: &str| {
            let mut head = vec![0u8; identity::HEAD_BYTES];
            head[32769..32774].copy_from_slice(b"CD001");
            let mark = format!("{}{id}", identity::IMAGE_MARK);
            let at = identity::IMAGE_MARK_OFFSET;
            head[at..at + mark.len()].copy_from_slice(mark.as_bytes());
            head
        };
        std::fs::create_dir_all(&dev).unwrap();
        for (name, kind, id) in [
            ("sda", "0", "feedface"),
            ("sr0", "5", "other"),
            ("sr1", "5", "feedface"),
        ] {
            std::fs::create_dir_all(sys.join(name).join("device")).unwrap();
            std::fs::write(sys.join(name).join("device/type"), format!("{kind}\n")).unwrap();
            std::fs::write(dev.join(name), head(id)).unwrap();
        }
        assert_eq!(
            optical_medium(&sys, &dev, "feedface"),
            Some(dev.join("sr1"))
        );
        assert_eq!(optical_medium(&sys, &dev, "cafe"), None);
    }
}
