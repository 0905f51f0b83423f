//! Atomic outputs: written under a temporary name in the destination directory
//! and renamed into place, so a failed build never leaves a half-written file.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct Error {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Writes `data` to `path` atomically (temporary file + rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    write_atomic_with(path, |out| out.write_all(data))
}

/// Writes `path` atomically with `fill`, which streams the contents (buffered) into a
/// temporary file beside it; the file is then synced, made readable by all and renamed into
/// place. Any error leaves `path` as it was and no temporary file behind.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), Error> {
    let err = |source| Error {
        path: path.into(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    // Removed on drop unless persisted.
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
    fill(&mut out).map_err(err)?;
    out.flush().map_err(err)?;
    drop(out);
    tmp.as_file().sync_all().map_err(err)?;
    // Outputs are served over TFTP/HTTP and copied around: readable by all, from the
    // moment they appear under their name.
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
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

    #[test]
    fn a_failed_fill_keeps_the_old_file_and_leaves_no_temporary() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("image.iso");
        write_atomic_with(&path, |out| out.write_all(b"old")).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let err = write_atomic_with(&path, |out| {
            out.write_all(b"half")?;
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert_eq!(err.path, path);
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
