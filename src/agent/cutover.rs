//! Cutover as the agent keeps it: which hosts were asked to cut over, and what
//! each continuous client said last (its host, its pass, its `cutover_done` or
//! error, when it was last heard). A client learns of cutover from the answer to
//! its own progress POST (`{"cutover": true}`); `failback cutover` asks with
//! `POST /v1/cutover` and follows with `GET /v1/cutover`.

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Who was asked to cut over.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    All,
    Hosts(BTreeSet<String>),
}

/// What one client said.
struct Client {
    host: Option<String>,
    /// It reported a pass: a continuous pull.
    continuous: bool,
    pass: u64,
    lag_s: f64,
    /// Its `cutover_done` event.
    done: Option<Value>,
    /// Its error, if it ended with one.
    failed: Option<String>,
    heard: Instant,
}

/// The cutover state of the agent, at most `max` clients (the quietest go first).
pub struct Cutover {
    asked: Option<Asked>,
    clients: BTreeMap<String, Client>,
    max: usize,
}

impl Cutover {
    pub fn new(max: usize) -> Self {
        Cutover {
            asked: None,
            clients: BTreeMap::new(),
            max: max.max(1),
        }
    }

    /// Takes session `id`'s event; answers whether it is to cut over.
    pub fn heard(&mut self, id: &str, event: &Value, now: Instant) -> bool {
        if !self.clients.contains_key(id) && self.clients.len() >= self.max {
            let quietest = self
                .clients
                .iter()
                .min_by_key(|(_, c)| c.heard)
                .map(|(id, _)| id.clone());
            if let Some(q) = quietest {
                self.clients.remove(&q);
            }
        }
        let c = self.clients.entry(id.to_string()).or_insert(Client {
            host: None,
            continuous: false,
            pass: 0,
            lag_s: 0.0,
            done: None,
            failed: None,
            heard: now,
        });
        c.heard = now;
        if let Some(host) = event["host"].as_str() {
            c.host = Some(host.to_string());
        }
        match event["event"].as_str() {
            Some("pass") => {
                c.continuous = true;
                c.pass = event["pass"].as_u64().unwrap_or(c.pass);
                c.lag_s = event["lag_s"].as_f64().unwrap_or(c.lag_s);
            }
            Some("cutover_done") => {
                c.continuous = true;
                c.done = Some(event.clone());
            }
            Some("error") if c.continuous => {
                c.failed = Some(event["message"].as_str().unwrap_or("failed").to_string());
            }
            _ => {}
        }
        let c = &self.clients[id];
        self.asks(c) && c.done.is_none()
    }

    /// Asks `host` (all clients: `None`) to cut over.
    pub fn ask(&mut self, host: Option<String>) {
        self.asked = match (self.asked.take(), host) {
            (_, None) | (Some(Asked::All), _) => Some(Asked::All),
            (Some(Asked::Hosts(mut hosts)), Some(h)) => {
                hosts.insert(h);
                Some(Asked::Hosts(hosts))
            }
            (None, Some(h)) => Some(Asked::Hosts([h].into())),
        };
    }

    /// Cutover was asked and every continuous client asked ended it (done or
    /// failed): what `--freeze` waits for to thaw.
    pub fn ended(&self) -> bool {
        let mut asked = self
            .clients
            .values()
            .filter(|c| c.continuous && self.asks(c))
            .peekable();
        asked.peek().is_some() && asked.all(|c| c.done.is_some() || c.failed.is_some())
    }

    /// Once every client asked ended its cutover, the ask is spent: a continuous
    /// pull started later runs its passes until cutover is asked again.
    pub fn spend(&mut self) {
        if self.ended() {
            self.asked = None;
        }
    }

    /// Whether cutover was asked of client `c`.
    fn asks(&self, c: &Client) -> bool {
        match &self.asked {
            None => false,
            Some(Asked::All) => true,
            Some(Asked::Hosts(hosts)) => c.host.as_ref().is_some_and(|h| hosts.contains(h)),
        }
    }

