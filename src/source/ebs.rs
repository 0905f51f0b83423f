//! `ebs://snap-ID` and `ebs://snap-NEW?base=snap-OLD`: volumes read from EBS snapshots
//! through the EBS direct APIs (ListSnapshotBlocks, ListChangedBlocks,
//! GetSnapshotBlock), signed with SigV4 (service `ebs`).
//!
//! The snapshot is one volume named by its id. Its blocks have no hash before they
//! are fetched, so the source offers [`Candidates`]: every block the snapshot holds
//! (or, with a base, every block ListChangedBlocks reports) is fetched, checked
//! against `x-amz-Data-Length` and `x-amz-Checksum` (base64 SHA-256) and only then
//! handed over; blocks the snapshot does not hold are zeros.
//!
//! The API's BlockSize is trusted: the engine works in 512 KiB blocks, and a snapshot
//! reporting a smaller size that divides 512 KiB is read as groups of its blocks.
//!
//! Requests that EBS throttles (HTTP 400 RequestThrottledException, 429, 503) or that
//! fail with 5xx or a network error are retried here with exponential backoff and
//! equal jitter ([`crate::retry`]), then reported as retryable to the engine, which retries too. Calls
//! are blocking (the engine runs them on plain threads), so sleeping is fine.

use super::{
    BLOCK_SIZE, BlockSource, Candidates, Hash, HashedSink, Received, SourceError, VolumeInfo,
};
use crate::disks::identity::{self, Identity};
use crate::net::http;
use crate::retry::{Backoff, Jitter};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Waits between attempts of one request: equal jitter under a ceiling of
/// 200 ms, 400 ms, ... up to 10 s (the first wait is 100 to 200 ms).
const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(200),
    cap: Duration::from_secs(10),
    jitter: Jitter::Equal,
};

/// Why an EBS request failed. Messages never carry credentials or signatures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION) to the region of the snapshot")]
    NoRegion,
    #[error("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")]
    NoCredentials,
    #[error("endpoint '{0}' is not an http(s):// URL: check --endpoint or AWS_ENDPOINT_URL_EBS")]
    BadEndpoint(String),
    #[error(
        "access denied to EBS snapshot {snapshot} in {region}: the credentials need ebs:ListSnapshotBlocks, ebs:ListChangedBlocks and ebs:GetSnapshotBlock on it (AWS: {message})"
    )]
    AccessDenied {
        snapshot: String,
        region: String,
        message: String,
    },
    #[error(
        "EBS snapshot {snapshot} was not found in {region}: check the snapshot id and AWS_REGION"
    )]
    NotFound { snapshot: String, region: String },
    #[error(
        "the AWS credentials have expired: get fresh ones (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)"
    )]
    Expired,
    #[error(
        "AWS refused the request's time: the local clock is wrong ({local}); give failback.ntp=SERVER (or fix the BIOS clock) and pull again (AWS: {message})"
    )]
    ClockSkew { local: String, message: String },
    #[error(
        "AWS rejected the credentials: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (AWS: {message})"
    )]
    BadCredentials { message: String },
    #[error(
        "EBS snapshot {snapshot} is not completed yet: wait until its state is 'completed' and pull again"
    )]
    NotCompleted { snapshot: String },
    #[error("EBS throttled {what} (HTTP {status}); slowing down")]
    Throttled { what: String, status: u16 },
    #[error("EBS answered HTTP {status} to {what}")]
    Server { what: String, status: u16 },
    #[error("cannot reach EBS at {endpoint} ({what}): {message}")]
    Transport {
        endpoint: String,
        what: String,
        message: String,
    },
    #[error("EBS refused {what}: HTTP {status} {kind}: {message}")]
    Api {
        what: String,
        status: u16,
        kind: String,
        message: String,
    },
    #[error("EBS sent a malformed answer to {what}: {message}")]
    Malformed { what: String, message: String },
    #[error(
        "block {index} of {snapshot} does not match its x-amz-Checksum (SHA-256): not written, fetched again"
    )]
    Checksum { snapshot: String, index: u64 },
    #[error(
        "block {index} of {snapshot}: {got} bytes arrived, x-amz-Data-Length says {header:?}, BlockSize is {block_size}: not written, fetched again"
    )]
    Length {
        snapshot: String,
        index: u64,
        got: usize,
        header: Option<u64>,
        block_size: u64,
    },
    #[error(
        "EBS snapshot {snapshot} reports BlockSize {size}: failback reads block sizes that divide 524288"
    )]
    BlockSize { snapshot: String, size: u64 },
    #[error("SigV4 signing failed: {0}")]
    Sign(String),
    /// A TLS refusal for the certificate's dates: the local clock (one line).
    #[error("{0}")]
    Clock(String),
    #[error(transparent)]
    Date(#[from] crate::net::clock::Error),
}

