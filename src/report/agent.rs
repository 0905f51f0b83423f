//! The agent report: the client's events, sent to the agent it pulls from so that
//! the operator sees them on the agent's console.

use super::{Event, Reporter};
use crate::source::agent::AgentSource;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Forwards events to the agent from a background thread, so the operator sees them
/// on the agent's console. Progress events are sent at most once a second; delivery
/// is best effort and never slows the pull. The agent's answers say when it asks
/// for cutover; a continuous pull ([`keep_alive`](Self::keep_alive)) sends its last
/// event again when it said nothing for [`KEEP_ALIVE`], so that it hears that answer
/// while it waits between passes too.
pub struct AgentReporter {
    tx: Mutex<Option<mpsc::Sender<Event>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    link: Arc<Link>,
    source: Arc<AgentSource>,
}

/// What the client and its sending thread share.
#[derive(Default)]
struct Link {
    cutover: AtomicBool,
    keep_alive: AtomicBool,
}

/// A continuous client posts at least this often (the issue asks for every 2 s).
pub const KEEP_ALIVE: Duration = Duration::from_millis(1500);

impl AgentReporter {
    pub fn new(source: Arc<AgentSource>, session: String) -> Self {
        let (tx, rx) = mpsc::channel::<Event>();
        let link = Arc::new(Link::default());
        let (shared, agent) = (link.clone(), source.clone());
        let thread = std::thread::spawn(move || {
            let mut last_progress: Option<Instant> = None;
            let mut pending: Option<Event> = None;
            let mut last_sent: Option<(Instant, Event)> = None;
            let send = |ev: Event, last_sent: &mut Option<(Instant, Event)>| {
                if let Ok(true) = source.report_polled(&session, &ev) {
                    shared.cutover.store(true, Relaxed);
                }
                *last_sent = Some((Instant::now(), ev));
            };
            loop {
                let ev = match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(ev) => Some(ev),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                };
                let now = Instant::now();
                let due = last_progress.is_none_or(|t| now - t >= Duration::from_secs(1));
                match ev {
                    Some(ev @ Event::Progress { .. }) => pending = Some(ev),
                    Some(ev) => {
                        if let Some(p) = pending.take() {
                            send(p, &mut last_sent);
                        }
                        send(ev, &mut last_sent);
                        continue;
                    }
                    None => {}
                }
                if due && let Some(p) = pending.take() {
                    send(p, &mut last_sent);
                    last_progress = Some(now);
                }
                // The agent takes the same event again as a sign of life.
                if shared.keep_alive.load(Relaxed)
                    && let Some((at, ev)) = &last_sent
                    && at.elapsed() >= KEEP_ALIVE
                {
                    let ev = ev.clone();
                    send(ev, &mut last_sent);
                }
            }
        });
        Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            link,
            source: agent,
        }
    }

    /// From now on, posts at least every [`KEEP_ALIVE`] (a continuous pull).
    pub fn keep_alive(&self) {
        self.link.keep_alive.store(true, Relaxed);
    }

    /// Cutover asked from this client (typed on its console): of the agent for
    /// `host` (so that the agent knows, and freezes), and here at once.
    pub fn ask_cutover(&self, host: Option<&str>) {
        if let Some(host) = host {
            let _ = self
                .source
                .json("/v1/cutover", Some(&serde_json::json!({ "host": host })));
        }
        self.link.cutover.store(true, Relaxed);
    }

    /// Whether an answer of the agent asked this client to cut over.
    pub fn cutover_asked(&self) -> bool {
        self.link.cutover.load(Relaxed)
    }

    /// Sends what is queued and stops the background thread.
    pub fn finish(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Reporter for AgentReporter {
    fn report(&self, event: &Event) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(event.clone());
        }
    }
}
