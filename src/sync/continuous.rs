//! Continuous failback: passes until cutover. The workload keeps running at the
//! source while each pass plans and pulls what differs; blocks that change under a
//! pass are left for the next one (a *live* pass, see [`Options::live`]). Between
//! passes the client waits `interval`, listening for cutover. Once cutover is asked
//! (the workload stopped), one final, strict pass runs: every block checked, the
//! whole volume verified; only then are the targets a consistent copy.

use super::{Error, Options, PlanSummary, Puller, Summary};
use crate::mapping::map::Mapping;
use crate::report::{Event, FinalDigest, Reporter};
use crate::source::{BlockSource, VolumeInfo};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a continuous pull runs.
#[derive(Debug, Clone)]
pub struct Continuous {
    /// The wait between two passes.
    pub interval: Duration,
    /// This machine's name, carried by the pass events (the agent's `--host`).
    pub host: Option<String>,
    /// Typing `cutover` on stdin (the console), once in sync, asks for it.
    pub console: bool,
}

/// The default wait between passes.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// How often the wait between passes looks for cutover.
const LOOK: Duration = Duration::from_millis(100);

/// Passes of one continuous pull.
pub struct Passes<'a> {
    pub source: &'a dyn BlockSource,
    pub reporter: &'a dyn Reporter,
    pub settings: &'a Continuous,
    /// Whether cutover was asked.
    pub cutover: &'a dyn Fn() -> bool,
    /// Called once the first pass is over: the targets are in sync from then on.
    pub in_sync: &'a dyn Fn(),
}

impl Passes<'_> {
    /// Runs passes until cutover, then the final one; returns what all passes
    /// did together (nothing changed: the targets held the volumes already). The first pass is reviewed as `opts` says; the later ones pull the
    /// plan the operator accepted then, unasked.
    pub fn run(
        &self,
        mapping: &Mapping,
        opts: Options,
        confirm: &mut dyn FnMut(&[PlanSummary]) -> bool,
    ) -> Result<Summary, Error> {
        let sizes = sizes(&self.source.volumes()?);
        let mut total = Summary::default();
        for pass in 1.. {
            // Cutover asked before a pass began: the workload is stopped, and this
            // pass makes the consistent copy.
            let last = (self.cutover)();
            check_sizes(&sizes, &self.source.volumes()?)?;
            let opts = Options {
                unattended: opts.unattended || pass > 1,
                live: !last,
                ..opts.clone()
            };
            let started = Instant::now();
            let finals = Finals {
                inner: self.reporter,
                volumes: Mutex::default(),
            };
            let summary = Puller::new(self.source, &finals, opts).run(mapping, confirm)?;
            let seconds = started.elapsed().as_secs_f64();
            total.volumes = summary.volumes;
            total.pulled_blocks += summary.pulled_blocks;
            total.zero_blocks += summary.zero_blocks;
            total.wire_bytes += summary.wire_bytes;
            total.retries += summary.retries;
            if last {
                let volumes = finals.volumes.into_inner().unwrap_or_default();
                self.reporter.report(&Event::CutoverDone {
                    pass,
                    seconds,
                    consistent: true,
                    matched: volumes.iter().all(|v| v.sha256 == v.remote_sha256),
                    volumes,
                    host: self.settings.host.clone(),
                });
                return Ok(total);
            }
            self.reporter.report(&Event::Pass {
                pass,
                seconds,
                pulled_blocks: summary.pulled_blocks,
                bytes: summary.wire_bytes,
                lag_s: started.elapsed().as_secs_f64(),
                consistent: false,
                host: self.settings.host.clone(),
            });
            if pass == 1 {
                self.reporter.report(&Event::Notice {
                    message: "the targets are not a consistent copy until cutover: stop the \
                              workload (or serve with --freeze), then run `failback cutover`"
                        .into(),
                });
                (self.in_sync)();
            }
            self.wait();
        }
        unreachable!("passes go on until cutover")
    }

    /// Waits `interval`, or less if cutover is asked.
    fn wait(&self) {
        let until = Instant::now() + self.settings.interval;
        while !(self.cutover)() && Instant::now() < until {
            std::thread::sleep(LOOK.min(until.saturating_duration_since(Instant::now())));
        }
    }
}

/// Each volume's size.
fn sizes(volumes: &[VolumeInfo]) -> BTreeMap<String, u64> {
    volumes.iter().map(|v| (v.id.clone(), v.size)).collect()
}