    /// The continuous clients, as `GET /v1/cutover` shows them: each one's
    /// session, host, state (`passes`, `final`, `done`, `failed`), pass, lag,
    /// seconds since last heard, and its `cutover_done`.
    pub fn status(&self, now: Instant) -> Value {
        let clients: Vec<Value> = self
            .clients
            .iter()
            .filter(|(_, c)| c.continuous)
            .map(|(id, c)| {
                let asked = self.asks(c);
                let state = match (&c.done, &c.failed, asked) {
                    (Some(_), _, _) => "done",
                    (None, Some(_), _) => "failed",
                    (None, None, true) => "final",
                    (None, None, false) => "passes",
                };
                json!({
                    "session": id,
                    "host": c.host,
                    "state": state,
                    "asked": asked,
                    "pass": c.pass,
                    "lag_s": c.lag_s,
                    "silent_s": now.saturating_duration_since(c.heard).as_secs_f64(),
                    "error": c.failed,
                    "cutover_done": c.done,
                })
            })
            .collect();
        json!({ "asked": self.asked.is_some(), "clients": clients })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_client_hears_cutover_in_the_answer_to_its_next_post() {
        let t = Instant::now();
        let mut c = Cutover::new(8);
        let pass = json!({"event": "pass", "pass": 2, "lag_s": 4.0, "host": "a"});
        assert!(!c.heard("s1", &pass, t));
        assert!(!c.heard("s2", &json!({"event": "pass", "host": "b"}), t));
        c.ask(Some("a".into()));
        assert!(c.heard("s1", &pass, t));
        assert!(!c.heard("s2", &json!({"event": "progress"}), t));
        // Done: no more cutover for it.
        assert!(!c.ended());
        assert!(!c.heard("s1", &json!({"event": "cutover_done", "seconds": 1.5}), t));
        assert!(c.ended(), "host a was asked, and is done");
        let mut later = Cutover::new(8);
        later.heard("s1", &pass, t);
        later.ask(None);
        later.heard("s1", &json!({"event": "cutover_done"}), t);
        later.spend();
        assert!(
            !later.heard("s3", &json!({"event": "pass"}), t),
            "a new pull goes on"
        );
        c.ask(None);
        assert!(c.heard("s2", &json!({"event": "progress"}), t));
        let s = c.status(t + Duration::from_secs(3));
        let states: Vec<(&str, &str)> = s["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["host"].as_str().unwrap(), c["state"].as_str().unwrap()))
            .collect();
        assert_eq!(states, [("a", "done"), ("b", "final")]);
        assert_eq!(s["clients"][0]["silent_s"], 3.0);
        assert_eq!(s["clients"][0]["cutover_done"]["seconds"], 1.5);
    }

    #[test]
    fn one_shot_pulls_are_no_cutover_clients_and_errors_fail_continuous_ones() {
        let t = Instant::now();
        let mut c = Cutover::new(2);
        c.heard("once", &json!({"event": "done"}), t);
        c.heard("cont", &json!({"event": "pass", "host": "x"}), t);
        c.heard(
            "cont",
            &json!({"event": "error", "message": "disk gone"}),
            t,
        );
        assert!(!c.ended(), "nobody was asked");
        c.ask(None);
        assert!(c.ended(), "the only client asked failed");
        let s = c.status(t);
        assert_eq!(s["clients"].as_array().unwrap().len(), 1);
        assert_eq!(s["clients"][0]["state"], "failed");
        assert_eq!(s["clients"][0]["error"], "disk gone");
        // Bounded: a third client pushes out the quietest.
        c.heard("new", &json!({}), t + Duration::from_secs(1));
        c.heard("cont", &json!({}), t + Duration::from_secs(2));
        c.heard("newer", &json!({}), t + Duration::from_secs(3));
        assert_eq!(c.clients.keys().collect::<Vec<_>>(), ["cont", "newer"]);
    }
}
