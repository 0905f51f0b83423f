//! The pull step of the boot image: from the preset and the command line to a
//! mapping (explicit, or proposed from the disks' identity) and a [`Puller`] run
//! against the agent (reported on the console and to the agent) or an EBS snapshot.

use crate::config::{Aws, Preset, Source};
use crate::disks::Disk;
use crate::mapping::automap::{self, Choice};
use crate::mapping::{map, safety};
use crate::report::agent::AgentReporter;
use crate::report::{Event, Reporter, Tee};
use crate::source::agent::{AgentConfig, AgentSource, hex, parse_fingerprint};
use crate::source::ebs::{EbsConfig, EbsSource};
use crate::source::{BlockSource, VolumeInfo};
use crate::sync::cli::confirm;
use crate::sync::{Options, Puller, Summary};
use anyhow::{Context, Result, anyhow, bail};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The operator's look at the mapping (the interactive mode): given the volumes and
/// the proposal (or why there is none), returns the choices to pull with.
pub type Review<'a> =
    &'a mut dyn FnMut(&[VolumeInfo], Result<Vec<Choice>, String>) -> Result<Vec<Choice>>;

/// What to pull and from where, resolved from the preset and `failback.*`.
pub struct PullSettings {
    source: Source,
    token: Option<String>,
    fingerprint: Option<String>,
    map: Vec<String>,
    unattended: bool,
    aws: Option<Aws>,
    /// The HTTPS proxy (`failback.proxy=` or the preset).
    proxy: Option<String>,
}

impl PullSettings {
    /// `None` when no source is configured (nothing to pull).
    pub fn resolve(preset: &Preset) -> Option<Self> {
        Some(PullSettings {
            source: preset.source.clone()?,
            token: preset.token.clone(),
            fingerprint: preset.fingerprint.as_ref().map(|f| f.to_string()),
            map: configured_map(preset),
            unattended: preset.unattended,
            aws: preset.aws.clone(),
            proxy: preset.proxy.clone(),
        })
    }

    /// What the operator answered in the interactive mode (never unattended); `map`
    /// is the mapping configured anyway (see [`configured_map`]), else empty.
    pub fn interactive(
        source: Source,
        token: Option<String>,
        fingerprint: Option<String>,
        aws: Option<Aws>,
        map: Vec<String>,
        proxy: Option<String>,
    ) -> Self {
        PullSettings {
            source,
            token,
            fingerprint,
            map,
            unattended: false,
            aws,
            proxy,
        }
    }

    /// The agent's connection settings, checked.
    fn agent(&self, url: &str) -> Result<AgentConfig> {
        let token = self
            .token
            .clone()
            .context("no token for the agent: set failback.token= or token in the preset")?;
        let fingerprint = self
            .fingerprint
            .as_deref()
            .and_then(parse_fingerprint)
            .context("no valid agent fingerprint: set failback.fingerprint= or fingerprint in the preset")?;
        Ok(AgentConfig {
            url: url.to_string(),
            token,
            fingerprint,
            timeout: Duration::from_secs(60),
            proxy: self.proxy.clone(),
        })
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

    /// The EBS settings: region, credentials and endpoint from the preset's
    /// `[aws]` (PID 1 has no AWS environment), the proxy from `failback.proxy=`.
    fn ebs(&self, snapshot: &str, base: &Option<String>) -> Result<EbsConfig> {
        let mut cfg = EbsConfig::resolve(
            snapshot.to_string(),
            base.clone(),
            None,
            self.aws.as_ref(),
            |_| None,
        )
        .context("the preset's [aws] section")?;
        cfg.proxy = self.proxy.clone();
        Ok(cfg)
    }

    /// Maps (explicitly or by identity), plans, confirms on the console (unless
    /// unattended), pulls and verifies, from the agent or an EBS snapshot.
    pub fn run(&self, console: &dyn Reporter, disks: &[Disk]) -> Result<Summary> {
        self.run_reviewed(console, disks, None)
    }

    /// [`run`](Self::run), with `review` asked about the mapping before the plan.
    pub fn run_reviewed(
        &self,
        console: &dyn Reporter,
        disks: &[Disk],
        review: Option<Review>,
    ) -> Result<Summary> {
        let (snapshot, base) = match &self.source {
            Source::Agent(url) => return self.run_agent(url, console, disks, review),
            Source::Ebs { snapshot, base } => (snapshot, base),
        };
        let source = EbsSource::new(self.ebs(snapshot, base)?)?;
        self.pull(&source, console, disks, review)
    }

    fn run_agent(
        &self,
        url: &str,
        console: &dyn Reporter,
        disks: &[Disk],
        review: Option<Review>,
    ) -> Result<Summary> {
        let source = Arc::new(AgentSource::new(self.agent(url)?)?);
        let mut id = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| anyhow!("no randomness from the kernel for a session id"))?;
        let agent = AgentReporter::new(source.clone(), hex(&id));
        let result = self.pull(&*source, &Tee(vec![console, &agent]), disks, review);
        if let Err(e) = &result {
            agent.report(&Event::Error {
                message: format!("{e:#}"),
            });
        }
        agent.finish();
        result
    }

