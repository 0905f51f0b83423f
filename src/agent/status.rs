//! `failback status`: the fleet as an agent sees it, in a terminal (or as JSON); the
//! exit status says whether any host failed.

use super::fleet::{Host, State, summary};
use crate::report::mib;
use anyhow::{Result, bail};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Arguments of `failback status`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  failback status --source https://10.0.0.5:1500 --fingerprint e40c-b277-58bf-ec98-20c4-ed9a\n  failback status --source https://10.0.0.5:1500 --fingerprint e40c-b277-58bf-ec98-20c4-ed9a --json\n\nThe token is read from FAILBACK_TOKEN (or --token). The exit status is 1 while any host has failed."
)]
pub struct StatusArgs {
    #[command(flatten)]
    pub agent: super::operator::AgentArgs,
    /// Print the hosts as JSON (session id -> host) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `failback status`: prints the fleet; an error when any host failed.
pub fn run(args: StatusArgs) -> Result<()> {
    let agent = args.agent.connect()?;
    let hosts: BTreeMap<String, Host> = agent.get_json("/v1/sessions")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&hosts)?);
    } else {
        print!("{}", table(hosts.values(), super::fleet::now()));
    }
    let failed = hosts.values().filter(|h| h.state == State::Failed).count();
    if failed > 0 {
        bail!("{failed} of {} hosts failed", hosts.len());
    }
    Ok(())
}

/// The fleet as a table: a summary line, then one line per host and one per volume.
pub fn table<'a>(hosts: impl Iterator<Item = &'a Host> + Clone, now: f64) -> String {
    let mut out = String::new();
    let counts: Vec<String> = summary(hosts.clone())
        .iter()
        .map(|(s, n)| format!("{n} {}", s.as_str().replace('_', " ")))
        .collect();
    let _ = writeln!(
        out,
        "{} hosts: {}",
        hosts.clone().count(),
        counts.join(", ")
    );
    let mut hosts: Vec<&Host> = hosts.collect();
    hosts.sort_by(|a, b| (&a.host, &a.session).cmp(&(&b.host, &b.session)));
    for h in hosts {
        let printable = super::log::printable;
        let seen = (now - h.last_seen).max(0.0);
        let silent = if seen > 30.0 && !h.state.finished() {
            format!("  SILENT for {seen:.0} s")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:<17} {:<15} {}  seen {seen:.0} s ago{silent}",
            printable(&h.host),
            h.state.as_str(),
            printable(h.mac.as_deref().unwrap_or("-")),
            printable(h.address.as_deref().unwrap_or(&h.ip)),
            printable(h.source.as_deref().unwrap_or("-")),
        );
        if let (Some(pass), lag) = (h.pass, h.lag_s) {
            let _ = writeln!(out, "    pass {pass}, lag {:.0} s", lag.unwrap_or(0.0));
        }
        for (name, v) in &h.volumes {
            let check = match v.matched {
                Some(true) => "digest matches",
                Some(false) => "digest MISMATCH",
                None => "",
            };
            let _ = writeln!(
                out,
                "    {:<12} {:<9} {:>5.1}%  {} pulled of {}  {check}",
                printable(name),
                printable(v.phase.as_deref().unwrap_or("planned")),
                v.ratio() * 100.0,
                mib(v.pulled_bytes),
                mib(v.bytes_to_pull),
            );
        }
        if let Some(e) = &h.error {
            let _ = writeln!(out, "    error: {}", printable(e));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_summary_and_a_line_per_host_and_volume() {
        let mut a = Host::new("s1", "10.0.0.7", 0.0);
        a.host = "web-1".into();
        a.state = State::Done;
        a.volumes.insert(
            "root".into(),
            super::super::fleet::Volume {
                phase: Some("done".into()),
                matched: Some(true),
                pulled_bytes: 2 << 20,
                bytes_to_pull: 2 << 20,
                ..Default::default()
            },
        );
        let mut b = Host::new("s2", "10.0.0.8", 0.0);
        b.host = "db-1".into();
        b.state = State::Failed;
        b.error = Some("no route".into());
        let text = table([a, b].iter(), 100.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "2 hosts: 0 planned, 0 pulling, 0 in sync, 1 done, 1 failed"
        );
        assert!(lines[1].starts_with("db-1 ") && lines[1].contains("failed"));
        assert_eq!(lines[2], "    error: no route");
        assert!(lines[3].starts_with("web-1 ") && !lines[3].contains("SILENT"));
        assert!(lines[4].contains("root") && lines[4].contains("100.0%"));
        assert!(lines[4].contains("2.0 MiB pulled of 2.0 MiB  digest matches"));
    }
}
