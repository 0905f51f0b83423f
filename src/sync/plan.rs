//! Planning: which blocks of a window differ. The target's blocks are hashed while
//! the remote hashes are fetched (see [`hashing`](super::hashing)), and each block is
//! decided (kept, fetched, written as zeros) as soon as its hashes are known, and
//! queued in the volume's [`Feed`](super::feed::Feed).

use super::feed::{Counters, Failure, Side, Task, Work};
use super::job::Job;
use super::ticker::Ticker;
use super::window::Window;
use super::{Error, Puller, Volume};
use crate::block;
use crate::report::{Event, Phase};
use crate::source::{Candidates, SourceError};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::Scope;

/// What a volume's plan amounts to (given to the confirmation callback).
#[derive(Debug, Clone)]
pub struct PlanSummary {
    pub volume: String,
    pub target: PathBuf,
    pub blocks_to_pull: u64,
    pub zero_blocks: u64,
    pub bytes_to_pull: u64,
}

/// What planning decides for one block.
enum Decision {
    Keep,
    Fetch,
    Zero,
}

/// One volume's planning under way, shared by its hashing threads.
pub(super) struct Planning<'a> {
    pub v: Volume<'a>,
    /// Bytes hashed (local and remote), retries of hash requests.
    pub counters: Counters,
    /// The first error of a hashing or pulling thread (which stops the volume).
    pub failed: &'a Failure<'a>,
}

/// Asks a learning source for its candidate blocks in window `blocks` (it lists
/// them), sorted.
fn candidates(puller: &Puller, job: &Job, blocks: &Range<u64>) -> Result<Candidates, Error> {
    let what = format!(
        "list blocks {}..{} of volume '{}'",
        blocks.start, blocks.end, job.info.id
    );
    let retries = Default::default();
    let mut cands = puller.retrying(&what, &retries, || {
        puller.source.candidates(&job.info.id, blocks.clone())
    })?;
    if let Some(&i) = cands
        .fetch
        .iter()
        .chain(&cands.zero)
        .find(|i| !blocks.contains(i))
    {
        return Err(SourceError::Protocol {
            url: job.info.id.clone(),
            message: format!(
                "block {i} is outside the window {}..{} asked for",
                blocks.start, blocks.end
            ),
        }
        .into());
    }
    for list in [&mut cands.fetch, &mut cands.zero] {
        list.sort_unstable();
        list.dedup();
    }
    Ok(cands)
}

/// Reports a volume's plan and sums it up for the confirmation.
pub(super) fn report(v: Volume) -> PlanSummary {
    let (job, planned) = (v.job, v.feed.planned());
    v.puller.reporter.report(&Event::Plan {
        volume: job.info.id.clone(),
        target: job.target.path.display().to_string(),
        size: job.info.size,
        blocks: job.info.blocks(),
        differing: planned.fetch_blocks + planned.zero_blocks,
        zero_blocks: planned.zero_blocks,
        bytes_to_pull: planned.fetch_bytes,
        dry_run: v.puller.opts.dry_run,
    });
    PlanSummary {
        volume: job.info.id.clone(),
        target: job.target.path.clone(),
        blocks_to_pull: planned.fetch_blocks,
        zero_blocks: planned.zero_blocks,
        bytes_to_pull: planned.fetch_bytes,
    }
}

impl<'a> Planning<'a> {
    pub fn new(v: Volume<'a>, failed: &'a Failure<'a>) -> Self {
        Self {
            v,
            counters: Counters::default(),
            failed,
        }
    }

    /// Reports the hashing of the whole volume on a thread of `s` until it is all
    /// hashed or the volume stops: the target's blocks, counted once though an
    /// agent's volume is hashed on both sides; a learning source's blocks outside
    /// its candidates count as hashed when their window is listed (its total is
    /// not known before the last window).
    pub fn spawn_ticker<'s>(&'s self, s: &'s Scope<'s, '_>)
    where
        'a: 's,
    {
        let (v, feed) = (self.v, self.v.feed);
        let job = v.job;
        let local_total = job.info.size;
        // An agent's volume is hashed on both sides, an EBS snapshot's on the local side only.
        let sides = if v.learn { 1 } else { 2 };
        let total = local_total * sides;
        // Unattended, blocks are pulled meanwhile: the same events say how many.
        let (c, p) = (&self.counters, &feed.pulled);
        let numbers = move || {
            let retries = c.retries.load(Relaxed) + p.retries.load(Relaxed);
            (c.done.load(Relaxed) / sides, p.wire.load(Relaxed), retries)
        };
        let ticker = Ticker {
            reporter: v.puller.reporter,
            tick: v.puller.opts.tick,
            volume: &job.info.id,
            phase: Phase::Hashing,
            total: local_total,
            feed,
            side: Side::Planning,
        };
        ticker.spawn(s, numbers, move || c.done.load(Relaxed) >= total);
    }

