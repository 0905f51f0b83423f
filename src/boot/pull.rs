//! The pull step of the boot image: from the preset and the command line to a
//! [`Puller`] run against the agent, reported on the console and to the agent.

use crate::config::{Preset, Source};
use crate::events::{Event, Reporter, Tee};
use crate::source::agent::{AgentConfig, AgentReporter, AgentSource, hex, parse_fingerprint};
use crate::sync::cli::confirm;
use crate::sync::{Options, Puller, Summary, map};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What to pull and from where, resolved from the preset and `failback.*`.
pub struct PullSettings {
    source: Source,
    token: Option<String>,
    fingerprint: Option<String>,
    map: Vec<String>,
    unattended: bool,
    /// The HTTPS proxy (`failback.proxy=` or the preset).
    proxy: Option<String>,
}

impl PullSettings {
    /// `None` when no source is configured (nothing to pull).
    pub fn resolve(preset: &Preset, params: &BTreeMap<String, String>) -> Result<Option<Self>> {
        let source = match params.get("source") {
            Some(s) => Some(Source::parse(s.clone()).map_err(|e| anyhow!("failback.source: {e}"))?),
            None => preset.source.clone(),
        };
        let Some(source) = source else {
            return Ok(None);
        };
        let map = match params.get("map") {
            Some(m) => vec![m.clone()],
            None => preset
                .map
                .iter()
                .map(|(volume, target)| format!("{volume}={target}"))
                .collect(),
        };
        Ok(Some(PullSettings {
            source,
            token: params
                .get("token")
                .cloned()
                .or_else(|| preset.token.clone()),
            fingerprint: params
                .get("fingerprint")
                .cloned()
                .or_else(|| preset.fingerprint.as_ref().map(|f| f.to_string())),
            map,
            unattended: params
                .get("unattended")
                .map_or(preset.unattended, |v| v != "0"),
            proxy: params
                .get("proxy")
                .cloned()
                .or_else(|| preset.proxy.clone()),
        }))
    }

    /// The agent's connection settings, checked.
    fn agent(&self) -> Result<AgentConfig> {
        let Source::Agent(url) = &self.source else {
            bail!(
                "{}: EBS sources are not built into the boot image yet; use the agent (https://HOST:PORT)",
                self.source
            );
        };
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
            url: url.clone(),
            token,
            fingerprint,
            timeout: Duration::from_secs(60),
            proxy: self.proxy.clone(),
        })
    }

    /// The source's URL and how far the local clock is from the source's
    /// (seconds, from the `Date` of its HTTPS answer).
    pub fn date_offset(&self) -> Result<(String, f64)> {
        let cfg = self.agent()?;
        let url = cfg.url.clone();
        let source = AgentSource::new(cfg)?;
        Ok((url, source.date_offset()?))
    }

    /// Plans, confirms on the console (unless unattended), pulls and verifies.
    pub fn run(&self, console: &dyn Reporter) -> Result<Summary> {
        let agent_config = self.agent()?;
        if self.map.is_empty() {
            bail!(
                "no mapping of volumes to local disks: set failback.map=VOLUME=/dev/DISK,... or [map] in the preset"
            );
        }
        let mapping = map::parse(&self.map)?;
        let source = Arc::new(AgentSource::new(agent_config)?);
        let mut id = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| anyhow!("no randomness from the kernel for a session id"))?;
        let agent = AgentReporter::new(source.clone(), hex(&id));
        let tee = Tee(vec![console, &agent]);
        let opts = Options {
            unattended: self.unattended,
            ..Options::default()
        };
        let result = Puller::new(&*source, &tee, opts).run(&mapping, &mut |plans| {
            confirm(&mut std::io::stdout(), plans)
        });
        if let Err(e) = &result {
            agent.report(&Event::Error {
                message: e.to_string(),
            });
        }
        agent.finish();
        Ok(result?)
    }
}
