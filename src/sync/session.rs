//! One pull, whoever starts it (`failback pull` or PID 1): the source opened from its
//! settings (the agent, or an EBS snapshot), the console teed with a report to a
//! collector (the agent pulled from, or the one `--report` names) under a random session
//! id, a [`Puller`] run, and the end told to the collector (an error, or a plan the
//! operator declined) before its report is finished. The plan's confirmation prompt is
//! here too, for both.

use super::{Error, Options, PlanSummary, Puller, Summary};
use crate::fingerprint::Fingerprint;
use crate::mapping::map::Mapping;
use crate::report::collector::{Collector, Stamp};
use crate::report::{Event, Reporter, Tee};
use crate::source::agent::{AgentConfig, AgentSource};
use crate::source::ebs::{Aws, EbsConfig, EbsSource};
use crate::source::{BlockSource, Source};
use anyhow::{Context, Result, anyhow};
use std::fmt::Display;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Where to pull from and how to reach it.
#[derive(Clone)]
pub struct SourceSettings {
    pub source: Source,
    /// The agent's bearer token.
    pub token: Option<String>,
    /// The agent's certificate, pinned.
    pub fingerprint: Option<Fingerprint>,
    /// Where an EBS source's region, credentials and endpoint come from.
    pub aws: AwsFrom,
    /// The EBS endpoint given, over any other.
    pub endpoint: Option<String>,
    /// The HTTPS proxy (`http://HOST:PORT`); `None`: direct.
    pub proxy: Option<String>,
    /// Limit for one request (a stalled one is abandoned, and retried).
    pub timeout: Duration,
    /// What a refusal says when the agent's token or fingerprint is missing: each
    /// role names its own way to give them.
    pub missing: Missing,
}

/// Where an EBS source's region, credentials and endpoint come from.
#[derive(Clone)]
pub enum AwsFrom {
    /// The environment (`AWS_REGION`, `AWS_ACCESS_KEY_ID`...), read through this lookup.
    Env(fn(&str) -> Option<String>),
    /// Settings given (PID 1 has no AWS environment): the preset's `[aws]`, or the
    /// operator's answers.
    Given(Option<Aws>),
}

/// The refusals for an agent without a token or a fingerprint.
#[derive(Debug, Clone, Copy)]
pub struct Missing {
    pub token: &'static str,
    pub fingerprint: &'static str,
}

impl SourceSettings {
    /// The agent's connection settings, checked.
    fn agent(&self, url: &str) -> Result<AgentConfig> {
        let token = self.token.clone().context(self.missing.token)?;
        let fingerprint = self.fingerprint.context(self.missing.fingerprint)?;
        Ok(AgentConfig {
            url: url.to_string(),
            token,
            fingerprint,
            timeout: self.timeout,
            proxy: self.proxy.clone(),
        })
    }

    /// The EBS settings, from the environment or the settings given.
    fn ebs(&self, snapshot: &str, base: &Option<String>) -> Result<EbsConfig> {
        let (snapshot, base, endpoint) =
            (snapshot.to_string(), base.clone(), self.endpoint.clone());
        let mut cfg = match &self.aws {
            AwsFrom::Env(lookup) => EbsConfig::resolve(snapshot, base, endpoint, None, lookup)?,
            AwsFrom::Given(aws) => {
                EbsConfig::resolve(snapshot, base, endpoint, aws.as_ref(), |_| None)
                    .context("the preset's [aws] section")?
            }
        };
        cfg.timeout = self.timeout;
        cfg.proxy = self.proxy.clone();
        Ok(cfg)
    }

    /// The source's URL (the agent's, or the EBS endpoint) and how far the local
    /// clock is from the source's (seconds, positive: we are behind), from the
    /// `Date` of an HTTPS answer that a wrong local clock does not stop: the
    /// agent's certificate is pinned; EBS's is checked against everything but
    /// the local time (see [`crate::net::cert_time`]).
    pub fn date_offset(&self) -> Result<(String, f64)> {
        match &self.source {
            Source::Agent(url) => {
                let source = AgentSource::new(self.agent(url)?)?;
                Ok((url.clone(), source.date_offset()?))
            }
            Source::Ebs { snapshot, base } => {
                let cfg = self.ebs(snapshot, base)?;
                let endpoint = cfg.endpoint.clone();
                Ok((endpoint, EbsSource::new(cfg)?.date_offset()?))
            }
        }
    }
}

/// How a pull that met no error ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Planned and pulled (a dry run: planned only).
    Pulled(Summary),
    /// The operator did not confirm the plan: nothing was written.
    Declined,
}

