//! Progress events of one phase of a volume (hashing, pulling), every tick until the
//! phase ends or the volume stops.

use super::feed::{Feed, Side};
use crate::report::{Event, Phase, Reporter};
use std::time::{Duration, Instant};

/// Where and how often one phase reports, and what it waits on between reports.
pub(super) struct Ticker<'a> {
    pub reporter: &'a dyn Reporter,
    pub tick: Duration,
    pub volume: &'a str,
    pub phase: Phase,
    /// Bytes the phase has to do.
    pub total: u64,
    /// The feed whose `side` is woken when the phase may have ended (or stopped).
    pub feed: &'a Feed,
    pub side: Side,
}

impl<'a> Ticker<'a> {
    /// Emits `progress` events on a thread of `s`: one at once, then every tick,
    /// and a last one when `finished()` or the feed stopped. `numbers` gives the
    /// bytes done, the bytes received and the retries.
    pub fn spawn<'s>(
        self,
        s: &'s std::thread::Scope<'s, '_>,
        numbers: impl Fn() -> (u64, u64, u64) + Send + 's,
        finished: impl Fn() -> bool + Send + 's,
    ) where
        'a: 's,
    {
        s.spawn(move || {
            let mut next = Instant::now();
            loop {
                let end = finished() || self.feed.stopped();
                if end || Instant::now() >= next {
                    next = Instant::now() + self.tick;
                    let (done, wire, retries) = numbers();
                    self.reporter.report(&Event::Progress {
                        volume: self.volume.to_string(),
                        phase: self.phase,
                        done_bytes: done.min(self.total),
                        total_bytes: self.total,
                        wire_bytes: wire,
                        retries,
                    });
                }
                if end {
                    return;
                }
                self.feed.wait_until(self.side, Some(next), &finished);
            }
        });
    }
}
