//! The sync engine: map remote volumes to local targets, plan by comparing block
//! hashes, pull only the differing blocks over several connections, verify every
//! block before it is written, flush, and check the whole volume at the end.
//!
//! Resume is by construction: nothing is recorded between runs; a new run hashes the
//! target again and pulls what still differs. A block is written only after its
//! SHA-256 matched the remote hash, so each target block holds either its old or its
//! new content at every moment.
//!
//! One job a module: [`job`] opens the targets, [`walk`] takes each volume a
//! [`window`] of blocks at a time (so that memory follows the window, not the
//! volume), [`plan`] (with [`hashing`]) decides which blocks of a window differ,
//! [`feed`] hands them to [`pull`], which writes them, and [`verify`] folds each
//! window into the whole-volume digests and compares them at the end. This module
//! runs the two flows: a reviewed run plans every volume before a single write; an
//! unattended one pulls each block as soon as its plan decides it.

pub mod cli;
pub mod continuous;
mod error;
#[cfg(test)]
mod fake;
mod feed;
mod hashing;
mod job;
mod options;
mod plan;
mod pull;
mod retry;
pub mod session;
pub mod target;
mod ticker;
mod verify;
mod walk;
mod window;

pub use error::Error;
pub use options::Options;
pub use plan::PlanSummary;
pub use session::{Outcome, Session};
pub use window::Gauge;

use crate::mapping::map::Mapping;
use crate::report::{Event, Reporter};
use crate::source::{BlockSource, SourceError};
use feed::Feed;
use job::Job;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// What a finished pull did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub volumes: u64,
    pub pulled_blocks: u64,
    /// Blocks written as zeros (all zero remotely): never fetched.
    pub zero_blocks: u64,
    pub wire_bytes: u64,
    pub retries: u64,
}

impl Summary {
    fn add(&mut self, feed: &Feed) {
        self.pulled_blocks += feed.planned().fetch_blocks;
        self.zero_blocks += feed.planned().zero_blocks;
        self.wire_bytes += feed.pulled.wire.load(Relaxed);
        self.retries += feed.pulled.retries.load(Relaxed);
    }

    /// Every target already held its volume: nothing was written.
    pub fn changed_nothing(&self) -> bool {
        self.pulled_blocks == 0 && self.zero_blocks == 0
    }
}

/// One volume under way: what its planning and its pulling share.
#[derive(Clone, Copy)]
struct Volume<'a> {
    puller: &'a Puller<'a>,
    job: &'a Job,
    feed: &'a Feed,
    /// The remote hashes of the blocks to fetch are unknown until they arrive (a
    /// source with [`Candidates`](crate::source::Candidates)); blocks outside the
    /// candidates are neither read nor written, and agree by assumption.
    learn: bool,
}

/// Windows of a reviewed plan kept whole, to be pulled as planned (the others are
/// planned again when pulled).
const KEPT_WINDOWS: u64 = 4;

/// Pulls remote volumes into local targets.
pub struct Puller<'a> {
    source: &'a dyn BlockSource,
    reporter: &'a dyn Reporter,
    opts: Options,
    gauge: Arc<Gauge>,
}

impl<'a> Puller<'a> {
    pub fn new(source: &'a dyn BlockSource, reporter: &'a dyn Reporter, opts: Options) -> Self {
        Self {
            source,
            reporter,
            opts,
            gauge: Arc::default(),
        }
    }

