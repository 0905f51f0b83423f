//! `failback serve` against hostile clients on 127.0.0.1, over raw TCP and TLS
//! sockets: connections that never speak, speak half a request or never read; a
//! client with the token that floods sessions or prints escape sequences. The agent
//! keeps answering the one client that behaves, and keeps its token to itself.

mod common;
use common::*;
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Accepts any certificate: these tests are about the agent, not about pinning.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS connection to the agent, handshake done.
fn tls(port: u16) -> Tls {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).expect("TLS handshake");
    }
    s
}

/// A request with the token; `body` is JSON.
fn request(method: &str, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: agent\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one response (headers and a content-length body): status and body.
fn response(s: &mut impl Read) -> (u16, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("response head");
        assert!(n == 1, "connection closed inside a response head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).to_string())
}

/// One request on a connection of its own.
fn ask(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tls(port);
    s.write_all(request(method, path, body).as_bytes()).unwrap();
    response(&mut s)
}

/// True once the agent closed `s` (end of stream or reset), reading until then
/// (at most until `within` has passed).
fn closed_within(s: &mut impl Read, within: Duration) -> bool {
    let end = Instant::now() + within;
    let mut buf = vec![0u8; 64 << 10];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

fn raw(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

/// An agent serving a 1-block volume of random bytes, with `env` set.
fn agent(dir: &Path, env: &[(&str, &str)]) -> Agent {
    agent_with(dir, env, None)
}

/// [`agent`] with at most `nofile` open files.
fn agent_with(dir: &Path, env: &[(&str, &str)], nofile: Option<u64>) -> Agent {
    let vol = dir.join("root.img");
    std::fs::write(&vol, random_bytes(BS, 3)).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Agent::start_with(&dir.join("state"), &[("root", &vol)], 0, move |cmd| {
        cmd.envs(env);
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    })
}

/// Timeouts of the agent under test (handshake, header, body, write), in ms.
const QUICK: (&str, &str) = ("FAILBACK_AGENT_TIMEOUT_MS", "1000");

#[test]
fn an_authenticated_client_is_answered_while_500_idle_or_slow_connections_are_held() {
    let dir = tempfile::tempdir().unwrap();
    // Fewer files than connections: the agent runs out of them too.
    let a = agent_with(dir.path(), &[], Some(256));
    let mut held = Vec::new();
    for i in 0..500 {
        let mut s = raw(a.port);
        if i % 2 == 1 {
            // Slow: the first bytes of a TLS record, then nothing.
            s.write_all(&[0x16, 0x03, 0x01]).unwrap();
        }
        held.push(s);
    }
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let port = a.port;
    std::thread::spawn(move || tx.send(ask(port, "GET", "/v1/volumes", "")));
    let (status, body) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("no answer within 5 s while 500 connections are held");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"root\""), "{body}");
    eprintln!("answered in {:?}", started.elapsed());
}

#[test]
fn connections_that_stall_before_their_first_request_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), &[QUICK]);
    // No ClientHello at all.
    let mut silent = raw(a.port);
    // Handshake, then half a header.
    let mut half = tls(a.port);
    half.write_all(b"GET /v1/volumes HTTP/1.1\r\nhost: a")
        .unwrap();
    half.flush().unwrap();
    // Handshake, then nothing.
    let mut idle = tls(a.port);
    for (what, closed) in [
        (
            "silent TCP",
            closed_within(&mut silent, Duration::from_secs(4)),
        ),
        (
            "half a header",
            closed_within(&mut half, Duration::from_secs(4)),
        ),
        ("idle TLS", closed_within(&mut idle, Duration::from_secs(4))),
    ] {
        assert!(closed, "a {what} connection is still open after 4 s");
    }
}

#[test]
fn oversized_request_heads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), &[]);
    let mut s = tls(a.port);
    let filler = "x".repeat(64 << 10);
    let req = request("GET", "/v1/volumes", "").replacen(
        "host: agent\r\n",
        &format!("host: agent\r\nx-filler: {filler}\r\n"),
        1,
    );
    // The agent answers 431 and closes, maybe before it read everything: then the
    // reset can overtake the answer.
    let _ = s.write_all(req.as_bytes());
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "a 64 KiB header must be refused: {answer}"
    );
}

#[test]
fn the_oldest_unauthenticated_connections_make_way_and_authenticated_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), &[]);
    let mut client = tls(a.port);
    client
        .write_all(request("GET", "/v1/volumes", "").as_bytes())
        .unwrap();
    assert_eq!(response(&mut client).0, 200);
    let mut idle: Vec<TcpStream> = (0..300).map(|_| raw(a.port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(3)),
        "the oldest of 300 idle connections is still open"
    );
    assert!(
        !closed_within(&mut idle[299], Duration::from_millis(300)),
        "the newest idle connection was closed"
    );
    client
        .write_all(request("GET", "/v1/volumes", "").as_bytes())
        .unwrap();
    assert_eq!(
        response(&mut client).0,
        200,
        "the authenticated connection was closed"
    );
}

/// `POST /blocks` for block 0, 1024 times over, on a connection that then never reads.
fn unread_stream(port: u16) -> Tls {
    let indexes = vec!["0"; 1024].join(",");
    let body = format!("{{\"indexes\":[{indexes}]}}");
    let mut s = tls(port);
    s.write_all(request("POST", "/v1/volumes/root/blocks", &body).as_bytes())
        .unwrap();
    s
}

