//! Events: what the client tells the operator (and automation) it is doing.
//!
//! Library code never prints: it hands an [`Event`] to a [`Reporter`]. The console
//! reporter prints one JSON object per line (`failback.progress=json`) or a readable
//! line; other reporters (progress bars, the agent report) implement the same trait.

use serde::Serialize;
use std::io::Write;
use std::sync::Mutex;

/// One thing worth telling. Serialized as `{"event":"<name>", ...fields}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// PID 1 is running.
    Boot {
        version: String,
        uptime_s: f64,
        secure_boot: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// Kernel modules loaded by coldplug.
    Drivers {
        loaded: Vec<String>,
        failed: Vec<String>,
        uptime_s: f64,
    },
    /// Local disks found.
    Disks { disks: Vec<crate::disks::Disk> },
    /// Something went wrong; what follows is `failback.after`.
    Error { message: String },
}

/// Where events go.
pub trait Reporter: Send + Sync {
    fn report(&self, event: &Event);
}

/// Output style on the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Json,
    Text,
}

/// Writes events to a stream (the console): JSON lines or readable text.
pub struct ConsoleReporter<W: Write + Send> {
    out: Mutex<W>,
    style: Style,
}

impl<W: Write + Send> ConsoleReporter<W> {
    pub fn new(out: W, style: Style) -> Self {
        Self {
            out: Mutex::new(out),
            style,
        }
    }
}

impl<W: Write + Send> Reporter for ConsoleReporter<W> {
    fn report(&self, event: &Event) {
        let line = match self.style {
            Style::Json => serde_json::to_string(event).unwrap_or_else(|e| {
                format!(r#"{{"event":"error","message":"cannot encode event: {e}"}}"#)
            }),
            Style::Text => text(event),
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // The console is all we have; if it fails there is nobody to tell.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

fn text(event: &Event) -> String {
    match event {
        Event::Boot {
            version,
            uptime_s,
            secure_boot,
            host,
        } => format!(
            "failback {version} started after {uptime_s:.1} s (Secure Boot {}){}",
            if *secure_boot { "on" } else { "off" },
            host.as_ref()
                .map(|h| format!(", host {h}"))
                .unwrap_or_default()
        ),
        Event::Drivers { loaded, failed, .. } => {
            let mut s = format!(
                "drivers: loaded {} module(s): {}",
                loaded.len(),
                loaded.join(" ")
            );
            if !failed.is_empty() {
                s.push_str(&format!("; failed: {}", failed.join(" ")));
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
        Event::Error { message } => format!("ERROR: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
