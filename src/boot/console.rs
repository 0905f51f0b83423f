//! The consoles PID 1 talks to. The kernel gives PID 1 one console, `/dev/console` (the
//! last `console=`), but the operator may be looking at another: the ISO boots with
//! `console=tty0 console=ttyS0,115200`, so a BMC's VGA view would show only the kernel's
//! messages. With several active consoles, PID 1's stdout and stderr become a pipe that
//! a thread copies to each of them, and its stdin a pipe fed from all of them: the
//! client reads and writes as if there were one console.
//!
//! The kernel prints to one serial port only, but a server's BMC may be on another: HP
//! iLO's Virtual Serial Port and Dell iDRAC's Serial-over-LAN are COM2 (`ttyS1`) by
//! default. So the first two serial ports are mirrored too when a UART is there.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex, OnceLock};

/// The consoles' ttys, for switching their echo; empty: stdin is the console.
static TTYS: OnceLock<Vec<File>> = OnceLock::new();

/// The serial ports mirrored when their UART is there, console or not: COM1 and COM2.
const SERIAL_PORTS: [&str; 2] = ["ttyS0", "ttyS1"];

/// Device paths of the active consoles named in `/sys/class/tty/console/active`
/// (e.g. `tty0 ttyS0`), then of the `uarts` that are not consoles; `tty0`, "the current
/// virtual terminal", is tty1 at boot.
pub fn devices(active: &str, uarts: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in active.split_whitespace().chain(uarts.iter().copied()) {
        let name = if name == "tty0" { "tty1" } else { name };
        let path = format!("/dev/{name}");
        if !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// Mirrors PID 1's standard streams over every active console, when there are
/// several; returns the consoles mirrored (none: left as they were).
pub fn mirror() -> std::io::Result<Vec<String>> {
    let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    let uarts: Vec<&str> = SERIAL_PORTS
        .into_iter()
        .filter(|port| uart_present(port))
        .collect();
    let devices = devices(&active, &uarts);
    let open = |path: &str, write: bool| {
        OpenOptions::new()
            .read(!write)
            .write(write)
            // A port with no carrier would block the open: the BMC may not be listening.
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(path)
            .and_then(blocking)
    };
    if devices.len() < 2 {
        // One console: stdout is it.
        print!("{LINE_WRAP_ON}");
        return Ok(Vec::new());
    }
    let mut outputs = Vec::new();
    let mut inputs = Vec::new();
    for path in &devices {
        let mut output = open(path, true)?;
        let console = active.split_whitespace().any(|c| path.ends_with(c));
        if path.starts_with("/dev/ttyS") && !console {
            serial_line(&output);
        }
        let _ = output.write_all(LINE_WRAP_ON.as_bytes());
        outputs.push(output);
        inputs.push(open(path, false)?);
    }

    let (from_client, to_consoles) = nix::unistd::pipe()?;
    let (from_consoles, to_client) = nix::unistd::pipe()?;
    std::thread::spawn(move || copy_out(File::from(from_client), outputs));
    let to_client = Arc::new(Mutex::new(File::from(to_client)));
    for tty in &inputs {
        let (tty, to) = (tty.try_clone()?, to_client.clone());
        std::thread::spawn(move || copy_in(tty, &to));
    }
    let _ = TTYS.set(inputs);
    nix::unistd::dup2_stdout(&to_consoles)?;
    nix::unistd::dup2_stderr(&to_consoles)?;
    nix::unistd::dup2_stdin(&from_consoles)?;
    Ok(devices)
}

/// Turns a terminal's line wrap back on (DECAWM): the boot loaders before us may leave it
/// off (`ESC[?7l`), and every line longer than the terminal would then be cut, errors too.
pub const LINE_WRAP_ON: &str = "\x1b[?7h";

/// Whether the serial port `name` (`ttyS1`) has a UART: the 8250 driver makes ttyS0-3
/// whatever the machine has, and marks an absent port's type 0 (`PORT_UNKNOWN`).
fn uart_present(name: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/tty/{name}/type"))
        .is_ok_and(|t| !matches!(t.trim(), "" | "0"))
}

/// Clears `O_NONBLOCK` once the tty is open: the mirroring threads block as usual.
fn blocking(file: File) -> std::io::Result<File> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
    fcntl(&file, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok(file)
}

/// Sets a serial port the kernel did not set up as a console to what BMCs expect:
/// 115200 baud, 8N1, no modem control (the port's default is 9600).
fn serial_line(tty: &File) {
    use nix::sys::termios::{ControlFlags, SetArg, tcgetattr, tcsetattr};
    let Ok(mut mode) = tcgetattr(tty) else {
        return;
    };
    // The speed bits of c_cflag, set directly: glibc's cfsetspeed is a versioned symbol
    // a static link does not find.
    mode.control_flags
        .remove(ControlFlags::from_bits_retain(libc::CBAUD));
    mode.control_flags |= ControlFlags::from_bits_retain(libc::B115200)
        | ControlFlags::CS8
        | ControlFlags::CLOCAL
        | ControlFlags::CREAD;
    let _ = tcsetattr(tty, SetArg::TCSANOW, &mode);
}

/// Waits (at most `limit`) until what PID 1 wrote has left for the consoles: the pipe
/// to the mirroring thread empty, then each tty's output sent. Before a reboot or a
/// power-off, which would cut off the last lines (an error, why it reboots).
pub fn drain(limit: std::time::Duration) {
    use std::os::fd::AsRawFd;
    let deadline = std::time::Instant::now() + limit;
    let stdout = std::io::stdout();
    let _ = stdout.lock().flush();
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int into `queued`, which outlives the call; fd 1 is
        // open (a pipe, or the console). nix has no FIONREAD call, only macros that
        // generate an unsafe one.
        let ok = unsafe { libc::ioctl(stdout.as_raw_fd(), libc::FIONREAD, &mut queued) } == 0;
        if !ok || queued == 0 || std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The mirroring thread may still hold its last read: a moment to write it.
    std::thread::sleep(std::time::Duration::from_millis(50));
    each_tty(|tty| {
        let _ = nix::sys::termios::tcdrain(tty);
    });
}

/// Copies what the client writes to every console; one that fails is left out.
fn copy_out(mut from: File, mut consoles: Vec<File>) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        consoles.retain_mut(|c| c.write_all(&buf[..n]).is_ok());
    }
}

