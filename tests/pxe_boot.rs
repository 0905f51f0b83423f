//! Network boot of the PXE tree under QEMU (TCG), with QEMU's user networking
//! serving it over TFTP: BIOS via pxelinux, UEFI via shim + grubnetx64 (with and
//! without Secure Boot), and iPXE. A MAC listed in the preset's `[[hosts]]` gets
//! its own arguments (`failback.host=rack1-07`); another MAC gets the defaults.

mod common;

use common::{Vm, need_qemu, ovmf_args};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

const LISTED: &str = "52:54:00:aa:bb:07";
const UNLISTED: &str = "52:54:00:aa:bb:99";

/// One PXE tree for all tests, built with a preset that lists one host.
fn tree() -> &'static PathBuf {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("failback-pxe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let preset = dir.join("failback.toml");
        std::fs::write(
            &preset,
            format!("[[hosts]]\nmac = \"{LISTED}\"\nname = \"rack1-07\"\n"),
        )
        .unwrap();
        let out = dir.join("out");
        common::build_into(
            &out,
            &[
                "--config",
                preset.to_str().unwrap(),
                "--append",
                "failback.progress=json failback.after=poweroff",
            ],
        );
        out.join("pxe")
    })
}

enum Mode {
    Pxelinux,
    Uefi { secure: bool },
    Ipxe,
}

/// Boots over the network and returns the client's `boot` event.
fn boot(mode: Mode, mac: &str) -> serde_json::Value {
    let tftp = tree();
    let scratch = tempfile::tempdir().unwrap();
    let bootfile = match mode {
        Mode::Pxelinux => "pxelinux.0",
        Mode::Uefi { .. } => "bootx64.efi",
        Mode::Ipxe => "boot.ipxe",
    };
    let netdev = format!("user,id=n0,tftp={},bootfile={bootfile}", tftp.display());
    let mut args: Vec<String> = vec!["-m".into(), "1024".into(), "-netdev".into(), netdev];
    match mode {
        // SeaBIOS boots through the NIC's iPXE ROM.
        Mode::Pxelinux | Mode::Ipxe => args.extend([
            "-device".into(),
            format!("e1000,netdev=n0,mac={mac}"),
            "-boot".into(),
            "n".into(),
        ]),
        // OVMF's own network stack (no option ROM: QEMU's iPXE EFI ROMs are unsigned).
        Mode::Uefi { secure } => {
            args.extend(ovmf_args(scratch.path(), secure));
            args.extend([
                "-device".into(),
                format!("virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=0"),
            ]);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vm = Vm::start(&args);
    let (event, at) = vm.event("boot", Duration::from_secs(240));
    eprintln!("boot event {at:.1} s after QEMU started");
    event
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn bios_pxelinux_gives_a_listed_host_its_arguments() {
    need_qemu();
    let event = boot(Mode::Pxelinux, LISTED);
    assert_eq!(event["host"], "rack1-07", "{event}");
    assert_eq!(event["secure_boot"], false);
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn bios_pxelinux_gives_an_unlisted_host_the_defaults() {
    need_qemu();
    let event = boot(Mode::Pxelinux, UNLISTED);
    assert!(event.get("host").is_none(), "{event}");
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn uefi_shim_and_network_grub() {
    need_qemu();
    let event = boot(Mode::Uefi { secure: false }, LISTED);
    assert_eq!(event["host"], "rack1-07", "{event}");
    assert_eq!(event["secure_boot"], false);
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn uefi_secure_boot_enforced() {
    need_qemu();
    let event = boot(Mode::Uefi { secure: true }, LISTED);
    assert_eq!(event["host"], "rack1-07", "{event}");
    assert_eq!(event["secure_boot"], true);
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn ipxe_script_selects_the_host_by_mac() {
    need_qemu();
    assert_eq!(boot(Mode::Ipxe, LISTED)["host"], "rack1-07");
    assert!(boot(Mode::Ipxe, UNLISTED).get("host").is_none());
}
