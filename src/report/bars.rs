//! Console progress bars (indicatif): one per volume and a total, showing the phase
//! (hashing, pulling, verifying), bytes, rate and ETA. Other events print as text.

use super::{Event, Phase, Reporter};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A [`Reporter`] drawing bars on stderr.
pub struct Bars {
    multi: MultiProgress,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    bars: BTreeMap<String, ProgressBar>,
    total: Option<ProgressBar>,
    /// (phase, done, total) per volume, to sum up the total bar.
    seen: BTreeMap<String, (Phase, u64, u64)>,
}

impl Bars {
    pub fn new() -> Self {
        Self {
            multi: MultiProgress::new(),
            state: Mutex::new(State::default()),
        }
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>12} {msg:<9} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

impl Reporter for Bars {
    fn report(&self, event: &Event) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Progress {
                volume,
                phase,
                done_bytes,
                total_bytes,
                wire_bytes,
                ..
            } => {
                let bar = st
                    .bars
                    .entry(volume.clone())
                    .or_insert_with(|| {
                        let b = self.multi.add(ProgressBar::new(*total_bytes));
                        b.set_style(style());
                        b.set_prefix(volume.clone());
                        b
                    })
                    .clone();
                let prev = st.seen.get(volume).map(|s| s.0);
                if prev != Some(*phase) {
                    bar.reset();
                }
                bar.set_length(*total_bytes);
                bar.set_position(*done_bytes);
                bar.set_message(phase.label(*wire_bytes));
                st.seen
                    .insert(volume.clone(), (*phase, *done_bytes, *total_bytes));
                let (done, total) = st
                    .seen
                    .values()
                    .fold((0, 0), |(d, t), (_, a, b)| (d + a, t + b));
                let total_bar = st
                    .total
                    .get_or_insert_with(|| {
                        let b = self.multi.add(ProgressBar::new(total));
                        b.set_style(style());
                        b.set_prefix("total");
                        b
                    })
                    .clone();
                total_bar.set_length(total);
                total_bar.set_position(done);
            }
            Event::Done { .. } => {
                for b in st.bars.values() {
                    b.finish();
                }
                if let Some(t) = &st.total {
                    t.finish();
                }
                let _ = self.multi.println(crate::report::text(event));
            }
            Event::Pass { .. } => {
                // A continuous pull's next pass draws its own bars.
                for b in std::mem::take(&mut st.bars)
                    .into_values()
                    .chain(st.total.take())
                {
                    self.multi.remove(&b);
                }
                st.seen.clear();
                let _ = self.multi.println(crate::report::text(event));
            }
            other => {
                let _ = self.multi.println(crate::report::text(other));
            }
        }
    }
}
