//! Continuous failback end to end on 127.0.0.1: `failback pull --continuous` runs
//! passes while a writer keeps changing the served image; the writer stops,
//! `failback cutover` is run, and the target equals the image byte for byte.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Waits until `ready` holds of the events, or panics after `secs` seconds.
fn wait_for(
    events: &Mutex<Vec<serde_json::Value>>,
    secs: u64,
    ready: impl Fn(&[serde_json::Value]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ready(&events.lock().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "timed out; events: {:?}",
            events.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Serves `blocks` random blocks (`seed`) as volume `root` with a zeroed `target.img`
/// beside; returns them and an unattended continuous pull onto it, a pass every
/// `interval` seconds, to be started.
fn continuous_root(blocks: usize, seed: u64, interval: &str) -> (Scenario, PathBuf, Command) {
    let size = blocks * BS;
    let s = Scenario::serve(&[("root", &random_bytes(size, seed))]);
    let target = s.disk("target.img", &vec![0u8; size]);
    let pull = s.pull(&continuous_args(interval, &mapping("root", &target)));
    (s, target, pull)
}

#[test]
fn passes_follow_a_changing_image_until_cutover_makes_the_target_equal() {
    // 48 MiB of data served; the target holds nothing of it yet.
    let (s, target, mut pull) = continuous_root(96, 3, "0.5");
    let served = s.path().join("served-root.img");

    // The writer: 4 KiB at a random place every 20 ms (about 200 KiB/s).
    let writer = Writer::start(&served, 0, 11, Duration::from_millis(20));

    let mut child = pull.spawn().unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (events, stdout) = (events.clone(), child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["event"] != "progress"
                {
                    events.lock().unwrap().push(v);
                }
            }
        })
    };
    let passes = |evs: &[serde_json::Value]| evs.iter().filter(|e| e["event"] == "pass").count();
    wait_for(&events, 300, |evs| {
        passes(evs) >= 3 || evs.iter().any(|e| e["event"] == "error")
    });
    let writes = writer.stop();
    assert!(writes > 10, "the writer wrote {writes} times only");

    let cutover = cutover(&s.agent.url(), &s.agent.fingerprint, &[]);
    let said = text(&cutover);
    assert!(
        cutover.status.success(),
        "{said}\nagent: {}",
        s.agent.output()
    );
    assert!(said.contains("digests match, final pass"), "{said}");

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the pull did not end after cutover"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    reader.join().unwrap();
    assert!(status.success(), "{:?}", events.lock().unwrap());

    let image = std::fs::read(&served).unwrap();
    assert!(
        std::fs::read(&target).unwrap() == image,
        "the target differs from the image"
    );

    let evs = events.lock().unwrap();
    let pass: Vec<&serde_json::Value> = evs.iter().filter(|e| e["event"] == "pass").collect();
    assert!(pass.len() >= 3, "{evs:?}");
    for (n, p) in pass.iter().enumerate() {
        assert_eq!(p["pass"], n as u64 + 1);
        assert_eq!(p["consistent"], false);
        // The lag is the age of the pass's start: the pass's own time.
        let (lag, secs) = (p["lag_s"].as_f64().unwrap(), p["seconds"].as_f64().unwrap());
        assert!(lag >= secs && lag - secs < 1.0, "{p}");
    }
    // The first pass pulled the volume; the later ones what the writer changed.
    let pulled = |p: &serde_json::Value| p["pulled_blocks"].as_u64().unwrap();
    assert_eq!(pulled(pass[0]), 96, "{}", pass[0]);
    assert!(pass[1..].iter().all(|p| pulled(p) < 96), "{pass:?}");
    let done = evs
        .iter()
        .find(|e| e["event"] == "cutover_done")
        .expect("a cutover_done event");
    assert_eq!(done["consistent"], true);
    assert_eq!(done["matched"], true);
    assert_eq!(done["pass"], pass.len() as u64 + 1);
    assert_eq!(done["volumes"][0]["sha256"], linear_digest(&image).as_str());
    assert_eq!(
        done["volumes"][0]["remote_sha256"],
        linear_digest(&image).as_str()
    );
}

#[test]
fn continuous_is_refused_with_an_ebs_source_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args([
            "pull",
            "--continuous",
            "--source",
            "ebs://snap-0123456789abcdef0",
            "--yes",
        ])
        .arg("--map")
        .arg(format!("root={}", dir.path().join("t.img").display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--continuous needs an agent source"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn cutover_without_continuous_clients_says_so() {
    let s = Scenario::serve(&[("root", &random_bytes(BS, 1))]);
    let out = cutover(&s.agent.url(), &s.agent.fingerprint, &["--timeout", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no continuous client"), "{err}");
}

#[test]
fn typing_cutover_on_the_console_cuts_this_host_over() {
    let (s, target, mut pull) = continuous_root(8, 4, "0.2");
    let mut child = pull.stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // In sync after the first pass: then the console listens.
    for line in lines.by_ref().map_while(Result::ok) {
        let pass = line.contains(r#""event":"pass""#);
        seen.push(line);
        if pass {
            break;
        }
    }
    use std::io::Write;
    stdin.write_all(b"cutover\n").unwrap();
    seen.extend(lines.map_while(Result::ok));
    assert!(child.wait().unwrap().success(), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.contains(r#""event":"cutover_done""#)),
        "{seen:?}"
    );
    assert!(
        std::fs::read(&target).unwrap() == std::fs::read(s.path().join("served-root.img")).unwrap()
    );
    // The agent was asked for this host alone.
    let log = s.agent.output();
    assert!(log.contains("cutover asked for host "), "{log}");
}

#[test]
fn a_client_waiting_between_passes_hears_cutover_within_seconds() {
    // A minute between passes: only its posts while it waits can tell it.
    let (s, _target, mut pull) = continuous_root(4, 8, "60");
    let mut child = pull.spawn().unwrap();
    // (Kept open: a pull whose stdout closed would fail.)
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(read_to_first_pass(lines.by_ref()));
    let t0 = Instant::now();
    let out = cutover(&s.agent.url(), &s.agent.fingerprint, &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(child.wait().unwrap().success());
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}
