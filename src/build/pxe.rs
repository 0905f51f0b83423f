//! The PXE tree, ready to serve as a TFTP/HTTP root: BIOS (pxelinux), UEFI with
//! Secure Boot (Debian's signed shim + grubnetx64), iPXE, and per-host kernel
//! arguments chosen by MAC address from the preset's `[[hosts]]`.

use super::iso::{Console, DEBUG_ARGS, DEFAULT_ARGS, kernel_args, render};
use super::output;
use crate::cmdline::Cmdline;
use crate::config::Host;
use std::path::{Path, PathBuf};

const PXELINUX_CFG: &str = include_str!("../../iso/pxelinux.cfg");
const GRUB_CFG: &str = include_str!("../../iso/grub-pxe.cfg");
const BOOT_IPXE: &str = include_str!("../../iso/boot.ipxe");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the {what} {path}: {source} (run scripts/fetch-inputs.sh)")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] output::Error),
}

/// The network boot loaders, from the unpacked Debian packages.
pub struct PxeInputs {
    /// (name in the tree, source, what it is)
    files: Vec<(&'static str, PathBuf, &'static str)>,
}

impl PxeInputs {
    pub fn debian(inputs: &Path) -> Self {
        let p = |rel: &str| inputs.join(rel);
        PxeInputs {
            files: vec![
                (
                    "pxelinux.0",
                    p("usr/lib/PXELINUX/pxelinux.0"),
                    "BIOS network loader",
                ),
                (
                    "ldlinux.c32",
                    p("usr/lib/syslinux/modules/bios/ldlinux.c32"),
                    "pxelinux module",
                ),
                (
                    "bootx64.efi",
                    p("usr/lib/shim/shimx64.efi.signed"),
                    "signed shim",
                ),
                (
                    "grubx64.efi",
                    p("usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"),
                    "signed network GRUB",
                ),
                (
                    "mmx64.efi",
                    p("usr/lib/shim/mmx64.efi.signed"),
                    "MOK manager",
                ),
            ],
        }
    }
}

