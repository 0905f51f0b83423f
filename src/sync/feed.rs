//! The work feed between planning and pulling: the blocks a plan decided, handed to
//! the pulling threads as they are decided, the plan's counts, what pulling did, and
//! the stop that ends both sides.

use super::Error;
use std::collections::VecDeque;
use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Work for the pulling threads: blocks to write as zeros, blocks to fetch (with
/// the attempts made so far without progress).
pub(super) enum Work {
    Zero(Vec<u64>),
    Fetch(Vec<u64>, u32),
}

/// Bytes done, bytes received, retries: what a phase reports as it goes.
#[derive(Default)]
pub(super) struct Counters {
    pub done: AtomicU64,
    pub wire: AtomicU64,
    pub retries: AtomicU64,
}

/// Which side waits on the feed.
#[derive(Clone, Copy)]
pub(super) enum Side {
    Planning,
    Pulling,
}

/// What a plan decided so far: blocks to fetch and to write as zeros, and their bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Planned {
    pub fetch_blocks: u64,
    pub fetch_bytes: u64,
    pub zero_blocks: u64,
    pub zero_bytes: u64,
}

/// The blocks a plan decided, handed to pulling as they are decided: all at once
/// when the plan is confirmed first, batch by batch when nobody is asked.
#[derive(Default)]
pub(super) struct Feed {
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
    pub pulled: Counters,
}

impl Feed {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Work>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues newly decided blocks (`bytes` long in all).
    pub fn push(&self, work: Work, bytes: u64) {
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
    pub fn requeue(&self, work: Work) {
        self.lock().push_back(work);
    }

    /// The next work for a pulling thread, waiting for it while the plan goes on;
    /// `None` once every block of the complete plan is written, or on a stop.
    pub fn next(&self) -> Option<Work> {
        loop {
            if self.stopped() {
                return None;
            }
            if let Some(work) = self.lock().pop_front() {
                return Some(work);
            }
            if self.drained() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Planning waits until `decidable()` (the next block's hashes are known) or a
    /// stop, and returns false; or returns true as soon as the pulling threads have
    /// run out of queued work while `pending` blocks wait in a partial batch, for
    /// the caller to queue them.
    pub fn await_decision(&self, pending: bool, decidable: impl Fn() -> bool) -> bool {
        loop {
            if decidable() || self.stopped() {
                return false;
            }
            if pending && self.lock().is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until `done()` or a stop (true), or until `deadline` passes (false).
    pub fn wait_until(&self, _: Side, deadline: Option<Instant>, done: impl Fn() -> bool) -> bool {
        loop {
            if done() || self.stopped() {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Hashes were stored (and counted).
    pub fn hashed(&self) {}

    /// Counts a queued block as written (`len` bytes); returns the bytes written
    /// before it.
    pub fn wrote(&self, len: u64) -> u64 {
        let before = self.pulled.done.fetch_add(len, Relaxed);
        self.remaining.fetch_sub(1, Release);
        before
    }

    /// The plan is complete: nothing more will be queued.
    pub fn close(&self) {
        self.closed.store(true, Release);
    }

    pub fn closed(&self) -> bool {
        self.closed.load(Acquire)
    }

    /// Planning or pulling gave up: both stop.
    pub fn stop(&self) {
        self.stopped.store(true, Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Relaxed)
    }

    /// Every block of a complete plan is written.
    pub fn drained(&self) -> bool {
        self.closed() && self.remaining.load(Acquire) == 0
    }

    /// What the plan queued so far (all of it once [`closed`](Self::closed)).
    pub fn planned(&self) -> Planned {
        Planned {
            fetch_blocks: self.fetch_blocks.load(Relaxed),
            fetch_bytes: self.fetch_bytes.load(Relaxed),
            zero_blocks: self.zero_blocks.load(Relaxed),
            zero_bytes: self.zero_bytes.load(Relaxed),
        }
    }
}

/// The first error among the threads working on a volume; recording it stops the
/// volume's planning and pulling alike.
pub(super) struct Failure<'a> {
    feed: &'a Feed,
    first: Mutex<Option<Error>>,
}

impl<'a> Failure<'a> {
    pub fn new(feed: &'a Feed) -> Self {
        Self {
            feed,
            first: Mutex::new(None),
        }
    }

    pub fn fail(&self, e: Error) {
        self.feed.stop();
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(e);
        }
    }

    /// The error recorded, if any.
    pub fn into_result(self) -> Result<(), Error> {
        match self.first.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
