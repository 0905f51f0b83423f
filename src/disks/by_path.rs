//! A disk's place on the machine's buses, in the form udev gives its `/dev/disk/by-path`
//! links (there is no udev in the image): `pci-0000:03:00.0-scsi-0:0:1:0`. It names the
//! controller's PCI function and the port or target on it, so it stays the same across
//! boots when `sdX` names do not (several controllers probe in any order).
//!
//! The forms made, as udev's `path_id` makes them: SCSI (`-scsi-H:C:T:L`, H counted from
//! the controller's first host), ATA (`-ata-PORT.TARGET`), NVMe (`-nvme-NSID`), and the
//! bare PCI function for virtio-blk. SAS, USB and Fibre Channel disks get the SCSI form,
//! which is stable too but differs from udev's for those buses.

use std::fs;
use std::path::{Component, Path};

/// The by-path name of the disk whose sysfs directory (`/sys/block/NAME`, a link into
/// `/sys/devices`) is `dir`, or `None` when it is on no PCI bus.
pub fn of(dir: &Path) -> Option<String> {
    let real = fs::canonicalize(dir).ok()?;
    let parts: Vec<&str> = real
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    // The controller: the PCI function nearest the disk.
    let pci_at = parts.iter().rposition(|p| is_pci_function(p))?;
    let controller = real
        .ancestors()
        .nth(parts.len() - 1 - pci_at)
        .expect("the PCI function is an ancestor");
    let below = &parts[pci_at + 1..];
    let mut path = format!("pci-{}", parts[pci_at]);
    if let Some(ata) = below.iter().position(|p| ata_port(p).is_some()) {
        let port = fs::read_to_string(
            controller
                .join(below[ata])
                .join("ata_port")
                .join(below[ata])
                .join("port_no"),
        )
        .ok()
        .map(|s| s.trim().to_string())
        .or_else(|| ata_port(below[ata]).map(str::to_string))?;
        let target = below.iter().find_map(|p| scsi_address(p))?[2];
        path += &format!("-ata-{port}.{target}");
    } else if let Some([host, channel, target, lun]) = below.iter().find_map(|p| scsi_address(p)) {
        // udev counts hosts from the controller's first, so that another controller
        // probing first does not shift the number.
        let base = first_host(controller, below).unwrap_or(host);
        path += &format!("-scsi-{}:{channel}:{target}:{lun}", host - base);
    } else if below.iter().any(|p| p.starts_with("nvme")) {
        let nsid = fs::read_to_string(dir.join("nsid")).ok()?;
        path += &format!("-nvme-{}", nsid.trim());
    }
    Some(path)
}

/// `0000:03:00.0`: domain, bus, device, function.
fn is_pci_function(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s.chars()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// `ata3` → `3`.
fn ata_port(s: &str) -> Option<&str> {
    s.strip_prefix("ata")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `2:0:1:0` (host, channel, target, LUN).
fn scsi_address(s: &str) -> Option<[u64; 4]> {
    let mut numbers = s.split(':').map(|n| n.parse::<u64>().ok());
    let address = [
        numbers.next()??,
        numbers.next()??,
        numbers.next()??,
        numbers.next()??,
    ];
    numbers.next().is_none().then_some(address)
}

/// The lowest SCSI host number in the directory that holds this disk's host.
fn first_host(controller: &Path, below: &[&str]) -> Option<u64> {
    let at = below.iter().position(|p| p.starts_with("host"))?;
    let dir = below[..at]
        .iter()
        .fold(controller.to_path_buf(), |d, p| d.join(p));
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            name.to_str()?.strip_prefix("host")?.parse().ok()
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sys/block/NAME` → `sys/devices/DEVICE/block/NAME`, as the kernel links them.
    fn link(sys: &Path, name: &str, device: &str) -> std::path::PathBuf {
        let real = sys.join("devices").join(device).join("block").join(name);
        fs::create_dir_all(&real).unwrap();
        fs::create_dir_all(sys.join("block")).unwrap();
        let block = sys.join("block").join(name);
        std::os::unix::fs::symlink(&real, &block).unwrap();
        block
    }

    #[test]
    fn scsi_hosts_count_from_the_controllers_first() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        // A second host on the same controller (host3 beside host2): counted from host2.
        fs::create_dir_all(sys.join("devices/pci0000:00/0000:00:04.0/virtio1/host2")).unwrap();
        let sdb = link(
            sys,
            "sdb",
            "pci0000:00/0000:00:04.0/virtio1/host3/target3:0:1/3:0:1:0",
        );
        assert_eq!(of(&sdb).as_deref(), Some("pci-0000:00:04.0-scsi-1:0:1:0"));
    }

    #[test]
    fn behind_a_bridge_the_nearest_function_names_the_controller() {
        let tmp = tempfile::tempdir().unwrap();
        let sda = link(
            tmp.path(),
            "sda",
            "pci0000:00/0000:00:1c.0/0000:03:00.0/host0/target0:0:0/0:0:0:0",
        );
        assert_eq!(of(&sda).as_deref(), Some("pci-0000:03:00.0-scsi-0:0:0:0"));
    }

    #[test]
    fn ata_nvme_and_virtio_blk_forms() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        let sda = link(
            sys,
            "sda",
            "pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0",
        );
        let port = sys.join("devices/pci0000:00/0000:00:1f.2/ata3/ata_port/ata3");
        fs::create_dir_all(&port).unwrap();
        fs::write(port.join("port_no"), "3\n").unwrap();
        assert_eq!(of(&sda).as_deref(), Some("pci-0000:00:1f.2-ata-3.0"));

        let nvme = link(sys, "nvme0n2", "pci0000:00/0000:00:05.0/nvme/nvme0");
        fs::write(nvme.join("nsid"), "2\n").unwrap();
        assert_eq!(of(&nvme).as_deref(), Some("pci-0000:00:05.0-nvme-2"));

        let vda = link(sys, "vda", "pci0000:00/0000:00:06.0/virtio3");
        assert_eq!(of(&vda).as_deref(), Some("pci-0000:00:06.0"));
    }

    #[test]
    fn off_the_pci_bus_there_is_no_path() {
        let tmp = tempfile::tempdir().unwrap();
        let loop0 = link(tmp.path(), "loop0", "virtual");
        assert_eq!(of(&loop0), None);
        assert_eq!(of(&tmp.path().join("missing")), None);
    }
}
