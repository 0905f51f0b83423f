//! Pulling: the blocks a plan queued are written over several connections, zero
//! blocks as zeros, the others fetched and written only once their SHA-256 matched;
//! then the volume is flushed and verified.

use super::feed::{Failure, Side, Work};
use super::retry::BACKOFF;
use super::ticker::Ticker;
use super::{Error, Volume, verify};
use crate::block;
use crate::block::{BLOCK_SIZE, Hash};
use crate::report::{Event, Phase};
use crate::source::Received;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

/// One volume's pull under way, shared by its connection threads.
struct Pulling<'a> {
    v: Volume<'a>,
    /// Blocks written (or found already there).
    done: Vec<AtomicBool>,
    /// The SHA-256 of each block written, computed from the very bytes handed to
    /// the write; the final digest is made of these and the plan's hashes.
    written: Vec<OnceLock<Hash>>,
    /// The first error of a connection (which stops the volume).
    failed: Failure<'a>,
}

/// Writes the blocks the feed hands over until the plan is complete and every one
/// is written: zero blocks as zeros, the others fetched and verified first. Then
/// flushes and verifies the volume.
pub(super) fn pull(v: Volume) -> Result<(), Error> {
    let started = Instant::now();
    let (puller, job, feed) = (v.puller, v.job, v.feed);
    let blocks = job.info.blocks();
    let p = Pulling {
        v,
        done: (0..blocks).map(|_| AtomicBool::new(false)).collect(),
        written: (0..blocks).map(|_| OnceLock::new()).collect(),
        failed: Failure::new(feed),
    };
    let vol = &job.info.id;
    std::thread::scope(|s| {
        for _ in 0..puller.opts.connections.max(1) {
            s.spawn(|| {
                // Waits for work; ends once the plan is written, or on a stop.
                while let Some(work) = feed.next() {
                    let res = match work {
                        Work::Zero(blocks) => p.write_zeros(&blocks),
                        Work::Fetch(batch, attempts) => p.fetch(batch, attempts),
                    };
                    if let Err(e) = res {
                        p.failed.fail(e);
                        return;
                    }
                }
            });
        }
        // Progress once the plan is complete and its size known.
        s.spawn(|| {
            feed.wait_until(Side::Pulling, None, || feed.closed());
            let planned = feed.planned();
            let total = planned.fetch_bytes + planned.zero_bytes;
            let c = &feed.pulled;
            let numbers = || {
                (
                    c.done.load(Relaxed),
                    c.wire.load(Relaxed),
                    c.retries.load(Relaxed),
                )
            };
            let ticker = Ticker {
                reporter: puller.reporter,
                tick: puller.opts.tick,
                volume: vol,
                phase: Phase::Pulling,
                total,
                feed,
                side: Side::Pulling,
            };
            ticker.spawn(s, numbers, move || {
                feed.stopped() || (feed.drained() && c.done.load(Relaxed) >= total)
            });
        });
    });
    p.failed.into_result()?;
    if feed.stopped() {
        // Planning failed; its error is the one reported.
        return Ok(());
    }
    let (digest, remote_digest) = verify::finish(v, p.written)?;
    let (c, planned) = (&feed.pulled, feed.planned());
    puller.reporter.report(&Event::VolumeDone {
        volume: vol.clone(),
        target: job.target.path.display().to_string(),
        sha256: hex::encode(digest),
        remote_sha256: hex::encode(remote_digest),
        pulled_blocks: planned.fetch_blocks,
        zero_blocks: planned.zero_blocks,
        wire_bytes: c.wire.load(Relaxed),
        retries: c.retries.load(Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(())
}

impl Pulling<'_> {
    /// Counts block `i` as written with hash `h`; flushes the target every GiB.
    fn wrote(&self, i: u64, h: Hash, len: usize) -> Result<(), Error> {
        const CHECKPOINT: u64 = 1 << 30;
        let _ = self.written[i as usize].set(h);
        self.done[i as usize].store(true, Relaxed);
        let before = self.v.feed.wrote(len as u64);
        if before / CHECKPOINT != (before + len as u64) / CHECKPOINT {
            self.v.job.flush(i * BLOCK_SIZE)?;
        }
        Ok(())
    }

    /// Writes all-zero remote blocks: never fetched.
    fn write_zeros(&self, blocks: &[u64]) -> Result<(), Error> {
        let job = self.v.job;
        let zeros = vec![0u8; BLOCK_SIZE as usize];
        for &i in blocks {
            let len = job.block_len(i);
            job.write(i, &zeros[..len])?;
            self.wrote(i, block::zero_hash(len), len)?;
        }
        Ok(())
    }

    /// Fetches one batch over one connection, writing each block that arrives with
    /// the expected SHA-256; what is left goes back into the queue (one attempt more
    /// if nothing arrived), until `max_attempts` in a row made no progress.
    fn fetch(&self, batch: Vec<u64>, attempts: u32) -> Result<(), Error> {
        let Volume {
            puller,
            job,
            hashes,
            feed,
        } = self.v;
        let vol = &job.info.id;
        let mut progressed = false;
        let mut last = String::new();
        let mut failure = None;
        let res = puller
            .source
            .blocks_hashed(vol, &batch, &mut |i, data, wire, known| {
                feed.pulled.wire.fetch_add(wire, Relaxed);
                if feed.stopped() {
                    return Received::Stop;
                }
                let Some(flag) = self.done.get(i as usize) else {
                    return Received::Continue;
                };
                if !batch.contains(&i) || flag.load(Relaxed) {
                    return Received::Continue;
                }
                let len = job.block_len(i);
                // A learning source checked the block against its checksum, and may
                // hand over the SHA-256 it computed for that.
                let got = match known {
                    Some(h) if hashes.learn => h,
                    _ => block::block_hash(data),
                };
                let expected = if hashes.learn {
                    Some(&got)
                } else {
                    hashes.remote[i as usize].get()
                };
                if data.len() != len || expected != Some(&got) {
                    // Never written; the block stays in the batch and is retried.
                    feed.pulled.retries.fetch_add(1, Relaxed);
                    last = format!("block {i} arrived with the wrong SHA-256");
                    return Received::Continue;
                }
                // A learning source's block the target already holds is not rewritten.
                let res = if hashes.learn && hashes.local[i as usize].get() == Some(&got) {
                    Ok(())
                } else {
                    job.write(i, data)
                };
                match res.and_then(|()| self.wrote(i, got, len)) {
                    Ok(()) => {
                        progressed = true;
                        Received::Continue
                    }
                    Err(e) => {
                        failure = Some(e);
                        Received::Stop
                    }
                }
            });
        if let Some(e) = failure {
            return Err(e);
        }
        let left: Vec<u64> = batch
            .into_iter()
            .filter(|&i| !self.done[i as usize].load(Relaxed))
            .collect();
        if left.is_empty() || feed.stopped() {
            return Ok(());
        }
        if let Err(e) = res {
            if !e.is_retryable() {
                return Err(e.into());
            }
            last = e.to_string();
        } else if last.is_empty() {
            last = "the agent sent fewer blocks than asked".into();
        }
        let attempts = if progressed { 1 } else { attempts + 1 };
        if attempts >= puller.opts.max_attempts {
            return Err(Error::GaveUp {
                volume: vol.clone(),
                attempts,
                last,
            });
        }
        feed.pulled.retries.fetch_add(1, Relaxed);
        std::thread::sleep(BACKOFF.wait(attempts));
        feed.requeue(Work::Fetch(left, attempts));
        Ok(())
    }
}
