//! `results.jsonl` in the agent's state directory: one line per host that finished
//! (host, volumes, digests, bytes, seconds, outcome), appended, never rewritten, so
//! the record of a failback outlives the agent.

use anyhow::{Context, Result};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's path in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("results.jsonl")
}

/// Appends `result` as one line (a single write: lines of hosts finishing at once
/// never interleave).
pub fn append(state_dir: &Path, result: &Value) -> Result<()> {
    let path = path(state_dir);
    let mut line = serde_json::to_vec(result)?;
    line.push(b'\n');
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot make {}", state_dir.display()))?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&line))
        .with_context(|| format!("cannot append to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_appended_one_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        append(&state, &serde_json::json!({"host": "a"})).unwrap();
        append(&state, &serde_json::json!({"host": "b\nc"})).unwrap();
        let text = std::fs::read_to_string(path(&state)).unwrap();
        let hosts: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            hosts,
            [
                serde_json::json!({"host": "a"}),
                serde_json::json!({"host": "b\nc"})
            ]
        );
    }
}
