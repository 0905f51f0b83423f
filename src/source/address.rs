//! Where to pull from, as the operator writes it: the agent (`https://HOST:PORT`) or an
//! EBS snapshot (`ebs://snap-ID`, optionally `?base=snap-ID`).

use crate::parse::{invalid, string_newtype};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A pull source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Source {
    Agent(String),
    Ebs {
        snapshot: String,
        base: Option<String>,
    },
}

impl Source {
    pub fn parse(s: String) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("ebs://") {
            let (snapshot, base) = match rest.split_once("?base=") {
                Some((snap, base)) => (snap, Some(base)),
                None => (rest, None),
            };
            let snap_ok = |id: &str| {
                id.starts_with("snap-")
                    && id.len() > 5
                    && id[5..].chars().all(|c| c.is_ascii_alphanumeric())
            };
            if !snap_ok(snapshot) || !base.is_none_or(snap_ok) {
                return invalid(
                    "an EBS source",
                    &s,
                    "use ebs://snap-ID or ebs://snap-NEW?base=snap-OLD",
                );
            }
            return Ok(Source::Ebs {
                snapshot: snapshot.into(),
                base: base.map(Into::into),
            });
        }
        match s.strip_prefix("https://") {
            Some(host) if !host.is_empty() => Ok(Source::Agent(s)),
            // A URL's password stays out of the refusal.
            _ => invalid(
                "a source",
                &crate::secret::redact_urls(&s),
                "use https://HOST:PORT (the agent) or ebs://snap-ID",
            ),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Agent(url) => f.write_str(url),
            Source::Ebs {
                snapshot,
                base: None,
            } => write!(f, "ebs://{snapshot}"),
            Source::Ebs {
                snapshot,
                base: Some(b),
            } => write!(f, "ebs://{snapshot}?base={b}"),
        }
    }
}
string_newtype!(Source, Source::parse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_source_is_quoted_without_a_password() {
        let err = Source::parse("http://bob:hunter2@10.0.0.5:1500".into()).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("bob:***@10.0.0.5:1500"), "{err}");
    }
}
