//! The boot image pulls a volume back: `failback serve` on the host serves a
//! volume, the VM boots the kernel + initramfs with an older copy on its
//! virtio disk, pulls only the differing blocks over QEMU's user network
//! (10.0.2.2 is the host's loopback), verifies, and powers off.

mod common;

use common::{BS, OneVolume, TOKEN, differing_blocks, mutate, need_qemu, out_dir, random_bytes};
use std::time::Duration;

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn the_image_pulls_only_the_differing_blocks_and_verifies() {
    need_qemu();
    let out = out_dir();
    // 24 MiB volume: random, with a run of zero blocks; the local disk holds an
    // older state where every third block differs.
    let blocks = 48;
    let mut remote = random_bytes(blocks * BS, 7);
    remote[10 * BS..14 * BS].fill(0);
    let changed: Vec<usize> = (0..blocks).filter(|b| b % 3 == 0).collect();
    let local = mutate(&remote, &changed, 99);
    let differs = differing_blocks(&remote, &local);
    let differing = differs.len();
    // Differing blocks that are zero remotely are zeroed locally, not pulled.
    let to_pull = differs
        .iter()
        .filter(|&b| remote[b * BS..(b + 1) * BS].iter().any(|&x| x != 0))
        .count();
    assert!(differing >= 15, "the test changes blocks: {differing}");

    let s = OneVolume::serve("system", remote, local);
    let cmdline = s.kernel_cmdline("");
    let mut vm = common::boot_kernel_with_disk(&out, &cmdline, &s.target, "");
    let (plan, _) = vm.event("plan", Duration::from_secs(180));
    assert_eq!(plan["volume"], "system");
    assert_eq!(plan["target"], "/dev/vda");
    assert_eq!(plan["differing"], differing as u64, "{plan}");
    let (done, at) = vm.event("done", Duration::from_secs(300));
    eprintln!("pull done {at:.1} s after QEMU started: {done}");
    assert_eq!(done["pulled_blocks"], to_pull as u64);
    assert!(
        done["wire_bytes"].as_u64().unwrap() <= (to_pull * BS) as u64 + 64 * 1024,
        "only those blocks crossed: {done}"
    );
    assert!(vm.wait_exit(Duration::from_secs(60)).success());

    assert!(
        std::fs::read(&s.target).unwrap() == s.new,
        "the local disk equals the served volume"
    );
    let agent_log = s.served.agent.output();
    assert!(
        agent_log.contains("client "),
        "the agent saw the client's progress:\n{agent_log}"
    );
    assert!(
        !vm.log().contains(TOKEN) || cmdline.contains(TOKEN),
        "token only where the operator put it"
    );
}
