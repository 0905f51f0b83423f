//! The one way failback makes an HTTP(S) client, and tells why a request failed.
//!
//! Every client goes through the proxy given (or none: the environment is read by
//! the caller, never implicitly, see [`super::proxy`]), with a connect timeout and
//! a timeout per request. TLS is either reqwest's own (rustls, the webpki roots,
//! HTTP/2 offered) or a [`CertPolicy`] of the caller's: who decides on the server's
//! certificate (a pinned fingerprint, WebPKI at any time) over HTTP/1.1, the
//! handshake signatures checked as WebPKI checks them either way.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

/// An error with all its causes, as one line (reqwest hides the useful part, e.g.
/// "connection refused", in the causes).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

/// A failed request as one line for the operator: the error with its causes, or,
/// when it was the `proxy` that could not be reached, that and the fix. The URL
/// stays in the line if `e` carries it (see [`reqwest::Error::without_url`]),
/// without a password.
pub fn describe(e: &reqwest::Error, proxy: Option<&str>) -> String {
    let chain = error_chain(e);
    let line = super::proxy::unreachable(proxy, &chain).unwrap_or(chain);
    crate::secret::redact_urls(&line)
}

/// Who decides on the server's certificate.
pub enum Tls {
    /// reqwest's rustls with the webpki roots; HTTP/2 may be negotiated.
    WebPki,
    /// The policy, over HTTP/1.1 (rustls on ring).
    Policy(Arc<dyn CertPolicy>),
}

/// What a client needs.
pub struct Settings<'a> {
    /// `http://HOST:PORT` to tunnel HTTPS through; `None`: direct.
    pub proxy: Option<&'a str>,
    pub tls: Tls,
    /// For the TCP (and proxy) connection.
    pub connect_timeout: Duration,
    /// For a whole request, answer included.
    pub timeout: Duration,
}

/// A blocking client (no request made yet). Errors are one line: the proxy
/// refused as [`super::proxy::configure`] says, or `TLS setup: …` / `HTTP client
/// setup: …`.
pub fn client(settings: Settings<'_>) -> Result<reqwest::blocking::Client, String> {
    let builder = reqwest::blocking::Client::builder();
    let builder = match settings.tls {
        Tls::WebPki => builder,
        Tls::Policy(policy) => builder
            .use_preconfigured_tls(http1_tls(policy)?)
            .http1_only(),
    };
    super::proxy::configure(builder, settings.proxy)?
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| format!("HTTP client setup: {e}"))
}

/// A rustls client configuration (ring, HTTP/1.1) verifying with `policy`.
fn http1_tls(policy: Arc<dyn CertPolicy>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Verifier {
        policy,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// What a server presented in a TLS handshake.
pub struct Presented<'a> {
    pub end_entity: &'a CertificateDer<'a>,
    pub intermediates: &'a [CertificateDer<'a>],
    pub server_name: &'a ServerName<'a>,
    pub ocsp_response: &'a [u8],
    /// The local time.
    pub now: UnixTime,
}

/// Accepts or refuses the certificate a server presented; the handshake's
/// signatures are checked apart, as WebPKI checks them.
pub trait CertPolicy: std::fmt::Debug + Send + Sync {
    fn verify(&self, presented: &Presented<'_>) -> Result<ServerCertVerified, rustls::Error>;
}

/// A [`CertPolicy`] and ring's signature algorithms: a whole verifier.
#[derive(Debug)]
struct Verifier {
    policy: Arc<dyn CertPolicy>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.policy.verify(&Presented {
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer;
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&INNER)
        }
    }
    static INNER: std::fmt::Error = std::fmt::Error;

    #[test]
    fn an_error_reads_with_its_causes() {
        assert_eq!(
            error_chain(&Outer),
            "error sending request: an error occurred when formatting an argument"
        );
    }

    #[test]
    fn a_bad_proxy_is_refused_before_any_request() {
        let settings = |proxy| Settings {
            proxy,
            tls: Tls::WebPki,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        };
        let err = client(settings(Some("proxy:3128"))).unwrap_err();
        assert!(err.contains("http://HOST:PORT"), "{err}");
        assert!(client(settings(None)).is_ok());
    }

    #[test]
    fn a_refused_connection_is_one_line_naming_the_cause() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = client(Settings {
            proxy: None,
            tls: Tls::WebPki,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        })
        .unwrap();
        let e = c
            .get(format!("http://127.0.0.1:{port}/x?secret"))
            .send()
            .unwrap_err();
        let line = describe(&e, None);
        assert!(line.contains("refused"), "{line}");
        assert!(!line.contains('\n'), "{line}");
        assert!(!describe(&e.without_url(), None).contains("secret"));
    }
}
