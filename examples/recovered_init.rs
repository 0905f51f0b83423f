//! A stand-in for the operating system a host boots after failback, used by the
//! end-to-end test and `scripts/demo.sh`: built into an image by `failback build
//! --client` (as its `/init`) and written to the "system" volume the agent serves.
//!
//! As PID 1 it mounts the kernel filesystems, loads the drivers its disk needs, finds
//! the disk it booted from (the one carrying its own image mark, as the client finds
//! its boot medium), prints `RECOVERED <disk> sha256=<SHA-256 of the whole disk>` and
//! powers off. Success of a failback is then: the host boots, and the digest is the
//! served volume's.

use failback::boot::{coldplug, mount_kernel_filesystems};
use failback::disks;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

fn main() {
    if let Err(e) = run() {
        println!("RECOVERY CHECK FAILED: {e:#}");
    }
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn run() -> anyhow::Result<()> {
    mount_kernel_filesystems()?;
    let _ = std::fs::write("/proc/sys/kernel/printk", "4");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let modules = coldplug::Modules::open(&Path::new("/lib/modules").join(release.trim()))?;
    let mut loader = coldplug::KernelLoader::new(Default::default());
    coldplug::Coldplug::new(&modules, &mut loader).run(
        Path::new("/sys"),
        Duration::from_millis(500),
        Duration::from_secs(30),
    );
    let cmdline = std::fs::read_to_string("/proc/cmdline")?;
    let image = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("failback.image="))
        .ok_or_else(|| anyhow::anyhow!("no failback.image= on the kernel command line"))?;
    let mut found = disks::discover(Path::new("/sys/block"))?;
    disks::identify(&mut found, Path::new("/dev"), Some(image));
    let disk = found
        .iter()
        .find(|d| d.boot_medium)
        .ok_or_else(|| anyhow::anyhow!("no disk carries image {image}"))?;
    let mut file = std::fs::File::open(Path::new("/dev").join(&disk.name))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    println!(
        "RECOVERED {} sha256={}",
        disk.name,
        hex::encode(hasher.finalize())
    );
    Ok(())
}