    /// How many blocks the windows held at once at most: what the engine's memory
    /// follows.
    pub fn gauge(&self) -> &Gauge {
        &self.gauge
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
        crate::block::fixed_mmap_threshold();
        let volumes = self.retrying("list volumes", &AtomicU64::default(), || {
            self.source.volumes()
        })?;
        let jobs = job::open_targets(&self.opts, &volumes, mapping)?;
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

    /// Unattended: for each volume in turn, pulls each block as soon as its plan
    /// decides it.
    fn pull_while_planning(&self, jobs: &[Job]) -> Result<Summary, Error> {
        let mut summary = Summary::default();
        for job in jobs {
            let feed = Feed::default();
            let v = self.volume(job, self.source.learns(), &feed);
            walk::pull(v, Vec::new(), None)?;
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
        let mut budget = match self.opts.dry_run {
            true => 0,
            false => KEPT_WINDOWS * self.opts.window_blocks,
        };
        for job in jobs {
            let feed = Feed::default();
            let v = self.volume(job, self.source.learns(), &feed);
            let kept = walk::plan_only(v, &mut budget)?;
            let p = feed.planned();
            summaries.push(plan::report(v));
            planned.push((kept, p.fetch_bytes + p.zero_bytes));
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
        for (job, (kept, bytes)) in jobs.iter().zip(planned) {
            let feed = Feed::default();
            let v = self.volume(job, self.source.learns(), &feed);
            walk::pull(v, kept, Some(bytes))?;
            summary.add(&feed);
        }
        Ok(summary)
    }

    fn volume<'v>(&'v self, job: &'v Job, learn: bool, feed: &'v Feed) -> Volume<'v> {
        Volume {
            puller: self,
            job,
            feed,
            learn,
        }
    }

    /// Calls `f` until it succeeds, a non-retryable error comes, or the attempts
    /// of the options run out; retries are counted in `retries`.
    fn retrying<T>(
        &self,
        what: &str,
        retries: &AtomicU64,
        f: impl FnMut() -> Result<T, SourceError>,
    ) -> Result<T, Error> {
        retry::retrying(self.opts.max_attempts, what, retries, f)
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{Fake, Nobody};
    use super::*;
    use crate::block::BLOCK_SIZE;
    use crate::mapping::map::MapTo;
    use crate::source::SourceError;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    #[test]
    fn corrupt_blocks_are_retried_and_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let n = 6 * BLOCK_SIZE as usize + 1000;
        let data: Vec<u8> = (0..n).map(|i| (i * 31 % 253) as u8 + 1).collect();
        let target = dir.path().join("t.img");
        std::fs::write(&target, vec![0u8; n]).unwrap();
        let src = Fake {
            corrupt: AtomicUsize::new(4),
            ..Fake::new(data.clone())
        };
        let opts = Options {
            unattended: true,
            connections: 1,
            batch_blocks: 7,
            ..Options::default()
        };
        let mut map = Mapping::new();
        map.insert("v".into(), MapTo::path(target.clone()));
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
    fn a_target_that_holds_its_volume_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3 * BLOCK_SIZE as usize;
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8 + 1).collect();
        let target = dir.path().join("t.img");
        let mut map = Mapping::new();
        map.insert("v".into(), MapTo::path(target.clone()));
        let opts = || Options {
            unattended: true,
            ..Options::default()
        };
        let run = |src: &Fake| {
            Puller::new(src, &Nobody, opts())
                .run(&map, &mut |_| unreachable!("unattended"))
                .unwrap()
        };
        std::fs::write(&target, &data).unwrap();
        assert!(run(&Fake::new(data.clone())).changed_nothing());
        // Only a zero block differs: written, never fetched; still a change.
        let mut zeroed = data.clone();
        zeroed[BLOCK_SIZE as usize..2 * BLOCK_SIZE as usize].fill(0);
        let s = run(&Fake::new(zeroed));
        assert_eq!((s.pulled_blocks, s.zero_blocks), (0, 1));
        assert!(!s.changed_nothing());
    }

