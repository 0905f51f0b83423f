//! Where everything goes. Sectors first (descriptors, path tables, the Rock Ridge ER area,
//! directories, files with the ESP last), then the bytes that depend on those places: path
//! tables, directory extents, El Torito, the MBR and GPTs, the volume descriptor.

use zerocopy::IntoBytes;

use super::dates::Civil;
use super::descriptors::{self, Volume};
use super::el_torito::{boot_catalog, boot_info_table, boot_record};
use super::error::IsoError;
use super::inputs::IsoInputs;
use super::records::{dir_extent, dir_size, path_tables, root_record};
use super::rock_ridge::{ErArea, er_entry};
use super::tree::Tree;
use super::writer::{Extent, Image};
use crate::build::hybrid::{self, GPT_TAIL_BYTES, HybridLayout};
use crate::build::iso_types::{DISK_SECTOR, SECTOR};

/// The image size is a multiple of this (whole "cylinders" for old BIOSes, USB friendly).
const IMAGE_ROUND: u64 = 1024 * 1024;

/// Indexes of the files El Torito and the GPT point at. The ESP must be the last file.
pub(super) struct BootFiles {
    pub catalog: usize,
    pub isolinux: usize,
    pub esp: usize,
}

/// Lays out `tree` and returns the whole image. isolinux.bin gets its boot-info table and
/// the catalog its entries here, as both depend on where things landed.
pub(super) fn lay_out(
    mut tree: Tree,
    boot: BootFiles,
    inputs: &IsoInputs,
    mbr_code: &[u8],
    seed: u64,
) -> Result<Image, IsoError> {
    let civil = Civil::from_epoch(inputs.epoch);
    let date = civil.dir_date();
    let order = tree.path_table_order();

    // The path tables come before the directories, so they are sized before those have
    // places (which do not change any length).
    let path_table_len = path_tables(&tree, &order)?.0.len();
    let path_table_size =
        u32::try_from(path_table_len).map_err(|_| IsoError::TooLarge("path table"))?;
    let table_sectors = sectors(path_table_len as u64)?;

    // Sectors 16, 17, 18: descriptors; then L table, M table, ER area, directories.
    let mut next: u32 = 19;
    let l_lba = next;
    next = add(next, table_sectors)?;
    let m_lba = next;
    next = add(next, table_sectors)?;
    let er_lba = next;
    next = add(next, 1)?;
    for &d in &order {
        let size = dir_size(&tree, d)?;
        tree.dirs[d].lba = next;
        tree.dirs[d].size = size;
        next = add(next, sectors(u64::from(size))?)?;
    }
    // Files in the order they were added; the ESP last, 4 KiB aligned (GPT partition).
    for f in 0..tree.files.len() {
        if f == boot.esp {
            next = next
                .checked_add(next % 2)
                .ok_or(IsoError::TooLarge("sectors"))?;
        }
        tree.files[f].lba = next;
        next = add(next, sectors(tree.files[f].data.len() as u64)?)?;
    }
    let data_end = u64::from(next) * SECTOR;
    let image_bytes = data_end
        .checked_add(GPT_TAIL_BYTES)
        .map(|b| b.div_ceil(IMAGE_ROUND) * IMAGE_ROUND)
        .ok_or(IsoError::TooLarge("image"))?;
    let volume_sectors =
        u32::try_from(image_bytes / SECTOR).map_err(|_| IsoError::TooLarge("volume"))?;

    // El Torito: patch the boot-info table into isolinux.bin, fill the catalog.
    let iso_lba = tree.files[boot.isolinux].lba;
    boot_info_table(&mut tree.files[boot.isolinux].data, iso_lba)?;
    let esp_lba = tree.files[boot.esp].lba;
    let esp_bytes = tree.files[boot.esp].data.len() as u64;
    let catalog_lba = tree.files[boot.catalog].lba;
    tree.files[boot.catalog].data = boot_catalog(iso_lba, esp_lba, esp_bytes)?;

    let system = hybrid::system_area(
        mbr_code,
        &HybridLayout {
            image_bytes,
            boot_file: u64::from(iso_lba) * SECTOR,
            esp_start: u64::from(esp_lba) * SECTOR,
            esp_bytes: esp_bytes.div_ceil(DISK_SECTOR) * DISK_SECTOR,
            seed,
        },
    )?;

    let pvd = descriptors::primary(&Volume {
        label: &inputs.label,
        version: &inputs.version,
        image_id: &inputs.image_id,
        created: civil,
        sectors: volume_sectors,
        root_record: root_record(&tree, date)?,
        path_table_size,
        l_path_table: l_lba,
        m_path_table: m_lba,
    });
    let (l_table, m_table) = path_tables(&tree, &order)?;
    let er = er_entry();
    let er_area = ErArea {
        lba: er_lba,
        len: er.len() as u32,
    };

    let at = |lba: u32, data: Vec<u8>| Extent {
        at: u64::from(lba) * SECTOR,
        data,
    };
    let mut extents = vec![
        Extent {
            at: 0,
            data: system.head,
        },
        at(16, pvd.as_bytes().to_vec()),
        at(17, boot_record(catalog_lba).as_bytes().to_vec()),
        at(18, descriptors::terminator().as_bytes().to_vec()),
        at(l_lba, l_table),
        at(m_lba, m_table),
        at(er_lba, er),
    ];
    for &d in &order {
        extents.push(at(tree.dirs[d].lba, dir_extent(&tree, d, date, er_area)?));
    }
    extents.extend(tree.files.into_iter().map(|f| at(f.lba, f.data)));
    extents.push(Extent {
        at: system.tail_offset,
        data: system.tail,
    });
    Ok(Image {
        extents,
        len: image_bytes,
    })
}

fn sectors(bytes: u64) -> Result<u32, IsoError> {
    u32::try_from(bytes.div_ceil(SECTOR)).map_err(|_| IsoError::TooLarge("sectors"))
}

fn add(a: u32, b: u32) -> Result<u32, IsoError> {
    a.checked_add(b).ok_or(IsoError::TooLarge("sectors"))
}
