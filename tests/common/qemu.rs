//! QEMU itself and its arguments: the firmware (SeaBIOS, OVMF with or without Secure
//! Boot), how the ISO is presented (CD-ROM, USB stick, SATA CD-ROM alone), and a
//! direct kernel + initramfs boot.

use super::vm::Vm;
use std::path::Path;
use std::process::Command;

/// Fails, with the install line, when QEMU is not installed: a QEMU test that did not
/// boot never reports a pass. These tests are `#[ignore]`d: `scripts/test.sh` runs them.
pub fn need_qemu() {
    let found = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "qemu-system-x86_64 is not installed: apt-get install qemu-system-x86 ovmf (scripts/test.sh does)"
    );
}

/// QEMU arguments for OVMF (q35), with a fresh copy of the variable store in
/// `dir`; `secure`: Microsoft keys enrolled and Secure Boot enforced.
pub fn ovmf_args(dir: &Path, secure: bool) -> Vec<String> {
    let (code, vars, machine) = if secure {
        ("OVMF_CODE_4M.ms.fd", "OVMF_VARS_4M.ms.fd", "q35,smm=on")
    } else {
        ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd", "q35")
    };
    let copy = dir.join(vars);
    std::fs::copy(format!("/usr/share/OVMF/{vars}"), &copy)
        .unwrap_or_else(|e| panic!("OVMF is needed (apt-get install ovmf): {vars}: {e}"));
    let mut args = vec!["-machine".to_string(), machine.to_string()];
    if secure {
        args.extend([
            "-global".into(),
            "driver=cfi.pflash01,property=secure,value=on".into(),
        ]);
    }
    args.extend([
        "-drive".into(),
        format!("if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/{code}"),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", copy.display()),
    ]);
    args
}

/// Boots the kernel and initramfs of `out/pxe` directly (QEMU's -kernel/-initrd)
/// with 512 MiB and the kernel command line `append`, plus `extra` arguments.
pub fn boot_kernel(out: &Path, append: &str, extra: &[&str]) -> Vm {
    Vm::start(&kernel_args(out, append, extra))
}

/// The QEMU arguments of [`boot_kernel`], for VMs started another way.
pub fn kernel_args(out: &Path, append: &str, extra: &[&str]) -> Vec<String> {
    let file = |name: &str| out.join("pxe").join(name).display().to_string();
    let mut args = vec!["-m".into(), "512".into(), "-kernel".into(), file("vmlinuz")];
    args.extend([
        "-initrd".into(),
        file("initrd.img"),
        "-append".into(),
        append.into(),
    ]);
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// [`kernel_args`] plus `disk` as the VM's virtio disk (/dev/vda) and a virtio NIC on
/// user networking, `nic` appended to its options (",mac=…" or nothing).
pub fn kernel_args_with_disk(out: &Path, append: &str, disk: &Path, nic: &str) -> Vec<String> {
    let drive = format!("if=none,id=local,format=raw,file={}", disk.display());
    let nic = format!("user,model=virtio-net-pci{nic}");
    let extra = [
        "-drive",
        &drive,
        "-device",
        "virtio-blk-pci,drive=local",
        "-nic",
        &nic,
    ];
    kernel_args(out, append, &extra)
}

/// [`boot_kernel`] with the disk and NIC of [`kernel_args_with_disk`].
pub fn boot_kernel_with_disk(out: &Path, append: &str, disk: &Path, nic: &str) -> Vm {
    Vm::start(&kernel_args_with_disk(out, append, disk, nic))
}

/// How the ISO is presented to which firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS.
    Bios,
    /// OVMF without Secure Boot.
    Uefi,
    /// OVMF with Microsoft keys enrolled and Secure Boot enforced.
    SecureBoot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// `-cdrom` (IDE on pc, SATA on q35).
    Cdrom,
    /// The image written raw to a USB stick (xHCI + usb-storage).
    UsbStick,
    /// q35 with an explicit AHCI port holding a SATA CD-ROM as the only boot device.
    SataCdOnly,
}

/// QEMU arguments for `firmware`: SeaBIOS on QEMU's default machine, or OVMF on q35
/// (its variable store copied into `dir`).
pub fn firmware_args(firmware: Firmware, dir: &Path) -> Vec<String> {
    match firmware {
        Firmware::Bios => Vec::new(),
        Firmware::Uefi => ovmf_args(dir, false),
        Firmware::SecureBoot => ovmf_args(dir, true),
    }
}

/// QEMU arguments booting `iso` from `medium` under `firmware`; `vars` is a scratch dir
/// for the OVMF variable store copy.
pub fn qemu_args(iso: &Path, firmware: Firmware, medium: Medium, vars: &Path) -> Vec<String> {
    let iso = iso.display();
    let mut a: Vec<String> = vec!["-m".into(), "512".into(), "-nic".into(), "none".into()];
    if medium == Medium::SataCdOnly {
        // No default devices at all (no NIC, no IDE/SATA drives, no floppy): only the
        // console, a display, and the CD-ROM below.
        a.extend(["-nodefaults", "-serial", "stdio", "-vga", "std"].map(String::from));
        if firmware == Firmware::Bios {
            a.extend(["-machine".into(), "q35".into()]);
        }
    }
    a.extend(firmware_args(firmware, vars));
    match medium {
        Medium::Cdrom => a.extend(["-cdrom".into(), iso.to_string()]),
        Medium::UsbStick => a.extend([
            "-device".into(),
            "qemu-xhci,id=xhci".into(),
            "-drive".into(),
            format!("if=none,id=stick,format=raw,readonly=on,file={iso}"),
            "-device".into(),
            "usb-storage,bus=xhci.0,drive=stick,bootindex=0".into(),
        ]),
        Medium::SataCdOnly => a.extend([
            "-drive".into(),
            format!("if=none,id=cd,media=cdrom,readonly=on,format=raw,file={iso}"),
            "-device".into(),
            "ide-cd,drive=cd,bus=ide.0,bootindex=0".into(),
        ]),
    }
    a
}

/// QEMU arguments for a QMP socket at `socket` (see [`Drive`]).
pub fn qmp_args(socket: &Path) -> Vec<String> {
    vec![
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", socket.display()),
    ]
}

/// What a real optical drive or a BMC's virtual media does and QEMU does not: QEMU
/// closes a tray the guest opened when the machine resets (the disc still inside),
/// where a real tray stays open and a BMC detaches its virtual disc. This plays that
/// part over QMP (`socket`, from [`qmp_args`]): when the guest opens the tray of the
/// device `id`, the disc is taken out. Returns, at the end, whether it was.
pub fn take_out_ejected_disc(socket: &Path, id: &str) -> std::thread::JoinHandle<bool> {
    use std::io::{BufRead, BufReader, Write};
    let (socket, id) = (socket.to_path_buf(), id.to_string());
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let stream = loop {
            match std::os::unix::net::UnixStream::connect(&socket) {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("no QMP socket {}: {e}", socket.display())
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        };
        let mut out = stream.try_clone().unwrap();
        out.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
            .unwrap();
        // Until QEMU exits and closes the socket.
        let mut taken = false;
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let data = &msg["data"];
            if msg["event"] == "DEVICE_TRAY_MOVED" && data["id"] == id && data["tray-open"] == true
            {
                let remove = serde_json::json!({
                    "execute": "blockdev-remove-medium", "arguments": {"id": id}
                });
                out.write_all(format!("{remove}\n").as_bytes()).unwrap();
                taken = true;
            }
        }
        taken
    })
}
