//! The cloud images boot as clouds present them and pull: GCE's `disk.raw` (out of the
//! tar.gz) as a virtio-scsi disk under SeaBIOS and under OVMF, and Azure's VHD as a raw
//! disk (IDE, as Hyper-V generation 1 shows it) under SeaBIOS. Beside each, a data disk
//! holding an older state of the volume the agent on the host serves: the client pulls
//! and the data disk ends equal to the volume.
//!
//! Disk images carry their kernel arguments in their menus: each test builds an image
//! whose menus name its agent (`failback build --append`).

mod common;

use common::{
    BS, Firmware, OneVolume, Vm, build_into, differing_blocks, firmware_args, mutate, need_qemu,
    random_bytes,
};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the cloud shows its boot disk to the VM.
#[derive(Clone, Copy)]
enum CloudDisk {
    /// GCE: `disk.raw` from the tar.gz on a virtio-scsi controller.
    GceVirtioScsi,
    /// Azure: the fixed VHD, read as a raw disk, on IDE.
    AzureVhdIde,
}

/// Extracts `disk.raw` from the GCE tar.gz into `dir`, sparse (zero runs are skipped).
fn extract_disk_raw(tar_gz: &Path, dir: &Path) -> PathBuf {
    let gz = std::fs::File::open(tar_gz).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(entry.path().unwrap().to_str(), Some("disk.raw"));
    let size = entry.size();
    let path = dir.join("disk.raw");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            file.seek(SeekFrom::Current(n as i64)).unwrap();
        } else {
            file.write_all(&buf[..n]).unwrap();
        }
    }
    file.set_len(size).unwrap();
    path
}

fn pull_onto_a_data_disk(firmware: Firmware, disk: CloudDisk) {
    need_qemu();
    // 16 MiB volume; the data disk holds an older state where every third block differs.
    let blocks = 32;
    let remote = random_bytes(blocks * BS, 21);
    let changed: Vec<usize> = (0..blocks).filter(|b| b % 3 == 0).collect();
    let local = mutate(&remote, &changed, 5);
    let differing = differing_blocks(&remote, &local).len();
    let s = OneVolume::serve("system", remote, local);

    let out = s.served.path().join("out");
    let append = format!(
        "failback.progress=json failback.after=poweroff failback.unattended=1 {} \
         failback.map=system=/dev/vda",
        s.served.kernel_source()
    );
    build_into(&out, &["--append", &append]);

    let vars = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = ["-m", "512", "-nic", "user,model=virtio-net-pci"]
        .map(String::from)
        .to_vec();
    args.extend(firmware_args(firmware, vars.path()));
    let boot_disk_size = match disk {
        CloudDisk::GceVirtioScsi => {
            let raw = extract_disk_raw(&out.join("cloud/failback-gce.tar.gz"), s.served.path());
            assert_eq!(std::fs::metadata(&raw).unwrap().len() % (1 << 30), 0);
            args.extend([
                "-device".into(),
                "virtio-scsi-pci,id=scsi".into(),
                "-drive".into(),
                format!(
                    "if=none,id=boot,format=raw,snapshot=on,file={}",
                    raw.display()
                ),
                "-device".into(),
                "scsi-hd,drive=boot,bus=scsi.0,bootindex=0".into(),
            ]);
            std::fs::metadata(&raw).unwrap().len()
        }
        CloudDisk::AzureVhdIde => {
            let vhd = out.join("cloud/failback-azure.vhd");
            args.extend([
                "-drive".into(),
                format!(
                    "if=ide,index=0,format=raw,snapshot=on,file={}",
                    vhd.display()
                ),
            ]);
            std::fs::metadata(&vhd).unwrap().len()
        }
    };
    args.extend([
        "-drive".into(),
        format!("if=none,id=data,format=raw,file={}", s.target.display()),
        "-device".into(),
        "virtio-blk-pci,drive=data".into(),
    ]);

    let mut vm = Vm::start(&args);
    // The client booted from the cloud disk: it is the one boot medium.
    let (disks, _) = vm.event("disks", Duration::from_secs(300));
    let list = disks["disks"].as_array().expect("disks list");
    let medium: Vec<&serde_json::Value> =
        list.iter().filter(|d| d["boot_medium"] == true).collect();
    assert!(
        medium.len() == 1 && medium[0]["size"].as_u64() == Some(boot_disk_size),
        "one boot medium, of {boot_disk_size} bytes (the cloud disk), in {list:?}"
    );
    let (plan, at) = vm.event("plan", Duration::from_secs(300));
    eprintln!("plan {at:.1} s after QEMU started: {plan}");
    assert_eq!(plan["target"], "/dev/vda");
    assert_eq!(plan["differing"], differing as u64, "{plan}");
    let (done, at) = vm.event("done", Duration::from_secs(300));
    eprintln!("pull done {at:.1} s after QEMU started: {done}");
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
    assert!(
        std::fs::read(&s.target).unwrap() == s.new,
        "the data disk equals the served volume"
    );
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn gce_disk_raw_on_virtio_scsi_under_bios_pulls() {
    pull_onto_a_data_disk(Firmware::Bios, CloudDisk::GceVirtioScsi);
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn gce_disk_raw_on_virtio_scsi_under_uefi_pulls() {
    pull_onto_a_data_disk(Firmware::Uefi, CloudDisk::GceVirtioScsi);
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn azure_vhd_as_a_raw_disk_under_bios_pulls() {
    pull_onto_a_data_disk(Firmware::Bios, CloudDisk::AzureVhdIde);
}
