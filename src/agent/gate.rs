//! Which connections the agent keeps: those still without an authenticated request
//! (pending) are few and the oldest make way for new ones, or for a free file when
//! the agent runs out; those that made one (a client at work) are counted apart, so
//! a flood of strangers never closes them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The connections in both groups.
pub struct Gate {
    max_pending: usize,
    max_authenticated: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    /// Pending connections, oldest first, each with its signal to close.
    pending: BTreeMap<u64, Arc<Notify>>,
    authenticated: usize,
}

/// One connection's place at the gate; gives it up on drop.
pub struct Ticket {
    gate: Arc<Gate>,
    id: u64,
    close: Arc<Notify>,
    authenticated: Mutex<bool>,
}

impl Gate {
    pub fn new(max_pending: usize, max_authenticated: usize) -> Arc<Self> {
        Arc::new(Gate {
            max_pending: max_pending.max(1),
            max_authenticated,
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection, pending; the oldest pending ones are told to close
    /// while there are more than allowed.
    pub fn admit(self: &Arc<Self>) -> Ticket {
        let close = Arc::new(Notify::new());
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        inner.pending.insert(id, close.clone());
        while inner.pending.len() > self.max_pending {
            if let Some((_, oldest)) = inner.pending.pop_first() {
                oldest.notify_one();
            }
        }
        Ticket {
            gate: self.clone(),
            id,
            close,
            authenticated: Mutex::new(false),
        }
    }

    /// Tells up to `n` of the oldest pending connections to close (to free their
    /// files); how many there were.
    pub fn close_oldest(&self, n: usize) -> usize {
        let mut inner = self.lock();
        let mut closed = 0;
        while closed < n
            && let Some((_, oldest)) = inner.pending.pop_first()
        {
            oldest.notify_one();
            closed += 1;
        }
        closed
    }
}

impl Ticket {
    /// Resolves once the gate wants this connection closed.
    pub async fn closed(&self) {
        self.close.notified().await
    }

    /// Moves the connection to the authenticated group (after its first request with
    /// the token); false when that group is full (it stays pending).
    pub fn authenticate(&self) -> bool {
        let mut done = self.authenticated.lock().unwrap_or_else(|p| p.into_inner());
        if *done {
            return true;
        }
        let mut inner = self.gate.lock();
        if inner.authenticated >= self.gate.max_authenticated {
            return false;
        }
        inner.authenticated += 1;
        inner.pending.remove(&self.id);
        *done = true;
        true
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let done = *self.authenticated.lock().unwrap_or_else(|p| p.into_inner());
        let mut inner = self.gate.lock();
        if done {
            inner.authenticated -= 1;
        } else {
            inner.pending.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Whether the gate told `t` to close.
    async fn told(t: &Ticket) -> bool {
        tokio::time::timeout(Duration::from_millis(20), t.closed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn the_oldest_pending_make_way_and_authenticated_ones_stay() {
        let gate = Gate::new(2, 1);
        let a = gate.admit();
        assert!(a.authenticate());
        let b = gate.admit();
        let c = gate.admit();
        let d = gate.admit();
        assert!(told(&b).await, "the oldest pending");
        assert!(!told(&a).await && !told(&c).await && !told(&d).await);
        // The authenticated group is full: c stays pending.
        assert!(!c.authenticate());
        drop(a);
        assert!(c.authenticate());
        assert_eq!(gate.close_oldest(5), 1);
        assert!(told(&d).await);
        drop((b, c, d));
        let inner = gate.lock();
        assert_eq!((inner.pending.len(), inner.authenticated), (0, 0));
    }
}
