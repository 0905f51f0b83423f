//! The console reporter: one JSON object per line (`failback.progress=json`), or a
//! readable line per event with progress as a bar redrawn in place.

use super::{Event, Reporter, Style};
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Writes events to a stream (the console): JSON lines, or readable text where
/// progress is one bar per volume, redrawn in place with a carriage return (no cursor
/// addressing: it works on a serial line, a BMC's console and VGA alike).
pub struct ConsoleReporter<W: Write + Send> {
    out: Mutex<Console<W>>,
    style: Style,
}

struct Console<W> {
    out: W,
    /// A progress bar is on the current line (no newline after it yet).
    bar_open: bool,
    last_bar: Option<Instant>,
    /// The latest progress not drawn (it came too soon after the last): drawn before
    /// the next line, so that every bar ends at its final value.
    pending: Option<Event>,
}

/// How often a bar is redrawn at most.
const BAR_EVERY: Duration = Duration::from_millis(250);

impl<W: Write + Send> ConsoleReporter<W> {
    pub fn new(out: W, style: Style) -> Self {
        Self {
            out: Mutex::new(Console {
                out,
                bar_open: false,
                last_bar: None,
                pending: None,
            }),
            style,
        }
    }
}

impl<W: Write + Send> Reporter for ConsoleReporter<W> {
    fn report(&self, event: &Event) {
        let mut c = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // The console is all we have; if it fails there is nobody to tell.
        match (self.style, event) {
            (Style::Json, _) => {
                let line = serde_json::to_string(event).unwrap_or_else(|e| {
                    format!(r#"{{"event":"error","message":"cannot encode event: {e}"}}"#)
                });
                let _ = writeln!(c.out, "{line}");
            }
            (Style::Text, Event::Progress { .. }) => {
                let now = Instant::now();
                if c.last_bar.is_some_and(|t| now - t < BAR_EVERY) {
                    c.pending = Some(event.clone());
                    return;
                }
                c.last_bar = Some(now);
                c.pending = None;
                let _ = write!(c.out, "\r{}", bar(event));
                c.bar_open = true;
            }
            (Style::Text, _) => {
                if let Some(last) = c.pending.take() {
                    let _ = write!(c.out, "\r{}", bar(&last));
                }
                if std::mem::take(&mut c.bar_open) {
                    let _ = writeln!(c.out);
                }
                let _ = writeln!(c.out, "{}", text(event));
            }
        }
        let _ = c.out.flush();
    }
}

/// A progress event as a bar of fixed width (76 columns).
fn bar(event: &Event) -> String {
    let Event::Progress {
        volume,
        phase,
        done_bytes,
        total_bytes,
        wire_bytes,
        ..
    } = event
    else {
        return text(event);
    };
    let phase = phase.label(*wire_bytes);
    let share = if *total_bytes == 0 {
        1.0
    } else {
        (*done_bytes as f64 / *total_bytes as f64).min(1.0)
    };
    let filled = (share * 24.0).round() as usize;
    let name: String = volume.chars().take(12).collect();
    format!(
        "{name:>12} {phase:<9} [{}{}] {:>3.0}% {:>9} of {:<9}",
        "=".repeat(filled),
        " ".repeat(24 - filled),
        share * 100.0,
        mib(*done_bytes),
        mib(*total_bytes)
    )
}

/// One readable line (or a few) for an event.
pub fn text(event: &Event) -> String {
    match event {
        Event::Boot {
            version,
            uptime_s,
            secure_boot,
            host,
            ..
        } => format!(
            "failback {version} started after {uptime_s:.1} s (Secure Boot {}){}",
            if *secure_boot { "on" } else { "off" },
            host.as_ref()
                .map(|h| format!(", host {h}"))
                .unwrap_or_default()
        ),
        Event::Drivers {
            loaded,
            failed,
            params,
            ..
        } => {
            let mut s = format!(
                "drivers: loaded {} module(s): {}",
                loaded.len(),
                loaded.join(" ")
            );
            if !failed.is_empty() {
                s.push_str(&format!("; failed: {}", failed.join(" ")));
            }
            if !params.is_empty() {
                let given: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("; parameters: {}", given.join(" ")));
            }
            s
        }
        Event::Disks { disks } => {
            let mut s = format!("disks: {} found", disks.len());
            for d in disks {
                s.push_str(&format!("\n  {d}"));
            }
            s
        }
        Event::Network { network: n, .. } => format!(
            "network: {} ({}) {} by {}, gateway {}, DNS {}{}",
            n.interface,
            n.mac,
            n.address,
            n.method,
            n.gateway.map_or("none".to_string(), |g| g.to_string()),
            n.dns
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            n.clock
                .as_ref()
                .map_or(String::new(), |c| format!("; clock {c}"))
        ),
        Event::Waiting { what } => format!("waiting for {what}"),
        Event::Notice { message } => format!("note: {message}"),
        Event::Error { message } => format!("ERROR: {message}"),
        Event::Mapping {
            choices,
            map_by_size,
        } => {
            let mut s = if *map_by_size {
                "mapping (the only fit by size allowed: map_by_size):".to_string()
            } else {
                "mapping:".to_string()
            };
            for c in choices {
                let to = c
                    .target
                    .as_ref()
                    .map_or("EXCLUDE".into(), |t| t.display().to_string());
                s.push_str(&format!("\n  {} -> {to}: {}", c.volume, c.why));
            }
            s
        }
        Event::Plan {
            volume,
            target,
            blocks,
            differing,
            zero_blocks,
            bytes_to_pull,
            dry_run,
            ..
        } => format!(
            "{}{volume} -> {target}: {differing} of {blocks} blocks differ; pull {} blocks ({}), zero {zero_blocks} locally",
            if *dry_run {
                "plan (dry run): "
            } else {
                "plan: "
            },
            differing - zero_blocks,
            mib(*bytes_to_pull)
        ),
        Event::Progress { volume, phase, .. } => {
            let (amount, wire) = progress_amounts(event).unwrap_or_default();
            format!("{volume}: {phase} {amount}, {wire}")
        }
        Event::VolumeDone {
            volume,
            target,
            sha256,
            remote_sha256,
            pulled_blocks,
            zero_blocks,
            wire_bytes,
            retries,
            seconds,
        } => format!(
            "{volume} -> {target}: done in {seconds:.1} s, pulled {pulled_blocks} blocks ({} over the wire), zeroed {zero_blocks}, {retries} retries\n  target sha256 {sha256}\n  remote sha256 {remote_sha256}",
            mib(*wire_bytes)
        ),
        Event::Done {
            volumes,
            pulled_blocks,
            wire_bytes,
            retries,
            seconds,
            dry_run,
        } => {
            if *dry_run {
                format!("dry run: {volumes} volume(s) planned in {seconds:.1} s, nothing written")
            } else {
                format!(
                    "done: {volumes} volume(s), {pulled_blocks} blocks pulled, {} over the wire, {retries} retries, {seconds:.1} s",
                    mib(*wire_bytes)
                )
            }
        }
        Event::Pass { pass, lag_s, .. } => {
            format!("in sync, lag {lag_s:.0} s; waiting for cutover (pass {pass})")
        }
        Event::CutoverDone {
            seconds,
            matched,
            volumes,
            ..
        } => {
            let mut s = format!(
                "cutover done: final pass in {seconds:.1} s, {} volume(s) verified whole: {}",
                volumes.len(),
                if *matched {
                    "every digest matches; the targets are a consistent copy"
                } else {
                    "DIGESTS DIFFER"
                }
            );
            for v in volumes {
                s.push_str(&format!("\n  {} -> {}: {}", v.volume, v.target, v.sha256));
            }
            s
        }
        Event::AlreadyRecovered {
            volumes,
            boot_medium,
        } => {
            let found: Vec<String> = volumes.iter().map(|(v, t)| format!("{v} on {t}")).collect();
            format!(
                "already recovered: every target holds its volume ({}), and this machine booted \
                 failback again; remove the boot medium{} or put the recovered disk first in \
                 the boot order. Not rebooting (it would boot failback again).",
                found.join(", "),
                boot_medium
                    .as_ref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            )
        }
    }
}

