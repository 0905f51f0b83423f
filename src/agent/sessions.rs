//! The clients' sessions as the agent keeps them: each host's state folded from its
//! events ([`Host`]), for `GET /v1/sessions`, the dashboard and the metrics. Bounded in
//! number and in bytes; past either, the session that finished longest ago goes
//! first, then the one quiet longest.

use super::fleet::Host;
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
    host: Host,
    /// The last event (a continuous client posts it again as a sign of life).
    event: Value,
    /// Bytes of the host's state and of the last event, as JSON.
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

    /// Folds `event` into session `id` (new ones come from `ip`), making room if
    /// needed; returns the host's state when this event finished it.
    pub fn record(&mut self, id: &str, ip: &str, event: &Value, now: f64) -> Option<Host> {
        self.seq += 1;
        let mut host = match self.map.remove(id) {
            Some(old) => {
                self.bytes -= old.bytes;
                old.host
            }
            None => Host::new(id, ip, now),
        };
        let finished_now = host.apply(event, now);
        let bytes = [serde_json::to_vec(&host), serde_json::to_vec(event)]
            .iter()
            .map(|j| j.as_ref().map_or(0, Vec::len))
            .sum();
        let entry = Entry {
            finished: host.state.finished(),
            host,
            event: event.clone(),
            bytes,
            seq: self.seq,
        };
        let result = finished_now.then(|| entry.host.clone());
        self.map.insert(id.to_string(), entry);
        self.bytes += bytes;
        while self.map.len() > self.max || (self.bytes > self.max_bytes && self.map.len() > 1) {
            self.evict(id);
        }
        result
    }

    /// The host name session `id` goes by.
    pub fn host_name(&self, id: &str) -> Option<&str> {
        self.map.get(id).map(|e| e.host.host.as_str())
    }

    /// Every host kept, by session id.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> + Clone {
        self.map.values().map(|e| &e.host)
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

    /// Session id -> host state, as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let view: BTreeMap<&str, &Host> = self
            .map
            .iter()
            .map(|(k, e)| (k.as_str(), &e.host))
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

    fn done() -> Value {
        json!({"event": "done", "volumes": 1, "pulled_blocks": 0, "wire_bytes": 0,
            "retries": 0, "seconds": 1.0, "dry_run": false})
    }

    fn busy() -> Value {
        json!({"event": "notice", "message": "working"})
    }

    fn record(s: &mut Sessions, id: &str, event: &Value) -> Option<Host> {
        s.record(id, "10.0.0.1", event, 0.0)
    }

    #[test]
    fn finished_sessions_go_first_then_the_quietest() {
        let mut s = Sessions::new(3, 1 << 20);
        assert!(record(&mut s, "a", &done()).is_some());
        record(&mut s, "b", &busy());
        record(&mut s, "c", &json!({"event": "error", "message": "m"}));
        record(&mut s, "d", &busy());
        assert_eq!(ids(&s), ["b", "c", "d"]);
        record(&mut s, "e", &busy());
        assert_eq!(ids(&s), ["b", "d", "e"]);
        record(&mut s, "f", &busy());
        assert_eq!(ids(&s), ["d", "e", "f"]);
        // An update is no new session, and counts its bytes once.
        let finished = record(&mut s, "d", &done()).expect("finished now");
        assert_eq!(finished.session, "d");
        let sizes: usize = s.map.values().map(|e| e.bytes).sum();
        assert_eq!((ids(&s), s.bytes), (vec!["d", "e", "f"], sizes));
    }

    #[test]
    fn the_byte_budget_bounds_them_too() {
        // A session's bytes: its host state and its last event, as JSON.
        let one = serde_json::to_vec(&Host::new("a", "10.0.0.1", 0.0))
            .unwrap()
            .len()
            + serde_json::to_vec(&busy()).unwrap().len()
            + 20;
        let mut s = Sessions::new(100, 2 * one);
        for id in ["a", "b", "c"] {
            record(&mut s, id, &busy());
        }
        assert_eq!(ids(&s), ["b", "c"]);
        // One larger than the budget stays alone.
        let big = json!({"event": "error", "message": "x".repeat(900)});
        let mut s = Sessions::new(100, one);
        record(&mut s, "a", &busy());
        record(&mut s, "big", &big);
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