    fn pull(
        &self,
        source: &dyn BlockSource,
        reporter: &dyn Reporter,
        disks: &[Disk],
        review: Option<Review>,
    ) -> Result<Summary> {
        let volumes = || {
            source
                .volumes()
                .map_err(|e| anyhow!("cannot list the volumes of {}: {e}", self.source))
        };
        let choices = match review {
            None => {
                let choices = if self.map.is_empty() {
                    automap::propose(&volumes()?, disks, Path::new("/dev"))?
                } else {
                    automap::explicit(&map::parse(&self.map)?)
                };
                reporter.report(&Event::Mapping {
                    choices: choices.clone(),
                });
                choices
            }
            Some(review) => {
                // The proposal is shown (or why there is none), then the operator's
                // answer, if it differs, before anything is planned.
                let volumes = volumes()?;
                let proposal = if self.map.is_empty() {
                    automap::propose(&volumes, disks, Path::new("/dev")).map_err(|e| e.to_string())
                } else {
                    map::parse(&self.map)
                        .map(|m| automap::explicit(&m))
                        .map_err(|e| e.to_string())
                };
                if let Ok(proposed) = &proposal {
                    reporter.report(&Event::Mapping {
                        choices: proposed.clone(),
                    });
                }
                let choices = review(&volumes, proposal.clone())?;
                if proposal.as_ref() != Ok(&choices) {
                    reporter.report(&Event::Mapping {
                        choices: choices.clone(),
                    });
                }
                choices
            }
        };
        refuse_boot_medium(&choices, disks)?;
        let mapping = automap::to_mapping(&choices, self.unattended)?;
        let opts = Options {
            unattended: self.unattended,
            ..Options::default()
        };
        let summary = Puller::new(source, reporter, opts).run(&mapping, &mut |plans| {
            confirm(&mut std::io::stdout(), plans)
        })?;
        Ok(summary)
    }
}

/// The mapping configured (`failback.map=` over the preset's `[map]`), as `--map` values.
pub fn configured_map(preset: &Preset) -> Vec<String> {
    preset
        .map
        .iter()
        .map(|(volume, target)| format!("{volume}={target}"))
        .collect()
}

/// The image's own boot medium (a USB stick holding it) is never a target, whatever
/// the mapping says, nor is any partition of it.
fn refuse_boot_medium(choices: &[Choice], disks: &[Disk]) -> Result<()> {
    let sys = Path::new("/sys");
    let whole = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .filter(|m| m.file_type().is_block_device())
            .map(|m| safety::whole_disk(sys, (libc::major(m.rdev()), libc::minor(m.rdev()))))
    };
    for disk in disks.iter().filter(|d| d.boot_medium) {
        let medium = whole(&Path::new("/dev").join(&disk.name));
        for c in choices {
            if let Some(target) = &c.target
                && medium.is_some()
                && whole(target) == medium
            {
                bail!(
                    "volume {} is mapped to {}, the medium this image booted from: map another disk",
                    c.volume,
                    target.display()
                );
            }
        }
    }
    Ok(())
}
