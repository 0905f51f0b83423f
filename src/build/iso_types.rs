//! On-disk structures of the hybrid ISO image, one struct per spec structure.
//!
//! Every struct is `repr(C)` of byte-order-explicit fields (alignment 1, so no padding) and
//! its size is asserted at compile time. The code that lays these out lives in `iso/`
//! (ISO 9660, Rock Ridge, El Torito) and `hybrid.rs` (MBR, GPT).
//!
//! Specs: ECMA-119 4th edition (= ISO 9660), "El Torito" Bootable CD-ROM Format
//! Specification 1.0, IEEE P1281 SUSP 1.12 and P1282 RRIP 1.09 (Rock Ridge), the UEFI
//! specification 2.10 chapter 5 (MBR, GPT), and the boot information table of
//! `mkisofs -boot-info-table` (documented in syslinux' `doc/isolinux.txt`).

use zerocopy::byteorder::{BigEndian, LittleEndian, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Logical sector (and block) size of the ISO image.
pub const SECTOR: u64 = 2048;
/// Sector size of the image seen as a disk (MBR, GPT, El Torito sector counts).
pub const DISK_SECTOR: u64 = 512;

type Le16 = U16<LittleEndian>;
type Le32 = U32<LittleEndian>;
type Le64 = U64<LittleEndian>;
type Be16 = U16<BigEndian>;
type Be32 = U32<BigEndian>;

/// ECMA-119 7.2.3: a 16-bit number recorded in both byte orders.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Both16 {
    le: Le16,
    be: Be16,
}
const _: () = assert!(size_of::<Both16>() == 4);

impl Both16 {
    pub fn new(v: u16) -> Self {
        Self {
            le: Le16::new(v),
            be: Be16::new(v),
        }
    }
}

/// ECMA-119 7.3.3: a 32-bit number recorded in both byte orders.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Both32 {
    le: Le32,
    be: Be32,
}
const _: () = assert!(size_of::<Both32>() == 8);

impl Both32 {
    pub fn new(v: u32) -> Self {
        Self {
            le: Le32::new(v),
            be: Be32::new(v),
        }
    }
}

/// ECMA-119 9.1.5: recording date and time of a directory record (7 bytes).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct DirDate {
    /// Years since 1900.
    pub year: u8,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// Offset from GMT in 15-minute intervals.
    pub gmt_offset: u8,
}
const _: () = assert!(size_of::<DirDate>() == 7);

/// ECMA-119 8.4.26.1: date and time of a volume descriptor: "YYYYMMDDHHMMSScc" + offset.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VolDate {
    pub digits: [u8; 16],
    pub gmt_offset: u8,
}
const _: () = assert!(size_of::<VolDate>() == 17);

impl VolDate {
    /// ECMA-119 8.4.26.1: "not specified" is all digits zero and offset zero.
    pub const UNSPECIFIED: Self = Self {
        digits: [b'0'; 16],
        gmt_offset: 0,
    };
}

/// ECMA-119 9.1: the fixed part of a directory record, followed by the file identifier,
/// a padding byte when the identifier length is even, and the system use area.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DirRecordHead {
    pub len: u8,
    pub ext_attr_len: u8,
    pub extent: Both32,
    pub data_len: Both32,
    pub date: DirDate,
    pub flags: u8,
    pub unit_size: u8,
    pub gap_size: u8,
    pub vol_seq: Both16,
    pub name_len: u8,
}
const _: () = assert!(size_of::<DirRecordHead>() == 33);

/// ECMA-119 9.1.6: file flag "directory".
pub const DIR_FLAG_DIRECTORY: u8 = 0x02;

/// ECMA-119 8.4: the primary volume descriptor.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PrimaryVolumeDescriptor {
    pub kind: u8,
    pub id: [u8; 5],
    pub version: u8,
    pub unused1: u8,
    pub system_id: [u8; 32],
    pub volume_id: [u8; 32],
    pub unused2: [u8; 8],
    pub volume_space_size: Both32,
    pub unused3: [u8; 32],
    pub volume_set_size: Both16,
    pub volume_seq: Both16,
    pub block_size: Both16,
    pub path_table_size: Both32,
    pub l_path_table: Le32,
    pub opt_l_path_table: Le32,
    pub m_path_table: Be32,
    pub opt_m_path_table: Be32,
    /// A 34-byte directory record (identifier 0x00) for the root directory.
    pub root_record: [u8; 34],
    pub volume_set_id: [u8; 128],
    pub publisher_id: [u8; 128],
    pub preparer_id: [u8; 128],
    pub application_id: [u8; 128],
    pub copyright_file: [u8; 37],
    pub abstract_file: [u8; 37],
    pub bibliographic_file: [u8; 37],
    pub created: VolDate,
    pub modified: VolDate,
    pub expires: VolDate,
    pub effective: VolDate,
    pub file_structure_version: u8,
    pub reserved1: u8,
    pub application_use: [u8; 512],
    pub reserved2: [u8; 653],
}
const _: () = assert!(size_of::<PrimaryVolumeDescriptor>() == SECTOR as usize);

