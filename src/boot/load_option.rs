//! The EFI load option (UEFI spec 2.10, 3.1.3 `EFI_LOAD_OPTION`), the value of a
//! `Boot####` variable, and the device path nodes it holds (10.3): enough to read the
//! firmware's entries and to write one that boots a file on a GPT or MBR partition.

/// `LOAD_OPTION_ACTIVE`: the firmware may boot the option.
pub const ACTIVE: u32 = 1;

/// Device path node types and subtypes (UEFI spec 10.3.1, 10.3.5).
const MEDIA: u8 = 4;
const HARD_DRIVE: u8 = 1;
const FILE_PATH: u8 = 4;
const END: u8 = 0x7f;
const END_ENTIRE: u8 = 0xff;
/// `MBRType` 1: a PC-AT MBR disk, 2: a GPT disk. `SignatureType` 1: the signature is the
/// MBR's 32-bit disk signature (bytes 440-443); 2: the partition's GUID.
const MBR: u8 = 1;
const GPT: u8 = 2;
const MBR_SIGNATURE: u8 = 1;
const GUID_SIGNATURE: u8 = 2;
/// The node header: type, subtype, length (u16).
const HEADER: usize = 4;
/// A hard drive media node (10.3.5.1), header included.
const HARD_DRIVE_LEN: usize = 42;

/// One `Boot####` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOption {
    pub attributes: u32,
    pub description: String,
    /// The device path, without its end node.
    pub path: Vec<Node>,
    /// What follows the device path (the loader's arguments, firmware tags).
    pub optional: Vec<u8>,
}

/// A device path node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A partition of a hard drive (10.3.5.1).
    HardDrive(HardDrive),
    /// A file on that partition, `\EFI\BOOT\BOOTX64.EFI` (10.3.5.4).
    File(String),
    /// Any other node, kept as it was read.
    Other {
        kind: u8,
        subtype: u8,
        data: Vec<u8>,
    },
}

/// A hard drive media node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardDrive {
    /// 1-based entry number in the partition table.
    pub partition: u32,
    /// First LBA and size in LBAs.
    pub start: u64,
    pub size: u64,
    /// The GPT partition GUID in its on-disk (mixed-endian) byte order, or an MBR signature.
    pub signature: [u8; 16],
    pub mbr_type: u8,
    pub signature_type: u8,
}

/// What tells a partition from the others of every disk: a GPT partition's unique GUID,
/// or an MBR disk's signature with the partition's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// The unique partition GUID, on-disk (mixed-endian) byte order.
    Gpt([u8; 16]),
    /// The MBR's disk signature.
    Mbr(u32),
}

impl HardDrive {
    /// The partition `number`, from `start` for `size` LBAs, told apart by `signature`.
    pub fn new(number: u32, start: u64, size: u64, signature: Signature) -> Self {
        let (bytes, mbr_type, signature_type) = match signature {
            Signature::Gpt(guid) => (guid, GPT, GUID_SIGNATURE),
            Signature::Mbr(id) => {
                let mut bytes = [0u8; 16];
                bytes[..4].copy_from_slice(&id.to_le_bytes());
                (bytes, MBR, MBR_SIGNATURE)
            }
        };
        HardDrive {
            partition: number,
            start,
            size,
            signature: bytes,
            mbr_type,
            signature_type,
        }
    }

    /// Whether this node names partition `number` with `signature`.
    pub fn is_partition(&self, number: u32, signature: Signature) -> bool {
        let named = HardDrive::new(number, 0, 0, signature);
        let signed =
            self.signature_type == named.signature_type && self.signature == named.signature;
        match signature {
            // A GUID names the partition on its own; an MBR signature names the disk.
            Signature::Gpt(_) => signed,
            Signature::Mbr(_) => signed && self.partition == number,
        }
    }
}

