//! PID 1: early userspace in the initramfs. Mounts the kernel filesystems,
//! loads drivers, tells the operator what it sees, and never lets the kernel
//! panic: every failure becomes an `error` event followed by `failback.after`.

pub mod coldplug;
pub mod console;
mod efi;
mod esp;
mod load_option;
mod next_boot;
mod pull;
mod shell;
mod ui;

use crate::cmdline::Cmdline;
use crate::config::{After, IpConfig, Preset, Progress};
use crate::disks;
use crate::net::{self, clock};
use crate::report::{ConsoleReporter, Event, Reporter, Style};
use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

/// The preset baked into the image by `failback build --config`.
const PRESET: &str = "/etc/failback.toml";

/// How long DHCP may take on one link before the next is tried.
const DHCP_TIMEOUT: Duration = Duration::from_secs(15);

/// What this boot runs with: the preset, overridden by the command line.
struct Settings {
    cmdline: Cmdline,
    preset: Preset,
    after: After,
    ip: IpConfig,
    dhcp_timeout: Duration,
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
        let preset = preset.overlay(&cmdline);
        let after = preset.after.unwrap_or(After::Wait);
        let style = match preset.progress {
            Some(Progress::Json) => Style::Json,
            _ => Style::Text,
        };
        let ip = preset.ip.clone().unwrap_or(IpConfig::Dhcp);
        let dhcp_timeout = cmdline.dhcp_timeout.unwrap_or(DHCP_TIMEOUT);
        (
            Settings {
                cmdline,
                preset,
                after,
                style,
                ip,
                dhcp_timeout,
            },
            problems,
        )
    }

    /// Whether to ask the operator when no source is configured: on a text console,
    /// unless unattended (JSON progress is for automation, which configures a source).
    fn interactive(&self) -> bool {
        self.style == Style::Text && !self.preset.unattended
    }

    fn host(&self) -> Option<String> {
        self.cmdline.host.clone()
    }
}

/// Runs as `/init`; never returns.
pub fn main() -> ! {
    // First: every thread started later inherits the signal mask.
    serve_power_signals();
    let mounted = mount_kernel_filesystems();
    // Before anything is printed: every console shows it.
    let consoles = console::mirror().unwrap_or_default();
    let (settings, problems) = Settings::load();
    let reporter = ConsoleReporter::new(std::io::stdout(), settings.style);
    if !settings.cmdline.debug {
        // Keep kernel chatter below errors off the console so that events stay readable.
        let _ = std::fs::write("/proc/sys/kernel/printk", "4");
    }
    let result = mounted
        .and_then(|()| problems.into_iter().next().map_or(Ok(()), Err))
        .and_then(|()| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(&settings, &reporter, consoles)
            }))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("internal error (panic); please report it")))
        });
    let after = result.unwrap_or_else(|err| {
        reporter.report(&Event::Error {
            message: format!("{err:#}"),
        });
        settings.after
    });
    finish(after)
}

