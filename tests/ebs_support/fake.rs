//! A small test-only EBS server on 127.0.0.1 (ListSnapshotBlocks, ListChangedBlocks,
//! GetSnapshotBlock with checksums, SigV4 checked by its credential scope), scripted to
//! misbehave: what moto cannot do. Used by tests/ebs_fake.rs and tests/dashboard.rs.
#![allow(dead_code)] // each test binary uses its own part

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

pub const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzz";

/// How the fake misbehaves.
#[derive(Default)]
pub struct Script {
    /// Blocks per page of ListSnapshotBlocks / ListChangedBlocks.
    pub page: usize,
    /// The first N GetSnapshotBlock requests are throttled (400).
    pub throttle: usize,
    /// Then the next N answer 500 (HTML, like moto).
    pub fail5xx: usize,
    /// Block indexes whose first answer is corrupted (the checksum header is right).
    pub corrupt_once: Vec<u64>,
    /// Every request answers this (status, error type, message).
    pub error: Option<(u16, &'static str, &'static str)>,
    /// Every listing page hands out a new NextToken, forever.
    pub endless: bool,
    /// After this many GetSnapshotBlock requests, every BlockToken handed out
    /// so far expires (answers 400 INVALID_BLOCK_TOKEN).
    pub expire_after_gets: Option<usize>,
    /// The first NextToken presented is refused as expired (400 INVALID_PAGE_TOKEN).
    pub expire_a_page_token: bool,
}

impl Script {
    /// Behaves, listing `page` blocks a page.
    pub fn paged(page: usize) -> Script {
        Script {
            page,
            ..Script::default()
        }
    }
}

pub struct Fake {
    pub block_size: u64,
    pub gib: u64,
    /// Snapshot id -> its VolumeSize, where not `gib` (a volume that grew).
    pub gib_of: BTreeMap<String, u64>,
    /// Snapshot id -> blocks.
    pub snaps: BTreeMap<String, BTreeMap<u64, Vec<u8>>>,
    pub script: Mutex<Script>,
    pub gets: AtomicUsize,
    pub authorized: AtomicUsize,
    pub requests: AtomicUsize,
    /// The generation of the BlockTokens handed out (a token of an older one expired).
    pub generation: AtomicUsize,
    /// GetSnapshotBlock requests refused for an expired token.
    pub expired: AtomicUsize,
    /// Blocks whose token was handed out and not yet used, and the most at once:
    /// a bound on the tokens the client holds.
    pub outstanding: Mutex<std::collections::BTreeSet<u64>>,
    pub most_outstanding: AtomicUsize,
    /// Listing calls (first pages: requests without a pageToken).
    pub lists: AtomicUsize,
}

pub fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

