//! Each host's state as the agent folds it from the events the host reports: what the
//! dashboard, `GET /v1/sessions`, `GET /metrics`, `failback status` and
//! `results.jsonl` show. Everything a client sends is capped in length and number.

use crate::block::BLOCK_SIZE;
use crate::report::{Event, Phase};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Volumes kept per host; a client naming more is not believed past this.
const MAX_VOLUMES: usize = 64;
/// Characters kept of a name a client sends.
const MAX_NAME: usize = 128;
/// Characters kept of an error a client sends.
const MAX_ERROR: usize = 1000;

/// Where a host is, as the summary counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Booting, mapping, planning: nothing pulled yet.
    #[default]
    Planned,
    /// Hashing or pulling.
    Pulling,
    /// Continuous: a pass ended, waiting for the next or for cutover.
    InSync,
    /// Pulled and verified (or found already recovered).
    Done,
    /// Reported an error.
    Failed,
}

impl State {
    /// Every state, in the summary's order.
    pub const ALL: [State; 5] = [
        State::Planned,
        State::Pulling,
        State::InSync,
        State::Done,
        State::Failed,
    ];

    /// The name on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Planned => "planned",
            State::Pulling => "pulling",
            State::InSync => "in_sync",
            State::Done => "done",
            State::Failed => "failed",
        }
    }

    /// The host's pull is over.
    pub fn finished(self) -> bool {
        matches!(self, State::Done | State::Failed)
    }
}

/// One volume of a host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub target: Option<String>,
    /// `hashing`, `pulling`, `verifying`, then `done`.
    pub phase: Option<String>,
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// The volume's size, from the plan.
    pub size: u64,
    /// Bytes the plan found different.
    pub bytes_to_pull: u64,
    /// Bytes pulled and written (block data, before compression).
    pub pulled_bytes: u64,
    /// Bytes of the local target hashed.
    pub hashed_bytes: u64,
    /// Bytes received over the wire.
    pub wire_bytes: u64,
    /// Bytes a second in the current phase.
    pub rate: Option<f64>,
    /// Seconds left in the current phase at that rate.
    pub eta_s: Option<f64>,
    pub sha256: Option<String>,
    pub remote_sha256: Option<String>,
    /// The target's digest is the source's.
    pub matched: Option<bool>,
    pub seconds: Option<f64>,
    /// The last progress sample: when (unix seconds) and how far.
    #[serde(skip)]
    pub sample: Option<(f64, u64)>,
}

impl Volume {
    /// Progress of the current phase, 0 to 1 (1 when done).
    pub fn ratio(&self) -> f64 {
        if self.phase.as_deref() == Some("done") {
            return 1.0;
        }
        if self.total_bytes == 0 {
            return 0.0;
        }
        (self.done_bytes as f64 / self.total_bytes as f64).clamp(0.0, 1.0)
    }

    fn progress(&mut self, phase: Phase, done: u64, total: u64, wire: u64, now: f64) {
        let same_phase = self.phase.as_deref() == Some(phase.as_str());
        if let (true, Some((t, d))) = (same_phase, self.sample)
            && now - t >= 0.5
        {
            let rate = done.saturating_sub(d) as f64 / (now - t);
            self.rate = Some(rate);
            self.eta_s = (rate > 0.0).then(|| total.saturating_sub(done) as f64 / rate);
        } else if !same_phase {
            (self.rate, self.eta_s) = (None, None);
        }
        if !same_phase || self.sample.is_none_or(|(t, _)| now - t >= 0.5) {
            self.sample = Some((now, done));
        }
        self.phase = Some(phase.as_str().into());
        (self.done_bytes, self.total_bytes, self.wire_bytes) = (done, total, wire);
        match phase {
            Phase::Pulling => self.pulled_bytes = self.pulled_bytes.max(done),
            Phase::Hashing => self.hashed_bytes = self.hashed_bytes.max(done),
            Phase::Verifying => {}
        }
    }
}

/// A host, as its reports tell it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// Its name (`--host`, `failback.host=`); the session id until it says.
    pub host: String,
    pub session: String,
    /// The address its reports come from.
    pub ip: String,
    /// Its network, once reported.
    pub mac: Option<String>,
    pub address: Option<String>,
    /// Where it pulls from.
    pub source: Option<String>,
    pub state: State,
    pub volumes: BTreeMap<String, Volume>,
    /// Continuous pulls: the pass and its lag behind the source.
    pub pass: Option<u64>,
    pub lag_s: Option<f64>,
    pub error: Option<String>,
    pub errors: u64,
    /// Bytes received over the wire, whole pull.
    pub wire_bytes: u64,
    pub seconds: Option<f64>,
    /// Unix seconds.
    pub first_seen: f64,
    pub last_seen: f64,
    /// The last event's name.
    pub last_event: String,
}

