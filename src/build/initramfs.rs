//! The initramfs: the client as `/init`, the driver classes' modules with their
//! closure and index files, the firmware those modules request, the optional
//! preset; packed as a compressed newc cpio.

use super::cpio::{self, Archive, Kind};
use super::firmware;
use super::modules::{self, ModuleIndex};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The driver classes, as kept in `initramfs/drivers/*.list`.
pub const DRIVER_CLASSES: &[(&str, &str)] = &[
    (
        "storage",
        include_str!("../../initramfs/drivers/storage.list"),
    ),
    (
        "network",
        include_str!("../../initramfs/drivers/network.list"),
    ),
    ("base", include_str!("../../initramfs/drivers/base.list")),
];

/// Module names of a class list: one per line, `#` comments.
pub fn class_modules(list: &str) -> impl Iterator<Item = &str> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Modules(#[from] modules::Error),
    #[error(transparent)]
    Cpio(#[from] cpio::Error),
    #[error("cannot compress the initramfs: {0}")]
    Compress(std::io::Error),
    #[error("cannot read {path} for the initramfs: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

const ZSTD_LEVEL: i32 = 3;

/// What goes in.
pub struct Spec<'a> {
    pub client: &'a Path,
    pub index: &'a ModuleIndex,
    pub kernel_version: &'a str,
    /// `/etc/failback.toml`, already validated.
    pub preset: Option<Vec<u8>>,
    /// SOURCE_DATE_EPOCH: every mtime in the archive.
    pub mtime: u32,
    /// Where the firmware the modules request is looked up, first match wins.
    pub firmware_dirs: &'a [PathBuf],
    /// Firmware found below this directory is counted apart, as the "non-free" class.
    pub non_free_firmware: &'a Path,
    /// A static busybox, installed as `/bin/busybox`: the diagnostics shell.
    pub busybox: Option<&'a Path>,
}

/// One part of the initramfs: a driver class (its modules with their closure; a
/// module two classes share counts in the first), the firmware, the shell (busybox)
/// or the client.
#[derive(Debug, Clone)]
pub struct ClassStats {
    pub class: String,
    /// Files of this class in the archive.
    pub files: usize,
    /// Their bytes as stored (unpacked).
    pub bytes: u64,
    /// Their bytes compressed alone with the archive's zstd level: what the
    /// class adds to the initrd, roughly.
    pub packed: u64,
    /// Names asked for but not found: modules this kernel has neither as
    /// module nor built in; firmware files in no firmware directory.
    pub missing: Vec<String>,
}

/// What came out.
pub struct Initramfs {
    /// zstd-compressed newc archive.
    pub image: Vec<u8>,
    pub uncompressed: usize,
    pub modules: usize,
    /// storage, network, base, firmware, non-free (firmware, if any), shell (if any),
    /// client: in that order.
    pub classes: Vec<ClassStats>,
    /// Module -> firmware it requests that no firmware directory holds.
    pub firmware_missing: BTreeMap<String, Vec<String>>,
}

/// Assembles and compresses the initramfs.
pub fn build(spec: &Spec) -> Result<Initramfs, Error> {
    let mut archive = Archive::new();
    archive.add("init", Kind::FileFrom(spec.client.to_path_buf()), 0o755);
    // The kernel opens /dev/console for PID 1's stdio before anything is mounted.
    archive.add("dev/console", Kind::CharDev { major: 5, minor: 1 }, 0o600);
    for dir in ["proc", "sys", "run", "tmp", "etc", "mnt"] {
        archive.add(dir, Kind::Dir, 0o755);
    }
    if let Some(preset) = &spec.preset {
        archive.add("etc/failback.toml", Kind::Bytes(preset.clone()), 0o600);
    }

    let mut all = BTreeSet::new();
    let mut classes = Vec::new();
    for (class, list) in DRIVER_CLASSES {
        let closure = spec.index.closure(class_modules(list))?;
        let sources: Vec<PathBuf> = closure
            .modules
            .iter()
            .filter(|m| !all.contains(*m))
            .map(|m| module_path(spec.index, m))
            .collect();
        classes.push(stats(
            class,
            &sources,
            closure.missing.into_iter().collect(),
        )?);
        all.extend(closure.modules);
    }
    let dir = format!("lib/modules/{}", spec.kernel_version);
    for name in &all {
        let module = spec.index.get(name).expect("closure holds indexed modules");
        archive.add(
            &format!("{dir}/{}", module.rel.display()),
            Kind::FileFrom(module_path(spec.index, name)),
            0o644,
        );
    }
    archive.add(
        &format!("{dir}/modules.dep"),
        Kind::Bytes(spec.index.modules_dep(&all).into_bytes()),
        0o644,
    );
    archive.add(
        &format!("{dir}/modules.alias"),
        Kind::Bytes(spec.index.modules_alias(&all).into_bytes()),
        0o644,
    );
    archive.add(
        &format!("{dir}/modules.softdep"),
        Kind::Bytes(spec.index.modules_softdep(&all).into_bytes()),
        0o644,
    );

    let requests: Vec<(&str, &[String])> = all
        .iter()
        .filter_map(|name| spec.index.get(name))
        .map(|m| (m.info.name.as_str(), &m.info.firmware[..]))
        .collect();
    let firmware = firmware::resolve(requests, spec.firmware_dirs);
    for f in &firmware.found {
        archive.add(
            &format!("lib/firmware/{}", f.name),
            Kind::FileFrom(f.source.clone()),
            0o644,
        );
    }
    let (non_free, free): (Vec<PathBuf>, Vec<PathBuf>) = firmware
        .found
        .iter()
        .map(|f| f.source.clone())
        .partition(|source| source.starts_with(spec.non_free_firmware));
    let missing = firmware.missing.values().flatten().cloned().collect();
    classes.push(stats("firmware", &free, missing)?);
    if !non_free.is_empty() {
        classes.push(stats("non-free", &non_free, Vec::new())?);
    }
    if let Some(busybox) = spec.busybox {
        archive.add("bin/busybox", Kind::FileFrom(busybox.to_path_buf()), 0o755);
        classes.push(stats("shell", &[busybox.to_path_buf()], Vec::new())?);
    }
    classes.push(stats("client", &[spec.client.to_path_buf()], Vec::new())?);

    let mut raw = Vec::new();
    archive.write(spec.mtime, &mut raw)?;
    // zstd at a low level: the kernel unpacks it faster than gzip (under TCG too:
    // measured 2.9 s vs 5.0 s of uptime to /init) and it is still smaller than gzip -9.
    // Single-threaded with fixed parameters: reproducible.
    let image = zstd::bulk::compress(&raw, ZSTD_LEVEL).map_err(Error::Compress)?;
    Ok(Initramfs {
        image,
        uncompressed: raw.len(),
        modules: all.len(),
        classes,
        firmware_missing: firmware.missing,
    })
}

fn module_path(index: &ModuleIndex, name: &str) -> PathBuf {
    let module = index.get(name).expect("closure holds indexed modules");
    index.dir().join(&module.rel)
}

/// The sizes of one class's files, unpacked and compressed alone.
fn stats(class: &str, sources: &[PathBuf], missing: Vec<String>) -> Result<ClassStats, Error> {
    let mut raw = Vec::new();
    for path in sources {
        let data = std::fs::read(path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        raw.extend_from_slice(&data);
    }
    let packed = zstd::bulk::compress(&raw, ZSTD_LEVEL).map_err(Error::Compress)?;
    Ok(ClassStats {
        class: class.to_string(),
        files: sources.len(),
        bytes: raw.len() as u64,
        packed: packed.len() as u64,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_lists_hold_module_names_only() {
        for (class, list) in DRIVER_CLASSES {
            let names: Vec<_> = class_modules(list).collect();
            assert!(!names.is_empty(), "{class} list is empty");
            for n in names {
                assert!(
                    n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                    "{class}: bad name {n:?}"
                );
            }
        }
        assert!(class_modules(DRIVER_CLASSES[0].1).any(|m| m == "ahci"));
    }
}
