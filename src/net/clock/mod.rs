//! The system clock before TLS: an SNTP query (RFC 4330) to a server from the
//! command line, the preset or DHCP option 42, else the `Date` header of an
//! HTTP answer from the source. The firmware's clock may be years off, and a
//! certificate check against it fails for reasons no operator would guess.
//!
//! `sntp` asks an NTP server ([`query`]); `http_date` reads the `Date` of an
//! HTTP answer ([`http_date()`], [`response_offset`]); [`step`] moves the clock
//! by what either found.

mod http_date;
mod sntp;

pub use http_date::{http_date, http_date_offset, response_offset};
pub use sntp::{
    PACKET, Reply, Server, Timestamp, offset, parse_reply, query, request, server_address,
    system_dns,
};

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the clock was set, as reported in the `network` event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClockSet {
    pub source: ClockSource,
    /// The server asked (`ADDR:PORT` or the source URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Seconds the clock was moved by (0 when it was not set).
    pub step_s: f64,
    /// Why no source set the clock, when none did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What set the clock: `"ntp"`, `"http-date"`, or `"none"` when no source answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockSource {
    /// An NTP server (`failback.ntp=`, the preset, DHCP option 42).
    Ntp,
    /// The `Date` header of an HTTPS answer from the source.
    HttpDate,
    /// Nothing: the clock was not set.
    #[serde(rename = "none")]
    Unset,
}

impl ClockSource {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockSource::Ntp => "ntp",
            ClockSource::HttpDate => "http-date",
            ClockSource::Unset => "none",
        }
    }
}

impl std::fmt::Display for ClockSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::fmt::Display for ClockSet {
    /// As the console shows it after "clock ".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let server = self.server.as_deref().unwrap_or("?");
        match self.source {
            ClockSource::Ntp => write!(f, "set by NTP from {server} (moved {:+.0} s)", self.step_s),
            ClockSource::HttpDate => write!(
                f,
                "set from the Date of {server} (moved {:+.0} s)",
                self.step_s
            ),
            ClockSource::Unset => write!(
                f,
                "not set: {}",
                self.problem.as_deref().unwrap_or("no source answered")
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("NTP server {server}: {source}")]
    Io {
        server: SocketAddr,
        source: std::io::Error,
    },
    #[error("NTP server {server} did not answer within {seconds} s")]
    NoAnswer { server: SocketAddr, seconds: u64 },
    #[error("NTP server {server} sent an unusable answer: {why}")]
    Bad {
        server: SocketAddr,
        why: &'static str,
    },
    #[error("cannot set the system clock: {0}")]
    Set(nix::Error),
    #[error("cannot learn the time from the Date of {url}: {message}")]
    Date { url: String, message: String },
}

fn unix(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// `unix_secs` seconds after the Unix epoch, for the tests.
#[cfg(test)]
fn at(unix_secs: u64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_secs(unix_secs)
}

/// Moves the system clock (CLOCK_REALTIME) by `offset` seconds.
pub fn step(offset: f64) -> Result<(), Error> {
    let target = unix(SystemTime::now()) + offset;
    let secs = target.floor();
    let nanos = ((target - secs) * 1e9) as i64;
    let ts = nix::sys::time::TimeSpec::new(secs as libc::time_t, nanos as libc::c_long);
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts).map_err(Error::Set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn how_the_clock_was_set_reads_in_one_phrase() {
        let set = |source, server: Option<&str>, problem: Option<&str>| ClockSet {
            source,
            server: server.map(str::to_string),
            step_s: 814_000_000.4,
            problem: problem.map(str::to_string),
        };
        assert_eq!(
            set(
                ClockSource::HttpDate,
                Some("https://ebs.eu-west-1.amazonaws.com"),
                None
            )
            .to_string(),
            "set from the Date of https://ebs.eu-west-1.amazonaws.com (moved +814000000 s)"
        );
        assert_eq!(
            set(ClockSource::Ntp, Some("10.0.2.2:123"), None).to_string(),
            "set by NTP from 10.0.2.2:123 (moved +814000000 s)"
        );
        assert_eq!(
            set(
                ClockSource::Unset,
                None,
                Some("no NTP server and no source to ask for the time")
            )
            .to_string(),
            "not set: no NTP server and no source to ask for the time"
        );
    }
}
