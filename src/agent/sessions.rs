//! The clients' sessions as the agent keeps them: the last event of each, for
//! `GET /v1/sessions`. Bounded in number and in bytes; past either, the session
//! that finished longest ago goes first, then the one quiet longest.

use serde_json::Value;
use std::collections::BTreeMap;

/// Longest session id taken (clients use 32 hex digits).
pub const MAX_ID: usize = 64;

/// Whether `id` may name a session: 1 to [`MAX_ID`] letters, digits, `-`, `_`, `.`.
pub fn valid_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

struct Entry {
    event: Value,
    /// Bytes of the event as posted.
    bytes: usize,
    /// When it was last updated (a counter, not a clock).
    seq: u64,
    /// Its last event ended the session (`done` or `error`).
    finished: bool,
}

/// Each session's last event, at most `max` sessions and `max_bytes` of events.
pub struct Sessions {
    max: usize,
    max_bytes: usize,
    bytes: usize,
    seq: u64,
    map: BTreeMap<String, Entry>,
}

impl Sessions {
    pub fn new(max: usize, max_bytes: usize) -> Self {
        Sessions {
            max: max.max(1),
            max_bytes,
            bytes: 0,
            seq: 0,
            map: BTreeMap::new(),
        }
    }

    /// Keeps `event` (`bytes` long as posted) as the last of session `id`, making
    /// room first if needed.
    pub fn record(&mut self, id: &str, event: Value, bytes: usize) {
        self.seq += 1;
        let finished = matches!(event["event"].as_str(), Some("done" | "error"));
        let entry = Entry {
            event,
            bytes,
            seq: self.seq,
            finished,
        };
        if let Some(old) = self.map.insert(id.to_string(), entry) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
        while self.map.len() > self.max || (self.bytes > self.max_bytes && self.map.len() > 1) {
            self.evict(id);
        }
    }

    /// Drops the session that finished longest ago, else the one quiet longest;
    /// never `keep` (the one just recorded).
    fn evict(&mut self, keep: &str) {
        let victim = self
            .map
            .iter()
            .filter(|(id, _)| id.as_str() != keep)
            .min_by_key(|(_, e)| (!e.finished, e.seq))
            .map(|(id, _)| id.clone());
        if let Some(e) = victim.and_then(|id| self.map.remove(&id)) {
            self.bytes -= e.bytes;
        }
    }

    /// Session `id`'s last event.
    pub fn last(&self, id: &str) -> Option<&Value> {
        self.map.get(id).map(|e| &e.event)
    }

    /// Session id -> last event, as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let view: BTreeMap<&str, &Value> = self
            .map
            .iter()
            .map(|(k, e)| (k.as_str(), &e.event))
            .collect();
        serde_json::to_vec(&view).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(s: &Sessions) -> Vec<&str> {
        s.map.keys().map(String::as_str).collect()
    }

    #[test]
    fn finished_sessions_go_first_then_the_quietest() {
        let mut s = Sessions::new(3, 1 << 20);
        s.record("a", json!({"event": "done"}), 10);
        s.record("b", json!({"event": "progress"}), 10);
        s.record("c", json!({"event": "error"}), 10);
        s.record("d", json!({"event": "progress"}), 10);
        assert_eq!(ids(&s), ["b", "c", "d"]);
        s.record("e", json!({"event": "progress"}), 10);
        assert_eq!(ids(&s), ["b", "d", "e"]);
        s.record("f", json!({"event": "progress"}), 10);
        assert_eq!(ids(&s), ["d", "e", "f"]);
        // An update is no new session, and counts its bytes once.
        s.record("d", json!({"event": "done"}), 20);
        assert_eq!((ids(&s), s.bytes), (vec!["d", "e", "f"], 40));
    }

    #[test]
    fn the_byte_budget_bounds_them_too() {
        let mut s = Sessions::new(100, 100);
        for id in ["a", "b", "c"] {
            s.record(id, json!({}), 40);
        }
        assert_eq!((ids(&s), s.bytes), (vec!["b", "c"], 80));
        // One larger than the budget stays alone.
        s.record("big", json!({}), 500);
        assert_eq!(ids(&s), ["big"]);
    }

    #[test]
    fn session_ids_are_short_names() {
        assert!(valid_id("0123abcdef-_."));
        for bad in ["", "a/b", "a%1b", "\u{1b}[2J", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