impl Error {
    /// True when trying again may help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Throttled { .. }
                | Error::Server { .. }
                | Error::Transport { .. }
                | Error::Checksum { .. }
                | Error::Length { .. }
        )
    }
}

/// SigV4 signs the local time, and AWS refuses a request more than 5 minutes off:
/// with a wrong clock, good credentials look bad.
fn clock_refused(kind: &str, lower_message: &str) -> bool {
    matches!(kind, "RequestExpired" | "RequestTimeTooSkewed")
        || (kind.contains("Signature")
            && (lower_message.contains("signature expired")
                || lower_message.contains("not yet current")))
}

/// AWS credentials; `Debug` shows the key id only.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where and how to read one snapshot.
#[derive(Debug, Clone)]
pub struct EbsConfig {
    pub snapshot: String,
    /// The snapshot the target still matches: only the changed blocks are read.
    pub base: Option<String>,
    pub region: String,
    /// `https://ebs.REGION.amazonaws.com` unless overridden.
    pub endpoint: String,
    pub credentials: Credentials,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per request for throttling, 5xx and network errors.
    pub attempts: u32,
    /// HTTPS proxy (`http://HOST:PORT`) to tunnel through; `None`: direct.
    pub proxy: Option<String>,
}

impl EbsConfig {
    /// Settles the configuration: `endpoint` (from `--endpoint`) wins over
    /// AWS_ENDPOINT_URL_EBS, then AWS_ENDPOINT_URL, then the regional endpoint;
    /// credentials and region come from the AWS environment variables, filled in
    /// from `preset` where unset. `env` reads a variable (tests pass a map).
    pub fn resolve(
        snapshot: String,
        base: Option<String>,
        endpoint: Option<String>,
        preset: Option<&crate::config::Aws>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let var = |k: &str| env(k).filter(|v| !v.is_empty());
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| preset.and_then(|p| p.region.clone()))
            .ok_or(Error::NoRegion)?;
        let endpoint = endpoint
            .filter(|e| !e.is_empty())
            .or_else(|| var("AWS_ENDPOINT_URL_EBS"))
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .or_else(|| preset.and_then(|p| p.endpoint.clone()))
            .unwrap_or_else(|| format!("https://ebs.{region}.amazonaws.com"));
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(Error::BadEndpoint(endpoint));
        }
        let (access_key_id, secret_access_key, session_token) =
            match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
                (Some(a), Some(s)) => (a, s, var("AWS_SESSION_TOKEN")),
                _ => match preset {
                    Some(crate::config::Aws {
                        access_key_id: Some(a),
                        secret_access_key: Some(s),
                        session_token,
                        ..
                    }) => (a.clone(), s.clone(), session_token.clone()),
                    _ => return Err(Error::NoCredentials),
                },
            };
        Ok(Self {
            snapshot,
            base,
            region,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            credentials: Credentials {
                access_key_id,
                secret_access_key,
                session_token,
            },
            timeout: Duration::from_secs(60),
            attempts: 5,
            proxy: None,
        })
    }
}

/// What the listing calls found, computed once.
struct Listing {
    /// Volume size in bytes.
    size: u64,
    /// The API's block size.
    api_block: u64,
    /// API block index -> BlockToken in `snapshot`, for the blocks we may fetch.
    tokens: HashMap<u64, String>,
    candidates: Candidates,
}

