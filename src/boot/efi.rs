//! UEFI state as the firmware reports it through efivarfs.

use std::path::Path;

const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// EFI_GLOBAL_VARIABLE GUID (UEFI spec 2.10, section 3.3).
const SECURE_BOOT_VAR: &str = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

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
    std::fs::read(Path::new(EFIVARS).join(SECURE_BOOT_VAR)).is_ok_and(|v| secure_boot_value(&v))
}

/// efivarfs files hold 4 bytes of attributes, then the value: one byte, 1 = on.
fn secure_boot_value(raw: &[u8]) -> bool {
    raw.get(4) == Some(&1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_value_after_the_attributes() {
        assert!(secure_boot_value(&[0x06, 0, 0, 0, 1]));
        assert!(!secure_boot_value(&[0x06, 0, 0, 0, 0]));
        assert!(!secure_boot_value(&[0x06, 0, 0, 0]));
    }
}
