//! The work feed between planning and pulling: the blocks a plan decided, handed to
//! the pulling threads as they are decided, the plan's counts, what pulling did, and
//! the stop that ends both sides.
//!
//! Either side waits for the other on a condition variable of the feed, never by
//! polling: whoever changes what a waiter waits for wakes it (see [`Feed::next`],
//! [`Feed::await_decision`] and [`Feed::wait_until`]), and a stop wakes everyone.

use super::Error;
use super::window::Window;
use std::collections::VecDeque;
use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Work for the pulling threads: blocks of a window to write as zeros or to fetch.
pub(super) struct Work {
    pub window: Arc<Window>,
    pub blocks: Vec<u64>,
    pub task: Task,
}

/// What to do with a [`Work`]'s blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Task {
    /// Write them as zeros.
    Zero,
    /// Fetch them (`attempts` made so far without progress).
    Fetch { attempts: u32 },
}

/// Bytes done, bytes received, retries: what a phase reports as it goes.
#[derive(Default)]
pub(super) struct Counters {
    pub done: AtomicU64,
    pub wire: AtomicU64,
    pub retries: AtomicU64,
}

/// Which side waits on the feed, and so which side a change wakes.
#[derive(Clone, Copy)]
pub(super) enum Side {
    /// Planning: woken when hashes are stored, when the queue runs empty, when the
    /// last block queued is written, on a stop.
    Planning,
    /// Pulling: woken when work is queued, when the plan is complete, when its last
    /// block is written, on a stop.
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
    /// Where planning waits (see [`Side::Planning`]).
    planning: Condvar,
    /// Where pulling waits (see [`Side::Pulling`]).
    pulling: Condvar,
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

    fn condvar(&self, side: Side) -> &Condvar {
        match side {
            Side::Planning => &self.planning,
            Side::Pulling => &self.pulling,
        }
    }

    /// Wakes the threads waiting on `side` after a change made outside the lock
    /// (taking the lock first, so that no waiter misses it between its check and
    /// its wait).
    fn wake(&self, side: Side) {
        drop(self.lock());
        self.condvar(side).notify_all();
    }

    /// Queues newly decided blocks (`bytes` long in all).
    pub fn push(&self, work: Work, bytes: u64) {
        let blocks = work.blocks.len() as u64;
        let (count, sum) = match work.task {
            Task::Zero => (&self.zero_blocks, &self.zero_bytes),
            Task::Fetch { .. } => (&self.fetch_blocks, &self.fetch_bytes),
        };
        count.fetch_add(blocks, Relaxed);
        sum.fetch_add(bytes, Relaxed);
        self.remaining.fetch_add(blocks, Relaxed);
        self.requeue(work);
    }

    /// Queues blocks again (already counted) for another attempt.
    pub fn requeue(&self, work: Work) {
        self.lock().push_back(work);
        self.pulling.notify_all();
    }

