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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
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

struct Job {
    info: VolumeInfo,
    target: Target,
}

struct Plan {
    local: Vec<Hash>,
    remote: Vec<Hash>,
    fetch: Vec<u64>,
    zero: Vec<u64>,
    /// The remote hashes of `fetch` are unknown until the blocks arrive (a source
    /// with [`Candidates`]); blocks outside the candidates hold a placeholder in both
    /// `local` and `remote` and are neither read nor written.
    learn: bool,
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
    /// a dry run), then pulls, flushes and verifies each volume.
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
        let mut plans = Vec::new();
        let mut summaries = Vec::new();
        for job in &jobs {
            let plan = self.plan(job)?;
            let bytes_to_pull = plan
                .fetch
                .iter()
                .map(|&i| block_len(&job.info, i) as u64)
                .sum();
            self.reporter.report(&Event::Plan {
                volume: job.info.id.clone(),
                target: job.target.path.display().to_string(),
                size: job.info.size,
                blocks: job.info.blocks(),
                differing: (plan.fetch.len() + plan.zero.len()) as u64,
                zero_blocks: plan.zero.len() as u64,
                bytes_to_pull,
                dry_run: self.opts.dry_run,
            });
            summaries.push(PlanSummary {
                volume: job.info.id.clone(),
                target: job.target.path.clone(),
                blocks_to_pull: plan.fetch.len() as u64,
                zero_blocks: plan.zero.len() as u64,
                bytes_to_pull,
            });
            plans.push(plan);
        }
        let mut summary = Summary {
            volumes: jobs.len() as u64,
            ..Summary::default()
        };
        let work = summaries
            .iter()
            .any(|s| s.blocks_to_pull + s.zero_blocks > 0);
        if !self.opts.dry_run && work && !self.opts.unattended && !confirm(&summaries) {
            return Err(Error::Declined);
        }
        if !self.opts.dry_run {
            for (job, plan) in jobs.iter().zip(&plans) {
                let c = self.pull(job, plan)?;
                summary.pulled_blocks += plan.fetch.len() as u64;
                summary.wire_bytes += c.wire.load(Relaxed);
                summary.retries += c.retries.load(Relaxed);
            }
        }
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

    /// Hashes the target and fetches the remote hashes at the same time.
    fn plan(&self, job: &Job) -> Result<Plan, Error> {
        let c = Counters::default();
        let what = format!("list blocks of volume '{}'", job.info.id);
        if let Some(cands) = self.retrying(&what, &c, || self.source.candidates(&job.info.id))? {
            return self.plan_candidates(job, cands);
        }
        let n = job.info.blocks();
        let total = job.info.size * 2;
        let c = Counters::default();
        let local: Vec<OnceLock<Hash>> = (0..n).map(|_| OnceLock::new()).collect();
        let remote: Vec<OnceLock<Hash>> = (0..n).map(|_| OnceLock::new()).collect();
        let next_chunk = AtomicU64::new(0);
        const CHUNK: u64 = 64;
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        let all = |k: usize| k as u64;
        std::thread::scope(|s| {
            self.spawn_hashers(s, job, &all, &local, &c, &failed, &stop);
            for _ in 0..self.opts.hash_threads.max(2) {
                s.spawn(|| {
                    loop {
                        let start = next_chunk.fetch_add(1, Relaxed) * CHUNK;
                        if start >= n || stop.load(Relaxed) {
                            return;
                        }
                        let count = CHUNK.min(n - start);
                        let got =
                            self.retrying(&format!("hash volume '{}'", job.info.id), &c, || {
                                self.source.hashes(&job.info.id, start, count)
                            });
                        match got {
                            Ok(hs) => {
                                for (k, h) in hs.into_iter().enumerate() {
                                    let _ = remote[start as usize + k].set(h);
                                }
                                let bytes = (start..start + count)
                                    .map(|i| block_len(&job.info, i) as u64)
                                    .sum();
                                c.done.fetch_add(bytes, Relaxed);
                            }
                            Err(e) => {
                                fail(&failed, &stop, e);
                                return;
                            }
                        }
                    }
                });
            }
            self.ticker(s, &job.info.id, "hashing", total, &c, &stop, || {
                c.done.load(Relaxed) >= total
            });
        });
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let local: Vec<Hash> = local
            .into_iter()
            .map(|h| h.into_inner().expect("hashed"))
            .collect();
        let remote: Vec<Hash> = remote
            .into_iter()
            .map(|h| h.into_inner().expect("hashed"))
            .collect();
        let (mut fetch, mut zero) = (Vec::new(), Vec::new());
        for i in 0..n {
            let k = i as usize;
            if local[k] != remote[k] {
                if remote[k] == hash::zero_hash(block_len(&job.info, i)) {
                    zero.push(i);
                } else {
                    fetch.push(i);
                }
            }
        }
        Ok(Plan {
            local,
            remote,
            fetch,
            zero,
            learn: false,
        })
    }