impl Fake {
    pub fn answer(
        &self,
        method: &str,
        target: &str,
        auth: &str,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        self.requests.fetch_add(1, SeqCst);
        if auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
            && auth.contains("/ebs/aws4_request")
        {
            self.authorized.fetch_add(1, SeqCst);
        }
        let json = |v: serde_json::Value| {
            (
                200,
                vec![("content-type".into(), "application/json".into())],
                v.to_string().into_bytes(),
            )
        };
        let mut script = self.script.lock().unwrap();
        if let Some((status, kind, message)) = script.error {
            return (
                status,
                vec![(
                    "x-amzn-ErrorType".into(),
                    format!("{kind}:http://internal.amazon.com/"),
                )],
                serde_json::json!({ "message": message })
                    .to_string()
                    .into_bytes(),
            );
        }
        assert_eq!(method, "GET");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let q: BTreeMap<&str, &str> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // Like moto, ListChangedBlocks gives the size of the first (base) snapshot.
        let sized = q
            .get("firstSnapshotId")
            .or(parts.get(1))
            .copied()
            .unwrap_or_default();
        if !q.contains_key("pageToken") && path.ends_with("blocks") {
            self.lists.fetch_add(1, SeqCst);
        }
        let page_of = |items: Vec<serde_json::Value>| {
            let start: usize = q.get("pageToken").map_or_else(
                || {
                    // Like EBS: from the first block at or past StartingBlockIndex.
                    let from: u64 = q
                        .get("startingBlockIndex")
                        .map_or(0, |v| v.parse().unwrap());
                    items.partition_point(|b| b["BlockIndex"].as_u64().unwrap() < from)
                },
                |t| {
                    let t = t.trim_start_matches("p");
                    t.split('.').next().unwrap().parse().unwrap()
                },
            );
            let max: usize = q
                .get("maxResults")
                .map_or(usize::MAX, |v| v.parse().unwrap());
            let end = (start + script.page.min(max)).min(items.len());
            let mut outstanding = self.outstanding.lock().unwrap();
            for b in &items[start..end] {
                if b.get("BlockToken").or(b.get("SecondBlockToken")).is_some() {
                    outstanding.insert(b["BlockIndex"].as_u64().unwrap());
                }
            }
            self.most_outstanding.fetch_max(outstanding.len(), SeqCst);
            let mut v = serde_json::json!({
                "BlockSize": self.block_size,
                "VolumeSize": self.gib_of.get(sized).copied().unwrap_or(self.gib),
                "ExpiryTime": 1.7e9,
            });
            let key = if path.ends_with("changedblocks") {
                "ChangedBlocks"
            } else {
                "Blocks"
            };
            v[key] = serde_json::Value::Array(items[start..end].to_vec());
            if end < items.len() {
                v["NextToken"] = format!("p{end}").into();
            } else if script.endless && self.requests.load(SeqCst) < 5000 {
                // (5000: so that a client that never stops does not hang the test)
                let n = self.requests.load(SeqCst);
                v["NextToken"] = format!("p{end}.{n}").into();
            }
            v
        };
        let generation = self.generation.load(SeqCst);
        if script.expire_a_page_token && q.contains_key("pageToken") {
            script.expire_a_page_token = false;
            self.expired.fetch_add(1, SeqCst);
            return (
                400,
                vec![("x-amzn-ErrorType".into(), "ValidationException".into())],
                br#"{"message":"The pagination token has expired.","Reason":"INVALID_PAGE_TOKEN"}"#
                    .to_vec(),
            );
        }
        match parts.as_slice() {
            ["snapshots", snap, "blocks"] => {
                let items = self.snaps[*snap]
                    .keys()
                    .map(|i| serde_json::json!({"BlockIndex": i, "BlockToken": format!("t+/{i}={generation}")}))
                    .collect();
                json(page_of(items))
            }
            ["snapshots", snap, "changedblocks"] => {
                let base = &self.snaps[q["firstSnapshotId"]];
                let new = &self.snaps[*snap];
                let mut items = Vec::new();
                for i in base
                    .keys()
                    .chain(new.keys())
                    .collect::<std::collections::BTreeSet<_>>()
                {
                    match (base.get(i), new.get(i)) {
                        (a, Some(b)) if a != Some(b) => items.push(serde_json::json!({
                            "BlockIndex": i, "SecondBlockToken": format!("t+/{i}={generation}")})),
                        (Some(_), None) => items.push(serde_json::json!({
                            "BlockIndex": i, "FirstBlockToken": "x"})),
                        _ => {}
                    }
                }
                json(page_of(items))
            }
            ["snapshots", snap, "blocks", index] => {
                let i: u64 = index.parse().unwrap();
                // The token travels percent-encoded ('+', '/', '=').
                let token_gen = q["blockToken"]
                    .strip_prefix(&format!("t%2B%2F{i}%3D"))
                    .and_then(|g| g.parse::<usize>().ok());
                let token_gen = token_gen.unwrap_or_else(|| panic!("token {}", q["blockToken"]));
                let gets = self.gets.fetch_add(1, SeqCst) + 1;
                if script.expire_after_gets == Some(gets) {
                    self.generation.fetch_add(1, SeqCst);
                }
                if token_gen < self.generation.load(SeqCst) {
                    self.expired.fetch_add(1, SeqCst);
                    return (
                        400,
                        vec![("x-amzn-ErrorType".into(), "ValidationException".into())],
                        br#"{"message":"The block token has expired.","Reason":"INVALID_BLOCK_TOKEN"}"#.to_vec(),
                    );
                }
                self.outstanding.lock().unwrap().remove(&i);
                if script.throttle > 0 {
                    script.throttle -= 1;
                    return (
                        400,
                        vec![(
                            "x-amzn-ErrorType".into(),
                            "RequestThrottledException".into(),
                        )],
                        br#"{"message":"Rate exceeded","Reason":"ACCOUNT_THROTTLED"}"#.to_vec(),
                    );
                }
                if script.fail5xx > 0 {
                    script.fail5xx -= 1;
                    return (500, vec![], b"<html>Internal Server Error</html>".to_vec());
                }
                let data = self.snaps[*snap][&i].clone();
                let checksum = b64(&Sha256::digest(&data));
                let mut body = data;
                if let Some(k) = script.corrupt_once.iter().position(|&c| c == i) {
                    script.corrupt_once.remove(k);
                    body[100] ^= 1;
                }
                (
                    200,
                    vec![
                        ("x-amz-Checksum".into(), checksum),
                        ("x-amz-Checksum-Algorithm".into(), "SHA256".into()),
                        ("x-amz-Data-Length".into(), body.len().to_string()),
                    ],
                    body,
                )
            }
            _ => (404, vec![], b"no such path".to_vec()),
        }
    }
}

