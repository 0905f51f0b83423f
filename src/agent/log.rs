//! The agent's console: one line per client event, the client named by its host name.
//! Readable by default (`client web-1 (10.0.0.7): volume root done: ...`), one JSON
//! object per line with `failback serve --log json`. Nothing a client sent reaches the
//! console with control characters (see [`printable`]).

use crate::report::{Event, mib, progress_amounts};
use serde::Deserialize;
use serde_json::Value;

/// How the agent prints its clients' events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogStyle {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line: session, host, ip and the event as posted.
    Json,
}

/// The console line for a posted event from session `id` at `ip`, named `host`.
pub fn line(style: LogStyle, id: &str, host: &str, ip: &str, posted: &Value) -> String {
    printable(&match style {
        LogStyle::Json => serde_json::json!({
            "session": id, "host": host, "ip": ip, "event": posted,
        })
        .to_string(),
        LogStyle::Text => {
            let typed = Event::deserialize(posted).ok();
            format!("client {host} ({ip}): {}", describe(typed.as_ref(), posted))
        }
    })
}

/// `text` as it may be shown on the console: without control characters (escape
/// sequences, carriage returns, bells) or bidirectional overrides, which a client
/// could use to forge or hide lines.
pub fn printable(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            !c.is_control() && !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect()
}

/// A digest as people compare it: its first 16 hex digits.
fn short(digest: &str) -> &str {
    digest.get(..16).unwrap_or(digest)
}

