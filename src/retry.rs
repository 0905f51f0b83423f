//! Waiting before trying again: exponential backoff with jitter, and a loop that
//! retries a blocking call with it.
//!
//! The wait before retry number `attempt` (1 for the first retry) starts from a
//! ceiling that doubles each time: `first`, `2 * first`, `4 * first`, ... never
//! above `cap`. The [`Jitter`] then decides how much of that ceiling is waited:
//!
//! - [`Jitter::Equal`] ("equal jitter"): a uniform draw between half the ceiling
//!   and the ceiling, both included. With `first` = 200 ms the first wait is
//!   100 to 200 ms, the second 200 to 400 ms; at the cap, `cap / 2` to `cap`.
//!   Not "full jitter", which would draw from zero to the ceiling.
//! - [`Jitter::Added`]: the whole ceiling plus a uniform draw below the given
//!   extra. With `first` = 200 ms and 100 ms extra the first wait is 200 to
//!   299 ms; at the cap, `cap` to `cap` + 99 ms.
//!
//! Waits are whole milliseconds; the random draw comes from the system's CSPRNG
//! (ring), so threads retrying together do not wake together.

use std::time::Duration;

/// How the random part of a wait is drawn (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniformly between half the ceiling and the ceiling (both included).
    Equal,
    /// The ceiling plus a uniform draw from zero up to, not including, this.
    Added(Duration),
}

/// Exponential backoff: the ceiling doubles from `first` up to `cap`, then
/// [`Jitter`] picks the wait under (or above) it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's wait.
    pub first: Duration,
    /// The largest ceiling.
    pub cap: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    /// The ceiling for retry number `attempt` (1 for the first; 0 counts as 1):
    /// `first * 2^(attempt - 1)`, at most `cap`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        let first = self.first.as_millis().min(u128::from(u64::MAX)) as u64;
        let ms = first.saturating_mul(1u64 << doublings);
        Duration::from_millis(ms).min(self.cap)
    }

    /// The wait before retry number `attempt` (1 for the first).
    pub fn wait(&self, attempt: u32) -> Duration {
        self.wait_with(attempt, random())
    }

    /// The wait before retry number `attempt`, given the random draw `r`.
    fn wait_with(&self, attempt: u32, r: u64) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        let ms = match self.jitter {
            Jitter::Equal => ceiling / 2 + r % (ceiling / 2 + 1),
            Jitter::Added(extra) => match extra.as_millis() as u64 {
                0 => ceiling,
                extra => ceiling + r % extra,
            },
        };
        Duration::from_millis(ms)
    }

    /// Calls `f` until it succeeds, fails with an error `retryable` refuses, or
    /// has been called `attempts` times (at least once), sleeping
    /// [`wait`](Self::wait) between calls. Gives the last result.
    pub fn retry<T, E>(
        &self,
        attempts: u32,
        retryable: impl Fn(&E) -> bool,
        mut f: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        let mut attempt = 1;
        loop {
            match f() {
                Err(e) if retryable(&e) && attempt < attempts => {
                    std::thread::sleep(self.wait(attempt));
                    attempt += 1;
                }
                r => return r,
            }
        }
    }
}

/// A random number from the system's CSPRNG (0 if it fails: no jitter, still a wait).
fn random() -> u64 {
    let mut r = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
    u64::from_le_bytes(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_ceiling_doubles_from_the_first_wait_up_to_the_cap() {
        let b = Backoff {
            first: ms(200),
            cap: ms(10_000),
            jitter: Jitter::Equal,
        };
        let ceilings: Vec<u64> = (1..=8).map(|a| b.ceiling(a).as_millis() as u64).collect();
        assert_eq!(ceilings, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        assert_eq!(b.ceiling(0), ms(200), "attempt 0 counts as the first");
        assert_eq!(b.ceiling(u32::MAX), ms(10_000), "no overflow");
    }

    #[test]
    fn equal_jitter_waits_between_half_the_ceiling_and_the_ceiling() {
        let b = Backoff {
            first: ms(200),
            cap: ms(10_000),
            jitter: Jitter::Equal,
        };
        assert_eq!(b.wait_with(1, 0), ms(100));
        assert_eq!(b.wait_with(1, 100), ms(200));
        assert_eq!(b.wait_with(1, 101), ms(100), "the draw wraps");
        assert_eq!(b.wait_with(2, u64::MAX), ms(200 + u64::MAX % 201));
        assert_eq!(b.wait_with(9, 0), ms(5_000));
        assert_eq!(b.wait_with(9, 5_000), ms(10_000));
        for a in 1..10 {
            let w = b.wait(a);
            assert!(w >= b.ceiling(a) / 2 && w <= b.ceiling(a), "{a}: {w:?}");
        }
    }

    #[test]
    fn added_jitter_waits_the_ceiling_and_a_little_more() {
        let b = Backoff {
            first: ms(200),
            cap: ms(3_000),
            jitter: Jitter::Added(ms(100)),
        };
        assert_eq!(b.wait_with(1, 0), ms(200));
        assert_eq!(b.wait_with(1, 99), ms(299));
        assert_eq!(b.wait_with(1, 100), ms(200));
        assert_eq!(b.wait_with(4, 0), ms(1_600));
        assert_eq!(b.wait_with(5, 42), ms(3_042));
        assert_eq!(b.wait_with(30, 99), ms(3_099));
        let none = Backoff {
            jitter: Jitter::Added(Duration::ZERO),
            ..b
        };
        assert_eq!(none.wait_with(1, 7), ms(200));
    }

    /// Runs [`Backoff::retry`] without waits over `answers`, given in order (the
    /// last one repeats), retrying "again"; gives the result and the calls made.
    fn run(
        attempts: u32,
        answers: &[Result<u32, &'static str>],
    ) -> (Result<u32, &'static str>, usize) {
        let now = Backoff {
            first: Duration::ZERO,
            cap: Duration::ZERO,
            jitter: Jitter::Equal,
        };
        let mut calls = 0;
        let r = now.retry(
            attempts,
            |e| *e == "again",
            || {
                calls += 1;
                answers[(calls - 1).min(answers.len() - 1)]
            },
        );
        (r, calls)
    }

    #[test]
    fn retry_stops_at_success_at_a_final_error_or_after_the_attempts() {
        assert_eq!(run(5, &[Err("again"), Err("again"), Ok(3)]), (Ok(3), 3));
        assert_eq!(run(5, &[Err("again"), Err("final")]), (Err("final"), 2));
        assert_eq!(run(4, &[Err("again")]), (Err("again"), 4));
        assert_eq!(run(0, &[Err("again")]), (Err("again"), 1), "once at least");
    }
}
