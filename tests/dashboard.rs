//! The dashboard in a real browser (headless Chromium, Debian's `chromium`): a
//! collector and three pulls at once (two from an agent, one from the test-only EBS
//! server); the page, opened with the token in its URL fragment, shows three rows
//! that reach "done" with the right byte counts; without the token it shows only the
//! login; a host name holding `<script>` is shown as text. Set
//! FAILBACK_DASHBOARD_SCREENSHOT=docs/dashboard.png to keep the screenshot.

mod common;
#[path = "ebs_support/fake.rs"]
mod ebs_server;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVIL: &str = "<script>alert(1)</script>";

/// Chromium, headless, on `url` with `args`; returns what it printed (the DOM with
/// `--dump-dom`). Virtual time lets the page's script run and poll before the dump.
fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .args(["--ignore-certificate-errors", "--virtual-time-budget=4000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("chromium (Debian's chromium package; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A row of the fleet table as the page drew it.
#[derive(Debug)]
struct Row {
    state: String,
    pulled_bytes: u64,
    host: String,
}

/// The rows in a dumped DOM (the script writes them in a fixed form).
fn rows(dom: &str) -> Vec<Row> {
    let attr = |tr: &str, name: &str| {
        let start = tr.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
        tr[start..start + tr[start..].find('"').unwrap()].to_string()
    };
    dom.split("<tr data-session=")
        .skip(1)
        .map(|tr| {
            let host_start = tr.find("<td class=\"host\">").unwrap() + 17;
            let host_end = host_start + tr[host_start..].find("</td>").unwrap();
            Row {
                state: attr(tr, "data-state"),
                pulled_bytes: attr(tr, "data-pulled-bytes").parse().unwrap(),
                host: tr[host_start..host_end].to_string(),
            }
        })
        .collect()
}

#[test]
fn three_pulls_reach_done_on_the_dashboard_and_nothing_shows_without_the_token() {
    // The agent: a 16 MiB volume, 5 blocks of which differ on both targets.
    let base = random_bytes(16 * BS, 51);
    let s = OneVolume::serve("root", mutate(&base, &[1, 2, 7, 8, 12], 52), base.clone());
    let second = s.served.disk("second.img", &base);
    let collector = Agent::start(&s.served.path().join("collector-state"), &[], 0);
    let report = [
        "--report",
        &collector.url(),
        "--report-fingerprint",
        &collector.fingerprint,
    ];
    // The EBS server: a snapshot of 1 GiB with 7 blocks of data.
    let fake = ebs_server::fake(
        BS as u64,
        vec![(
            "snap-d1",
            ebs_server::blocks(BS as u64, (0..7).map(|i| i * 31 + 2), 5),
        )],
        ebs_server::Script::paged(1000),
    );
    let endpoint = ebs_server::serve(fake);
    let ebs_target = disk_image(s.served.path(), "ebs.img", 1 << 30);

    let mut pulls = Vec::new();
    for (host, target) in [("web-1", &s.target), ("web-2", &second)] {
        let map = mapping("root", target);
        let mut args = vec![
            "--map",
            map.as_str(),
            "--yes",
            "--progress",
            "none",
            "--host",
            host,
        ];
        args.extend(report);
        pulls.push(s.served.pull(&args).spawn().unwrap());
    }
    let mut ebs = ebs_server::pull_cmd(&endpoint, "ebs://snap-d1", &ebs_target, "snap-d1");
    ebs.args(report)
        .args(["--report-token", TOKEN, "--host", EVIL])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    pulls.push(ebs.spawn().unwrap());

    // The page polls the collector while the pulls run, until three rows are done.
    let page = format!("{}/#token={TOKEN}", collector.url());
    let deadline = Instant::now() + Duration::from_secs(30);
    let dom = loop {
        let dom = chromium(&page, &["--dump-dom"]);
        let rows = rows(&dom);
        if rows.len() == 3 && rows.iter().all(|r| r.state == "done") {
            break dom;
        }
        if Instant::now() > deadline {
            let outs: Vec<String> = pulls
                .into_iter()
                .map(|p| text(&p.wait_with_output().unwrap()))
                .collect();
            panic!("rows {rows:?} in {dom}\npulls: {outs:#?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for p in pulls {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let mut done = rows(&dom);
    done.sort_by(|a, b| a.host.cmp(&b.host));
    let seen: Vec<(&str, u64)> = done
        .iter()
        .map(|r| (r.host.as_str(), r.pulled_bytes))
        .collect();
    let five = 5 * BS as u64;
    assert_eq!(
        seen,
        [
            ("&lt;script&gt;alert(1)&lt;/script&gt;", 7 * BS as u64),
            ("web-1", five),
            ("web-2", five),
        ],
        "the host name is text, never markup"
    );
    assert!(!dom.contains(EVIL), "{dom}");
    assert!(dom.contains("data-count=\"3\">3 done"), "{dom}");
    assert!(!dom.contains(TOKEN), "the token is not in the page");
    assert!(dom.contains("<form id=\"login\" hidden=\"\">"), "{dom}");

    // Without the token: the login form, and no data.
    let bare = chromium(&collector.url(), &["--dump-dom"]);
    assert!(bare.contains("<form id=\"login\">"), "{bare}");
    assert!(rows(&bare).is_empty() && !bare.contains("web-1"), "{bare}");
    // A wrong token: the login again, saying so.
    let wrong = chromium(
        &format!("{}/#token=not-the-token", collector.url()),
        &["--dump-dom"],
    );
    assert!(wrong.contains("That token is not this agent's."), "{wrong}");
    assert!(!wrong.contains("web-1"), "{wrong}");

    // A screenshot of the fleet, for the README.
    let shots = tempfile::tempdir().unwrap();
    let shot = std::env::var_os("FAILBACK_DASHBOARD_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| shots.path().join("dashboard.png"));
    let shot = std::path::absolute(shot).unwrap();
    chromium(
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,470",
            "--hide-scrollbars",
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
}
