//! UEFI state as the firmware reports it through efivarfs, and the boot variables
//! failback sets before it reboots (`Boot####`, `BootNext`).

use super::load_option::LoadOption;
use std::io::Write;
use std::path::{Path, PathBuf};

const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// EFI_GLOBAL_VARIABLE GUID (UEFI spec 2.10, section 3.3).
const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS: what boot variables carry.
const NV_BS_RT: u32 = 7;

/// Whether the firmware booted us with Secure Boot enforced. `load_module` is
/// asked for `efivarfs` when the filesystem is not yet available.
pub fn secure_boot(load_module: impl FnOnce(&str)) -> bool {
    if !Path::new("/sys/firmware/efi").exists() {
        return false; // BIOS boot
    }
    load_module("efivarfs");
    let _ = nix::mount::mount(
        Some("efivarfs"),
        EFIVARS,
        Some("efivarfs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    );
    Vars::new(EFIVARS)
        .read("SecureBoot")
        .is_ok_and(|v| v.first() == Some(&1))
}

/// The firmware's global variables, as files of efivarfs (mounted by [`secure_boot`]).
pub struct Vars {
    dir: PathBuf,
}

impl Vars {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Vars { dir: dir.into() }
    }

    /// The system's variables; `None` under BIOS or when efivarfs is not mounted.
    pub fn system() -> Option<Self> {
        let vars = Vars::new(EFIVARS);
        vars.dir
            .join(format!("BootCurrent-{GLOBAL}"))
            .exists()
            .then_some(vars)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-{GLOBAL}"))
    }

    /// A variable's value: efivarfs files hold 4 bytes of attributes, then the value.
    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        let raw = std::fs::read(self.path(name))?;
        Ok(raw.get(4..).unwrap_or_default().to_vec())
    }

    /// Sets a variable: attributes and value in one write (efivarfs takes no other).
    fn write(&self, name: &str, value: &[u8]) -> std::io::Result<()> {
        let mut raw = NV_BS_RT.to_le_bytes().to_vec();
        raw.extend_from_slice(value);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            // A write replaces an efivarfs variable whole; it has no truncation.
            .truncate(false)
            .open(self.path(name))?;
        let written = file.write(&raw)?;
        if written != raw.len() {
            return Err(std::io::Error::other(format!(
                "{name}: {written} of {} bytes written",
                raw.len()
            )));
        }
        Ok(())
    }

    /// The `Boot####` entries that read as load options: those in `BootOrder` first,
    /// in its order, then the others by number.
    pub fn boot_options(&self) -> Vec<(u16, LoadOption)> {
        let order: Vec<u16> = self
            .read("BootOrder")
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let mut numbers: Vec<u16> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| boot_number(&e.file_name().to_string_lossy()))
            .collect();
        numbers.sort_by_key(|n| (order.iter().position(|o| o == n).unwrap_or(usize::MAX), *n));
        numbers
            .into_iter()
            .filter_map(|n| {
                let raw = self.read(&boot_name(n)).ok()?;
                Some((n, LoadOption::decode(&raw).ok()?))
            })
            .collect()
    }

    /// Writes `option` as the first free `Boot####`; returns its number.
    pub fn add_boot_option(&self, option: &LoadOption) -> std::io::Result<u16> {
        let value = option.encode().map_err(std::io::Error::other)?;
        let free = (0..=u16::MAX)
            .find(|&n| !self.path(&boot_name(n)).exists())
            .ok_or_else(|| std::io::Error::other("every Boot#### is taken"))?;
        self.write(&boot_name(free), &value)?;
        Ok(free)
    }

    /// The next boot (this one only) is `Boot{number}`.
    pub fn set_boot_next(&self, number: u16) -> std::io::Result<()> {
        self.write("BootNext", &number.to_le_bytes())
    }

    /// `BootNext`, if set.
    #[cfg(test)]
    pub fn boot_next(&self) -> Option<u16> {
        let raw = self.read("BootNext").ok()?;
        Some(u16::from_le_bytes(raw.get(..2)?.try_into().ok()?))
    }
}

/// `Boot0004` for 4.
pub fn boot_name(number: u16) -> String {
    format!("Boot{number:04X}")
}

/// 4 for the file name `Boot0004-<GUID>` (and not for `BootOrder-...`).
fn boot_number(file: &str) -> Option<u16> {
    let hex = file
        .strip_prefix("Boot")?
        .strip_suffix(GLOBAL)?
        .strip_suffix('-')?;
    (hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u16::from_str_radix(hex, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::load_option::Node;

    #[test]
    fn reads_the_value_after_the_attributes() {
        let tmp = tempfile::tempdir().unwrap();
        let vars = Vars::new(tmp.path());
        let file = tmp.path().join(format!("SecureBoot-{GLOBAL}"));
        std::fs::write(&file, [0x06, 0, 0, 0, 1]).unwrap();
        assert_eq!(vars.read("SecureBoot").unwrap(), [1]);
        std::fs::write(&file, [0x06, 0, 0, 0]).unwrap();
        assert!(vars.read("SecureBoot").unwrap().is_empty());
    }

    #[test]
    fn boot_entries_are_listed_in_boot_order_and_added_at_the_first_free_number() {
        let tmp = tempfile::tempdir().unwrap();
        let vars = Vars::new(tmp.path());
        let option = |name: &str| LoadOption::new(name, vec![Node::File("\\x".into())]);
        for (n, name) in [(0u16, "zero"), (1, "one"), (3, "three")] {
            vars.write(&boot_name(n), &option(name).encode().unwrap())
                .unwrap();
        }
        vars.write("BootOrder", &[3, 0, 1, 0]).unwrap();
        // Not an entry: skipped.
        std::fs::write(vars.path("Boot0009"), [7, 0, 0, 0, 1]).unwrap();
        let listed: Vec<(u16, String)> = vars
            .boot_options()
            .into_iter()
            .map(|(n, o)| (n, o.description))
            .collect();
        assert_eq!(
            listed,
            [(3, "three".into()), (1, "one".into()), (0, "zero".into())]
        );

        let added = vars.add_boot_option(&option("new")).unwrap();
        assert_eq!(added, 2);
        let raw = std::fs::read(vars.path("Boot0002")).unwrap();
        assert_eq!(raw[..4], [7, 0, 0, 0], "NV | BS | RT");
        assert_eq!(LoadOption::decode(&raw[4..]).unwrap(), option("new"));

        assert_eq!(vars.boot_next(), None);
        vars.set_boot_next(0x1a).unwrap();
        assert_eq!(
            std::fs::read(vars.path("BootNext")).unwrap(),
            [7, 0, 0, 0, 0x1a, 0]
        );
        assert_eq!(vars.boot_next(), Some(0x1a));
    }

    #[test]
    fn boot_numbers_are_four_hex_digits() {
        assert_eq!(boot_number(&format!("Boot000A-{GLOBAL}")), Some(10));
        assert_eq!(boot_number(&format!("BootOrder-{GLOBAL}")), None);
        assert_eq!(boot_number(&format!("BootNext-{GLOBAL}")), None);
        assert_eq!(
            boot_number("Boot0001-00000000-0000-0000-0000-000000000000"),
            None
        );
        assert_eq!(boot_name(0xbeef), "BootBEEF");
    }
}