/// A progress event's amounts in words, as the console and the agent show them:
/// `DONE of TOTAL` and `WIRE over the wire, N retries` (`None` for another event).
pub fn progress_amounts(event: &Event) -> Option<(String, String)> {
    let Event::Progress {
        done_bytes,
        total_bytes,
        wire_bytes,
        retries,
        ..
    } = event
    else {
        return None;
    };
    Some((
        format!("{} of {}", mib(*done_bytes), mib(*total_bytes)),
        format!("{} over the wire, {retries} retries", mib(*wire_bytes)),
    ))
}

/// Bytes as people read them in lines: `12.3 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Phase;

    #[test]
    fn json_events_are_one_line_tagged_objects() {
        let mut buf = Vec::new();
        {
            let r = ConsoleReporter::new(&mut buf, Style::Json);
            r.report(&Event::Boot {
                version: "1.2.3".into(),
                uptime_s: 4.5,
                secure_boot: true,
                host: Some("rack1-07".into()),
                consoles: vec![],
            });
            r.report(&Event::Error {
                message: "two\nlines".into(),
            });
        }
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let boot: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(boot["event"], "boot");
        assert_eq!(boot["version"], "1.2.3");
        assert_eq!(boot["secure_boot"], true);
        assert_eq!(boot["host"], "rack1-07");
        let err: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(err["message"], "two\nlines");
    }

    #[test]
    fn text_progress_is_one_bar_redrawn_in_place_and_ends_at_its_final_value() {
        let progress = |done: u64| Event::Progress {
            volume: "system".into(),
            phase: Phase::Pulling,
            done_bytes: done << 20,
            total_bytes: 100 << 20,
            wire_bytes: 0,
            retries: 0,
        };
        let mut buf = Vec::new();
        {
            let r = ConsoleReporter::new(&mut buf, Style::Text);
            r.report(&progress(25));
            r.report(&progress(26)); // within 250 ms: not drawn yet
            r.report(&progress(93)); // superseded: never drawn
            r.report(&progress(100)); // the last: drawn before the next line
            r.report(&Event::Notice {
                message: "next".into(),
            });
        }
        let out = String::from_utf8(buf).unwrap();
        assert_eq!(out.matches('\r').count(), 2, "{out:?}");
        let (bars, rest) = out.split_once('\n').unwrap();
        let drawn: Vec<&str> = bars.split('\r').filter(|b| !b.is_empty()).collect();
        assert!(
            drawn[0].contains("system pulling") && drawn[0].contains(" 25% "),
            "{drawn:?}"
        );
        assert!(
            drawn[0].contains(&format!("[{}{}]", "=".repeat(6), " ".repeat(18))),
            "{drawn:?}"
        );
        let bar = drawn[1];
        assert!(
            bar.contains(" 100% ") && bar.contains(&format!("[{}]", "=".repeat(24))),
            "{bar:?}"
        );
        assert!(bar.len() <= 79, "fits a console line: {}", bar.len());
        assert_eq!(rest, "note: next\n");
    }

    #[test]
    fn a_progress_line_gives_the_amounts_in_mib() {
        let event = Event::Progress {
            volume: "system".into(),
            phase: Phase::Verifying,
            done_bytes: 25 << 20,
            total_bytes: 100 << 20,
            wire_bytes: 3 << 19,
            retries: 2,
        };
        assert_eq!(
            text(&event),
            "system: verifying 25.0 MiB of 100.0 MiB, 1.5 MiB over the wire, 2 retries"
        );
    }

    #[test]
    fn hashing_while_blocks_are_pulled_says_both() {
        let hashing = |wire: u64| {
            bar(&Event::Progress {
                volume: "system".into(),
                phase: Phase::Hashing,
                done_bytes: 3 << 30,
                total_bytes: 4 << 30,
                wire_bytes: wire,
                retries: 0,
            })
        };
        assert!(hashing(0).contains("system hashing "), "{}", hashing(0));
        let both = hashing(5 << 20);
        assert!(both.contains("system hash+pull "), "{both}");
        assert!(both.len() <= 79, "fits a console line: {}", both.len());
    }

    #[test]
    fn already_recovered_says_what_it_found_and_what_to_change() {
        let event = Event::AlreadyRecovered {
            volumes: [("system", "/dev/nvme0n1"), ("data", "/dev/vda")]
                .map(|(v, t)| (v.to_string(), t.to_string()))
                .into(),
            boot_medium: Some("/dev/sr0".into()),
        };
        assert_eq!(
            text(&event),
            "already recovered: every target holds its volume (data on /dev/vda, system on \
             /dev/nvme0n1), and this machine booted failback again; remove the boot medium \
             (/dev/sr0) or put the recovered disk first in the boot order. Not rebooting (it \
             would boot failback again)."
        );
    }
}