/// One page of ListSnapshotBlocks or ListChangedBlocks.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Page {
    #[serde(default)]
    blocks: Vec<BlockEntry>,
    #[serde(default)]
    changed_blocks: Vec<ChangedEntry>,
    block_size: Option<u64>,
    volume_size: Option<u64>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BlockEntry {
    block_index: u64,
    block_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangedEntry {
    block_index: u64,
    second_block_token: Option<String>,
}

/// What a listing of one snapshot (or of changes) amounts to.
struct Listed {
    block_size: u64,
    volume_gib: u64,
    /// Index -> token (`None`: present in the base, absent from the snapshot).
    entries: Vec<(u64, Option<String>)>,
}

/// A [`BlockSource`] reading one EBS snapshot.
pub struct EbsSource {
    cfg: EbsConfig,
    client: reqwest::blocking::Client,
    listing: Mutex<Option<Arc<Listing>>>,
    head: Mutex<Option<Identity>>,
}

impl EbsSource {
    /// Builds the HTTPS client (rustls on ring, webpki roots); makes no request yet.
    pub fn new(cfg: EbsConfig) -> Result<Self, SourceError> {
        let client = http::client(http::Settings {
            proxy: cfg.proxy.as_deref(),
            tls: http::Tls::WebPki,
            connect_timeout: Duration::from_secs(10).min(cfg.timeout),
            timeout: cfg.timeout,
        })
        .map_err(|message| Error::Transport {
            endpoint: cfg.endpoint.clone(),
            what: "HTTP client setup".into(),
            message,
        })?;
        Ok(Self {
            cfg,
            client,
            listing: Mutex::new(None),
            head: Mutex::new(None),
        })
    }

    /// How far the local clock is from EBS's, in seconds (positive: we are
    /// behind), from the `Date` of the endpoint's answer to an unsigned HEAD of
    /// its root (through the proxy, if any): the same roots as every request, but
    /// the certificate's dates are not held against the local clock, the very
    /// thing this asks about.
    pub fn date_offset(&self) -> Result<f64, SourceError> {
        let url = format!("{}/", self.cfg.endpoint);
        let offset = crate::net::clock::http_date(
            &url,
            self.cfg.proxy.as_deref(),
            crate::net::cert_time::webpki_roots(),
            Duration::from_secs(15).min(self.cfg.timeout),
        )
        .map_err(Error::from)?;
        Ok(offset)
    }

    /// The endpoint's host name, as its certificate must name it.
    fn host(&self) -> String {
        reqwest::Url::parse(&self.cfg.endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| self.cfg.endpoint.clone())
    }

    /// The listing, made on first use (the engine calls `volumes` first).
    fn listing(&self) -> Result<Arc<Listing>, Error> {
        let mut g = self.listing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = &*g {
            return Ok(l.clone());
        }
        let l = Arc::new(self.list()?);
        *g = Some(l.clone());
        Ok(l)
    }

    /// What the snapshot's first sectors say (GPT disk GUID, MBR id), for mapping by
    /// identity: one GetSnapshotBlock, made once. Unknown with a base snapshot, whose
    /// listing holds only the changed blocks.
    fn identity(&self, l: &Listing) -> Result<Identity, Error> {
        let mut known = self.head.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = &*known {
            return Ok(id.clone());
        }
        let mut head = Vec::with_capacity(identity::HEAD_BYTES);
        if self.cfg.base.is_none() {
            for j in 0..(identity::HEAD_BYTES as u64).div_ceil(l.api_block) {
                match l.tokens.get(&j) {
                    Some(token) => head.extend(self.get_block(j, token, l.api_block)?.0),
                    None => head.resize(head.len() + l.api_block as usize, 0),
                }
            }
        }
        let id = identity::parse(&head);
        *known = Some(id.clone());
        Ok(id)
    }

    fn list(&self) -> Result<Listing, Error> {
        let snap = &self.cfg.snapshot;
        let (listed, changed) = match &self.cfg.base {
            None => (self.list_pages(snap, None)?, None),
            Some(base) => {
                let changed = self.list_pages(snap, Some(base))?;
                if changed.block_size == BLOCK_SIZE {
                    (changed, None)
                } else {
                    // Groups of smaller blocks: a changed group needs the tokens of
                    // all its blocks, changed or not.
                    (self.list_pages(snap, None)?, Some(changed))
                }
            }
        };
        let bs = listed.block_size;
        if bs == 0 || bs > BLOCK_SIZE || !BLOCK_SIZE.is_multiple_of(bs) {
            return Err(Error::BlockSize {
                snapshot: snap.clone(),
                size: bs,
            });
        }
        let ratio = BLOCK_SIZE / bs;
        let size = listed.volume_gib << 30;
        let n = size.div_ceil(BLOCK_SIZE);
        let mut tokens = HashMap::new();
        for (i, t) in &listed.entries {
            if let Some(t) = t {
                tokens.insert(*i, t.clone());
            }
        }
        // Engine blocks worth a look, then split by whether any part is present.
        let look: BTreeSet<u64> = match (&self.cfg.base, &changed) {
            (None, _) => (0..n).collect(),
            (Some(_), None) => listed.entries.iter().map(|(i, _)| i / ratio).collect(),
            (Some(_), Some(c)) => c.entries.iter().map(|(i, _)| i / ratio).collect(),
        };
        let mut candidates = Candidates::default();
        for i in look.into_iter().filter(|&i| i < n) {
            if (i * ratio..(i + 1) * ratio).any(|j| tokens.contains_key(&j)) {
                candidates.fetch.push(i);
            } else {
                candidates.zero.push(i);
            }
        }
        Ok(Listing {
            size,
            api_block: bs,
            tokens,
            candidates,
        })
    }

    /// Every page of ListSnapshotBlocks (`base` = None) or ListChangedBlocks.
    fn list_pages(&self, snap: &str, base: Option<&str>) -> Result<Listed, Error> {
        let what = match base {
            None => format!("ListSnapshotBlocks {snap}"),
            Some(b) => format!("ListChangedBlocks {b} -> {snap}"),
        };
        let mut out = Listed {
            block_size: 0,
            volume_gib: 0,
            entries: Vec::new(),
        };
        let mut token: Option<String> = None;
        let mut seen_tokens = BTreeSet::new();
        loop {
            let mut query = vec![("maxResults", "10000".to_string())];
            if let Some(b) = base {
                query.push(("firstSnapshotId", b.to_string()));
            }
            if let Some(t) = &token {
                query.push(("pageToken", t.clone()));
            }
            let path = match base {
                None => format!("/snapshots/{}/blocks", encode(snap)),
                Some(_) => format!("/snapshots/{}/changedblocks", encode(snap)),
            };
            let resp = self.request(&what, &path, &query)?;
            let body = resp.bytes().map_err(|e| self.transport(&what, e))?;
            let page: Page = serde_json::from_slice(&body).map_err(|e| Error::Malformed {
                what: what.clone(),
                message: e.to_string(),
            })?;
            if let Some(bs) = page.block_size {
                out.block_size = bs;
            }
            if let Some(v) = page.volume_size {
                out.volume_gib = v;
            }
            out.entries.extend(
                page.blocks
                    .into_iter()
                    .map(|b| (b.block_index, b.block_token)),
            );
            out.entries.extend(
                page.changed_blocks
                    .into_iter()
                    .map(|b| (b.block_index, b.second_block_token)),
            );
            match page.next_token.filter(|t| !t.is_empty()) {
                Some(t) => {
                    if !seen_tokens.insert(t.clone()) {
                        return Err(Error::Malformed {
                            what,
                            message: "NextToken repeats an earlier page".into(),
                        });
                    }
                    token = Some(t);
                }
                None => break,
            }
        }
        if out.block_size == 0 || out.volume_gib == 0 {
            return Err(Error::Malformed {
                what,
                message: "no BlockSize or VolumeSize".into(),
            });
        }
        Ok(out)
    }

    /// GetSnapshotBlock, checked against x-amz-Data-Length and x-amz-Checksum.
    /// Gives the data and its SHA-256 (the checksum it matched).
    fn get_block(
        &self,
        index: u64,
        token: &str,
        block_size: u64,
    ) -> Result<(Vec<u8>, Hash), Error> {
        let snap = &self.cfg.snapshot;
        let what = format!("GetSnapshotBlock {snap} {index}");
        let path = format!("/snapshots/{}/blocks/{index}", encode(snap));
        let refetch = |e: &Error| matches!(e, Error::Checksum { .. } | Error::Length { .. });
        BACKOFF.retry(self.cfg.attempts, refetch, || {
            let resp = self.request(&what, &path, &[("blockToken", token.to_string())])?;
            let header = |k: &str| {
                resp.headers()
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let length = header("x-amz-Data-Length").and_then(|v| v.trim().parse::<u64>().ok());
            let checksum = header("x-amz-Checksum");
            let algorithm = header("x-amz-Checksum-Algorithm");
            let data = resp.bytes().map_err(|e| self.transport(&what, e))?;
            let sha: Hash = Sha256::digest(&data).into();
            if length != Some(data.len() as u64) || data.len() as u64 != block_size {
                Err(Error::Length {
                    snapshot: snap.clone(),
                    index,
                    got: data.len(),
                    header: length,
                    block_size,
                })
            } else if algorithm.is_some_and(|a| !a.eq_ignore_ascii_case("SHA256"))
                || checksum.as_deref().and_then(decode_sha256) != Some(sha)
            {
                Err(Error::Checksum {
                    snapshot: snap.clone(),
                    index,
                })
            } else {
                Ok((data.into(), sha))
            }
        })
    }

    /// Signs and sends a GET, retrying throttling, 5xx and network errors.
    fn request(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::blocking::Response, Error> {
        let mut url = format!("{}{}", self.cfg.endpoint, path);
        for (k, (name, value)) in query.iter().enumerate() {
            url.push(if k == 0 { '?' } else { '&' });
            url.push_str(name);
            url.push('=');
            url.push_str(&encode(value));
        }
        BACKOFF.retry(self.cfg.attempts, Error::is_retryable, || {
            self.send_once(what, &url)
        })
    }

    fn send_once(&self, what: &str, url: &str) -> Result<reqwest::blocking::Response, Error> {
        let mut req = self.client.get(url);
        for (k, v) in self.sign("GET", url)? {
            req = req.header(k, v);
        }
        let resp = req.send().map_err(|e| self.transport(what, e))?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let kind_header = resp
            .headers()
            .get("x-amzn-ErrorType")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text().unwrap_or_default();
        Err(self.classify(what, status, kind_header, &body))
    }

    /// Turns an error answer into one clear error.
    fn classify(&self, what: &str, status: u16, kind_header: Option<String>, body: &str) -> Error {
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let field = |k: &str| json.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let kind = kind_header
            .or_else(|| field("__type"))
            .or_else(|| field("code"))
            .unwrap_or_default();
        // "ResourceNotFoundException:http://..." or "com.amazon...#ResourceNotFoundException".
        let kind = kind.split(':').next().unwrap_or_default();
        let kind = kind.rsplit('#').next().unwrap_or_default().to_string();
        let message: String = field("message")
            .or_else(|| field("Message"))
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let lower = message.to_ascii_lowercase();
        let snapshot = || match &self.cfg.base {
            Some(b) if what.starts_with("ListChanged") => {
                format!("{} (or its base {b})", self.cfg.snapshot)
            }
            _ => self.cfg.snapshot.clone(),
        };
        let region = self.cfg.region.clone();
        match kind.as_str() {
            k if k.contains("Throttl") || k == "ConcurrentLimitExceededException" => {
                Error::Throttled {
                    what: what.into(),
                    status,
                }
            }
            k if clock_refused(k, &lower) => Error::ClockSkew {
                local: httpdate::fmt_http_date(std::time::SystemTime::now()),
                message,
            },
            "ExpiredTokenException" | "ExpiredToken" => Error::Expired,
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "IncompleteSignatureException"
            | "InvalidClientTokenId"
            | "MissingAuthenticationTokenException" => Error::BadCredentials { message },
            "AccessDeniedException" if lower.contains("expired") => Error::Expired,
            "AccessDeniedException" => Error::AccessDenied {
                snapshot: snapshot(),
                region,
                message,
            },
            "ResourceNotFoundException" => Error::NotFound {
                snapshot: snapshot(),
                region,
            },
            "ValidationException"
                if lower.contains("not completed")
                    || lower.contains("pending")
                    || lower.contains("snapshot state")
                    || lower.contains("not in completed") =>
            {
                Error::NotCompleted {
                    snapshot: snapshot(),
                }
            }
            _ if status == 429 || status == 503 => Error::Throttled {
                what: what.into(),
                status,
            },
            _ if status >= 500 => Error::Server {
                what: what.into(),
                status,
            },
            _ if status == 403 && lower.contains("expired") => Error::Expired,
            _ if status == 403 => Error::AccessDenied {
                snapshot: snapshot(),
                region,
                message,
            },
            _ if status == 404 => Error::NotFound {
                snapshot: snapshot(),
                region,
            },
            _ => Error::Api {
                what: what.into(),
                status,
                kind,
                message,
            },
        }
    }

    /// SigV4 headers for a bodiless request (service `ebs`).
    fn sign(&self, method: &str, url: &str) -> Result<Vec<(String, String)>, Error> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let c = &self.cfg.credentials;
        let identity = aws_credential_types::Credentials::new(
            &c.access_key_id,
            &c.secret_access_key,
            c.session_token.clone(),
            None,
            "failback",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.cfg.region)
            .name("ebs")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Error::Sign(e.to_string()))?
            .into();
        let request =
            SignableRequest::new(method, url, std::iter::empty(), SignableBody::Bytes(&[]))
                .map_err(|e| Error::Sign(e.to_string()))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| Error::Sign(e.to_string()))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// A network error, without the URL (its query holds block tokens).
    fn transport(&self, what: &str, e: reqwest::Error) -> Error {
        let e = e.without_url();
        if let Some(line) = crate::net::cert_time::wrong_clock(&e, &self.host()) {
            return Error::Clock(line);
        }
        let message = http::describe(&e, self.cfg.proxy.as_deref());
        Error::Transport {
            endpoint: self.cfg.endpoint.clone(),
            what: what.into(),
            message,
        }
    }
}

impl BlockSource for EbsSource {
    fn volumes(&self) -> Result<Vec<VolumeInfo>, SourceError> {
        let l = self.listing()?;
        let Identity {
            gpt_guid, mbr_id, ..
        } = self.identity(&l)?;
        Ok(vec![VolumeInfo {
            id: self.cfg.snapshot.clone(),
            size: l.size,
            block_size: BLOCK_SIZE,
            gpt_guid,
            mbr_id,
        }])
    }

    fn hashes(&self, volume: &str, _: u64, _: u64) -> Result<Vec<Hash>, SourceError> {
        Err(Error::Malformed {
            what: format!("volume '{volume}'"),
            message: "EBS has no block hashes before the blocks: use candidates()".into(),
        }
        .into())
    }

    fn candidates(&self, _volume: &str) -> Result<Option<Candidates>, SourceError> {
        Ok(Some(self.listing()?.candidates.clone()))
    }

    fn blocks(
        &self,
        volume: &str,
        indexes: &[u64],
        sink: &mut dyn FnMut(u64, &[u8], u64) -> Received,
    ) -> Result<(), SourceError> {
        self.blocks_hashed(volume, indexes, &mut |i, data, wire, _| sink(i, data, wire))
    }

    /// With 512 KiB API blocks, each block is handed over as it arrived, with the
    /// SHA-256 that matched its x-amz-Checksum; smaller API blocks are assembled.
    fn blocks_hashed(
        &self,
        _volume: &str,
        indexes: &[u64],
        sink: &mut HashedSink<'_>,
    ) -> Result<(), SourceError> {
        let l = self.listing()?;
        let ratio = BLOCK_SIZE / l.api_block;
        let mut buf = Vec::new();
        for &i in indexes {
            let len = (l.size - i * BLOCK_SIZE).min(BLOCK_SIZE) as usize;
            if ratio == 1
                && len as u64 == l.api_block
                && let Some(token) = l.tokens.get(&i)
            {
                let (data, sha) = self.get_block(i, token, l.api_block)?;
                if let Received::Stop = sink(i, &data, data.len() as u64, Some(sha)) {
                    break;
                }
                continue;
            }
            buf.resize(BLOCK_SIZE as usize, 0);
            let mut wire = 0;
            for (k, j) in (i * ratio..(i + 1) * ratio).enumerate() {
                let part = &mut buf[k * l.api_block as usize..(k + 1) * l.api_block as usize];
                match l.tokens.get(&j) {
                    Some(token) => {
                        let (data, _) = self.get_block(j, token, l.api_block)?;
                        wire += data.len() as u64;
                        part.copy_from_slice(&data);
                    }
                    None => part.fill(0),
                }
            }
            if let Received::Stop = sink(i, &buf[..len], wire, None) {
                break;
            }
        }
        Ok(())
    }
}

/// URI-encodes a path segment or query value the SigV4 way (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push_str(&hex::encode_upper([b]));
        }
    }
    out
}

