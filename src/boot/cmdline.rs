//! The kernel command line's `failback.*` parameters, typed.

use crate::events::Style;
use std::collections::BTreeMap;

/// What PID 1 does when the flow ends (or fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Wait for the operator on the console (the default: nothing happens unseen).
    Wait,
    Reboot,
    Poweroff,
    Shell,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("failback.{key}={value:?} is not valid: use {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Cmdline {
    pub progress: Style,
    pub after: After,
    pub host: Option<String>,
    /// `failback.debug` or the kernel's `debug`: keep kernel messages on the console.
    pub debug: bool,
    /// Every `failback.KEY=VALUE`, for the parts that read their own keys.
    pub params: BTreeMap<String, String>,
}

impl Default for Cmdline {
    fn default() -> Self {
        Self {
            progress: Style::Text,
            after: After::Wait,
            host: None,
            debug: false,
            params: BTreeMap::new(),
        }
    }
}

impl Cmdline {
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut out = Cmdline::default();
        for word in split(text) {
            let (key, value) = word.split_once('=').unwrap_or((word.as_str(), ""));
            if key == "debug" {
                out.debug = true;
            }
            let Some(key) = key.strip_prefix("failback.") else {
                continue;
            };
            let bad = |expected| Error::BadValue {
                key: key.into(),
                value: value.into(),
                expected,
            };
            match key {
                "progress" => {
                    out.progress = match value {
                        "json" => Style::Json,
                        "text" | "bar" => Style::Text,
                        _ => return Err(bad("json or text")),
                    }
                }
                "after" => {
                    out.after = match value {
                        "wait" => After::Wait,
                        "reboot" => After::Reboot,
                        "poweroff" => After::Poweroff,
                        "shell" => After::Shell,
                        _ => return Err(bad("wait, reboot, poweroff or shell")),
                    }
                }
                "host" => out.host = Some(value.to_string()).filter(|h| !h.is_empty()),
                "debug" => out.debug = value != "0",
                _ => {}
            }
            out.params.insert(key.to_string(), value.to_string());
        }
        Ok(out)
    }
}

/// Splits like the kernel does: on spaces, except inside double quotes
/// (which are removed).
fn split(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_failback_parameters() {
        let c = Cmdline::parse(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 failback.progress=json failback.after=poweroff \
             failback.host=rack1-07 failback.map=\"a=/dev/sda b=/dev/sdb\"\n",
        )
        .unwrap();
        assert_eq!(c.progress, Style::Json);
        assert_eq!(c.after, After::Poweroff);
        assert_eq!(c.host.as_deref(), Some("rack1-07"));
        assert!(!c.debug);
        assert_eq!(c.params["map"], "a=/dev/sda b=/dev/sdb");
    }

    #[test]
    fn defaults_wait_for_the_operator_with_text() {
        let c = Cmdline::parse("quiet debug").unwrap();
        assert_eq!(c.after, After::Wait);
        assert_eq!(c.progress, Style::Text);
        assert!(c.debug);
    }

    #[test]
    fn a_bad_value_names_the_key_and_the_choices() {
        let err = Cmdline::parse("failback.after=explode")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "failback.after=\"explode\" is not valid: use wait, reboot, poweroff or shell"
        );
    }
}