/// The client flow: what PID 1 does between boot and `failback.after`; returns what
/// to do then (`failback.after`, unless a reboot would boot this image again).
/// `consoles`: the consoles PID 1 mirrors its output to (none: only /dev/console).
fn run(settings: &Settings, console: &dyn Reporter, consoles: Vec<String>) -> Result<After> {
    // What happens before the pull reaches its collector too, once the pull begins.
    let early = Early {
        console,
        kept: Default::default(),
    };
    let reporter: &dyn Reporter = &early;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("cannot read the kernel release")?;
    let modules_dir = Path::new("/lib/modules").join(release.trim());
    let modules = coldplug::Modules::open(&modules_dir)?;
    let mut loader = coldplug::KernelLoader::new(settings.cmdline.module_params.clone());
    let secure_boot = efi::secure_boot(|name| {
        let mut cp = coldplug::Coldplug::new(&modules, &mut loader);
        cp.load(name);
    });
    reporter.report(&Event::Boot {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: uptime(),
        secure_boot,
        host: settings.host(),
        consoles,
    });

    let outcome = coldplug::Coldplug::new(&modules, &mut loader).run(
        Path::new("/sys"),
        Duration::from_millis(1000),
        Duration::from_secs(60),
    );
    reporter.report(&Event::Drivers {
        loaded: outcome.loaded,
        failed: outcome.failed,
        params: loader.applied(Path::new("/sys")),
        uptime_s: uptime(),
    });

    if settings.preset.vlan.is_some() {
        // VLAN devices need 8021q, which no device asks for by modalias (and
        // the kernel's own request_module has no modprobe to call here).
        coldplug::Coldplug::new(&modules, &mut loader).load("8021q");
    }

    let mut disks = disks::discover(Path::new("/sys/block"))?;
    let own_image = settings.cmdline.image.as_deref();
    disks::identify(&mut disks, Path::new("/dev"), own_image);
    reporter.report(&Event::Disks {
        disks: disks.clone(),
    });

    wait_for_entropy(reporter);
    let mut report = pull::report_to(&settings.preset, settings.host()).unwrap_or_else(|e| {
        reporter.report(&Event::Notice {
            message: format!("no report to the collector: {e:#}"),
        });
        crate::sync::session::ReportTo {
            host: settings.host(),
            ..Default::default()
        }
    });
    report.early = early.kept.clone();
    let pull = pull::PullSettings::resolve(&settings.preset).map(|p| p.reporting(report.clone()));
    if pull.is_none() && settings.interactive() {
        let known = ui::Known {
            preset: &settings.preset,
            ip: &settings.ip,
            report,
        };
        // The network is reported as soon as it is up, with the clock if NTP set it;
        // else the chosen source's Date sets it and the network is reported again.
        let network = std::cell::RefCell::new(None::<net::Network>);
        let after = ui::run(
            &known,
            ui::Boot {
                reporter,
                disks: &disks,
                configure: &mut |ip| {
                    let up = configure_network(settings, ip, None, reporter)?;
                    *network.borrow_mut() = Some(up);
                    Ok(())
                },
                clock: &mut |pull| {
                    let mut network = network.borrow_mut();
                    let unset = |n: &&mut net::Network| {
                        n.clock
                            .as_ref()
                            .is_none_or(|c| c.source == clock::ClockSource::Unset)
                    };
                    if let Some(n) = network.as_mut().filter(unset) {
                        n.clock = Some(set_clock(
                            settings.preset.ntp.as_deref(),
                            &n.ntp,
                            Some(pull),
                        ));
                        reporter.report(&Event::Network {
                            network: n.clone(),
                            uptime_s: uptime(),
                        });
                    }
                },
                finish: &mut |reporter, pulled| next(settings, reporter, pulled, &disks),
            },
        )?;
        return Ok(after.unwrap_or(settings.after));
    }
    configure_network(settings, &settings.ip, pull.as_ref(), reporter)?;

    let Some(pull) = pull else {
        reporter.report(&Event::Notice {
            message: "no source configured (failback.source= or the preset): nothing to pull"
                .into(),
        });
        return Ok(settings.after);
    };
    pull.run(reporter, &disks, &mut |reporter, pulled| {
        next(settings, reporter, pulled, &disks)
    })
}

/// The console, keeping the events told before a pull (boot, drivers, disks,
/// network, notices) for its collector.
struct Early<'a> {
    console: &'a dyn Reporter,
    kept: std::sync::Arc<std::sync::Mutex<Vec<Event>>>,
}

impl Reporter for Early<'_> {
    fn report(&self, event: &Event) {
        self.console.report(event);
        let early = matches!(
            event,
            Event::Boot { .. }
                | Event::Drivers { .. }
                | Event::Disks { .. }
                | Event::Network { .. }
                | Event::Notice { .. }
                | Event::Waiting { .. }
        );
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if early && kept.len() < 32 {
            kept.push(event.clone());
        }
    }
}

/// What follows a pull: `failback.after`, with the next boot prepared for a reboot
/// (see [`next_boot`]); told on `reporter`, the console and the pull's collector.
fn next(
    settings: &Settings,
    reporter: &dyn Reporter,
    pulled: &pull::Pulled,
    disks: &[disks::Disk],
) -> After {
    let machine = next_boot::Machine {
        sys_block: Path::new("/sys/block"),
        dev: Path::new("/dev"),
        disks,
        own_image: settings.cmdline.image.as_deref(),
        efi: efi::Vars::system(),
    };
    next_boot::prepare(reporter, pulled, &machine, settings.after)
}

