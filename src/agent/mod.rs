//! `failback serve`: the agent. Serves image files and block devices read-only over
//! HTTPS (self-signed certificate pinned by clients, bearer token):
//!
//! - `GET  /v1/volumes` -> JSON list of [`VolumeInfo`]
//! - `GET  /v1/volumes/{id}/hashes?start=&count=` -> 32-byte SHA-256 per block
//! - `POST /v1/volumes/{id}/blocks` `{"indexes":[..]}` -> framed blocks ([`wire`])
//! - `POST /v1/sessions/{id}/progress` <- a client's event; `GET /v1/sessions`

pub mod tls;

use crate::block;
use crate::block::BLOCK_SIZE;
use crate::disks::identity;
use crate::report::{Event, progress_amounts};
use crate::source::VolumeInfo;
use crate::source::wire::{self, ACCEPT_ZSTD, Encoding};
use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

/// Arguments of `failback serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A volume to serve, NAME=PATH (image file or block device); repeatable.
    #[arg(long = "volume", required = true)]
    pub volumes: Vec<String>,
    /// Address and port to listen on.
    #[arg(long, default_value = "0.0.0.0:1500")]
    pub listen: SocketAddr,
    /// Token clients must present (better passed as FAILBACK_TOKEN); default: made
    /// on first start and kept in the state directory.
    #[arg(long, env = "FAILBACK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Certificate (PEM) to use instead of the self-signed one.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where the self-signed certificate and the token are kept.
    #[arg(long, env = "FAILBACK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// One served volume.
struct Volume {
    info: VolumeInfo,
    file: Arc<File>,
}

/// Shared agent state.
struct State {
    volumes: BTreeMap<String, Volume>,
    token: String,
    sessions: Mutex<BTreeMap<String, serde_json::Value>>,
    log: Box<dyn Fn(String) + Send + Sync>,
}

type Resp = Response<BoxBody<Bytes, Infallible>>;

fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY") {
        return PathBuf::from(d);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/failback");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/state/failback")
}

/// Opens a volume read-only and reads its identity hints.
fn open_volume(spec: &str) -> Result<Volume> {
    let (name, path) = spec
        .split_once('=')
        .filter(|(n, p)| !n.is_empty() && !p.is_empty())
        .with_context(|| format!("--volume '{spec}' is not NAME=PATH"))?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("--volume name '{name}' may use only letters, digits, '-', '_' and '.'");
    }
    let mut file =
        File::open(path).with_context(|| format!("cannot open volume {path} read-only"))?;
    let size = file
        .seek(SeekFrom::End(0))
        .with_context(|| format!("cannot size volume {path}"))?;
    let mut head = vec![0u8; identity::HEAD_BYTES.min(size as usize)];
    file.read_exact_at(&mut head, 0)
        .with_context(|| format!("cannot read volume {path}"))?;
    let identity::Identity {
        gpt_guid, mbr_id, ..
    } = identity::parse(&head);
    Ok(Volume {
        info: VolumeInfo {
            id: name.to_string(),
            size,
            block_size: BLOCK_SIZE,
            gpt_guid,
            mbr_id,
        },
        file: Arc::new(file),
    })
}