fn capped(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn text_of(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(|s| capped(s, MAX_NAME))
}

impl Host {
    pub fn new(session: &str, ip: &str, now: f64) -> Self {
        Host {
            host: session.into(),
            session: session.into(),
            ip: ip.into(),
            first_seen: now,
            last_seen: now,
            ..Host::default()
        }
    }

    /// The volume named `name`, made if there is room.
    fn volume(&mut self, name: &str) -> Option<&mut Volume> {
        let name = capped(name, MAX_NAME);
        if !self.volumes.contains_key(&name) && self.volumes.len() >= MAX_VOLUMES {
            return None;
        }
        Some(self.volumes.entry(name).or_default())
    }

    /// Folds one posted event in; `now` in unix seconds. Returns whether this event
    /// finished the host (done or failed, and it was not before).
    pub fn apply(&mut self, posted: &Value, now: f64) -> bool {
        let was_finished = self.state.finished();
        self.last_seen = now;
        if let Some(host) = text_of(posted, "host").filter(|h| !h.is_empty()) {
            self.host = host;
        }
        if let Some(source) = text_of(posted, "source") {
            self.source = Some(source);
        }
        let name = posted.get("event").and_then(Value::as_str).unwrap_or("");
        self.last_event = capped(name, MAX_NAME);
        match Event::deserialize(posted) {
            Ok(event) => self.apply_event(event, now),
            // Events of a continuous pull (another part of the agent reads them).
            Err(_) => match name {
                "pass" => {
                    self.state = State::InSync;
                    self.pass = posted.get("pass").and_then(Value::as_u64).or(self.pass);
                    self.lag_s = posted
                        .get("lag_s")
                        .or_else(|| posted.get("lag_seconds"))
                        .and_then(Value::as_f64)
                        .or(self.lag_s);
                }
                "cutover_done" => self.state = State::Done,
                _ => {}
            },
        }
        !was_finished && self.state.finished()
    }

    fn apply_event(&mut self, event: Event, now: f64) {
        match event {
            Event::Network { network, .. } => {
                self.mac = Some(capped(&network.mac, MAX_NAME));
                self.address = Some(capped(&network.address, MAX_NAME));
            }
            Event::Error { message } => {
                self.state = State::Failed;
                self.errors += 1;
                self.error = Some(capped(&message, MAX_ERROR));
            }
            Event::Plan {
                volume,
                target,
                size,
                bytes_to_pull,
                ..
            } => {
                if let Some(v) = self.volume(&volume) {
                    v.target = Some(capped(&target, MAX_NAME));
                    (v.size, v.bytes_to_pull) = (size, bytes_to_pull);
                }
            }
            Event::Progress {
                volume,
                phase,
                done_bytes,
                total_bytes,
                wire_bytes,
                ..
            } => {
                // A new pass (continuous) or a new pull after an error starts again.
                if matches!(self.state, State::Planned | State::InSync | State::Failed) {
                    self.state = State::Pulling;
                }
                if let Some(v) = self.volume(&volume) {
                    v.progress(phase, done_bytes, total_bytes, wire_bytes, now);
                }
            }
            Event::VolumeDone {
                volume,
                target,
                sha256,
                remote_sha256,
                pulled_blocks,
                wire_bytes,
                seconds,
                ..
            } => {
                if let Some(v) = self.volume(&volume) {
                    v.target = Some(capped(&target, MAX_NAME));
                    v.phase = Some("done".into());
                    v.matched = Some(sha256 == remote_sha256);
                    v.sha256 = Some(capped(&sha256, MAX_NAME));
                    v.remote_sha256 = Some(capped(&remote_sha256, MAX_NAME));
                    v.pulled_bytes = pulled_blocks.saturating_mul(BLOCK_SIZE);
                    v.wire_bytes = wire_bytes;
                    v.seconds = Some(seconds);
                    v.done_bytes = v.total_bytes;
                    (v.rate, v.eta_s) = (None, None);
                }
            }
            Event::Done {
                wire_bytes,
                seconds,
                ..
            } => {
                self.state = State::Done;
                self.error = None;
                self.wire_bytes = wire_bytes;
                self.seconds = Some(seconds);
            }
            Event::AlreadyRecovered { volumes, .. } => {
                self.state = State::Done;
                for (volume, target) in volumes {
                    if let Some(v) = self.volume(&volume) {
                        v.target = Some(capped(&target, MAX_NAME));
                        v.phase = Some("done".into());
                        v.matched = Some(true);
                    }
                }
            }
            _ => {}
        }
    }

    /// The line `results.jsonl` keeps when the host finishes.
    pub fn result(&self) -> Value {
        let volumes: BTreeMap<&str, Value> = self
            .volumes
            .iter()
            .map(|(name, v)| {
                let value = serde_json::json!({
                    "target": v.target,
                    "sha256": v.sha256,
                    "remote_sha256": v.remote_sha256,
                    "match": v.matched,
                    "pulled_bytes": v.pulled_bytes,
                    "wire_bytes": v.wire_bytes,
                    "seconds": v.seconds,
                });
                (name.as_str(), value)
            })
            .collect();
        let outcome = match (self.state, self.last_event.as_str()) {
            (State::Done, "already_recovered") => "already_recovered",
            (State::Done, _) => "done",
            _ => "failed",
        };
        serde_json::json!({
            "host": self.host,
            "session": self.session,
            "ip": self.ip,
            "mac": self.mac,
            "source": self.source,
            "outcome": outcome,
            "volumes": volumes,
            "wire_bytes": self.wire_bytes,
            "seconds": self.seconds.unwrap_or(self.last_seen - self.first_seen),
            "error": self.error,
            "finished_at": self.last_seen,
        })
    }
}

/// Hosts in each state, in [`State::ALL`]'s order.
pub fn summary<'a>(hosts: impl Iterator<Item = &'a Host>) -> [(State, usize); 5] {
    let mut counts = State::ALL.map(|s| (s, 0));
    for h in hosts {
        if let Some(c) = counts.iter_mut().find(|(s, _)| *s == h.state) {
            c.1 += 1;
        }
    }
    counts
}

