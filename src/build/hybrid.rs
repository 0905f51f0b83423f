//! The system area that makes the ISO a disk too: protective MBR with isohdpfx boot code,
//! primary GPT in the ISO's 32 KiB system area, backup GPT in the image's last sectors.
//!
//! Layout, in 512-byte sectors (the same as Ubuntu's xorriso-made images):
//!
//! ```text
//! 0            MBR: isohdpfx code, LBA of isolinux.bin at 432, one 0xEE partition
//! 1            GPT header
//! 2..33        GPT entries (128 x 128 bytes)
//! 64..E-1      partition 1 "ISO9660" (basic data): the ISO 9660 volume from its PVD on
//! E..F         partition 2 "EFI System": the FAT image, the same extent El Torito's
//!              UEFI entry points at (the last file of the ISO)
//! N-33..N-2    backup GPT entries
//! N-1          backup GPT header
//! ```
//!
//! BIOS from USB: the firmware runs the MBR code, which loads isolinux.bin by the LBA at
//! byte 432 and enters its hybrid entry point. UEFI from USB: the firmware reads the GPT
//! and starts `\EFI\BOOT\BOOTX64.EFI` from partition 2.

use zerocopy::IntoBytes;
use zerocopy::byteorder::{LittleEndian, U16, U32, U64};

use super::iso_types::{
    DISK_SECTOR, GPT_ENTRIES, GptEntry, GptHeader, MBR_TYPE_GPT_PROTECTIVE, Mbr, MbrPartition,
    SECTOR,
};

/// Bytes of the ISO 9660 system area (ECMA-119 6.2.1: logical sectors 0 to 15).
pub const SYSTEM_AREA_BYTES: usize = 16 * SECTOR as usize;
/// Sectors taken by the GPT entry array.
const ENTRY_SECTORS: u64 = GPT_ENTRIES as u64 * 128 / DISK_SECTOR;
/// Bytes of the backup GPT at the end of the image (entries + header).
pub const GPT_TAIL_BYTES: u64 = (ENTRY_SECTORS + 1) * DISK_SECTOR;
/// First sector of partition 1: the ISO's primary volume descriptor (byte 32 KiB).
const ISO_PART_FIRST: u64 = SYSTEM_AREA_BYTES as u64 / DISK_SECTOR;

/// UEFI 2.10 5.3.3 table 5-7: EFI System Partition.
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Microsoft basic data (what Ubuntu's and Debian's images call the ISO9660 partition).
const BASIC_DATA_TYPE: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";

/// Why the system area cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum HybridError {
    #[error("the MBR boot code (isohdpfx.bin) is {0} bytes; expected 432")]
    BootCode(usize),
    #[error("hybrid layout does not fit: {0}")]
    Layout(&'static str),
}

/// Where things are, in bytes from the start of the image.
#[derive(Debug, Clone, Copy)]
pub struct HybridLayout {
    /// Total image size; a multiple of 2048, with room for the backup GPT at the end.
    pub image_bytes: u64,
    /// Start of isolinux.bin (the El Torito BIOS boot image).
    pub boot_file: u64,
    /// Start and size of the ESP image.
    pub esp_start: u64,
    pub esp_bytes: u64,
    /// Seed for the disk and partition GUIDs and the MBR disk signature.
    pub seed: u64,
}

/// The bytes to place: `head` at offset 0, `tail` at `tail_offset`.
pub struct SystemArea {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
    pub tail_offset: u64,
}