    /// Window `blocks` of the volume, with a learning source's candidates in it
    /// (listed now); its blocks outside them count as hashed. `None`: the volume
    /// failed (recorded).
    pub fn window(&self, blocks: Range<u64>) -> Option<Arc<Window>> {
        let (puller, job) = (self.v.puller, self.v.job);
        let cands = match self.v.learn {
            true => match candidates(puller, job, &blocks) {
                Ok(c) => Some(c),
                Err(e) => {
                    self.failed.fail(e);
                    return None;
                }
            },
            false => None,
        };
        let w = Arc::new(Window::new(job, blocks, cands.as_ref(), &puller.gauge));
        if self.v.learn {
            let wanted = job.bytes(w.wanted.iter().copied());
            let all = job.bytes(w.blocks.clone());
            self.counters.done.fetch_add(all - wanted, Relaxed);
        }
        Some(w)
    }

    /// Plans one window: hashes the target's blocks (all, or a learning source's
    /// candidates) while the remote hashes are fetched, and queues each block to
    /// write in the feed as soon as its hashes are known. A learning source's
    /// candidates to fetch are all fetched (their hash comes with them); its zero
    /// candidates are written only where the target is not zero already. Returns
    /// when the window is decided (or the volume stopped), not when it is written.
    pub fn plan(&self, w: &Arc<Window>) {
        let job = self.v.job;
        let decision = |k: usize| -> Option<Decision> {
            let i = w.wanted[k];
            let local = w.local(i).get()?;
            let zero = block::zero_hash(job.block_len(i));
            match w.fetch_candidates {
                Some(f) if k < f => Some(Decision::Fetch),
                Some(_) if *local == zero => Some(Decision::Keep),
                Some(_) => Some(Decision::Zero),
                None => {
                    let remote = w.remote(i).get()?;
                    Some(if local == remote {
                        Decision::Keep
                    } else if *remote == zero {
                        Decision::Zero
                    } else {
                        Decision::Fetch
                    })
                }
            }
        };
        std::thread::scope(|s| {
            self.spawn_hashers(s, w);
            if w.fetch_candidates.is_none() {
                self.spawn_remote_hashers(s, w);
            }
            decide(self.v, w, &decision);
        });
    }
}

/// Walks the window's blocks `wanted` in order as they are hashed, queueing those
/// to write in the feed in batches: a full batch at once, a partial one whenever the
/// pulling threads have run out of work, so that pulling starts with the first
/// differing block. `decision(k)` decides `wanted[k]`, once its hashes are known.
fn decide(v: Volume, w: &Arc<Window>, decision: &dyn Fn(usize) -> Option<Decision>) {
    let (feed, wanted) = (v.feed, &w.wanted);
    let (mut fetch, mut zero) = (Vec::new(), Vec::new());
    let batch = v.puller.opts.batch_blocks.max(1);
    let flush = |blocks: &mut Vec<u64>, task: Task| {
        if !blocks.is_empty() {
            let blocks = std::mem::take(blocks);
            let bytes = v.job.bytes(blocks.iter().copied());
            let window = w.clone();
            feed.push(
                Work {
                    window,
                    blocks,
                    task,
                },
                bytes,
            );
        }
    };
    let to_fetch = Task::Fetch { attempts: 0 };
    let mut k = 0;
    while k < wanted.len() && !feed.stopped() {
        let Some(d) = decision(k) else {
            // Woken when hashes are stored, on a stop, or when the pulling threads
            // run out of work while a partial batch waits.
            let pending = !fetch.is_empty() || !zero.is_empty();
            if feed.await_decision(pending, || decision(k).is_some()) {
                flush(&mut fetch, to_fetch);
                flush(&mut zero, Task::Zero);
            }
            continue;
        };
        let i = wanted[k];
        match d {
            Decision::Keep => {}
            Decision::Fetch => {
                fetch.push(i);
                if fetch.len() >= batch {
                    flush(&mut fetch, to_fetch);
                }
            }
            Decision::Zero => {
                zero.push(i);
                if zero.len() >= batch {
                    flush(&mut zero, Task::Zero);
                }
            }
        }
        k += 1;
    }
    flush(&mut fetch, to_fetch);
    flush(&mut zero, Task::Zero);
}
