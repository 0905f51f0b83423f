//! Coldplug without udev: every device in sysfs exposes a `modalias`; the
//! modules whose `modules.alias` glob matches it are loaded (dependencies first,
//! per `modules.dep`), and the walk repeats until nothing new appears, since
//! loaded drivers reveal more devices (PCI -> virtio -> disks, USB, SCSI hosts).

use glob::Pattern;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The index is written by the builder: missing, the initramfs was not
    /// unpacked whole (the kernel runs out of memory first on small machines).
    #[error(
        "cannot read {path}: {error}; the initramfs is incomplete (with too little memory \
         the kernel cannot unpack it all: give the machine more)"
    )]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The module index of the running kernel, as written by the builder.
#[derive(Debug, Default)]
pub struct Modules {
    dir: PathBuf,
    aliases: Vec<(Pattern, String)>,
    /// name -> (path relative to `dir`, dependencies in load order)
    deps: BTreeMap<String, (PathBuf, Vec<String>)>,
    pre: BTreeMap<String, Vec<String>>,
}

impl Modules {
    /// Reads `modules.dep`, `modules.alias` and `modules.softdep` from `dir`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|error| Error::Read { path, error })
        };
        let mut deps = BTreeMap::new();
        for line in read("modules.dep")?.lines() {
            let Some((module, rest)) = line.split_once(':') else {
                continue;
            };
            // depmod lists dependencies so that the last one loads first.
            let order = rest.split_whitespace().rev().map(module_name).collect();
            deps.insert(module_name(module), (PathBuf::from(module), order));
        }
        let aliases = read("modules.alias")?
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some("alias"), Some(pattern), Some(module)) => {
                        Some((Pattern::new(pattern).ok()?, module.to_string()))
                    }
                    _ => None,
                }
            })
            .collect();
        let pre = read("modules.softdep")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("softdep ")?;
                let (module, list) = rest.split_once(" pre: ")?;
                Some((
                    module.to_string(),
                    list.split_whitespace().map(str::to_string).collect(),
                ))
            })
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            aliases,
            deps,
            pre,
        })
    }

    /// The modules whose alias matches a device's modalias.
    pub fn matching(&self, modalias: &str) -> Vec<&str> {
        let mut found: Vec<&str> = self
            .aliases
            .iter()
            .filter(|(p, _)| p.matches(modalias))
            .map(|(_, m)| m.as_str())
            .collect();
        found.sort();
        found.dedup();
        found
    }

    /// The files to load for `name`, in order: soft pre-dependencies,
    /// dependencies, the module itself. Empty when the module is unknown.
    pub fn load_order(&self, name: &str) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        self.push_order(name, &mut out, &mut BTreeSet::new());
        out
    }

    fn push_order(
        &self,
        name: &str,
        out: &mut Vec<(String, PathBuf)>,
        seen: &mut BTreeSet<String>,
    ) {
        let name = name.replace('-', "_");
        if !seen.insert(name.clone()) {
            return;
        }
        let Some((path, deps)) = self.deps.get(&name) else {
            return;
        };
        for pre in self.pre.get(&name).into_iter().flatten() {
            self.push_order(pre, out, seen);
        }
        for dep in deps {
            self.push_order(dep, out, seen);
        }
        out.push((name, self.dir.join(path)));
    }
}

fn module_name(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    file.trim_end_matches(".ko").replace('-', "_")
}

/// Loads module files; `finit_module` in the real system, a recorder in tests.
pub trait Loader {
    /// Ok(()) when loaded or already loaded.
    fn load(&mut self, module: &str, path: &Path) -> Result<(), String>;
}

/// What coldplug did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub loaded: Vec<String>,
    /// "module: reason"
    pub failed: Vec<String>,
}

/// Loads modules for devices until the device set has been quiet for `quiet`
/// (or `limit` has passed).
pub struct Coldplug<'a> {
    modules: &'a Modules,
    loader: &'a mut dyn Loader,
    tried: BTreeSet<String>,
    outcome: Outcome,
}

impl<'a> Coldplug<'a> {
    pub fn new(modules: &'a Modules, loader: &'a mut dyn Loader) -> Self {
        Self {
            modules,
            loader,
            tried: BTreeSet::new(),
            outcome: Outcome::default(),
        }
    }

    /// Loads one module (and what it needs) by name, once.
    pub fn load(&mut self, name: &str) {
        for (module, path) in self.modules.load_order(name) {
            if !self.tried.insert(module.clone()) {
                continue;
            }
            match self.loader.load(&module, &path) {
                Ok(()) => self.outcome.loaded.push(module),
                Err(reason) => self.outcome.failed.push(format!("{module}: {reason}")),
            }
        }
    }

