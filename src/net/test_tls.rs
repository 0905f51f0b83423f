//! Test-only: certificate authorities made with rcgen, with validity windows of
//! our choosing, and a TLS server on 127.0.0.1 that answers every request with a
//! fixed `Date`.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, date_time_ymd,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A day: (year, month, day).
pub type Day = (i32, u8, u8);

/// A CA (root or intermediate) and the chain up to its root, root excluded.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    chain: Vec<CertificateDer<'static>>,
}

fn params(names: Vec<String>, from: Day, to: Day) -> CertificateParams {
    let mut p = CertificateParams::new(names).expect("names");
    p.not_before = date_time_ymd(from.0, from.1, from.2);
    p.not_after = date_time_ymd(to.0, to.1, to.2);
    p
}

/// CAs named apart (rcgen's default name is the same for all).
fn ca_params(from: Day, to: Day) -> CertificateParams {
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    let mut p = params(Vec::new(), from, to);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let n = SERIAL.fetch_add(1, Ordering::Relaxed);
    p.distinguished_name
        .push(DnType::CommonName, format!("failback test CA {n}"));
    p
}

impl Ca {
    /// A self-signed root valid from `from` to `to`.
    pub fn root(from: Day, to: Day) -> Ca {
        let key = KeyPair::generate().expect("a key");
        Ca {
            issuer: CertifiedIssuer::self_signed(ca_params(from, to), key).expect("a root"),
            chain: Vec::new(),
        }
    }

    /// A store holding this CA as the only root.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).expect("a root");
        roots
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, from: Day, to: Day) -> Ca {
        let key = KeyPair::generate().expect("a key");
        let issuer =
            CertifiedIssuer::signed_by(ca_params(from, to), key, &self.issuer).expect("a CA");
        let mut chain = vec![issuer.der().clone()];
        chain.extend(self.chain.iter().cloned());
        Ca { issuer, chain }
    }

    /// A server certificate for `name` (a DNS name or an IP address) and its key;
    /// the chain holds the intermediates after it.
    pub fn server(
        &self,
        name: &str,
        from: Day,
        to: Day,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("a key");
        let mut p = params(vec![name.to_string()], from, to);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &self.issuer).expect("a certificate");
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (chain, key)
    }
}

/// Serves HTTPS on 127.0.0.1 (a port of its own) with `chain`: every request is
/// answered 403 with `Date: date`, like a service refusing an unsigned request.
pub fn serve(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    date: &'static str,
) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a server certificate");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("an address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(config.clone()).expect("a connection");
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            // A refused handshake ends the read; the client saw why.
            while !head.ends_with(b"\r\n\r\n") && matches!(tls.read(&mut byte), Ok(1)) {
                head.push(byte[0]);
            }
            let answer = format!(
                "HTTP/1.1 403 Forbidden\r\nDate: {date}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = tls.write_all(answer.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    port
}
