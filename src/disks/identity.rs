//! What the first sectors of a disk (or a served volume) say about it: the GPT disk
//! GUID, the MBR disk signature, and the failback image id, the mark by which the
//! client knows its own boot medium when the image was written to a USB stick.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// How much of a disk to read: through the ISO 9660 primary volume descriptor
/// (sector 16 of 2048 bytes) and a GPT header on a 4Kn disk (LBA 1 at 4096).
pub const HEAD_BYTES: usize = 17 * 2048;

/// Offset of the primary volume descriptor's application-use field
/// (ECMA-119 8.4.32) from the start of the disk: where `failback build` leaves
/// `failback-image=ID`.
pub const IMAGE_MARK_OFFSET: usize = 16 * 2048 + 883;
pub const IMAGE_MARK: &str = "failback-image=";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// GPT disk GUID (UEFI spec 5.3.2: header at LBA 1, GUID at offset 56).
    pub gpt_guid: Option<String>,
    /// MBR disk signature (offset 440), in hex.
    pub mbr_id: Option<String>,
    /// The id `failback build` gave the image, if this disk holds one.
    pub image_id: Option<String>,
}

/// Reads the head of `dev` and parses it; a device shorter than [`HEAD_BYTES`] is fine.
pub fn read(dev: &Path) -> std::io::Result<Identity> {
    let mut head = Vec::with_capacity(HEAD_BYTES);
    File::open(dev)?
        .take(HEAD_BYTES as u64)
        .read_to_end(&mut head)?;
    Ok(parse(&head))
}

/// Parses the first bytes of a disk (up to [`HEAD_BYTES`]).
pub fn parse(head: &[u8]) -> Identity {
    let mbr_id = (head.get(510..512) == Some(&[0x55, 0xAA]))
        .then(|| u32::from_le_bytes(head[440..444].try_into().expect("4 bytes")))
        .filter(|id| *id != 0)
        .map(|id| format!("{id:08x}"));
    // LBA 1 is at 512 on most disks, at 4096 on 4Kn ones.
    let gpt_guid = [512, 4096]
        .into_iter()
        .find(|&at| head.get(at..at + 8) == Some(b"EFI PART"))
        .and_then(|at| head.get(at + 56..at + 72))
        .map(guid_text);
    let pvd = 16 * 2048;
    let image_id = (head.get(pvd + 1..pvd + 6) == Some(b"CD001"))
        .then(|| head.get(IMAGE_MARK_OFFSET..IMAGE_MARK_OFFSET + 512))
        .flatten()
        .and_then(|field| std::str::from_utf8(field).ok())
        .and_then(|text| text.trim_end_matches([' ', '\0']).strip_prefix(IMAGE_MARK))
        .filter(|id| !id.is_empty())
        .map(str::to_string);
    Identity {
        gpt_guid,
        mbr_id,
        image_id,
    }
}

/// A GUID in its on-disk mixed-endian form as the usual text.
fn guid_text(g: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{}-{}",
        u32::from_le_bytes(g[0..4].try_into().expect("4 bytes")),
        u16::from_le_bytes(g[4..6].try_into().expect("2 bytes")),
        u16::from_le_bytes(g[6..8].try_into().expect("2 bytes")),
        hex::encode(&g[8..10]),
        hex::encode(&g[10..16])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESP_GUID: [u8; 16] = [
        0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9,
        0x3b,
    ];

    #[test]
    fn reads_mbr_and_gpt() {
        let mut head = vec![0u8; HEAD_BYTES];
        head[440..444].copy_from_slice(&0xdeadbeef_u32.to_le_bytes());
        head[510] = 0x55;
        head[511] = 0xAA;
        head[512..520].copy_from_slice(b"EFI PART");
        head[568..584].copy_from_slice(&ESP_GUID);
        let id = parse(&head);
        assert_eq!(id.mbr_id.as_deref(), Some("deadbeef"));
        assert_eq!(
            id.gpt_guid.as_deref(),
            Some("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
        );
        assert_eq!(id.image_id, None);
    }

    #[test]
    fn reads_a_4kn_gpt_and_nothing_from_a_blank_or_short_disk() {
        let mut head = vec![0u8; HEAD_BYTES];
        head[4096..4104].copy_from_slice(b"EFI PART");
        head[4096 + 56..4096 + 72].copy_from_slice(&ESP_GUID);
        assert!(parse(&head).gpt_guid.is_some());
        assert_eq!(parse(&[0u8; 600]), Identity::default());
        assert_eq!(parse(&[]), Identity::default());
    }

    #[test]
    fn finds_the_image_mark_only_in_an_iso_volume_descriptor() {
        let mut head = vec![b' '; HEAD_BYTES];
        let mark = format!("{IMAGE_MARK}0123abcd");
        head[IMAGE_MARK_OFFSET..IMAGE_MARK_OFFSET + mark.len()].copy_from_slice(mark.as_bytes());
        assert_eq!(parse(&head).image_id, None, "no CD001: not an ISO");
        head[32769..32774].copy_from_slice(b"CD001");
        assert_eq!(parse(&head).image_id.as_deref(), Some("0123abcd"));
    }
}
