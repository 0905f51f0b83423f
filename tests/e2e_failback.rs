//! The whole failback story, as an operator runs it (issue #7).
//!
//! The AWS side: `failback serve` on the host serves a 256 MiB bootable "system"
//! volume (an image made by the builder whose init prints `RECOVERED` and the SHA-256
//! of its own disk) and a 128 MiB "data" volume. The host: a q35 VM with an NVMe disk
//! (256 MiB) and a virtio disk (160 MiB) holding an older state of those volumes (about
//! 70% of blocks the same), booting failback.iso as a CD with a preset (source, token,
//! fingerprint, unattended, after = reboot). It maps the disks by identity (GPT disk
//! GUID) and size (`map_by_size = true`), pulls only the differing blocks, verifies, reboots; the next boot,
//! from the NVMe disk, prints `RECOVERED` with the served volume's digest.

mod common;

use common::{
    BS, Firmware, Scenario, Vm, differing_blocks, firmware_args, mutate, need_qemu, random_bytes,
};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;

const MIB: usize = 1 << 20;

/// Everything one run needs; the temporary directory goes with it.
struct Story {
    /// The agent, and the directory the volumes, disks and image live in.
    served: Scenario,
    firmware: Firmware,
    /// The served volumes.
    system: Vec<u8>,
    data: Vec<u8>,
    /// The host's disks, and the part of the data disk beyond the volume.
    nvme: PathBuf,
    virtio: PathBuf,
    virtio_tail: Vec<u8>,
    /// Blocks that differ between the served volumes and the host's disks.
    differing: [u64; 2],
    iso: PathBuf,
}

impl Story {
    fn new(firmware: Firmware) -> Story {
        // The recovered system: an image built by failback itself, with the stand-in
        // init, at the start of the system volume; after it the system's "files"
        // (random, with a run of zero blocks).
        let (mut system, _) = common::recovered_system(256 * MIB, 1);
        system[200 * BS..216 * BS].fill(0);
        let data = random_bytes(128 * MIB, 2);

        // The older state: ~30% of blocks differ; block 0 (partition tables) is the same,
        // as on a disk that has been running all along.
        let older = |volume: &[u8], seed: u64| {
            let blocks = volume.len() / BS;
            let changed: Vec<usize> = (1..blocks).filter(|b| (b * 7 + 3) % 10 < 3).collect();
            mutate(volume, &changed, seed)
        };
        let old_system = older(&system, 11);
        let old_data = older(&data, 12);
        let virtio_tail = random_bytes(32 * MIB, 13);
        let differing = [(&system, &old_system), (&data, &old_data)]
            .map(|(new, old)| differing_blocks(new, old).len() as u64);

        let served = Scenario::serve(&[("system", &system), ("data", &data)]);
        let nvme = served.disk("nvme.img", &old_system);
        let virtio = served.disk("virtio.img", &[old_data, virtio_tail.clone()].concat());

        // The operator's preset: where to pull from, and to go ahead alone.
        let iso = served.build_preset_iso(
            "unattended = true\nmap_by_size = true\nafter = \"reboot\"\nprogress = \"json\"\n",
        );
        Story {
            firmware,
            system,
            data,
            nvme,
            virtio,
            virtio_tail,
            differing,
            iso,
            served,
        }
    }

    /// The host's hardware under its firmware; `with_cd`: the ISO in the drive and
    /// the network cable plugged in (the failback boot), else boot from the NVMe disk.
    fn host_args(&self, with_cd: bool) -> Vec<String> {
        let mut a = firmware_args(self.firmware, self.served.path());
        if self.firmware == Firmware::Bios {
            a.extend(["-machine".into(), "q35".into()]);
        }
        let nic = if with_cd {
            "user,model=virtio-net-pci"
        } else {
            "none"
        };
        a.extend(["-m", "512", "-device", "virtio-rng-pci", "-nic", nic].map(String::from));
        a.extend([
            "-drive".into(),
            format!("if=none,id=nvme,format=raw,file={}", self.nvme.display()),
            "-device".into(),
            format!(
                "nvme,drive=nvme,serial=FAILBACK-NVME{}",
                if with_cd { "" } else { ",bootindex=0" }
            ),
            "-drive".into(),
            format!("if=none,id=data,format=raw,file={}", self.virtio.display()),
            "-device".into(),
            "virtio-blk-pci,drive=data".into(),
        ]);
        if with_cd {
            a.extend([
                "-drive".into(),
                format!(
                    "if=none,id=cd,media=cdrom,readonly=on,format=raw,file={}",
                    self.iso.display()
                ),
                "-device".into(),
                "ide-cd,drive=cd,bus=ide.0,bootindex=0".into(),
            ]);
        }
        a
    }

