//! `failback serve` + `failback pull` end to end on 127.0.0.1: the pull makes the
//! target identical while sending only what differs; dry runs, refusals, wrong
//! token or fingerprint write nothing; the token never shows up anywhere.

mod common;
use common::*;
use std::fs;

/// A 24 MiB volume (last block short) with 3 zero blocks, and a target holding an
/// older version: blocks 2, 5..9 and 20 differ, and the zero blocks differ too.
fn setup() -> OneVolume {
    let size = 24 * BS + 4096 * 3;
    let base = random_bytes(size, 1);
    let mut source = mutate(&base, &[2, 5, 6, 7, 8, 20], 2);
    for b in [10, 11, 24] {
        let end = ((b + 1) * BS).min(size);
        source[b * BS..end].fill(0);
    }
    OneVolume::serve("root", source, base)
}

/// Another agent, serving the same `root` and a 1 MiB `data` volume too.
fn with_data_volume(s: &OneVolume) -> Scenario {
    Scenario::serve(&[("root", &s.new), ("data", &random_bytes(2 * BS, 9))])
}

fn no_token_leak(s: &str) {
    assert!(!s.contains(TOKEN), "the token leaked into: {s}");
}

#[test]
fn pull_makes_the_target_identical_and_sends_only_what_differs() {
    let s = setup();
    let out = run(s.pull(&["--yes", "--progress", "json"]));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(&s.target).unwrap(), s.new);
    let evs = events(&out);
    let plan = event(&evs, "plan").expect("plan event");
    assert_eq!(plan["differing"], 9, "6 changed + 3 zeroed blocks");
    assert_eq!(plan["zero_blocks"], 3);
    assert_eq!(
        plan["bytes_to_pull"],
        6 * BS as u64,
        "the short last block is zero"
    );
    let done = event(&evs, "volume_done").expect("volume_done event");
    let digest = linear_digest(&s.new);
    assert_eq!(done["sha256"], digest.as_str());
    assert_eq!(done["remote_sha256"], digest.as_str());
    assert_eq!(done["pulled_blocks"], 6);
    let wire = done["wire_bytes"].as_u64().unwrap();
    assert!(
        wire >= 6 * BS as u64 && wire < 7 * BS as u64,
        "wire bytes {wire}"
    );
    assert!(event(&evs, "done").is_some());
    assert!(
        evs.iter()
            .any(|e| e["event"] == "progress" && e["phase"] == "pulling")
    );
    no_token_leak(&text(&out));

    // Converged: a second run pulls nothing.
    let again = run(s.pull(&["--yes", "--progress", "json"]));
    assert!(again.status.success(), "{}", text(&again));
    let evs = events(&again);
    assert_eq!(event(&evs, "plan").unwrap()["differing"], 0);
    assert_eq!(event(&evs, "done").unwrap()["wire_bytes"], 0);

    // The agent printed the client's progress, and never the token.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = s.served.agent.output();
    // One readable line per event, the client named by its host name.
    assert!(log.contains(" done: digest "), "agent log: {log}");
    assert!(log.contains("matches the source"), "agent log: {log}");
    assert!(log.contains(": plan root -> "), "agent log: {log}");
    assert!(
        !log.contains("\"event\""),
        "no JSON on the agent's console: {log}"
    );
    assert!(
        log.contains("over the wire"),
        "progress lines, agent log: {log}"
    );
    no_token_leak(&log);
}

#[test]
fn compressible_blocks_travel_compressed() {
    let mut source = vec![0u8; 8 * BS];
    for (i, b) in source.iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1; // repetitive, never zero
    }
    let s = OneVolume::serve("v", source, vec![0u8; 8 * BS]);
    let out = run(s.pull(&["--yes", "--progress", "json"]));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(&s.target).unwrap(), s.new);
    let evs = events(&out);
    let wire = event(&evs, "done").unwrap()["wire_bytes"].as_u64().unwrap();
    assert!(
        wire > 0 && wire < BS as u64,
        "8 blocks of repetitive data took {wire} bytes"
    );
}

