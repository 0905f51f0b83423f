//! El Torito: how a CD firmware finds the boot images. The boot record volume descriptor
//! points at the catalog; the catalog lists isolinux.bin (BIOS) and the ESP image (UEFI);
//! isolinux.bin gets the boot-info table it reads to find itself.

use zerocopy::IntoBytes;
use zerocopy::byteorder::{U16, U32};

use super::error::IsoError;
use crate::build::esp::EspError;
use crate::build::iso_types::{
    BOOT_INFO_OFFSET, BOOTABLE, BootEntry, BootInfoTable, BootRecordDescriptor, CD001, DISK_SECTOR,
    EL_TORITO_ID, LAST_SECTION, NO_EMULATION, PLATFORM_EFI, PLATFORM_X86, SECTOR, SectionHeader,
    VD_BOOT_RECORD, ValidationEntry,
};

/// The boot record volume descriptor (sector 17): where the catalog is.
pub(super) fn boot_record(catalog_lba: u32) -> BootRecordDescriptor {
    let mut boot_system_id = [0u8; 32];
    boot_system_id[..EL_TORITO_ID.len()].copy_from_slice(EL_TORITO_ID);
    BootRecordDescriptor {
        kind: VD_BOOT_RECORD,
        id: CD001,
        version: 1,
        boot_system_id,
        boot_id: [0; 32],
        catalog_lba: U32::new(catalog_lba),
        unused: [0; 1973],
    }
}

/// `mkisofs -boot-info-table`: PVD and file location, length and checksum at offset 8.
pub(super) fn boot_info_table(data: &mut [u8], lba: u32) -> Result<(), IsoError> {
    let len = u32::try_from(data.len()).map_err(|_| IsoError::TooLarge("isolinux.bin"))?;
    let checksum = data[64..].chunks(4).fold(0u32, |sum, c| {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        sum.wrapping_add(u32::from_le_bytes(w))
    });
    let table = BootInfoTable {
        pvd_lba: U32::new(16),
        file_lba: U32::new(lba),
        file_len: U32::new(len),
        checksum: U32::new(checksum),
        reserved: [0; 40],
    };
    data[BOOT_INFO_OFFSET..BOOT_INFO_OFFSET + size_of::<BootInfoTable>()]
        .copy_from_slice(table.as_bytes());
    Ok(())
}

/// El Torito 2.0: validation entry, default entry (BIOS, isolinux.bin, no emulation, 4
/// virtual sectors as isolinux expects), last section header (EFI) with one entry (the ESP).
pub(super) fn boot_catalog(
    isolinux_lba: u32,
    esp_lba: u32,
    esp_bytes: u64,
) -> Result<Vec<u8>, IsoError> {
    let esp_sectors = esp_bytes.div_ceil(DISK_SECTOR);
    let esp_count = u16::try_from(esp_sectors).map_err(|_| EspError::TooBig { size: esp_bytes })?;
    let mut validation = ValidationEntry {
        header_id: 1,
        platform: PLATFORM_X86,
        reserved: U16::new(0),
        id: [0; 24],
        checksum: U16::new(0),
        key: [0x55, 0xAA],
    };
    validation.id[..8].copy_from_slice(b"FAILBACK");
    let sum = validation.as_bytes().chunks(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    validation.checksum = U16::new(0u16.wrapping_sub(sum));
    let entry = |lba: u32, count: u16| BootEntry {
        indicator: BOOTABLE,
        media: NO_EMULATION,
        load_segment: U16::new(0),
        system_type: 0,
        unused: 0,
        sector_count: U16::new(count),
        load_rba: U32::new(lba),
        selection: [0; 20],
    };
    let section = SectionHeader {
        indicator: LAST_SECTION,
        platform: PLATFORM_EFI,
        entries: U16::new(1),
        id: [0; 28],
    };
    let mut cat = Vec::with_capacity(SECTOR as usize);
    cat.extend_from_slice(validation.as_bytes());
    cat.extend_from_slice(entry(isolinux_lba, 4).as_bytes());
    cat.extend_from_slice(section.as_bytes());
    cat.extend_from_slice(entry(esp_lba, esp_count).as_bytes());
    cat.resize(SECTOR as usize, 0);
    Ok(cat)
}