/// ECMA-119 8.1: volume descriptor type of a boot record.
pub const VD_BOOT_RECORD: u8 = 0;
/// ECMA-119 8.4.1: volume descriptor type of the primary volume descriptor.
pub const VD_PRIMARY: u8 = 1;
/// ECMA-119 8.3.1: volume descriptor set terminator.
pub const VD_TERMINATOR: u8 = 255;
/// ECMA-119 8.1.2: standard identifier.
pub const CD001: [u8; 5] = *b"CD001";

/// El Torito 2.0: the boot record volume descriptor pointing at the boot catalog.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootRecordDescriptor {
    pub kind: u8,
    pub id: [u8; 5],
    pub version: u8,
    pub boot_system_id: [u8; 32],
    pub boot_id: [u8; 32],
    pub catalog_lba: Le32,
    pub unused: [u8; 1973],
}
const _: () = assert!(size_of::<BootRecordDescriptor>() == SECTOR as usize);

/// El Torito 2.0: the boot system identifier.
pub const EL_TORITO_ID: &[u8] = b"EL TORITO SPECIFICATION";

/// ECMA-119 8.3: the volume descriptor set terminator.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TerminatorDescriptor {
    pub kind: u8,
    pub id: [u8; 5],
    pub version: u8,
    pub reserved: [u8; 2041],
}
const _: () = assert!(size_of::<TerminatorDescriptor>() == SECTOR as usize);

/// ECMA-119 9.4: the fixed part of a path table record (byte order chosen by the table),
/// followed by the directory identifier and a padding byte when its length is odd.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PathRecordHead<T16, T32> {
    pub name_len: u8,
    pub ext_attr_len: u8,
    pub extent: T32,
    pub parent: T16,
}
/// Path table record in the type L (little-endian) table.
pub type PathRecordL = PathRecordHead<Le16, Le32>;
/// Path table record in the type M (big-endian) table.
pub type PathRecordM = PathRecordHead<Be16, Be32>;
const _: () = assert!(size_of::<PathRecordL>() == 8 && size_of::<PathRecordM>() == 8);

/// El Torito 2.1: the validation entry, first entry of the boot catalog.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ValidationEntry {
    pub header_id: u8,
    pub platform: u8,
    pub reserved: Le16,
    pub id: [u8; 24],
    /// Makes the sum of all 16-bit words of the entry zero.
    pub checksum: Le16,
    pub key: [u8; 2],
}
const _: () = assert!(size_of::<ValidationEntry>() == 32);

/// El Torito 2.2 and 2.4: the initial/default entry and a section entry (same layout; the
/// section entry's selection criteria stay zero).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootEntry {
    pub indicator: u8,
    pub media: u8,
    pub load_segment: Le16,
    pub system_type: u8,
    pub unused: u8,
    /// Virtual (512-byte) sectors loaded by the BIOS; UEFI takes it as the image size.
    pub sector_count: Le16,
    pub load_rba: Le32,
    pub selection: [u8; 20],
}
const _: () = assert!(size_of::<BootEntry>() == 32);

/// El Torito 2.3: a section header.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SectionHeader {
    pub indicator: u8,
    pub platform: u8,
    pub entries: Le16,
    pub id: [u8; 28],
}
const _: () = assert!(size_of::<SectionHeader>() == 32);

/// El Torito 2.1: platform ids.
pub const PLATFORM_X86: u8 = 0x00;
/// UEFI 2.10 section 13.3.2.1: El Torito platform id of EFI.
pub const PLATFORM_EFI: u8 = 0xEF;
/// El Torito 2.2: bootable.
pub const BOOTABLE: u8 = 0x88;
/// El Torito 2.2: media type "no emulation".
pub const NO_EMULATION: u8 = 0;
/// El Torito 2.3: header indicator of the last section.
pub const LAST_SECTION: u8 = 0x91;

/// `mkisofs -boot-info-table`: written at offset 8 of the no-emulation boot image.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootInfoTable {
    pub pvd_lba: Le32,
    pub file_lba: Le32,
    pub file_len: Le32,
    /// Sum of the 32-bit little-endian words of the file from offset 64 on.
    pub checksum: Le32,
    pub reserved: [u8; 40],
}
const _: () = assert!(size_of::<BootInfoTable>() == 56);
/// Offset of the boot information table in the boot image.
pub const BOOT_INFO_OFFSET: usize = 8;