#[test]
fn block_streams_nobody_reads_hold_no_thread_and_are_closed_after_the_write_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // 8 blocking threads stand for tokio's 512: 20 streams held them all.
    let a = agent(
        dir.path(),
        &[QUICK, ("FAILBACK_AGENT_BLOCKING_THREADS", "8")],
    );
    let mut streams: Vec<Tls> = (0..20).map(|_| unread_stream(a.port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    // Hashing needs the blocking pool too.
    let (tx, rx) = std::sync::mpsc::channel();
    let port = a.port;
    std::thread::spawn(move || {
        tx.send(ask(
            port,
            "GET",
            "/v1/volumes/root/hashes?start=0&count=1",
            "",
        ))
    });
    let (status, body) = rx
        .recv_timeout(Duration::from_millis(900))
        .expect("20 unread block streams hold the blocking pool: no hashes");
    assert_eq!(status, 200, "{body}");
    // Past the write timeout the agent gives up on them.
    std::thread::sleep(Duration::from_secs(2));
    for (k, s) in streams.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "unread stream {k} is still open"
        );
    }
}

#[test]
fn block_streams_past_the_cap_are_told_to_come_back_later() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), &[("FAILBACK_AGENT_MAX_STREAMS", "2")]);
    let _held: Vec<Tls> = (0..2).map(|_| unread_stream(a.port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = ask(
        a.port,
        "POST",
        "/v1/volumes/root/blocks",
        "{\"indexes\":[0]}",
    );
    assert_eq!(status, 503, "{body}");
}

fn post_event(port: u16, session: &str, event: &serde_json::Value) -> u16 {
    let path = format!("/v1/sessions/{session}/progress");
    ask(port, "POST", &path, &event.to_string()).0
}

fn session_ids(port: u16) -> Vec<String> {
    let (status, body) = ask(port, "GET", "/v1/sessions", "");
    assert_eq!(status, 200, "{body}");
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&body).unwrap();
    map.keys().cloned().collect()
}

#[test]
fn sessions_are_bounded_and_the_oldest_finished_go_first() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), &[("FAILBACK_AGENT_MAX_SESSIONS", "4")]);
    let done = serde_json::json!({"event": "done", "volumes": 1, "pulled_blocks": 0,
        "wire_bytes": 0, "retries": 0, "seconds": 1.0, "dry_run": false});
    let busy = serde_json::json!({"event": "notice", "message": "working"});
    for (id, ev) in [
        ("s1", &done),
        ("s2", &busy),
        ("s3", &done),
        ("s4", &busy),
        ("s5", &busy),
    ] {
        assert_eq!(post_event(a.port, id, ev), 200);
    }
    assert_eq!(session_ids(a.port), ["s2", "s3", "s4", "s5"]);
    assert_eq!(post_event(a.port, "s6", &busy), 200);
    assert_eq!(session_ids(a.port), ["s2", "s4", "s5", "s6"]);
    // None finished: the oldest goes.
    assert_eq!(post_event(a.port, "s7", &busy), 200);
    assert_eq!(session_ids(a.port), ["s4", "s5", "s6", "s7"]);
    // A known session is updated in place.
    assert_eq!(post_event(a.port, "s4", &done), 200);
    assert_eq!(session_ids(a.port), ["s4", "s5", "s6", "s7"]);
    // Session ids are short names.
    let long = "x".repeat(200);
    assert_eq!(post_event(a.port, &long, &busy), 400);
    assert_eq!(post_event(a.port, "a%1b", &busy), 400);
}

#[test]
fn what_clients_send_is_shown_without_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), &[]);
    let forged = "\u{1b}[2J\u{1b}[1;31m FORGED: volume_done OK\r\u{7}\u{202e}";
    let progress = serde_json::json!({"event": "progress", "volume": forged,
        "phase": "pulling", "done_bytes": 1, "total_bytes": 2, "wire_bytes": 1, "retries": 0});
    assert_eq!(post_event(a.port, "s1", &progress), 200);
    let notice = serde_json::json!({"event": "notice", "message": forged});
    assert_eq!(post_event(a.port, "s1", &notice), 200);
    std::thread::sleep(Duration::from_millis(300));
    let out = a.output();
    assert!(out.contains("FORGED"), "{out}");
    for c in ['\u{1b}', '\r', '\u{7}', '\u{202e}'] {
        assert!(!out.contains(c), "{c:?} reached the console: {out:?}");
    }
}

#[test]
fn a_short_token_in_the_state_directory_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("token"), "short\n").unwrap();
    let vol = dir.path().join("root.img");
    std::fs::write(&vol, vec![0u8; 4096]).unwrap();
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state)
        .arg("--volume")
        .arg(mapping("root", &vol))
        .env_remove("FAILBACK_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!started, "the agent started with a 5-character token");
    assert!(!out.status.success());
    let path = state.join("token");
    assert!(
        err.contains(&path.display().to_string()) && err.contains("16"),
        "{err}"
    );
}

#[test]
fn the_stored_token_is_printed_only_when_it_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("root.img");
    std::fs::write(&vol, vec![0u8; 4096]).unwrap();
    let state = dir.path().join("state");
    let start = || {
        let a = Agent::start_with(&state, &[("root", &vol)], 0, |cmd| {
            cmd.env_remove("FAILBACK_TOKEN");
        });
        std::thread::sleep(Duration::from_millis(500));
        a.output()
    };
    let first = start();
    let token = std::fs::read_to_string(state.join("token")).unwrap();
    let token = token.trim();
    assert!(first.contains(token), "first start: {first}");
    let again = start();
    assert!(
        !again.contains(token),
        "the token was printed again: {again}"
    );
    assert!(
        again.contains(&state.join("token").display().to_string()),
        "{again}"
    );
}
