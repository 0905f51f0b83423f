//! The primary volume descriptor (sector 16) and the set terminator (sector 18): what
//! the volume is called, how big it is, where its root and path tables are.

use zerocopy::byteorder::U32;

use super::dates::Civil;
use crate::build::iso_types::{
    Both16, Both32, CD001, PrimaryVolumeDescriptor, SECTOR, TerminatorDescriptor, VD_PRIMARY,
    VD_TERMINATOR, VolDate,
};

/// What the primary volume descriptor records.
pub(super) struct Volume<'a> {
    pub label: &'a str,
    pub version: &'a str,
    /// Marked in the application use field (see [`image_mark`]).
    pub image_id: &'a str,
    pub created: Civil,
    pub sectors: u32,
    pub root_record: [u8; 34],
    pub path_table_size: u32,
    pub l_path_table: u32,
    pub m_path_table: u32,
}

/// ECMA-119 8.4.
pub(super) fn primary(v: &Volume<'_>) -> PrimaryVolumeDescriptor {
    let app = format!("FAILBACK {}", v.version.to_ascii_uppercase());
    PrimaryVolumeDescriptor {
        kind: VD_PRIMARY,
        id: CD001,
        version: 1,
        unused1: 0,
        system_id: a_chars("LINUX"),
        volume_id: a_chars(v.label),
        unused2: [0; 8],
        volume_space_size: Both32::new(v.sectors),
        unused3: [0; 32],
        volume_set_size: Both16::new(1),
        volume_seq: Both16::new(1),
        block_size: Both16::new(SECTOR as u16),
        path_table_size: Both32::new(v.path_table_size),
        l_path_table: U32::new(v.l_path_table),
        opt_l_path_table: U32::new(0),
        m_path_table: U32::new(v.m_path_table),
        opt_m_path_table: U32::new(0),
        root_record: v.root_record,
        volume_set_id: a_chars(v.label),
        publisher_id: a_chars(""),
        preparer_id: a_chars("FAILBACK BUILD"),
        application_id: a_chars(&app),
        copyright_file: a_chars(""),
        abstract_file: a_chars(""),
        bibliographic_file: a_chars(""),
        created: v.created.vol_date(),
        modified: v.created.vol_date(),
        expires: VolDate::UNSPECIFIED,
        effective: VolDate::UNSPECIFIED,
        file_structure_version: 1,
        reserved1: 0,
        application_use: image_mark(v.image_id),
        reserved2: [0; 653],
    }
}

/// ECMA-119 8.3.
pub(super) fn terminator() -> TerminatorDescriptor {
    TerminatorDescriptor {
        kind: VD_TERMINATOR,
        id: CD001,
        version: 1,
        reserved: [0; 2041],
    }
}

/// The application-use field of the primary volume descriptor: `failback-image=ID`
/// (read back by `disks::identity`), space-padded.
fn image_mark(id: &str) -> [u8; 512] {
    let mut field = [b' '; 512];
    if !id.is_empty() {
        let mark = format!("{}{id}", crate::disks::identity::IMAGE_MARK);
        field[..mark.len()].copy_from_slice(mark.as_bytes());
    }
    field
}

/// ECMA-119 7.4: a-characters padded with spaces.
fn a_chars<const N: usize>(s: &str) -> [u8; N] {
    let mut v = [b' '; N];
    for (slot, b) in v.iter_mut().zip(s.bytes()) {
        *slot = match b.to_ascii_uppercase() {
            c @ (b' '..=b'_') => c,
            _ => b'_',
        };
    }
    v
}