/// Runs `failback serve` until killed.
pub fn run(args: ServeArgs) -> Result<()> {
    let mut volumes = BTreeMap::new();
    for spec in &args.volumes {
        let v = open_volume(spec)?;
        if volumes.contains_key(&v.info.id) {
            bail!(
                "--volume names '{}' twice: give each volume its own name",
                v.info.id
            );
        }
        volumes.insert(v.info.id.clone(), v);
    }
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let id = tls::identity(
        &state_dir,
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
    )?;
    let (token, show_token) = match args.token.clone() {
        Some(t) if t.len() >= 16 => (t, false),
        Some(_) => bail!("--token is too short: use at least 16 characters"),
        None => (tls::token(&state_dir)?, true),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(id.certs, id.key)
        .context("the TLS certificate and key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}: is the port in use?", args.listen))?;
        let local = listener.local_addr()?;
        println!("failback agent listening on {local}");
        // What the operator types (the first 24 digits are enough), then the whole.
        let fingerprint = crate::fingerprint::Fingerprint::new(id.fingerprint);
        println!("  fingerprint: {}", fingerprint.grouped());
        println!("               {}", fingerprint.printed());
        if show_token {
            println!("  token:       {token}   (kept in {})", state_dir.display());
        } else {
            println!("  token:       as given");
        }
        for v in volumes.values() {
            println!(
                "  volume {}: {} bytes ({} blocks), read-only",
                v.info.id,
                v.info.size,
                v.info.blocks()
            );
        }
        let state = Arc::new(State {
            volumes,
            token,
            sessions: Mutex::new(BTreeMap::new()),
            log: Box::new(|line| println!("{line}")),
        });
        serve(listener, Arc::new(config), state).await
    })
}

async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    state: Arc<State>,
) -> Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => continue,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, peer, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        });
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).boxed())
        .expect("static response parts")
}

fn text(status: StatusCode, msg: impl Into<String>) -> Resp {
    full(status, "text/plain", format!("{}\n", msg.into()))
}

/// Constant-time comparison of the presented token with ours.
fn token_ok(req: &Request<Incoming>, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn handle(state: Arc<State>, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    if !token_ok(&req, &state.token) {
        return text(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), parts.as_slice()) {
        (&Method::GET, ["v1", "volumes"]) => {
            let list: Vec<&VolumeInfo> = state.volumes.values().map(|v| &v.info).collect();
            full(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&list).unwrap_or_default(),
            )
        }
        (&Method::GET, ["v1", "volumes", id, "hashes"]) => {
            let query = req.uri().query().unwrap_or("").to_string();
            hashes(&state, id, &query).await
        }
        (&Method::POST, ["v1", "volumes", id, "blocks"]) => {
            let id = id.to_string();
            blocks(state, id, req).await
        }
        (&Method::POST, ["v1", "sessions", id, "progress"]) => {
            let id = id.to_string();
            progress(&state, peer, id, req).await
        }
        (&Method::GET, ["v1", "sessions"]) => {
            let s = state
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            full(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&s).unwrap_or_default(),
            )
        }
        _ => text(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

fn no_volume(id: &str) -> Resp {
    text(StatusCode::NOT_FOUND, format!("no volume named '{id}'"))
}

/// The `start` and `count` of a hashes query (`start=N&count=N`), checked against a
/// volume of `blocks` blocks; else what the client is told.
pub fn hashes_range(query: &str, blocks: u64) -> Result<(u64, u64), String> {
    let mut start = None;
    let mut count = None;
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("start", n)) => start = n.parse::<u64>().ok(),
            Some(("count", n)) => count = n.parse::<u64>().ok(),
            _ => {}
        }
    }
    let (Some(start), Some(count)) = (start, count) else {
        return Err("need ?start=N&count=N".into());
    };
    if count > 4096 || start.checked_add(count).is_none_or(|end| end > blocks) {
        return Err(format!(
            "blocks {start}+{count} are out of range (volume has {blocks}, at most 4096 at once)"
        ));
    }
    Ok((start, count))
}

async fn hashes(state: &State, id: &str, query: &str) -> Resp {
    let Some(v) = state.volumes.get(id) else {
        return no_volume(id);
    };
    let (start, count) = match hashes_range(query, v.info.blocks()) {
        Ok(range) => range,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let file = v.file.clone();
    let size = v.info.size;
    let res = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(count as usize * 32);
        let bs = BLOCK_SIZE as usize;
        let mut buf = vec![0u8; block::BATCH * bs];
        for first in (start..start + count).step_by(block::BATCH) {
            let last = (first + block::BATCH as u64).min(start + count);
            let mut blocks = Vec::with_capacity(block::BATCH);
            for (i, slot) in (first..last).zip(buf.chunks_mut(bs)) {
                let len = (size - i * BLOCK_SIZE).min(BLOCK_SIZE) as usize;
                file.read_exact_at(&mut slot[..len], i * BLOCK_SIZE)?;
                blocks.push(&slot[..len]);
            }
            for h in block::block_hashes(&blocks) {
                out.extend_from_slice(&h);
            }
        }
        Ok(out)
    })
    .await;
    match res {
        Ok(Ok(body)) => full(StatusCode::OK, "application/octet-stream", body),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("read error: {e}"),
        ),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "hashing task failed"),
    }
}

