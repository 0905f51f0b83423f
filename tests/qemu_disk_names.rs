//! Stable names for target disks: on a machine with two controllers, `sdX` follow the
//! order the disks are probed in (asynchronous: it varies from boot to boot, as on
//! servers), not the order an operator wrote a mapping in. Three
//! volumes are mapped by serial, WWN and by-path name to disks on the second controller,
//! beside a same-sized decoy on the first: each lands on its own disk
//! and the decoy stays as it was.

mod common;

use common::{BS, Scenario, need_qemu, out_dir, random_bytes};
use std::time::Duration;

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn serial_wwn_and_path_name_the_disks_whatever_their_order() {
    need_qemu();
    let out = out_dir();
    let size = 8 * BS;
    let volumes: Vec<(&str, Vec<u8>)> = ["system", "data", "logs"]
        .iter()
        .zip(1u64..)
        .map(|(name, seed)| (*name, random_bytes(size, seed)))
        .collect();
    let served: Vec<(&str, &[u8])> = volumes.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let s = Scenario::serve(&served);
    let old = random_bytes(size, 99);
    let decoy = s.disk("decoy.img", &old);
    let targets: Vec<_> = ["system", "data", "logs"]
        .iter()
        .map(|n| s.disk(&format!("{n}.img"), &old))
        .collect();

    // Controller c0 (PCI 00:05.0) holds the decoy; the targets sit on c1 (00:06.0),
    // SCSI targets 1 to 3. Which gets sda is up to the kernel's probing.
    let mut args: Vec<String> = [
        "-nic",
        "user,model=virtio-net-pci",
        "-device",
        "virtio-scsi-pci,id=c0,addr=0x5",
        "-device",
        "virtio-scsi-pci,id=c1,addr=0x6",
    ]
    .map(String::from)
    .to_vec();
    let mut disk = |id: &str, file: &std::path::Path, device: String| {
        args.push("-drive".into());
        args.push(format!(
            "if=none,id={id},format=raw,file={}",
            file.display()
        ));
        args.push("-device".into());
        args.push(device);
    };
    disk(
        "decoy",
        &decoy,
        "scsi-hd,drive=decoy,bus=c0.0,scsi-id=0,serial=DECOY".into(),
    );
    disk(
        "t1",
        &targets[0],
        "scsi-hd,drive=t1,bus=c1.0,scsi-id=1,serial=SYSTEM-SN".into(),
    );
    disk(
        "t2",
        &targets[1],
        "scsi-hd,drive=t2,bus=c1.0,scsi-id=2,wwn=0x5000c500a1b2c3d4".into(),
    );
    disk(
        "t3",
        &targets[2],
        "scsi-hd,drive=t3,bus=c1.0,scsi-id=3".into(),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let cmdline = format!(
        "console=ttyS0 failback.progress=json failback.after=poweroff failback.unattended=1 \
         {} failback.map=system=serial:SYSTEM-SN,data=wwn:0x5000C500A1B2C3D4,\
         logs=path:pci-0000:00:06.0-scsi-0:0:3:0",
        s.kernel_source()
    );
    let mut vm = common::boot_kernel(&out, &cmdline, &args);
    let (disks, _) = vm.event("disks", Duration::from_secs(180));
    let listed = disks.to_string();
    assert!(
        listed.contains(r#""wwn":"naa.5000c500a1b2c3d4""#)
            && listed.contains(r#""path":"pci-0000:00:06.0-scsi-0:0:3:0""#),
        "the disks event names each disk's wwn and path: {listed}"
    );
    let (mapping, _) = vm.event("mapping", Duration::from_secs(120));
    let target_of = |volume: &str| {
        mapping["choices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["volume"] == volume)
            .map(|c| c["target"].as_str().unwrap().to_string())
            .unwrap()
    };
    let decoy_name = disks["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["serial"] == "DECOY")
        .map(|d| format!("/dev/{}", d["name"].as_str().unwrap()))
        .unwrap();
    let chosen = [target_of("system"), target_of("data"), target_of("logs")];
    assert!(
        !chosen.contains(&decoy_name) && chosen[0] != chosen[1] && chosen[1] != chosen[2],
        "three disks, the decoy ({decoy_name}) not one: {mapping}"
    );
    let (done, _) = vm.event("done", Duration::from_secs(300));
    eprintln!("done: {done}");
    assert!(vm.wait_exit(Duration::from_secs(60)).success());

    for ((name, bytes), target) in volumes.iter().zip(&targets) {
        assert!(
            std::fs::read(target).unwrap() == *bytes,
            "{name} landed on its own disk"
        );
    }
    assert!(
        std::fs::read(&decoy).unwrap() == old,
        "the decoy, first in probe order, is untouched"
    );
}
