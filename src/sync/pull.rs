//! Pulling: the blocks a plan queued are written over several connections, zero
//! blocks as zeros, the others fetched and written only once their SHA-256 matched.

use super::feed::{Failure, Side, Task, Work};
use super::retry::BACKOFF;
use super::ticker::Ticker;
use super::window::Window;
use super::{Error, Volume};
use crate::block;
use crate::block::{BLOCK_SIZE, Hash};
use crate::report::{Event, Phase};
use crate::source::Received;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::Scope;
use std::time::Instant;

/// One volume's pull under way, shared by its connection threads.
pub(super) struct Pulling<'a> {
    pub v: Volume<'a>,
    /// The first error of a connection or of planning (which stops the volume).
    pub failed: &'a Failure<'a>,
}

impl<'a> Pulling<'a> {
    /// Spawns in `s` the connection threads, which write the blocks the feed hands
    /// over until the plan is complete and every one is written (or the volume
    /// stops): zero blocks as zeros, the others fetched and verified first. And the
    /// progress events of the pull: at once when its `total` bytes are known (a
    /// plan reviewed first), else once the plan is complete.
    pub fn spawn<'s>(&'s self, s: &'s Scope<'s, '_>, total: Option<u64>)
    where
        'a: 's,
    {
        let (puller, feed) = (self.v.puller, self.v.feed);
        for _ in 0..puller.opts.connections.max(1) {
            s.spawn(move || {
                // The blocks of a fetch wait here to be checked together.
                let mut scratch = vec![0u8; block::BATCH * BLOCK_SIZE as usize];
                // Waits for work; ends once the plan is written, or on a stop.
                while let Some(work) = feed.next() {
                    let res = match work.task {
                        Task::Zero => self.write_zeros(&work.window, &work.blocks),
                        Task::Fetch { attempts } => self.fetch(work, attempts, &mut scratch),
                    };
                    if let Err(e) = res {
                        self.failed.fail(e);
                        return;
                    }
                }
            });
        }
        s.spawn(move || {
            let total = total.unwrap_or_else(|| {
                feed.wait_until(Side::Pulling, None, || feed.closed());
                let planned = feed.planned();
                planned.fetch_bytes + planned.zero_bytes
            });
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
                volume: &self.v.job.info.id,
                phase: Phase::Pulling,
                total,
                feed,
                side: Side::Pulling,
            };
            ticker.spawn(s, numbers, move || {
                feed.stopped() || (feed.drained() && c.done.load(Relaxed) >= total)
            });
        });
    }

    /// Reports the end of the volume's pull, with its digests.
    pub fn report_done(&self, (digest, remote_digest): (Hash, Hash), started: Instant) {
        let Volume {
            puller, job, feed, ..
        } = self.v;
        let (c, planned) = (&feed.pulled, feed.planned());
        puller.reporter.report(&Event::VolumeDone {
            volume: job.info.id.clone(),
            target: job.target.path.display().to_string(),
            sha256: hex::encode(digest),
            remote_sha256: hex::encode(remote_digest),
            pulled_blocks: planned.fetch_blocks,
            zero_blocks: planned.zero_blocks,
            wire_bytes: c.wire.load(Relaxed),
            retries: c.retries.load(Relaxed),
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    /// Counts block `i` of `w` as written with hash `h`; flushes the target every GiB.
    fn wrote(&self, w: &Window, i: u64, h: Hash, len: usize) -> Result<(), Error> {
        const CHECKPOINT: u64 = 1 << 30;
        let _ = w.written(i).set(h);
        let before = self.v.feed.wrote(len as u64);
        if before / CHECKPOINT != (before + len as u64) / CHECKPOINT {
            self.v.job.flush(i * BLOCK_SIZE)?;
        }
        Ok(())
    }

    /// Writes all-zero remote blocks: never fetched.
    fn write_zeros(&self, w: &Window, blocks: &[u64]) -> Result<(), Error> {
        let job = self.v.job;
        let zeros = vec![0u8; BLOCK_SIZE as usize];
        for &i in blocks {
            let len = job.block_len(i);
            job.write(i, &zeros[..len])?;
            self.wrote(w, i, block::zero_hash(len), len)?;
        }
        Ok(())
    }

    /// Writes block `i` of `w`, whose SHA-256 `got` matched: unless a learning
    /// source's block is what the target already holds.
    fn accept(&self, w: &Window, i: u64, data: &[u8], got: Hash) -> Result<(), Error> {
        if !(self.v.learn && w.local(i).get() == Some(&got)) {
            self.v.job.write(i, data)?;
        }
        self.wrote(w, i, got, data.len())
    }

    /// Fetches one batch over one connection, checking the blocks that arrive
    /// [`block::BATCH`] at a time (multi-buffer SHA-256) and writing each one whose
    /// SHA-256 matched; what is left goes back into the queue (one attempt more if
    /// nothing arrived), until `max_attempts` in a row made no progress.
    fn fetch(&self, work: Work, attempts: u32, scratch: &mut [u8]) -> Result<(), Error> {
        let Volume {
            puller, job, feed, ..
        } = self.v;
        let Work { window, blocks, .. } = work;
        let w = &*window;
        let vol = &job.info.id;
        let mut arrivals = Arrivals {
            p: self,
            w,
            pending: Vec::new(),
            scratch,
            progressed: false,
            last: String::new(),
            refused: Vec::new(),
        };
        let mut failure = None;
        let res = puller
            .source
            .blocks_hashed(vol, &blocks, &mut |i, data, wire, known| {
                feed.pulled.wire.fetch_add(wire, Relaxed);
                if feed.stopped() {
                    return Received::Stop;
                }
                if !w.contains(i) || !blocks.contains(&i) || w.written(i).get().is_some() {
                    return Received::Continue;
                }
                match arrivals.take(i, data, known) {
                    Ok(()) => Received::Continue,
                    Err(e) => {
                        failure = Some(e);
                        Received::Stop
                    }
                }
            });
        if failure.is_none() && !feed.stopped() {
            // The last blocks that arrived, fewer than a batch.
            failure = arrivals.check().err();
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let (progressed, mut last) = (arrivals.progressed, arrivals.last);
        // A live source's block refused changed since planned: the next pass takes it.
        let (stale, left): (Vec<u64>, Vec<u64>) = blocks
            .into_iter()
            .filter(|&i| w.written(i).get().is_none())
            .partition(|i| puller.opts.live && arrivals.refused.contains(i));
        for i in stale {
            feed.skipped(job.block_len(i) as u64);
        }
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
        feed.requeue(Work {
            window,
            blocks: left,
            task: Task::Fetch { attempts },
        });
        Ok(())
    }
}

/// The blocks of one fetch as they arrive, checked [`block::BATCH`] at a time before
/// any of them is written: a wrong one is never written, and stays in the batch to
/// be fetched again.
struct Arrivals<'p, 'a> {
    p: &'p Pulling<'a>,
    w: &'p Window,
    /// Blocks arrived and not checked yet (index, length), their bytes in `scratch`,
    /// one [`BLOCK_SIZE`] slot each.
    pending: Vec<(u64, usize)>,
    scratch: &'p mut [u8],
    /// A block was written.
    progressed: bool,
    /// Why the last block was refused.
    last: String,
    /// The blocks refused.
    refused: Vec<u64>,
}

impl Arrivals<'_, '_> {
    /// Takes block `i`: checked at once if a learning source hashed it already
    /// (`known`), else kept until a batch is full.
    fn take(&mut self, i: u64, data: &[u8], known: Option<Hash>) -> Result<(), Error> {
        let len = self.p.v.job.block_len(i);
        if data.len() != len {
            self.refuse(i);
            return Ok(());
        }
        if let Some(h) = known.filter(|_| self.p.v.learn) {
            self.progressed = true;
            return self.p.accept(self.w, i, data, h);
        }
        let slot = self.pending.len() * BLOCK_SIZE as usize;
        self.scratch[slot..slot + len].copy_from_slice(data);
        self.pending.push((i, len));
        if self.pending.len() == block::BATCH {
            self.check()?;
        }
        Ok(())
    }

    /// Hashes the pending blocks together and writes those whose SHA-256 is the
    /// remote one (with a learning source that gave none: the one computed).
    fn check(&mut self) -> Result<(), Error> {
        let pending = std::mem::take(&mut self.pending);
        let bs = BLOCK_SIZE as usize;
        let data: Vec<&[u8]> = pending
            .iter()
            .zip(self.scratch.chunks(bs))
            .map(|(&(_, len), slot)| &slot[..len])
            .collect();
        let hashes = block::block_hashes(&data);
        let mut refused = Vec::new();
        for ((&(i, _), got), data) in pending.iter().zip(hashes).zip(data) {
            let expected = if self.p.v.learn {
                Some(got)
            } else {
                self.w.remote(i).get().copied()
            };
            if expected != Some(got) {
                refused.push(i);
                continue;
            }
            self.p.accept(self.w, i, data, got)?;
            self.progressed = true;
        }
        for i in refused {
            self.refuse(i);
        }
        Ok(())
    }

    /// Block `i` came wrong: never written; it stays in the batch and is retried.
    fn refuse(&mut self, i: u64) {
        self.p.v.feed.pulled.retries.fetch_add(1, Relaxed);
        self.last = format!("block {i} arrived with the wrong SHA-256");
        self.refused.push(i);
    }
}
