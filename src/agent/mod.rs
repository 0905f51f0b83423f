//! `failback serve`: the agent. Serves image files and block devices read-only over
//! HTTPS (self-signed certificate pinned by clients, bearer token):
//!
//! - `GET  /v1/volumes` -> JSON list of [`VolumeInfo`]
//! - `GET  /v1/volumes/{id}/hashes?start=&count=` -> 32-byte SHA-256 per block
//! - `POST /v1/volumes/{id}/blocks` `{"indexes":[..]}` -> framed blocks ([`wire`](crate::source::wire))
//! - `POST /v1/sessions/{id}/progress` <- a client's event; `GET /v1/sessions`
//! - `GET /metrics` (Prometheus text); `GET /` the dashboard (the page asks for the token)
//! - `POST /v1/cutover` `{"host": NAME}` or `{}` (all); `GET /v1/cutover` ([`cutover`])
//!
//! Without volumes it is a collector only: the fleet's reports, nothing to pull.

mod blocks;
mod cutover;
pub mod cutover_cmd;
mod cutover_http;
mod dashboard;
pub mod fleet;
mod freeze;
mod gate;
pub mod limits;
mod log;
mod metrics;
mod operator;
mod results;
mod sessions;
mod stall;
pub mod status;
pub mod tls;

use crate::block;
use crate::block::BLOCK_SIZE;
use crate::disks::identity;
use crate::source::VolumeInfo;
use crate::source::wire::ACCEPT_ZSTD;
use anyhow::{Context, Result, bail};
use gate::{Gate, Ticket};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use limits::Limits;
use sessions::Sessions;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Arguments of `failback serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A volume to serve, NAME=PATH (image file or block device); repeatable. None:
    /// a collector only (the fleet's reports, the dashboard, nothing to pull).
    #[arg(long = "volume")]
    pub volumes: Vec<String>,
    /// How clients' events are printed: text (one readable line each) or json.
    #[arg(long, value_enum, default_value = "text")]
    pub log: log::LogStyle,
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
    /// Freeze the file systems mounted from the served block devices (FIFREEZE)
    /// for the final pass of a cutover; thawed when every client asked is done,
    /// on a failure, at --freeze-timeout, and when the agent is stopped.
    #[arg(long)]
    pub freeze: bool,
    /// Seconds a --freeze lasts at most.
    #[arg(long, default_value_t = 600, requires = "freeze")]
    pub freeze_timeout: u64,
    /// Tests only: every timeout (handshake, request, write) in milliseconds.
    #[arg(long, hide = true, env = "FAILBACK_AGENT_TIMEOUT_MS")]
    pub timeout_ms: Option<u64>,
    /// Tests only: block streams under way at once.
    #[arg(long, hide = true, env = "FAILBACK_AGENT_MAX_STREAMS")]
    pub max_streams: Option<usize>,
    /// Tests only: threads of the blocking pool (tokio's default: 512).
    #[arg(long, hide = true, env = "FAILBACK_AGENT_BLOCKING_THREADS")]
    pub blocking_threads: Option<usize>,
    /// Tests only: sessions kept.
    #[arg(long, hide = true, env = "FAILBACK_AGENT_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
}

impl ServeArgs {
    /// The default limits, with what tests changed.
    fn limits(&self) -> Limits {
        let mut l = Limits::default();
        if let Some(ms) = self.timeout_ms {
            let t = Duration::from_millis(ms);
            (l.handshake, l.request, l.write) = (t, t, t);
        }
        l.streams = self.max_streams.unwrap_or(l.streams);
        l.sessions = self.max_sessions.unwrap_or(l.sessions);
        l
    }
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
    limits: Limits,
    sessions: Mutex<Sessions>,
    cutover: Mutex<cutover::Cutover>,
    /// `--freeze`: the mount points, how long at most, and the freeze under way.
    freeze: Option<cutover_http::Freeze>,
    /// Places for block streams under way.
    streams: Arc<tokio::sync::Semaphore>,
    log: Box<dyn Fn(String) + Send + Sync>,
    log_style: log::LogStyle,
    /// Where `results.jsonl` is appended.
    state_dir: PathBuf,
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
    crate::block::fixed_mmap_threshold();
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
    let token = match args.token.clone() {
        Some(t) if t.len() >= tls::MIN_TOKEN => tls::Token {
            value: t,
            kept: None,
        },
        Some(_) => bail!(
            "--token is too short: use at least {} characters",
            tls::MIN_TOKEN
        ),
        None => tls::token(&state_dir)?,
    };
    let limits = args.limits();
    raise_file_limit();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(id.certs, id.key)
        .context("the TLS certificate and key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.blocking_threads {
        rt.max_blocking_threads(n.max(1));
    }
    let rt = rt
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
        // A kept token is shown once, when made: a console log is no place for it.
        match &token.kept {
            Some(tls::Kept { path, made: true }) => println!(
                "  token:       {}   (new; kept in {})",
                token.value,
                path.display()
            ),
            Some(tls::Kept { path, made: false }) => {
                println!("  token:       kept in {}", path.display())
            }
            None => println!("  token:       as given"),
        }
        if volumes.is_empty() {
            println!("  no volumes: a collector only (reports, dashboard at https://{local}/)");
        }
        for v in volumes.values() {
            println!(
                "  volume {}: {} bytes ({} blocks), read-only",
                v.info.id,
                v.info.size,
                v.info.blocks()
            );
        }
        let freeze = args
            .freeze
            .then(|| cutover_http::Freeze::new(&volumes, args.freeze_timeout));
        let state = Arc::new(State {
            volumes,
            token: token.value,
            limits,
            sessions: Mutex::new(Sessions::new(limits.sessions, limits.session_bytes)),
            cutover: Mutex::new(cutover::Cutover::new(limits.sessions)),
            freeze,
            streams: Arc::new(tokio::sync::Semaphore::new(limits.streams)),
            log: Box::new(|line| println!("{line}")),
            log_style: args.log,
            state_dir,
        });
        if state.freeze.is_some() {
            cutover_http::thaw_on_stop(state.clone());
        }
        serve(listener, Arc::new(config), state).await
    })
}

/// Raises the soft limit of open files to the hard one: the limits above want
/// more connections than the usual soft limit of 1024 allows.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Whether an accept failed for want of file descriptors.
fn out_of_files(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    state: Arc<State>,
) -> Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let limits = state.limits;
    let gate = Gate::new(limits.pending, limits.authenticated);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            // Out of files: the oldest strangers make room. Any error: a pause, so
            // that a failing accept never spins.
            Err(e) if out_of_files(&e) && gate.close_oldest(8) > 0 => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let ticket = Arc::new(gate.admit());
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let closed = ticket.clone();
            tokio::select! {
                () = connection(acceptor, tcp, peer, state, ticket) => {}
                () = closed.closed() => {}
            }
        });
    }
}

/// One connection: the TLS handshake, then HTTP/1.1 until either side ends it.
async fn connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    ticket: Arc<Ticket>,
) {
    let limits = state.limits;
    let io = stall::WriteDeadline::new(tcp, limits.write);
    let Ok(Ok(tls)) = tokio::time::timeout(limits.handshake, acceptor.accept(io)).await else {
        return;
    };
    let svc = hyper::service::service_fn(move |req| {
        let (state, ticket) = (state.clone(), ticket.clone());
        async move { Ok::<_, Infallible>(handle(state, &ticket, peer, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.request)
        .max_buf_size(limits.head_bytes)
        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
        .await;
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

async fn handle(
    state: Arc<State>,
    ticket: &Ticket,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Resp {
    // The dashboard's page holds no data: it asks for the token, then calls the API.
    if req.method() == Method::GET
        && let Some(page) = dashboard::page(req.uri().path())
    {
        return page;
    }
    if !token_ok(&req, &state.token) {
        return text(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    if !ticket.authenticate() {
        let mut resp = text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the agent serves {} connections already: try again later",
                state.limits.authenticated
            ),
        );
        resp.headers_mut().insert(
            "connection",
            hyper::header::HeaderValue::from_static("close"),
        );
        return resp;
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
            let json = state
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .to_json();
            full(StatusCode::OK, "application/json", json)
        }
        (&Method::GET, ["metrics"]) => {
            let sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
            full(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                metrics::render(sessions.hosts()),
            )
        }
        (&Method::POST, ["v1", "cutover"]) => cutover_http::ask(state, req).await,
        (&Method::GET, ["v1", "cutover"]) => cutover_http::status(&state),
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
        // Holes of an image file are hashed without being read.
        let hashes = block::holes::file_block_hashes(&file, size, start..start + count)?;
        Ok(hashes.concat())
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

/// A request's body, at most `max` bytes, sent within the request timeout.
async fn body(state: &State, req: Request<Incoming>, max: usize) -> Option<Bytes> {
    let collect = Limited::new(req.into_body(), max).collect();
    match tokio::time::timeout(state.limits.request, collect).await {
        Ok(Ok(b)) => Some(b.to_bytes()),
        _ => None,
    }
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

async fn blocks(state: Arc<State>, id: String, req: Request<Incoming>) -> Resp {
    let Some(v) = state.volumes.get(&id) else {
        return no_volume(&id);
    };
    let zstd_ok = req.headers().contains_key(ACCEPT_ZSTD);
    let Some(body) = body(&state, req, 1 << 20).await else {
        return text(
            StatusCode::BAD_REQUEST,
            "request body too large, too slow or broken",
        );
    };
    let indexes = match block_indexes(&body, v.info.blocks()) {
        Ok(indexes) => indexes,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let Ok(permit) = state.streams.clone().try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} block streams are under way already: try again shortly",
                state.limits.streams
            ),
        );
    };
    let body = blocks::stream(v.file.clone(), v.info.size, indexes, zstd_ok, permit);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .body(body.boxed())
        .expect("static response parts")
}

async fn progress(state: &State, peer: SocketAddr, id: String, req: Request<Incoming>) -> Resp {
    if !sessions::valid_id(&id) {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "a session id is 1 to {} letters, digits, '-', '_' or '.'",
                sessions::MAX_ID
            ),
        );
    }
    let Some(body) = body(state, req, 64 << 10).await else {
        return text(
            StatusCode::BAD_REQUEST,
            "event too large, too slow or broken",
        );
    };
    let Some((ev, _)) = posted_event(&body) else {
        return text(StatusCode::BAD_REQUEST, "body must be a JSON event");
    };
    let ip = peer.ip().to_string();
    let (host, finished, repeated) = {
        let mut sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
        // The same event again is a continuous client's sign of life: not printed.
        let repeated = sessions.last(&id) == Some(&ev);
        let finished = sessions.record(&id, &ip, &ev, fleet::now());
        let host = sessions.host_name(&id).unwrap_or(&id).to_string();
        (host, finished, repeated)
    };
    if !repeated {
        (state.log)(log::line(state.log_style, &id, &host, &ip, &ev));
    }
    if let Some(done) = finished
        && let Err(e) = results::append(&state.state_dir, &done.result())
    {
        (state.log)(format!("cannot keep the result of {host}: {e:#}"));
    }
    let cutover = cutover_http::heard(state, &id, &ev);
    full(
        StatusCode::OK,
        "application/json",
        serde_json::json!({ "cutover": cutover }).to_string(),
    )
}

/// A client's posted event (any JSON) and the line that shows it (without the
/// client's name); `None` when the body is not JSON. An event this agent does not
/// know (a newer client's, a broken one) is still taken and kept; it is shown as the
/// JSON posted.
pub fn posted_event(body: &[u8]) -> Option<(serde_json::Value, String)> {
    let ev = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let typed = <crate::report::Event as serde::Deserialize>::deserialize(&ev).ok();
    let line = log::describe(typed.as_ref(), &ev);
    Some((ev, line))
}