#[test]
fn dry_run_and_declined_confirmation_write_nothing() {
    let s = setup();
    let out = run(s.pull(&["--dry-run", "--progress", "json"]));
    assert!(out.status.success(), "{}", text(&out));
    let evs = events(&out);
    assert_eq!(event(&evs, "plan").unwrap()["differing"], 9);
    assert_eq!(event(&evs, "done").unwrap()["dry_run"], true);
    assert_eq!(fs::read(&s.target).unwrap(), s.old);

    // Without --yes it asks; answering "no" writes nothing.
    let mut cmd = s.pull(&["--progress", "none"]);
    cmd.stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"no\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("Type 'yes'"), "{}", text(&out));
    assert_eq!(fs::read(&s.target).unwrap(), s.old);
}

#[test]
fn json_map_and_exclude_are_understood() {
    let s = setup();
    let two = with_data_volume(&s);
    // Unattended with a volume neither mapped nor excluded: refused.
    let map = mapping("root", &s.target);
    let out = run(two.pull(&["--map", &map, "--yes", "--progress", "none"]));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("'data' is neither mapped nor excluded"),
        "{}",
        text(&out)
    );
    assert_eq!(fs::read(&s.target).unwrap(), s.old);
    // JSON form with EXCLUDE: proceeds with root only.
    let json = format!(r#"{{"root":"{}","data":"EXCLUDE"}}"#, s.target.display());
    let out = run(two.pull(&["--map", &json, "--yes", "--progress", "none"]));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(&s.target).unwrap(), s.new);
}

#[test]
fn unsafe_targets_are_refused_and_nothing_is_written() {
    let s = setup();
    let small = s.served.disk("small.img", &vec![7u8; 4 * BS]);
    let mounts = s.served.path().join("mountinfo");
    fs::write(
        &mounts,
        format!(
            "36 35 0:50 / /mnt/victim rw - ext4 {} rw\n",
            s.target.display()
        ),
    )
    .unwrap();
    let t = s.target.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--map".into(), format!("root={}", small.display())],
            "smaller than volume 'root'",
        ),
        (
            vec![
                "--map".into(),
                format!("root={t}"),
                "--mountinfo".into(),
                mounts.display().to_string(),
            ],
            "is mounted on /mnt/victim",
        ),
        (
            vec![
                "--map".into(),
                format!("root={t}"),
                "--boot-disk".into(),
                t.clone(),
            ],
            "the disk this system booted from",
        ),
        (
            vec!["--map".into(), format!("nosuch={t}")],
            "offers only: root",
        ),
        (
            vec!["--map".into(), format!("root={t},root=/x")],
            "names volume 'root' twice",
        ),
        (
            vec!["--map".into(), "root=/nonexistent/disk".into()],
            "cannot open target /nonexistent/disk",
        ),
    ];
    for (args, want) in cases {
        let mut all: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        all.extend(["--yes", "--progress", "none"]);
        let out = run(s.served.pull(&all));
        let msg = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(msg.contains(want), "{args:?}: expected '{want}' in: {msg}");
        assert_eq!(msg.trim().lines().count(), 1, "one line please: {msg}");
        assert_eq!(fs::read(&s.target).unwrap(), s.old, "{args:?} wrote");
        assert_eq!(fs::read(&small).unwrap(), vec![7u8; 4 * BS]);
        no_token_leak(&text(&out));
    }
}

