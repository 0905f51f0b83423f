//! The hashing threads of a plan: the target's blocks read and hashed, the remote
//! hashes fetched, each stored in its [`Window`] as it is known, counted, and
//! announced to the planner waiting for it.

use super::plan::Planning;
use super::window::Window;
use crate::block;
use crate::block::BLOCK_SIZE;
use crate::source::SourceError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread::Scope;

impl Planning<'_> {
    /// Reads and hashes the target's blocks the window wants on `hash_threads`
    /// threads spawned in `s`, [`block::BATCH`] blocks at a time, storing each hash
    /// in the window's local hashes; bytes hashed are counted in `counters.done`.
    /// The one read-and-hash loop of the engine.
    pub fn spawn_hashers<'s>(&'s self, s: &'s Scope<'s, '_>, w: &'s Window) {
        let (job, feed) = (self.v.job, self.v.feed);
        let blocks = &w.wanted;
        let c = &self.counters;
        let next = Arc::new(AtomicU64::new(0));
        let bs = BLOCK_SIZE as usize;
        for _ in 0..self.v.puller.opts.hash_threads.max(1) {
            let next = next.clone();
            s.spawn(move || {
                let mut buf = vec![0u8; block::BATCH * bs];
                let mut holes = job.target.holes();
                loop {
                    let first = next.fetch_add(block::BATCH as u64, Relaxed) as usize;
                    if first >= blocks.len() || feed.stopped() {
                        return;
                    }
                    let batch = &blocks[first..(first + block::BATCH).min(blocks.len())];
                    let (mut read, mut data) = (Vec::new(), Vec::new());
                    for (&i, slot) in batch.iter().zip(buf.chunks_mut(bs)) {
                        let len = job.block_len(i);
                        let off = i * BLOCK_SIZE;
                        // A hole of a sparse image reads as zeros: not read at all.
                        if holes.as_mut().is_some_and(|h| h.contains(off, len as u64)) {
                            let _ = w.local(i).set(block::zero_hash(len));
                            continue;
                        }
                        if let Err(e) = job.read(i, &mut slot[..len]) {
                            self.failed.fail(e);
                            return;
                        }
                        read.push(i);
                        data.push(&slot[..len]);
                    }
                    for (i, h) in read.into_iter().zip(block::block_hashes(&data)) {
                        let _ = w.local(i).set(h);
                    }
                    c.done.fetch_add(job.bytes(batch.iter().copied()), Relaxed);
                    feed.hashed();
                }
            });
        }
    }

    /// Fetches the remote hashes of the window's blocks on `hash_threads` threads
    /// (at least two, so one request is in flight while another's answer is
    /// stored), in chunks; bytes hashed are counted in `counters.done`.
    pub fn spawn_remote_hashers<'s>(&'s self, s: &'s Scope<'s, '_>, w: &'s Window) {
        const CHUNK: u64 = 256;
        let (puller, job, feed) = (self.v.puller, self.v.job, self.v.feed);
        let c = &self.counters;
        let (first, n) = (w.blocks.start, w.blocks.end);
        let next_chunk = Arc::new(AtomicU64::new(0));
        for _ in 0..puller.opts.hash_threads.max(2) {
            let next_chunk = next_chunk.clone();
            s.spawn(move || {
                loop {
                    let start = first + next_chunk.fetch_add(1, Relaxed) * CHUNK;
                    if start >= n || feed.stopped() {
                        return;
                    }
                    let count = CHUNK.min(n - start);
                    let what = format!("hash volume '{}'", job.info.id);
                    let got = puller.retrying(&what, &c.retries, || {
                        let hs = puller.source.hashes(&job.info.id, start, count)?;
                        if hs.len() as u64 != count {
                            return Err(SourceError::Protocol {
                                url: job.info.id.clone(),
                                message: format!("{} hashes for {count} blocks", hs.len()),
                            });
                        }
                        Ok(hs)
                    });
                    match got {
                        Ok(hs) => {
                            for (i, h) in (start..).zip(hs) {
                                let _ = w.remote(i).set(h);
                            }
                            c.done.fetch_add(job.bytes(start..start + count), Relaxed);
                            feed.hashed();
                        }
                        Err(e) => {
                            self.failed.fail(e);
                            return;
                        }
                    }
                }
            });
        }
    }
}