/// Why bytes are not a load option.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("load option truncated: {0}")]
    Truncated(&'static str),
    #[error("load option's description is not NUL-terminated UTF-16")]
    Description,
    #[error("device path node of type {kind:#x} has length {len}")]
    NodeLength { kind: u8, len: usize },
    #[error("device path has no end node")]
    NoEnd,
    #[error("{0} is too long for a load option")]
    TooLong(&'static str),
}

impl LoadOption {
    /// An active entry `description` booting `path`.
    pub fn new(description: &str, path: Vec<Node>) -> Self {
        LoadOption {
            attributes: ACTIVE,
            description: description.to_string(),
            path,
            optional: Vec::new(),
        }
    }

    /// The partition the entry boots from, if its path names one.
    pub fn hard_drive(&self) -> Option<&HardDrive> {
        self.path.iter().find_map(|n| match n {
            Node::HardDrive(hd) => Some(hd),
            _ => None,
        })
    }

    /// The variable's value.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut path = Vec::new();
        for node in &self.path {
            node.encode(&mut path)?;
        }
        path.extend_from_slice(&[END, END_ENTIRE, HEADER as u8, 0]);
        let path_len = u16::try_from(path.len()).map_err(|_| Error::TooLong("device path"))?;
        let mut out = Vec::new();
        out.extend_from_slice(&self.attributes.to_le_bytes());
        out.extend_from_slice(&path_len.to_le_bytes());
        out.extend(utf16z(&self.description));
        out.extend(path);
        out.extend_from_slice(&self.optional);
        Ok(out)
    }

    /// Reads a variable's value.
    pub fn decode(raw: &[u8]) -> Result<Self, Error> {
        let attributes = u32::from_le_bytes(take::<4>(raw, 0, "attributes")?);
        let path_len = usize::from(u16::from_le_bytes(take::<2>(raw, 4, "path length")?));
        let rest = &raw[6..];
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let nul = units
            .iter()
            .position(|&u| u == 0)
            .ok_or(Error::Description)?;
        let description = String::from_utf16(&units[..nul]).map_err(|_| Error::Description)?;
        let rest = &rest[(nul + 1) * 2..];
        let path = rest
            .get(..path_len)
            .ok_or(Error::Truncated("device path"))?;
        Ok(LoadOption {
            attributes,
            description,
            path: Node::decode_path(path)?,
            optional: rest[path_len..].to_vec(),
        })
    }
}

impl Node {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let (kind, subtype, data) = match self {
            Node::HardDrive(hd) => {
                let mut d = Vec::with_capacity(HARD_DRIVE_LEN - HEADER);
                d.extend_from_slice(&hd.partition.to_le_bytes());
                d.extend_from_slice(&hd.start.to_le_bytes());
                d.extend_from_slice(&hd.size.to_le_bytes());
                d.extend_from_slice(&hd.signature);
                d.extend_from_slice(&[hd.mbr_type, hd.signature_type]);
                (MEDIA, HARD_DRIVE, d)
            }
            Node::File(path) => (MEDIA, FILE_PATH, utf16z(path).collect()),
            Node::Other {
                kind,
                subtype,
                data,
            } => (*kind, *subtype, data.clone()),
        };
        let len = u16::try_from(HEADER + data.len()).map_err(|_| Error::TooLong("a node"))?;
        out.extend_from_slice(&[kind, subtype]);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend(data);
        Ok(())
    }

    /// The nodes of a device path up to its end node (the first instance of a
    /// multi-instance path: the firmware boots that one).
    fn decode_path(mut raw: &[u8]) -> Result<Vec<Node>, Error> {
        let mut nodes = Vec::new();
        loop {
            let [kind, subtype, l0, l1] = take::<4>(raw, 0, "device path node")?;
            let len = usize::from(u16::from_le_bytes([l0, l1]));
            if len < HEADER || len > raw.len() {
                return Err(Error::NodeLength { kind, len });
            }
            let data = &raw[HEADER..len];
            raw = &raw[len..];
            nodes.push(match (kind, subtype) {
                (END, _) => return Ok(nodes),
                (MEDIA, HARD_DRIVE) if len == HARD_DRIVE_LEN => Node::HardDrive(HardDrive {
                    partition: u32::from_le_bytes(take::<4>(data, 0, "partition")?),
                    start: u64::from_le_bytes(take::<8>(data, 4, "partition start")?),
                    size: u64::from_le_bytes(take::<8>(data, 12, "partition size")?),
                    signature: take::<16>(data, 20, "signature")?,
                    mbr_type: data[36],
                    signature_type: data[37],
                }),
                (MEDIA, FILE_PATH) => {
                    let units: Vec<u16> = data
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .take_while(|&u| u != 0)
                        .collect();
                    Node::File(String::from_utf16_lossy(&units))
                }
                _ => Node::Other {
                    kind,
                    subtype,
                    data: data.to_vec(),
                },
            });
            if raw.is_empty() {
                return Err(Error::NoEnd);
            }
        }
    }
}

/// `text` as NUL-terminated UTF-16LE.
fn utf16z(text: &str) -> impl Iterator<Item = u8> + '_ {
    text.encode_utf16().chain([0]).flat_map(|u| u.to_le_bytes())
}