#[derive(serde::Deserialize)]
struct BlockRequest {
    indexes: Vec<u64>,
}

/// The indexes a blocks request body (`{"indexes":[..]}`) asks for, checked against a
/// volume of `blocks` blocks; else what the client is told.
pub fn block_indexes(body: &[u8], blocks: u64) -> Result<Vec<u64>, String> {
    let Ok(ask) = serde_json::from_slice::<BlockRequest>(body) else {
        return Err("body must be {\"indexes\":[...]}".into());
    };
    if ask.indexes.len() > 1024 || ask.indexes.iter().any(|&i| i >= blocks) {
        return Err(format!(
            "at most 1024 blocks per request, each below {blocks}"
        ));
    }
    Ok(ask.indexes)
}

/// A response body fed by a channel (the blocking reader on the other end).
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

async fn blocks(state: Arc<State>, id: String, req: Request<Incoming>) -> Resp {
    let Some(v) = state.volumes.get(&id) else {
        return no_volume(&id);
    };
    let zstd_ok = req.headers().contains_key(ACCEPT_ZSTD);
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "request body too large or broken"),
    };
    let indexes = match block_indexes(&body, v.info.blocks()) {
        Ok(indexes) => indexes,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let file = v.file.clone();
    let size = v.info.size;
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        let mut packer = zstd::bulk::Compressor::new(1).ok().filter(|_| zstd_ok);
        let mut packed = vec![0u8; zstd::zstd_safe::compress_bound(BLOCK_SIZE as usize)];
        for i in indexes {
            let len = (size - i * BLOCK_SIZE).min(BLOCK_SIZE) as usize;
            if file.read_exact_at(&mut buf[..len], i * BLOCK_SIZE).is_err() {
                return; // the client sees a short stream and retries
            }
            let data = &buf[..len];
            let mut frame;
            if block::is_zero(data) {
                frame = wire::header(i, Encoding::Zero, len as u32).to_vec();
            } else {
                match packer.as_mut().and_then(|p| compress(p, data, &mut packed)) {
                    Some(c) => {
                        frame = wire::header(i, Encoding::Zstd, c.len() as u32).to_vec();
                        frame.extend_from_slice(c);
                    }
                    None => {
                        frame = Vec::with_capacity(wire::HEADER + len);
                        frame.extend_from_slice(&wire::header(i, Encoding::Raw, len as u32));
                        frame.extend_from_slice(data);
                    }
                }
            }
            if tx.blocking_send(Bytes::from(frame)).is_err() {
                return; // client went away
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .body(ChannelBody(rx).boxed())
        .expect("static response parts")
}

/// A block compressed into `out` if that saves at least 1/16 of its size. A 64 KiB
/// sample is tried first: blocks of random or already compressed data (most of a
/// disk that is not zeros) cost a sample's compression, not a block's.
fn compress<'a>(
    packer: &mut zstd::bulk::Compressor<'_>,
    data: &[u8],
    out: &'a mut [u8],
) -> Option<&'a [u8]> {
    const SAMPLE: usize = 64 << 10;
    let worth = |packed: usize, len: usize| packed < len - len / 16;
    if data.len() > SAMPLE {
        let n = packer.compress_to_buffer(&data[..SAMPLE], &mut *out).ok()?;
        if !worth(n, SAMPLE) {
            return None;
        }
    }
    let n = packer.compress_to_buffer(data, &mut *out).ok()?;
    worth(n, data.len()).then_some(&out[..n])
}