/// The kernel arguments a host gets on top of everyone's: its settings written as
/// the client reads them (`failback.*`), then its own extra arguments.
pub fn host_args(host: &Host) -> String {
    let settings = Cmdline {
        host: host.name.clone(),
        ip: host.ip.clone(),
        source: host.source.clone(),
        map: Some(host.map.clone()).filter(|m| !m.is_empty()),
        ..Cmdline::default()
    };
    let extra = host.args.as_deref().map(str::trim).unwrap_or("");
    [settings.to_string(), extra.to_string()]
        .into_iter()
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes the loaders and menus into `dir` (the `pxe/` directory that already
/// holds `vmlinuz` and `initrd.img`). Returns the paths written, relative to `dir`.
pub fn write(
    dir: &Path,
    inputs: &PxeInputs,
    hosts: &[Host],
    extra: &str,
    console: Console,
) -> Result<Vec<String>, Error> {
    let mut written = Vec::new();
    for (name, src, what) in &inputs.files {
        let data = std::fs::read(src).map_err(|source| Error::Read {
            what,
            path: src.clone(),
            source,
        })?;
        output::write_atomic(&dir.join(name), &data)?;
        written.push(name.to_string());
    }
    let version = env!("CARGO_PKG_VERSION");
    let (append, append_debug) = (
        kernel_args(console.serial, DEFAULT_ARGS, extra),
        kernel_args(console.serial, DEBUG_ARGS, extra),
    );
    let pxelinux_cfg = render(PXELINUX_CFG, &[("SERIAL_MENU", &console.syslinux_serial())]);
    let grub_cfg = render(GRUB_CFG, &[("SERIAL_MENU", &console.grub_serial())]);
    let menu = |template: &str, host_args: &str, hosts_block: &str| {
        render(
            template,
            &[
                ("VERSION", version),
                ("APPEND", &append),
                ("APPEND_DEBUG", &append_debug),
                ("HOST_ARGS", host_args),
                ("HOSTS", hosts_block),
            ],
        )
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect::<String>()
    };
    let mut files = vec![(
        "pxelinux.cfg/default".to_string(),
        menu(&pxelinux_cfg, "", ""),
    )];
    for host in hosts {
        let name = format!("pxelinux.cfg/01-{}", host.mac.to_string().replace(':', "-"));
        files.push((name, menu(&pxelinux_cfg, &host_args(host), "")));
    }
    let grub_hosts: String = hosts
        .iter()
        .map(|h| {
            format!(
                "if [ \"$net_default_mac\" = \"{}\" ]; then set host_args=\"{}\"; fi\n",
                h.mac,
                host_args(h)
            )
        })
        .collect();
    files.push(("grub/grub.cfg".into(), menu(&grub_cfg, "", &grub_hosts)));
    let ipxe_hosts: String = hosts
        .iter()
        .map(|h| {
            format!(
                "iseq ${{net0/mac}} {} && set host_args {} ||\n",
                h.mac,
                host_args(h)
            )
        })
        .collect();
    files.push(("boot.ipxe".into(), menu(BOOT_IPXE, "", &ipxe_hosts)));
    for (name, text) in files {
        output::write_atomic(&dir.join(&name), text.as_bytes())?;
        written.push(name);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Preset;

    fn hosts() -> Vec<Host> {
        Preset::parse(
            "[[hosts]]\nmac = \"52:54:00:AA:BB:01\"\nname = \"rack1-07\"\nip = \"10.0.0.7/24,10.0.0.1,10.0.0.2\"\n\
             args = \"failback.debug\"\n[hosts.map]\nsystem = \"/dev/nvme0n1\"\n",
            "t",
        )
        .unwrap()
        .hosts
    }

    #[test]
    fn host_arguments_carry_the_host_settings() {
        assert_eq!(
            host_args(&hosts()[0]),
            "failback.host=rack1-07 failback.ip=10.0.0.7/24,10.0.0.1,10.0.0.2 failback.map=system=/dev/nvme0n1 failback.debug"
        );
    }

    #[test]
    fn menus_select_hosts_by_mac_in_every_loader() {
        let tmp = tempfile::tempdir().unwrap();
        let inputs = tmp.path().join("in");
        std::fs::create_dir_all(&inputs).unwrap();
        let files: Vec<_> = [
            "pxelinux.0",
            "ldlinux.c32",
            "bootx64.efi",
            "grubx64.efi",
            "mmx64.efi",
        ]
        .iter()
        .map(|n| {
            std::fs::write(inputs.join(n), n.as_bytes()).unwrap();
            (*n, inputs.join(n), "loader")
        })
        .collect();
        let out = tmp.path().join("pxe");
        let written = write(
            &out,
            &PxeInputs { files },
            &hosts(),
            "failback.progress=json",
            Console {
                serial: "ttyS1".parse().unwrap(),
                serial_menu: true,
            },
        )
        .unwrap();
        assert!(
            written.contains(&"pxelinux.cfg/01-52-54-00-aa-bb-01".to_string()),
            "{written:?}"
        );
        let read = |n: &str| std::fs::read_to_string(out.join(n)).unwrap();
        let default = read("pxelinux.cfg/default");
        assert!(default.contains("append initrd=initrd.img console=tty0 console=ttyS1,115200 quiet failback.progress=json\n"), "{default}");
        assert!(
            default.contains("\nserial 1 115200\n"),
            "--serial ttyS1: {default}"
        );
        assert!(!default.contains("rack1-07"));
        assert!(
            read("pxelinux.cfg/01-52-54-00-aa-bb-01")
                .contains("failback.progress=json failback.host=rack1-07")
        );
        let grub = read("grub/grub.cfg");
        assert!(grub.contains("if [ \"$net_default_mac\" = \"52:54:00:aa:bb:01\" ]; then set host_args=\"failback.host=rack1-07"), "{grub}");
        assert!(grub.contains("linux vmlinuz console=tty0 console=ttyS1,115200 quiet failback.progress=json $host_args"), "{grub}");
        let ipxe = read("boot.ipxe");
        assert!(ipxe.starts_with("#!ipxe\n"));
        assert!(
            ipxe.contains(
                "iseq ${net0/mac} 52:54:00:aa:bb:01 && set host_args failback.host=rack1-07"
            ),
            "{ipxe}"
        );
        assert_eq!(read("bootx64.efi"), "bootx64.efi");
    }
}
