//! `failback pull` through an HTTPS proxy: a CONNECT proxy on 127.0.0.1 counts
//! the tunnels it makes to a `failback serve` agent; `--proxy` and HTTPS_PROXY
//! both send every request through it; an unreachable proxy is one clear line.

mod common;
use common::*;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A minimal HTTP CONNECT proxy: one thread per client, bytes copied both ways.
struct ConnectProxy {
    port: u16,
    tunnels: Arc<AtomicUsize>,
    targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tunnels = Arc::new(AtomicUsize::new(0));
        let targets = Arc::new(Mutex::new(Vec::new()));
        let (t, g) = (tunnels.clone(), targets.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (t, g) = (t.clone(), g.clone());
                std::thread::spawn(move || tunnel(client, &t, &g));
            }
        });
        ConnectProxy {
            port,
            tunnels,
            targets,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn tunnel(client: TcpStream, tunnels: &AtomicUsize, targets: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    // Skip the headers up to the empty line.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let mut words = line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        let _ = (&client).write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
        return;
    };
    let Ok(upstream) = TcpStream::connect(target) else {
        let _ = (&client).write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return;
    };
    tunnels.fetch_add(1, Ordering::SeqCst);
    targets.lock().unwrap().push(target.to_string());
    (&client)
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .unwrap();
    // The client speaks first (TLS ClientHello): nothing is buffered in `reader`.
    assert!(reader.buffer().is_empty());
    let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let up = std::thread::spawn(move || copy(c2, u2));
    copy(upstream, client);
    let _ = up.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn setup() -> OneVolume {
    let base = random_bytes(6 * BS, 5);
    let source = mutate(&base, &[1, 4], 6);
    OneVolume::serve("root", source, base)
}

#[test]
fn pull_goes_through_the_proxy_given_by_flag() {
    let s = setup();
    let proxy = ConnectProxy::start();
    let mut cmd = s.pull(&["--yes", "--progress", "json", "--proxy", &proxy.url()]);
    cmd.env_remove("HTTPS_PROXY").env_remove("https_proxy");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(&s.target).unwrap(), s.new);
    let tunnels = proxy.tunnels.load(Ordering::SeqCst);
    assert!(tunnels >= 1, "no tunnel through the proxy");
    let agent = s.served.agent.url();
    let agent_host = agent.trim_start_matches("https://").trim_end_matches('/');
    assert!(
        proxy
            .targets
            .lock()
            .unwrap()
            .iter()
            .all(|t| t == agent_host),
        "tunnels to {:?}, expected only {agent_host}",
        proxy.targets.lock().unwrap()
    );
    eprintln!("{tunnels} tunnel(s) through the proxy");
}

#[test]
fn pull_honours_https_proxy_from_the_environment() {
    let s = setup();
    let proxy = ConnectProxy::start();
    let mut cmd = s.pull(&["--yes", "--progress", "json"]);
    cmd.env("HTTPS_PROXY", proxy.url())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(&s.target).unwrap(), s.new);
    assert!(proxy.tunnels.load(Ordering::SeqCst) >= 1);
}

#[test]
fn without_a_proxy_nothing_goes_through_it() {
    // The control: the same pull without --proxy makes no tunnel.
    let s = setup();
    let proxy = ConnectProxy::start();
    let mut cmd = s.pull(&["--yes", "--progress", "json"]);
    cmd.env_remove("HTTPS_PROXY").env_remove("https_proxy");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(proxy.tunnels.load(Ordering::SeqCst), 0);
}

#[test]
fn an_unreachable_proxy_is_one_clear_line() {
    let s = setup();
    // A port nobody listens on: bind, note, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = format!("http://127.0.0.1:{port}");
    let out = run(s.pull(&[
        "--yes",
        "--progress",
        "none",
        "--max-attempts",
        "1",
        "--proxy",
        &proxy,
    ]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("proxy"))
        .unwrap_or_else(|| panic!("no line names the proxy:\n{stderr}"));
    assert!(
        line.contains(&format!("cannot reach the HTTPS proxy {proxy}"))
            && line.contains("Connection refused")
            && line.contains("--proxy"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "one line:\n{stderr}"
    );
}
