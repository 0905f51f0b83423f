//! Boots the built kernel + initramfs under QEMU (TCG) with two disks and
//! checks what the client (PID 1) reports on the serial console.

mod common;

use common::{Vm, disk_image, need_qemu, out_dir};
use std::time::Duration;

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn client_boots_finds_both_disks_and_powers_off() {
    need_qemu();
    let out = out_dir();
    let tmp = tempfile::tempdir().unwrap();
    let virtio = disk_image(tmp.path(), "virtio.img", 64 << 20);
    let sata = disk_image(tmp.path(), "sata.img", 128 << 20);
    // Two consoles, as the ISO has: VGA (what a BMC shows) and serial. /dev/console
    // is ttyS0 (the last); the client must show itself on the VGA screen too, read
    // back from its text buffer (0xb8000) over QMP.
    let qmp = tmp.path().join("qmp.sock");
    let mut vm = common::boot_kernel(
        &out,
        "console=tty0 console=ttyS0 failback.progress=json failback.after=poweroff \
         failback.host=test-01 virtio-blk.queue_depth=32",
        &[
            "-qmp",
            &format!("unix:{},server=on,wait=off", qmp.display()),
            "-drive",
            &format!("if=none,id=vd,format=raw,file={}", virtio.display()),
            "-device",
            "virtio-blk-pci,drive=vd,serial=VIRTIO-SN-1",
            "-drive",
            &format!("if=none,id=sd,format=raw,file={}", sata.display()),
            "-device",
            "ahci,id=ahci0",
            "-device",
            "ide-hd,drive=sd,bus=ahci0.0,serial=SATA-SN-2,model=FAILBACK-TEST",
        ],
    );

    let (boot, at) = vm.event("boot", Duration::from_secs(120));
    eprintln!("boot event {at:.1} s after QEMU started");
    assert_eq!(boot["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(boot["secure_boot"], false, "SeaBIOS has no Secure Boot");
    assert_eq!(boot["host"], "test-01");
    assert!(boot["uptime_s"].as_f64().unwrap() > 0.0);
    assert_eq!(
        boot["consoles"],
        serde_json::json!(["/dev/tty1", "/dev/ttyS0"])
    );

    let (drivers, _) = vm.event("drivers", Duration::from_secs(120));
    let loaded: Vec<&str> = drivers["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for module in ["virtio_pci", "virtio_blk", "ahci", "sd_mod"] {
        assert!(loaded.contains(&module), "{module} not loaded: {loaded:?}");
    }
    // The command line's module parameter reached the module (the kernel's value;
    // the default is 0), as modprobe would have passed it.
    assert_eq!(
        drivers["params"],
        serde_json::json!({"virtio_blk.queue_depth": "32"}),
        "{drivers}"
    );

    let (disks, _) = vm.event("disks", Duration::from_secs(60));
    let screen = vga_text_with(&qmp, r#"{"event":"disks""#, tmp.path());
    assert!(
        screen.contains(r#"{"event":"drivers""#),
        "the VGA screen:\n{screen}"
    );
    let disks = disks["disks"].as_array().unwrap();
    let find = |serial: &str| {
        disks
            .iter()
            .find(|d| d["serial"] == serial)
            .unwrap_or_else(|| panic!("no disk with serial {serial} in {disks:?}"))
    };
    let vd = find("VIRTIO-SN-1");
    assert_eq!(vd["size"], 64u64 << 20);
    assert_eq!(vd["removable"], false);
    assert!(vd["name"].as_str().unwrap().starts_with("vd"));
    let sd = find("SATA-SN-2");
    assert_eq!(sd["size"], 128u64 << 20);
    assert_eq!(sd["model"], "FAILBACK-TEST");
    assert!(sd["name"].as_str().unwrap().starts_with("sd"));
    assert_eq!(disks.len(), 2, "exactly the two attached disks: {disks:?}");

    let status = vm.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "QEMU exit {status} after poweroff");
    assert!(!vm.log().contains("Kernel panic"), "{}", vm.log());
}

/// The VGA text memory (32 KiB at 0xb8000 of character, attribute pairs; the kernel
/// scrolls by moving the screen's start within it), read over QMP until it holds
/// `want` (the copy to the screen runs beside the serial one); rows joined, since
/// lines longer than 80 columns wrap.
fn vga_text_with(qmp: &std::path::Path, want: &str, dir: &std::path::Path) -> String {
    use std::io::{BufRead, BufReader, Write};
    let dump = dir.join("vga.bin");
    let stream = std::os::unix::net::UnixStream::connect(qmp).expect("QMP socket");
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    let mut say = |command: String| {
        (&stream).write_all(command.as_bytes()).unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap(); // greeting, then each answer
        line.clone()
    };
    say(String::new());
    say(r#"{"execute":"qmp_capabilities"}"#.into());
    let mut screen = String::new();
    for _ in 0..50 {
        let answer = say(format!(
            r#"{{"execute":"pmemsave","arguments":{{"val":753664,"size":32768,"filename":"{}"}}}}"#,
            dump.display()
        ));
        assert!(answer.contains("return"), "pmemsave: {answer}");
        let cells = std::fs::read(&dump).unwrap();
        let text: Vec<u8> = cells.iter().step_by(2).copied().collect();
        screen = String::from_utf8_lossy(&text).into_owned();
        if screen.contains(want) {
            return screen;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the VGA screen never showed {want}:\n{screen}");
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn a_bad_parameter_is_an_error_event_not_a_panic() {
    need_qemu();
    let out = out_dir();
    // failback.after is bad on purpose: the client must say so on the console and
    // then wait for the operator (the default), not crash the kernel.
    let mut vm = common::boot_kernel(
        &out,
        "console=ttyS0 failback.progress=json failback.after=explode",
        &[],
    );
    let (error, _) = vm.event("error", Duration::from_secs(120));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("failback.after"),
        "{error}"
    );
    // Then it waits: still running a few seconds later, no panic.
    std::thread::sleep(Duration::from_secs(3));
    vm.drain();
    assert!(!vm.log().contains("Kernel panic"), "{}", vm.log());
    assert!(
        vm.log().contains("type 'reboot', 'poweroff' or 'shell'"),
        "{}",
        vm.log()
    );
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn the_preset_drives_an_unattended_boot() {
    need_qemu();
    let tmp = tempfile::tempdir().unwrap();
    let preset = tmp.path().join("failback.toml");
    std::fs::write(&preset, "after = \"poweroff\"\nprogress = \"json\"\n").unwrap();
    let out = tmp.path().join("out");
    common::build_into(&out, &["--config", preset.to_str().unwrap()]);
    // Nothing about progress or the end on the command line: the preset decides.
    let mut vm = Vm::start(&[
        "-m",
        "512",
        "-kernel",
        out.join("pxe/vmlinuz").to_str().unwrap(),
        "-initrd",
        out.join("pxe/initrd.img").to_str().unwrap(),
        "-append",
        "console=ttyS0",
    ]);
    vm.event("boot", Duration::from_secs(120));
    vm.event("disks", Duration::from_secs(120));
    let status = vm.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "the preset's after = poweroff: {status}");
}