/// Refuses a volume that changed size, or went, since the first pass.
fn check_sizes(first: &BTreeMap<String, u64>, now: &[VolumeInfo]) -> Result<(), Error> {
    let now = sizes(now);
    for (volume, &was) in first {
        match now.get(volume) {
            None => {
                return Err(Error::VolumeGone {
                    volume: volume.clone(),
                });
            }
            Some(&size) if size != was => {
                return Err(Error::SizeChanged {
                    volume: volume.clone(),
                    was,
                    now: size,
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Passes every event on, keeping each volume's final digests.
struct Finals<'a> {
    inner: &'a dyn Reporter,
    volumes: Mutex<Vec<FinalDigest>>,
}

impl Reporter for Finals<'_> {
    fn report(&self, event: &Event) {
        if let Event::VolumeDone {
            volume,
            target,
            sha256,
            remote_sha256,
            ..
        } = event
        {
            self.volumes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(FinalDigest {
                    volume: volume.clone(),
                    target: target.clone(),
                    sha256: sha256.clone(),
                    remote_sha256: remote_sha256.clone(),
                });
        }
        self.inner.report(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BLOCK_SIZE;
    use crate::block::Hash;
    use crate::mapping::map::MapTo;
    use crate::source::{Received, SourceError};
    use std::sync::RwLock;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    /// A volume that a writer changes: block `k` of pass `p` is rewritten while
    /// blocks are fetched (after their hashes were given), until the writer stops.
    struct Live {
        data: RwLock<Vec<u8>>,
        writing: std::sync::atomic::AtomicBool,
        fetches: AtomicU64,
        size: AtomicU64,
    }

    impl Live {
        fn block(&self, i: u64) -> Vec<u8> {
            let d = self.data.read().unwrap();
            let a = (i * BLOCK_SIZE) as usize;
            d[a..(a + BLOCK_SIZE as usize).min(d.len())].to_vec()
        }
    }

    impl BlockSource for Live {
        fn volumes(&self) -> Result<Vec<VolumeInfo>, SourceError> {
            Ok(vec![VolumeInfo {
                id: "v".into(),
                size: self.size.load(Relaxed),
                block_size: BLOCK_SIZE,
                gpt_guid: None,
                mbr_id: None,
            }])
        }
        fn hashes(&self, _: &str, start: u64, count: u64) -> Result<Vec<Hash>, SourceError> {
            Ok((start..start + count)
                .map(|i| crate::block::block_hash(&self.block(i)))
                .collect())
        }
        fn blocks(
            &self,
            _: &str,
            indexes: &[u64],
            sink: &mut dyn FnMut(u64, &[u8], u64) -> Received,
        ) -> Result<(), SourceError> {
            for &i in indexes {
                // The writer changes every third block fetched just before it is sent.
                let n = self.fetches.fetch_add(1, Relaxed);
                if self.writing.load(Relaxed) && n.is_multiple_of(3) {
                    let mut d = self.data.write().unwrap();
                    d[(i * BLOCK_SIZE) as usize] = n as u8 ^ 0x5a;
                }
                let b = self.block(i);
                if let Received::Stop = sink(i, &b, b.len() as u64) {
                    break;
                }
            }
            Ok(())
        }
    }

    /// Records the events.
    #[derive(Default)]
    struct Events(Mutex<Vec<Event>>);
    impl Reporter for Events {
        fn report(&self, e: &Event) {
            if !matches!(e, Event::Progress { .. }) {
                self.0.lock().unwrap().push(e.clone());
            }
        }
    }

    fn live(blocks: usize) -> Live {
        let data: Vec<u8> = (0..blocks * BLOCK_SIZE as usize)
            .map(|i| (i % 253) as u8)
            .collect();
        Live {
            size: AtomicU64::new(data.len() as u64),
            data: RwLock::new(data),
            writing: true.into(),
            fetches: AtomicU64::new(0),
        }
    }

    #[test]
    fn passes_leave_changed_blocks_and_cutover_makes_the_copy_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t.img");
        std::fs::write(&target, vec![0u8; 8 * BLOCK_SIZE as usize]).unwrap();
        let src = live(8);
        let events = Events::default();
        let mut map = Mapping::new();
        map.insert("v".into(), MapTo::path(target.clone()));
        // Cutover is asked after the third pass; the writer stopped with it.
        let cutover = || {
            let n = events
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e, Event::Pass { .. }))
                .count();
            if n >= 3 {
                src.writing.store(false, Relaxed);
            }
            n >= 3
        };
        let settings = Continuous {
            interval: Duration::from_millis(10),
            host: Some("h1".into()),
            console: false,
        };
        let opts = Options {
            unattended: true,
            max_attempts: 2,
            ..Options::default()
        };
        Passes {
            source: &src,
            reporter: &events,
            settings: &settings,
            cutover: &cutover,
            in_sync: &|| {},
        }
        .run(&map, opts, &mut |_| unreachable!())
        .unwrap();
        assert_eq!(
            std::fs::read(&target).unwrap(),
            *src.data.read().unwrap(),
            "the target holds the volume after cutover"
        );
        let events = events.0.into_inner().unwrap();
        let pass: Vec<(u64, bool, Option<String>)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Pass {
                    pass,
                    consistent,
                    host,
                    ..
                } => Some((*pass, *consistent, host.clone())),
                _ => None,
            })
            .collect();
        let h = Some("h1".to_string());
        assert_eq!(
            pass,
            [
                (1, false, h.clone()),
                (2, false, h.clone()),
                (3, false, h.clone())
            ]
        );
        match events.last() {
            Some(Event::CutoverDone {
                pass: 4,
                consistent: true,
                matched: true,
                volumes,
                host,
                ..
            }) => {
                assert_eq!(volumes.len(), 1);
                assert_eq!(host, &h);
            }
            other => panic!("expected cutover_done last, got {other:?}"),
        }
    }

    #[test]
    fn a_volume_that_changes_size_between_passes_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t.img");
        std::fs::write(&target, vec![0u8; 4 * BLOCK_SIZE as usize]).unwrap();
        let src = live(2);
        src.writing.store(false, Relaxed);
        let mut map = Mapping::new();
        map.insert("v".into(), MapTo::path(target));
        let events = Events::default();
        // After the first pass, the volume grows.
        let cutover = || {
            let n = events.0.lock().unwrap().len();
            if n > 0 {
                src.size.store(3 * BLOCK_SIZE, Relaxed);
            }
            false
        };
        let settings = Continuous {
            interval: Duration::from_millis(1),
            host: None,
            console: false,
        };
        let opts = Options {
            unattended: true,
            ..Options::default()
        };
        let err = Passes {
            source: &src,
            reporter: &events,
            settings: &settings,
            cutover: &cutover,
            in_sync: &|| {},
        }
        .run(&map, opts, &mut |_| unreachable!())
        .unwrap_err();
        assert!(matches!(err, Error::SizeChanged { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("'v'") && text.contains("1048576") && text.contains("1572864"),
            "{text}"
        );
    }
}