fn decode_sha256(b64: &str) -> Option<Hash> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<EbsConfig, Error> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EbsConfig::resolve("snap-1".into(), None, None, None, |k| vars.get(k).cloned())
    }

    #[test]
    fn endpoint_and_credentials_come_from_the_environment() {
        let c = cfg(&[
            ("AWS_REGION", "eu-west-3"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "https://ebs.eu-west-3.amazonaws.com");
        assert!(!format!("{c:?}").contains("very-secret"));
        let c = cfg(&[
            ("AWS_REGION", "eu-west-3"),
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1/"),
            ("AWS_ENDPOINT_URL_EBS", "http://127.0.0.1:2/"),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:2");
        assert!(matches!(
            cfg(&[("AWS_REGION", "x")]),
            Err(Error::NoCredentials)
        ));
        assert!(matches!(cfg(&[]), Err(Error::NoRegion)));
    }

    #[test]
    fn query_values_are_encoded_for_sigv4() {
        assert_eq!(encode("AAUB+a/b=="), "AAUB%2Ba%2Fb%3D%3D");
        assert_eq!(encode("snap-0aZ_~."), "snap-0aZ_~.");
    }

    #[test]
    fn error_answers_become_one_clear_line() {
        let src = EbsSource::new(
            cfg(&[
                ("AWS_REGION", "r"),
                ("AWS_ACCESS_KEY_ID", "a"),
                ("AWS_SECRET_ACCESS_KEY", "b"),
            ])
            .unwrap(),
        )
        .unwrap();
        let c = |status, kind: Option<&str>, body: &str| {
            src.classify("X", status, kind.map(str::to_string), body)
        };
        assert!(matches!(
            c(400, Some("RequestThrottledException:http://x"), "{}"),
            Error::Throttled { .. }
        ));
        assert!(c(500, None, "<html>").is_retryable());
        assert!(matches!(
            c(403, Some("AccessDeniedException"), r#"{"message":"no"}"#),
            Error::AccessDenied { .. }
        ));
        assert!(matches!(
            c(
                404,
                None,
                r#"{"__type":"ResourceNotFoundException","Message":"x"}"#
            ),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            c(403, Some("ExpiredTokenException"), "{}"),
            Error::Expired
        ));
        assert!(matches!(
            c(
                400,
                Some("ValidationException"),
                r#"{"message":"The snapshot is not completed"}"#
            ),
            Error::NotCompleted { .. }
        ));
        assert!(!c(403, None, "{}").is_retryable());
        // A clock 25 years off: SigV4's time check, not the credentials.
        for (kind, body) in [
            (
                "InvalidSignatureException",
                r#"{"message":"Signature expired: 20010101T000000Z is now earlier than 20261122T055500Z (20261122T060000Z - 5 min.)"}"#,
            ),
            (
                "InvalidSignatureException",
                r#"{"message":"Signature not yet current: 20400101T000000Z is still later than 20261122T060500Z"}"#,
            ),
            ("RequestExpired", r#"{"message":"Request has expired."}"#),
            ("RequestTimeTooSkewed", r#"{"message":"too far"}"#),
        ] {
            let e = c(403, Some(kind), body);
            assert!(matches!(e, Error::ClockSkew { .. }), "{kind}: {e:?}");
            assert!(e.to_string().contains("clock is wrong"), "{e}");
            assert!(!e.is_retryable());
        }
        assert!(matches!(
            c(
                403,
                Some("InvalidSignatureException"),
                r#"{"message":"The request signature we calculated does not match"}"#
            ),
            Error::BadCredentials { .. }
        ));
    }
}
