//! The agent as a [`BlockSource`]: HTTPS to `failback serve`, a bearer token, and the
//! agent's self-signed certificate pinned by its SHA-256 fingerprint (no CA involved).

use super::wire::{self, ACCEPT_ZSTD};
use super::{BlockSource, Received, SourceError, VolumeInfo};
use crate::block::{BLOCK_SIZE, Hash};
use crate::fingerprint::Fingerprint;
use crate::net::http::{self, CertPolicy, Presented};
use rustls::client::danger::ServerCertVerified;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Accepts exactly one certificate: the one whose DER has the pinned SHA-256.
#[derive(Debug)]
struct Pinned {
    expected: Fingerprint,
    seen: Mutex<Option<Fingerprint>>,
}

impl CertPolicy for Pinned {
    fn verify(&self, presented: &Presented<'_>) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of(presented.end_entity.as_ref());
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
        if self.expected.matches(&seen) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate fingerprint does not match the pinned one".into(),
            ))
        }
    }
}

/// Connection settings for an agent.
#[derive(Clone)]
pub struct AgentConfig {
    /// `https://HOST:PORT`
    pub url: String,
    /// Bearer token. Never printed.
    pub token: String,
    /// Pinned certificate fingerprint.
    pub fingerprint: Fingerprint,
    /// Limit for one request (a stalled connection is abandoned after this).
    pub timeout: Duration,
    /// HTTPS proxy (`http://HOST:PORT`) to tunnel through; `None`: direct.
    pub proxy: Option<String>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field(
                "proxy",
                &self.proxy.as_deref().map(crate::net::proxy::redact),
            )
            .finish()
    }
}

/// A [`BlockSource`] backed by `failback serve`.
pub struct AgentSource {
    cfg: AgentConfig,
    client: reqwest::blocking::Client,
    pinned: Arc<Pinned>,
}

