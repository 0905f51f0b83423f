//! The fleet on 127.0.0.1: pulls that report to a collector (`failback serve` without
//! volumes) under their host names; the collector's `/v1/sessions`, `/metrics`
//! (parsed as Prometheus text), `results.jsonl` and `failback status`; and a pull that
//! keeps its speed while its collector hangs.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A 16 MiB volume whose target differs in 5 blocks.
fn setup() -> OneVolume {
    let base = random_bytes(16 * BS, 31);
    let source = mutate(&base, &[0, 3, 4, 9, 15], 32);
    OneVolume::serve("root", source, base)
}

/// A collector: an agent without volumes, with `extra` arguments.
fn collector(dir: &std::path::Path, extra: &[&str]) -> Agent {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    Agent::start_with(&dir.join("collector-state"), &[], 0, |cmd| {
        cmd.args(&extra);
    })
}

/// `--report` to `c` as `host`.
fn report_args(c: &Agent, host: &str) -> Vec<String> {
    [
        "--report",
        &c.url(),
        "--report-fingerprint",
        &c.fingerprint,
        "--host",
        host,
    ]
    .map(str::to_string)
    .to_vec()
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

fn get(c: &Agent, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client().get(format!("{}{path}", c.url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

/// Posts `event` to `c` as the progress of session `id`; the answer's status.
fn post_progress(c: &Agent, id: &str, event: serde_json::Value) -> u16 {
    let resp = client()
        .post(format!("{}/v1/sessions/{id}/progress", c.url()))
        .bearer_auth(TOKEN)
        .json(&event)
        .send()
        .unwrap();
    resp.status().as_u16()
}

/// Prometheus text, parsed strictly: `# HELP`/`# TYPE` lines, else
/// `name{label="value",...} number`. Returns each sample by `name{labels}`.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name in {line:?}"
        );
        if name_end < series.len() {
            let labels = series[name_end..]
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .expect("labels in braces");
            for pair in labels.split("\",") {
                let (key, value) = pair.split_once("=\"").expect("label=\"value\"");
                assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                assert!(!value.trim_end_matches('"').contains('\n'));
            }
        }
        let value: f64 = value.parse().expect("a number");
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{line}"
        );
    }
    samples
}