/// Builds the MBR and both GPTs for `layout`.
pub fn system_area(boot_code: &[u8], layout: &HybridLayout) -> Result<SystemArea, HybridError> {
    let code: [u8; 432] = boot_code
        .try_into()
        .map_err(|_| HybridError::BootCode(boot_code.len()))?;
    let l = layout;
    if !l.image_bytes.is_multiple_of(SECTOR)
        || !l.esp_start.is_multiple_of(DISK_SECTOR)
        || !l.esp_bytes.is_multiple_of(DISK_SECTOR)
        || !l.boot_file.is_multiple_of(DISK_SECTOR)
    {
        return Err(HybridError::Layout("extents not sector aligned"));
    }
    let sectors = l.image_bytes / DISK_SECTOR;
    let last = sectors
        .checked_sub(1)
        .ok_or(HybridError::Layout("empty image"))?;
    let last_usable = last
        .checked_sub(ENTRY_SECTORS + 1)
        .ok_or(HybridError::Layout("image too small"))?;
    let esp_first = l.esp_start / DISK_SECTOR;
    let esp_last = (l.esp_start + l.esp_bytes)
        .checked_div(DISK_SECTOR)
        .and_then(|end| end.checked_sub(1))
        .ok_or(HybridError::Layout("empty ESP"))?;
    if esp_first <= ISO_PART_FIRST || esp_last > last_usable || esp_first > esp_last {
        return Err(HybridError::Layout("ESP outside the usable GPT area"));
    }

    let mut rng = SplitMix(l.seed);
    let mut mbr = Mbr {
        boot_code: code,
        boot_file_lba: U64::new(l.boot_file / DISK_SECTOR),
        disk_signature: U32::new(rng.next() as u32),
        reserved: U16::new(0),
        partitions: [MbrPartition::default(); 4],
        signature: [0x55, 0xAA],
    };
    // UEFI 2.10 5.2.3 table 5-4: one partition from LBA 1 over the disk (or 2 TiB).
    mbr.partitions[0] = MbrPartition {
        boot_indicator: 0,
        start_chs: [0x00, 0x02, 0x00],
        os_type: MBR_TYPE_GPT_PROTECTIVE,
        end_chs: [0xFF, 0xFF, 0xFF],
        start_lba: U32::new(1),
        size_lba: U32::new(u32::try_from(last).unwrap_or(u32::MAX)),
    };

    let disk_guid = rng.guid();
    let entries = {
        let mut table = vec![0u8; (ENTRY_SECTORS * DISK_SECTOR) as usize];
        let parts = [
            gpt_entry(
                BASIC_DATA_TYPE,
                rng.guid(),
                ISO_PART_FIRST,
                esp_first - 1,
                "ISO9660",
            ),
            gpt_entry(ESP_TYPE, rng.guid(), esp_first, esp_last, "EFI System"),
        ];
        for (i, p) in parts.iter().enumerate() {
            table[i * 128..(i + 1) * 128].copy_from_slice(p.as_bytes());
        }
        table
    };
    let entries_crc = crc32fast::hash(&entries);
    let header = |my: u64, alternate: u64, entries_lba: u64| {
        let mut h = GptHeader {
            signature: *b"EFI PART",
            revision: U32::new(0x0001_0000),
            header_size: U32::new(92),
            header_crc32: U32::new(0),
            reserved: U32::new(0),
            my_lba: U64::new(my),
            alternate_lba: U64::new(alternate),
            first_usable_lba: U64::new(ENTRY_SECTORS + 2),
            last_usable_lba: U64::new(last_usable),
            disk_guid,
            entries_lba: U64::new(entries_lba),
            entry_count: U32::new(GPT_ENTRIES),
            entry_size: U32::new(128),
            entries_crc32: U32::new(entries_crc),
        };
        h.header_crc32 = U32::new(crc32fast::hash(h.as_bytes()));
        h
    };

    let mut head = vec![0u8; SYSTEM_AREA_BYTES];
    head[..512].copy_from_slice(mbr.as_bytes());
    head[512..512 + 92].copy_from_slice(header(1, last, 2).as_bytes());
    head[1024..1024 + entries.len()].copy_from_slice(&entries);

    let mut tail = entries;
    let mut backup = vec![0u8; DISK_SECTOR as usize];
    backup[..92].copy_from_slice(header(last, 1, last - ENTRY_SECTORS).as_bytes());
    tail.extend_from_slice(&backup);
    Ok(SystemArea {
        head,
        tail,
        tail_offset: l.image_bytes - GPT_TAIL_BYTES,
    })
}

fn gpt_entry(type_guid: &str, unique: [u8; 16], first: u64, last: u64, name: &str) -> GptEntry {
    let mut utf16 = [U16::<LittleEndian>::new(0); 36];
    for (slot, unit) in utf16.iter_mut().zip(name.encode_utf16()) {
        *slot = U16::new(unit);
    }
    GptEntry {
        type_guid: guid_bytes(type_guid),
        unique_guid: unique,
        first_lba: U64::new(first),
        last_lba: U64::new(last),
        attributes: U64::new(0),
        name: utf16,
    }
}

