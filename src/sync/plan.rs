//! Planning: which blocks of a volume differ. The target's blocks are hashed while
//! the remote hashes are fetched (see [`hashing`](super::hashing)), and each block is
//! decided (kept, fetched, written as zeros) as soon as its hashes are known, and
//! queued in the volume's [`Feed`](super::feed::Feed).

use super::feed::{Counters, Failure, Side, Work};
use super::job::Job;
use super::ticker::Ticker;
use super::{Error, Puller, Volume};
use crate::block;
use crate::block::Hash;
use crate::report::{Event, Phase};
use crate::source::{Candidates, SourceError};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::Ordering::Relaxed;

/// What a volume's plan amounts to (given to the confirmation callback).
#[derive(Debug, Clone)]
pub struct PlanSummary {
    pub volume: String,
    pub target: PathBuf,
    pub blocks_to_pull: u64,
    pub zero_blocks: u64,
    pub bytes_to_pull: u64,
}

/// The hashes a plan compares, filled in while planning goes on (pulling reads
/// them as soon as a block is queued).
pub(super) struct Hashes {
    /// The target's blocks (with a learning source: only the candidates).
    pub local: Vec<OnceLock<Hash>>,
    /// The remote blocks (with a learning source: only the zero candidates; the
    /// others are learned from the blocks themselves).
    pub remote: Vec<OnceLock<Hash>>,
    /// The remote hashes of the blocks to fetch are unknown until they arrive (a
    /// source with [`Candidates`]); blocks outside the candidates are neither read
    /// nor written, and agree by assumption.
    pub learn: bool,
}

impl Hashes {
    pub fn new(blocks: u64, learn: bool) -> Self {
        let empty = || (0..blocks).map(|_| OnceLock::new()).collect();
        Self {
            local: empty(),
            remote: empty(),
            learn,
        }
    }
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
    /// The first error of a hashing thread (which stops the volume).
    pub failed: Failure<'a>,
}

/// Asks the source for its candidate blocks (a learning source lists them) and
/// makes the volume's empty hashes.
pub(super) fn prepare(puller: &Puller, job: &Job) -> Result<(Hashes, Option<Candidates>), Error> {
    let what = format!("list blocks of volume '{}'", job.info.id);
    let retries = Default::default();
    let cands = puller.retrying(&what, &retries, || puller.source.candidates(&job.info.id))?;
    let n = job.info.blocks();
    if let Some(&i) = cands
        .iter()
        .flat_map(|c| c.fetch.iter().chain(&c.zero))
        .find(|&&i| i >= n)
    {
        return Err(SourceError::Protocol {
            url: job.info.id.clone(),
            message: format!("block {i} is beyond the volume's {n} blocks"),
        }
        .into());
    }
    Ok((Hashes::new(n, cands.is_some()), cands))
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

/// Plans a volume: hashes the target (all of it, or a learning source's
/// candidates) while the remote hashes are fetched, and queues each block to
/// write in the feed as soon as its hashes are known. A learning source's
/// candidates to fetch are all fetched (their hash comes with them); its zero
/// candidates are written only where the target is not zero already.
pub(super) fn plan(v: Volume, cands: Option<Candidates>) -> Result<(), Error> {
    let (job, hashes, feed) = (v.job, v.hashes, v.feed);
    let n = job.info.blocks();
    // The blocks to hash, in order: all, or the candidates to fetch then the zero ones.
    let wanted: Vec<u64> = match &cands {
        Some(cs) => cs.fetch.iter().chain(&cs.zero).copied().collect(),
        None => (0..n).collect(),
    };
    let fetch_candidates = cands.as_ref().map(|cs| cs.fetch.len());
    if let Some(cs) = &cands {
        for &i in &cs.zero {
            let _ = hashes.remote[i as usize].set(block::zero_hash(job.block_len(i)));
        }
    }
    let local_total = job.bytes(wanted.iter().copied());
    // An agent's volume is hashed on both sides, an EBS snapshot's on the local side only.
    let sides = if cands.is_some() { 1 } else { 2 };
    let total = local_total * sides;
    let decision = |k: usize| -> Option<Decision> {
        let i = wanted[k];
        let local = hashes.local[i as usize].get()?;
        let zero = block::zero_hash(job.block_len(i));
        match fetch_candidates {
            Some(f) if k < f => Some(Decision::Fetch),
            Some(_) if *local == zero => Some(Decision::Keep),
            Some(_) => Some(Decision::Zero),
            None => {
                let remote = hashes.remote[i as usize].get()?;
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
    // A failed hashing thread stops pulling too, and a failed pull stops planning.
    let planning = Planning {
        v,
        counters: Counters::default(),
        failed: Failure::new(feed),
    };
    std::thread::scope(|s| {
        planning.spawn_hashers(s, &wanted);
        if cands.is_none() {
            planning.spawn_remote_hashers(s);
        }
        // Unattended, blocks are pulled meanwhile: the same events say how many.
        let (c, p) = (&planning.counters, &feed.pulled);
        // The events count the volume's bytes (each side's hashing is half of it when
        // both are hashed), so that the operator reads the volume's size, not twice it.
        let numbers = || {
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
        ticker.spawn(s, numbers, || c.done.load(Relaxed) >= total);
        decide(v, &wanted, &decision);
    });
    planning.failed.into_result()
}

/// Walks the blocks `wanted` in order as they are hashed, queueing those to write in
/// the feed in batches: a full batch at once, a partial one whenever the pulling
/// threads have run out of work, so that pulling starts with the first differing
/// block. `decision(k)` decides `wanted[k]`, once its hashes are known.
fn decide(v: Volume, wanted: &[u64], decision: &dyn Fn(usize) -> Option<Decision>) {
    let feed = v.feed;
    let (mut fetch, mut zero) = (Vec::new(), Vec::new());
    let batch = v.puller.opts.batch_blocks.max(1);
    let flush = |blocks: &mut Vec<u64>, work: fn(Vec<u64>) -> Work| {
        if !blocks.is_empty() {
            let b = std::mem::take(blocks);
            let bytes = v.job.bytes(b.iter().copied());
            feed.push(work(b), bytes);
        }
    };
    let to_fetch: fn(Vec<u64>) -> Work = |b| Work::Fetch(b, 0);
    let mut k = 0;
    while k < wanted.len() && !feed.stopped() {
        let Some(d) = decision(k) else {
            // Woken when hashes are stored, on a stop, or when the pulling threads
            // run out of work while a partial batch waits.
            let pending = !fetch.is_empty() || !zero.is_empty();
            if feed.await_decision(pending, || decision(k).is_some()) {
                flush(&mut fetch, to_fetch);
                flush(&mut zero, Work::Zero);
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
                    flush(&mut zero, Work::Zero);
                }
            }
        }
        k += 1;
    }
    flush(&mut fetch, to_fetch);
    flush(&mut zero, Work::Zero);
}