/// SUSP 5.3: "SP", the first entry of the root's "." record; enables SUSP.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SuspSp {
    pub sig: [u8; 2],
    pub len: u8,
    pub version: u8,
    pub check: [u8; 2],
    pub skip: u8,
}
const _: () = assert!(size_of::<SuspSp>() == 7);

/// SUSP 5.1: "CE", the continuation area of a record's system use entries.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SuspCe {
    pub sig: [u8; 2],
    pub len: u8,
    pub version: u8,
    pub lba: Both32,
    pub offset: Both32,
    pub size: Both32,
}
const _: () = assert!(size_of::<SuspCe>() == 28);

/// SUSP 5.5: the fixed part of "ER", followed by identifier, descriptor and source.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SuspErHead {
    pub sig: [u8; 2],
    pub len: u8,
    pub version: u8,
    pub id_len: u8,
    pub descriptor_len: u8,
    pub source_len: u8,
    pub ext_version: u8,
}
const _: () = assert!(size_of::<SuspErHead>() == 8);

/// RRIP 1.09 4.1.1: "PX", POSIX file attributes (the 1.09 form, without the serial number).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RripPx {
    pub sig: [u8; 2],
    pub len: u8,
    pub version: u8,
    pub mode: Both32,
    pub nlink: Both32,
    pub uid: Both32,
    pub gid: Both32,
}
const _: () = assert!(size_of::<RripPx>() == 36);

/// RRIP 1.09 4.1.6: "TF" with modify, access and attribute-change times in 7-byte form.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RripTf {
    pub sig: [u8; 2],
    pub len: u8,
    pub version: u8,
    pub flags: u8,
    pub modify: DirDate,
    pub access: DirDate,
    pub attributes: DirDate,
}
const _: () = assert!(size_of::<RripTf>() == 26);
/// RRIP 1.09 4.1.6: TF flags MODIFY | ACCESS | ATTRIBUTES.
pub const TF_MODIFY_ACCESS_ATTRIBUTES: u8 = 0x0E;

/// RRIP 1.09 4.1.4: the fixed part of "NM", followed by the name.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RripNmHead {
    pub sig: [u8; 2],
    pub len: u8,
    pub version: u8,
    pub flags: u8,
}
const _: () = assert!(size_of::<RripNmHead>() == 5);

/// RRIP 1.09 5.1: the extension identifier and its texts, recorded in "ER".
pub const RRIP_ID: &[u8] = b"RRIP_1991A";
pub const RRIP_DESCRIPTOR: &[u8] =
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
pub const RRIP_SOURCE: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

/// UEFI 2.10 5.2.1: one partition record of a legacy MBR.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MbrPartition {
    pub boot_indicator: u8,
    pub start_chs: [u8; 3],
    pub os_type: u8,
    pub end_chs: [u8; 3],
    pub start_lba: Le32,
    pub size_lba: Le32,
}
const _: () = assert!(size_of::<MbrPartition>() == 16);

/// UEFI 2.10 5.2.3: the protective MBR (here with isohdpfx boot code in front; its bytes
/// 432..440 hold the 512-byte LBA of isolinux.bin, read by that boot code).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Mbr {
    pub boot_code: [u8; 432],
    /// isohdpfx: 512-byte LBA of the boot file (isolinux.bin).
    pub boot_file_lba: Le64,
    pub disk_signature: Le32,
    pub reserved: Le16,
    pub partitions: [MbrPartition; 4],
    pub signature: [u8; 2],
}
const _: () = assert!(size_of::<Mbr>() == DISK_SECTOR as usize);
/// UEFI 2.10 5.2.3: OS type of the protective partition.
pub const MBR_TYPE_GPT_PROTECTIVE: u8 = 0xEE;

/// UEFI 2.10 5.3.2: the GPT header (the rest of its sector is zero).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GptHeader {
    pub signature: [u8; 8],
    pub revision: Le32,
    pub header_size: Le32,
    pub header_crc32: Le32,
    pub reserved: Le32,
    pub my_lba: Le64,
    pub alternate_lba: Le64,
    pub first_usable_lba: Le64,
    pub last_usable_lba: Le64,
    pub disk_guid: [u8; 16],
    pub entries_lba: Le64,
    pub entry_count: Le32,
    pub entry_size: Le32,
    pub entries_crc32: Le32,
}
const _: () = assert!(size_of::<GptHeader>() == 92);

/// UEFI 2.10 5.3.3: a GPT partition entry.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GptEntry {
    pub type_guid: [u8; 16],
    pub unique_guid: [u8; 16],
    pub first_lba: Le64,
    pub last_lba: Le64,
    pub attributes: Le64,
    /// UTF-16LE.
    pub name: [Le16; 36],
}
const _: () = assert!(size_of::<GptEntry>() == 128);

/// UEFI 2.10 5.3.2: number of entries in the partition entry array (the minimum table size,
/// 16 KiB).
pub const GPT_ENTRIES: u32 = 128;