/// Now, in unix seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn progress(volume: &str, phase: &str, done: u64) -> Value {
        json!({"event": "progress", "volume": volume, "phase": phase, "done_bytes": done,
            "total_bytes": 100, "wire_bytes": done, "retries": 0, "host": "web-1",
            "source": "https://agent:1500"})
    }

    #[test]
    fn a_pull_is_folded_from_planned_to_done() {
        let mut h = Host::new("s1", "10.0.0.7", 100.0);
        assert!(!h.apply(
            &json!({"event": "boot", "version": "1", "uptime_s": 1.0,
            "secure_boot": false, "host": "web-1"}),
            100.0
        ));
        assert_eq!((h.host.as_str(), h.state), ("web-1", State::Planned));
        h.apply(
            &json!({"event": "plan", "volume": "root", "target": "/dev/sda",
            "size": 1000, "blocks": 1, "differing": 1, "zero_blocks": 0,
            "bytes_to_pull": 100, "dry_run": false}),
            101.0,
        );
        h.apply(&progress("root", "pulling", 10), 102.0);
        h.apply(&progress("root", "pulling", 60), 104.0);
        assert_eq!(h.state, State::Pulling);
        let v = &h.volumes["root"];
        assert_eq!((v.rate, v.eta_s, v.ratio()), (Some(25.0), Some(1.6), 0.6));
        assert_eq!(h.source.as_deref(), Some("https://agent:1500"));
        let done = json!({"event": "volume_done", "volume": "root", "target": "/dev/sda",
            "sha256": "ab", "remote_sha256": "ab", "pulled_blocks": 2, "zero_blocks": 0,
            "wire_bytes": 7, "retries": 0, "seconds": 3.0});
        h.apply(&done, 105.0);
        let finished = json!({"event": "done", "volumes": 1, "pulled_blocks": 2,
            "wire_bytes": 7, "retries": 0, "seconds": 5.0, "dry_run": false});
        assert!(h.apply(&finished, 106.0));
        assert!(!h.apply(&finished, 107.0), "finished once");
        let r = h.result();
        assert_eq!(r["outcome"], "done");
        assert_eq!(r["volumes"]["root"]["match"], true);
        assert_eq!(r["volumes"]["root"]["pulled_bytes"], 2 * BLOCK_SIZE);
    }

    #[test]
    fn errors_passes_and_floods_are_kept_in_bounds() {
        let mut h = Host::new("s1", "10.0.0.7", 0.0);
        assert!(h.apply(&json!({"event": "error", "message": "x".repeat(5000)}), 1.0));
        assert_eq!((h.state, h.errors), (State::Failed, 1));
        assert_eq!(h.error.as_ref().unwrap().len(), MAX_ERROR);
        assert_eq!(h.result()["outcome"], "failed");
        h.apply(&json!({"event": "pass", "pass": 3, "lag_s": 4.5}), 2.0);
        assert_eq!(
            (h.state, h.pass, h.lag_s),
            (State::InSync, Some(3), Some(4.5))
        );
        for i in 0..1000 {
            h.apply(&progress(&format!("v{i}"), "hashing", 1), 3.0);
        }
        assert_eq!(h.volumes.len(), MAX_VOLUMES);
        h.apply(
            &json!({"event": "notice", "message": "m", "host": "h".repeat(1000)}),
            4.0,
        );
        assert_eq!(h.host.len(), MAX_NAME);
    }
}
