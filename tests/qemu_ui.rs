//! The interactive mode, driven through the serial console as an operator would:
//! no source on the command line, so PID 1 asks. The test answers DHCP, the agent
//! (a malformed and then a wrong fingerprint are asked again), accepts the proposed
//! mapping, says "no" at the plan (the disk is untouched), starts over and says
//! "yes" (the disk then equals the served volume).

mod common;

use common::{BS, OneVolume, TOKEN, differing_blocks, mutate, need_qemu, out_dir, random_bytes};
use std::time::Duration;

/// From one prompt to the next (TCG on a shared machine).
const STEP: Duration = Duration::from_secs(180);

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn an_operator_answers_on_the_serial_console_declines_then_pulls() {
    need_qemu();
    let out = out_dir();
    // 24 MiB volume; the local disk holds an older state where every fourth block differs.
    let blocks = 48;
    let remote = random_bytes(blocks * BS, 11);
    let changed: Vec<usize> = (0..blocks).filter(|b| b % 4 == 1).collect();
    let local = mutate(&remote, &changed, 12);
    let differing = differing_blocks(&remote, &local).len();
    assert_eq!(differing, changed.len(), "the test changes blocks");

    let s = OneVolume::serve("system", remote, local);
    let agent = &s.served.agent;
    let url = s.served.guest_url();
    let drive = format!("if=none,id=local,format=raw,file={}", s.target.display());
    // No failback.source: the client asks. Text progress (the default); both consoles
    // mirrored.
    let mut vm = common::Vm::start_interactive(&common::kernel_args(
        &out,
        "console=tty0 console=ttyS0 failback.after=poweroff",
        &[
            "-device",
            "virtio-rng-pci",
            "-nic",
            "user,model=virtio-net-pci",
            "-drive",
            &drive,
            "-device",
            "virtio-blk-pci,drive=local,serial=UI-DISK-1",
        ],
    ));

    // The network: Enter takes DHCP.
    vm.wait_text("== failback: interactive mode ==", Duration::from_secs(300));
    vm.wait_text("Network:", STEP);
    vm.wait_text("Choice [1]: ", STEP);
    vm.send("\n");
    let seen = vm.wait_text("by dhcp", STEP);
    assert!(seen.contains("network: eth0"), "{seen}");

    // The source: the agent; a malformed fingerprint is refused at once.
    vm.wait_text("Pull from:", STEP);
    vm.wait_text("Choice [1]: ", STEP);
    vm.send("1\n");
    vm.wait_text("Agent URL (https://HOST:PORT): ", STEP);
    vm.send(&format!("{url}\n"));
    vm.wait_text("Token (not shown): ", STEP);
    vm.send(&format!("{TOKEN}\n"));
    vm.wait_text("Certificate fingerprint", STEP);
    vm.wait_text("): ", STEP);
    vm.send("abc\n");
    let seen = vm.wait_text("Certificate fingerprint", STEP);
    assert!(
        seen.contains("! \"abc\" is not a SHA-256 fingerprint"),
        "the bad fingerprint is refused in one line: {seen}"
    );
    // A well-formed but wrong one: the agent's certificate does not match; asked again.
    vm.wait_text("): ", STEP);
    let wrong = "00".repeat(32);
    vm.send(&format!("{wrong}\n"));
    vm.wait_text(&format!("Connecting to {url}..."), STEP);
    let seen = vm.wait_text("Again (Enter keeps an answer):", STEP);
    assert!(
        seen.contains("presented a certificate with fingerprint"),
        "the mismatch is said: {seen}"
    );
    vm.wait_text(&format!("Agent URL (https://HOST:PORT) [{url}]: "), STEP);
    vm.send("\n");
    vm.wait_text("Token (not shown) [Enter keeps the one given]: ", STEP);
    vm.send("\n");
    vm.wait_text(&format!("[{wrong}]: "), STEP);
    vm.send(&format!("{}\n", agent.fingerprint));
    let seen = vm.wait_text("The agent serves: ", STEP);
    assert!(!seen.contains("! "), "accepted: {seen}");
    vm.wait_text("system (25165824 bytes)", STEP);
    // No NTP server: the clock is set from the chosen agent's Date, as a configured
    // boot sets it, and the network line says so.
    let seen = vm.wait_text(&format!("clock set from the Date of {url} (moved "), STEP);
    assert!(seen.contains("network: eth0"), "{seen}");

    // The disks and the proposed mapping; Enter accepts it.
    let accept = "Mapping: Enter accepts the mapping above";
    let seen = vm.wait_text(accept, STEP);
    let disks = seen.find("Local disks:").expect("the disks are shown");
    let disk = seen.find("/dev/vda").expect("the virtio disk is listed");
    let mapping = seen
        .find("system -> /dev/vda: the only free local disk")
        .unwrap_or_else(|| panic!("the mapping is shown with its reason: {seen}"));
    assert!(disks < disk && disk < mapping, "{seen}");
    assert!(seen.contains("serial UI-DISK-1"), "{seen}");
    vm.wait_text(": ", STEP);
    vm.send("\n");

    // The plan and the confirmation, which names the target and its volume: "no".
    let plan = format!("plan: system -> /dev/vda: {differing} of {blocks} blocks differ");
    vm.wait_text(&plan, STEP);
    let seen = vm.wait_text("Type 'yes' to write these targets: ", STEP);
    assert!(
        seen.contains("About to overwrite:") && seen.contains("/dev/vda <- system"),
        "{seen}"
    );
    vm.send("no\n");
    vm.wait_text("Not confirmed: nothing was written.", STEP);
    assert!(
        std::fs::read(&s.target).unwrap() == s.old,
        "after a no, the disk is byte for byte what it was"
    );

    // Start over: every answer is kept (Enter), and this time "yes".
    vm.wait_text("What now?", STEP);
    vm.wait_text("Choice [1]: ", STEP);
    vm.send("1\n");
    vm.wait_text("Pull from:", STEP);
    vm.wait_text("Choice [1]: ", STEP);
    vm.send("\n");
    vm.wait_text(&format!("[{url}]: "), STEP);
    vm.send("\n");
    vm.wait_text("[Enter keeps the one given]: ", STEP);
    vm.send("\n");
    // The pinned fingerprint as kept: the lowercase hex digits given (the agent's first
    // 24, typed in their groups).
    let pinned: String = agent
        .fingerprint
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| !matches!(c, ':' | '-'))
        .collect::<String>()
        .to_ascii_lowercase();
    vm.wait_text(&format!("[{pinned}]: "), STEP);
    vm.send("\n");
    vm.wait_text(accept, STEP);
    vm.wait_text(": ", STEP);
    vm.send("\n");
    vm.wait_text(&plan, STEP);
    vm.wait_text("Type 'yes' to write these targets: ", STEP);
    vm.send("yes\n");
    let seen = vm.wait_text("The pull is done.", Duration::from_secs(600));
    assert!(
        seen.contains(&format!("done: 1 volume(s), {differing} blocks pulled")),
        "{seen}"
    );
    assert!(vm.wait_exit(Duration::from_secs(120)).success());

    assert!(
        std::fs::read(&s.target).unwrap() == s.new,
        "the local disk equals the served volume"
    );
    vm.drain();
    assert!(
        !vm.screen.contains(TOKEN) && !vm.log().contains(TOKEN),
        "the token is never shown, not even as typed"
    );
}
