//! Firmware for the initramfs: the files the chosen modules request
//! (`firmware=` in their `.modinfo`), looked up in firmware directories in
//! order (the operator's `--firmware DIR`s first, then the free firmware of the
//! inputs). The kernel reads them from `/lib/firmware/NAME` or, since Debian's
//! kernel has `FW_LOADER_COMPRESS_XZ`, `/lib/firmware/NAME.xz`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// One firmware file found for the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Path under `lib/firmware/` in the archive (`NAME` or `NAME.xz`).
    pub name: String,
    pub source: PathBuf,
    pub bytes: u64,
}

/// What the lookup found and what it did not.
#[derive(Debug, Default)]
pub struct Firmware {
    /// Sorted by name, each name once.
    pub found: Vec<Found>,
    /// Module -> the names it requests that no directory holds.
    pub missing: BTreeMap<String, Vec<String>>,
}

/// Looks up every `(module, requested names)` in `dirs`, first match wins.
pub fn resolve<'a>(
    requests: impl IntoIterator<Item = (&'a str, &'a [String])>,
    dirs: &[PathBuf],
) -> Firmware {
    let mut found = BTreeMap::new();
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (module, names) in requests {
        for name in names {
            match find(name, dirs) {
                Some(f) => {
                    found.entry(f.name.clone()).or_insert(f);
                }
                None => missing
                    .entry(module.to_string())
                    .or_default()
                    .push(name.clone()),
            }
        }
    }
    Firmware {
        found: found.into_values().collect(),
        missing,
    }
}

fn find(name: &str, dirs: &[PathBuf]) -> Option<Found> {
    // A name from a module file stays below lib/firmware: no absolute paths, no `..`.
    let rel = Path::new(name);
    if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    for dir in dirs {
        for candidate in [name.to_string(), format!("{name}.xz")] {
            let source = dir.join(&candidate);
            // metadata follows symlinks: linux-firmware links names to shared files.
            if let Ok(meta) = std::fs::metadata(&source)
                && meta.is_file()
            {
                return Some(Found {
                    name: candidate,
                    source,
                    bytes: meta.len(),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_directory_wins_xz_counts_and_the_rest_is_missing() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir_all(a.path().join("tigon")).unwrap();
        std::fs::write(a.path().join("tigon/tg3.bin"), b"operator").unwrap();
        std::fs::create_dir_all(b.path().join("tigon")).unwrap();
        std::fs::write(b.path().join("tigon/tg3.bin"), b"inputs!!!").unwrap();
        std::fs::write(b.path().join("tigon/tg3_tso.bin.xz"), b"xz").unwrap();
        std::fs::write(b.path().join("secret"), b"no").unwrap();
        let tg3 = names(&["tigon/tg3.bin", "tigon/tg3_tso.bin", "tigon/tg357766.bin"]);
        let evil = names(&["../secret", "/etc/passwd", ""]);
        let fw = resolve(
            [
                ("tg3", &tg3[..]),
                ("evil", &evil[..]),
                ("tg3_again", &tg3[..1]),
            ],
            &[a.path().into(), b.path().into()],
        );
        assert_eq!(
            fw.found,
            [
                Found {
                    name: "tigon/tg3.bin".into(),
                    source: a.path().join("tigon/tg3.bin"),
                    bytes: 8,
                },
                Found {
                    name: "tigon/tg3_tso.bin.xz".into(),
                    source: b.path().join("tigon/tg3_tso.bin.xz"),
                    bytes: 2,
                },
            ]
        );
        assert_eq!(fw.missing["tg3"], ["tigon/tg357766.bin"]);
        assert_eq!(fw.missing["evil"], evil);
    }
}
