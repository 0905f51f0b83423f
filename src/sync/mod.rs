//! The sync engine: map remote volumes to local targets, plan by comparing block
//! hashes, pull only the differing blocks over several connections, verify every
//! block before it is written, flush, and check the whole volume at the end.
//!
//! Resume is by construction: nothing is recorded between runs; a new run hashes the
//! target again and pulls what still differs. A block is written only after its
//! SHA-256 matched the remote hash, so each target block holds either its old or its
//! new content at every moment.

pub mod automap;
pub mod bars;
pub mod cli;
pub mod hash;
pub mod map;
pub mod safety;
pub mod target;

use crate::events::{Event, Reporter};
use crate::source::agent::hex;
use crate::source::{BLOCK_SIZE, BlockSource, Candidates, Hash, Received, SourceError, VolumeInfo};
use map::{MapTo, Mapping};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use target::Target;

/// Why a pull stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Map(#[from] map::Error),
    #[error("--map names volume '{name}', but the agent offers only: {available}")]
    UnknownVolume { name: String, available: String },
    #[error(
        "volume '{name}' is neither mapped nor excluded: add --map {name}=TARGET or --map {name}=EXCLUDE"
    )]
    Unmapped { name: String },
    #[error("nothing to do: no volume is mapped to a target (use --map NAME=TARGET)")]
    NothingMapped,
    #[error("cannot open target {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "target {path} has {size} bytes, smaller than volume '{volume}' ({volume_size} bytes): map a target at least as large"
    )]
    TooSmall {
        path: PathBuf,
        size: u64,
        volume: String,
        volume_size: u64,
    },
    #[error(
        "target {path} is named for both '{first}' and '{second}': give each volume its own target"
    )]
    Twice {
        path: PathBuf,
        first: String,
        second: String,
    },
    #[error("target {path} is mounted on {mount_point}: unmount it first")]
    Mounted { path: PathBuf, mount_point: String },
    #[error("target {path} is the disk this system booted from: map another disk")]
    BootDisk { path: PathBuf },
    #[error("cannot {what} {path} at offset {offset}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        offset: u64,
        source: std::io::Error,
    },
    #[error(
        "gave up on volume '{volume}' after {attempts} attempts without progress; last problem: {last}"
    )]
    GaveUp {
        volume: String,
        attempts: u32,
        last: String,
    },
    #[error(
        "volume '{volume}': block {block} of {path} does not hold the remote content at the end of the pull"
    )]
    Verify {
        volume: String,
        block: u64,
        path: PathBuf,
    },
    #[error("stopped: the plan was not confirmed, nothing was written")]
    Declined,
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct Options {
    /// Plan only; open targets read-only and write nothing.
    pub dry_run: bool,
    /// No questions: every remote volume must be mapped or excluded.
    pub unattended: bool,
    /// Threads hashing local blocks (and remote hash requests in flight).
    pub hash_threads: usize,
    /// Connections fetching blocks at once.
    pub connections: usize,
    /// Blocks per fetch request.
    pub batch_blocks: usize,
    /// Consecutive attempts without progress before giving up.
    pub max_attempts: u32,
    /// Interval between progress events.
    pub tick: Duration,
    /// /proc/self/mountinfo (tests pass a fake).
    pub mountinfo: PathBuf,
    /// /sys (tests pass a fake).
    pub sys: PathBuf,
    /// The boot disk; `None` = detect.
    pub boot_disk: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            dry_run: false,
            unattended: false,
            hash_threads: cpus,
            connections: 4,
            batch_blocks: 16,
            max_attempts: 12,
            tick: Duration::from_millis(500),
            mountinfo: "/proc/self/mountinfo".into(),
            sys: "/sys".into(),
            boot_disk: None,
        }
    }
}

/// What a volume's plan amounts to (given to the confirmation callback).
#[derive(Debug, Clone)]
pub struct PlanSummary {
    pub volume: String,
    pub target: PathBuf,
    pub blocks_to_pull: u64,
    pub zero_blocks: u64,
    pub bytes_to_pull: u64,
}

/// What a finished pull did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub volumes: u64,
    pub pulled_blocks: u64,
    pub wire_bytes: u64,
    pub retries: u64,
}

impl Summary {
    fn add(&mut self, feed: &Feed) {
        self.pulled_blocks += feed.fetch_blocks.load(Relaxed);
        self.wire_bytes += feed.pulled.wire.load(Relaxed);
        self.retries += feed.pulled.retries.load(Relaxed);
    }
}

struct Job {
    info: VolumeInfo,
    target: Target,
}

/// The hashes a plan compares, filled in while planning goes on (pulling reads
/// them as soon as a block is queued).
struct Hashes {
    /// The target's blocks (with a learning source: only the candidates).
    local: Vec<OnceLock<Hash>>,
    /// The remote blocks (with a learning source: only the zero candidates; the
    /// others are learned from the blocks themselves).
    remote: Vec<OnceLock<Hash>>,
    /// The remote hashes of the blocks to fetch are unknown until they arrive (a
    /// source with [`Candidates`]); blocks outside the candidates are neither read
    /// nor written, and agree by assumption.
    learn: bool,
}

