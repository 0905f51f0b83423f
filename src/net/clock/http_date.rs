//! The time from the `Date` header of an HTTP answer, for when no NTP server
//! answers: the source (the agent, the EBS endpoint) is asked anyway.

use super::{Error, unix};
use crate::net::cert_time::AnyTime;
use crate::net::http;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The offset of the local clock given a server's HTTP `Date` header seen
/// at `now` (whole seconds: the header has no finer resolution).
pub fn http_date_offset(date: &str, now: SystemTime) -> Option<f64> {
    let server = httpdate::parse_http_date(date.trim()).ok()?;
    Some(unix(server) - unix(now))
}

/// How far the local clock is from `url`'s (seconds, positive: we are behind),
/// from the `Date` of its answer to an unsigned HEAD: any status carries one.
/// Through `proxy` for `https://`; the certificate is checked against `roots`
/// by [`AnyTime`], which only tolerates its dates,
/// since the local clock is what this asks about.
pub fn http_date(
    url: &str,
    proxy: Option<&str>,
    roots: rustls::RootCertStore,
    timeout: Duration,
) -> Result<f64, Error> {
    let fail = |message: String| Error::Date {
        url: url.to_string(),
        message,
    };
    let policy = AnyTime::new(roots).map_err(fail)?;
    let client = http::client(http::Settings {
        proxy,
        tls: http::Tls::Policy(Arc::new(policy)),
        connect_timeout: timeout,
        timeout,
    })
    .map_err(fail)?;
    let resp = client
        .head(url)
        .send()
        .map_err(|e| fail(http::describe(&e.without_url(), proxy)))?;
    response_offset(&resp).map_err(fail)
}

/// How far the local clock is from the server that sent `resp` (seconds, positive:
/// we are behind), from its `Date` header, whatever the status.
pub fn response_offset(resp: &reqwest::blocking::Response) -> Result<f64, String> {
    let now = SystemTime::now();
    let date = resp
        .headers()
        .get(reqwest::header::DATE)
        .ok_or_else(|| format!("HTTP {} without a Date header", resp.status()))?;
    let date = date.to_str().unwrap_or_default();
    http_date_offset(date, now).ok_or_else(|| format!("unreadable Date header {date:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::clock::at;

    #[test]
    fn http_dates_give_the_offset_in_whole_seconds() {
        let off = http_date_offset("Thu, 01 Jan 2026 00:00:00 GMT", at(978_307_200)).unwrap();
        assert_eq!(off, 1_767_225_600.0 - 978_307_200.0);
        assert_eq!(http_date_offset("yesterday", at(0)), None);
    }

    /// The Date of the TLS servers below: 2026-01-01T00:00:00Z.
    const DATE: &str = "Thu, 01 Jan 2026 00:00:00 GMT";

    fn date_at(port: u16, roots: rustls::RootCertStore) -> Result<f64, Error> {
        let url = format!("https://127.0.0.1:{port}/");
        http_date(&url, None, roots, Duration::from_secs(10))
    }

    #[test]
    fn the_date_is_read_through_a_certificate_valid_only_at_another_time() {
        use crate::net::test_tls::Ca;
        let expected = http_date_offset(DATE, SystemTime::now()).unwrap();
        // A root's own dates are not checked (a trust anchor is a name and a key).
        let now = Ca::root((2000, 1, 1), (2100, 1, 1));
        let old = Ca::root((2000, 1, 1), (2003, 1, 1));
        // The last leaf comes with an intermediate whose window ends before the
        // leaf's: two moves into the windows.
        let cases = [
            (
                "expired",
                &now,
                now.server("127.0.0.1", (2001, 1, 1), (2002, 1, 1)),
            ),
            (
                "not yet valid",
                &now,
                now.server("127.0.0.1", (2090, 1, 1), (2091, 1, 1)),
            ),
            (
                "expired, with an intermediate",
                &old,
                old.intermediate((2001, 6, 1), (2002, 3, 1)).server(
                    "127.0.0.1",
                    (2001, 1, 1),
                    (2002, 6, 1),
                ),
            ),
        ];
        for (what, ca, (chain, key)) in cases {
            let port = crate::net::test_tls::serve(chain, key, DATE);
            let offset = date_at(port, ca.roots()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                (offset - expected).abs() < 5.0,
                "{what}: {offset} vs {expected}"
            );
        }
    }

    #[test]
    fn the_date_is_refused_from_another_ca_another_name_or_a_chain_never_valid() {
        use crate::net::test_tls::Ca;
        let ca = Ca::root((2000, 1, 1), (2100, 1, 1));
        let other = Ca::root((2000, 1, 1), (2100, 1, 1));
        let old = ca.intermediate((2001, 1, 1), (2002, 1, 1));
        let cases = [
            (
                "another CA",
                &ca,
                other.server("127.0.0.1", (2001, 1, 1), (2002, 1, 1)),
                "UnknownIssuer",
            ),
            (
                "another name",
                &ca,
                ca.server("ebs.example", (2001, 1, 1), (2002, 1, 1)),
                "not valid for name",
            ),
            (
                "another CA, valid now",
                &ca,
                other.server("127.0.0.1", (2020, 1, 1), (2090, 1, 1)),
                "UnknownIssuer",
            ),
            (
                "no common window",
                &ca,
                old.server("127.0.0.1", (2005, 1, 1), (2006, 1, 1)),
                "no time at which",
            ),
        ];
        for (what, roots, (chain, key), why) in cases {
            let port = crate::net::test_tls::serve(chain, key, DATE);
            let err = date_at(port, roots.roots()).expect_err(what).to_string();
            assert!(err.contains(why), "{what}: {err}");
        }
    }

    #[test]
    fn the_date_of_a_plain_http_endpoint_needs_no_tls() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let answer =
                format!("HTTP/1.1 404 Not Found\r\nDate: {DATE}\r\nContent-Length: 0\r\n\r\n");
            s.write_all(answer.as_bytes()).unwrap();
        });
        let url = format!("http://127.0.0.1:{port}/");
        let roots = crate::net::cert_time::webpki_roots();
        let offset = http_date(&url, None, roots, Duration::from_secs(10)).unwrap();
        let expected = http_date_offset(DATE, SystemTime::now()).unwrap();
        assert!((offset - expected).abs() < 5.0, "{offset} vs {expected}");
    }
}
