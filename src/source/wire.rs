//! The agent's block stream: `POST /v1/volumes/{id}/blocks` answers with frames
//! `index: u64 LE | encoding: u8 | length: u32 LE | payload`, one per requested block;
//! `GET /v1/volumes/{id}/hashes` answers with 32 bytes of SHA-256 per block ([`hashes`]).

use crate::block::{BLOCK_SIZE, Hash};
use std::io::{self, Read};

/// Frame header size in bytes.
pub const HEADER: usize = 8 + 1 + 4;

/// Payload encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Encoding {
    /// The block's bytes as they are.
    Raw = 0,
    /// A zstd frame of the block.
    Zstd = 1,
    /// An all-zero block of `length` bytes; no payload.
    Zero = 2,
}

/// Request header the client sets when it accepts zstd payloads.
pub const ACCEPT_ZSTD: &str = "x-failback-accept-zstd";

/// Encodes a frame header.
pub fn header(index: u64, encoding: Encoding, length: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(&index.to_le_bytes());
    h[8] = encoding as u8;
    h[9..].copy_from_slice(&length.to_le_bytes());
    h
}

/// One decoded frame.
pub struct Frame {
    pub index: u64,
    /// Bytes that crossed the wire for this block (header included).
    pub wire_bytes: u64,
}

/// Reads the next frame from `r`, decoding into `out` (which ends up holding the
/// block). Returns `Ok(None)` at a clean end of stream.
pub fn read_frame(
    r: &mut impl Read,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> io::Result<Option<Frame>> {
    let mut h = [0u8; HEADER];
    // A clean end is EOF exactly at a frame boundary.
    let mut got = 0;
    while got < HEADER {
        let n = r.read(&mut h[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside a frame header",
            ));
        }
        got += n;
    }
    let index = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
    let length = u32::from_le_bytes(h[9..].try_into().expect("4 bytes"));
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    if u64::from(length) > BLOCK_SIZE + 1024 {
        return Err(bad(format!(
            "frame of {length} bytes is larger than a block"
        )));
    }
    let length = length as usize;
    match h[8] {
        0 => {
            out.resize(length, 0);
            r.read_exact(out)?;
        }
        1 => {
            scratch.resize(length, 0);
            r.read_exact(scratch)?;
            out.resize(BLOCK_SIZE as usize, 0);
            let n = zstd::bulk::decompress_to_buffer(scratch, &mut out[..])
                .map_err(|e| bad(format!("bad zstd payload for block {index}: {e}")))?;
            out.truncate(n);
        }
        2 => {
            out.clear();
            out.resize(length, 0);
            return Ok(Some(Frame {
                index,
                wire_bytes: HEADER as u64,
            }));
        }
        e => return Err(bad(format!("unknown encoding {e} for block {index}"))),
    }
    Ok(Some(Frame {
        index,
        wire_bytes: (HEADER + length) as u64,
    }))
}

/// The hashes in the body of an answer to a hashes request for `count` blocks.
pub fn hashes(body: &[u8], count: u64) -> Result<Vec<Hash>, String> {
    if u64::try_from(body.len()).ok() != count.checked_mul(32) {
        return Err(format!("{} bytes of hashes for {count} blocks", body.len()));
    }
    Ok(body
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_all_encodings() {
        let raw = vec![7u8; 1000];
        let packed = zstd::bulk::compress(&raw, 1).unwrap();
        let mut stream = Vec::new();
        stream.extend_from_slice(&header(5, Encoding::Raw, 1000));
        stream.extend_from_slice(&raw);
        stream.extend_from_slice(&header(6, Encoding::Zstd, packed.len() as u32));
        stream.extend_from_slice(&packed);
        stream.extend_from_slice(&header(7, Encoding::Zero, 4096));
        let mut r = &stream[..];
        let (mut s, mut out) = (Vec::new(), Vec::new());
        let f = read_frame(&mut r, &mut s, &mut out).unwrap().unwrap();
        assert_eq!((f.index, &out[..]), (5, &raw[..]));
        let f = read_frame(&mut r, &mut s, &mut out).unwrap().unwrap();
        assert_eq!((f.index, &out[..]), (6, &raw[..]));
        assert!(f.wire_bytes < 1000);
        let f = read_frame(&mut r, &mut s, &mut out).unwrap().unwrap();
        assert_eq!(
            (f.index, out.len(), out.iter().all(|b| *b == 0)),
            (7, 4096, true)
        );
        assert!(read_frame(&mut r, &mut s, &mut out).unwrap().is_none());
    }

    #[test]
    fn truncated_stream_is_an_error_not_an_end() {
        let mut stream = header(1, Encoding::Raw, 100).to_vec();
        stream.extend_from_slice(&[1; 50]);
        let mut r = &stream[..];
        assert!(read_frame(&mut r, &mut Vec::new(), &mut Vec::new()).is_err());
        let mut r = &stream[..5];
        assert!(read_frame(&mut r, &mut Vec::new(), &mut Vec::new()).is_err());
    }
}
