//! The report to a collector: a pull's events, each stamped with the host's name and
//! the pull's source, posted to a failback agent (its own, or any with `--report`) from
//! a background thread. Best effort: a bounded queue that [`Reporter::report`] never
//! waits on, progress at most every [`PROGRESS_EVERY`] per volume, and what the queue
//! could not hold counted (see [`Collector::finish`]).
//!
//! The collector's answers carry cutover (continuous failback): a continuous pull
//! ([`Collector::keep_alive`]) posts its last event again when it said nothing for
//! [`KEEP_ALIVE`], so that it hears the answer while it waits between passes too.

use super::{Event, Phase, Reporter};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Progress of one volume is sent at most this often.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Events waiting to be posted; past this, events are dropped (and counted).
const QUEUE: usize = 128;

/// Posts one stamped event to the collector: whether its answer asks for cutover; an
/// error is a short reason.
pub type Post = Box<dyn Fn(&Value) -> Result<bool, String> + Send>;

/// A continuous pull posts at least this often (the issue asks for every 2 s).
pub const KEEP_ALIVE: Duration = Duration::from_millis(1500);

/// What the pull and the sending thread share.
#[derive(Default)]
struct Link {
    cutover: AtomicBool,
    keep_alive: AtomicBool,
}

/// Who reports: the fields every posted event carries besides the event's own.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// The host's name (`--host`, `failback.host=`, else the machine's host name).
    pub host: String,
    /// Where the pull pulls from (`https://agent:1500`, `ebs://snap-...`).
    pub source: String,
}

/// Forwards events to a collector without ever slowing the pull.
pub struct Collector {
    stamp: Stamp,
    tx: Mutex<Option<SyncSender<Value>>>,
    /// Said when the sending thread has posted everything and stopped.
    stopped: Mutex<Receiver<()>>,
    /// When each volume's progress was last queued, and its phase then.
    last_progress: Mutex<HashMap<String, (Instant, Phase)>>,
    dropped: AtomicU64,
    link: Arc<Link>,
    /// Asks the collector for cutover of this host (see [`Collector::asking`]).
    ask: Option<Ask>,
}

/// Asks the collector for cutover of this pull's host.
pub type Ask = Box<dyn Fn() + Send + Sync>;