/// A short line for a client's event; an event this agent does not know (`event`
/// is `None`: a newer client's, a broken one) as the JSON `posted`.
pub fn describe(event: Option<&Event>, posted: &Value) -> String {
    let Some(event) = event else {
        return posted.to_string();
    };
    match event {
        Event::Boot {
            version,
            uptime_s,
            secure_boot,
            ..
        } => format!(
            "booted failback {version} in {uptime_s:.1} s, Secure Boot {}",
            if *secure_boot { "on" } else { "off" }
        ),
        Event::Drivers { loaded, failed, .. } if failed.is_empty() => {
            format!("{} drivers loaded", loaded.len())
        }
        Event::Drivers { loaded, failed, .. } => format!(
            "{} drivers loaded, {} failed: {}",
            loaded.len(),
            failed.len(),
            failed.join(", ")
        ),
        Event::Disks { disks } => {
            let names: Vec<String> = disks
                .iter()
                .map(|d| format!("{} {}", d.name, mib(d.size)))
                .collect();
            format!("{} disks: {}", disks.len(), names.join(", "))
        }
        Event::Network { network, .. } => format!(
            "network up: {} {} {}",
            network.interface, network.mac, network.address
        ),
        Event::Waiting { what } => format!("waiting for {what}"),
        Event::Notice { message } => format!("note: {message}"),
        Event::Error { message } => format!("ERROR: {message}"),
        Event::Mapping { choices, .. } => {
            let pairs: Vec<String> = choices
                .iter()
                .map(|c| match &c.target {
                    Some(t) => format!("{} -> {} ({})", c.volume, t.display(), c.why),
                    None => format!("{} excluded", c.volume),
                })
                .collect();
            format!("mapping: {}", pairs.join(", "))
        }
        Event::Plan {
            volume,
            target,
            blocks,
            differing,
            bytes_to_pull,
            dry_run,
            ..
        } => format!(
            "plan {volume} -> {target}: {differing} of {blocks} blocks differ, {} to pull{}",
            mib(*bytes_to_pull),
            if *dry_run { " (dry run)" } else { "" }
        ),
        Event::Pass {
            pass,
            seconds,
            pulled_blocks,
            bytes,
            lag_s,
            ..
        } => format!(
            "pass {pass}: {pulled_blocks} blocks ({}) in {seconds:.1} s; in sync, lag {lag_s:.0} s (not yet consistent)",
            mib(*bytes)
        ),
        Event::CutoverDone {
            pass,
            seconds,
            matched,
            volumes,
            ..
        } => format!(
            "cutover done: final pass {pass} in {seconds:.1} s, {} volume(s), digests {}",
            volumes.len(),
            if *matched {
                "match: consistent"
            } else {
                "MISMATCH"
            }
        ),
        progress @ Event::Progress { volume, phase, .. } => {
            let (amount, wire) = progress_amounts(progress).unwrap_or_default();
            format!("{volume} {phase} {amount} ({wire})")
        }
        Event::VolumeDone {
            volume,
            target,
            sha256,
            remote_sha256,
            pulled_blocks,
            wire_bytes,
            retries,
            seconds,
            ..
        } => {
            let check = if sha256 == remote_sha256 {
                format!("digest {} matches the source", short(sha256))
            } else {
                format!(
                    "digest MISMATCH: target {} source {}",
                    short(sha256),
                    short(remote_sha256)
                )
            };
            format!(
                "volume {volume} -> {target} done: {check}; {} pulled, {} over the wire, {retries} retries, {seconds:.1} s",
                mib(pulled_blocks.saturating_mul(crate::block::BLOCK_SIZE)),
                mib(*wire_bytes)
            )
        }
        Event::Done {
            volumes,
            pulled_blocks,
            wire_bytes,
            seconds,
            dry_run: false,
            ..
        } => format!(
            "done: {volumes} volumes, {} pulled, {} over the wire, {seconds:.1} s",
            mib(pulled_blocks.saturating_mul(crate::block::BLOCK_SIZE)),
            mib(*wire_bytes)
        ),
        Event::Done {
            volumes, seconds, ..
        } => format!("dry run done: {volumes} volumes planned in {seconds:.1} s"),
        Event::AlreadyRecovered { volumes, .. } => {
            let pairs: Vec<String> = volumes.iter().map(|(v, t)| format!("{v} = {t}")).collect();
            format!(
                "already recovered ({}): waiting for the operator",
                pairs.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(posted: Value) -> String {
        line(LogStyle::Text, "0a1b", "web-1", "10.0.0.7", &posted)
    }

    #[test]
    fn events_read_as_lines_naming_the_host() {
        let progress = json!({
            "event": "progress", "volume": "system", "phase": "pulling",
            "done_bytes": 3u64 << 20, "total_bytes": 8u64 << 20,
            "wire_bytes": 1u64 << 19, "retries": 2,
        });
        assert_eq!(
            text(progress),
            "client web-1 (10.0.0.7): system pulling 3.0 MiB of 8.0 MiB (0.5 MiB over the wire, 2 retries)"
        );
        let done = |remote: &str| {
            json!({"event": "volume_done", "volume": "root", "target": "/dev/sda",
                "sha256": "e40cb27758bfec9820c4", "remote_sha256": remote,
                "pulled_blocks": 4, "zero_blocks": 0, "wire_bytes": 1u64 << 20,
                "retries": 0, "seconds": 2.5})
        };
        assert_eq!(
            text(done("e40cb27758bfec9820c4")),
            "client web-1 (10.0.0.7): volume root -> /dev/sda done: digest e40cb27758bfec98 \
             matches the source; 2.0 MiB pulled, 1.0 MiB over the wire, 0 retries, 2.5 s"
        );
        assert!(
            text(done("ffff")).contains("digest MISMATCH: target e40cb27758bfec98 source ffff")
        );
        let done = json!({"event": "done", "volumes": 2, "pulled_blocks": 2,
            "wire_bytes": 1u64 << 20, "retries": 0, "seconds": 3.0, "dry_run": false});
        assert_eq!(
            text(done),
            "client web-1 (10.0.0.7): done: 2 volumes, 1.0 MiB pulled, 1.0 MiB over the wire, 3.0 s"
        );
        let plan = json!({"event": "plan", "volume": "v", "target": "/dev/vdb",
            "size": 1, "blocks": 8, "differing": 2, "zero_blocks": 0,
            "bytes_to_pull": 1u64 << 20, "dry_run": false});
        assert_eq!(
            text(plan),
            "client web-1 (10.0.0.7): plan v -> /dev/vdb: 2 of 8 blocks differ, 1.0 MiB to pull"
        );
    }

    #[test]
    fn unknown_events_are_shown_as_posted_and_json_on_request() {
        for posted in [
            json!({"event": "teleported", "volume": "v"}),
            json!({"event": "progress", "volume": "v", "phase": "trimming",
                "done_bytes": 0, "total_bytes": 0, "wire_bytes": 0, "retries": 0}),
            json!([1, 2]),
        ] {
            assert_eq!(
                text(posted.clone()),
                format!("client web-1 (10.0.0.7): {posted}")
            );
        }
        let posted = json!({"event": "notice", "message": "hi"});
        let json: Value =
            serde_json::from_str(&line(LogStyle::Json, "0a1b", "web-1", "10.0.0.7", &posted))
                .unwrap();
        assert_eq!(json["host"], "web-1");
        assert_eq!(json["event"], posted);
    }

    #[test]
    fn control_characters_never_reach_the_console() {
        assert_eq!(
            printable("\u{1b}[2J\u{1b}[1;31m FORGED\r\n\u{7}\u{202e}ok é"),
            "[2J[1;31m FORGEDok é"
        );
    }
}
