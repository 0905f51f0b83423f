//! Reports: what the client tells the operator (and automation) it is doing.
//!
//! Library code never prints: it hands an [`Event`] to a [`Reporter`]. The console
//! reporter prints one JSON object per line (`failback.progress=json`) or a readable
//! line; the progress bars and the report to a collector implement the same trait.

pub mod bars;
pub mod collector;
mod console;
mod event;

pub use console::{ConsoleReporter, mib, progress_amounts, text};
pub use event::{Event, FinalDigest, Phase};

/// Where events go.
pub trait Reporter: Send + Sync {
    fn report(&self, event: &Event);
}

/// Sends every event to several reporters (console and collector).
pub struct Tee<'a>(pub Vec<&'a dyn Reporter>);

impl Reporter for Tee<'_> {
    fn report(&self, event: &Event) {
        for r in &self.0 {
            r.report(event);
        }
    }
}

/// Output style on the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Json,
    Text,
}
