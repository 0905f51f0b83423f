//! Kernel modules for the initramfs: read each module's `.modinfo`, take the
//! closure of the wanted driver classes over `depends=` and `softdep=pre:`, and
//! write `modules.dep` / `modules.alias` for that subset (what depmod would write;
//! Debian's packages ship no modules.dep, it is made at install time).

use object::{Object, ObjectSection};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Errors while indexing modules.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a kernel module: {reason}")]
    NotAModule { path: PathBuf, reason: String },
    #[error("module {module} depends on {dependency}, which is not in {dir}")]
    MissingDependency {
        module: String,
        dependency: String,
        dir: PathBuf,
    },
}

/// What `.modinfo` says about one module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub name: String,
    pub depends: Vec<String>,
    /// `softdep=pre:` modules: loaded before this one when present.
    pub pre: Vec<String>,
    pub aliases: Vec<String>,
    pub firmware: Vec<String>,
}

/// Parses the NUL-separated `key=value` strings of a `.modinfo` section.
pub fn parse_modinfo(section: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for item in section.split(|&b| b == 0) {
        let Some((key, value)) = std::str::from_utf8(item)
            .ok()
            .and_then(|s| s.split_once('='))
        else {
            continue;
        };
        match key {
            "name" => info.name = value.to_string(),
            "depends" => info
                .depends
                .extend(value.split(',').filter(|d| !d.is_empty()).map(normalize)),
            "alias" => info.aliases.push(value.to_string()),
            "firmware" => info.firmware.push(value.to_string()),
            "softdep" => {
                // "pre: a b post: c" -- only the pre part matters for load order.
                let mut pre = false;
                for word in value.split_whitespace() {
                    match word {
                        "pre:" => pre = true,
                        "post:" => pre = false,
                        m if pre => info.pre.push(normalize(m)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    info
}

/// Module names use `_`; file names and lists may use `-`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// One module file of the kernel tree.
#[derive(Debug, Clone)]
pub struct Module {
    /// Path relative to the modules dir, e.g. `kernel/drivers/ata/ahci.ko`.
    pub rel: PathBuf,
    pub info: ModInfo,
}

/// All modules of one kernel, by normalized name.
#[derive(Debug)]
pub struct ModuleIndex {
    dir: PathBuf,
    modules: BTreeMap<String, Module>,
    builtin: BTreeSet<String>,
}

impl ModuleIndex {
    /// Indexes `dir` (`.../lib/modules/<version>`): every `.ko` under `kernel/`.
    pub fn scan(dir: &Path) -> Result<Self, Error> {
        let mut files = Vec::new();
        collect_ko(&dir.join("kernel"), &mut files)?;
        let mut modules = BTreeMap::new();
        for path in files {
            let data = fs::read(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            let elf = object::File::parse(&*data).map_err(|e| Error::NotAModule {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let section = elf
                .section_by_name(".modinfo")
                .and_then(|s| s.data().ok())
                .ok_or_else(|| Error::NotAModule {
                    path: path.clone(),
                    reason: "no .modinfo section".into(),
                })?;
            let mut info = parse_modinfo(section);
            if info.name.is_empty() {
                let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                info.name = normalize(&stem);
            }
            let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
            modules.insert(info.name.clone(), Module { rel, info });
        }
        // modules.builtin lists built-in "modules" as paths: kernel/x/y.ko
        let builtin = fs::read_to_string(dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| Path::new(l).file_stem())
            .map(|s| normalize(&s.to_string_lossy()))
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            modules,
            builtin,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Module> {
        self.modules.get(&normalize(name))
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The wanted modules plus everything they need, by name. Names that are
    /// built into the kernel are dropped; names this kernel lacks are returned
    /// separately so the caller can say so.
    pub fn closure<'a>(&self, wanted: impl IntoIterator<Item = &'a str>) -> Result<Closure, Error> {
        let mut out = Closure::default();
        let mut stack: Vec<String> = Vec::new();
        for name in wanted {
            let name = normalize(name);
            if self.modules.contains_key(&name) {
                stack.push(name);
            } else if !self.is_builtin(&name) {
                out.missing.insert(name);
            }
        }
        while let Some(name) = stack.pop() {
            if !out.modules.insert(name.clone()) {
                continue;
            }
            let module = &self.modules[&name];
            for dep in &module.info.depends {
                if !self.modules.contains_key(dep) {
                    return Err(Error::MissingDependency {
                        module: name,
                        dependency: dep.clone(),
                        dir: self.dir.clone(),
                    });
                }
                stack.push(dep.clone());
            }
            // A soft dependency is optional by definition: take it when present.
            stack.extend(
                module
                    .info
                    .pre
                    .iter()
                    .filter(|m| self.modules.contains_key(*m))
                    .cloned(),
            );
        }
        Ok(out)
    }

    /// `modules.dep` for a set of modules: `rel: dep-rel dep-rel...`, each line's
    /// dependencies listed in depmod's order (load from last to first).
    pub fn modules_dep(&self, set: &BTreeSet<String>) -> String {
        let mut out = String::new();
        for name in set {
            let module = &self.modules[name];
            let mut order = Vec::new();
            self.load_order(name, &mut order, &mut BTreeSet::new());
            order.pop(); // the module itself comes last in load order
            let deps: Vec<String> = order
                .iter()
                .rev()
                .map(|d| self.modules[d].rel.display().to_string())
                .collect();
            out.push_str(&format!("{}:", module.rel.display()));
            for d in deps {
                out.push(' ');
                out.push_str(&d);
            }
            out.push('\n');
        }
        out
    }

    fn load_order(&self, name: &str, order: &mut Vec<String>, seen: &mut BTreeSet<String>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        for dep in &self.modules[name].info.depends {
            self.load_order(dep, order, seen);
        }
        order.push(name.to_string());
    }

    /// `modules.alias` for a set of modules: `alias PATTERN NAME` lines.
    pub fn modules_alias(&self, set: &BTreeSet<String>) -> String {
        let mut lines: Vec<String> = set
            .iter()
            .flat_map(|name| {
                self.modules[name]
                    .info
                    .aliases
                    .iter()
                    .map(move |a| format!("alias {a} {name}"))
            })
            .collect();
        lines.sort();
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// `modules.softdep` lines for load order: `softdep NAME pre: A B`.
    pub fn modules_softdep(&self, set: &BTreeSet<String>) -> String {
        set.iter()
            .filter_map(|name| {
                let pre: Vec<&str> = self.modules[name]
                    .info
                    .pre
                    .iter()
                    .filter(|p| set.contains(*p))
                    .map(String::as_str)
                    .collect();
                (!pre.is_empty()).then(|| format!("softdep {name} pre: {}\n", pre.join(" ")))
            })
            .collect()
    }
}

/// The modules chosen for an initramfs.
#[derive(Debug, Default)]
pub struct Closure {
    pub modules: BTreeSet<String>,
    /// Wanted but neither a module nor built into this kernel.
    pub missing: BTreeSet<String>,
}

fn collect_ko(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = fs::read_dir(dir).map_err(|source| Error::Read {
        path: dir.into(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.into(),
            source,
        })?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        if kind.is_dir() {
            collect_ko(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "ko") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_fields_are_parsed() {
        let raw = b"license=GPL\0depends=libahci,libata\0alias=pci:v*d*sv*sd*bc01sc06i01*\0name=ahci\0softdep=pre: crc32c-intel post: foo\0firmware=a.bin\0\0";
        let info = parse_modinfo(raw);
        assert_eq!(info.name, "ahci");
        assert_eq!(info.depends, ["libahci", "libata"]);
        assert_eq!(info.aliases, ["pci:v*d*sv*sd*bc01sc06i01*"]);
        assert_eq!(info.pre, ["crc32c_intel"]);
        assert_eq!(info.firmware, ["a.bin"]);
        assert!(parse_modinfo(b"depends=\0").depends.is_empty());
    }

    fn index(mods: &[(&str, &[&str], &[&str])]) -> ModuleIndex {
        let modules = mods
            .iter()
            .map(|(name, deps, pre)| {
                let info = ModInfo {
                    name: name.to_string(),
                    depends: deps.iter().map(|s| s.to_string()).collect(),
                    pre: pre.iter().map(|s| s.to_string()).collect(),
                    aliases: vec![format!("pci:{name}*")],
                    firmware: vec![],
                };
                (
                    name.to_string(),
                    Module {
                        rel: format!("kernel/{name}.ko").into(),
                        info,
                    },
                )
            })
            .collect();
        ModuleIndex {
            dir: "/m".into(),
            modules,
            builtin: ["sd_mod".to_string()].into(),
        }
    }

    #[test]
    fn closure_follows_dependencies_and_reports_the_unknown() {
        let idx = index(&[
            ("ahci", &["libahci", "libata"], &[]),
            ("libahci", &["libata"], &[]),
            ("libata", &["scsi_mod"], &[]),
            ("scsi_mod", &[], &["crc_t10dif", "absent"]),
            ("crc_t10dif", &[], &[]),
            ("e1000", &[], &[]),
        ]);
        let c = idx.closure(["ahci", "sd-mod", "nosuch"]).unwrap();
        assert_eq!(
            c.modules.iter().collect::<Vec<_>>(),
            ["ahci", "crc_t10dif", "libahci", "libata", "scsi_mod"]
        );
        assert_eq!(c.missing.iter().collect::<Vec<_>>(), ["nosuch"]);
        let dep = idx.modules_dep(&c.modules);
        // depmod order: the first dependency is loaded last.
        let ahci_line = dep
            .lines()
            .find(|l| l.starts_with("kernel/ahci.ko:"))
            .unwrap();
        assert_eq!(
            ahci_line,
            "kernel/ahci.ko: kernel/libahci.ko kernel/libata.ko kernel/scsi_mod.ko"
        );
        assert!(
            idx.modules_alias(&c.modules)
                .contains("alias pci:ahci* ahci\n")
        );
        assert_eq!(
            idx.modules_softdep(&c.modules),
            "softdep scsi_mod pre: crc_t10dif\n"
        );
    }

    #[test]
    fn a_dependency_missing_from_the_tree_is_an_error() {
        let idx = index(&[("ahci", &["libahci"], &[])]);
        let err = idx.closure(["ahci"]).unwrap_err().to_string();
        assert!(err.contains("ahci depends on libahci"), "{err}");
    }
}