    /// Boots the ISO and follows the client up to its reboot; returns the VM's pull
    /// figures and the plans it made.
    fn failback_boot(&self, kill_when_pulling: bool) -> Option<Vec<serde_json::Value>> {
        let mut vm = Vm::start(&self.host_args(true));
        let long = Duration::from_secs(600);
        let (disks, _) = vm.event("disks", long);
        let names: Vec<&str> = disks["disks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["nvme0n1", "vda"], "only the two disks: {disks}");
        let (mapping, _) = vm.event("mapping", long);
        let choices = &mapping["choices"];
        let by_volume = |v: &str| {
            choices
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["volume"] == v)
                .unwrap_or_else(|| panic!("no choice for {v}: {mapping}"))
                .clone()
        };
        let (sys, data) = (by_volume("system"), by_volume("data"));
        assert_eq!(sys["target"], "/dev/nvme0n1", "{mapping}");
        assert_eq!(sys["reason"], "gpt-guid", "{mapping}");
        assert_eq!(data["target"], "/dev/vda", "{mapping}");
        assert_eq!(data["reason"], "only-fit", "{mapping}");
        // The data disk is proven by its size alone: the preset allows it, and says so.
        assert_eq!(mapping["map_by_size"], true, "{mapping}");
        // Unattended, each volume is planned and pulled in turn, hashing and pulling
        // overlapped: plan, progress, volume_done, then the next volume.
        let (mut plans, mut volumes_done) = (Vec::new(), Vec::new());
        let mut first_pull = None;
        let (done, at) = loop {
            let (e, at) = vm.next_event(long);
            match e["event"].as_str() {
                Some("plan") => plans.push(e),
                Some("volume_done") => volumes_done.push((e, at)),
                Some("done") => break (e, at),
                Some("progress") => {
                    if e["phase"] == "pulling" {
                        first_pull.get_or_insert(at);
                    }
                    // Power fails once the first volume is flushed and the second is
                    // half way (its blocks are written while it is still hashed):
                    // what the guest had not flushed yet is lost with it.
                    let half = e["done_bytes"].as_u64().unwrap_or(0) * 2
                        > e["total_bytes"].as_u64().unwrap_or(u64::MAX);
                    if kill_when_pulling
                        && volumes_done.len() == 1
                        && e["volume"] != volumes_done[0].0["volume"]
                        && half
                    {
                        eprintln!("killing the VM mid-pull at {e}");
                        return None; // dropping the VM kills QEMU
                    }
                }
                _ => {}
            }
        };
        assert!(
            !kill_when_pulling,
            "the pull ended before it could be killed"
        );
        assert_eq!(plans.len(), 2, "one plan per volume: {plans:?}");
        assert_eq!(volumes_done.len(), 2, "both volumes done: {volumes_done:?}");
        let first_pull = first_pull.expect("progress while pulling");
        let ((first, at_first), (second, _)) = (&volumes_done[0], &volumes_done[1]);
        let wire = done["wire_bytes"].as_f64().unwrap_or(0.0);
        eprintln!(
            "{:?}: after power-on: first pulling progress {first_pull:.1} s, first volume done \
             {at_first:.1} s, all done {at:.1} s; {:.1} MB/s from the first block to done\n\
             {done}\n{first}\n{second}",
            self.firmware,
            wire / 1e6 / (at - first_pull)
        );
        let status = vm.wait_exit(Duration::from_secs(120));
        assert!(
            status.success(),
            "the client rebooted (QEMU -no-reboot exits): {status}"
        );
        Some(plans)
    }

    /// The next boot, from the NVMe disk alone: the recovered system's own word.
    fn recovered_digest(&self) -> String {
        let mut vm = Vm::start(&self.host_args(false));
        let line = vm.recovered_line(Duration::from_secs(600));
        assert!(vm.wait_exit(Duration::from_secs(120)).success());
        line.split("sha256=")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The host's disks now hold the served volumes, byte for byte; the rest of the
    /// data disk is untouched.
    fn check_disks(&self) {
        let nvme = std::fs::read(&self.nvme).unwrap();
        assert!(
            nvme == self.system,
            "the NVMe disk equals the system volume"
        );
        let virtio = std::fs::read(&self.virtio).unwrap();
        assert!(
            virtio[..self.data.len()] == self.data[..],
            "the virtio disk holds the data volume"
        );
        assert!(
            virtio[self.data.len()..] == self.virtio_tail[..],
            "beyond the volume: untouched"
        );
    }

    fn check_agent_saw_progress(&self) {
        let log = self.served.agent.output();
        assert!(
            log.contains("client "),
            "the agent saw the client's progress:\n{log}"
        );
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn bios_host_fails_back_and_boots_its_recovered_system() {
    need_qemu();
    let story = Story::new(Firmware::Bios);
    let plans = story.failback_boot(false).unwrap();
    let differing = |volume: &str| {
        let plan = plans.iter().find(|p| p["volume"] == volume).unwrap();
        plan["differing"].as_u64().unwrap()
    };
    assert_eq!(
        [differing("system"), differing("data")],
        story.differing,
        "the plans name exactly the differing blocks"
    );
    story.check_disks();
    story.check_agent_saw_progress();
    assert_eq!(story.recovered_digest(), hex_sha256(&story.system));
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn uefi_host_killed_mid_pull_converges_on_the_next_boot() {
    need_qemu();
    let story = Story::new(Firmware::Uefi);
    assert!(story.failback_boot(true).is_none());
    let plans = story.failback_boot(false).unwrap();
    let left: u64 = plans.iter().map(|p| p["differing"].as_u64().unwrap()).sum();
    let all: u64 = story.differing.iter().sum();
    assert!(
        left < all,
        "the second boot pulls only what is still missing: {left} of {all}"
    );
    story.check_disks();
    assert_eq!(story.recovered_digest(), hex_sha256(&story.system));
}