impl Hashes {
    fn new(blocks: u64, learn: bool) -> Self {
        let empty = || (0..blocks).map(|_| OnceLock::new()).collect();
        Self {
            local: empty(),
            remote: empty(),
            learn,
        }
    }
}

/// Work for the pulling threads: blocks to write as zeros, blocks to fetch (with
/// the attempts made so far without progress).
enum Work {
    Zero(Vec<u64>),
    Fetch(Vec<u64>, u32),
}

/// The blocks a plan decided, handed to pulling as they are decided: all at once
/// when the plan is confirmed first, block by block when nobody is asked.
#[derive(Default)]
struct Feed {
    queue: Mutex<VecDeque<Work>>,
    /// Blocks queued and not yet written.
    remaining: AtomicU64,
    /// Blocks queued to fetch, and their bytes.
    fetch_blocks: AtomicU64,
    fetch_bytes: AtomicU64,
    /// Blocks queued to write as zeros, and their bytes.
    zero_blocks: AtomicU64,
    zero_bytes: AtomicU64,
    /// The plan is complete: nothing more will be queued (set with Release after
    /// the last push, so that a reader who sees it sees every block counted).
    closed: AtomicBool,
    /// Planning or pulling gave up: the other stops too.
    stopped: AtomicBool,
    /// What pulling did: bytes written, bytes received, retries.
    pulled: Counters,
}

impl Feed {
    /// Queues newly decided blocks (`bytes` long in all).
    fn push(&self, work: Work, bytes: u64) {
        let (blocks, count, sum) = match &work {
            Work::Zero(b) => (b.len() as u64, &self.zero_blocks, &self.zero_bytes),
            Work::Fetch(b, _) => (b.len() as u64, &self.fetch_blocks, &self.fetch_bytes),
        };
        count.fetch_add(blocks, Relaxed);
        sum.fetch_add(bytes, Relaxed);
        self.remaining.fetch_add(blocks, Relaxed);
        self.requeue(work);
    }

    /// Queues blocks again (already counted) for another attempt.
    fn requeue(&self, work: Work) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(work);
    }

    /// Nothing queued: the pulling threads wait for work.
    fn idle(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    fn pop(&self) -> Option<Work> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Every block of a complete plan is written.
    fn drained(&self) -> bool {
        self.closed.load(Acquire) && self.remaining.load(Relaxed) == 0
    }
}

/// What planning decides for one block.
enum Decision {
    Keep,
    Fetch,
    Zero,
}

#[derive(Default)]
struct Counters {
    done: AtomicU64,
    wire: AtomicU64,
    retries: AtomicU64,
}

/// Pulls remote volumes into local targets.
pub struct Puller<'a> {
    source: &'a dyn BlockSource,
    reporter: &'a dyn Reporter,
    opts: Options,
}

impl<'a> Puller<'a> {
    pub fn new(source: &'a dyn BlockSource, reporter: &'a dyn Reporter, opts: Options) -> Self {
        Self {
            source,
            reporter,
            opts,
        }
    }

    /// Checks the mapping, plans every volume, asks `confirm` (unless unattended or
    /// a dry run), then pulls, flushes and verifies each volume. Unattended, nobody
    /// reviews the plan: each volume's blocks are pulled as soon as its plan decides
    /// them, so hashing and pulling overlap.
    pub fn run(
        &self,
        mapping: &Mapping,
        confirm: &mut dyn FnMut(&[PlanSummary]) -> bool,
    ) -> Result<Summary, Error> {
        let start = Instant::now();
        let volumes = self.retrying("list volumes", &Counters::default(), || {
            self.source.volumes()
        })?;
        let jobs = self.open_targets(&volumes, mapping)?;
        let mut summary = if self.opts.unattended && !self.opts.dry_run {
            self.pull_while_planning(&jobs)?
        } else {
            self.plan_then_pull(&jobs, confirm)?
        };
        summary.volumes = jobs.len() as u64;
        self.reporter.report(&Event::Done {
            volumes: summary.volumes,
            pulled_blocks: summary.pulled_blocks,
            wire_bytes: summary.wire_bytes,
            retries: summary.retries,
            seconds: start.elapsed().as_secs_f64(),
            dry_run: self.opts.dry_run,
        });
        Ok(summary)
    }