/// Hands what is typed on one console to the client.
fn copy_in(mut tty: File, to: &Mutex<File>) {
    let mut buf = [0u8; 1024];
    while let Ok(n @ 1..) = tty.read(&mut buf) {
        let mut to = to.lock().unwrap_or_else(|p| p.into_inner());
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Calls `f` with each tty PID 1 reads: the mirrored consoles, else stdin (the console).
fn each_tty(mut f: impl FnMut(BorrowedFd<'_>)) {
    let stdin = std::io::stdin();
    match TTYS.get() {
        Some(ttys) => ttys.iter().for_each(|t| f(t.as_fd())),
        None => f(stdin.as_fd()),
    }
}

/// Stops (`true`) or resumes echoing what is typed, on every console PID 1 reads
/// (for secrets); the Enter is still echoed so that the next line starts below.
pub fn hide_typing(hidden: bool) {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    each_tty(|tty| {
        // Not a tty (a pipe, in tests): nothing is echoed anyway.
        let Ok(mut mode) = tcgetattr(tty) else {
            return;
        };
        mode.local_flags.set(LocalFlags::ECHO, !hidden);
        mode.local_flags.set(LocalFlags::ECHONL, hidden);
        let _ = tcsetattr(tty, SetArg::TCSANOW, &mode);
    });
}

/// Passes every key through as typed (no line editing, echo or signal keys) and every
/// byte written as it is (no newline translation) on every console PID 1 reads, until
/// the guard is dropped: for a terminal that does all that itself, the diagnostics
/// shell's pty.
pub fn raw_typing() -> RawTyping {
    use nix::sys::termios::{
        InputFlags, LocalFlags, OutputFlags, SetArg, SpecialCharacterIndices, tcgetattr, tcsetattr,
    };
    let mut saved = Vec::new();
    each_tty(|tty| {
        let mode = tcgetattr(tty).ok();
        if let Some(mode) = &mode {
            let mut raw = mode.clone();
            raw.input_flags.remove(
                InputFlags::ICRNL
                    | InputFlags::INLCR
                    | InputFlags::IGNCR
                    | InputFlags::IXON
                    | InputFlags::BRKINT
                    | InputFlags::ISTRIP,
            );
            raw.local_flags.remove(
                LocalFlags::ICANON
                    | LocalFlags::ECHO
                    | LocalFlags::ECHONL
                    | LocalFlags::ISIG
                    | LocalFlags::IEXTEN,
            );
            raw.output_flags.remove(OutputFlags::OPOST);
            raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
            raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
            let _ = tcsetattr(tty, SetArg::TCSANOW, &raw);
        }
        saved.push(mode);
    });
    RawTyping(saved)
}

/// The consoles' modes before [`raw_typing`], put back when dropped.
pub struct RawTyping(Vec<Option<nix::sys::termios::Termios>>);

impl Drop for RawTyping {
    fn drop(&mut self) {
        let mut saved = self.0.iter();
        each_tty(|tty| {
            if let Some(Some(mode)) = saved.next() {
                let _ = nix::sys::termios::tcsetattr(tty, nix::sys::termios::SetArg::TCSANOW, mode);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_active_consoles_become_devices_once_each() {
        assert_eq!(devices("tty0 ttyS0\n", &[]), ["/dev/tty1", "/dev/ttyS0"]);
        assert_eq!(devices("ttyS0", &[]), ["/dev/ttyS0"]);
        assert_eq!(devices("tty1 tty0", &[]), ["/dev/tty1"]);
        assert!(devices("", &[]).is_empty());
    }

    #[test]
    fn the_bmc_serial_ports_join_the_consoles_once() {
        assert_eq!(
            devices("tty0 ttyS0", &["ttyS0", "ttyS1"]),
            ["/dev/tty1", "/dev/ttyS0", "/dev/ttyS1"]
        );
        assert_eq!(
            devices("tty0 ttyS1", &["ttyS0", "ttyS1"]),
            ["/dev/tty1", "/dev/ttyS1", "/dev/ttyS0"]
        );
    }
}