/// UEFI 2.10 appendix A: a GUID in its on-disk mixed-endian form.
fn guid_bytes(text: &str) -> [u8; 16] {
    let hex = hex::decode(text.replace('-', "")).expect("constant GUID");
    let mut b = [0u8; 16];
    b.copy_from_slice(&hex);
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// Deterministic identifiers: the same inputs give the same GUIDs (reproducible builds).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// RFC 9562 version 4 layout (random bits from the seed).
    fn guid(&mut self) -> [u8; 16] {
        let mut g = [0u8; 16];
        g[..8].copy_from_slice(&self.next().to_le_bytes());
        g[8..].copy_from_slice(&self.next().to_le_bytes());
        g[7] = (g[7] & 0x0F) | 0x40;
        g[8] = (g[8] & 0x3F) | 0x80;
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> HybridLayout {
        HybridLayout {
            image_bytes: 8 * 1024 * 1024,
            boot_file: 40 * SECTOR,
            esp_start: 2 * 1024 * 1024,
            esp_bytes: 4 * 1024 * 1024,
            seed: 7,
        }
    }

    #[test]
    fn esp_guid_matches_the_spec_bytes() {
        assert_eq!(
            guid_bytes(ESP_TYPE),
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
    }

    #[test]
    fn mbr_points_at_the_boot_file_and_gpt_checksums_hold() {
        let sa = system_area(&[0x33; 432], &layout()).unwrap();
        assert_eq!(&sa.head[510..512], &[0x55, 0xAA]);
        assert_eq!(
            u32::from_le_bytes(sa.head[432..436].try_into().unwrap()),
            160
        );
        assert_eq!(sa.head[446 + 4], 0xEE);
        assert_eq!(&sa.head[512..520], b"EFI PART");
        let mut hdr = sa.head[512..604].to_vec();
        let crc = u32::from_le_bytes(hdr[16..20].try_into().unwrap());
        hdr[16..20].fill(0);
        assert_eq!(crc32fast::hash(&hdr), crc);
        assert_eq!(sa.tail.len() as u64, GPT_TAIL_BYTES);
        assert_eq!(&sa.tail[sa.tail.len() - 512..][..8], b"EFI PART");
        assert_eq!(sa.tail_offset + GPT_TAIL_BYTES, layout().image_bytes);
    }

    #[test]
    fn bad_boot_code_and_layout_are_refused() {
        assert!(matches!(
            system_area(&[0; 400], &layout()),
            Err(HybridError::BootCode(400))
        ));
        let mut l = layout();
        l.esp_bytes = 6 * 1024 * 1024 + 512;
        assert!(matches!(
            system_area(&[0; 432], &l),
            Err(HybridError::Layout(_))
        ));
    }

    /// The image `system_area` makes for `layout()`, with zeros where the ISO would be.
    fn image(seed: u64) -> Vec<u8> {
        let l = HybridLayout { seed, ..layout() };
        let sa = system_area(&[0x33; 432], &l).unwrap();
        let mut image = vec![0u8; l.image_bytes as usize];
        image[..sa.head.len()].copy_from_slice(&sa.head);
        image[sa.tail_offset as usize..].copy_from_slice(&sa.tail);
        image
    }

    /// The gpt crate, an implementation of its own, as the oracle: it must find both
    /// headers valid (CRCs included) and both partition arrays, with the partitions where
    /// the layout put them. Firmware reads what it reads.
    #[test]
    fn the_gpt_crate_reads_back_what_was_meant() {
        use gpt::disk::LogicalBlockSize::Lb512;
        use gpt::partition_types::{BASIC, EFI};
        let open = |image: Vec<u8>| {
            gpt::GptConfig::new()
                .logical_block_size(Lb512)
                .open_from_device(std::io::Cursor::new(image))
        };
        let l = layout();
        let last = l.image_bytes / DISK_SECTOR - 1;
        let esp_first = l.esp_start / DISK_SECTOR;
        let esp_last = esp_first + l.esp_bytes / DISK_SECTOR - 1;

        let disk = gpt::GptConfig::new()
            .logical_block_size(Lb512)
            .only_valid_headers(true)
            .open_from_device(std::io::Cursor::new(image(7)))
            .unwrap();
        let p = disk.primary_header().unwrap();
        let b = disk.backup_header().unwrap();
        assert_eq!((p.current_lba, p.backup_lba, p.part_start), (1, last, 2));
        assert_eq!(
            (b.current_lba, b.backup_lba, b.part_start),
            (last, 1, last - ENTRY_SECTORS)
        );
        for h in [p, b] {
            assert_eq!((h.revision, h.header_size_le), ((1, 0), 92));
            assert_eq!((h.first_usable, h.last_usable), (34, last - 33));
            assert_eq!((h.num_parts, h.part_size), (GPT_ENTRIES, 128));
            assert_eq!(h.disk_guid, p.disk_guid);
        }

        let parts: Vec<_> = disk.partitions().iter().collect();
        assert_eq!(parts.len(), 2, "{parts:?}");
        let (&n, iso) = parts[0];
        assert_eq!(n, 1);
        assert_eq!(iso.part_type_guid, BASIC);
        assert_eq!(
            (iso.first_lba, iso.last_lba),
            (ISO_PART_FIRST, esp_first - 1)
        );
        assert_eq!((iso.name.as_str(), iso.flags), ("ISO9660", 0));
        let (&n, esp) = parts[1];
        assert_eq!(n, 2);
        assert_eq!(esp.part_type_guid, EFI);
        assert_eq!((esp.first_lba, esp.last_lba), (esp_first, esp_last));
        assert_eq!((esp.name.as_str(), esp.flags), ("EFI System", 0));
        let guids = [p.disk_guid, iso.part_guid, esp.part_guid];
        for (i, g) in guids.iter().enumerate() {
            assert_eq!(g.get_version_num(), 4, "{g}");
            assert!(!guids[..i].contains(g), "{g} twice");
        }

        // The backup array alone: with the primary header broken, the crate reads the
        // partitions through the backup header (and checks that array's CRC).
        let mut broken = image(7);
        broken[512] ^= 0xFF;
        let from_backup = open(broken).unwrap();
        assert!(from_backup.primary_header().is_err());
        assert_eq!(from_backup.partitions(), disk.partitions());

        // The same seed gives the same GUIDs; another seed others.
        let again = open(image(7)).unwrap();
        assert_eq!(again.guid(), disk.guid());
        assert_eq!(again.partitions(), disk.partitions());
        let other = open(image(8)).unwrap();
        assert_ne!(other.guid(), disk.guid());
        assert_ne!(other.partitions()[&2].part_guid, esp.part_guid);

        // The protective MBR around the isohdpfx code and its pointer to isolinux.bin.
        let mbr = gpt::mbr::ProtectiveMBR::from_bytes(&image(7)[..512], Lb512).unwrap();
        let pmbr = mbr.partition(0).unwrap();
        assert_eq!((pmbr.os_type, pmbr.lb_start), (MBR_TYPE_GPT_PROTECTIVE, 1));
        assert_eq!(u64::from(pmbr.lb_size), last);
        assert_eq!(mbr.partition(1).unwrap().os_type, 0);
        assert_eq!(&mbr.bootcode()[..432], &[0x33; 432]);
        assert_eq!(
            u64::from_le_bytes(mbr.bootcode()[432..].try_into().unwrap()),
            l.boot_file / DISK_SECTOR
        );
    }

    /// Given the same identifiers, the gpt crate writes the very bytes we do: the layout is
    /// the one a GPT tool makes. (We still write it ourselves: the image streams, the
    /// crate wants a seekable disk of the image's size and `uuid` values we could only
    /// get from it by reading them back as here.)
    #[test]
    fn the_gpt_crate_writes_the_same_bytes() {
        use gpt::disk::LogicalBlockSize::Lb512;
        use gpt::partition::Partition;
        use gpt::partition_types::{BASIC, EFI};
        let l = layout();
        let ours = image(7);
        let read = gpt::GptConfig::new()
            .logical_block_size(Lb512)
            .open_from_device(std::io::Cursor::new(ours.clone()))
            .unwrap();
        let esp_first = l.esp_start / DISK_SECTOR;
        let part = |type_guid, guid, first_lba, last_lba, name: &str| Partition {
            part_type_guid: type_guid,
            part_guid: guid,
            first_lba,
            last_lba,
            flags: 0,
            name: name.into(),
        };
        let parts = std::collections::BTreeMap::from([
            (
                1,
                part(
                    BASIC,
                    read.partitions()[&1].part_guid,
                    ISO_PART_FIRST,
                    esp_first - 1,
                    "ISO9660",
                ),
            ),
            (
                2,
                part(
                    EFI,
                    read.partitions()[&2].part_guid,
                    esp_first,
                    esp_first + l.esp_bytes / DISK_SECTOR - 1,
                    "EFI System",
                ),
            ),
        ]);
        let blank = std::io::Cursor::new(vec![0u8; l.image_bytes as usize]);
        let mut disk = gpt::GptConfig::new()
            .writable(true)
            .logical_block_size(Lb512)
            .create_from_device(blank, Some(*read.guid()))
            .unwrap();
        disk.update_partitions(parts).unwrap();
        let mut theirs = disk.write().unwrap();

        let mut code = [0x33; 440];
        code[432..].copy_from_slice(&(l.boot_file / DISK_SECTOR).to_le_bytes());
        let mut mbr =
            gpt::mbr::ProtectiveMBR::with_lb_size((l.image_bytes / DISK_SECTOR - 1) as u32);
        mbr.set_bootcode(code);
        mbr.set_disk_signature(ours[440..444].try_into().unwrap());
        mbr.overwrite_lba0(&mut theirs).unwrap();
        let theirs = theirs.into_inner();
        let differ = (0..ours.len()).filter(|&i| ours[i] != theirs[i]).count();
        assert_eq!(differ, 0, "bytes that differ from the gpt crate's");
    }
}
