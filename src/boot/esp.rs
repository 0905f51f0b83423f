//! The EFI system partition of a disk, from its GPT (UEFI spec 2.10, 5.3) or its MBR
//! (5.2.1, a primary partition of type 0xEF): where the firmware finds the recovered
//! system's boot loader. Read straight from the disk: the kernel's partition table of a
//! disk just written is the old one.

use super::load_option::Signature;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The EFI system partition type GUID C12A7328-F81F-11D2-BA4B-00A0C93EC93B, in its
/// on-disk byte order.
const ESP_TYPE: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];
/// MBR partition types: the ESP, and the protective MBR of a GPT disk.
const MBR_ESP: u8 = 0xef;
const MBR_PROTECTIVE: u8 = 0xee;
/// More entries or larger ones than this is no GPT a firmware would read.
const MAX_ENTRIES: u32 = 1024;
const MAX_ENTRY_SIZE: u32 = 4096;

/// An EFI system partition: what a hard drive device path node names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Esp {
    /// 1-based entry number in the partition table.
    pub number: u32,
    /// First LBA and size in LBAs.
    pub start: u64,
    pub size: u64,
    /// What firmware tells it by: the partition's GUID, or the MBR disk's signature.
    pub signature: Signature,
}

/// The first EFI system partition of the disk `dev`; `None` when it has no partition
/// table or no ESP.
pub fn find(dev: &Path) -> std::io::Result<Option<Esp>> {
    let disk = File::open(dev)?;
    let read = |offset: u64, len: usize| {
        let mut buf = vec![0u8; len];
        disk.read_exact_at(&mut buf, offset).map(|()| buf)
    };
    // The header is at LBA 1: at 512 on most disks, at 4096 on 4Kn ones.
    for lba_size in [512u64, 4096] {
        let header = read(lba_size, 92)?;
        if header.starts_with(b"EFI PART") {
            return entries(&header, lba_size, read);
        }
    }
    Ok(mbr_esp(&read(0, 512)?))
}

/// The first primary partition of type 0xEF of the MBR `sector`; `None` without an MBR
/// (or with a GPT's protective one whose GPT is gone: no table the firmware would read).
fn mbr_esp(sector: &[u8]) -> Option<Esp> {
    if sector[510..512] != [0x55, 0xaa] {
        return None;
    }
    let entries: Vec<&[u8]> = sector[446..510].chunks_exact(16).collect();
    if entries.iter().any(|e| e[4] == MBR_PROTECTIVE) {
        return None;
    }
    let u32_at = |e: &[u8], at: usize| u32::from_le_bytes(e[at..at + 4].try_into().expect("4"));
    entries
        .iter()
        .zip(1..)
        .find(|(e, _)| e[4] == MBR_ESP && u32_at(e, 12) > 0)
        .map(|(e, number)| Esp {
            number,
            start: u64::from(u32_at(e, 8)),
            size: u64::from(u32_at(e, 12)),
            signature: Signature::Mbr(u32_at(sector, 440)),
        })
}

/// Reads the partition entries the GPT header `header` points to, through `read`
/// (offset, length), and returns the first ESP.
fn entries(
    header: &[u8],
    lba_size: u64,
    read: impl Fn(u64, usize) -> std::io::Result<Vec<u8>>,
) -> std::io::Result<Option<Esp>> {
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let first_lba = u64::from_le_bytes(header[72..80].try_into().expect("8 bytes"));
    let (count, size) = (u32_at(80), u32_at(84));
    if count > MAX_ENTRIES || !(128..=MAX_ENTRY_SIZE).contains(&size) {
        return Err(std::io::Error::other(format!(
            "GPT header names {count} entries of {size} bytes"
        )));
    }
    let offset = first_lba
        .checked_mul(lba_size)
        .ok_or_else(|| std::io::Error::other("GPT entries beyond any disk"))?;
    let table = read(offset, (count * size) as usize)?;
    Ok(table
        .chunks_exact(size as usize)
        .zip(1..)
        .find(|(entry, _)| entry[..16] == ESP_TYPE)
        .map(|(entry, number)| {
            let lba = |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().expect("8"));
            Esp {
                number,
                start: lba(32),
                size: (lba(40) + 1).saturating_sub(lba(32)),
                signature: Signature::Gpt(entry[16..32].try_into().expect("16 bytes")),
            }
        }))
}