/// `N` bytes of `raw` at `at`.
fn take<const N: usize>(raw: &[u8], at: usize, what: &'static str) -> Result<[u8; N], Error> {
    raw.get(at..at + N)
        .map(|b| b.try_into().expect("N bytes"))
        .ok_or(Error::Truncated(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: [u8; 16] = [
        0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9,
        0x3b,
    ];

    fn bootx64() -> LoadOption {
        LoadOption::new(
            "A",
            vec![
                Node::HardDrive(HardDrive::new(2, 0x800, 0x1000, Signature::Gpt(GUID))),
                Node::File("\\E".into()),
            ],
        )
    }

    /// The bytes efibootmgr writes for `-d DISK -p 2 -L A -l '\E'`, by the spec's layout.
    #[test]
    fn a_gpt_file_entry_has_the_spec_layout() {
        let mut want = vec![1, 0, 0, 0]; // LOAD_OPTION_ACTIVE
        want.extend([42 + 10 + 4, 0]); // path list: HD, file, end
        want.extend([b'A', 0, 0, 0]); // "A\0"
        want.extend([4, 1, 42, 0]); // media, hard drive, 42 bytes
        want.extend([2, 0, 0, 0]); // partition 2
        want.extend([0, 8, 0, 0, 0, 0, 0, 0]); // start 0x800
        want.extend([0, 0x10, 0, 0, 0, 0, 0, 0]); // size 0x1000
        want.extend(GUID);
        want.extend([2, 2]); // GPT, GUID signature
        want.extend([4, 4, 10, 0, b'\\', 0, b'E', 0, 0, 0]); // media, file path "\E\0"
        want.extend([0x7f, 0xff, 4, 0]); // end of the entire path
        assert_eq!(bootx64().encode().unwrap(), want);
    }

    /// An MBR partition: the disk signature in the first 4 bytes, then zeros.
    #[test]
    fn an_mbr_partition_has_the_spec_layout_and_is_named_with_its_number() {
        let hd = HardDrive::new(1, 2048, 1024, Signature::Mbr(0x1234_abcd));
        let option = LoadOption::new("A", vec![Node::HardDrive(hd.clone())]);
        let bytes = option.encode().unwrap();
        let node = &bytes[10..10 + 42];
        assert_eq!(
            &node[..8],
            &[4, 1, 42, 0, 1, 0, 0, 0],
            "media, hard drive, partition 1"
        );
        assert_eq!(
            &node[24..28],
            &[0xcd, 0xab, 0x34, 0x12],
            "the signature, little-endian"
        );
        assert_eq!(&node[28..40], &[0; 12]);
        assert_eq!(&node[40..42], &[1, 1], "MBR, MBR signature");
        assert_eq!(LoadOption::decode(&bytes).unwrap(), option);
        assert!(hd.is_partition(1, Signature::Mbr(0x1234_abcd)));
        assert!(
            !hd.is_partition(2, Signature::Mbr(0x1234_abcd)),
            "another partition"
        );
        assert!(
            !hd.is_partition(1, Signature::Mbr(0x1234_abce)),
            "another disk"
        );
        let mut guid = [0u8; 16];
        guid[..4].copy_from_slice(&0x1234_abcd_u32.to_le_bytes());
        assert!(
            !hd.is_partition(1, Signature::Gpt(guid)),
            "not a GPT partition"
        );
    }

    #[test]
    fn entries_read_back_as_written() {
        let mut with_tail = bootx64();
        with_tail.description = "Debian GNU/Linux ü".into();
        with_tail.path.insert(
            0,
            Node::Other {
                kind: 2,
                subtype: 1,
                data: vec![0xd0, 0x41, 0x03, 0x0a, 0, 0, 0, 0],
            },
        );
        with_tail.optional = b"RC".to_vec();
        for option in [bootx64(), with_tail] {
            let raw = option.encode().unwrap();
            assert_eq!(LoadOption::decode(&raw).unwrap(), option);
        }
        let hd = bootx64().hard_drive().unwrap().clone();
        assert!(hd.is_partition(2, Signature::Gpt(GUID)));
        assert!(
            hd.is_partition(1, Signature::Gpt(GUID)),
            "the GUID alone names it"
        );
        assert!(!hd.is_partition(2, Signature::Gpt([0; 16])));
    }

    #[test]
    fn broken_entries_are_errors_not_panics() {
        let raw = bootx64().encode().unwrap();
        for cut in 0..raw.len() {
            assert!(LoadOption::decode(&raw[..cut]).is_err(), "cut at {cut}");
        }
        let mut zero_len = raw.clone();
        zero_len[12..14].copy_from_slice(&[0, 0]); // the HD node's length
        assert_eq!(
            LoadOption::decode(&zero_len),
            Err(Error::NodeLength { kind: 4, len: 0 })
        );
    }
}
