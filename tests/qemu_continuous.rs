//! The boot image pulls continuously (`failback.continuous=1`, unattended) while a
//! writer on the host keeps changing the served volume; the writer stops,
//! `failback cutover` runs on the host, and the client's final pass makes the
//! local disk equal the volume before it does `after`: power off, or (from the ISO)
//! reboot into the recovered system, as tests/qemu_reboot.rs does for one-shot pulls.

mod common;

use common::{
    BS, Firmware, OneVolume, Scenario, Vm, Writer, cutover, firmware_args, kernel_args_with_disk,
    mutate, need_qemu, out_dir, random_bytes,
};
use sha2::{Digest, Sha256};
use std::time::Duration;

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn the_image_pulls_in_passes_until_cutover_then_powers_off() {
    need_qemu();
    let out = out_dir();
    let blocks = 32;
    let remote = random_bytes(blocks * BS, 17);
    let local = mutate(&remote, &(0..blocks).step_by(2).collect::<Vec<_>>(), 3);
    let s = OneVolume::serve("system", remote, local);
    let served = s.served.path().join("served-system.img");

    let writer = Writer::start(&served, 0, 5, Duration::from_millis(50));

    let cmdline = s.kernel_cmdline("failback.continuous=1 failback.host=vm1");
    let mut vm = common::boot_kernel_with_disk(&out, &cmdline, &s.target, "");
    let (first, _) = vm.event("pass", Duration::from_secs(300));
    assert_eq!(first["consistent"], false, "{first}");
    assert_eq!(first["host"], "vm1", "{first}");
    let (second, _) = vm.event("pass", Duration::from_secs(120));
    assert_eq!(second["pass"], 2, "{second}");
    writer.stop();

    let agent = &s.served.agent;
    let cutover = cutover(&agent.url(), &agent.fingerprint, &["--host", "vm1"]);
    let said = String::from_utf8_lossy(&cutover.stdout).to_string();
    assert!(cutover.status.success(), "{cutover:?}\n{}", vm.log());
    assert!(said.starts_with("vm1: digests match"), "{said}");
    let (done, at) = vm.event("cutover_done", Duration::from_secs(120));
    eprintln!("cutover done {at:.1} s after QEMU started: {done}");
    assert_eq!(done["consistent"], true);
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
    assert!(
        std::fs::read(&s.target).unwrap() == std::fs::read(&served).unwrap(),
        "the local disk equals the served volume after cutover"
    );
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn the_iso_fails_back_continuously_then_reboots_into_the_recovered_system() {
    need_qemu();
    const MIB: usize = 1 << 20;
    let long = Duration::from_secs(600);
    // The served system: a bootable image of the stand-in init, then random bytes
    // that the writer keeps changing.
    let (system, image_len) = common::recovered_system(64 * MIB, 21);
    let served = Scenario::serve(&[("system", &system)]);
    let changed: Vec<usize> = (1..system.len() / BS).filter(|b| b % 4 == 1).collect();
    let nvme = served.disk("nvme.img", &mutate(&system, &changed, 22));
    let iso = served.build_preset_iso(
        "unattended = true\ncontinuous = true\nafter = \"reboot\"\nprogress = \"json\"\n",
    );

    let mut args = firmware_args(Firmware::Bios, served.path());
    args.extend(["-machine", "q35", "-m", "512", "-device", "virtio-rng-pci"].map(String::from));
    args.extend(["-nic".into(), "user,model=virtio-net-pci".into()]);
    args.extend([
        "-drive".into(),
        format!("if=none,id=nvme,format=raw,file={}", nvme.display()),
        "-device".into(),
        "nvme,drive=nvme,serial=FAILBACK-NVME,bootindex=1".into(),
        "-drive".into(),
        format!(
            "if=none,id=medium,media=cdrom,readonly=on,format=raw,file={}",
            iso.display()
        ),
        "-device".into(),
        "ide-cd,drive=medium,bus=ide.0,bootindex=0,id=cd".into(),
    ]);
    let qmp = served.path().join("qmp.sock");
    args.extend(common::qmp_args(&qmp));
    let drive = common::take_out_ejected_disc(&qmp, "cd");
    let served_path = served.path().join("served-system.img");
    // The writer leaves the bootable image alone.
    let from = image_len.next_multiple_of(BS) as u64;
    let writer = Writer::start(&served_path, from, 9, Duration::from_millis(50));
    let mut vm = Vm::start_rebooting(&args);
    vm.event("pass", long);
    vm.event("pass", long);
    writer.stop();
    let cutover = cutover(&served.agent.url(), &served.agent.fingerprint, &[]);
    assert!(cutover.status.success(), "{cutover:?}\n{}", vm.log());
    let line = vm.recovered_line(long);
    assert!(vm.wait_exit(Duration::from_secs(120)).success());
    let events = vm.events_seen();
    assert!(
        events.iter().any(|e| e["event"] == "cutover_done"),
        "{}",
        vm.log()
    );
    let digest = line.split("sha256=").nth(1).unwrap_or_default().trim();
    let now = std::fs::read(&served_path).unwrap();
    assert_eq!(digest, hex::encode(Sha256::digest(&now)), "{line}");
    assert!(drive.join().unwrap(), "the CD's tray opened");
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn typing_cutover_on_the_console_once_in_sync_cuts_this_host_over() {
    need_qemu();
    let blocks = 16;
    let remote = random_bytes(blocks * BS, 27);
    let local = mutate(&remote, &[1, 5, 9], 4);
    let s = OneVolume::serve("system", remote, local);
    let cmdline = s.kernel_cmdline("failback.continuous=1 failback.host=vm2");
    let args = kernel_args_with_disk(&out_dir(), &cmdline, &s.target, "");
    let mut vm = Vm::start_interactive(&args);
    vm.event("pass", Duration::from_secs(300));
    vm.send("cutover\n");
    let (done, _) = vm.event("cutover_done", Duration::from_secs(120));
    assert_eq!(done["host"], "vm2", "{done}");
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
    assert!(std::fs::read(&s.target).unwrap() == s.new);
    let log = s.served.agent.output();
    assert!(log.contains("cutover asked for host vm2"), "{log}");
}