    /// Walks `sys` (normally `/sys`) repeatedly, loading drivers for every new
    /// modalias, until neither the modaliases nor the block devices changed for
    /// `quiet`.
    pub fn run(mut self, sys: &Path, quiet: Duration, limit: Duration) -> Outcome {
        let started = Instant::now();
        let mut seen = BTreeSet::new();
        let mut last_blocks = BTreeSet::new();
        let mut last_change = Instant::now();
        loop {
            let mut aliases = BTreeSet::new();
            collect_modaliases(&sys.join("devices"), &mut aliases);
            let blocks = list_dir(&sys.join("block"));
            let new: Vec<String> = aliases.difference(&seen).cloned().collect();
            for alias in &new {
                for module in self.modules.matching(alias) {
                    self.load(module);
                }
            }
            // Measured from after the loads: probing goes on once they return.
            if !new.is_empty() || blocks != last_blocks {
                last_change = Instant::now();
            }
            seen.extend(new);
            last_blocks = blocks;
            if last_change.elapsed() >= quiet || started.elapsed() >= limit {
                return self.outcome;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Every `modalias` under `dir`, not following symlinks (sysfs is full of loops).
fn collect_modaliases(dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect_modaliases(&entry.path(), out);
        } else if kind.is_file()
            && entry.file_name() == "modalias"
            && let Ok(text) = fs::read_to_string(entry.path())
            && !text.trim().is_empty()
        {
            out.insert(text.trim().to_string());
        }
    }
}

fn list_dir(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The real loader: `finit_module(2)`, with the parameters the kernel command line
/// gives each module (`MODULE.PARAM=VALUE`): the kernel applies those only to
/// built-in code and leaves the rest to modprobe, which is not here.
pub struct KernelLoader {
    params: BTreeMap<String, String>,
}

impl KernelLoader {
    /// `params`: module name -> its parameters, space-separated.
    pub fn new(params: BTreeMap<String, String>) -> Self {
        Self { params }
    }

    /// What the kernel holds for each parameter given on the command line to a
    /// loaded module (`MODULE.PARAM` -> value, from /sys/module), to report.
    pub fn applied(&self, sys: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (module, args) in &self.params {
            for arg in args.split_whitespace() {
                let param = arg.split_once('=').map_or(arg, |(p, _)| p);
                let file = sys
                    .join("module")
                    .join(module)
                    .join("parameters")
                    .join(param);
                if let Ok(value) = fs::read_to_string(file) {
                    out.insert(format!("{module}.{param}"), value.trim().to_string());
                }
            }
        }
        out
    }
}

impl Loader for KernelLoader {
    fn load(&mut self, module: &str, path: &Path) -> Result<(), String> {
        let file =
            fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let args = self.params.get(module).map(String::as_str).unwrap_or("");
        let args = std::ffi::CString::new(args)
            .map_err(|_| format!("a NUL byte in the parameters of {module}"))?;
        match nix::kmod::finit_module(&file, &args, nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(e.desc().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder(Vec<String>);
    impl Loader for Recorder {
        fn load(&mut self, _: &str, path: &Path) -> Result<(), String> {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name == "broken.ko" {
                return Err("Invalid argument".into());
            }
            self.0.push(name);
            Ok(())
        }
    }

    fn fixture() -> (tempfile::TempDir, Modules) {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::write(
            d.join("modules.dep"),
            "kernel/ahci.ko: kernel/libahci.ko kernel/libata.ko kernel/scsi_mod.ko\n\
             kernel/libahci.ko: kernel/libata.ko kernel/scsi_mod.ko\n\
             kernel/libata.ko: kernel/scsi_mod.ko\nkernel/scsi_mod.ko:\nkernel/crc-t10dif.ko:\n\
             kernel/sd_mod.ko: kernel/scsi_mod.ko\nkernel/broken.ko:\n",
        )
        .unwrap();
        fs::write(
            d.join("modules.alias"),
            "alias pci:v*d*sv*sd*bc01sc06i01* ahci\nalias scsi:t-0x00* sd_mod\nalias pci:v00001234d* broken\n",
        )
        .unwrap();
        fs::write(
            d.join("modules.softdep"),
            "softdep scsi_mod pre: crc_t10dif\n",
        )
        .unwrap();
        let m = Modules::open(d).unwrap();
        (tmp, m)
    }

    #[test]
    fn aliases_match_by_glob() {
        let (_t, m) = fixture();
        assert_eq!(
            m.matching("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"),
            ["ahci"]
        );
        assert_eq!(m.matching("scsi:t-0x00"), ["sd_mod"]);
        assert!(
            m.matching("pci:v00008086d00002922sv00001AF4sd00001100bc02sc00i00")
                .is_empty()
        );
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let (_t, m) = fixture();
        let mut rec = Recorder(vec![]);
        let mut cp = Coldplug::new(&m, &mut rec);
        cp.load("ahci");
        cp.load("sd_mod");
        let outcome = cp.outcome;
        assert_eq!(
            rec.0,
            [
                "crc-t10dif.ko",
                "scsi_mod.ko",
                "libata.ko",
                "libahci.ko",
                "ahci.ko",
                "sd_mod.ko"
            ]
        );
        assert_eq!(
            outcome.loaded,
            [
                "crc_t10dif",
                "scsi_mod",
                "libata",
                "libahci",
                "ahci",
                "sd_mod"
            ]
        );
    }

    #[test]
    fn run_walks_sysfs_and_reports_failures() {
        let (_t, m) = fixture();
        let sys = tempfile::tempdir().unwrap();
        let dev = sys.path().join("devices/pci0000:00/0000:00:1f.2");
        fs::create_dir_all(&dev).unwrap();
        fs::write(
            dev.join("modalias"),
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01\n",
        )
        .unwrap();
        let other = sys.path().join("devices/pci0000:00/0000:00:03.0");
        fs::create_dir_all(&other).unwrap();
        fs::write(
            other.join("modalias"),
            "pci:v00001234d00001111sv0sd0bc03sc00i00\n",
        )
        .unwrap();
        let mut rec = Recorder(vec![]);
        let outcome = Coldplug::new(&m, &mut rec).run(
            sys.path(),
            Duration::from_millis(200),
            Duration::from_secs(5),
        );
        assert!(outcome.loaded.contains(&"ahci".to_string()));
        assert_eq!(outcome.failed, ["broken: Invalid argument"]);
    }
}
