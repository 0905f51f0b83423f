//! The end of a volume's pull: the target flushed, and its whole-volume digest
//! (fed window by window) compared with the remote one.

use super::window::Window;
use super::{Error, Volume};
use crate::block::{Hash, LinearDigest};
use crate::report::{Event, Phase};
use std::sync::OnceLock;
use std::sync::atomic::Ordering::Relaxed;

/// The whole-volume digests of the target and of the remote volume, fed window by
/// window, and the first block where they part.
///
/// The target's digest is made of the SHA-256 of every block as it was written
/// (computed from the bytes handed to the write, after they matched the remote hash)
/// and, for the blocks left alone, of the plan's hash of the target; the remote
/// digest is made of the remote hashes (with a learning source, those learned from
/// the blocks). A block that differed and was not written makes the two differ.
///
/// Written blocks are not read back: after the write and the flush, a read returns
/// the page cache, the very bytes hashed before the write, so it doubled the
/// hashing of the pulled data and proved nothing about the medium.
#[derive(Default)]
pub(super) struct Digests {
    target: LinearDigest,
    remote: LinearDigest,
    first_differing: Option<u64>,
}

impl Digests {
    /// Feeds the window's blocks, once all of them that are to be are written.
    pub fn fold(&mut self, w: &Window, learn: bool) {
        // Blocks outside a learning source's candidates hold neither hash: equal.
        let known = |h: &OnceLock<Hash>| h.get().copied().unwrap_or_default();
        let mut target = Vec::with_capacity(w.written.len());
        let mut remote = Vec::with_capacity(w.written.len());
        for (k, i) in w.blocks.clone().enumerate() {
            let written = w.written[k].get().copied();
            let t = written.unwrap_or_else(|| known(&w.local[k]));
            let r = written
                .filter(|_| learn)
                .unwrap_or_else(|| known(&w.remote[k]));
            if t != r && self.first_differing.is_none() {
                self.first_differing = Some(i);
            }
            target.push(t);
            remote.push(r);
        }
        self.target.update(&target);
        self.remote.update(&remote);
    }

    /// Flushes the target and compares the whole-volume digests.
    pub fn finish(self, v: Volume) -> Result<(Hash, Hash), Error> {
        let Volume {
            puller, job, feed, ..
        } = v;
        let c = &feed.pulled;
        let progress = |done| {
            puller.reporter.report(&Event::Progress {
                volume: job.info.id.clone(),
                phase: Phase::Verifying,
                done_bytes: done,
                total_bytes: job.info.size,
                wire_bytes: c.wire.load(Relaxed),
                retries: c.retries.load(Relaxed),
            })
        };
        progress(0);
        job.flush(0)?;
        let digest = self.target.finish();
        let remote_digest = self.remote.finish();
        // A live pass leaves the blocks that changed under it for the next pass.
        if digest != remote_digest && !puller.opts.live {
            // Unreachable unless a differing block was left out; say so rather than pass.
            return Err(Error::Verify {
                volume: job.info.id.clone(),
                block: self.first_differing.unwrap_or(0),
                path: job.target.path.clone(),
            });
        }
        progress(job.info.size);
        Ok((digest, remote_digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block;
    use crate::block::BLOCK_SIZE;
    use crate::source::BlockSource;
    use crate::sync::fake::{Fake, Nobody};
    use crate::sync::feed::Feed;
    use crate::sync::job::Job;
    use crate::sync::target::Target;
    use crate::sync::{Options, Puller};

    #[test]
    fn the_final_digest_catches_a_differing_block_left_unwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.img");
        let n = 3 * BLOCK_SIZE as usize;
        std::fs::write(&path, vec![1u8; n]).unwrap();
        let src = Fake::new(vec![2u8; n]);
        let job = Job {
            info: src.volumes().unwrap().remove(0),
            target: Target::open(&path, true).unwrap(),
        };
        let old = block::block_hash(&[1u8; BLOCK_SIZE as usize]);
        let new = block::block_hash(&[2u8; BLOCK_SIZE as usize]);
        // Two windows, the second short: blocks 0-1 and 2.
        let windows = || {
            let ws = [Window::bare(0..2), Window::bare(2..3)];
            for (i, remote) in [old, new, old].into_iter().enumerate() {
                let w = &ws[i / 2];
                w.local(i as u64).set(old).unwrap();
                w.remote(i as u64).set(remote).unwrap();
            }
            ws
        };
        let puller = Puller::new(&src, &Nobody, Options::default());
        let feed = Feed::default();
        let v = Volume {
            puller: &puller,
            job: &job,
            feed: &feed,
            learn: false,
        };
        let digests = |ws: &[Window]| {
            let mut d = Digests::default();
            for w in ws {
                d.fold(w, false);
            }
            d.finish(v)
        };
        match digests(&windows()) {
            Err(Error::Verify { block: 1, .. }) => {}
            other => panic!(
                "expected a verify error at block 1, got {:?}",
                other.map(|_| ())
            ),
        }
        let ws = windows();
        ws[0].written(1).set(new).unwrap();
        let (a, b) = digests(&ws).unwrap();
        let remote = block::linear_digest(&[old, new, old]);
        assert_eq!((a, b), (remote, remote));
    }
}