/// Test disks for this module and `next_boot`'s tests.
#[cfg(test)]
pub(crate) mod test_disk {
    /// An MBR sector as fdisk writes it (5.2.1: the disk signature at 440, four 16-byte
    /// entries at 446: status, CHS, type, CHS, first LBA, sectors; 0x55AA at 510).
    pub(crate) fn mbr_sector(signature: u32, partitions: &[(u8, u32, u32)]) -> Vec<u8> {
        let mut sector = vec![0u8; 512];
        sector[440..444].copy_from_slice(&signature.to_le_bytes());
        for (i, (kind, start, size)) in partitions.iter().enumerate() {
            let e = &mut sector[446 + 16 * i..462 + 16 * i];
            e[4] = *kind;
            e[8..12].copy_from_slice(&start.to_le_bytes());
            e[12..16].copy_from_slice(&size.to_le_bytes());
        }
        sector[510..512].copy_from_slice(&[0x55, 0xaa]);
        sector
    }
}

#[cfg(test)]
mod tests {
    use super::test_disk::mbr_sector;
    use super::*;

    /// A GPT disk written by the `gpt` crate (the independent writer): a data
    /// partition, then the ESP; read back by LBA, number and GUID.
    #[test]
    fn finds_the_esp_another_tool_wrote() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("disk.img");
        std::fs::write(&path, vec![0u8; 8 << 20]).unwrap();
        let mut disk = gpt::GptConfig::new().writable(true).create(&path).unwrap();
        disk.add_partition_at("data", 1, 2048, 4096, gpt::partition_types::LINUX_FS, 0)
            .unwrap();
        disk.add_partition_at("esp", 2, 6144, 2048, gpt::partition_types::EFI, 0)
            .unwrap();
        let guid = disk.partitions()[&2].part_guid.to_bytes_le();
        disk.write().unwrap();

        let esp = find(&path).unwrap().expect("an ESP");
        assert_eq!(
            esp,
            Esp {
                number: 2,
                start: 6144,
                size: 2048,
                signature: Signature::Gpt(guid)
            }
        );
    }

    #[test]
    fn no_gpt_is_no_esp_and_a_wild_header_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("disk.img");
        let mut bytes = vec![0u8; 1 << 20];
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(find(&path).unwrap(), None);
        bytes[512..520].copy_from_slice(b"EFI PART");
        bytes[512 + 80..512 + 84].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let err = find(&path).unwrap_err().to_string();
        assert!(err.contains("4294967295 entries"), "{err}");
    }

    #[test]
    fn finds_an_esp_of_type_0xef_on_an_mbr_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("disk.img");
        let mut bytes = vec![0u8; 1 << 20];
        bytes[..512].copy_from_slice(&mbr_sector(
            0x5eed_cafe,
            &[(0x83, 2048, 4096), (0xef, 6144, 1024)],
        ));
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            find(&path).unwrap(),
            Some(Esp {
                number: 2,
                start: 6144,
                size: 1024,
                signature: Signature::Mbr(0x5eed_cafe)
            })
        );
        // No ESP among the primaries, or a GPT's protective MBR without its GPT: none.
        for sector in [
            mbr_sector(1, &[(0x83, 2048, 4096)]),
            mbr_sector(1, &[(0xee, 1, 2047), (0xef, 8, 8)]),
        ] {
            bytes[..512].copy_from_slice(&sector);
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(find(&path).unwrap(), None);
        }
    }
}
