//! The BMC's serial port: HP iLO's Virtual Serial Port and Dell iDRAC's Serial-over-LAN
//! are COM2 (`ttyS1`). The VMs here have two serial ports: COM1 into a file, COM2 on the
//! test's stdio, where the operator answers.

mod common;

use common::{
    Firmware, Medium, Terminal, Vm, build_into, kernel_args, need_qemu, out_dir, qemu_args,
};
use std::path::Path;
use std::time::Duration;

const STEP: Duration = Duration::from_secs(300);

/// What COM1's file holds once it shows `text` (the mirror writes each port in turn),
/// or after `STEP`.
fn com1_showing(com1: &Path, text: &str) -> String {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let seen = std::fs::read_to_string(com1).unwrap_or_default();
        if seen.contains(text) || std::time::Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// QEMU arguments for two serial ports: COM1 written to `com1`, COM2 on stdio.
fn two_ports(com1: &Path) -> Vec<String> {
    vec![
        "-serial".into(),
        format!("file:{}", com1.display()),
        "-serial".into(),
        "stdio".into(),
    ]
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn the_interactive_mode_is_answered_on_com2_while_the_kernel_console_is_com1() {
    need_qemu();
    let out = out_dir();
    let tmp = tempfile::tempdir().unwrap();
    let com1 = tmp.path().join("com1.log");
    let mut extra = two_ports(&com1);
    extra.extend(["-nic", "user,model=virtio-net-pci"].map(String::from));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    // The kernel's console is COM1 only; no source, so the client asks.
    let mut vm = Vm::start_interactive(&kernel_args(
        &out,
        "console=ttyS0,115200 failback.after=poweroff",
        &extra,
    ));
    vm.wait_text("== failback: interactive mode ==", STEP);
    vm.wait_text("Choice [1]: ", STEP);
    vm.send("\n");
    let seen = vm.wait_text("Pull from:", STEP);
    assert!(seen.contains("by dhcp"), "answered on COM2: {seen}");
    let on_com1 = com1_showing(&com1, "by dhcp");
    assert!(
        on_com1.contains("== failback: interactive mode ==") && on_com1.contains("by dhcp"),
        "COM1, the kernel's console, shows the same:\n{on_com1}"
    );
    assert!(
        vm.screen.contains("\x1b[?7h"),
        "line wrap is turned back on for the serial terminal"
    );
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn a_serial_ttys1_serial_menu_image_has_its_bios_menu_and_kernel_messages_on_com2() {
    need_qemu();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // For firmware without console redirection: isolinux drives COM2 itself.
    build_into(&out, &["--serial", "ttyS1", "--serial-menu"]);
    let com1 = tmp.path().join("com1.log");
    let mut args = qemu_args(
        &out.join("failback.iso"),
        Firmware::Bios,
        Medium::Cdrom,
        tmp.path(),
    );
    args.extend(two_ports(&com1));
    let mut vm = Vm::start_interactive(&args);
    // isolinux's prompt on COM2: choose the verbose entry there.
    vm.wait_text("ISOLINUX", STEP);
    vm.wait_text("boot:", STEP);
    vm.send("debug\n");
    let seen = vm.wait_text("== failback: interactive mode ==", STEP);
    assert!(
        seen.contains("Linux version"),
        "the kernel's messages are on COM2: {seen}"
    );
    let on_com1 = com1_showing(&com1, "== failback: interactive mode ==");
    // (SeaBIOS copies the screen's text to COM1, isolinux's prompt with it: only the
    // kernel's absence tells.)
    assert!(
        !on_com1.contains("Linux version"),
        "the kernel does not use COM1:\n{on_com1}"
    );
    assert!(
        on_com1.contains("== failback: interactive mode =="),
        "the client mirrors itself on COM1 too:\n{on_com1}"
    );
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86; scripts/moto-venv.sh for pyte)"]
fn a_bios_cd_boot_reads_cleanly_on_an_80_column_serial_terminal() {
    need_qemu();
    let out = out_dir();
    let tmp = tempfile::tempdir().unwrap();
    // QEMU without a display: SeaBIOS copies the screen to COM1 (its sercon, as a
    // server's BIOS console redirection does), the kernel's console is COM1 too.
    let args = qemu_args(
        &out.join("failback.iso"),
        Firmware::Bios,
        Medium::Cdrom,
        tmp.path(),
    );
    let mut vm = Vm::start_interactive(&args);
    // The menu as it stood when the kernel took over (SeaBIOS resets the terminal, ESC c,
    // as the kernel sets its video mode): everything isolinux and SeaBIOS sent is there.
    vm.wait_text("Choice [1]: ", STEP);
    let all = vm.screen.as_str();
    let client_starts = all.find("started after").expect("the client's first line");
    let kernel_starts = all[..client_starts].rfind("\x1bc").unwrap_or(client_starts);
    let menu = Terminal::render(&all[..kernel_starts], 80, 25);
    let version = env!("CARGO_PKG_VERSION");
    for row in [
        format!("failback {version} (FAILBACK)"),
        "  failback   boot and fail back the disks (default, in 3 s)".into(),
        "  debug      the same, verbose + debug".into(),
        "boot:".into(),
    ] {
        assert!(
            menu.has_row(&row),
            "the menu reads {row:?}:\n{}",
            menu.show()
        );
    }
    for once in ["ISOLINUX", "boot:"] {
        assert_eq!(
            menu.rows_containing(once),
            1,
            "{once} once:\n{}",
            menu.show()
        );
    }
    // No source configured: the client asks, with a line longer than the terminal.
    let client = Terminal::render(all, 80, 25);
    let long = "No source is configured (failback.source= or the preset). \
                Answer the questions below; Enter takes the [default].";
    assert!(long.len() > 80);
    assert!(
        client.shows_whole(long),
        "the long line reads whole (line wrap on):\n{}",
        client.show()
    );
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf; scripts/moto-venv.sh for pyte)"]
fn a_uefi_cd_boot_draws_the_grub_menu_once_on_the_serial_line() {
    need_qemu();
    let out = out_dir();
    let tmp = tempfile::tempdir().unwrap();
    // OVMF copies its console to COM1: GRUB draws there through it, and only through it.
    let args = qemu_args(
        &out.join("failback.iso"),
        Firmware::Uefi,
        Medium::Cdrom,
        tmp.path(),
    );
    let mut vm = Vm::start_interactive(&args);
    vm.wait_text("Booting `", STEP);
    // The menu as it stood at its last countdown, before GRUB cleared the screen; in
    // OVMF's text mode behind QEMU's 800x600 display, 100 x 31.
    let all = vm.screen.as_str();
    let countdown = all.rfind("automatically in").expect("GRUB's countdown");
    let cleared = countdown + all[countdown..].find("\x1b[2J").expect("a clear");
    let menu = Terminal::render(&all[..cleared], 100, 31);
    let version = env!("CARGO_PKG_VERSION");
    let entry = format!("failback {version} (FAILBACK)");
    for (text, rows) in [
        ("GNU GRUB", 1),
        (entry.as_str(), 2),
        ("(FAILBACK): verbose + debug", 1),
        ("The highlighted entry will be executed automatically", 1),
    ] {
        assert_eq!(
            menu.rows_containing(text),
            rows,
            "{text:?} on {rows} row(s):\n{}",
            menu.show()
        );
    }
}