/// Sets the system clock before any TLS: from the NTP server given
/// (`failback.ntp=`, the preset), else those DHCP named (option 42), else the
/// `Date` of the source's HTTPS answer (the agent's or the EBS endpoint's).
/// Never fails: what went wrong is in the result's `problem`.
fn set_clock(
    given: Option<&str>,
    dhcp: &[std::net::Ipv4Addr],
    pull: Option<&pull::PullSettings>,
) -> clock::ClockSet {
    let mut problems = Vec::new();
    let servers = given
        .map(str::to_string)
        .into_iter()
        .chain(dhcp.iter().map(|a| a.to_string()));
    for server in servers {
        let stepped = clock::Server::parse(&server).and_then(|server| {
            let addr = server.resolve(clock::system_dns, Duration::from_secs(3))?;
            let offset = clock::query(addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
            clock::step(offset).map_err(|e| e.to_string())?;
            Ok((addr, offset))
        });
        match stepped {
            Ok((addr, offset)) => {
                return clock::ClockSet {
                    source: clock::ClockSource::Ntp,
                    server: Some(addr.to_string()),
                    step_s: offset,
                    problem: None,
                };
            }
            Err(e) => problems.push(e),
        }
    }
    if let Some(pull) = pull {
        match pull.date_offset() {
            Ok((url, offset)) => {
                // The header counts whole seconds: a smaller difference is noise.
                let step = if offset.abs() >= 2.0 { offset } else { 0.0 };
                let set = if step == 0.0 {
                    Ok(())
                } else {
                    clock::step(step)
                };
                match set {
                    Ok(()) => {
                        return clock::ClockSet {
                            source: clock::ClockSource::HttpDate,
                            server: Some(url),
                            step_s: step,
                            problem: None,
                        };
                    }
                    Err(e) => problems.push(e.to_string()),
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if problems.is_empty() {
        problems.push("no NTP server and no source to ask for the time".into());
    }
    clock::ClockSet {
        source: clock::ClockSource::Unset,
        server: None,
        step_s: 0.0,
        problem: Some(problems.join("; ")),
    }
}

/// Configures the network as `ip` says (on the VLAN, if any), keeps a DHCP lease,
/// sets the clock (NTP, else the `Date` of `pull`'s source), and reports it all.
fn configure_network(
    settings: &Settings,
    ip: &IpConfig,
    pull: Option<&pull::PullSettings>,
    reporter: &dyn Reporter,
) -> Result<net::Network> {
    let mut configured = net::configure(ip, settings.dhcp_timeout, settings.preset.vlan)?;
    let style = settings.style;
    let first_renewal = settings.cmdline.dhcp_renew;
    configured.keep_lease(first_renewal, move |message| {
        ConsoleReporter::new(std::io::stdout(), style).report(&Event::Notice { message })
    });
    let clock = set_clock(
        settings.preset.ntp.as_deref(),
        &configured.network.ntp,
        pull,
    );
    configured.network.clock = Some(clock);
    reporter.report(&Event::Network {
        network: configured.network.clone(),
        uptime_s: uptime(),
    });
    Ok(configured.network)
}

/// TLS and DHCP need random numbers; before the kernel's generator is seeded
/// they would block without a word. Say why, then wait.
fn wait_for_entropy(reporter: &dyn Reporter) {
    let mut byte = [0u8; 1];
    // SAFETY: getrandom(2) writes at most one byte into `byte`.
    let ready = unsafe { libc::getrandom(byte.as_mut_ptr().cast(), 1, libc::GRND_NONBLOCK) } == 1;
    if !ready {
        reporter.report(&Event::Waiting {
            what: "the kernel's random number generator to be seeded (a CPU with RDRAND or a virtio-rng device makes this instant)".into(),
        });
        // SAFETY: as above, blocking this time.
        unsafe { libc::getrandom(byte.as_mut_ptr().cast(), 1, 0) };
    }
}

/// Mounts /proc, /sys, /dev (devtmpfs) and /run; already mounted is fine.
pub fn mount_kernel_filesystems() -> Result<()> {
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
        After::Shell if shell::available() => {
            run_shell();
            wait_for_operator()
        }
        After::Shell => {
            println!("failback: this image has no shell; waiting for the operator instead");
            wait_for_operator()
        }
        After::Wait => wait_for_operator(),
    }
}

/// The diagnostics shell; when it exits, back to PID 1.
fn run_shell() {
    match shell::run() {
        Ok(()) => println!("failback: the shell exited"),
        Err(e) => println!("failback: {e}"),
    }
}

fn wait_for_operator() -> ! {
    let stdin = std::io::stdin();
    let shell = shell::available();
    loop {
        if shell {
            println!("failback: type 'reboot', 'poweroff' or 'shell' and press Enter");
        } else {
            println!("failback: type 'reboot' or 'poweroff' and press Enter");
        }
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => std::thread::sleep(Duration::from_secs(3600)),
            Ok(_) => match line.trim() {
                "reboot" => power(nix::sys::reboot::RebootMode::RB_AUTOBOOT),
                "poweroff" => power(nix::sys::reboot::RebootMode::RB_POWER_OFF),
                "shell" if shell => run_shell(),
                _ => {}
            },
        }
    }
}

/// busybox's `reboot`, `poweroff` and `halt` (in the diagnostics shell) ask init by
/// signal: SIGTERM, SIGUSR2 and SIGUSR1. The kernel delivers no signal to PID 1 that
/// it does not handle or block: blocked here (in every thread: spawned ones inherit
/// the mask; children get a clean one from `Command`) and taken by one thread.
fn serve_power_signals() {
    use nix::sys::reboot::RebootMode;
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGUSR1, Signal::SIGUSR2] {
        set.add(signal);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        loop {
            let (mode, what) = match set.wait() {
                Ok(Signal::SIGTERM) => (RebootMode::RB_AUTOBOOT, "reboot"),
                Ok(Signal::SIGUSR2) => (RebootMode::RB_POWER_OFF, "poweroff"),
                Ok(Signal::SIGUSR1) => (RebootMode::RB_HALT_SYSTEM, "halt"),
                _ => continue,
            };
            println!("failback: {what} asked by signal");
            power(mode);
        }
    });
}

fn power(mode: nix::sys::reboot::RebootMode) -> ! {
    nix::unistd::sync();
    console::drain(Duration::from_secs(2));
    let err = nix::sys::reboot::reboot(mode).unwrap_err();
    println!("failback: {mode:?} failed: {err}; waiting for the operator");
    wait_for_operator()
}