pub fn serve(fake: Arc<Fake>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let fake = fake.clone();
            std::thread::spawn(move || handle(conn, &fake));
        }
    });
    format!("http://{addr}")
}

pub fn handle(conn: TcpStream, fake: &Fake) {
    // Head and body go in two writes: without this, each answer waits for a
    // delayed ACK (40 ms), and thousands of pages take minutes.
    let _ = conn.set_nodelay(true);
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut it = line.split_whitespace();
        let (method, target) = (
            it.next().unwrap_or("").to_string(),
            it.next().unwrap_or("").to_string(),
        );
        let mut auth = String::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.to_ascii_lowercase().as_str() {
                "authorization" => auth = v.trim().to_string(),
                "content-length" => length = v.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let (status, headers, body) = fake.answer(&method, &target, &auth);
        let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&body).is_err() {
            return;
        }
    }
}

/// A snapshot of `gib` GiB with pseudo-random blocks of `bs` bytes at `indexes`.
pub fn blocks(bs: u64, indexes: impl Iterator<Item = u64>, seed: u8) -> BTreeMap<u64, Vec<u8>> {
    indexes
        .map(|i| {
            let data = (0..bs)
                .map(|k| ((k * 7 + i * 13) as u8).wrapping_mul(seed) ^ (i as u8) | 1)
                .collect();
            (i, data)
        })
        .collect()
}

/// The volume `snap` as bytes.
pub fn image(fake: &Fake, snap: &str) -> Vec<u8> {
    let mut v = vec![0u8; (fake.gib << 30) as usize];
    for (i, d) in &fake.snaps[snap] {
        let off = (*i * fake.block_size) as usize;
        v[off..off + d.len()].copy_from_slice(d);
    }
    v
}

pub fn pull(endpoint: &str, source: &str, target: &Path, map: &str) -> Output {
    pull_with(endpoint, source, target, map, &[])
}

/// [`pull`] with more arguments.
pub fn pull_with(endpoint: &str, source: &str, target: &Path, map: &str, more: &[&str]) -> Output {
    let mut more = more.to_vec();
    more.push("--yes");
    pull_command(endpoint, source, target, map, &more)
        .output()
        .unwrap()
}

/// [`pull`] with a plan reviewed first: 'yes' typed at the question.
pub fn pull_reviewed(
    endpoint: &str,
    source: &str,
    target: &Path,
    map: &str,
    more: &[&str],
) -> Output {
    let mut child = pull_command(endpoint, source, target, map, more)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"yes\n").unwrap();
    child.wait_with_output().unwrap()
}

/// `failback pull --yes` from the fake with its test credentials.
pub fn pull_cmd(endpoint: &str, source: &str, target: &Path, map: &str) -> Command {
    pull_command(endpoint, source, target, map, &["--yes"])
}

/// `failback pull` from the fake with its test credentials, plus `more` arguments.
pub fn pull_command(
    endpoint: &str,
    source: &str,
    target: &Path,
    map: &str,
    more: &[&str],
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_failback"));
    c.args(["pull", "--source", source, "--endpoint", endpoint])
        .args(more)
        .args(["--progress", "json", "--timeout", "10"])
        .arg("--map")
        .arg(format!("{map}={}", target.display()))
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_EBS")
        .env_remove("AWS_DEFAULT_REGION")
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_SESSION_TOKEN", "session-token-secret")
        .env("AWS_REGION", "eu-west-1");
    c
}

pub fn fake(bs: u64, snaps: Vec<(&str, BTreeMap<u64, Vec<u8>>)>, script: Script) -> Arc<Fake> {
    Arc::new(Fake {
        block_size: bs,
        gib: 1,
        gib_of: BTreeMap::new(),
        snaps: snaps.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        script: Mutex::new(script),
        gets: AtomicUsize::new(0),
        authorized: AtomicUsize::new(0),
        requests: AtomicUsize::new(0),
        generation: AtomicUsize::new(0),
        expired: AtomicUsize::new(0),
        outstanding: Mutex::new(Default::default()),
        most_outstanding: AtomicUsize::new(0),
        lists: AtomicUsize::new(0),
    })
}

pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "failback pull failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}
