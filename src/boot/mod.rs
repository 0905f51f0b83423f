//! PID 1: early userspace in the initramfs. Mounts the kernel filesystems,
//! loads drivers, tells the operator what it sees, and never lets the kernel
//! panic: every failure becomes an `error` event followed by `failback.after`.

mod cmdline;
mod coldplug;
mod efi;

use cmdline::Cmdline;

use crate::config::{After, Preset, Progress};
use crate::disks;
use crate::events::{ConsoleReporter, Event, Reporter, Style};
use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

/// The preset baked into the image by `failback build --config`.
const PRESET: &str = "/etc/failback.toml";

/// What this boot runs with: the preset, overridden by the command line.
struct Settings {
    cmdline: Cmdline,
    after: After,
    style: Style,
}

impl Settings {
    /// Never fails: what cannot be read is returned as problems to report.
    fn load() -> (Self, Vec<anyhow::Error>) {
        let text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let (cmdline, errors) = Cmdline::parse(&text);
        let mut problems: Vec<anyhow::Error> = errors.into_iter().map(Into::into).collect();
        let preset = if Path::new(PRESET).exists() {
            Preset::load(Path::new(PRESET)).unwrap_or_else(|e| {
                problems.push(e.into());
                Preset::default()
            })
        } else {
            Preset::default()
        };
        let after = cmdline.after.or(preset.after).unwrap_or(After::Wait);
        let style = match cmdline.progress.or(preset.progress) {
            Some(Progress::Json) => Style::Json,
            _ => Style::Text,
        };
        (
            Settings {
                cmdline,
                after,
                style,
            },
            problems,
        )
    }

    fn host(&self) -> Option<String> {
        self.cmdline.host.clone()
    }
}

/// Runs as `/init`; never returns.
pub fn main() -> ! {
    let mounted = mount_kernel_filesystems();
    let (settings, problems) = Settings::load();
    let reporter = ConsoleReporter::new(std::io::stdout(), settings.style);
    if !settings.cmdline.debug {
        // Keep kernel chatter below errors off the console so that events stay readable.
        let _ = std::fs::write("/proc/sys/kernel/printk", "4");
    }
    let result = mounted
        .and_then(|()| problems.into_iter().next().map_or(Ok(()), Err))
        .and_then(|()| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&settings, &reporter)))
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!("internal error (panic); please report it"))
                })
        });
    if let Err(err) = result {
        reporter.report(&Event::Error {
            message: format!("{err:#}"),
        });
    }
    finish(settings.after)
}

/// The client flow: what PID 1 does between boot and `failback.after`.
fn run(settings: &Settings, reporter: &dyn Reporter) -> Result<()> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("cannot read the kernel release")?;
    let modules_dir = Path::new("/lib/modules").join(release.trim());
    let modules = coldplug::Modules::open(&modules_dir)?;
    let mut loader = coldplug::KernelLoader;
    let secure_boot = efi::secure_boot(|name| {
        let mut cp = coldplug::Coldplug::new(&modules, &mut loader);
        cp.load(name);
    });
    reporter.report(&Event::Boot {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: uptime(),
        secure_boot,
        host: settings.host(),
    });

    let outcome = coldplug::Coldplug::new(&modules, &mut loader).run(
        Path::new("/sys"),
        Duration::from_millis(1000),
        Duration::from_secs(60),
    );
    reporter.report(&Event::Drivers {
        loaded: outcome.loaded,
        failed: outcome.failed,
        uptime_s: uptime(),
    });

    let disks = disks::discover(Path::new("/sys/block"))?;
    reporter.report(&Event::Disks { disks });
    Ok(())
}

fn mount_kernel_filesystems() -> Result<()> {
    let mounts: [(&str, &str, &str, MsFlags); 4] = [
        (
            "proc",
            "/proc",
            "proc",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        ),
        (
            "sysfs",
            "/sys",
            "sysfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        ),
        ("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        ),
    ];
    for (source, target, fstype, flags) in mounts {
        std::fs::create_dir_all(target).with_context(|| format!("cannot create {target}"))?;
        match mount(Some(source), target, Some(fstype), flags, None::<&str>) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot mount {fstype} on {target}")),
        }
    }
    Ok(())
}

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Does what `failback.after` says. PID 1 must never exit (the kernel would panic).
fn finish(after: After) -> ! {
    match after {
        After::Poweroff => power(nix::sys::reboot::RebootMode::RB_POWER_OFF),
        After::Reboot => power(nix::sys::reboot::RebootMode::RB_AUTOBOOT),
        After::Shell => {
            println!("failback: this image has no shell; waiting for the operator instead");
            wait_for_operator()
        }
        After::Wait => wait_for_operator(),
    }
}

fn wait_for_operator() -> ! {
    let stdin = std::io::stdin();
    loop {
        println!("failback: type 'reboot' or 'poweroff' and press Enter");
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => std::thread::sleep(Duration::from_secs(3600)),
            Ok(_) => match line.trim() {
                "reboot" => power(nix::sys::reboot::RebootMode::RB_AUTOBOOT),
                "poweroff" => power(nix::sys::reboot::RebootMode::RB_POWER_OFF),
                _ => {}
            },
        }
    }
}

fn power(mode: nix::sys::reboot::RebootMode) -> ! {
    nix::unistd::sync();
    let err = nix::sys::reboot::reboot(mode).unwrap_err();
    println!("failback: {mode:?} failed: {err}; waiting for the operator");
    wait_for_operator()
}
