//! A window of a volume's blocks: what planning and pulling keep while they work on
//! it (both sides' hashes, the hash of each block written), and nothing of the other
//! windows. A volume is planned and pulled window after window, so the engine's
//! memory follows the window's size, not the volume's; the whole-volume digests are
//! fed window by window (see [`verify::Digests`](super::verify::Digests)).

use super::job::Job;
use crate::block;
use crate::block::Hash;
use crate::source::Candidates;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

/// The blocks of a volume's windows covered by live [`Window`]s, now and at most:
/// what the engine holds per block, counted.
#[derive(Debug, Default)]
pub struct Gauge {
    live: AtomicU64,
    peak: AtomicU64,
}

impl Gauge {
    /// The most blocks live windows covered at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Relaxed)
    }
}

/// Blocks `start..end` of a volume under way.
pub(super) struct Window {
    pub blocks: Range<u64>,
    /// The blocks to hash, in order: all of them, or a learning source's candidates
    /// to fetch, then its zero ones.
    pub wanted: Vec<u64>,
    /// How many of `wanted` are a learning source's candidates to fetch (`None`: the
    /// source gives hashes).
    pub fetch_candidates: Option<usize>,
    /// The target's hashes (with a learning source: only the candidates').
    pub local: Vec<OnceLock<Hash>>,
    /// The remote hashes (with a learning source: only the zero candidates'; the
    /// others are learned from the blocks themselves).
    pub remote: Vec<OnceLock<Hash>>,
    /// The SHA-256 of each block written, computed from the very bytes handed to
    /// the write.
    pub written: Vec<OnceLock<Hash>>,
    gauge: Arc<Gauge>,
}

impl Window {
    /// Window `blocks` of `job`'s volume; `cands`: a learning source's candidates
    /// (sorted), of which those in the window are taken.
    pub fn new(
        job: &Job,
        blocks: Range<u64>,
        cands: Option<&Candidates>,
        gauge: &Arc<Gauge>,
    ) -> Self {
        let len = blocks.end - blocks.start;
        let empty = || (0..len).map(|_| OnceLock::new()).collect();
        let (wanted, fetch_candidates) = match cands {
            Some(cs) => {
                let (fetch, zero) = (within(&cs.fetch, &blocks), within(&cs.zero, &blocks));
                (
                    fetch.iter().chain(zero).copied().collect(),
                    Some(fetch.len()),
                )
            }
            None => (blocks.clone().collect(), None),
        };
        let w = Self {
            blocks,
            wanted,
            fetch_candidates,
            local: empty(),
            remote: empty(),
            written: empty(),
            gauge: gauge.clone(),
        };
        if let Some(f) = fetch_candidates {
            for &i in &w.wanted[f..] {
                let _ = w.remote(i).set(block::zero_hash(job.block_len(i)));
            }
        }
        let live = gauge.live.fetch_add(len, Relaxed) + len;
        gauge.peak.fetch_max(live, Relaxed);
        w
    }

    /// The windows of a volume of `blocks` blocks, `size` blocks each (the last
    /// may be short).
    pub fn ranges(blocks: u64, size: u64) -> impl Iterator<Item = Range<u64>> {
        let size = size.max(1);
        (0..blocks.div_ceil(size)).map(move |k| k * size..((k + 1) * size).min(blocks))
    }

    /// A window of blocks `blocks` with no job behind it, for tests.
    #[cfg(test)]
    pub fn bare(blocks: Range<u64>) -> Self {
        let len = blocks.end - blocks.start;
        let empty = || (0..len).map(|_| OnceLock::new()).collect();
        let gauge = Arc::new(Gauge::default());
        gauge.live.fetch_add(len, Relaxed);
        Self {
            wanted: blocks.clone().collect(),
            blocks,
            fetch_candidates: None,
            local: empty(),
            remote: empty(),
            written: empty(),
            gauge,
        }
    }

    fn slot(&self, i: u64) -> usize {
        (i - self.blocks.start) as usize
    }

    pub fn contains(&self, i: u64) -> bool {
        self.blocks.contains(&i)
    }

    pub fn local(&self, i: u64) -> &OnceLock<Hash> {
        &self.local[self.slot(i)]
    }

    pub fn remote(&self, i: u64) -> &OnceLock<Hash> {
        &self.remote[self.slot(i)]
    }

    pub fn written(&self, i: u64) -> &OnceLock<Hash> {
        &self.written[self.slot(i)]
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        let len = self.blocks.end - self.blocks.start;
        self.gauge.live.fetch_sub(len, Relaxed);
    }
}

/// The part of a sorted list of blocks that falls in `blocks`.
fn within<'l>(list: &'l [u64], blocks: &Range<u64>) -> &'l [u64] {
    let a = list.partition_point(|&i| i < blocks.start);
    let b = list.partition_point(|&i| i < blocks.end);
    &list[a..b]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_volume_once_in_order() {
        let all: Vec<Range<u64>> = Window::ranges(11, 4).collect();
        assert_eq!(all, [0..4, 4..8, 8..11]);
        assert_eq!(Window::ranges(8, 4).count(), 2);
        assert_eq!(Window::ranges(0, 4).count(), 0);
        assert_eq!(Window::ranges(3, 0).count(), 3, "a zero size is one block");
    }

    #[test]
    fn a_window_takes_its_own_candidates() {
        let list = [1, 4, 5, 9, 12];
        assert_eq!(within(&list, &(4..9)), [4, 5]);
        assert_eq!(within(&list, &(0..1)), [] as [u64; 0]);
        assert_eq!(within(&list, &(9..13)), [9, 12]);
    }
}