    /// Plans from a source's candidates: hashes only the candidate blocks of the
    /// target; zero blocks already zero are left alone; every block to fetch is
    /// fetched (its hash comes with it) and written only if the target differs.
    fn plan_candidates(&self, job: &Job, cands: Candidates) -> Result<Plan, Error> {
        let n = job.info.blocks();
        if let Some(&i) = cands.fetch.iter().chain(&cands.zero).find(|&&i| i >= n) {
            return Err(SourceError::Protocol {
                url: job.info.id.clone(),
                message: format!("block {i} is beyond the volume's {n} blocks"),
            }
            .into());
        }
        let wanted: Vec<u64> = cands.fetch.iter().chain(&cands.zero).copied().collect();
        let total: u64 = wanted.iter().map(|&i| block_len(&job.info, i) as u64).sum();
        let c = Counters::default();
        let hashed: Vec<OnceLock<Hash>> = wanted.iter().map(|_| OnceLock::new()).collect();
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        let index = |k: usize| wanted[k];
        std::thread::scope(|s| {
            self.spawn_hashers(s, job, &index, &hashed, &c, &failed, &stop);
            self.ticker(s, &job.info.id, "hashing", total, &c, &stop, || {
                c.done.load(Relaxed) >= total
            });
        });
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        // Outside the candidates, local and remote agree by assumption.
        let mut local = vec![[0u8; 32]; n as usize];
        let mut remote = local.clone();
        for (k, h) in hashed.into_iter().enumerate() {
            local[wanted[k] as usize] = h.into_inner().expect("hashed");
        }
        let mut zero = Vec::new();
        for &i in &cands.zero {
            remote[i as usize] = hash::zero_hash(block_len(&job.info, i));
            if local[i as usize] != remote[i as usize] {
                zero.push(i);
            }
        }
        Ok(Plan {
            local,
            remote,
            fetch: cands.fetch,
            zero,
            learn: true,
        })
    }