    /// A pull of `n` blocks (a short tail) in windows of `window`, the target stale
    /// in every third block and zero where the volume has a zero block: the target
    /// ends equal to the volume, and the gauge says how many blocks the windows held.
    fn pull_in_windows(n: usize, window: u64, unattended: bool) -> (Summary, u64) {
        let dir = tempfile::tempdir().unwrap();
        let bs = BLOCK_SIZE as usize;
        let len = n * bs - 1000;
        let data: Vec<u8> = (0..len)
            .map(|i| {
                if (i / bs) % 7 == 3 {
                    0
                } else {
                    (i * 13 % 251) as u8 + 1
                }
            })
            .collect();
        let mut old = data.clone();
        for (k, b) in old.chunks_mut(bs).enumerate() {
            if k % 3 == 0 {
                b.fill(9);
            }
        }
        let target = dir.path().join("t.img");
        std::fs::write(&target, &old).unwrap();
        let src = Fake {
            corrupt: AtomicUsize::new(3),
            ..Fake::new(data.clone())
        };
        let opts = Options {
            unattended,
            connections: 2,
            batch_blocks: 3,
            window_blocks: window,
            ..Options::default()
        };
        let mut map = Mapping::new();
        map.insert("v".into(), MapTo::path(target.clone()));
        let puller = Puller::new(&src, &Nobody, opts);
        let s = puller.run(&map, &mut |_| true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), data);
        (s, puller.gauge().peak())
    }

    #[test]
    fn a_volume_of_many_windows_is_pulled_whole_holding_two_windows_at_most() {
        // 50 blocks: 13 windows of 4 (the last of 2 blocks, the last block short).
        let (s, peak) = pull_in_windows(50, 4, true);
        // Blocks 0, 3, 6... of 50 differ, of which 3, 24 and 45 are zeros: written, not fetched.
        assert_eq!(s.pulled_blocks, 14);
        assert!(s.retries >= 3);
        // The window being pulled, and the next one planned while a connection
        // still holds the last work of the one before.
        assert!((1..=8).contains(&peak), "{peak} blocks held at once");
        // One window of all the volume holds all of it: the gauge counts.
        assert_eq!(pull_in_windows(50, 64, true).1, 50);
    }

    #[test]
    fn a_reviewed_plan_keeps_its_first_windows_and_plans_the_rest_again() {
        // More windows than a reviewed plan keeps: the rest are planned again when
        // pulled, with the same result.
        let (s, peak) = pull_in_windows(50, 2, false);
        assert_eq!(s.pulled_blocks, 14);
        assert!(peak <= 2 * (KEPT_WINDOWS + 2), "{peak} blocks held at once");
    }

    /// Records every progress event reported.
    #[derive(Default)]
    struct Progress(Mutex<Vec<Event>>);
    impl Reporter for Progress {
        fn report(&self, e: &Event) {
            if matches!(e, Event::Progress { .. }) {
                self.0.lock().unwrap().push(e.clone());
            }
        }
    }

    #[test]
    fn hashing_reports_the_volume_size_and_ends_at_all_of_it() {
        // Both sides of an agent's volume are hashed: the events still count the
        // volume's bytes (not twice them), and the last one says all of it is done.
        let dir = tempfile::tempdir().unwrap();
        let n = 5 * BLOCK_SIZE as usize + 4096;
        let target = dir.path().join("t.img");
        std::fs::write(&target, vec![7u8; n]).unwrap();
        let src = Fake::new((0..n).map(|i| (i % 249) as u8).collect());
        let opts = Options {
            dry_run: true,
            ..Options::default()
        };
        let mut map = Mapping::new();
        map.insert("v".into(), MapTo::path(target));
        let events = Progress::default();
        Puller::new(&src, &events, opts)
            .run(&map, &mut |_| true)
            .unwrap();
        let hashing: Vec<(u64, u64)> = events
            .0
            .into_inner()
            .unwrap()
            .into_iter()
            .filter_map(|e| match e {
                Event::Progress {
                    phase: crate::report::Phase::Hashing,
                    done_bytes,
                    total_bytes,
                    ..
                } => Some((done_bytes, total_bytes)),
                _ => None,
            })
            .collect();
        assert!(!hashing.is_empty());
        assert!(
            hashing.iter().all(|(_, total)| *total == n as u64),
            "{hashing:?}"
        );
        assert_eq!(hashing.last(), Some(&(n as u64, n as u64)), "{hashing:?}");
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
        // 70 blocks: the remote hashes of the first window of 64 come, then the
        // agent refuses.
        let n = 70 * BLOCK_SIZE as usize;
        std::fs::write(&target, vec![1u8; n]).unwrap();
        let src = Fake {
            refuse_hashes_from: 64,
            ..Fake::new((0..n).map(|i| (i % 251) as u8).collect())
        };
        let opts = Options {
            unattended: true,
            max_attempts: 2,
            window_blocks: 64,
            ..Options::default()
        };
        let mut map = Mapping::new();
        map.insert("v".into(), MapTo::path(target.clone()));
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
}
