//! The agent's identity: a self-signed certificate and a token, made on first start
//! and kept in a state directory so that restarts keep the same fingerprint and token.

use crate::block::Hash;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Errors while loading or making the identity.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create state directory {path}: {source} (choose another with --state-dir)")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    #[error("the kernel gave no randomness for the token")]
    Random,
    #[error(
        "{path} holds a token of {len} characters, too short to be safe: use at least {MIN_TOKEN} (delete the file to have a new token made)"
    )]
    ShortToken { path: PathBuf, len: usize },
}

/// The shortest token the agent accepts.
pub const MIN_TOKEN: usize = 16;

/// The token clients must present, and where it is kept (if in the state directory).
pub struct Token {
    pub value: String,
    pub kept: Option<Kept>,
}

/// A token kept in the state directory.
pub struct Kept {
    pub path: PathBuf,
    /// Made at this start (so not yet shown to anyone).
    pub made: bool,
}

/// Certificate chain, key, and the fingerprint clients pin.
pub struct Identity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub fingerprint: Hash,
}

/// Loads `cert`/`key` if given, else the pair in `state_dir`, made on first use.
pub fn identity(
    state_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Identity, Error> {
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        _ => {
            let c = state_dir.join("agent-cert.pem");
            let k = state_dir.join("agent-key.pem");
            if !c.exists() || !k.exists() {
                make_dir(state_dir)?;
                let ck = rcgen::generate_simple_self_signed(vec![
                    "failback-agent".to_string(),
                    "localhost".to_string(),
                ])
                .map_err(|e| Error::Generate(e.to_string()))?;
                write_private(&k, ck.signing_key.serialize_pem().as_bytes())?;
                write_private(&c, ck.cert.pem().as_bytes())?;
            }
            (c, k)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .map_err(|_| Error::Pem {
            path: cert.clone(),
            what: "certificate",
        })?
        .collect::<Result<_, _>>()
        .map_err(|_| Error::Pem {
            path: cert.clone(),
            what: "certificate",
        })?;
    let first = certs.first().ok_or_else(|| Error::Pem {
        path: cert.clone(),
        what: "certificate",
    })?;
    let fingerprint = Sha256::digest(first.as_ref()).into();
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|_| Error::Pem {
        path: key.clone(),
        what: "private key",
    })?;
    Ok(Identity {
        certs,
        key,
        fingerprint,
    })
}

/// The token in `state_dir/token`, made on first use (32 random bytes, hex).
pub fn token(state_dir: &Path) -> Result<Token, Error> {
    let path = state_dir.join("token");
    if path.exists() {
        let t = fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let value = t.trim().to_string();
        if value.chars().count() < MIN_TOKEN {
            return Err(Error::ShortToken {
                len: value.chars().count(),
                path,
            });
        }
        return Ok(Token {
            value,
            kept: Some(Kept { path, made: false }),
        });
    }
    make_dir(state_dir)?;
    let mut raw = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| Error::Random)?;
    let t = hex::encode(raw);
    write_private(&path, t.as_bytes())?;
    Ok(Token {
        value: t,
        kept: Some(Kept { path, made: true }),
    })
}

fn make_dir(dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|source| Error::StateDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes a file readable by its owner only, atomically (temporary name, rename).
fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_token_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = identity(dir.path(), None, None).unwrap();
        let b = identity(dir.path(), None, None).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        let t = token(dir.path()).unwrap();
        assert_eq!(t.value.len(), 64);
        assert!(t.kept.as_ref().unwrap().made);
        let again = token(dir.path()).unwrap();
        assert_eq!(again.value, t.value);
        assert!(!again.kept.unwrap().made);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            identity(other.path(), None, None).unwrap().fingerprint,
            a.fingerprint
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }

    #[test]
    fn a_short_kept_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("token"), "0123456789abcde\n").unwrap();
        let err = token(dir.path()).err().unwrap().to_string();
        assert!(err.contains("token of 15 characters"), "{err}");
        fs::write(dir.path().join("token"), "0123456789abcdef\n").unwrap();
        assert_eq!(token(dir.path()).unwrap().value, "0123456789abcdef");
    }
}
