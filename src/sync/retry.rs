//! Retrying a source call: the same call again after a backoff, while its errors are
//! retryable and attempts remain.

use super::Error;
use crate::retry::{Backoff, Jitter};
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
                std::thread::sleep(BACKOFF.wait(attempt));
                attempt += 1;
            }
        }
    }
}

/// The backoff between a source call's attempts: 200 ms, 400 ms, 800 ms, 1.6 s, then
/// 3 s, each plus a random 0 to 99 ms.
pub(super) const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(200),
    cap: Duration::from_secs(3),
    jitter: Jitter::Added(Duration::from_millis(100)),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_200_ms_to_3_s_plus_less_than_100_ms() {
        let ceilings: Vec<u128> = (1..=7).map(|a| BACKOFF.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [200, 400, 800, 1600, 3000, 3000, 3000]);
        for attempt in 1..10 {
            let (wait, ceiling) = (BACKOFF.wait(attempt), BACKOFF.ceiling(attempt));
            assert!(
                wait >= ceiling && wait < ceiling + Duration::from_millis(100),
                "{attempt}: {wait:?}"
            );
        }
    }
}