#[test]
fn the_same_target_twice_is_refused() {
    let s = setup();
    let two = with_data_volume(&s);
    // The same file under two spellings.
    let alias = s.served.path().join("alias.img");
    std::os::unix::fs::symlink(&s.target, &alias).unwrap();
    let map = format!("root={},data={}", s.target.display(), alias.display());
    let out = run(two.pull(&["--map", &map, "--yes", "--progress", "none"]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is named for both 'data' and 'root'")
            || String::from_utf8_lossy(&out.stderr).contains("is named for both 'root' and 'data'"),
        "{}",
        text(&out)
    );
    assert_eq!(fs::read(&s.target).unwrap(), s.old);
}

#[test]
fn wrong_token_and_wrong_fingerprint_are_refused_clearly() {
    let s = setup();
    let mut cmd = s.pull(&["--yes", "--progress", "json"]);
    let wrong = "wrong-token-0000000000000000";
    cmd.env("FAILBACK_TOKEN", wrong);
    let out = run(cmd);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("refused the token (HTTP 401): check --token"),
        "{msg}"
    );
    assert!(!msg.contains(wrong), "the wrong token was echoed: {msg}");
    let evs = events(&out);
    let err = event(&evs, "error").expect("error event");
    assert!(err["message"].as_str().unwrap().contains("401"));

    let other = "sha256:".to_string() + &"ab".repeat(32);
    let map = mapping("root", &s.target);
    let out = run(pull_cmd(
        &s.served.agent.url(),
        &other,
        &["--map", &map, "--yes", "--progress", "none"],
    ));
    assert!(!out.status.success());
    let msg = text(&out);
    let seen = format!(
        "presented a certificate with fingerprint {}",
        s.served.agent.fingerprint
    );
    assert!(msg.contains(&seen), "{msg}");
    no_token_leak(&msg);
    assert_eq!(fs::read(&s.target).unwrap(), s.old);
    no_token_leak(&s.served.agent.output());
}

/// A hostile agent on 127.0.0.1: a real certificate (made like `failback serve`'s),
/// and a volume list announcing `root` in blocks of `block_size` bytes; any other
/// request is a 404. Counts the volume lists it gave.
struct LyingAgent {
    port: u16,
    fingerprint: String,
    lists: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _state: tempfile::TempDir,
}

impl LyingAgent {
    fn start(size: u64, block_size: u64) -> LyingAgent {
        use std::io::{Read, Write};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let state = tempfile::tempdir().unwrap();
        let id = failback::agent::tls::identity(state.path(), None, None).unwrap();
        let fingerprint = hex::encode(id.fingerprint);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(id.certs, id.key)
                .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lists = Arc::new(AtomicUsize::new(0));
        let counter = lists.clone();
        let list = format!(r#"[{{"id":"root","size":{size},"block_size":{block_size}}}]"#);
        std::thread::spawn(move || {
            for tcp in listener.incoming().map_while(Result::ok) {
                let (config, counter, list) = (config.clone(), counter.clone(), list.clone());
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut s = rustls::StreamOwned::new(conn, tcp);
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if s.read(&mut byte).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let (status, body) = if head.starts_with(b"GET /v1/volumes ") {
                        counter.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", list)
                    } else {
                        ("404 Not Found", "no\n".to_string())
                    };
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.flush();
                    s.conn.send_close_notify();
                    let _ = s.flush();
                });
            }
        });
        LyingAgent {
            port,
            fingerprint,
            lists,
            _state: state,
        }
    }
}

#[test]
fn an_agent_announcing_another_block_size_is_refused_at_once() {
    let size = 8 * BS as u64;
    for block_size in [0, 1 << 20, 256 << 10, 4096] {
        let agent = LyingAgent::start(size, block_size);
        let dir = tempfile::tempdir().unwrap();
        // A larger disk: nothing may be written into it, least of all past the volume.
        let old = random_bytes(2 * size as usize, 5);
        let target = dir.path().join("target.img");
        fs::write(&target, &old).unwrap();
        let url = format!("https://127.0.0.1:{}", agent.port);
        let map = mapping("root", &target);
        let out = run(pull_cmd(
            &url,
            &agent.fingerprint,
            &["--yes", "--map", &map],
        ));
        let text = text(&out);
        assert!(!out.status.success(), "block size {block_size}: {text}");
        let line = text
            .lines()
            .find(|l| l.contains(&format!("blocks of {block_size} bytes")))
            .unwrap_or_else(|| panic!("block size {block_size}: no refusal in: {text}"));
        assert!(
            line.contains(&url) && line.contains("524288"),
            "block size {block_size}: {line}"
        );
        assert!(!text.contains("panicked"), "{text}");
        assert_eq!(
            agent.lists.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "block size {block_size}: refused at once, not retried"
        );
        assert!(fs::read(&target).unwrap() == old, "the target was written");
    }
}
