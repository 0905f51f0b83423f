//! Boots failback.iso under QEMU (TCG) in every way operators present it: BIOS and UEFI,
//! CD-ROM and USB stick, UEFI with Secure Boot enforced, and a q35 VM whose only boot
//! device is a SATA CD-ROM. Each boot must reach the client's `boot` and `disks` events.
//!
//! The ISO is built once per run by the `failback` under test, with the static client of
//! scripts/build.sh and kernel arguments that make the client print JSON and power off.

mod common;

use common::{Firmware, Medium, Seen, Vm, build_into, inputs_dir, need_qemu, qemu_args};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const APPEND: &str = "failback.progress=json failback.after=poweroff";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("iso_boot")
}

/// The ISO under test, built once.
fn test_iso() -> &'static Path {
    static ISO: OnceLock<PathBuf> = OnceLock::new();
    ISO.get_or_init(|| {
        let out = scratch().join("out");
        build_into(&out, &["--append", APPEND]);
        out.join("failback.iso")
    })
}

/// Boots `iso` and returns (boot event, seconds to it, disks event).
fn boot(
    name: &str,
    iso: &Path,
    firmware: Firmware,
    medium: Medium,
) -> (serde_json::Value, f64, serde_json::Value) {
    let vars = tempfile::tempdir().unwrap();
    let mut vm = Vm::start(&qemu_args(iso, firmware, medium, vars.path()));
    let (boot, at) = vm.event("boot", BOOT_TIMEOUT);
    eprintln!("{name}: boot event {at:.1} s after QEMU started");
    let (disks, _) = vm.event("disks", BOOT_TIMEOUT);
    (boot, at, disks)
}

/// The stick the image was booted from shows up as a disk of the image's size, marked
/// as the boot medium (by the image id `failback build` wrote), and no other disk is.
fn assert_medium_listed(disks: &serde_json::Value, iso: &Path) {
    let size = std::fs::metadata(iso).unwrap().len();
    let list = disks["disks"].as_array().expect("disks list");
    let medium: Vec<&serde_json::Value> =
        list.iter().filter(|d| d["boot_medium"] == true).collect();
    assert!(
        medium.len() == 1 && medium[0]["size"].as_u64() == Some(size),
        "one boot medium, of {size} bytes (the ISO), in {list:?}"
    );
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn bios_cdrom() {
    need_qemu();
    let (boot, _, _) = self::boot("bios_cdrom", test_iso(), Firmware::Bios, Medium::Cdrom);
    assert_eq!(boot["secure_boot"], false);
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn uefi_cdrom() {
    need_qemu();
    let (boot, _, _) = self::boot("uefi_cdrom", test_iso(), Firmware::Uefi, Medium::Cdrom);
    assert_eq!(boot["secure_boot"], false);
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn bios_usb_stick() {
    need_qemu();
    let iso = test_iso();
    let (boot, _, disks) = self::boot("bios_usb_stick", iso, Firmware::Bios, Medium::UsbStick);
    assert_eq!(boot["secure_boot"], false);
    assert_medium_listed(&disks, iso);
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn uefi_usb_stick() {
    need_qemu();
    let iso = test_iso();
    // Beside the stick, a disk holding another failback image (another id): GRUB must
    // boot the stick's own volume, not the first one with /.disk/info.
    let decoy_out = scratch().join("decoy");
    let preset = scratch().join("decoy.toml");
    std::fs::write(&preset, "progress = \"json\"\n").unwrap();
    build_into(
        &decoy_out,
        &[
            "--config",
            preset.to_str().unwrap(),
            "--append",
            "failback.host=DECOY",
        ],
    );
    let vars = tempfile::tempdir().unwrap();
    let mut args = qemu_args(iso, Firmware::Uefi, Medium::UsbStick, vars.path());
    args.extend([
        "-drive".into(),
        format!(
            "if=none,id=decoy,format=raw,readonly=on,file={}",
            decoy_out.join("failback.iso").display()
        ),
        "-device".into(),
        "virtio-blk-pci,drive=decoy".into(),
    ]);
    let mut vm = Vm::start(&args);
    let (boot, at) = vm.event("boot", BOOT_TIMEOUT);
    eprintln!("uefi_usb_stick: boot event {at:.1} s after QEMU started");
    assert_eq!(boot["secure_boot"], false);
    assert_ne!(boot["host"], "DECOY", "GRUB booted the other disk's image");
    let (disks, _) = vm.event("disks", BOOT_TIMEOUT);
    assert_medium_listed(&disks, iso);
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn secure_boot_cdrom() {
    need_qemu();
    let (boot, _, _) = self::boot(
        "secure_boot_cdrom",
        test_iso(),
        Firmware::SecureBoot,
        Medium::Cdrom,
    );
    assert_eq!(boot["secure_boot"], true, "client must see Secure Boot on");
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn secure_boot_usb_stick() {
    need_qemu();
    let (boot, _, _) = self::boot(
        "secure_boot_usb_stick",
        test_iso(),
        Firmware::SecureBoot,
        Medium::UsbStick,
    );
    assert_eq!(boot["secure_boot"], true, "client must see Secure Boot on");
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn q35_sata_cdrom_only() {
    need_qemu();
    let (boot, _, _) = self::boot(
        "q35_sata_cdrom_only",
        test_iso(),
        Firmware::Bios,
        Medium::SataCdOnly,
    );
    assert_eq!(boot["secure_boot"], false);
}

/// The same firmware refuses a kernel whose signature no longer matches: enforcement is real.
#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn secure_boot_refuses_a_modified_kernel() {
    need_qemu();
    let inputs = inputs_dir();
    let found = failback::build::inputs::locate_kernel(&inputs, None, None).unwrap();
    let (kernel, version) = (found.image, found.version);
    let dir = scratch().join("unsigned");
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = std::fs::read(&kernel).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF; // in the compressed payload: the Authenticode hash no longer matches
    let modified = dir.join("vmlinuz-modified");
    std::fs::write(&modified, bytes).unwrap();
    let modules = inputs.join("lib/modules").join(&version);
    let out = dir.join("out");
    build_into(
        &out,
        &[
            "--append",
            APPEND,
            "--kernel",
            modified.to_str().unwrap(),
            "--modules",
            modules.to_str().unwrap(),
        ],
    );
    let vars = tempfile::tempdir().unwrap();
    let mut vm = Vm::start(&qemu_args(
        &out.join("failback.iso"),
        Firmware::SecureBoot,
        Medium::Cdrom,
        vars.path(),
    ));
    // Debian's GRUB asks shim to verify the kernel and stops with this message.
    match vm.watch(
        "boot",
        &["bad shim signature", "invalid signature", "Access Denied"],
        BOOT_TIMEOUT,
    ) {
        Seen::Text(t) => eprintln!("modified kernel refused: {t:?}"),
        Seen::Event(..) => panic!("a modified kernel booted under Secure Boot:\n{}", vm.log()),
    }
}
