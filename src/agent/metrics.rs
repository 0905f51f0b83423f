//! `GET /metrics`: the fleet in Prometheus' text exposition format (version 0.0.4).

use super::fleet::{Host, summary};
use std::fmt::Write;

/// A label value as the format quotes it: `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics of `hosts`.
pub fn render<'a>(hosts: impl Iterator<Item = &'a Host> + Clone) -> String {
    let mut out = String::new();
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    head(&mut out, "failback_hosts", "gauge", "Hosts in each state.");
    for (state, n) in summary(hosts.clone()) {
        let _ = writeln!(out, "failback_hosts{{state=\"{}\"}} {n}", state.as_str());
    }
    head(
        &mut out,
        "failback_bytes_total",
        "counter",
        "Bytes of each volume pulled (written) and hashed.",
    );
    for h in hosts.clone() {
        for (name, v) in &h.volumes {
            for (kind, bytes) in [("pulled", v.pulled_bytes), ("hashed", v.hashed_bytes)] {
                let _ = writeln!(
                    out,
                    "failback_bytes_total{{host=\"{}\",volume=\"{}\",kind=\"{kind}\"}} {bytes}",
                    label(&h.host),
                    label(name)
                );
            }
        }
    }
    head(
        &mut out,
        "failback_volume_progress_ratio",
        "gauge",
        "Progress of each volume's current phase, 0 to 1.",
    );
    for h in hosts.clone() {
        for (name, v) in &h.volumes {
            let _ = writeln!(
                out,
                "failback_volume_progress_ratio{{host=\"{}\",volume=\"{}\"}} {}",
                label(&h.host),
                label(name),
                v.ratio()
            );
        }
    }
    head(
        &mut out,
        "failback_lag_seconds",
        "gauge",
        "How far a continuous pull's last pass is behind its source.",
    );
    for h in hosts.clone() {
        if let Some(lag) = h.lag_s {
            let _ = writeln!(
                out,
                "failback_lag_seconds{{host=\"{}\"}} {lag}",
                label(&h.host)
            );
        }
    }
    head(
        &mut out,
        "failback_errors_total",
        "counter",
        "Errors each host reported.",
    );
    for h in hosts {
        let _ = writeln!(
            out,
            "failback_errors_total{{host=\"{}\"}} {}",
            label(&h.host),
            h.errors
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut h = Host::new("s", "10.0.0.1", 0.0);
        h.host = "a\"b\\c\nd".into();
        let text = render([h].iter());
        assert!(
            text.contains("failback_errors_total{host=\"a\\\"b\\\\c\\nd\"} 0"),
            "{text}"
        );
        assert!(text.contains("failback_hosts{state=\"planned\"} 1"));
        assert!(text.contains("failback_hosts{state=\"failed\"} 0"));
    }
}
