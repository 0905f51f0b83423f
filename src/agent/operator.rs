//! The agent as an operator's command (`failback status`, `failback cutover`) reaches
//! it: its URL, token and pinned certificate, each refused in one line naming the fix.

use crate::fingerprint::Fingerprint;
use crate::source::agent::{AgentConfig, AgentSource};
use anyhow::{Context, Result, bail};
use std::time::Duration;

/// How an operator's command names the agent: its URL, token and certificate.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The agent (https://HOST:PORT).
    #[arg(long, env = "FAILBACK_SOURCE")]
    pub source: String,
    /// The agent's token (better passed as FAILBACK_TOKEN).
    #[arg(long, env = "FAILBACK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The agent's certificate fingerprint, as `failback serve` prints it.
    #[arg(long, env = "FAILBACK_FINGERPRINT")]
    pub fingerprint: String,
}

impl AgentArgs {
    /// A client of that agent (see [`connect`]).
    pub fn connect(&self) -> Result<AgentSource> {
        connect(&self.source, self.token.clone(), &self.fingerprint)
    }
}

/// A client of the agent at `source` with `token`, its certificate pinned to
/// `fingerprint` (as `failback serve` prints it, prefixes included).
pub fn connect(source: &str, token: Option<String>, fingerprint: &str) -> Result<AgentSource> {
    if !source.starts_with("https://") {
        bail!("--source '{source}' is not an agent: give https://HOST:PORT of a `failback serve`");
    }
    let fingerprint: Fingerprint = fingerprint.parse().map_err(|_| {
        anyhow::anyhow!(
            "--fingerprint '{fingerprint}' is not a SHA-256 fingerprint: give what `failback serve` prints (at least its first 24 hex digits)"
        )
    })?;
    let token = token
        .context("--token (or FAILBACK_TOKEN) is needed: give the token `failback serve` prints")?;
    Ok(AgentSource::new(AgentConfig {
        url: source.to_string(),
        token,
        fingerprint,
        timeout: Duration::from_secs(30),
        proxy: crate::net::proxy::from_env(),
    })?)
}
