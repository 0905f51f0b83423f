//! Certificate dates against a local clock that may be wrong.
//!
//! Before the clock is set, the firmware's clock may be years off (a flat CMOS
//! battery says 2001), and every certificate looks expired or not yet valid. The
//! one HTTPS request that learns the time from a CA-signed server (the `Date` of
//! the EBS endpoint, [`super::clock::http_date()`]) cannot depend on that clock:
//! [`AnyTime`] verifies the chain exactly as WebPKI does (the roots, the chain,
//! its signatures, the host name, the key usage; the handshake signatures are
//! checked by [`super::http`]) and tolerates only one thing,
//! a chain valid at some time other than the local one. Everything else keeps
//! full verification; when a date check fails there, [`wrong_clock`] says so in
//! one line instead of a generic transport error.

use super::http::{CertPolicy, Presented};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::UnixTime;
use rustls::{CertificateError, RootCertStore};
use std::sync::Arc;

/// Times tried after the local one: each moves into the validity window of the
/// certificate that refused the previous time (an intermediate may have its own).
const MOVES: usize = 4;

/// The roots the EBS client trusts (webpki-roots, the Mozilla set).
pub fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The WebPKI verifier, asked again at a time inside the refusing certificate's
/// validity window when it refuses only because of the time.
#[derive(Debug)]
pub struct AnyTime {
    inner: Arc<WebPkiServerVerifier>,
}

impl AnyTime {
    /// Verifies chains to `roots`.
    pub fn new(roots: RootCertStore) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("TLS setup: {e}"))?;
        Ok(Self { inner })
    }
}

impl CertPolicy for AnyTime {
    fn verify(&self, p: &Presented<'_>) -> Result<ServerCertVerified, rustls::Error> {
        let mut at = p.now;
        for _ in 0..=MOVES {
            let verdict = self.inner.verify_server_cert(
                p.end_entity,
                p.intermediates,
                p.server_name,
                p.ocsp_response,
                at,
            );
            at = match verdict {
                // webpki refuses a time after notAfter or before notBefore: both
                // bounds are inside the window.
                Err(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
                    not_after,
                    ..
                })) => not_after,
                Err(rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
                    not_before,
                    ..
                })) => not_before,
                other => return other,
            };
        }
        Err(rustls::Error::General(
            "the certificate chain has no time at which all its certificates are valid".into(),
        ))
    }
}

/// One line naming the cause and the fix when `e` (with its causes) is a TLS
/// refusal of `host`'s certificate for its dates, else `None`.
pub fn wrong_clock(e: &(dyn std::error::Error + 'static), host: &str) -> Option<String> {
    let (time, why) = std::iter::successors(Some(e), |e| e.source())
        .flat_map(io_layers)
        .find_map(|e| match e.downcast_ref::<rustls::Error>()? {
            rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
                time,
                not_after,
            }) => Some((
                *time,
                format!(
                    "it expired at {}: the clock is ahead, or the certificate has expired",
                    iso8601(*not_after)
                ),
            )),
            rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
                time,
                not_before,
            }) => Some((
                *time,
                format!(
                    "it is valid from {}: the clock is behind",
                    iso8601(*not_before)
                ),
            )),
            _ => None,
        })?;
    Some(format!(
        "the certificate of {host} is not valid at the local time {} ({why}); give \
         failback.ntp=SERVER or check the BIOS clock",
        iso8601(time)
    ))
}

/// `e` and the errors inside it when it is an io::Error: one shows its inner
/// error's message but skips it as a source (and hyper wraps rustls' io::Error
/// in another).
fn io_layers<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| {
        let io = e.downcast_ref::<std::io::Error>()?;
        io.get_ref()
            .map(|inner| inner as &(dyn std::error::Error + 'static))
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn iso8601(t: UnixTime) -> String {
    let secs = t.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm), from 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::test_tls::{Ca, Day, serve};

    #[test]
    fn times_print_as_iso8601() {
        let at = |s| {
            iso8601(UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                s,
            )))
        };
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(978_307_205), "2001-01-01T00:00:05Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(at(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    /// What a client verifying as usual (WebPKI, `trusted` the only root) says to
    /// a server presenting a certificate for `name` from `issuer`.
    fn strict_refusal(trusted: &Ca, issuer: &Ca, name: &str, from: Day, to: Day) -> reqwest::Error {
        let (chain, key) = issuer.server(name, from, to);
        let port = serve(chain, key, "Thu, 01 Jan 2026 00:00:00 GMT");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(trusted.roots())
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = reqwest::blocking::Client::builder()
            .use_preconfigured_tls(tls)
            .no_proxy()
            .build()
            .unwrap();
        client
            .head(format!("https://127.0.0.1:{port}/"))
            .send()
            .expect_err("the strict verifier refuses")
    }

    #[test]
    fn a_refusal_for_the_dates_names_the_clock_and_the_fix() {
        let ca = Ca::root((2000, 1, 1), (2100, 1, 1));
        let future = strict_refusal(&ca, &ca, "127.0.0.1", (2090, 1, 1), (2091, 1, 1));
        let line = wrong_clock(&future, "ebs.eu-west-1.amazonaws.com")
            .unwrap_or_else(|| panic!("{future:?}"));
        assert!(
            line.starts_with("the certificate of ebs.eu-west-1.amazonaws.com is not valid at the local time 20")
                && line.ends_with(
                    "(it is valid from 2090-01-01T00:00:00Z: the clock is behind); give failback.ntp=SERVER or check the BIOS clock"
                ),
            "{line}"
        );
        let past = strict_refusal(&ca, &ca, "127.0.0.1", (2001, 1, 1), (2002, 1, 1));
        let line = wrong_clock(&past, "h").expect("the clock");
        assert!(
            line.contains("(it expired at 2002-01-01T00:00:00Z: the clock is ahead, or the certificate has expired)"),
            "{line}"
        );
        // Refused for another reason: not the clock.
        let name = strict_refusal(&ca, &ca, "ebs.example", (2020, 1, 1), (2090, 1, 1));
        assert_eq!(wrong_clock(&name, "h"), None, "{name:?}");
        let other = Ca::root((2000, 1, 1), (2100, 1, 1));
        let issuer = strict_refusal(&ca, &other, "127.0.0.1", (2020, 1, 1), (2090, 1, 1));
        assert_eq!(wrong_clock(&issuer, "h"), None);
    }
}