impl AgentSource {
    /// Builds the HTTPS client; makes no connection yet.
    pub fn new(cfg: AgentConfig) -> Result<Self, SourceError> {
        let pinned = Arc::new(Pinned {
            expected: cfg.fingerprint,
            seen: Mutex::new(None),
        });
        let client = http::client(http::Settings {
            proxy: cfg.proxy.as_deref(),
            tls: http::Tls::Policy(pinned.clone()),
            connect_timeout: Duration::from_secs(10).min(cfg.timeout),
            timeout: cfg.timeout,
        })
        .map_err(|message| SourceError::Transport {
            url: cfg.url.clone(),
            message,
        })?;
        Ok(Self {
            cfg,
            client,
            pinned,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.cfg.url.trim_end_matches('/'), path)
    }

    /// Turns a reqwest error into ours, recognising a fingerprint mismatch. Messages
    /// carry the URL (never the token: it only travels in a header).
    fn transport(&self, e: reqwest::Error) -> SourceError {
        let seen = *self.pinned.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(seen) = seen.filter(|s| !self.cfg.fingerprint.matches(s)) {
            return SourceError::Fingerprint {
                url: self.cfg.url.clone(),
                // As `failback serve` shows it: the grouped digits, then the whole.
                seen: format!("{} ({})", seen.grouped(), seen.printed()),
                expected: self.cfg.fingerprint.printed(),
            };
        }
        let message = http::describe(&e, self.cfg.proxy.as_deref());
        SourceError::Transport {
            url: self.cfg.url.clone(),
            message: message.replace(&self.cfg.token, "<token>"),
        }
    }

    /// How far the local clock is from the agent's, in seconds (positive: we
    /// are behind), from the `Date` header of an answer of any status. The
    /// certificate is pinned by fingerprint, so this works whatever the local
    /// clock says: the way to set it before anything checks certificate dates.
    pub fn date_offset(&self) -> Result<f64, SourceError> {
        let resp = self
            .client
            .head(self.url("/v1/volumes"))
            .send()
            .map_err(|e| self.transport(e))?;
        crate::net::clock::response_offset(&resp).map_err(|m| self.protocol(m))
    }

    fn send(
        &self,
        req: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, SourceError> {
        let resp = req
            .bearer_auth(&self.cfg.token)
            .send()
            .map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(SourceError::Unauthorized {
                url: self.cfg.url.clone(),
            });
        }
        if !status.is_success() {
            let message = resp.text().unwrap_or_default();
            let message = message.trim().replace(&self.cfg.token, "<token>");
            return Err(SourceError::Http {
                url: self.cfg.url.clone(),
                status: status.as_u16(),
                message: message.chars().take(300).collect(),
            });
        }
        Ok(resp)
    }

    fn protocol(&self, message: String) -> SourceError {
        SourceError::Protocol {
            url: self.cfg.url.clone(),
            message,
        }
    }

    /// The JSON answer of `GET path` (`failback status` reads `/v1/sessions`).
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, SourceError> {
        let resp = self.send(self.client.get(self.url(path)))?;
        resp.json::<T>()
            .map_err(|e| self.protocol(format!("{path}: {e}")))
    }

    /// Sends one event to the agent (`POST /v1/sessions/{id}/progress`).
    pub fn report(&self, session: &str, event: &impl serde::Serialize) -> Result<(), SourceError> {
        let req = self
            .client
            .post(self.url(&format!("/v1/sessions/{session}/progress")))
            .json(event);
        self.send(req).map(|_| ())
    }

    /// Sends one event like [`report`](Self::report) and reads the agent's answer:
    /// whether it asks this client to cut over (`{"cutover": true}`; an agent
    /// that answers anything else does not).
    pub fn report_polled(
        &self,
        session: &str,
        event: &impl serde::Serialize,
    ) -> Result<bool, SourceError> {
        let req = self
            .client
            .post(self.url(&format!("/v1/sessions/{session}/progress")))
            .json(event);
        let body = self.send(req)?.bytes().map_err(|e| self.transport(e))?;
        let answer = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
        Ok(answer["cutover"].as_bool().unwrap_or(false))
    }

    /// `GET` (no `body`) or `POST` of JSON at `path`, answered with JSON: the
    /// agent's own endpoints (`/v1/cutover`).
    pub fn json(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, SourceError> {
        let req = match body {
            Some(body) => self.client.post(self.url(path)).json(body),
            None => self.client.get(self.url(path)),
        };
        self.send(req)?
            .json()
            .map_err(|e| self.protocol(format!("{path}: {e}")))
    }
}

impl BlockSource for AgentSource {
    fn volumes(&self) -> Result<Vec<VolumeInfo>, SourceError> {
        let resp = self.send(self.client.get(self.url("/v1/volumes")))?;
        let volumes = resp
            .json::<Vec<VolumeInfo>>()
            .map_err(|e| self.protocol(format!("volume list: {e}")))?;
        // Reads, writes and hashes all go by BLOCK_SIZE: a volume counted in other
        // blocks would be planned wrong (stale blocks, writes past its end).
        if let Some(v) = volumes.iter().find(|v| v.block_size != BLOCK_SIZE) {
            return Err(SourceError::BlockSize {
                url: self.cfg.url.clone(),
                volume: v.id.clone(),
                block_size: v.block_size,
            });
        }
        Ok(volumes)
    }

    fn hashes(&self, volume: &str, start: u64, count: u64) -> Result<Vec<Hash>, SourceError> {
        let path = format!("/v1/volumes/{volume}/hashes?start={start}&count={count}");
        let resp = self.send(self.client.get(self.url(&path)))?;
        let body = resp.bytes().map_err(|e| self.transport(e))?;
        wire::hashes(&body, count).map_err(|m| self.protocol(m))
    }

    fn blocks(
        &self,
        volume: &str,
        indexes: &[u64],
        sink: &mut dyn FnMut(u64, &[u8], u64) -> Received,
    ) -> Result<(), SourceError> {
        let body = serde_json::json!({ "indexes": indexes });
        let req = self
            .client
            .post(self.url(&format!("/v1/volumes/{volume}/blocks")))
            .header(ACCEPT_ZSTD, "1")
            .json(&body);
        let mut resp = self.send(req)?;
        let (mut scratch, mut data) = (Vec::new(), Vec::new());
        loop {
            match wire::read_frame(&mut resp, &mut scratch, &mut data) {
                Ok(Some(f)) => {
                    if let Received::Stop = sink(f.index, &data, f.wire_bytes) {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(SourceError::Transport {
                        url: self.cfg.url.clone(),
                        message: format!("block stream of volume {volume} broke: {e}"),
                    });
                }
            }
        }
    }
}
