//! Atomic outputs: written under a temporary name in the destination directory
//! and renamed into place, so a failed build never leaves a half-written file.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct Error {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Writes `data` to `path` atomically (temporary file + rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let err = |source| Error {
        path: path.into(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(data).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    // Outputs are served over TFTP/HTTP and copied around: readable by all.
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).map_err(err)?;
    Ok(())
}

/// `sha256sum`-style lines for files under `root`, sorted by path.
pub fn sha256sums(root: &Path, files: &[&str]) -> Result<String, Error> {
    let mut files = files.to_vec();
    files.sort();
    let mut out = String::new();
    for rel in files {
        let path = root.join(rel);
        let data = fs::read(&path).map_err(|source| Error {
            path: path.clone(),
            source,
        })?;
        out.push_str(&format!("{}  {rel}\n", hex::encode(Sha256::digest(&data))));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub/file.img");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1,
            "no temporary files left"
        );
        let sums = sha256sums(tmp.path(), &["sub/file.img"]).unwrap();
        assert_eq!(
            sums,
            "3fc4ccfe745870e2c0d99f71f30ff0656c8dedd41cc1d7d3d376b0dbe685e2f3  sub/file.img\n"
        );
    }
}
