//! Cloud images of the hybrid ISO, which is already a disk that BIOS and UEFI boot:
//! GCE's `disk.raw` in a tar.gz, Azure's fixed VHD and a qcow2 (OpenStack, Proxmox,
//! libvirt), under `cloud/` of the output directory.

pub mod gce;
pub mod qcow2;
pub mod vhd;

use crate::build::output;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The outputs, relative to the output directory.
pub const FILES: [&str; 3] = [
    "cloud/failback-gce.tar.gz",
    "cloud/failback-azure.vhd",
    "cloud/failback.qcow2",
];

/// `len` rounded up to a whole MiB, at least one: Azure's rule for disk sizes; qcow2
/// images use it too.
fn whole_mib(len: u64) -> u64 {
    len.div_ceil(1 << 20).max(1) << 20
}

/// `iso` padded with zeros to `size` bytes.
fn padded_disk(iso: &[u8], size: u64) -> Vec<u8> {
    let mut disk = iso.to_vec();
    disk.resize(
        usize::try_from(size).expect("a disk image fits in memory"),
        0,
    );
    disk
}

/// A UUID (RFC 9562 version 8, custom) from the disk's SHA-256: the same disk, the same id.
fn unique_id(disk: &[u8]) -> [u8; 16] {
    let mut id = [0u8; 16];
    id.copy_from_slice(&Sha256::digest(disk)[..16]);
    id[6] = (id[6] & 0x0f) | 0x80;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// Writes the three cloud images of the ISO at `iso` under `out/cloud/`.
pub fn write(iso: &Path, out: &Path, epoch: u32) -> Result<(), output::Error> {
    let iso_bytes = std::fs::read(iso).map_err(|source| output::Error {
        path: iso.into(),
        source,
    })?;
    let epoch = u64::from(epoch);
    output::write_atomic_with(&out.join(FILES[0]), |w| gce::write(w, &iso_bytes, epoch))?;
    let len = iso_bytes.len() as u64;
    let azure = padded_disk(&iso_bytes, vhd::disk_size(len));
    output::write_atomic_with(&out.join(FILES[1]), |w| {
        vhd::write(w, &azure, epoch, unique_id(&azure))
    })?;
    // The qcow2's disk is the whole MiB the ISO needs: a prefix of Azure's, which its
    // geometry may have made longer.
    let disk = &azure[..whole_mib(len) as usize];
    output::write_atomic_with(&out.join(FILES[2]), |w| qcow2::write(w, disk))?;
    Ok(())
}
