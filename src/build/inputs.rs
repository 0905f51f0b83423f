//! Locate and check what an image is built from: the kernel, its modules and
//! the client binary.

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "inputs directory {0} not found: run scripts/fetch-inputs.sh (or pass --kernel and --modules)"
    )]
    NoInputs(PathBuf),
    #[error("no kernel (boot/vmlinuz-*) in {0}: run scripts/fetch-inputs.sh (or pass --kernel)")]
    NoKernel(PathBuf),
    #[error("several kernels in {dir} ({found}): pass the one to use with --kernel")]
    ManyKernels { dir: PathBuf, found: String },
    #[error("cannot read the kernel {path}: {source}")]
    Kernel {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a bzImage kernel (no 'HdrS' boot header)")]
    NotAKernel { path: PathBuf },
    #[error("modules for kernel {version} not found at {path}: pass --modules DIR")]
    NoModules { version: String, path: PathBuf },
    #[error("cannot read the client binary {path}: {source}")]
    Client {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("client binary {path} is not an x86-64 ELF executable: {reason}")]
    ClientNotElf { path: PathBuf, reason: String },
    #[error(
        "client binary {path} is dynamically linked (it needs {interp}) and cannot run as /init; build a static one: \
         RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release --target x86_64-unknown-linux-gnu"
    )]
    ClientDynamic { path: PathBuf, interp: String },
    #[error(
        "{path} cannot be the image's shell: {reason}; it must be Debian's busybox-static (scripts/fetch-inputs.sh)"
    )]
    Busybox { path: PathBuf, reason: String },
}

/// The kernel and the modules that belong to it.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub image: PathBuf,
    /// `lib/modules/<version>` of this kernel.
    pub modules: PathBuf,
    pub version: String,
}

/// Finds the kernel in `inputs` (unpacked Debian packages), unless given.
pub fn locate_kernel(
    inputs: &Path,
    image: Option<&Path>,
    modules: Option<&Path>,
) -> Result<Kernel, Error> {
    let image = match image {
        Some(p) => p.to_path_buf(),
        None => {
            if !inputs.is_dir() {
                return Err(Error::NoInputs(inputs.into()));
            }
            let boot = inputs.join("boot");
            let mut found: Vec<PathBuf> = fs::read_dir(&boot)
                .map_err(|_| Error::NoKernel(inputs.into()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                })
                .collect();
            found.sort();
            match found.len() {
                0 => return Err(Error::NoKernel(inputs.into())),
                1 => found.remove(0),
                _ => {
                    let found = found
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(Error::ManyKernels { dir: boot, found });
                }
            }
        }
    };
    check_bzimage(&image)?;
    let version = image
        .file_name()
        .and_then(|n| {
            n.to_string_lossy()
                .strip_prefix("vmlinuz-")
                .map(str::to_string)
        })
        .unwrap_or_default();
    let modules = match modules {
        Some(p) => p.to_path_buf(),
        None => inputs.join("lib/modules").join(&version),
    };
    if !modules.join("kernel").is_dir() {
        return Err(Error::NoModules {
            version,
            path: modules,
        });
    }
    let version = modules
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(version);
    Ok(Kernel {
        image,
        modules,
        version,
    })
}

/// A bzImage carries "HdrS" at offset 0x202 (Linux boot protocol, Documentation/arch/x86/boot.rst).
fn check_bzimage(path: &Path) -> Result<(), Error> {
    let data = fs::read(path).map_err(|source| Error::Kernel {
        path: path.into(),
        source,
    })?;
    if data.get(0x202..0x206) != Some(b"HdrS") {
        return Err(Error::NotAKernel { path: path.into() });
    }
    Ok(())
}

/// Refuses a client that cannot run as PID 1 in an initramfs without a libc:
/// any ELF with a PT_INTERP program header.
pub fn check_static_client(path: &Path) -> Result<(), Error> {
    let data = fs::read(path).map_err(|source| Error::Client {
        path: path.into(),
        source,
    })?;
    match interpreter(&data) {
        Err(reason) => Err(Error::ClientNotElf {
            path: path.into(),
            reason,
        }),
        Ok(Some(interp)) => Err(Error::ClientDynamic {
            path: path.into(),
            interp,
        }),
        Ok(None) => Ok(()),
    }
}

/// The busybox of the diagnostics shell, `bin/busybox` of the inputs (Debian's
/// busybox-static), if there is one; refused unless it is a static x86-64 executable.
pub fn locate_busybox(inputs: &Path) -> Result<Option<PathBuf>, Error> {
    let path = inputs.join("bin/busybox");
    if !path.is_file() {
        return Ok(None);
    }
    let data = fs::read(&path).map_err(|source| Error::Busybox {
        path: path.clone(),
        reason: source.to_string(),
    })?;
    let reason = match interpreter(&data) {
        Ok(None) => return Ok(Some(path)),
        Ok(Some(interp)) => format!("it is dynamically linked (it needs {interp})"),
        Err(reason) => format!("not an x86-64 ELF executable: {reason}"),
    };
    Err(Error::Busybox { path, reason })
}

/// The dynamic loader an x86-64 ELF executable asks for (its PT_INTERP), if any;
/// `Err` says why `data` is no x86-64 ELF.
fn interpreter(data: &[u8]) -> Result<Option<String>, String> {
    let header = elf::FileHeader64::<object::Endianness>::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    if header.e_machine(endian) != elf::EM_X86_64 {
        return Err("wrong machine".into());
    }
    for ph in header
        .program_headers(endian, data)
        .map_err(|e| e.to_string())?
    {
        if ph.p_type(endian) == elf::PT_INTERP {
            let interp = ph
                .data(endian, data)
                .ok()
                .map(|d| {
                    String::from_utf8_lossy(d)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .unwrap_or_else(|| "a dynamic loader".into());
            return Ok(Some(interp));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_is_refused_with_the_fix() {
        // The test binary itself is dynamically linked (no crt-static in tests).
        let me = std::env::current_exe().unwrap();
        let err = check_static_client(&me).unwrap_err().to_string();
        assert!(
            err.contains("dynamically linked") && err.contains("crt-static"),
            "{err}"
        );
    }

    #[test]
    fn a_non_elf_client_is_refused() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        fs::write(tmp.path(), b"#!/bin/sh\n").unwrap();
        let err = check_static_client(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("not an x86-64 ELF"), "{err}");
    }

    #[test]
    fn busybox_is_optional_but_must_be_static() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(locate_busybox(tmp.path()).unwrap().is_none());
        fs::create_dir(tmp.path().join("bin")).unwrap();
        // The test binary is dynamically linked: Debian's dynamic `busybox` would be too.
        fs::copy(
            std::env::current_exe().unwrap(),
            tmp.path().join("bin/busybox"),
        )
        .unwrap();
        let err = locate_busybox(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("dynamically linked") && err.contains("busybox-static"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_inputs_dir_says_how_to_get_one() {
        let err = locate_kernel(Path::new("/nonexistent/inputs"), None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fetch-inputs.sh"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_kernel_is_refused() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        fs::write(tmp.path(), vec![0u8; 4096]).unwrap();
        let err = locate_kernel(Path::new("."), Some(tmp.path()), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a bzImage"), "{err}");
    }
}
