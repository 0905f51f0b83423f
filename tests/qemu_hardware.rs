//! The hardware matrix of issue #5 under QEMU (TCG, 512 MiB): each NIC model
//! gets its driver loaded and a DHCP lease from QEMU's user networking; each
//! storage controller gets its driver loaded and its disk reported with its
//! exact size. A NIC needs a VM of its own (one DHCP per link); the storage
//! controllers ride along, two or three per VM, each disk with a size no other
//! disk has (an odd number of MiB), so a size proves which controller it sits on.

mod common;

use common::{Vm, disk_image, need_qemu, out_dir};
use std::path::Path;
use std::time::Duration;

/// A storage controller of the matrix and what must come of it.
#[derive(Clone, Copy)]
enum Controller {
    /// ich9-ahci + ide-hd
    Ahci,
    Nvme,
    VirtioBlk,
    /// virtio-scsi-pci + scsi-hd
    VirtioScsi,
    /// LSI MegaRAID SAS 1078 + scsi-hd
    Megasas,
    /// LSI MegaRAID SAS 2108 + scsi-hd
    MegasasGen2,
    /// LSI SAS 1068 + scsi-hd with a SAS address (`wwn`)
    Mptsas1068,
    /// LSI 53c895a (SCSI) + scsi-hd
    Lsi53c895a,
    /// VMware PVSCSI + scsi-hd
    Pvscsi,
    /// qemu-xhci + usb-storage
    UsbStorageXhci,
    /// usb-ehci + usb-storage
    UsbStorageEhci,
    /// qemu-xhci + usb-uas + scsi-hd
    UsbUas,
}

impl Controller {
    /// QEMU arguments for controller number `n` with the disk image `disk`.
    fn args(self, n: usize, disk: &Path) -> Vec<String> {
        let drive = format!("d{n}");
        let mut args = vec![
            "-drive".to_string(),
            format!("if=none,id={drive},format=raw,file={}", disk.display()),
        ];
        let scsi = |hba: &str| {
            vec![
                format!("{hba},id=c{n}"),
                format!("scsi-hd,drive={drive},bus=c{n}.0"),
            ]
        };
        let devices = match self {
            Self::Ahci => vec![
                format!("ich9-ahci,id=c{n}"),
                format!("ide-hd,drive={drive},bus=c{n}.0"),
            ],
            Self::Nvme => vec![format!("nvme,drive={drive},serial=NVME{n}")],
            Self::VirtioBlk => vec![format!("virtio-blk-pci,drive={drive}")],
            Self::VirtioScsi => scsi("virtio-scsi-pci"),
            Self::Megasas => scsi("megasas"),
            Self::MegasasGen2 => scsi("megasas-gen2"),
            // QEMU's mptsas1068 reports a disk's `wwn` as its SAS address (0 when
            // unset), and Linux's mptsas forms no port for a phy whose attached SAS
            // address is 0 (mptsas_setup_wide_ports), so it never adds the disk.
            // Real SAS disks always have one.
            Self::Mptsas1068 => vec![
                format!("mptsas1068,id=c{n}"),
                format!(
                    "scsi-hd,drive={drive},bus=c{n}.0,wwn=0x{:016x}",
                    0x5000_c500_0000_0001_u64 + n as u64
                ),
            ],
            Self::Lsi53c895a => scsi("lsi53c895a"),
            Self::Pvscsi => scsi("pvscsi"),
            Self::UsbStorageXhci => vec![
                format!("qemu-xhci,id=c{n}"),
                format!("usb-storage,drive={drive},bus=c{n}.0"),
            ],
            Self::UsbStorageEhci => vec![
                format!("usb-ehci,id=c{n}"),
                format!("usb-storage,drive={drive},bus=c{n}.0"),
            ],
            Self::UsbUas => vec![
                format!("qemu-xhci,id=c{n}"),
                format!("usb-uas,id=u{n},bus=c{n}.0"),
                format!("scsi-hd,drive={drive},bus=u{n}.0"),
            ],
        };
        for d in devices {
            args.extend(["-device".to_string(), d]);
        }
        args
    }

    /// The modules that must have been loaded for it.
    fn modules(self) -> &'static [&'static str] {
        match self {
            Self::Ahci => &["ahci", "sd_mod"],
            Self::Nvme => &["nvme"],
            Self::VirtioBlk => &["virtio_pci", "virtio_blk"],
            Self::VirtioScsi => &["virtio_pci", "virtio_scsi", "sd_mod"],
            Self::Megasas | Self::MegasasGen2 => &["megaraid_sas", "sd_mod"],
            Self::Mptsas1068 => &["mptsas", "sd_mod"],
            Self::Lsi53c895a => &["sym53c8xx", "sd_mod"],
            Self::Pvscsi => &["vmw_pvscsi", "sd_mod"],
            Self::UsbStorageXhci => &["xhci_pci", "usb_storage", "sd_mod"],
            Self::UsbStorageEhci => &["ehci_pci", "usb_storage", "sd_mod"],
            Self::UsbUas => &["xhci_pci", "uas", "sd_mod"],
        }
    }

    /// How the kernel names its disk.
    fn disk_prefix(self) -> &'static str {
        match self {
            Self::Nvme => "nvme",
            Self::VirtioBlk => "vd",
            _ => "sd",
        }
    }
}

