//! The diagnostics shell: busybox's `sh` (Debian's busybox-static, put in the image as
//! `/bin/busybox` by `failback build`), a child of PID 1 in a session of its own.
//!
//! Its controlling terminal is a pty that PID 1 relays to its own standard streams,
//! which are mirrored over every active console: the shell shows on all of them and
//! reads from all, like the client. Not a console itself: when a session leader exits,
//! the kernel hangs up its controlling terminal (unless a pty), which would cut PID 1
//! off that console. The consoles pass keys and output through as they are meanwhile;
//! the pty does the line editing, echo, newlines and Ctrl-C. The shell's exit,
//! whatever its status, returns to PID 1.

use super::console;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Where `failback build` puts busybox.
const BUSYBOX: &str = "/bin/busybox";

/// Whether the image has a shell.
pub fn available() -> bool {
    Path::new(BUSYBOX).is_file()
}

/// Runs the shell until it exits; `Err` says why it could not start.
pub fn run() -> Result<(), String> {
    // The applets as commands in /bin, for what looks commands up in PATH (Debian's
    // build also runs them from the shell without a lookup).
    Command::new(BUSYBOX)
        .args(["--install", "-s", "/bin"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {BUSYBOX}: {e}"))?;
    let (master, terminal) = open_pty().map_err(|e| format!("cannot open a pty: {e}"))?;
    println!("failback: diagnostics shell (busybox): type exit to return to failback");
    let _ = std::io::stdout().flush();
    let _raw = console::raw_typing();
    let shell = spawn(terminal).map_err(|e| format!("cannot start the shell: {e}"))?;
    relay(&master, shell);
    Ok(())
}

/// A new pty: (master, terminal), neither inherited by what PID 1 runs.
fn open_pty() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // /dev/ptmx (devtmpfs) finds its pty instance at /dev/pts.
    std::fs::create_dir_all("/dev/pts").map_err(|_| nix::errno::Errno::EIO)?;
    match nix::mount::mount(
        Some("devpts"),
        "/dev/pts",
        Some("devpts"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NOEXEC,
        Some("mode=620,ptmxmode=666"),
    ) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
        Err(e) => return Err(e),
    }
    let pty = nix::pty::openpty(None, None)?;
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    Ok((pty.master, pty.slave))
}

/// Starts `busybox sh` with `terminal` as its standard streams and controlling terminal.
fn spawn(terminal: OwnedFd) -> std::io::Result<Pid> {
    let terminal = File::from(terminal);
    let mut shell = Command::new(BUSYBOX);
    shell
        .arg("sh")
        .env("PATH", "/bin")
        .env("HOME", "/")
        .env("PS1", r"(failback) \w # ")
        .stdin(terminal.try_clone()?)
        .stdout(terminal.try_clone()?)
        .stderr(terminal);
    // SAFETY: the closure runs between fork and exec, where only async-signal-safe
    // calls may be made: setsid(2) and ioctl(2) are, and nothing allocates (an Errno
    // becomes an io::Error as a plain number). `unsafe` because pre_exec is, and for
    // TIOCSCTTY, which nix has no safe call for: it takes no pointer, and fd 0 is the
    // terminal by then.
    unsafe {
        shell.pre_exec(|| {
            nix::unistd::setsid()?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // PID 1's copy of the terminal closes here: only the shell's remain.
    let pid = shell.spawn()?.id();
    Ok(Pid::from_raw(
        i32::try_from(pid).expect("a pid fits in pid_t"),
    ))
}

/// Copies what is typed (PID 1's stdin) to the pty and what the shell writes to PID
/// 1's stdout, until the shell has exited.
fn relay(master: &OwnedFd, shell: Pid) {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut typing = true;
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if typing {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        // A timeout, to notice the shell's exit while a job it left holds the pty open.
        let _ = poll(&mut fds, PollTimeout::from(200u16));
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        if ready[0] {
            match nix::unistd::read(master, &mut buf) {
                Ok(n @ 1..) => {
                    let _ = stdout.write_all(&buf[..n]);
                    let _ = stdout.flush();
                }
                // Every copy of the terminal closed: the shell is ending.
                _ => {
                    reap(shell, true);
                    return;
                }
            }
        }
        if typing && ready[1] {
            match nix::unistd::read(&stdin, &mut buf) {
                Ok(n @ 1..) => write_all(master, &buf[..n]),
                _ => typing = false,
            }
        }
        if reap(shell, false) {
            return;
        }
    }
}

fn write_all(fd: &OwnedFd, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Reaps the children that have ended (PID 1 inherits whatever the shell leaves
/// behind); true once the shell is among them. `block`: wait for it.
fn reap(shell: Pid, block: bool) -> bool {
    let flags = (!block).then_some(WaitPidFlag::WNOHANG);
    loop {
        match waitpid(None, flags) {
            Ok(WaitStatus::StillAlive) => return false,
            Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)) if pid == shell => {
                return true;
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            // No child left (ECHILD).
            Err(_) => return true,
        }
    }
}
