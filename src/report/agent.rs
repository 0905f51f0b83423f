//! The agent report: the client's events, sent to the agent it pulls from so that
//! the operator sees them on the agent's console.

use super::{Event, Reporter};
use crate::source::agent::AgentSource;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Forwards events to the agent from a background thread, so the operator sees them
/// on the agent's console. Progress events are sent at most once a second; delivery
/// is best effort and never slows the pull.
pub struct AgentReporter {
    tx: Mutex<Option<mpsc::Sender<Event>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AgentReporter {
    pub fn new(source: Arc<AgentSource>, session: String) -> Self {
        let (tx, rx) = mpsc::channel::<Event>();
        let thread = std::thread::spawn(move || {
            let mut last_progress: Option<Instant> = None;
            let mut pending: Option<Event> = None;
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
                            let _ = source.report(&session, &p);
                        }
                        let _ = source.report(&session, &ev);
                        continue;
                    }
                    None => {}
                }
                if due && let Some(p) = pending.take() {
                    let _ = source.report(&session, &p);
                    last_progress = Some(now);
                }
            }
        });
        Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }
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