async fn progress(state: &State, peer: SocketAddr, id: String, req: Request<Incoming>) -> Resp {
    let body = match Limited::new(req.into_body(), 64 << 10).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "event too large or broken"),
    };
    let Some((ev, line)) = posted_event(&body) else {
        return text(StatusCode::BAD_REQUEST, "body must be a JSON event");
    };
    (state.log)(format!("client {id} ({}): {line}", peer.ip()));
    state
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, ev);
    text(StatusCode::OK, "ok")
}

/// A client's posted event (any JSON) and the line that shows it; `None` when the
/// body is not JSON. An event this agent does not know (a newer client's, a broken
/// one) is still taken and kept; it is shown as the JSON posted.
pub fn posted_event(body: &[u8]) -> Option<(serde_json::Value, String)> {
    let ev = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let typed = Event::deserialize(&ev).ok();
    let line = describe(typed.as_ref(), &ev);
    Some((ev, line))
}

/// A short line for a client's event: progress in words, any other event as the
/// JSON `posted` (also when it is not an [`Event`] this agent knows: `event` is `None`).
fn describe(event: Option<&Event>, posted: &serde_json::Value) -> String {
    match event {
        Some(progress @ Event::Progress { volume, phase, .. }) => {
            let (amount, wire) = progress_amounts(progress).unwrap_or_default();
            format!("{volume} {phase} {amount} ({wire})")
        }
        _ => posted.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the agent prints for a posted event.
    fn line(posted: serde_json::Value) -> String {
        describe(Event::deserialize(&posted).ok().as_ref(), &posted)
    }

    #[test]
    fn progress_is_described_in_words() {
        let posted = serde_json::json!({
            "event": "progress", "volume": "system", "phase": "pulling",
            "done_bytes": 3u64 << 20, "total_bytes": 8u64 << 20,
            "wire_bytes": 1u64 << 19, "retries": 2,
        });
        assert_eq!(
            line(posted),
            "system pulling 3.0 MiB of 8.0 MiB (0.5 MiB over the wire, 2 retries)"
        );
    }

    #[test]
    fn other_and_unknown_events_are_shown_as_posted() {
        for posted in [
            serde_json::json!({"event": "notice", "message": "hello"}),
            serde_json::json!({"event": "plan", "volume": "v", "target": "/dev/vdb",
                "size": 1, "blocks": 1, "differing": 0, "zero_blocks": 0,
                "bytes_to_pull": 0, "dry_run": false}),
            // A newer client's event, and a phase this agent does not know.
            serde_json::json!({"event": "teleported", "volume": "v"}),
            serde_json::json!({"event": "progress", "volume": "v", "phase": "trimming",
                "done_bytes": 0, "total_bytes": 0, "wire_bytes": 0, "retries": 0}),
            serde_json::json!({"no": "event"}),
            serde_json::json!([1, 2]),
        ] {
            assert_eq!(line(posted.clone()), posted.to_string());
        }
    }

    #[test]
    fn only_blocks_that_compress_are_compressed() {
        let mut packer = zstd::bulk::Compressor::new(1).unwrap();
        let mut out = vec![0u8; zstd::zstd_safe::compress_bound(BLOCK_SIZE as usize)];
        let n = BLOCK_SIZE as usize;
        let repetitive: Vec<u8> = (0..n).map(|i| (i % 251) as u8 | 1).collect();
        let packed = compress(&mut packer, &repetitive, &mut out).unwrap();
        assert!(packed.len() < n / 16);
        assert_eq!(zstd::bulk::decompress(packed, n).unwrap(), repetitive);
        // Pseudo-random bytes (xorshift) do not compress.
        let mut x = 0x9e3779b97f4a7c15u64;
        let random: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(compress(&mut packer, &random, &mut out).is_none());
        // Short blocks skip the sample and still compress.
        let short = &repetitive[..5000];
        let packed = compress(&mut packer, short, &mut out).unwrap();
        assert_eq!(zstd::bulk::decompress(packed, 5000).unwrap(), short);
    }
}