    /// Asks the source for its candidate blocks (a learning source lists them) and
    /// makes the volume's empty hashes.
    fn prepare(&self, job: &Job) -> Result<(Hashes, Option<Candidates>), Error> {
        let what = format!("list blocks of volume '{}'", job.info.id);
        let c = Counters::default();
        let cands = self.retrying(&what, &c, || self.source.candidates(&job.info.id))?;
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
    fn report_plan(&self, job: &Job, feed: &Feed) -> PlanSummary {
        let (fetch, zero) = (
            feed.fetch_blocks.load(Relaxed),
            feed.zero_blocks.load(Relaxed),
        );
        let bytes_to_pull = feed.fetch_bytes.load(Relaxed);
        self.reporter.report(&Event::Plan {
            volume: job.info.id.clone(),
            target: job.target.path.display().to_string(),
            size: job.info.size,
            blocks: job.info.blocks(),
            differing: fetch + zero,
            zero_blocks: zero,
            bytes_to_pull,
            dry_run: self.opts.dry_run,
        });
        PlanSummary {
            volume: job.info.id.clone(),
            target: job.target.path.clone(),
            blocks_to_pull: fetch,
            zero_blocks: zero,
            bytes_to_pull,
        }
    }

    /// Unattended: for each volume in turn, pulls each block as soon as its plan
    /// decides it.
    fn pull_while_planning(&self, jobs: &[Job]) -> Result<Summary, Error> {
        let mut summary = Summary::default();
        for job in jobs {
            let (hashes, cands) = self.prepare(job)?;
            let feed = Feed::default();
            let (planned, pulled) = std::thread::scope(|s| {
                let pulling = s.spawn(|| self.pull(job, &hashes, &feed));
                let planned = self.plan(job, &hashes, cands, &feed);
                // A plan cut short by a failed pull is not reported.
                if planned.is_ok() && !feed.stopped.load(Relaxed) {
                    self.report_plan(job, &feed);
                }
                feed.closed.store(true, Release);
                (planned, pulling.join().expect("pull thread"))
            });
            pulled?;
            planned?;
            summary.add(&feed);
        }
        Ok(summary)
    }

    /// Plans every volume, asks `confirm` (unless unattended or a dry run), then
    /// pulls each volume (unless a dry run).
    fn plan_then_pull(
        &self,
        jobs: &[Job],
        confirm: &mut dyn FnMut(&[PlanSummary]) -> bool,
    ) -> Result<Summary, Error> {
        let mut planned = Vec::new();
        let mut summaries = Vec::new();
        for job in jobs {
            let (hashes, cands) = self.prepare(job)?;
            let feed = Feed::default();
            self.plan(job, &hashes, cands, &feed)?;
            feed.closed.store(true, Release);
            summaries.push(self.report_plan(job, &feed));
            planned.push((hashes, feed));
        }
        let mut summary = Summary::default();
        if self.opts.dry_run {
            return Ok(summary);
        }
        let work = summaries
            .iter()
            .any(|s| s.blocks_to_pull + s.zero_blocks > 0);
        if work && !self.opts.unattended && !confirm(&summaries) {
            return Err(Error::Declined);
        }
        for (job, (hashes, feed)) in jobs.iter().zip(&planned) {
            self.pull(job, hashes, feed)?;
            summary.add(feed);
        }
        Ok(summary)
    }

    /// Resolves the mapping against the agent's volumes and opens the targets,
    /// refusing anything unsafe before a single byte is read or written.
    fn open_targets(&self, volumes: &[VolumeInfo], mapping: &Mapping) -> Result<Vec<Job>, Error> {
        for name in mapping.keys() {
            if !volumes.iter().any(|v| &v.id == name) {
                let available: Vec<_> = volumes.iter().map(|v| v.id.as_str()).collect();
                return Err(Error::UnknownVolume {
                    name: name.clone(),
                    available: available.join(", "),
                });
            }
        }
        let mountinfo = std::fs::read_to_string(&self.opts.mountinfo).unwrap_or_default();
        let boot = match &self.opts.boot_disk {
            Some(p) => Target::open(p, true).ok().and_then(|t| {
                use std::os::unix::fs::MetadataExt;
                let m = std::fs::metadata(&t.path).ok()?;
                Some(safety::whole_disk(
                    &self.opts.sys,
                    (libc::major(m.rdev()), libc::minor(m.rdev())),
                ))
            }),
            None => safety::boot_disk(&self.opts.sys),
        };
        let mut jobs: Vec<Job> = Vec::new();
        let mut seen: Vec<((u64, u64), String)> = Vec::new();
        for v in volumes {
            let path = match mapping.get(&v.id) {
                Some(MapTo::Target(p)) => p,
                Some(MapTo::Exclude) => continue,
                None if self.opts.unattended => {
                    return Err(Error::Unmapped { name: v.id.clone() });
                }
                None => continue,
            };
            if let Some(mount_point) = safety::mounted(&self.opts.sys, path, &mountinfo) {
                return Err(Error::Mounted {
                    path: path.clone(),
                    mount_point,
                });
            }
            if safety::is_boot_disk(&self.opts.sys, path, boot)
                || self
                    .opts
                    .boot_disk
                    .as_deref()
                    .is_some_and(|b| same_file(b, path))
            {
                return Err(Error::BootDisk { path: path.clone() });
            }
            let target = Target::open(path, self.opts.dry_run).map_err(|source| Error::Open {
                path: path.clone(),
                source,
            })?;
            if target.size < v.size {
                return Err(Error::TooSmall {
                    path: path.clone(),
                    size: target.size,
                    volume: v.id.clone(),
                    volume_size: v.size,
                });
            }
            let id = target.identity().map_err(|source| Error::Open {
                path: path.clone(),
                source,
            })?;
            if let Some((_, first)) = seen.iter().find(|(i, _)| *i == id) {
                return Err(Error::Twice {
                    path: path.clone(),
                    first: first.clone(),
                    second: v.id.clone(),
                });
            }
            seen.push((id, v.id.clone()));
            jobs.push(Job {
                info: v.clone(),
                target,
            });
        }
        if jobs.is_empty() {
            return Err(Error::NothingMapped);
        }
        Ok(jobs)
    }

    /// Plans a volume: hashes the target (all of it, or a learning source's
    /// candidates) while the remote hashes are fetched, and queues each block to
    /// write in `feed` as soon as its hashes are known. A learning source's
    /// candidates to fetch are all fetched (their hash comes with them); its zero
    /// candidates are written only where the target is not zero already.
    fn plan(
        &self,
        job: &Job,
        hashes: &Hashes,
        cands: Option<Candidates>,
        feed: &Feed,
    ) -> Result<(), Error> {
        let n = job.info.blocks();
        let c = Counters::default();
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        // Planning stops when pulling gives up, and the other way round.
        let stop = &feed.stopped;
        // The blocks to hash, in order: all, or the candidates to fetch then the zero ones.
        let wanted: Vec<u64> = match &cands {
            Some(cs) => cs.fetch.iter().chain(&cs.zero).copied().collect(),
            None => (0..n).collect(),
        };
        let fetch_candidates = cands.as_ref().map(|cs| cs.fetch.len());
        if let Some(cs) = &cands {
            for &i in &cs.zero {
                let _ = hashes.remote[i as usize].set(hash::zero_hash(block_len(&job.info, i)));
            }
        }
        let local_total: u64 = wanted.iter().map(|&i| block_len(&job.info, i) as u64).sum();
        let total = if cands.is_some() {
            local_total
        } else {
            local_total * 2
        };
        let index = |k: usize| wanted[k];
        let decision = |k: usize| -> Option<Decision> {
            let i = wanted[k];
            let local = hashes.local[i as usize].get()?;
            let zero = hash::zero_hash(block_len(&job.info, i));
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
        std::thread::scope(|s| {
            self.spawn_hashers(
                s,
                job,
                wanted.len(),
                &index,
                &hashes.local,
                &c,
                &failed,
                stop,
            );
            if cands.is_none() {
                self.spawn_remote_hashers(s, job, &hashes.remote, &c, &failed, stop);
            }
            // Unattended, blocks are pulled meanwhile: the same events say how many.
            let p = &feed.pulled;
            let numbers = || {
                let retries = c.retries.load(Relaxed) + p.retries.load(Relaxed);
                (c.done.load(Relaxed), p.wire.load(Relaxed), retries)
            };
            self.ticker(s, &job.info.id, "hashing", total, numbers, stop, || {
                c.done.load(Relaxed) >= total
            });
            self.decide(job, wanted.len(), &index, &decision, feed, stop)
        });
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Walks the hashed blocks in order, queueing those to write in `feed` in
    /// batches: a full batch at once, a partial one whenever the pulling threads
    /// have run out of work, so that pulling starts with the first differing block.
    fn decide(
        &self,
        job: &Job,
        count: usize,
        index: &dyn Fn(usize) -> u64,
        decision: &dyn Fn(usize) -> Option<Decision>,
        feed: &Feed,
        stop: &AtomicBool,
    ) {
        let (mut fetch, mut zero) = (Vec::new(), Vec::new());
        let batch = self.opts.batch_blocks.max(1);
        let flush = |blocks: &mut Vec<u64>, work: fn(Vec<u64>) -> Work| {
            if !blocks.is_empty() {
                let b = std::mem::take(blocks);
                let bytes = b.iter().map(|&i| block_len(&job.info, i) as u64).sum();
                feed.push(work(b), bytes);
            }
        };
        let to_fetch: fn(Vec<u64>) -> Work = |b| Work::Fetch(b, 0);
        let mut k = 0;
        while k < count && !stop.load(Relaxed) {
            let Some(d) = decision(k) else {
                if feed.idle() {
                    flush(&mut fetch, to_fetch);
                    flush(&mut zero, Work::Zero);
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            let i = index(k);
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

    /// Fetches the remote hashes into `out` on `hash_threads` threads (at least two,
    /// so one request is in flight while another's answer is stored), in chunks.
    #[allow(clippy::too_many_arguments)]
    fn spawn_remote_hashers<'s, 'e: 's>(
        &'e self,
        s: &'s std::thread::Scope<'s, 'e>,
        job: &'e Job,
        out: &'e [OnceLock<Hash>],
        c: &'e Counters,
        failed: &'e Mutex<Option<Error>>,
        stop: &'e AtomicBool,
    ) {
        const CHUNK: u64 = 64;
        let n = job.info.blocks();
        let next_chunk = std::sync::Arc::new(AtomicU64::new(0));
        for _ in 0..self.opts.hash_threads.max(2) {
            let next_chunk = next_chunk.clone();
            s.spawn(move || {
                loop {
                    let start = next_chunk.fetch_add(1, Relaxed) * CHUNK;
                    if start >= n || stop.load(Relaxed) {
                        return;
                    }
                    let count = CHUNK.min(n - start);
                    let what = format!("hash volume '{}'", job.info.id);
                    let got = self.retrying(&what, c, || {
                        let hs = self.source.hashes(&job.info.id, start, count)?;
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
                            for (k, h) in hs.into_iter().enumerate() {
                                let _ = out[start as usize + k].set(h);
                            }
                            let bytes = (start..start + count)
                                .map(|i| block_len(&job.info, i) as u64)
                                .sum();
                            c.done.fetch_add(bytes, Relaxed);
                        }
                        Err(e) => {
                            fail(failed, stop, e);
                            return;
                        }
                    }
                }
            });
        }
    }

    /// Writes the blocks `feed` hands over until the plan is complete and every one
    /// is written: zero blocks as zeros, the others fetched and verified first. Then
    /// flushes and verifies the volume.
    fn pull(&self, job: &Job, hashes: &Hashes, feed: &Feed) -> Result<(), Error> {
        let started = Instant::now();
        let blocks = job.info.blocks();
        let p = Pulling {
            puller: self,
            job,
            hashes,
            feed,
            done: (0..blocks).map(|_| AtomicBool::new(false)).collect(),
            written: (0..blocks).map(|_| OnceLock::new()).collect(),
        };
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let vol = &job.info.id;
        std::thread::scope(|s| {
            for _ in 0..self.opts.connections.max(1) {
                s.spawn(|| {
                    while !p.halted() {
                        let Some(work) = feed.pop() else {
                            if feed.drained() {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        };
                        let res = match work {
                            Work::Zero(blocks) => p.write_zeros(&blocks),
                            Work::Fetch(batch, attempts) => p.fetch(batch, attempts),
                        };
                        if let Err(e) = res {
                            fail(&failed, &feed.stopped, e);
                            return;
                        }
                    }
                });
            }
            // Progress once the plan is complete and its size known.
            s.spawn(|| {
                while !feed.closed.load(Acquire) && !p.halted() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let total = feed.fetch_bytes.load(Relaxed) + feed.zero_bytes.load(Relaxed);
                let p = &p;
                let c = &feed.pulled;
                let numbers = || {
                    (
                        c.done.load(Relaxed),
                        c.wire.load(Relaxed),
                        c.retries.load(Relaxed),
                    )
                };
                self.ticker(
                    s,
                    vol,
                    "pulling",
                    total,
                    numbers,
                    &feed.stopped,
                    move || p.halted() || (feed.drained() && c.done.load(Relaxed) >= total),
                );
            });
        });
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let c = &feed.pulled;
        if feed.stopped.load(Relaxed) {
            // Planning failed; its error is the one reported.
            return Ok(());
        }
        let (digest, remote_digest) = self.finish(job, hashes, p.written, c)?;
        self.reporter.report(&Event::VolumeDone {
            volume: vol.clone(),
            target: job.target.path.display().to_string(),
            sha256: hex(&digest),
            remote_sha256: hex(&remote_digest),
            pulled_blocks: feed.fetch_blocks.load(Relaxed),
            zero_blocks: feed.zero_blocks.load(Relaxed),
            wire_bytes: c.wire.load(Relaxed),
            retries: c.retries.load(Relaxed),
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(())
    }

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
    fn finish(
        &self,
        job: &Job,
        hashes: &Hashes,
        written: Vec<OnceLock<Hash>>,
        c: &Counters,
    ) -> Result<(Hash, Hash), Error> {
        let progress = |done| {
            self.reporter.report(&Event::Progress {
                volume: job.info.id.clone(),
                phase: "verifying".into(),
                done_bytes: done,
                total_bytes: job.info.size,
                wire_bytes: c.wire.load(Relaxed),
                retries: c.retries.load(Relaxed),
            })
        };
        progress(0);
        job.target
            .sync()
            .map_err(|e| self.io("flush", &job.target.path, 0, e))?;
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
        let digest = hash::linear_digest(&target);
        let remote_digest = hash::linear_digest(&remote);
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

    /// Reads and hashes target blocks on `hash_threads` threads spawned in `s`: for
    /// each `k` in `0..count`, block `index(k)` is read and its hash stored in
    /// `out[index(k)]`, [`hash::BATCH`] blocks at a time; bytes hashed are counted in
    /// `c.done`. The one read-and-hash loop of the engine.
    #[allow(clippy::too_many_arguments)]
    fn spawn_hashers<'s, 'e: 's>(
        &'e self,
        s: &'s std::thread::Scope<'s, 'e>,
        job: &'e Job,
        count: usize,
        index: &'e (dyn Fn(usize) -> u64 + Sync),
        out: &'e [OnceLock<Hash>],
        c: &'e Counters,
        failed: &'e Mutex<Option<Error>>,
        stop: &'e AtomicBool,
    ) {
        let next = std::sync::Arc::new(AtomicU64::new(0));
        let bs = BLOCK_SIZE as usize;
        for _ in 0..self.opts.hash_threads.max(1) {
            let next = next.clone();
            s.spawn(move || {
                let mut buf = vec![0u8; hash::BATCH * bs];
                loop {
                    let first = next.fetch_add(hash::BATCH as u64, Relaxed) as usize;
                    if first >= count || stop.load(Relaxed) {
                        return;
                    }
                    let ks = first..(first + hash::BATCH).min(count);
                    let (mut read, mut blocks) = (Vec::new(), Vec::new());
                    for (k, slot) in ks.clone().zip(buf.chunks_mut(bs)) {
                        let i = index(k);
                        let len = block_len(&job.info, i);
                        let off = i * BLOCK_SIZE;
                        // A hole of a sparse image reads as zeros: not read at all.
                        if job.target.is_hole(off, len as u64) {
                            let _ = out[i as usize].set(hash::zero_hash(len));
                            continue;
                        }
                        if let Err(e) = job.target.read_at(&mut slot[..len], off) {
                            fail(failed, stop, self.io("read", &job.target.path, off, e));
                            return;
                        }
                        read.push(i);
                        blocks.push(&slot[..len]);
                    }
                    for (i, h) in read.into_iter().zip(hash::block_hashes(&blocks)) {
                        let _ = out[i as usize].set(h);
                    }
                    let bytes: u64 = ks.map(|k| block_len(&job.info, index(k)) as u64).sum();
                    c.done.fetch_add(bytes, Relaxed);
                }
            });
        }
    }

    /// Emits `progress` events every tick until `finished()` or a stop; `numbers`
    /// gives the bytes done, the bytes received and the retries.
    #[allow(clippy::too_many_arguments)]
    fn ticker<'s, 'e: 's>(
        &'e self,
        s: &'s std::thread::Scope<'s, 'e>,
        volume: &'e str,
        phase: &'static str,
        total: u64,
        numbers: impl Fn() -> (u64, u64, u64) + Send + 's,
        stop: &'e AtomicBool,
        finished: impl Fn() -> bool + Send + 's,
    ) {
        s.spawn(move || {
            let mut last = Instant::now() - self.opts.tick;
            loop {
                let end = finished() || stop.load(Relaxed);
                if end || last.elapsed() >= self.opts.tick {
                    last = Instant::now();
                    let (done, wire, retries) = numbers();
                    self.reporter.report(&Event::Progress {
                        volume: volume.to_string(),
                        phase: phase.to_string(),
                        done_bytes: done.min(total),
                        total_bytes: total,
                        wire_bytes: wire,
                        retries,
                    });
                }
                if end {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    }

    /// Calls `f` until it succeeds, a non-retryable error comes, or attempts run out.
    fn retrying<T>(
        &self,
        what: &str,
        c: &Counters,
        mut f: impl FnMut() -> Result<T, SourceError>,
    ) -> Result<T, Error> {
        let mut attempt = 1;
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_retryable() => return Err(e.into()),
                Err(e) if attempt >= self.opts.max_attempts => {
                    return Err(Error::GaveUp {
                        volume: what.to_string(),
                        attempts: attempt,
                        last: e.to_string(),
                    });
                }
                Err(_) => {
                    c.retries.fetch_add(1, Relaxed);
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
            }
        }
    }

    fn io(&self, what: &'static str, path: &Path, offset: u64, source: std::io::Error) -> Error {
        Error::Io {
            what,
            path: path.to_path_buf(),
            offset,
            source,
        }
    }
}

/// One volume's pull under way, shared by its connection threads.
struct Pulling<'p> {
    puller: &'p Puller<'p>,
    job: &'p Job,
    hashes: &'p Hashes,
    feed: &'p Feed,
    /// Blocks written (or found already there).
    done: Vec<AtomicBool>,
    /// The SHA-256 of each block written, computed from the very bytes handed to
    /// the write; the final digest is made of these and the plan's hashes.
    written: Vec<OnceLock<Hash>>,
}

impl Pulling<'_> {
    /// A connection failed for good, or planning did.
    fn halted(&self) -> bool {
        self.feed.stopped.load(Relaxed)
    }

    /// Counts block `i` as written with hash `h`; flushes the target every GiB.
    fn wrote(&self, i: u64, h: Hash, len: usize) -> Result<(), Error> {
        const CHECKPOINT: u64 = 1 << 30;
        let _ = self.written[i as usize].set(h);
        self.done[i as usize].store(true, Relaxed);
        self.feed.remaining.fetch_sub(1, Relaxed);
        let before = self.feed.pulled.done.fetch_add(len as u64, Relaxed);
        if before / CHECKPOINT != (before + len as u64) / CHECKPOINT {
            let path = &self.job.target.path;
            let off = i * BLOCK_SIZE;
            self.job
                .target
                .sync()
                .map_err(|e| self.puller.io("flush", path, off, e))?;
        }
        Ok(())
    }

    /// Writes all-zero remote blocks: never fetched.
    fn write_zeros(&self, blocks: &[u64]) -> Result<(), Error> {
        let zeros = vec![0u8; BLOCK_SIZE as usize];
        for &i in blocks {
            let len = block_len(&self.job.info, i);
            let off = i * BLOCK_SIZE;
            self.job
                .target
                .write_at(&zeros[..len], off)
                .map_err(|e| self.puller.io("write", &self.job.target.path, off, e))?;
            self.wrote(i, hash::zero_hash(len), len)?;
        }
        Ok(())
    }

    /// Fetches one batch over one connection, writing each block that arrives with
    /// the expected SHA-256; what is left goes back into the queue (one attempt more
    /// if nothing arrived), until `max_attempts` in a row made no progress.
    fn fetch(&self, batch: Vec<u64>, attempts: u32) -> Result<(), Error> {
        let (job, hashes) = (self.job, self.hashes);
        let vol = &job.info.id;
        let mut progressed = false;
        let mut last = String::new();
        let mut failure = None;
        let res = self
            .puller
            .source
            .blocks_hashed(vol, &batch, &mut |i, data, wire, known| {
                self.feed.pulled.wire.fetch_add(wire, Relaxed);
                if self.halted() {
                    return Received::Stop;
                }
                let Some(flag) = self.done.get(i as usize) else {
                    return Received::Continue;
                };
                if !batch.contains(&i) || flag.load(Relaxed) {
                    return Received::Continue;
                }
                let len = block_len(&job.info, i);
                // A learning source checked the block against its checksum, and may
                // hand over the SHA-256 it computed for that.
                let got = match known {
                    Some(h) if hashes.learn => h,
                    _ => hash::block_hash(data),
                };
                let expected = if hashes.learn {
                    Some(&got)
                } else {
                    hashes.remote[i as usize].get()
                };
                if data.len() != len || expected != Some(&got) {
                    // Never written; the block stays in the batch and is retried.
                    self.feed.pulled.retries.fetch_add(1, Relaxed);
                    last = format!("block {i} arrived with the wrong SHA-256");
                    return Received::Continue;
                }
                let off = i * BLOCK_SIZE;
                // A learning source's block the target already holds is not rewritten.
                let res = if hashes.learn && hashes.local[i as usize].get() == Some(&got) {
                    Ok(())
                } else {
                    job.target
                        .write_at(data, off)
                        .map_err(|e| self.puller.io("write", &job.target.path, off, e))
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
        if left.is_empty() || self.halted() {
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
        if attempts >= self.puller.opts.max_attempts {
            return Err(Error::GaveUp {
                volume: vol.clone(),
                attempts,
                last,
            });
        }
        self.feed.pulled.retries.fetch_add(1, Relaxed);
        std::thread::sleep(backoff(attempts));
        self.feed.requeue(Work::Fetch(left, attempts));
        Ok(())
    }
}

fn fail(slot: &Mutex<Option<Error>>, stop: &AtomicBool, e: Error) {
    stop.store(true, Relaxed);
    let mut g = slot.lock().unwrap_or_else(|p| p.into_inner());
    if g.is_none() {
        *g = Some(e);
    }
}

/// Length of block `i` of a volume (the last one may be short).
fn block_len(v: &VolumeInfo, i: u64) -> usize {
    (v.size - i * BLOCK_SIZE).min(BLOCK_SIZE) as usize
}

/// Exponential backoff with jitter: 100 ms, 200 ms, ... capped at 3 s.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64 << attempt.min(5);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = u64::from(nanos) % 100;
    Duration::from_millis(base.min(3000) + jitter)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A source in memory that corrupts the first `corrupt` blocks it sends and
    /// records every write the puller makes through a watched target file.
    struct Fake {
        data: Vec<u8>,
        corrupt: AtomicUsize,
        sent: AtomicUsize,
        /// Hashes from this block on are refused (HTTP 401).
        refuse_hashes_from: u64,
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
            if start >= self.refuse_hashes_from {
                return Err(SourceError::Unauthorized { url: "fake".into() });
            }
            Ok((start..start + count)
                .map(|i| {
                    let a = (i * BLOCK_SIZE) as usize;
                    let b = (a + BLOCK_SIZE as usize).min(self.data.len());
                    hash::block_hash(&self.data[a..b])
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

    struct Nobody;
    impl Reporter for Nobody {
        fn report(&self, _: &Event) {}
    }

    #[test]
    fn corrupt_blocks_are_retried_and_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let n = 6 * BLOCK_SIZE as usize + 1000;
        let data: Vec<u8> = (0..n).map(|i| (i * 31 % 253) as u8 + 1).collect();
        let target = dir.path().join("t.img");
        std::fs::write(&target, vec![0u8; n]).unwrap();
        let src = Fake {
            data: data.clone(),
            corrupt: AtomicUsize::new(4),
            sent: AtomicUsize::new(0),
            refuse_hashes_from: u64::MAX,
        };
        let opts = Options {
            unattended: true,
            connections: 1,
            batch_blocks: 7,
            ..Options::default()
        };
        let mut map = Mapping::new();
        map.insert("v".into(), MapTo::Target(target.clone()));
        let s = Puller::new(&src, &Nobody, opts)
            .run(&map, &mut |_| unreachable!("unattended"))
            .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), data);
        assert_eq!(s.pulled_blocks, 7);
        assert!(s.retries >= 4, "{} retries", s.retries);
        // The four corrupted copies were sent again: 7 blocks + 4 resends.
        assert_eq!(src.sent.load(Relaxed), 11);
    }

    /// Records the names of the events reported.
    #[derive(Default)]
    struct Names(Mutex<Vec<String>>);
    impl Reporter for Names {
        fn report(&self, e: &Event) {
            let v = serde_json::to_value(e).unwrap();
            let name = v["event"].as_str().unwrap().to_string();
            self.0.lock().unwrap().push(name);
        }
    }

    #[test]
    fn a_plan_failing_while_blocks_are_pulled_stops_the_pull_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t.img");
        // 70 blocks: the remote hashes of the first 64 come, then the agent refuses.
        let n = 70 * BLOCK_SIZE as usize;
        std::fs::write(&target, vec![1u8; n]).unwrap();
        let src = Fake {
            data: (0..n).map(|i| (i % 251) as u8).collect(),
            corrupt: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
            refuse_hashes_from: 64,
        };
        let opts = Options {
            unattended: true,
            max_attempts: 2,
            ..Options::default()
        };
        let mut map = Mapping::new();
        map.insert("v".into(), MapTo::Target(target.clone()));
        let events = Names::default();
        let got = Puller::new(&src, &events, opts).run(&map, &mut |_| unreachable!());
        assert!(
            matches!(got, Err(Error::Source(SourceError::Unauthorized { .. }))),
            "{:?}",
            got.map(|_| ())
        );
        let names = events.0.into_inner().unwrap();
        assert!(
            !names
                .iter()
                .any(|n| n == "plan" || n == "volume_done" || n == "done"),
            "{names:?}"
        );
        // What was written is whole blocks of the remote volume.
        let now = std::fs::read(&target).unwrap();
        for (k, block) in now.chunks(BLOCK_SIZE as usize).enumerate() {
            let remote = &src.data[k * BLOCK_SIZE as usize..][..block.len()];
            assert!(
                block == remote || block.iter().all(|&b| b == 1),
                "block {k}"
            );
        }
    }

    #[test]
    fn the_final_digest_catches_a_differing_block_left_unwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.img");
        let n = 3 * BLOCK_SIZE as usize;
        std::fs::write(&path, vec![1u8; n]).unwrap();
        let src = Fake {
            data: vec![2u8; n],
            corrupt: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
            refuse_hashes_from: u64::MAX,
        };
        let job = Job {
            info: src.volumes().unwrap().remove(0),
            target: Target::open(&path, true).unwrap(),
        };
        let old = hash::block_hash(&[1u8; BLOCK_SIZE as usize]);
        let new = hash::block_hash(&[2u8; BLOCK_SIZE as usize]);
        let hashes = Hashes::new(3, false);
        for (i, remote) in [old, new, old].into_iter().enumerate() {
            hashes.local[i].set(old).unwrap();
            hashes.remote[i].set(remote).unwrap();
        }
        let puller = Puller::new(&src, &Nobody, Options::default());
        let written = || (0..3).map(|_| OnceLock::new()).collect::<Vec<_>>();
        let c = Counters::default();
        match puller.finish(&job, &hashes, written(), &c) {
            Err(Error::Verify { block: 1, .. }) => {}
            other => panic!(
                "expected a verify error at block 1, got {:?}",
                other.map(|_| ())
            ),
        }
        let w = written();
        w[1].set(new).unwrap();
        let (a, b) = puller.finish(&job, &hashes, w, &c).unwrap();
        let remote = hash::linear_digest(&[old, new, old]);
        assert_eq!((a, b), (remote, remote));
    }
}
