//! The EFI System Partition image: a FAT file system (fatfs crate) in memory.
//!
//! The same bytes serve as the El Torito UEFI boot image (platform 0xEF) and as the ESP
//! partition of the GPT when the ISO is written to a USB stick. Reproducible: fixed volume
//! id, timestamps from SOURCE_DATE_EPOCH, files written in the order given.

use std::io::{self, Cursor, Seek, SeekFrom, Write};

use fatfs::{FileSystem, FormatVolumeOptions, FsOptions, TimeProvider};

/// El Torito stores the image size as a 16-bit count of 512-byte sectors, and firmware
/// expects the ESP of an optical medium to stay within it.
pub const MAX_ESP_BYTES: u64 = 32 * 1024 * 1024;

/// Slack for FAT tables, directories and cluster rounding.
const SLACK: u64 = 512 * 1024;
/// The image size is a multiple of this.
const ROUND: u64 = 1024 * 1024;
/// Worst-case cluster size fatfs chooses for a volume of this size.
const CLUSTER: u64 = 4096;

/// Why the ESP could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("the EFI System Partition would be {size} bytes, over the 32 MiB limit of El Torito")]
    TooBig { size: u64 },
    #[error("EFI file path {0:?} is not of the form DIR/.../NAME")]
    BadPath(String),
    #[error("cannot write {path} into the FAT image: {source}")]
    Fat {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// One file of the ESP, e.g. `EFI/BOOT/BOOTX64.EFI`.
pub struct EspFile<'a> {
    pub path: &'a str,
    pub data: &'a [u8],
}

