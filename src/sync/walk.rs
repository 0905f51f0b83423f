//! A volume walked window after window (see [`window`](super::window)): planned
//! only, for a plan reviewed before any write; or pulled, each window planned while
//! its blocks are pulled (or taken as a reviewed plan kept it), written, folded into
//! the whole-volume digests and let go before the next.

use super::feed::{Failure, Side, Work};
use super::plan::{self, Planning};
use super::pull::Pulling;
use super::verify::Digests;
use super::window::Window;
use super::{Error, Volume};
use std::sync::Arc;
use std::time::Instant;

/// A window of a reviewed plan, kept with its work to be pulled as planned.
pub(super) type Kept = (Arc<Window>, Vec<Work>);

/// Plans the volume without writing, window after window. The first windows are
/// kept, with their work, while `budget` blocks remain: a small volume is pulled
/// as planned; the windows past the budget are planned again when pulled, so that
/// a reviewed plan holds no more than the budget whatever the volume's size.
pub(super) fn plan_only(v: Volume, budget: &mut u64) -> Result<Vec<Kept>, Error> {
    let (puller, job, feed) = (v.puller, v.job, v.feed);
    let failed = Failure::new(feed);
    let planning = Planning::new(v, &failed);
    let mut kept = Vec::new();
    std::thread::scope(|s| {
        planning.spawn_ticker(s);
        let mut keeping = true;
        for blocks in Window::ranges(job.info.blocks(), puller.opts.window_blocks) {
            let Some(w) = planning.window(blocks) else {
                break;
            };
            planning.plan(&w);
            if feed.stopped() {
                break;
            }
            // Counted in the plan, and let go unless kept.
            let work = feed.take_queued();
            let len = w.blocks.end - w.blocks.start;
            keeping = keeping && len <= *budget;
            if keeping {
                *budget -= len;
                kept.push((w, work));
            }
        }
        feed.close();
    });
    failed.result()?;
    Ok(kept)
}

/// Pulls the volume window after window: each window's work as a reviewed plan
/// kept it, or planned now while its blocks are pulled; the next window begins
/// once this one is written. Then the target is flushed and its digest compared.
/// `reviewed`: the bytes the reviewed plan pulls (its progress is shown from the
/// start); `None`: nobody reviewed the plan, whose hashing is shown and whose plan
/// is reported once complete.
pub(super) fn pull(v: Volume, kept: Vec<Kept>, reviewed: Option<u64>) -> Result<(), Error> {
    let started = Instant::now();
    let (puller, job, feed) = (v.puller, v.job, v.feed);
    let failed = Failure::new(feed);
    let planning = Planning::new(v, &failed);
    let pulling = Pulling { v, failed: &failed };
    let mut digests = Digests::default();
    let n = job.info.blocks();
    std::thread::scope(|s| {
        pulling.spawn(s, reviewed);
        if reviewed.is_none() {
            planning.spawn_ticker(s);
        }
        let end_of_plan = || {
            // A plan cut short by a failed pull is not reported.
            if reviewed.is_none() && !feed.stopped() {
                plan::report(v);
            }
            feed.close();
        };
        let mut kept = kept.into_iter();
        for blocks in Window::ranges(n, puller.opts.window_blocks) {
            let w = match kept.next() {
                Some((w, work)) => {
                    for work in work {
                        let bytes = job.bytes(work.blocks.iter().copied());
                        feed.push(work, bytes);
                    }
                    w
                }
                None => {
                    let Some(w) = planning.window(blocks) else {
                        break;
                    };
                    planning.plan(&w);
                    w
                }
            };
            if w.blocks.end == n {
                end_of_plan();
            }
            feed.wait_until(Side::Planning, None, || feed.idle());
            if feed.stopped() {
                break;
            }
            digests.fold(&w, v.learn);
        }
        if n == 0 {
            end_of_plan();
        }
        // A stop before the last window: the pulling threads end on it.
        feed.close();
    });
    failed.result()?;
    pulling.report_done(digests.finish(v)?, started);
    Ok(())
}