impl Outcome {
    /// The summary; a declined plan as [`Error::Declined`], for a run that ends there.
    pub fn pulled(self) -> Result<Summary, Error> {
        match self {
            Outcome::Pulled(summary) => Ok(summary),
            Outcome::Declined => Err(Error::Declined),
        }
    }
}

/// Where a session's events go besides the console.
#[derive(Debug, Clone, Default)]
pub struct ReportTo {
    /// The host's name, carried in every report; `None`: the machine's host name.
    pub host: Option<String>,
    /// A collector (`--report`, `[report]`); `None`: the agent pulled from, if any.
    pub collector: Option<AgentConfig>,
    /// Events told before the session began (PID 1's boot, drivers, disks,
    /// network): the collector gets them first.
    pub early: Arc<Mutex<Vec<Event>>>,
}

/// Limit for one report to a collector other than the source.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the end of a pull waits for its last reports to reach the collector.
const REPORT_DRAIN: Duration = Duration::from_secs(5);

/// A source opened for one pull, and the report to its collector.
pub struct Session {
    source: Arc<dyn BlockSource>,
    /// The agent pulled from: the collector unless another is given.
    agent: Option<Arc<AgentSource>>,
    /// The source as reports name it.
    name: String,
    report: ReportTo,
    /// Told on the console before the pull (an EBS endpoint over plain http).
    warnings: Vec<String>,
}

impl Session {
    /// Opens the source (no connection yet); an agent is also the collector of
    /// this session's report unless [`Session::reporting`] names another.
    pub fn open(settings: &SourceSettings) -> Result<Self> {
        let mut warnings = Vec::new();
        let (source, agent): (Arc<dyn BlockSource>, _) = match &settings.source {
            Source::Agent(url) => {
                let source = Arc::new(AgentSource::new(settings.agent(url)?)?);
                (source.clone(), Some(source))
            }
            Source::Ebs { snapshot, base } => {
                let cfg = settings.ebs(snapshot, base)?;
                warnings.extend(cfg.warning());
                (Arc::new(EbsSource::new(cfg)?), None)
            }
        };
        Ok(Session {
            source,
            agent,
            name: settings.source.to_string(),
            report: ReportTo::default(),
            warnings,
        })
    }

    /// Names the host in the reports, and the collector to send them to.
    pub fn reporting(mut self, to: ReportTo) -> Self {
        self.report = to;
        self
    }

    /// The report of this session under a random id, to the collector given, else
    /// to the agent pulled from; `None`: nobody to report to.
    fn collector(&self) -> Result<Option<Collector>> {
        let collector = match &self.report.collector {
            Some(cfg) => Some(Arc::new(AgentSource::new(cfg.clone())?)),
            None => self.agent.clone(),
        };
        let Some(collector) = collector else {
            return Ok(None);
        };
        let mut id = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| anyhow!("no randomness from the kernel for a session id"))?;
        let id = hex::encode(id);
        let stamp = Stamp {
            host: self.report.host.clone().unwrap_or_else(host_name),
            source: self.name.clone(),
        };
        let host = stamp.host.clone();
        let asked = collector.clone();
        let ask = move || {
            let _ = asked.json("/v1/cutover", Some(&serde_json::json!({ "host": host })));
        };
        let post = move |event: &serde_json::Value| {
            collector
                .report_polled(&id, event)
                .map_err(|e| e.to_string())
        };
        Ok(Some(
            Collector::new(stamp, Box::new(post)).asking(Box::new(ask)),
        ))
    }

    /// Runs `work` with the source and `console` teed with the collector's report;
    /// then tells the collector how it ended if it did not pull (the error in full,
    /// or the declined plan) and finishes that report.
    pub fn run<E: Display>(
        self,
        console: &dyn Reporter,
        work: impl FnOnce(&Running) -> Result<Outcome, E>,
    ) -> Result<Outcome, E> {
        let collector = match self.collector() {
            Ok(c) => c,
            Err(e) => {
                console.report(&Event::Notice {
                    message: format!("no report to the collector: {e:#}"),
                });
                None
            }
        };
        let mut reporters = vec![console];
        if let Some(c) = &collector {
            let early = std::mem::take(
                &mut *self
                    .report
                    .early
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            for event in &early {
                c.report(event);
            }
            reporters.push(c);
        }
        let reporter = Tee(reporters);
        for message in &self.warnings {
            reporter.report(&Event::Notice {
                message: message.clone(),
            });
        }
        let result = work(&Running {
            source: &*self.source,
            reporter: &reporter,
            collector: collector.as_ref(),
        });
        if let Some(c) = &collector {
            let message = match &result {
                Err(e) => Some(format!("{e:#}")),
                Ok(Outcome::Declined) => Some(Error::Declined.to_string()),
                Ok(Outcome::Pulled(_)) => None,
            };
            if let Some(message) = message {
                c.report(&Event::Error { message });
            }
            let dropped = c.finish(REPORT_DRAIN);
            if dropped > 0 {
                console.report(&Event::Notice {
                    message: format!(
                        "the collector was slow or down: {dropped} events of this pull's report were dropped"
                    ),
                });
            }
        }
        result
    }
}

