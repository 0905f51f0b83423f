//! A fixed VHD (Azure's format for uploaded disks): the raw disk, then a 512-byte footer.
//!
//! Spec: Microsoft "Virtual Hard Disk Image Format Specification" 1.0 (2006): "Hard Disk
//! Footer Format" (fields and checksum) and Appendix "CHS Calculation" (geometry). Azure
//! also wants the disk size a whole number of MiB, which [`disk_size`] gives.

use std::io::{self, Write};
use zerocopy::byteorder::{BigEndian, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

type Be16 = U16<BigEndian>;
type Be32 = U32<BigEndian>;
type Be64 = U64<BigEndian>;

/// Seconds from the Unix epoch to the VHD epoch (2000-01-01 00:00:00 UTC).
const VHD_EPOCH: u64 = 946_684_800;

/// "Hard Disk Footer Format": every field big-endian.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Footer {
    cookie: [u8; 8],
    features: Be32,
    format_version: Be32,
    data_offset: Be64,
    time_stamp: Be32,
    creator_application: [u8; 4],
    creator_version: Be32,
    creator_host_os: [u8; 4],
    original_size: Be64,
    current_size: Be64,
    cylinders: Be16,
    heads: u8,
    sectors_per_track: u8,
    disk_type: Be32,
    checksum: Be32,
    unique_id: [u8; 16],
    saved_state: u8,
    reserved: [u8; 427],
}
const _: () = assert!(size_of::<Footer>() == 512);

/// "CHS Calculation": (cylinders, heads, sectors per track) for a disk of `size` bytes.
pub fn geometry(size: u64) -> (u16, u8, u8) {
    let total = (size / 512).min(65535 * 16 * 255);
    let (spt, heads, cyl_x_heads) = if total >= 65535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut spt = 17;
        let mut cyl_x_heads = total / spt;
        let mut heads = cyl_x_heads.div_ceil(1024).max(4);
        if cyl_x_heads >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cyl_x_heads = total / spt;
        }
        if cyl_x_heads >= heads * 1024 {
            spt = 63;
            heads = 16;
            cyl_x_heads = total / spt;
        }
        (spt, heads, cyl_x_heads)
    };
    // The clamp above bounds every value to its field.
    let cylinders = u16::try_from(cyl_x_heads / heads).unwrap_or(u16::MAX);
    (cylinders, heads as u8, spt as u8)
}

const MIB: u64 = 1 << 20;

/// The size of the VHD's disk for `data_len` bytes of data: a whole number of MiB (Azure's
/// rule) whose geometry holds all of the data. Azure reads the footer's current size, but
/// Virtual PC, and qemu-img for a creator it does not know, size a disk by its geometry,
/// which can fall short of the current size by up to a track of each head: the data's last
/// sectors (the ISO's backup GPT) would be cut off.
pub fn disk_size(data_len: u64) -> u64 {
    let mut size = super::whole_mib(data_len);
    while geometry_bytes(size) < data_len && geometry(size) != MAX_GEOMETRY {
        size += MIB;
    }
    size
}

/// The geometry of the largest disks (127 GiB and more): readers use the current size then.
const MAX_GEOMETRY: (u16, u8, u8) = (65535, 16, 255);

/// The bytes the geometry of a disk of `size` bytes addresses.
fn geometry_bytes(size: u64) -> u64 {
    let (c, h, s) = geometry(size);
    u64::from(c) * u64::from(h) * u64::from(s) * 512
}

/// The footer of a fixed disk of `size` bytes, built at `epoch` (Unix seconds), with
/// `unique_id` derived from its contents by the caller.
pub fn footer(size: u64, epoch: u64, unique_id: [u8; 16]) -> [u8; 512] {
    let (cylinders, heads, sectors_per_track) = geometry(size);
    let mut f = Footer {
        cookie: *b"conectix",
        // Bit 1 "reserved" is always set.
        features: Be32::new(2),
        format_version: Be32::new(0x0001_0000),
        // Fixed disks have no dynamic header.
        data_offset: Be64::new(u64::MAX),
        time_stamp: Be32::new(u32::try_from(epoch.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX)),
        creator_application: *b"fbk ",
        creator_version: Be32::new(0x0001_0000),
        creator_host_os: *b"Wi2k",
        original_size: Be64::new(size),
        current_size: Be64::new(size),
        cylinders: Be16::new(cylinders),
        heads,
        sectors_per_track,
        disk_type: Be32::new(2),
        checksum: Be32::new(0),
        unique_id,
        saved_state: 0,
        reserved: [0; 427],
    };
    // One's complement of the byte sum of the footer with the checksum field zero.
    let sum = f
        .as_bytes()
        .iter()
        .fold(0u32, |s, &b| s.wrapping_add(u32::from(b)));
    f.checksum = Be32::new(!sum);
    let mut out = [0u8; 512];
    out.copy_from_slice(f.as_bytes());
    out
}

/// Writes the fixed VHD of `disk` (already padded to its size) into `out`.
pub fn write(out: &mut dyn Write, disk: &[u8], epoch: u64, unique_id: [u8; 16]) -> io::Result<()> {
    out.write_all(disk)?;
    out.write_all(&footer(disk.len() as u64, epoch, unique_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_follows_the_spec_table() {
        // 40 MiB: 81920 sectors, 17 per track, 5 heads (4819 cylinders x heads / 1024, up).
        assert_eq!(geometry(40 << 20), (963, 5, 17));
        // Past 1024 cylinders x 16 heads x 17: 31 sectors per track.
        assert_eq!(geometry(200 << 20), (825, 16, 31));
        // Past 16 heads x 31 x 1024: 63.
        assert_eq!(geometry(1 << 30), (2080, 16, 63));
        // The largest geometry for disks of 127 GiB and more.
        assert_eq!(geometry(2 << 40), MAX_GEOMETRY);
    }

    #[test]
    fn the_disk_is_whole_mib_and_its_geometry_holds_all_the_data() {
        // 35 MiB exactly (a failback.iso): its geometry addresses 96 KiB less.
        assert!(geometry_bytes(35 * MIB) < 35 * MIB);
        for len in [
            1,
            512,
            35 * MIB,
            35 * MIB + 1,
            40 * MIB - 512,
            200 * MIB + 7,
            1 << 30,
        ] {
            let size = disk_size(len);
            assert_eq!(size % MIB, 0, "{len}");
            assert!(geometry_bytes(size) >= len, "{len}: {size}");
            assert!(size - len < 3 * MIB, "{len}: {size}");
        }
        // Past the largest geometry, the current size alone counts.
        assert_eq!(disk_size(200 << 30), 200 << 30);
    }

    #[test]
    fn the_checksum_makes_the_byte_sum_all_ones() {
        let f = footer(1 << 20, 1_700_000_000, [7; 16]);
        let stored = u32::from_be_bytes(f[64..68].try_into().unwrap());
        let mut zeroed = f;
        zeroed[64..68].fill(0);
        let sum: u32 = zeroed.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(stored, !sum);
        assert_eq!(&f[..8], b"conectix");
        assert_eq!(
            u32::from_be_bytes(f[24..28].try_into().unwrap()),
            1_700_000_000 - 946_684_800
        );
    }
}