/// One VM of the matrix: a NIC model and the controllers that ride along.
struct Case {
    /// QEMU's NIC model, the module that drives it, its MAC; `None`: no NIC
    /// (then the check ends with the disks).
    nic: Option<(&'static str, &'static str, &'static str)>,
    controllers: &'static [Controller],
    /// The disk of the first controller has this many MiB, the next +2, ...
    first_mib: u64,
}

fn loaded(drivers: &serde_json::Value) -> Vec<String> {
    drivers["loaded"]
        .as_array()
        .unwrap_or_else(|| panic!("drivers event without 'loaded': {drivers}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn run(case: &Case) {
    need_qemu();
    let out = out_dir();
    let tmp = tempfile::tempdir().unwrap();
    let nic = match case.nic {
        Some((model, _, mac)) => format!("user,model={model},mac={mac}"),
        None => "none".to_string(),
    };
    let mut args: Vec<String> = vec![
        "-device".into(),
        "virtio-rng-pci".into(),
        "-nic".into(),
        nic,
    ];
    let mut expected = Vec::new();
    for (n, controller) in case.controllers.iter().enumerate() {
        let mib = case.first_mib + 2 * n as u64;
        let disk = disk_image(tmp.path(), &format!("disk{n}.img"), mib << 20);
        args.extend(controller.args(n, &disk));
        expected.push((*controller, mib << 20));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vm = common::boot_kernel(
        &out,
        "console=ttyS0 failback.progress=json failback.after=poweroff",
        &args,
    );
    check(&mut vm, case, &expected);
}

fn check(vm: &mut Vm, case: &Case, expected: &[(Controller, u64)]) {
    let vm_name = case.nic.map_or("no NIC", |n| n.0);
    let (drivers, at) = vm.event("drivers", Duration::from_secs(180));
    eprintln!("{vm_name}: drivers at {at:.1} s: {drivers}");
    let loaded = loaded(&drivers);
    let mut wanted = vec!["virtio_rng"];
    wanted.extend(case.nic.map(|n| n.1));
    for (controller, _) in expected {
        wanted.extend(controller.modules());
    }
    for module in wanted {
        assert!(
            loaded.iter().any(|m| m == module),
            "{}: {module} not loaded: {drivers}\n{}",
            vm_name,
            vm.log()
        );
    }
    assert_eq!(
        drivers["failed"],
        serde_json::json!([]),
        "{vm_name}: modules failed to load"
    );

    let (disks, at) = vm.event("disks", Duration::from_secs(60));
    eprintln!("{vm_name}: disks at {at:.1} s: {disks}");
    let disks = disks["disks"].as_array().unwrap();
    for (controller, size) in expected {
        let disk = disks
            .iter()
            .find(|d| d["size"] == *size)
            .unwrap_or_else(|| {
                panic!(
                    "{}: no disk of {size} bytes (behind {:?}) in {disks:?}\n{}",
                    vm_name,
                    controller.modules(),
                    vm.log()
                )
            });
        let name = disk["name"].as_str().unwrap();
        assert!(
            name.starts_with(controller.disk_prefix()),
            "{}: the {size}-byte disk is {name}, not {}*",
            vm_name,
            controller.disk_prefix()
        );
    }
    assert_eq!(
        disks.len(),
        expected.len(),
        "exactly the attached disks: {disks:?}"
    );

    if let Some((model, _, mac)) = case.nic {
        let (net, at) = vm.event("network", Duration::from_secs(120));
        eprintln!("{model}: network at {at:.1} s: {net}");
        assert_eq!(net["mac"], mac, "{model}: {net}");
        assert_eq!(net["method"], "dhcp");
        assert_eq!(net["address"], "10.0.2.15/24", "{model}: {net}");
        assert_eq!(net["gateway"], "10.0.2.2");
    }
    vm.drain();
    assert!(!vm.log().contains("Kernel panic"), "{}", vm.log());
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn e1000_with_ahci_and_megasas() {
    run(&Case {
        nic: Some(("e1000", "e1000", "52:54:00:5e:00:01")),
        controllers: &[Controller::Ahci, Controller::Megasas],
        first_mib: 33,
    });
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn e1000e_with_nvme_and_megasas_gen2() {
    run(&Case {
        nic: Some(("e1000e", "e1000e", "52:54:00:5e:00:02")),
        controllers: &[Controller::Nvme, Controller::MegasasGen2],
        first_mib: 37,
    });
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn virtio_net_with_virtio_blk_and_virtio_scsi() {
    run(&Case {
        nic: Some(("virtio-net-pci", "virtio_net", "52:54:00:5e:00:03")),
        controllers: &[Controller::VirtioBlk, Controller::VirtioScsi],
        first_mib: 41,
    });
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn vmxnet3_with_pvscsi_and_lsi53c895a() {
    run(&Case {
        nic: Some(("vmxnet3", "vmxnet3", "52:54:00:5e:00:04")),
        controllers: &[Controller::Pvscsi, Controller::Lsi53c895a],
        first_mib: 45,
    });
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn rtl8139_with_usb_storage_on_xhci_and_ehci_and_uas() {
    // QEMU's rtl8139 is a C+ chip (revision 0x20): 8139cp drives it.
    run(&Case {
        nic: Some(("rtl8139", "8139cp", "52:54:00:5e:00:05")),
        controllers: &[
            Controller::UsbStorageXhci,
            Controller::UsbStorageEhci,
            Controller::UsbUas,
        ],
        first_mib: 49,
    });
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn mptsas1068() {
    run(&Case {
        nic: None,
        controllers: &[Controller::Mptsas1068],
        first_mib: 55,
    });
}