fn status(c: &Agent, extra: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args([
            "status",
            "--source",
            &c.url(),
            "--fingerprint",
            &c.fingerprint,
        ])
        .args(extra)
        .env("FAILBACK_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_collector_shows_the_fleet_in_sessions_metrics_results_and_status() {
    let s = setup();
    let c = collector(s.served.path(), &[]);
    c.wait_for_output("a collector only", Duration::from_secs(10));
    // Two hosts pull from the agent and report to the collector.
    let second = s.served.disk("second.img", &s.old);
    let pulls = [("web-1", s.target.clone()), ("web-2", second)].map(|(host, target)| {
        let map = mapping("root", &target);
        let mut args = vec!["--map".to_string(), map, "--yes".into()];
        args.extend(["--progress".into(), "none".into()]);
        args.extend(report_args(&c, host));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s.served.pull(&args).spawn().unwrap()
    });
    for p in pulls {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    std::thread::sleep(Duration::from_millis(300));

    // Sessions: both hosts done, with the bytes pulled.
    let (code, body) = get(&c, "/v1/sessions", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let sessions: BTreeMap<String, serde_json::Value> = serde_json::from_str(&body).unwrap();
    let mut hosts: Vec<&str> = sessions
        .values()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["web-1", "web-2"]);
    for h in sessions.values() {
        assert_eq!(h["state"], "done", "{h}");
        assert_eq!(h["volumes"]["root"]["pulled_bytes"], 5 * BS as u64, "{h}");
        assert_eq!(h["volumes"]["root"]["matched"], true);
        assert_eq!(h["source"], s.served.agent.url());
    }
    // The agent pulled from heard nothing: the collector was given.
    let (_, own) = get(&s.served.agent, "/v1/sessions", Some(TOKEN));
    assert_eq!(own, "{}");

    // Metrics: behind the token, parsed as Prometheus text.
    assert_eq!(get(&c, "/metrics", None).0, 401);
    let (code, metrics) = get(&c, "/metrics", Some(TOKEN));
    assert_eq!(code, 200);
    let m = parse_metrics(&metrics);
    assert_eq!(m["failback_hosts{state=\"done\"}"], 2.0);
    assert_eq!(m["failback_hosts{state=\"failed\"}"], 0.0);
    let pulled = "failback_bytes_total{host=\"web-1\",volume=\"root\",kind=\"pulled\"}";
    assert_eq!(m[pulled], (5 * BS) as f64);
    assert_eq!(
        m["failback_volume_progress_ratio{host=\"web-2\",volume=\"root\"}"],
        1.0
    );
    assert_eq!(m["failback_errors_total{host=\"web-1\"}"], 0.0);

    // results.jsonl: one line per host, with the digests compared.
    let results = std::fs::read_to_string(c.state.join("results.jsonl")).unwrap();
    let results: Vec<serde_json::Value> = results
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 2);
    let digest = linear_digest(&s.new);
    for r in &results {
        assert_eq!(r["outcome"], "done");
        assert_eq!(r["volumes"]["root"]["sha256"], digest.as_str());
        assert_eq!(r["volumes"]["root"]["match"], true);
        assert!(r["seconds"].as_f64().unwrap() > 0.0);
    }

    // The console: one readable line per event, each naming the host.
    let log = c.output();
    assert!(
        log.contains("client web-1 (127.0.0.1): volume root -> "),
        "{log}"
    );
    assert!(log.contains("matches the source"), "{log}");
    assert!(!log.contains(TOKEN));

    // failback status: the table, success while nobody failed...
    let out = status(&c, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with("2 hosts: 0 planned, 0 pulling, 0 in sync, 2 done, 0 failed"),
        "{table}"
    );
    // ...and a failure once a host reports an error.
    let failing = serde_json::json!({"event": "error", "message": "disk on fire", "host": "db-1"});
    assert_eq!(post_progress(&c, "s9", failing), 200);
    let out = status(&c, &["--json"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("1 of 3 hosts failed"), "{}", text(&out));
    let json: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["s9"]["error"], "disk on fire");
    let results = std::fs::read_to_string(c.state.join("results.jsonl")).unwrap();
    assert!(
        results
            .lines()
            .nth(2)
            .unwrap()
            .contains("\"outcome\":\"failed\"")
    );
}

#[test]
fn the_collector_logs_json_on_request_and_an_agent_pull_reports_home_by_default() {
    let s = setup();
    let c = collector(s.served.path(), &["--log", "json"]);
    let notice = serde_json::json!({"event": "notice", "message": "hi", "host": "web-9"});
    assert_eq!(post_progress(&c, "s1", notice), 200);
    c.wait_for_output("web-9", Duration::from_secs(10));
    let line = c.output().lines().last().unwrap().to_string();
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (json["host"].as_str(), json["event"]["message"].as_str()),
        (Some("web-9"), Some("hi"))
    );

    // No --report: the agent pulled from hears it, under --host.
    let out = run(s.pull(&["--yes", "--progress", "none", "--host", "app-3"]));
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(Duration::from_millis(300));
    let (_, body) = get(&s.served.agent, "/v1/sessions", Some(TOKEN));
    assert!(body.contains("\"host\":\"app-3\""), "{body}");
    assert!(
        s.served
            .agent
            .output()
            .contains("client app-3 (127.0.0.1): done: ")
    );
}

/// A collector that accepts connections and never answers.
fn hung_collector() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://127.0.0.1:{}", l.local_addr().unwrap().port());
    (l, url)
}

#[test]
fn a_pull_keeps_full_speed_while_its_collector_hangs() {
    let base = random_bytes(64 * BS, 41);
    let changed: Vec<usize> = (0..64).step_by(2).collect();
    let s = OneVolume::serve("root", mutate(&base, &changed, 42), base.clone());
    let pull_seconds = |extra: &[&str]| {
        std::fs::write(&s.target, &base).unwrap();
        let mut args = vec!["--yes", "--progress", "json"];
        args.extend(extra);
        let started = Instant::now();
        let out = run(s.pull(&args));
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(std::fs::read(&s.target).unwrap(), s.new);
        let done = event(&events(&out), "done").unwrap()["seconds"]
            .as_f64()
            .unwrap();
        (done, started.elapsed(), text(&out))
    };
    let (alone, _, _) = pull_seconds(&[]);
    let (_listener, hung) = hung_collector();
    let fp = "00".repeat(32);
    let (reported, whole, out) = pull_seconds(&[
        "--report",
        hung.as_str(),
        "--report-fingerprint",
        fp.as_str(),
    ]);
    // A report that waited for the collector would take its 10 s timeout per event.
    assert!(
        reported < alone * 2.0 + 1.0,
        "pull took {reported:.2} s reporting to a hung collector, {alone:.2} s alone: {out}"
    );
    // The end waits a bounded time for the last reports, then goes.
    assert!(whole < Duration::from_secs(20), "{whole:?}");
}
