//! No reboot loop (issue #15 item 1): after an unattended pull with `after = reboot`,
//! the failback medium stays first in the boot order, as a BMC's virtual CD or a USB
//! stick does on a real server, and QEMU is allowed to reboot. The next boot must
//! be the recovered system's: under SeaBIOS because the client ejected its CD, under
//! OVMF because it set `BootNext` to the recovered disk. And a boot that finds the
//! disk already recovered, its medium still in, must not reboot at all.
//!
//! QEMU closes a tray the guest opened when the machine resets, the disc still in
//! (a real drive's tray stays open; a BMC detaches its virtual disc): the test plays
//! the drive's part over QMP and takes the disc out when, and only when, the guest
//! opened the tray (`common::take_out_ejected_disc`).
//!
//! The recovered system is an image built by failback itself with the stand-in init
//! (examples/recovered_init.rs: prints `RECOVERED <disk> sha256=...` and powers off),
//! as in tests/e2e_failback.rs; it boots from a disk under BIOS (isohdpfx, isolinux)
//! and UEFI (its ESP's `\EFI\BOOT\BOOTX64.EFI`: shim, then GRUB).

mod common;

use common::{BS, Firmware, Scenario, Seen, Vm, firmware_args, mutate, need_qemu};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;

const MIB: usize = 1 << 20;
const LONG: Duration = Duration::from_secs(600);

/// One host: the served "system" volume (the recovered image, then random bytes),
/// its NVMe disk, and failback's image with a preset that pulls unattended and reboots.
struct Host {
    served: Scenario,
    system: Vec<u8>,
    nvme: PathBuf,
    iso: PathBuf,
}

impl Host {
    /// `recovered`: the NVMe disk already holds the volume; else a quarter of its
    /// blocks are older (block 0, the partition tables, is the same: the disk is
    /// mapped by its GPT GUID).
    fn new(recovered: bool) -> Host {
        let (system, _) = common::recovered_system(64 * MIB, 21);

        let served = Scenario::serve(&[("system", &system)]);
        let old = if recovered {
            system.clone()
        } else {
            let changed: Vec<usize> = (1..system.len() / BS).filter(|b| b % 4 == 1).collect();
            mutate(&system, &changed, 22)
        };
        let nvme = served.disk("nvme.img", &old);
        let iso =
            served.build_preset_iso("unattended = true\nafter = \"reboot\"\nprogress = \"json\"\n");
        Host {
            iso,
            served,
            system,
            nvme,
        }
    }

    /// The machine: `firmware`, the NVMe disk second in the boot order, and the
    /// failback image first: a CD (`ide-cd`) or a USB stick (`usb-storage`).
    fn args(&self, firmware: Firmware, stick: bool) -> Vec<String> {
        let mut a = firmware_args(firmware, self.served.path());
        if firmware == Firmware::Bios {
            a.extend(["-machine".into(), "q35".into()]);
        }
        a.extend(
            [
                "-m",
                "512",
                "-device",
                "virtio-rng-pci",
                "-nic",
                "user,model=virtio-net-pci",
            ]
            .map(String::from),
        );
        a.extend([
            "-drive".into(),
            format!("if=none,id=nvme,format=raw,file={}", self.nvme.display()),
            "-device".into(),
            "nvme,drive=nvme,serial=FAILBACK-NVME,bootindex=1".into(),
        ]);
        let medium = if stick {
            a.extend(["-device".into(), "qemu-xhci,id=xhci".into()]);
            "usb-storage,bus=xhci.0,drive=medium,bootindex=0"
        } else {
            "ide-cd,drive=medium,bus=ide.0,bootindex=0,id=cd"
        };
        let media = if stick { "disk" } else { "cdrom" };
        a.extend([
            "-drive".into(),
            format!(
                "if=none,id=medium,media={media},readonly=on,format=raw,file={}",
                self.iso.display()
            ),
            "-device".into(),
            medium.into(),
        ]);
        a
    }

    /// Boots failback with reboots allowed and follows it through its pull and
    /// reboot to the recovered system's word; returns the notices failback gave.
    fn fail_back_and_reboot(&self, firmware: Firmware, stick: bool) -> Vec<String> {
        let mut args = self.args(firmware, stick);
        let qmp = self.served.path().join("qmp.sock");
        args.extend(common::qmp_args(&qmp));
        let drive = common::take_out_ejected_disc(&qmp, "cd");
        let mut vm = Vm::start_rebooting(&args);
        let (done, _) = vm.event("done", LONG);
        assert!(done["pulled_blocks"].as_u64().unwrap() > 0, "{done}");
        let line = vm.recovered_line(LONG);
        assert!(
            vm.wait_exit(Duration::from_secs(120)).success(),
            "the recovered system powers off"
        );
        let events = vm.events_seen();
        let boots = events.iter().filter(|e| e["event"] == "boot").count();
        assert_eq!(boots, 1, "failback booted once:\n{}", vm.log());
        let digest = line.split("sha256=").nth(1).unwrap_or_default().trim();
        assert_eq!(digest, hex::encode(Sha256::digest(&self.system)), "{line}");
        assert_eq!(
            drive.join().unwrap(),
            !stick,
            "the CD's tray opened (the stick has none)"
        );
        events
            .iter()
            .filter(|e| e["event"] == "notice")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn bios_with_the_cd_first_boots_the_recovered_system_after_failback_ejects_it() {
    need_qemu();
    let host = Host::new(false);
    let notices = host.fail_back_and_reboot(Firmware::Bios, false);
    assert!(
        notices.iter().any(|n| n.starts_with("ejected /dev/sr0")),
        "{notices:?}"
    );
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn uefi_with_a_usb_stick_first_boots_the_recovered_system_through_boot_next() {
    need_qemu();
    let host = Host::new(false);
    let notices = host.fail_back_and_reboot(Firmware::Uefi, true);
    assert!(
        notices.iter().any(|n| n.starts_with("BootNext = Boot")
            && n.contains("a new entry for \\EFI\\BOOT\\BOOTX64.EFI on /dev/nvme0n1")),
        "{notices:?}"
    );
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn a_boot_that_finds_the_disk_recovered_waits_instead_of_rebooting() {
    need_qemu();
    let host = Host::new(true);
    // QEMU's -no-reboot: a reboot would end it.
    let mut vm = Vm::start(&host.args(Firmware::Bios, false));
    let (found, _) = vm.event("already_recovered", LONG);
    assert_eq!(found["volumes"]["system"], "/dev/nvme0n1", "{found}");
    assert_eq!(found["boot_medium"], "/dev/sr0", "{found}");
    let seen = vm.watch(
        "none",
        &["failback: type 'reboot'"],
        Duration::from_secs(60),
    );
    assert!(matches!(seen, Seen::Text(_)), "it waits for the operator");
    std::thread::sleep(Duration::from_secs(5));
    // The agent (the pull's collector) was told too: a fleet's screen shows why the host
    // waits (the report drains for up to 5 s after the pull).
    let told = "already recovered (system = /dev/nvme0n1): waiting for the operator";
    let agent = host.served.agent.output();
    assert!(agent.contains(told), "the agent was told:\n{agent}");
    assert!(vm.running(), "no reboot:\n{}", vm.log());
    let events = vm.events_seen();
    let done = events.iter().find(|e| e["event"] == "done").unwrap();
    assert_eq!(done["pulled_blocks"], 0, "{done}");
}
