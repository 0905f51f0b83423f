//! Rock Ridge (SUSP 1.12, RRIP 1.09): POSIX modes, link counts, times and full names in
//! each directory record's system use field, so Linux sees `isolinux.cfg`, not
//! `ISOLINUX.CFG;1`.

use zerocopy::IntoBytes;

use crate::build::iso_types::{
    Both32, DirDate, RRIP_DESCRIPTOR, RRIP_ID, RRIP_SOURCE, RripNmHead, RripPx, RripTf, SuspCe,
    SuspErHead, SuspSp, TF_MODIFY_ACCESS_ATTRIBUTES,
};

/// What Rock Ridge says about one directory record.
pub(super) struct RrAttrs {
    pub mode: u32,
    pub nlink: u32,
    /// The name (None for "." and "..").
    pub name: Option<String>,
    /// The root's "." record: it carries SP (SUSP is in use) and CE (where ER is).
    pub root_dot: bool,
}

/// Where the ER entry lives: a continuation area of its own (the root record has no room).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ErArea {
    pub lba: u32,
    pub len: u32,
}

/// SUSP/RRIP entries of a record: [SP] PX TF [NM] [CE].
pub(super) fn system_use(a: &RrAttrs, date: DirDate, er: ErArea) -> Vec<u8> {
    let mut su = Vec::new();
    if a.root_dot {
        su.extend_from_slice(
            SuspSp {
                sig: *b"SP",
                len: 7,
                version: 1,
                check: [0xBE, 0xEF],
                skip: 0,
            }
            .as_bytes(),
        );
    }
    su.extend_from_slice(
        RripPx {
            sig: *b"PX",
            len: 36,
            version: 1,
            mode: Both32::new(a.mode),
            nlink: Both32::new(a.nlink),
            uid: Both32::new(0),
            gid: Both32::new(0),
        }
        .as_bytes(),
    );
    su.extend_from_slice(
        RripTf {
            sig: *b"TF",
            len: 26,
            version: 1,
            flags: TF_MODIFY_ACCESS_ATTRIBUTES,
            modify: date,
            access: date,
            attributes: date,
        }
        .as_bytes(),
    );
    if let Some(name) = &a.name {
        let head = RripNmHead {
            sig: *b"NM",
            len: (5 + name.len()) as u8,
            version: 1,
            flags: 0,
        };
        su.extend_from_slice(head.as_bytes());
        su.extend_from_slice(name.as_bytes());
    }
    if a.root_dot {
        su.extend_from_slice(
            SuspCe {
                sig: *b"CE",
                len: 28,
                version: 1,
                lba: Both32::new(er.lba),
                offset: Both32::new(0),
                size: Both32::new(er.len),
            }
            .as_bytes(),
        );
    }
    su
}

/// The ER entry (SUSP 5.5): names RRIP 1991A as the extension in use.
pub(super) fn er_entry() -> Vec<u8> {
    let mut er = SuspErHead {
        sig: *b"ER",
        len: 0,
        version: 1,
        id_len: RRIP_ID.len() as u8,
        descriptor_len: RRIP_DESCRIPTOR.len() as u8,
        source_len: RRIP_SOURCE.len() as u8,
        ext_version: 1,
    };
    er.len =
        (size_of::<SuspErHead>() + RRIP_ID.len() + RRIP_DESCRIPTOR.len() + RRIP_SOURCE.len()) as u8;
    let mut bytes = er.as_bytes().to_vec();
    bytes.extend_from_slice(RRIP_ID);
    bytes.extend_from_slice(RRIP_DESCRIPTOR);
    bytes.extend_from_slice(RRIP_SOURCE);
    bytes
}
