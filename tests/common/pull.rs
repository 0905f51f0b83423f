//! `failback pull` on the host, and what it printed: its JSON events and its text.

use super::agent::TOKEN;
use super::paths::bin;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `failback pull` against `url` with the agent's fingerprint, plus `extra` args.
pub fn pull_cmd(url: &str, fingerprint: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("pull")
        .arg("--source")
        .arg(url)
        .arg("--fingerprint")
        .arg(fingerprint)
        .env("FAILBACK_TOKEN", TOKEN)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The arguments of an unattended `failback pull --continuous` with JSON progress,
/// a pass every `interval` seconds, mapping `map` (VOLUME=PATH).
pub fn continuous_args<'a>(interval: &'a str, map: &'a str) -> [&'a str; 8] {
    [
        "--continuous",
        "--interval",
        interval,
        "--yes",
        "--progress",
        "json",
        "--map",
        map,
    ]
}

/// Reads a pull's output `lines` up to its first pass event; false if they end first.
pub fn read_to_first_pass(lines: impl Iterator<Item = std::io::Result<String>>) -> bool {
    lines
        .map_while(Result::ok)
        .any(|l| l.contains(r#""event":"pass""#))
}

pub fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run failback pull")
}

/// JSON events from a pull's stdout.
pub fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn event<'a>(evs: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    evs.iter().find(|e| e["event"] == name)
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What a pull left: `target` holds `expected` (else the failure says `differs`), and
/// its output each of `fields` (JSON, as `"zero_blocks":1`).
pub fn assert_pulled(out: &Output, target: &Path, expected: &[u8], differs: &str, fields: &[&str]) {
    assert!(std::fs::read(target).unwrap() == expected, "{differs}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for field in fields {
        assert!(stdout.contains(field), "{stdout}");
    }
}