/// The machine's host name, for reports that were given none.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h != "(none)")
        .unwrap_or_else(|| "unnamed".into())
}

/// A session under way: its source, and where its events go.
pub struct Running<'a> {
    pub source: &'a dyn BlockSource,
    pub reporter: &'a dyn Reporter,
    /// The report to the collector (the agent pulled from, unless another is
    /// given), whose answers carry cutover.
    pub collector: Option<&'a Collector>,
}

impl Running<'_> {
    /// Pulls `mapping` with a [`Puller`]; `confirm` is asked about the plan (unless
    /// unattended or a dry run), and its "no" is [`Outcome::Declined`].
    pub fn pull(
        &self,
        mapping: &Mapping,
        opts: Options,
        confirm: &mut dyn FnMut(&[PlanSummary]) -> bool,
    ) -> Result<Outcome, Error> {
        match Puller::new(self.source, self.reporter, opts).run(mapping, confirm) {
            Ok(summary) => Ok(Outcome::Pulled(summary)),
            Err(Error::Declined) => Ok(Outcome::Declined),
            Err(e) => Err(e),
        }
    }

    /// Pulls `mapping` in passes until the agent asks for cutover, then once more
    /// (see [`continuous`](super::continuous)).
    pub fn pull_continuous(
        &self,
        mapping: &Mapping,
        opts: Options,
        settings: &super::continuous::Continuous,
        confirm: &mut dyn FnMut(&[PlanSummary]) -> bool,
    ) -> Result<Outcome, Error> {
        let Some(collector) = self.collector else {
            return Err(Error::ContinuousNeedsAgent);
        };
        collector.keep_alive();
        // `cutover` typed on the console: asked of the agent for this host alone (so
        // that a --freeze applies), and taken at once.
        let typed = Arc::new(AtomicBool::new(false));
        let over = Arc::new(AtomicBool::new(false));
        let cutover = || {
            if typed.swap(false, Relaxed) {
                collector.ask_cutover();
            }
            collector.cutover_asked()
        };
        let in_sync = || {
            if settings.console {
                read_cutover(typed.clone(), over.clone());
            }
        };
        let passes = super::continuous::Passes {
            source: self.source,
            reporter: self.reporter,
            settings,
            cutover: &cutover,
            in_sync: &in_sync,
        };
        let result = passes.run(mapping, opts, confirm);
        over.store(true, Relaxed);
        match result {
            Ok(summary) => Ok(Outcome::Pulled(summary)),
            Err(Error::Declined) => Ok(Outcome::Declined),
            Err(e) => Err(e),
        }
    }
}

/// Reads stdin in the background until `cutover` is typed, it ends, or the passes
/// are `over`. It waits for input with poll, so that once over it reads nothing
/// more: what is typed then is for the next reader (PID 1's prompt after `after`).
fn read_cutover(typed: Arc<AtomicBool>, over: Arc<AtomicBool>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        while !over.load(Relaxed) {
            let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(250u16)) {
                Ok(0) => continue,
                Ok(_) if !over.load(Relaxed) => {}
                _ => return,
            }
            let mut line = String::new();
            match stdin.lock().read_line(&mut line) {
                Ok(1..) if line.trim() == "cutover" => {
                    typed.store(true, Relaxed);
                    return;
                }
                Ok(1..) => {}
                _ => return,
            }
        }
    });
}

/// Shows the plan on `out` and reads the answer from stdin; anything but "yes" declines.
pub fn confirm(out: &mut dyn Write, plans: &[PlanSummary]) -> bool {
    let _ = writeln!(out, "About to overwrite:");
    for p in plans {
        let _ = writeln!(
            out,
            "  {} <- {}: {} blocks ({:.1} MiB) to pull, {} blocks to zero",
            p.target.display(),
            p.volume,
            p.blocks_to_pull,
            p.bytes_to_pull as f64 / (1u64 << 20) as f64,
            p.zero_blocks
        );
    }
    let _ = write!(out, "Type 'yes' to write these targets: ");
    let _ = out.flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim() == "yes"
}
