//! The diagnostics shell (`failback.after=shell`), typed at through the serial console
//! as an operator would: busybox's shell runs with a controlling terminal of its own
//! (a pty PID 1 relays over the mirrored consoles, ttyS0 and tty1 here), and its exit
//! returns to PID 1, which then waits for the operator on the same consoles (and can
//! start the shell again).

mod common;

use common::{disk_image, need_qemu, out_dir};
use std::time::Duration;

/// From one prompt to the next (TCG on a shared machine).
const STEP: Duration = Duration::from_secs(120);

const BANNER: &str = "failback: diagnostics shell (busybox): type exit to return to failback";
const PROMPT: &str = "(failback) / # ";
const WAITING: &str = "failback: type 'reboot', 'poweroff' or 'shell' and press Enter";

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn after_shell_gives_a_busybox_shell_on_the_console_and_its_exit_returns() {
    need_qemu();
    let out = out_dir();
    let tmp = tempfile::tempdir().unwrap();
    let disk = disk_image(tmp.path(), "disk.img", 32 << 20);
    // No source: nothing to pull (unattended, so nothing is asked); then the shell.
    let mut vm = common::Vm::start_interactive(&common::kernel_args(
        &out,
        "console=tty0 console=ttyS0 failback.unattended=1 failback.after=shell",
        &[
            "-device",
            "virtio-rng-pci",
            "-nic",
            "user,model=virtio-net-pci",
            "-drive",
            &format!("if=none,id=vd,format=raw,file={}", disk.display()),
            "-device",
            "virtio-blk-pci,drive=vd",
        ],
    ));

    vm.wait_text("nothing to pull", Duration::from_secs(300));
    vm.wait_text(BANNER, STEP);
    let started = vm.elapsed();
    vm.wait_text(PROMPT, STEP);
    // Arithmetic (the shell's own) and an applet; the answer is not in what was typed.
    vm.send("echo shell-says $((6*7)); ls /sys/class/block\n");
    vm.wait_text("shell-says 42", STEP);
    let listing = vm.wait_text(PROMPT, STEP);
    assert!(
        listing.contains("vda"),
        "the virtio disk is listed: {listing}"
    );
    eprintln!(
        "shell answered {:.1} s after its banner",
        vm.elapsed() - started
    );

    // The console is the shell's controlling terminal: Ctrl-C stops a foreground
    // command (and not PID 1).
    vm.send("sleep 600\n");
    vm.wait_text("sleep 600", STEP);
    std::thread::sleep(Duration::from_secs(2));
    vm.send("\x03");
    vm.wait_text(PROMPT, Duration::from_secs(60));
    vm.send("echo after-interrupt $((1+1))\n");
    vm.wait_text("after-interrupt 2", STEP);

    // Its exit, whatever the status, returns to PID 1, which waits for the operator.
    vm.send("exit 3\n");
    let seen = vm.wait_text(WAITING, STEP);
    assert!(seen.contains("failback: the shell exited"), "{seen}");
    // Input is PID 1's again, and the shell can be had again.
    vm.send("shell\n");
    vm.wait_text(BANNER, STEP);
    vm.wait_text(PROMPT, STEP);
    vm.send("echo second-time $((2*3))\n");
    vm.wait_text("second-time 6", STEP);
    // busybox's reboot (no -f) asks init, i.e. failback, by signal (SIGTERM).
    vm.send("reboot\n");
    vm.wait_text("failback: reboot asked by signal", STEP);
    let status = vm.wait_exit(STEP);
    assert!(
        status.success(),
        "QEMU exit {status} after the reboot (-no-reboot)"
    );
    assert!(!vm.screen.contains("Kernel panic"), "{}", vm.screen);
}
