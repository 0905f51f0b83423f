//! A block source and a reporter in memory, for the engine's unit tests.

use crate::block;
use crate::block::{BLOCK_SIZE, Hash};
use crate::report::{Event, Reporter};
use crate::source::{BlockSource, Received, SourceError, VolumeInfo};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// A source in memory that corrupts the first `corrupt` blocks it sends and
/// records every write the puller makes through a watched target file.
pub(super) struct Fake {
    pub data: Vec<u8>,
    pub corrupt: AtomicUsize,
    pub sent: AtomicUsize,
    /// Hashes of blocks from this one on are refused (HTTP 401).
    pub refuse_hashes_from: u64,
}

impl Fake {
    /// A volume holding `data`, sent as it is, every hash given.
    pub fn new(data: Vec<u8>) -> Self {
        Self {
            data,
            corrupt: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
            refuse_hashes_from: u64::MAX,
        }
    }
}

impl BlockSource for Fake {
    fn volumes(&self) -> Result<Vec<VolumeInfo>, SourceError> {
        Ok(vec![VolumeInfo {
            id: "v".into(),
            size: self.data.len() as u64,
            block_size: BLOCK_SIZE,
            gpt_guid: None,
            mbr_id: None,
        }])
    }
    fn hashes(&self, _: &str, start: u64, count: u64) -> Result<Vec<Hash>, SourceError> {
        if start + count > self.refuse_hashes_from {
            return Err(SourceError::Unauthorized { url: "fake".into() });
        }
        Ok((start..start + count)
            .map(|i| {
                let a = (i * BLOCK_SIZE) as usize;
                let b = (a + BLOCK_SIZE as usize).min(self.data.len());
                block::block_hash(&self.data[a..b])
            })
            .collect())
    }
    fn blocks(
        &self,
        _: &str,
        indexes: &[u64],
        sink: &mut dyn FnMut(u64, &[u8], u64) -> Received,
    ) -> Result<(), SourceError> {
        for &i in indexes {
            let a = (i * BLOCK_SIZE) as usize;
            let b = (a + BLOCK_SIZE as usize).min(self.data.len());
            let mut block = self.data[a..b].to_vec();
            self.sent.fetch_add(1, Relaxed);
            let left = self.corrupt.load(Relaxed);
            if left > 0 {
                self.corrupt.store(left - 1, Relaxed);
                block[17] ^= 0x40;
            }
            sink(i, &block, block.len() as u64);
        }
        Ok(())
    }
}

pub(super) struct Nobody;
impl Reporter for Nobody {
    fn report(&self, _: &Event) {}
}
