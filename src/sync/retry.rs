//! Retrying a source call: the same call again after a backoff, while its errors are
//! retryable and attempts remain.

use super::Error;
use crate::source::SourceError;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Calls `f` until it succeeds, a non-retryable error comes, or `max_attempts` run
/// out (then [`Error::GaveUp`] names `what`); each retry is counted in `retries`.
pub(super) fn retrying<T>(
    max_attempts: u32,
    what: &str,
    retries: &AtomicU64,
    mut f: impl FnMut() -> Result<T, SourceError>,
) -> Result<T, Error> {
    let mut attempt = 1;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if !e.is_retryable() => return Err(e.into()),
            Err(e) if attempt >= max_attempts => {
                return Err(Error::GaveUp {
                    volume: what.to_string(),
                    attempts: attempt,
                    last: e.to_string(),
                });
            }
            Err(_) => {
                retries.fetch_add(1, Relaxed);
                std::thread::sleep(backoff(attempt));
                attempt += 1;
            }
        }
    }
}

/// Exponential backoff with jitter: 100 ms, 200 ms, ... capped at 3 s.
pub(super) fn backoff(attempt: u32) -> Duration {
    let base = 100u64 << attempt.min(5);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = u64::from(nanos) % 100;
    Duration::from_millis(base.min(3000) + jitter)
}
