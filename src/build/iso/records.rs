//! ECMA-119 records: directory records (9.1) with their Rock Ridge fields, packed into
//! directory extents, and the path tables (9.4).
//!
//! Sizes are measured by building the bytes before the layout is known (sectors and dates
//! do not change any length), so the size and the bytes cannot disagree.

use zerocopy::IntoBytes;
use zerocopy::byteorder::{BigEndian, LittleEndian, U16, U32};

use super::error::IsoError;
use super::rock_ridge::{ErArea, RrAttrs, system_use};
use super::tree::{DirNode, Entry, Tree};
use crate::build::iso_types::{
    Both16, Both32, DIR_FLAG_DIRECTORY, DirDate, DirRecordHead, PathRecordL, PathRecordM, SECTOR,
};

/// One directory record to write.
struct Record {
    ident: Vec<u8>,
    lba: u32,
    len: u32,
    dir: bool,
    rr: RrAttrs,
}

impl Record {
    /// The record with `su` as its system use field.
    fn bytes(&self, su: &[u8], date: DirDate) -> Result<Vec<u8>, IsoError> {
        let name_len = self.ident.len();
        // ECMA-119 9.1.12: a pad byte after an even-length identifier.
        let pad = usize::from(name_len.is_multiple_of(2));
        let mut len = 33 + name_len + pad + su.len();
        len += len % 2;
        let len8 =
            u8::try_from(len).map_err(|_| IsoError::TooLarge("directory record over 255 bytes"))?;
        let head = DirRecordHead {
            len: len8,
            ext_attr_len: 0,
            extent: Both32::new(self.lba),
            data_len: Both32::new(self.len),
            date,
            flags: if self.dir { DIR_FLAG_DIRECTORY } else { 0 },
            unit_size: 0,
            gap_size: 0,
            vol_seq: Both16::new(1),
            name_len: name_len as u8,
        };
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(head.as_bytes());
        v.extend_from_slice(&self.ident);
        v.resize(v.len() + pad, 0);
        v.extend_from_slice(su);
        v.resize(len, 0);
        Ok(v)
    }
}

/// The records of directory `d`: ".", "..", then its entries in order.
fn records(tree: &Tree, d: usize) -> Vec<Record> {
    let dir = &tree.dirs[d];
    let parent = &tree.dirs[dir.parent];
    let dir_record = |ident: Vec<u8>, x: &DirNode, name: Option<String>, root_dot: bool| Record {
        ident,
        lba: x.lba,
        len: x.size,
        dir: true,
        rr: RrAttrs {
            mode: 0o040555,
            nlink: 2 + x.subdirs.len() as u32,
            name,
            root_dot,
        },
    };
    let mut v = vec![
        dir_record(vec![0], dir, None, d == 0),
        dir_record(vec![1], parent, None, false),
    ];
    for e in tree.entries(d) {
        v.push(match e {
            Entry::Dir(s) => {
                let s = &tree.dirs[s];
                dir_record(s.ident.clone(), s, Some(s.name.clone()), false)
            }
            Entry::File(f) => {
                let f = &tree.files[f];
                Record {
                    ident: f.ident.clone(),
                    lba: f.lba,
                    len: f.data.len() as u32,
                    dir: false,
                    rr: RrAttrs {
                        mode: 0o100444,
                        nlink: 1,
                        name: Some(f.name.clone()),
                        root_dot: false,
                    },
                }
            }
        });
    }
    v
}

/// Directory `d`'s extent: its records in whole sectors, none crossing a sector boundary
/// (ECMA-119 6.8.1.1).
pub(super) fn dir_extent(
    tree: &Tree,
    d: usize,
    date: DirDate,
    er: ErArea,
) -> Result<Vec<u8>, IsoError> {
    let mut extent = Vec::new();
    for r in records(tree, d) {
        let bytes = r.bytes(&system_use(&r.rr, date, er), date)?;
        let room = SECTOR as usize - extent.len() % SECTOR as usize;
        if bytes.len() > room {
            extent.resize(extent.len() + room, 0);
        }
        extent.extend_from_slice(&bytes);
    }
    extent.resize(extent.len().div_ceil(SECTOR as usize) * SECTOR as usize, 0);
    Ok(extent)
}

/// Bytes of directory `d`'s extent, before anything has a place.
pub(super) fn dir_size(tree: &Tree, d: usize) -> Result<u32, IsoError> {
    let extent = dir_extent(tree, d, DirDate::default(), ErArea::default())?;
    u32::try_from(extent.len()).map_err(|_| IsoError::TooLarge("directory"))
}

/// The root's record in the primary volume descriptor (ECMA-119 8.4.18): its "." record
/// without system use.
pub(super) fn root_record(tree: &Tree, date: DirDate) -> Result<[u8; 34], IsoError> {
    let bytes = records(tree, 0)[0].bytes(&[], date)?;
    Ok(bytes.try_into().expect("a 34-byte record"))
}

/// The L (little-endian) and M (big-endian) path tables of the directories in `order`
/// (path table order: a directory's number is its place in it, from 1).
pub(super) fn path_tables(tree: &Tree, order: &[usize]) -> Result<(Vec<u8>, Vec<u8>), IsoError> {
    let number = |d: usize| order.iter().position(|&x| x == d).unwrap_or(0) + 1;
    let (mut l_table, mut m_table) = (Vec::new(), Vec::new());
    for &d in order {
        let dir = &tree.dirs[d];
        let parent =
            u16::try_from(number(dir.parent)).map_err(|_| IsoError::TooLarge("directories"))?;
        let n = dir.ident.len() as u8;
        let l = PathRecordL {
            name_len: n,
            ext_attr_len: 0,
            extent: U32::<LittleEndian>::new(dir.lba),
            parent: U16::<LittleEndian>::new(parent),
        };
        let m = PathRecordM {
            name_len: n,
            ext_attr_len: 0,
            extent: U32::<BigEndian>::new(dir.lba),
            parent: U16::<BigEndian>::new(parent),
        };
        for (table, head) in [(&mut l_table, l.as_bytes()), (&mut m_table, m.as_bytes())] {
            table.extend_from_slice(head);
            table.extend_from_slice(&dir.ident);
            if n % 2 == 1 {
                table.push(0);
            }
        }
    }
    Ok((l_table, m_table))
}