/// Builds a FAT image holding `files`, sized to fit them.
pub fn build_esp(files: &[EspFile<'_>], volume_id: u32, epoch: i64) -> Result<Vec<u8>, EspError> {
    let content = files
        .iter()
        .map(|f| u64::try_from(f.data.len()).unwrap_or(u64::MAX))
        .try_fold(0u64, |acc, len| {
            acc.checked_add(len.div_ceil(CLUSTER).checked_mul(CLUSTER)?)
        })
        .ok_or(EspError::TooBig { size: u64::MAX })?;
    let size = content
        .checked_add(SLACK)
        .and_then(|s| s.div_ceil(ROUND).checked_mul(ROUND))
        .ok_or(EspError::TooBig { size: u64::MAX })?;
    if size > MAX_ESP_BYTES {
        return Err(EspError::TooBig { size });
    }
    let fat = |path: &str| {
        let path = path.to_string();
        move |source| EspError::Fat { path, source }
    };
    let len = usize::try_from(size).map_err(|_| EspError::TooBig { size })?;
    let mut disk = Cursor::new(vec![0u8; len]);
    fatfs::format_volume(
        &mut disk,
        FormatVolumeOptions::new()
            .volume_id(volume_id)
            .volume_label(*b"FAILBACKEFI"),
    )
    .map_err(fat("(format)"))?;
    disk.seek(SeekFrom::Start(0)).map_err(fat("(format)"))?;
    {
        // fatfs wants a 'static time provider; one small leak per build is the price.
        let clock: &'static FixedClock = Box::leak(Box::new(FixedClock::new(epoch)));
        let fs = FileSystem::new(&mut disk, FsOptions::new().time_provider(clock))
            .map_err(fat("(mount)"))?;
        for file in files {
            let (dirs, name) = file
                .path
                .rsplit_once('/')
                .ok_or_else(|| EspError::BadPath(file.path.to_string()))?;
            let mut dir = fs.root_dir();
            for part in dirs.split('/') {
                if part.is_empty() {
                    return Err(EspError::BadPath(file.path.to_string()));
                }
                dir = match dir.open_dir(part) {
                    Ok(d) => d,
                    Err(_) => dir.create_dir(part).map_err(fat(file.path))?,
                };
            }
            let mut out = dir.create_file(name).map_err(fat(file.path))?;
            out.truncate().map_err(fat(file.path))?;
            out.write_all(file.data).map_err(fat(file.path))?;
            out.flush().map_err(fat(file.path))?;
        }
        fs.unmount().map_err(fat("(unmount)"))?;
    }
    let mut image = disk.into_inner();
    drop_dot_lfn_entries(&mut image).map_err(fat("(fix-up of . and ..)"))?;
    Ok(image)
}

/// Size of a FAT directory entry (Microsoft FAT specification 1.03, section 6).
const DIR_ENTRY: usize = 32;
/// Directory entry attribute of a long file name entry (FAT specification section 7).
const ATTR_LFN: u8 = 0x0F;
const ATTR_DIRECTORY: u8 = 0x10;

/// fatfs 0.3 writes long-name entries in front of the "." and ".." entries of a new
/// directory; the FAT specification (section 6.1) wants "." and ".." as the first two
/// entries, and fsck.vfat rightly objects. Remove those long-name entries and close the gap.
/// Handles FAT12/16 directories of one cluster, which is what `build_esp` makes.
fn drop_dot_lfn_entries(image: &mut [u8]) -> io::Result<()> {
    let bad = |why: &str| io::Error::other(format!("unexpected FAT layout: {why}"));
    let u16_at = |o: usize| u16::from_le_bytes([image[o], image[o + 1]]) as usize;
    // FAT specification section 3.1: the BPB.
    let bytes_per_sector = u16_at(11);
    let sectors_per_cluster = usize::from(image[13]);
    let reserved = u16_at(14);
    let fats = usize::from(image[16]);
    let root_entries = u16_at(17);
    let fat_size = u16_at(22);
    if fat_size == 0 || bytes_per_sector == 0 || sectors_per_cluster == 0 {
        return Err(bad("FAT32 or empty BPB"));
    }
    let root_start = (reserved + fats * fat_size) * bytes_per_sector;
    let root_len = root_entries * DIR_ENTRY;
    let data_start = root_start + root_len.div_ceil(bytes_per_sector) * bytes_per_sector;
    let cluster_len = sectors_per_cluster * bytes_per_sector;

    let mut pending = vec![(root_start, root_len, true)];
    while let Some((start, len, is_root)) = pending.pop() {
        let end = start.checked_add(len).filter(|&e| e <= image.len());
        let end = end.ok_or_else(|| bad("directory outside the image"))?;
        let dir = &mut image[start..end];
        if !is_root {
            // Keep every entry except long-name entries belonging to "." or "..".
            let entries: Vec<[u8; DIR_ENTRY]> = dir
                .chunks(DIR_ENTRY)
                .map(|c| c.try_into().expect("whole entries"))
                .collect();
            let mut kept = Vec::with_capacity(entries.len());
            for (i, e) in entries.iter().enumerate() {
                if e[11] == ATTR_LFN && e[0] != 0xE5 {
                    let owner = entries[i..].iter().find(|x| x[11] != ATTR_LFN);
                    if owner.is_some_and(|o| o[0] == b'.') {
                        continue;
                    }
                }
                kept.push(*e);
            }
            kept.resize(entries.len(), [0; DIR_ENTRY]);
            dir.copy_from_slice(&kept.concat());
        }
        for e in dir.chunks(DIR_ENTRY) {
            if e[0] == 0 {
                break;
            }
            if e[0] != 0xE5 && e[0] != b'.' && e[11] != ATTR_LFN && e[11] & ATTR_DIRECTORY != 0 {
                let cluster = usize::from(u16::from_le_bytes([e[26], e[27]]));
                let first = cluster
                    .checked_sub(2)
                    .ok_or_else(|| bad("directory at cluster < 2"))?;
                pending.push((data_start + first * cluster_len, cluster_len, false));
            }
        }
    }
    Ok(())
}

/// Hands fatfs the build time (SOURCE_DATE_EPOCH) instead of the clock.
#[derive(Debug)]
struct FixedClock {
    at: fatfs::DateTime,
}

impl FixedClock {
    fn new(epoch: i64) -> Self {
        let c = super::iso::Civil::from_epoch(epoch);
        // FAT dates start in 1980 and end in 2107.
        let year = u16::try_from(c.year.clamp(1980, 2107)).unwrap_or(1980);
        let at = if c.year < 1980 {
            fatfs::DateTime {
                date: fatfs::Date {
                    year: 1980,
                    month: 1,
                    day: 1,
                },
                time: fatfs::Time {
                    hour: 0,
                    min: 0,
                    sec: 0,
                    millis: 0,
                },
            }
        } else {
            fatfs::DateTime {
                date: fatfs::Date {
                    year,
                    month: c.month.into(),
                    day: c.day.into(),
                },
                time: fatfs::Time {
                    hour: c.hour.into(),
                    min: c.minute.into(),
                    // FAT keeps even seconds.
                    sec: u16::from(c.second & !1),
                    millis: 0,
                },
            }
        };
        Self { at }
    }
}

impl TimeProvider for FixedClock {
    fn get_current_date(&self) -> fatfs::Date {
        self.at.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn files_round_trip_and_size_is_whole_mib() {
        let big = vec![0xA5u8; 1_500_000];
        let files = [
            EspFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: &big,
            },
            EspFile {
                path: "EFI/BOOT/grubx64.efi",
                data: b"grub",
            },
        ];
        let img = build_esp(&files, 0x1234_5678, 1_700_000_000).unwrap();
        assert_eq!(img.len() % ROUND as usize, 0);
        let fs = FileSystem::new(Cursor::new(img), FsOptions::new()).unwrap();
        let mut data = Vec::new();
        fs.root_dir()
            .open_file("EFI/BOOT/BOOTX64.EFI")
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(data, big);
        let entry = fs
            .root_dir()
            .open_dir("EFI/BOOT")
            .unwrap()
            .iter()
            .map(|e| e.unwrap())
            .find(|e| e.file_name() == "grubx64.efi")
            .unwrap();
        assert_eq!(entry.modified().date.year, 2023);
        assert_eq!(fs.volume_id(), 0x1234_5678);
    }

    #[test]
    fn same_input_same_bytes() {
        let files = [EspFile {
            path: "EFI/BOOT/BOOTX64.EFI",
            data: b"shim",
        }];
        assert_eq!(
            build_esp(&files, 1, 0).unwrap(),
            build_esp(&files, 1, 0).unwrap()
        );
    }

    #[test]
    fn over_32_mib_is_refused() {
        let big = vec![0u8; 33 * 1024 * 1024];
        let err = build_esp(
            &[EspFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: &big,
            }],
            1,
            0,
        )
        .unwrap_err();
        assert!(matches!(err, EspError::TooBig { .. }), "{err}");
    }
}