impl Collector {
    /// Starts the sending thread; `post` sends one event.
    pub fn new(stamp: Stamp, post: Post) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Value>(QUEUE);
        let (stopped_tx, stopped) = mpsc::channel();
        let link = Arc::new(Link::default());
        let shared = link.clone();
        std::thread::spawn(move || {
            let mut last: Option<(Instant, Value)> = None;
            loop {
                let event = match rx.recv_timeout(Duration::from_millis(250)) {
                    Ok(event) => event,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    // The collector takes the same event again as a sign of life.
                    Err(mpsc::RecvTimeoutError::Timeout) => match &last {
                        Some((at, event))
                            if shared.keep_alive.load(Ordering::Relaxed)
                                && at.elapsed() >= KEEP_ALIVE =>
                        {
                            event.clone()
                        }
                        _ => continue,
                    },
                };
                // Best effort: a collector that is down loses this event only.
                if let Ok(true) = post(&event) {
                    shared.cutover.store(true, Ordering::Relaxed);
                }
                last = Some((Instant::now(), event));
            }
            let _ = stopped_tx.send(());
        });
        Collector {
            stamp,
            tx: Mutex::new(Some(tx)),
            stopped: Mutex::new(stopped),
            last_progress: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            link,
            ask: None,
        }
    }

    /// With `ask` telling the collector when cutover is typed here (so that the agent
    /// knows, and freezes).
    pub fn asking(mut self, ask: Ask) -> Self {
        self.ask = Some(ask);
        self
    }

    /// From now on, posts at least every [`KEEP_ALIVE`] (a continuous pull).
    pub fn keep_alive(&self) {
        self.link.keep_alive.store(true, Ordering::Relaxed);
    }

    /// Whether the collector's answer asked this pull to cut over, or
    /// [`ask_cutover`](Self::ask_cutover) did.
    pub fn cutover_asked(&self) -> bool {
        self.link.cutover.load(Ordering::Relaxed)
    }

    /// Cutover asked here (typed on the console): told to the collector, and taken
    /// at once.
    pub fn ask_cutover(&self) {
        if let Some(ask) = &self.ask {
            ask();
        }
        self.link.cutover.store(true, Ordering::Relaxed);
    }

    /// The event as posted: its JSON with `host` and `source` added.
    pub fn stamped(&self, event: &Event) -> Value {
        let mut json = serde_json::to_value(event).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut json {
            map.insert("host".into(), self.stamp.host.clone().into());
            map.insert("source".into(), self.stamp.source.clone().into());
        }
        json
    }

    /// Whether this progress event is due: its volume's last one is old enough, or
    /// of another phase, or this one ends its phase (bars end drawn full).
    fn progress_due(&self, event: &Event) -> bool {
        let Event::Progress {
            volume,
            phase,
            done_bytes,
            total_bytes,
            ..
        } = event
        else {
            return true;
        };
        let mut last = self
            .last_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let due = match last.get(volume) {
            Some((t, p)) if p == phase => {
                now.duration_since(*t) >= PROGRESS_EVERY || done_bytes >= total_bytes
            }
            _ => true,
        };
        if due {
            last.insert(volume.clone(), (now, *phase));
        }
        due
    }

    /// Posts what is queued for at most `within`, then stops; returns how many
    /// events were dropped for want of room (the collector slow or down).
    pub fn finish(&self, within: Duration) -> u64 {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let _ = self
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv_timeout(within);
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Reporter for Collector {
    fn report(&self, event: &Event) {
        if !self.progress_due(event) {
            return;
        }
        let json = self.stamped(event);
        let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = tx.as_ref()
            && let Err(TrySendError::Full(_)) = tx.try_send(json)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            host: "rack1-07".into(),
            source: "ebs://snap-1".into(),
        }
    }

    fn progress(volume: &str, done: u64) -> Event {
        Event::Progress {
            volume: volume.into(),
            phase: Phase::Pulling,
            done_bytes: done,
            total_bytes: 10,
            wire_bytes: done,
            retries: 0,
        }
    }

    #[test]
    fn events_carry_the_host_and_progress_is_thinned_per_volume() {
        let posted = Arc::new(Mutex::new(Vec::<Value>::new()));
        let seen = posted.clone();
        let c = Collector::new(
            stamp(),
            Box::new(move |v| {
                seen.lock().unwrap().push(v.clone());
                Ok(false)
            }),
        );
        for done in 0..5 {
            c.report(&progress("a", done));
            c.report(&progress("b", done));
        }
        // A new phase, and the end of one, always go.
        let hashing = Event::Progress {
            volume: "a".into(),
            phase: Phase::Hashing,
            done_bytes: 1,
            total_bytes: 10,
            wire_bytes: 0,
            retries: 0,
        };
        c.report(&hashing);
        c.report(&progress("a", 5));
        c.report(&progress("a", 6));
        c.report(&progress("a", 10));
        c.report(&Event::Notice {
            message: "hi".into(),
        });
        assert_eq!(c.finish(Duration::from_secs(5)), 0);
        let posted = posted.lock().unwrap();
        let kinds: Vec<String> = posted
            .iter()
            .map(|v| {
                format!(
                    "{} {} {} {}",
                    v["event"], v["volume"], v["phase"], v["done_bytes"]
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                r#""progress" "a" "pulling" 0"#,
                r#""progress" "b" "pulling" 0"#,
                // A new phase, again a new phase, the end of one.
                r#""progress" "a" "hashing" 1"#,
                r#""progress" "a" "pulling" 5"#,
                r#""progress" "a" "pulling" 10"#,
                r#""notice" null null null"#,
            ]
        );
        assert!(
            posted
                .iter()
                .all(|v| v["host"] == "rack1-07" && v["source"] == "ebs://snap-1")
        );
    }

    #[test]
    fn a_collector_that_hangs_never_holds_the_reporter_up() {
        let (release, hold) = mpsc::channel::<()>();
        let hold = Mutex::new(hold);
        let c = Collector::new(
            stamp(),
            Box::new(move |_| {
                let _ = hold.lock().unwrap().recv();
                Err("hung".into())
            }),
        );
        let start = Instant::now();
        let events = 1000;
        for i in 0..events {
            c.report(&Event::Notice {
                message: i.to_string(),
            });
        }
        assert!(start.elapsed() < Duration::from_secs(1));
        // One event is being posted, QUEUE wait; the rest were dropped and counted.
        let dropped = c.finish(Duration::from_millis(100));
        assert!(
            (events - QUEUE as u64 - 1..=events - QUEUE as u64).contains(&dropped),
            "{dropped}"
        );
        drop(release);
    }
}
