//! The end of a volume's pull: the target flushed, and its whole-volume digest
//! compared with the remote one.

use super::{Error, Volume};
use crate::block;
use crate::block::Hash;
use crate::report::{Event, Phase};
use std::sync::OnceLock;
use std::sync::atomic::Ordering::Relaxed;

/// Flushes the target and compares whole-volume digests. The target's digest is
/// made of the SHA-256 of every block as it was written (computed from the bytes
/// handed to the write, after they matched the remote hash) and, for the blocks
/// left alone, of the plan's hash of the target; the remote digest is made of the
/// remote hashes (with a learning source, those learned from the blocks). A block
/// that differed and was not written makes the two differ.
///
/// Written blocks are not read back: after the write and the flush, a read returns
/// the page cache, the very bytes hashed before the write, so it doubled the
/// hashing of the pulled data and proved nothing about the medium.
pub(super) fn finish(v: Volume, written: Vec<OnceLock<Hash>>) -> Result<(Hash, Hash), Error> {
    let Volume {
        puller,
        job,
        hashes,
        feed,
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
    // Blocks outside a learning source's candidates hold neither hash: equal.
    let known = |h: &OnceLock<Hash>| h.get().copied().unwrap_or_default();
    let mut target: Vec<Hash> = hashes.local.iter().map(known).collect();
    let mut remote: Vec<Hash> = hashes.remote.iter().map(known).collect();
    for (i, h) in written.into_iter().enumerate() {
        if let Some(h) = h.into_inner() {
            target[i] = h;
            if hashes.learn {
                remote[i] = h;
            }
        }
    }
    let digest = block::linear_digest(&target);
    let remote_digest = block::linear_digest(&remote);
    if digest != remote_digest {
        // Unreachable unless a differing block was left out; say so rather than pass.
        let block = target
            .iter()
            .zip(&remote)
            .position(|(a, b)| a != b)
            .unwrap_or(0) as u64;
        return Err(Error::Verify {
            volume: job.info.id.clone(),
            block,
            path: job.target.path.clone(),
        });
    }
    progress(job.info.size);
    Ok((digest, remote_digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BLOCK_SIZE;
    use crate::source::BlockSource;
    use crate::sync::fake::{Fake, Nobody};
    use crate::sync::feed::Feed;
    use crate::sync::job::Job;
    use crate::sync::plan::Hashes;
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
        let hashes = Hashes::new(3, false);
        for (i, remote) in [old, new, old].into_iter().enumerate() {
            hashes.local[i].set(old).unwrap();
            hashes.remote[i].set(remote).unwrap();
        }
        let puller = Puller::new(&src, &Nobody, Options::default());
        let written = || (0..3).map(|_| OnceLock::new()).collect::<Vec<_>>();
        let feed = Feed::default();
        let v = Volume {
            puller: &puller,
            job: &job,
            hashes: &hashes,
            feed: &feed,
        };
        match finish(v, written()) {
            Err(Error::Verify { block: 1, .. }) => {}
            other => panic!(
                "expected a verify error at block 1, got {:?}",
                other.map(|_| ())
            ),
        }
        let w = written();
        w[1].set(new).unwrap();
        let (a, b) = finish(v, w).unwrap();
        let remote = block::linear_digest(&[old, new, old]);
        assert_eq!((a, b), (remote, remote));
    }
}
