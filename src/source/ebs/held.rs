//! The block tokens the source holds: those of the last few ranges listed (a
//! window being planned, one being pulled, a batch listed again), never the
//! volume's. A range listed longer ago than the tokens' age bound is not used:
//! it is listed again (block tokens expire after 7 days).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Ranges held at once: the window planned, the window pulled, a batch listed again.
const HELD_RANGES: usize = 3;

/// How long a listing's block tokens are used: well within their 7 days.
pub(super) const TOKEN_AGE: Duration = Duration::from_secs(24 * 3600);

/// The tokens of engine blocks `blocks`, listed at `listed`.
#[derive(Debug)]
pub(super) struct Tokens {
    pub blocks: Range<u64>,
    /// API block index -> BlockToken; API blocks the snapshot does not hold have none.
    pub tokens: HashMap<u64, String>,
    pub listed: Instant,
}

/// The last [`HELD_RANGES`] listings.
#[derive(Debug)]
pub(super) struct Held {
    max_age: Duration,
    ranges: Mutex<VecDeque<Arc<Tokens>>>,
}

impl Held {
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            ranges: Mutex::new(VecDeque::new()),
        }
    }

    /// The newest listing covering engine blocks `blocks` and younger than the
    /// age bound at `now`.
    pub fn get(&self, blocks: &Range<u64>, now: Instant) -> Option<Arc<Tokens>> {
        let ranges = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        ranges
            .iter()
            .rev()
            .find(|t| {
                t.blocks.start <= blocks.start
                    && blocks.end <= t.blocks.end
                    && now.saturating_duration_since(t.listed) < self.max_age
            })
            .cloned()
    }

    /// Keeps `tokens`, letting the oldest listing go beyond [`HELD_RANGES`].
    pub fn put(&self, tokens: Tokens) -> Arc<Tokens> {
        let tokens = Arc::new(tokens);
        let mut ranges = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        ranges.push_back(tokens.clone());
        while ranges.len() > HELD_RANGES {
            ranges.pop_front();
        }
        tokens
    }

    /// Tokens held now.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        let ranges = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        ranges.iter().map(|t| t.tokens.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(blocks: Range<u64>, listed: Instant) -> Tokens {
        Tokens {
            tokens: blocks.clone().map(|i| (i, format!("t{i}"))).collect(),
            blocks,
            listed,
        }
    }

    #[test]
    fn tokens_held_are_those_of_the_last_ranges_only() {
        let held = Held::new(TOKEN_AGE);
        let now = Instant::now();
        for k in 0..100 {
            held.put(tokens(k * 16..(k + 1) * 16, now));
            assert!(held.count() <= HELD_RANGES * 16, "{}", held.count());
        }
        assert!(held.get(&(99 * 16..100 * 16), now).is_some());
        assert!(held.get(&(0..16), now).is_none(), "let go");
        assert!(
            held.get(&(99 * 16..100 * 16 + 1), now).is_none(),
            "not covered"
        );
    }

    #[test]
    fn a_listing_past_the_age_bound_is_not_used() {
        let held = Held::new(Duration::from_secs(60));
        let then = Instant::now();
        held.put(tokens(0..16, then));
        assert!(held.get(&(2..5), then + Duration::from_secs(59)).is_some());
        assert!(held.get(&(2..5), then + Duration::from_secs(60)).is_none());
        // Listed again: the new listing is used.
        held.put(tokens(2..5, then + Duration::from_secs(61)));
        let got = held.get(&(2..5), then + Duration::from_secs(62)).unwrap();
        assert_eq!(got.blocks, 2..5);
    }
}
