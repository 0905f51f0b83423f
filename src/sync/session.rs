//! One pull, whoever starts it (`failback pull` or PID 1): the source opened from its
//! settings (the agent, or an EBS snapshot), the console teed with a report to the
//! agent under a random session id, a [`Puller`] run, and the end told to the agent (an
//! error, or a plan the operator declined) before its report is finished. The plan's
//! confirmation prompt is here too, for both.

use super::{Error, Options, PlanSummary, Puller, Summary};
use crate::fingerprint::Fingerprint;
use crate::mapping::map::Mapping;
use crate::report::agent::AgentReporter;
use crate::report::{Event, Reporter, Tee};
use crate::source::agent::{AgentConfig, AgentSource};
use crate::source::ebs::{Aws, EbsConfig, EbsSource};
use crate::source::{BlockSource, Source};
use anyhow::{Context, Result, anyhow};
use std::fmt::Display;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
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

/// A source opened for one pull, and the report to the agent (when it is one).
pub struct Session {
    source: Arc<dyn BlockSource>,
    agent: Option<AgentReporter>,
}

impl Session {
    /// Opens the source (no connection yet); an agent also gets a report of this
    /// session under a random id.
    pub fn open(settings: &SourceSettings) -> Result<Self> {
        let (source, agent): (Arc<dyn BlockSource>, _) = match &settings.source {
            Source::Agent(url) => {
                let source = Arc::new(AgentSource::new(settings.agent(url)?)?);
                let mut id = [0u8; 8];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
                    .map_err(|_| anyhow!("no randomness from the kernel for a session id"))?;
                let agent = AgentReporter::new(source.clone(), hex::encode(id));
                (source, Some(agent))
            }
            Source::Ebs { snapshot, base } => {
                let source = EbsSource::new(settings.ebs(snapshot, base)?)?;
                (Arc::new(source), None)
            }
        };
        Ok(Session { source, agent })
    }

    /// Runs `work` with the source and `console` teed with the agent's report; then
    /// tells the agent how it ended if it did not pull (the error in full, or the
    /// declined plan) and finishes that report.
    pub fn run<E: Display>(
        self,
        console: &dyn Reporter,
        work: impl FnOnce(&Running) -> Result<Outcome, E>,
    ) -> Result<Outcome, E> {
        let mut reporters = vec![console];
        if let Some(agent) = &self.agent {
            reporters.push(agent);
        }
        let reporter = Tee(reporters);
        let result = work(&Running {
            source: &*self.source,
            reporter: &reporter,
            agent: self.agent.as_ref(),
        });
        if let Some(agent) = &self.agent {
            let message = match &result {
                Err(e) => Some(format!("{e:#}")),
                Ok(Outcome::Declined) => Some(Error::Declined.to_string()),
                Ok(Outcome::Pulled(_)) => None,
            };
            if let Some(message) = message {
                agent.report(&Event::Error { message });
            }
            agent.finish();
        }
        result
    }
}

/// A session under way: its source, and where its events go.
pub struct Running<'a> {
    pub source: &'a dyn BlockSource,
    pub reporter: &'a dyn Reporter,
    /// The report to the agent, whose answers carry cutover (none from EBS).
    pub agent: Option<&'a AgentReporter>,
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
        let Some(agent) = self.agent else {
            return Err(Error::ContinuousNeedsAgent);
        };
        agent.keep_alive();
        // `cutover` typed on the console: asked of the agent for this host alone (so
        // that a --freeze applies), and taken at once.
        let typed = Arc::new(AtomicBool::new(false));
        let over = Arc::new(AtomicBool::new(false));
        let cutover = || {
            if typed.swap(false, Relaxed) {
                agent.ask_cutover(settings.host.as_deref());
            }
            agent.cutover_asked()
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
