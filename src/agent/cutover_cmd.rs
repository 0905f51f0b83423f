//! `failback cutover`: asks the agent to cut its continuous clients over (after
//! the operator stopped the workload), waits for each one's `cutover_done`, and
//! prints per host whether the final digests match and how long the final pass
//! took (the downtime it added).

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Arguments of `failback cutover`.
#[derive(Debug, clap::Args)]
pub struct CutoverArgs {
    #[command(flatten)]
    pub agent: super::operator::AgentArgs,
    /// Cut over this host only (default: every continuous client of the agent).
    #[arg(long)]
    pub host: Option<String>,
    /// Seconds of silence after which a client counts as vanished.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// How one client ended its cutover.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// `cutover_done`: whether the digests matched, the final pass's seconds.
    Done {
        matched: bool,
        seconds: f64,
    },
    Failed(String),
    /// Not heard for this many seconds.
    Vanished(f64),
}

/// Each client's name (host, else session) and how it ended, once every client
/// concerned has ended; `None` while one is still at it (or none is known yet).
pub fn settled(status: &Value, host: Option<&str>, timeout: f64) -> Option<Vec<(String, Ended)>> {
    let clients = status["clients"].as_array()?;
    let mut ended = Vec::new();
    for c in clients {
        let name = c["host"].as_str().map(str::to_string);
        if host.is_some() && name.as_deref() != host {
            continue;
        }
        let name =
            name.unwrap_or_else(|| format!("session {}", c["session"].as_str().unwrap_or("?")));
        let silent = c["silent_s"].as_f64().unwrap_or(0.0);
        let end = match c["state"].as_str() {
            Some("done") => Ended::Done {
                matched: c["cutover_done"]["matched"].as_bool().unwrap_or(false),
                seconds: c["cutover_done"]["seconds"].as_f64().unwrap_or(0.0),
            },
            Some("failed") => Ended::Failed(c["error"].as_str().unwrap_or("failed").to_string()),
            _ if silent > timeout => Ended::Vanished(silent),
            _ => return None,
        };
        ended.push((name, end));
    }
    (!ended.is_empty()).then_some(ended)
}

/// Runs `failback cutover`.
pub fn run(args: CutoverArgs) -> Result<()> {
    let agent = args.agent.connect()?;
    let body = match &args.host {
        Some(h) => json!({ "host": h }),
        None => json!({}),
    };
    agent
        .json("/v1/cutover", Some(&body))
        .with_context(|| format!("cannot ask {} for cutover", args.agent.source))?;
    let who = args.host.as_deref().unwrap_or("every continuous client");
    eprintln!("cutover asked of {who}; waiting for the final passes");
    let timeout = args.timeout.max(1) as f64;
    let started = Instant::now();
    let ended = loop {
        let status = agent.json("/v1/cutover", None)?;
        if let Some(ended) = settled(&status, args.host.as_deref(), timeout) {
            break ended;
        }
        if status["clients"].as_array().is_none_or(|c| c.is_empty())
            && started.elapsed().as_secs_f64() > timeout
        {
            let named = args.host.as_ref().map(|h| format!(" named {h}"));
            bail!(
                "no continuous client{} reports to {}: start `failback pull --continuous` first",
                named.unwrap_or_default(),
                args.agent.source
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let mut failed = 0;
    for (name, end) in &ended {
        let line = match end {
            Ended::Done {
                matched: true,
                seconds,
            } => format!("{name}: digests match, final pass {seconds:.1} s"),
            Ended::Done {
                matched: false,
                seconds,
            } => format!("{name}: DIGESTS DIFFER after the final pass ({seconds:.1} s)"),
            Ended::Failed(e) => format!("{name}: FAILED: {e}"),
            Ended::Vanished(s) => format!("{name}: VANISHED (silent for {s:.0} s)"),
        };
        failed += usize::from(!matches!(end, Ended::Done { matched: true, .. }));
        println!("{line}");
    }
    if failed > 0 {
        bail!("cutover failed for {failed} of {} client(s)", ended.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutover_ends_when_every_client_concerned_ended() {
        let status = |states: &[(&str, &str, f64)]| {
            let clients: Vec<Value> = states
                .iter()
                .map(|(host, state, silent)| {
                    json!({"session": "s", "host": host, "state": state, "silent_s": silent,
                        "error": "disk gone",
                        "cutover_done": {"matched": true, "seconds": 2.5}})
                })
                .collect();
            json!({ "clients": clients })
        };
        assert_eq!(settled(&status(&[]), None, 60.0), None);
        assert_eq!(
            settled(
                &status(&[("a", "done", 0.0), ("b", "final", 1.0)]),
                None,
                60.0
            ),
            None
        );
        // Only the host asked for counts.
        let a = settled(
            &status(&[("a", "done", 0.0), ("b", "final", 1.0)]),
            Some("a"),
            60.0,
        );
        assert_eq!(
            a,
            Some(vec![(
                "a".into(),
                Ended::Done {
                    matched: true,
                    seconds: 2.5
                }
            )])
        );
        let all = settled(
            &status(&[
                ("a", "failed", 0.0),
                ("b", "final", 61.0),
                ("c", "passes", 70.0),
            ]),
            None,
            60.0,
        );
        assert_eq!(
            all,
            Some(vec![
                ("a".into(), Ended::Failed("disk gone".into())),
                ("b".into(), Ended::Vanished(61.0)),
                ("c".into(), Ended::Vanished(70.0)),
            ])
        );
    }
}