    /// The next work for a pulling thread, waiting for it while the plan goes on;
    /// `None` once every block of the complete plan is written, or on a stop.
    /// Taking the last queued work wakes planning (see [`Feed::await_decision`]).
    pub fn next(&self) -> Option<Work> {
        let mut queue = self.lock();
        loop {
            if self.stopped() {
                return None;
            }
            if let Some(work) = queue.pop_front() {
                if queue.is_empty() {
                    self.planning.notify_all();
                }
                return Some(work);
            }
            if self.drained() {
                return None;
            }
            queue = self.pulling.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Planning waits until `decidable()` (the next block's hashes are known) or a
    /// stop, and returns false; or returns true as soon as the pulling threads have
    /// run out of queued work while `pending` blocks wait in a partial batch, for
    /// the caller to queue them.
    pub fn await_decision(&self, pending: bool, decidable: impl Fn() -> bool) -> bool {
        let mut queue = self.lock();
        loop {
            if decidable() || self.stopped() {
                return false;
            }
            if pending && queue.is_empty() {
                return true;
            }
            queue = self.planning.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits on `side` until `done()` or a stop (true), or until `deadline` passes
    /// (false).
    pub fn wait_until(
        &self,
        side: Side,
        deadline: Option<Instant>,
        done: impl Fn() -> bool,
    ) -> bool {
        let mut queue = self.lock();
        loop {
            if done() || self.stopped() {
                return true;
            }
            let cv = self.condvar(side);
            queue = match deadline {
                None => cv.wait(queue).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let Some(left) = d.checked_duration_since(Instant::now()) else {
                        return false;
                    };
                    cv.wait_timeout(queue, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Hashes were stored (and counted): wakes planning.
    pub fn hashed(&self) {
        self.wake(Side::Planning);
    }

    /// Counts a queued block as written (`len` bytes); returns the bytes written
    /// before it. Writing the last block queued wakes both sides.
    pub fn wrote(&self, len: u64) -> u64 {
        let before = self.pulled.done.fetch_add(len, Relaxed);
        if self.remaining.fetch_sub(1, Release) == 1 {
            drop(self.lock());
            self.planning.notify_all();
            self.pulling.notify_all();
        }
        before
    }

    /// Counts a queued block as dealt with, unwritten (a live pass left it for
    /// the next one), as [`wrote`](Self::wrote) does.
    pub fn skipped(&self, len: u64) {
        self.wrote(len);
    }

    /// Every block queued so far is written.
    pub fn idle(&self) -> bool {
        self.remaining.load(Acquire) == 0
    }

    /// Takes the work queued (still counted as planned), for a plan that is
    /// reviewed before pulling.
    pub fn take_queued(&self) -> Vec<Work> {
        let taken: Vec<Work> = self.lock().drain(..).collect();
        let blocks: usize = taken.iter().map(|w| w.blocks.len()).sum();
        self.remaining.fetch_sub(blocks as u64, Release);
        taken
    }

    /// The plan is complete: nothing more will be queued. Wakes pulling.
    pub fn close(&self) {
        self.closed.store(true, Release);
        self.wake(Side::Pulling);
    }

    pub fn closed(&self) -> bool {
        self.closed.load(Acquire)
    }

    /// Planning or pulling gave up: wakes every waiter of both sides, which stop.
    pub fn stop(&self) {
        self.stopped.store(true, Relaxed);
        drop(self.lock());
        self.planning.notify_all();
        self.pulling.notify_all();
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Relaxed)
    }

    /// Every block of a complete plan is written.
    pub fn drained(&self) -> bool {
        self.closed() && self.idle()
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

    /// The error recorded, if any (taken).
    pub fn result(&self) -> Result<(), Error> {
        match self.first.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn fetch(blocks: Vec<u64>) -> Work {
        Work {
            window: Arc::new(Window::bare(0..4)),
            blocks,
            task: Task::Fetch { attempts: 0 },
        }
    }

    #[test]
    fn a_stop_wakes_every_waiter() {
        let feed = Feed::default();
        let feed = &feed;
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            for side in [Side::Planning, Side::Pulling] {
                let tx = tx.clone();
                s.spawn(move || {
                    assert!(feed.wait_until(side, None, || false));
                    tx.send("wait_until").unwrap();
                });
            }
            let t = tx.clone();
            s.spawn(move || {
                assert!(feed.next().is_none());
                t.send("next").unwrap();
            });
            s.spawn(move || {
                assert!(!feed.await_decision(false, || false));
                tx.send("await_decision").unwrap();
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(rx.try_recv().is_err(), "a waiter returned before the stop");
            feed.stop();
            for _ in 0..4 {
                rx.recv_timeout(Duration::from_secs(10)).unwrap();
            }
        });
    }

    #[test]
    fn pulling_waits_for_work_and_ends_once_the_closed_plan_is_written() {
        let feed = Feed::default();
        std::thread::scope(|s| {
            let pulling = s.spawn(|| {
                let mut taken = 0;
                while let Some(work) = feed.next() {
                    assert_eq!(work.task, Task::Fetch { attempts: 0 });
                    for _ in work.blocks {
                        feed.wrote(1);
                    }
                    taken += 1;
                }
                taken
            });
            feed.push(fetch(vec![1, 2]), 2);
            std::thread::sleep(Duration::from_millis(20));
            feed.push(fetch(vec![3]), 1);
            std::thread::sleep(Duration::from_millis(20));
            assert!(!pulling.is_finished(), "ended before the plan was closed");
            feed.close();
            assert_eq!(pulling.join().unwrap(), 2);
        });
        assert!(feed.drained());
        assert_eq!(feed.pulled.done.load(Relaxed), 3);
    }

    #[test]
    fn planning_is_woken_by_hashes_and_by_the_queue_running_empty() {
        let feed = Feed::default();
        let known = AtomicBool::new(false);
        std::thread::scope(|s| {
            let planning = s.spawn(|| feed.await_decision(false, || known.load(Relaxed)));
            std::thread::sleep(Duration::from_millis(20));
            assert!(!planning.is_finished());
            known.store(true, Relaxed);
            feed.hashed();
            assert!(!planning.join().unwrap(), "decidable");
        });
        feed.push(
            Work {
                task: Task::Zero,
                ..fetch(vec![0])
            },
            1,
        );
        std::thread::scope(|s| {
            let planning = s.spawn(|| feed.await_decision(true, || false));
            std::thread::sleep(Duration::from_millis(20));
            assert!(!planning.is_finished(), "work is still queued");
            assert!(feed.next().is_some());
            assert!(
                planning.join().unwrap(),
                "the pulling threads ran out of work"
            );
        });
    }
}