    /// Fetches, verifies and writes the planned blocks, then flushes and verifies.
    fn pull(&self, job: &Job, plan: &Plan) -> Result<Counters, Error> {
        let started = Instant::now();
        let c = Counters::default();
        let vol = &job.info.id;
        let total: u64 = plan
            .fetch
            .iter()
            .chain(&plan.zero)
            .map(|&i| block_len(&job.info, i) as u64)
            .sum();
        let done: Vec<AtomicBool> = (0..job.info.blocks())
            .map(|_| AtomicBool::new(false))
            .collect();
        // The SHA-256 of each block written, computed from the very bytes handed to
        // the write; the final digest is made of these and the plan's hashes.
        let written: Vec<OnceLock<Hash>> =
            (0..job.info.blocks()).map(|_| OnceLock::new()).collect();
        let remaining = AtomicU64::new(plan.fetch.len() as u64);
        let queue: Mutex<VecDeque<(Vec<u64>, u32)>> = Mutex::new(
            plan.fetch
                .chunks(self.opts.batch_blocks.max(1))
                .map(|b| (b.to_vec(), 0))
                .collect(),
        );
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        const CHECKPOINT: u64 = 1 << 30;
        std::thread::scope(|s| {
            // All-zero remote blocks: written here, never fetched.
            s.spawn(|| {
                let zeros = vec![0u8; BLOCK_SIZE as usize];
                for &i in &plan.zero {
                    if stop.load(Relaxed) {
                        return;
                    }
                    let len = block_len(&job.info, i);
                    if let Err(e) = job.target.write_at(&zeros[..len], i * BLOCK_SIZE) {
                        fail(
                            &failed,
                            &stop,
                            self.io("write", &job.target.path, i * BLOCK_SIZE, e),
                        );
                        return;
                    }
                    let _ = written[i as usize].set(hash::zero_hash(len));
                    c.done.fetch_add(len as u64, Relaxed);
                }
            });
            for _ in 0..self.opts.connections.max(1) {
                s.spawn(|| {
                    while remaining.load(Relaxed) > 0 && !stop.load(Relaxed) {
                        let Some((batch, attempts)) =
                            queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
                        else {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        };
                        let mut progressed = false;
                        let mut last = String::new();
                        let res =
                            self.source
                                .blocks_hashed(vol, &batch, &mut |i, data, wire, known| {
                                    c.wire.fetch_add(wire, Relaxed);
                                    if stop.load(Relaxed) {
                                        return Received::Stop;
                                    }
                                    let Some(flag) = done.get(i as usize) else {
                                        return Received::Continue;
                                    };
                                    if !batch.contains(&i) || flag.load(Relaxed) {
                                        return Received::Continue;
                                    }
                                    let len = block_len(&job.info, i);
                                    // A learning source checked the block against its checksum,
                                    // and may hand over the SHA-256 it computed for that.
                                    let got = match known {
                                        Some(h) if plan.learn => h,
                                        _ => hash::block_hash(data),
                                    };
                                    let expected = if plan.learn {
                                        got
                                    } else {
                                        plan.remote[i as usize]
                                    };
                                    if data.len() != len || got != expected {
                                        // Never written; the block stays in the batch and is retried.
                                        c.retries.fetch_add(1, Relaxed);
                                        last = format!("block {i} arrived with the wrong SHA-256");
                                        return Received::Continue;
                                    }
                                    let off = i * BLOCK_SIZE;
                                    if plan.learn && got == plan.local[i as usize] {
                                        // The target already holds it: not rewritten.
                                    } else if let Err(e) = job.target.write_at(data, off) {
                                        fail(
                                            &failed,
                                            &stop,
                                            self.io("write", &job.target.path, off, e),
                                        );
                                        return Received::Stop;
                                    }
                                    let _ = written[i as usize].set(got);
                                    flag.store(true, Relaxed);
                                    remaining.fetch_sub(1, Relaxed);
                                    progressed = true;
                                    let before = c.done.fetch_add(len as u64, Relaxed);
                                    if before / CHECKPOINT != (before + len as u64) / CHECKPOINT
                                        && let Err(e) = job.target.sync()
                                    {
                                        fail(
                                            &failed,
                                            &stop,
                                            self.io("flush", &job.target.path, off, e),
                                        );
                                        return Received::Stop;
                                    }
                                    Received::Continue
                                });
                        let left: Vec<u64> = batch
                            .into_iter()
                            .filter(|&i| !done[i as usize].load(Relaxed))
                            .collect();
                        if left.is_empty() || stop.load(Relaxed) {
                            continue;
                        }
                        if let Err(e) = res {
                            if !e.is_retryable() {
                                fail(&failed, &stop, e.into());
                                return;
                            }
                            last = e.to_string();
                        } else if last.is_empty() {
                            last = "the agent sent fewer blocks than asked".into();
                        }
                        let attempts = if progressed { 1 } else { attempts + 1 };
                        if attempts >= self.opts.max_attempts {
                            fail(
                                &failed,
                                &stop,
                                Error::GaveUp {
                                    volume: vol.clone(),
                                    attempts,
                                    last,
                                },
                            );
                            return;
                        }
                        c.retries.fetch_add(1, Relaxed);
                        std::thread::sleep(backoff(attempts));
                        queue
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push_back((left, attempts));
                    }
                });
            }
            self.ticker(s, vol, "pulling", total, &c, &stop, || {
                remaining.load(Relaxed) == 0 && c.done.load(Relaxed) >= total
            });
        });
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let (digest, remote_digest) = self.finish(job, plan, written, &c)?;
        self.reporter.report(&Event::VolumeDone {
            volume: vol.clone(),
            target: job.target.path.display().to_string(),
            sha256: hex(&digest),
            remote_sha256: hex(&remote_digest),
            pulled_blocks: plan.fetch.len() as u64,
            zero_blocks: plan.zero.len() as u64,
            wire_bytes: c.wire.load(Relaxed),
            retries: c.retries.load(Relaxed),
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(c)
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
        plan: &Plan,
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
        let mut target = plan.local.clone();
        let mut remote = plan.remote.clone();
        for (i, h) in written.into_iter().enumerate() {
            if let Some(h) = h.into_inner() {
                target[i] = h;
                if plan.learn {
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
    /// each `k` in `0..out.len()`, block `index(k)` is read and its hash stored in
    /// `out[k]`; bytes hashed are counted in `c.done`. The one read-and-hash loop of
    /// the engine (the hash plan and the candidates plan both use it).
    #[allow(clippy::too_many_arguments)]
    fn spawn_hashers<'s, 'e: 's>(
        &'e self,
        s: &'s std::thread::Scope<'s, 'e>,
        job: &'e Job,
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
                    // BATCH blocks at a time, hashed side by side.
                    let first = next.fetch_add(hash::BATCH as u64, Relaxed) as usize;
                    if first >= out.len() || stop.load(Relaxed) {
                        return;
                    }
                    let ks = first..(first + hash::BATCH).min(out.len());
                    let (mut read, mut blocks) = (Vec::new(), Vec::new());
                    for (k, slot) in ks.clone().zip(buf.chunks_mut(bs)) {
                        let i = index(k);
                        let len = block_len(&job.info, i);
                        let off = i * BLOCK_SIZE;
                        // A hole of a sparse image reads as zeros: not read at all.
                        if job.target.is_hole(off, len as u64) {
                            let _ = out[k].set(hash::zero_hash(len));
                            continue;
                        }
                        if let Err(e) = job.target.read_at(&mut slot[..len], off) {
                            fail(failed, stop, self.io("read", &job.target.path, off, e));
                            return;
                        }
                        read.push(k);
                        blocks.push(&slot[..len]);
                    }
                    for (k, h) in read.into_iter().zip(hash::block_hashes(&blocks)) {
                        let _ = out[k].set(h);
                    }
                    let bytes: u64 = ks.map(|k| block_len(&job.info, index(k)) as u64).sum();
                    c.done.fetch_add(bytes, Relaxed);
                }
            });
        }
    }

    /// Emits `progress` events every tick until `finished()` or a stop.
    #[allow(clippy::too_many_arguments)]
    fn ticker<'s, 'e: 's>(
        &'e self,
        s: &'s std::thread::Scope<'s, 'e>,
        volume: &'e str,
        phase: &'static str,
        total: u64,
        c: &'e Counters,
        stop: &'e AtomicBool,
        finished: impl Fn() -> bool + Send + 's,
    ) {
        s.spawn(move || {
            let mut last = Instant::now() - self.opts.tick;
            loop {
                let end = finished() || stop.load(Relaxed);
                if end || last.elapsed() >= self.opts.tick {
                    last = Instant::now();
                    self.reporter.report(&Event::Progress {
                        volume: volume.to_string(),
                        phase: phase.to_string(),
                        done_bytes: c.done.load(Relaxed).min(total),
                        total_bytes: total,
                        wire_bytes: c.wire.load(Relaxed),
                        retries: c.retries.load(Relaxed),
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
        };
        let job = Job {
            info: src.volumes().unwrap().remove(0),
            target: Target::open(&path, true).unwrap(),
        };
        let old = hash::block_hash(&[1u8; BLOCK_SIZE as usize]);
        let new = hash::block_hash(&[2u8; BLOCK_SIZE as usize]);
        let plan = Plan {
            local: vec![old; 3],
            remote: vec![old, new, old],
            fetch: vec![1],
            zero: Vec::new(),
            learn: false,
        };
        let puller = Puller::new(&src, &Nobody, Options::default());
        let written = || (0..3).map(|_| OnceLock::new()).collect::<Vec<_>>();
        let c = Counters::default();
        match puller.finish(&job, &plan, written(), &c) {
            Err(Error::Verify { block: 1, .. }) => {}
            other => panic!(
                "expected a verify error at block 1, got {:?}",
                other.map(|_| ())
            ),
        }
        let w = written();
        w[1].set(new).unwrap();
        let (a, b) = puller.finish(&job, &plan, w, &c).unwrap();
        assert_eq!(
            (a, b),
            (
                hash::linear_digest(&plan.remote),
                hash::linear_digest(&plan.remote)
            )
        );
    }
}
