//! The block stream of `POST /v1/volumes/{id}/blocks`: each requested block read and
//! framed ([`wire`]) on the blocking pool, one at a time, and handed to the response
//! body by an async task. A client that does not read holds that task (memory for
//! two frames), never a thread; its connection's write timeout ends both.

use crate::block;
use crate::block::BLOCK_SIZE;
use crate::source::wire::{self, Encoding};
use hyper::body::{Body, Bytes, Frame};
use std::convert::Infallible;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

/// A response body fed by a channel (the stream's task on the other end).
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Reads and frames the blocks of one volume.
struct Framer {
    file: Arc<File>,
    size: u64,
    buf: Vec<u8>,
    packer: Option<zstd::bulk::Compressor<'static>>,
    packed: Vec<u8>,
}

impl Framer {
    fn new(file: Arc<File>, size: u64, zstd_ok: bool) -> Self {
        Framer {
            file,
            size,
            buf: vec![0u8; BLOCK_SIZE as usize],
            packer: zstd::bulk::Compressor::new(1).ok().filter(|_| zstd_ok),
            packed: vec![0u8; zstd::zstd_safe::compress_bound(BLOCK_SIZE as usize)],
        }
    }

    /// Block `i` as a frame; `None` if it cannot be read (or lies past the end).
    fn frame(&mut self, i: u64) -> Option<Bytes> {
        let offset = i.checked_mul(BLOCK_SIZE)?;
        let len = usize::try_from(self.size.checked_sub(offset)?.min(BLOCK_SIZE)).ok()?;
        let data = &mut self.buf[..len];
        self.file.read_exact_at(data, offset).ok()?;
        let data = &self.buf[..len];
        // `len` is at most a block: it fits the u32 of a frame header.
        let len32 = len as u32;
        if block::is_zero(data) {
            return Some(Bytes::copy_from_slice(&wire::header(
                i,
                Encoding::Zero,
                len32,
            )));
        }
        let mut frame;
        match self
            .packer
            .as_mut()
            .and_then(|p| compress(p, data, &mut self.packed))
        {
            Some(c) => {
                frame = Vec::with_capacity(wire::HEADER + c.len());
                frame.extend_from_slice(&wire::header(i, Encoding::Zstd, c.len() as u32));
                frame.extend_from_slice(c);
            }
            None => {
                frame = Vec::with_capacity(wire::HEADER + len);
                frame.extend_from_slice(&wire::header(i, Encoding::Raw, len32));
                frame.extend_from_slice(data);
            }
        }
        Some(Bytes::from(frame))
    }
}

/// The body streaming blocks `indexes` of `file` (`size` bytes). It holds `permit`
/// (a place among the streams under way) until it ends; a block that cannot be read
/// ends it early, and the client, seeing fewer blocks, asks again.
pub fn stream(
    file: Arc<File>,
    size: u64,
    indexes: Vec<u64>,
    zstd_ok: bool,
    permit: OwnedSemaphorePermit,
) -> ChannelBody {
    // Two frames: one read ahead while the other is written.
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    tokio::spawn(async move {
        let _permit = permit;
        let mut framer = Framer::new(file, size, zstd_ok);
        for i in indexes {
            let Ok((back, frame)) = tokio::task::spawn_blocking(move || {
                let frame = framer.frame(i);
                (framer, frame)
            })
            .await
            else {
                return;
            };
            framer = back;
            // None: unreadable; Err: the connection is gone.
            let Some(frame) = frame else { return };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    ChannelBody(rx)
}

/// A block compressed into `out` if that saves at least 1/16 of its size. A 64 KiB
/// sample is tried first: blocks of random or already compressed data (most of a
/// disk that is not zeros) cost a sample's compression, not a block's.
fn compress<'a>(
    packer: &mut zstd::bulk::Compressor<'_>,
    data: &[u8],
    out: &'a mut [u8],
) -> Option<&'a [u8]> {
    const SAMPLE: usize = 64 << 10;
    let worth = |packed: usize, len: usize| packed < len - len / 16;
    if data.len() > SAMPLE {
        let n = packer.compress_to_buffer(&data[..SAMPLE], &mut *out).ok()?;
        if !worth(n, SAMPLE) {
            return None;
        }
    }
    let n = packer.compress_to_buffer(data, &mut *out).ok()?;
    worth(n, data.len()).then_some(&out[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_blocks_that_compress_are_compressed() {
        let mut packer = zstd::bulk::Compressor::new(1).unwrap();
        let mut out = vec![0u8; zstd::zstd_safe::compress_bound(BLOCK_SIZE as usize)];
        let n = BLOCK_SIZE as usize;
        let repetitive: Vec<u8> = (0..n).map(|i| (i % 251) as u8 | 1).collect();
        let packed = compress(&mut packer, &repetitive, &mut out).unwrap();
        assert!(packed.len() < n / 16);
        assert_eq!(zstd::bulk::decompress(packed, n).unwrap(), repetitive);
        // Pseudo-random bytes (xorshift) do not compress.
        let mut x = 0x9e3779b97f4a7c15u64;
        let random: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(compress(&mut packer, &random, &mut out).is_none());
        // Short blocks skip the sample and still compress.
        let short = &repetitive[..5000];
        let packed = compress(&mut packer, short, &mut out).unwrap();
        assert_eq!(zstd::bulk::decompress(packed, 5000).unwrap(), short);
    }
}
