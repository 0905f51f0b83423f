//! The hybrid ISO: ISO 9660 with Rock Ridge, El Torito (BIOS + UEFI), MBR + GPT.
//!
//! [`IsoBuilder::new`] takes the [`IsoInputs`]; [`IsoBuilder::write`] lays everything out and
//! writes the image to a temporary name beside the destination, renaming it into place only
//! when complete. Everything comes from the inputs and SOURCE_DATE_EPOCH, so two builds give
//! the same bytes.
//!
//! Image layout (2048-byte sectors):
//!
//! ```text
//! 0..15     system area: MBR (isohdpfx) + primary GPT       (hybrid.rs)
//! 16        primary volume descriptor                       ECMA-119 8.4
//! 17        El Torito boot record                            El Torito 2.0
//! 18        volume descriptor set terminator                 ECMA-119 8.3
//! 19..      path tables (L, M), Rock Ridge "ER" continuation area, directories
//! ..        boot catalog (/isolinux/boot.cat): BIOS no-emulation entry for isolinux.bin,
//!           UEFI (0xEF) section entry for the ESP image
//! ..        files: isolinux.bin (with boot-info table), ldlinux.c32, menus, kernel, initrd
//! ..        /boot/efi.img = the ESP (FAT), last and 4 KiB aligned: GPT partition 2
//! ..        zero padding to a whole MiB, backup GPT in the last 33 disk sectors
//! ```
//!
//! We write the ISO 9660 tree ourselves rather than through hadris-iso: the tree is ten
//! files, and what matters (extent placement shared with the GPT and El Torito, the
//! boot-info table, the Rock Ridge root) needs control over every sector anyway.
//!
//! The layers, each using only those below it (and `iso_types`, `hybrid`, `esp`):
//!
//! ```text
//! mod.rs         IsoBuilder: read and check the inputs, fill the tree, write atomically
//! layout.rs      sectors for everything, then the bytes that depend on them
//! records.rs     directory records and extents, path tables
//! descriptors.rs primary volume descriptor, terminator
//! el_torito.rs   boot record, boot catalog, boot-info table
//! rock_ridge.rs  SUSP/RRIP system use entries
//! tree.rs        files and directories, ISO 9660 names and orders
//! menus.rs       boot menus and kernel arguments
//! dates.rs       SOURCE_DATE_EPOCH as ISO 9660 dates
//! writer.rs      extents front to back, zeros between
//! inputs.rs, error.rs: the public input and error types
//! ```

mod dates;
mod descriptors;
mod el_torito;
mod error;
mod inputs;
mod layout;
mod menus;
mod records;
mod rock_ridge;
mod tree;
mod writer;

use std::fs;
use std::path::Path;

use super::esp::{self, EspFile};
use super::iso_types::SECTOR;
use super::output;
use layout::BootFiles;
use menus::Menus;
use tree::Tree;

pub use dates::Civil;
pub use error::IsoError;
pub use inputs::IsoInputs;
pub use menus::{Console, SerialPort};
pub(super) use menus::{DEBUG_ARGS, DEFAULT_ARGS, kernel_args, render};

/// What was written.
#[derive(Debug, Clone)]
pub struct IsoReport {
    pub bytes: u64,
    pub esp_bytes: u64,
}

/// Builds the hybrid ISO. One job: [`IsoBuilder::write`].
pub struct IsoBuilder {
    inputs: IsoInputs,
}

impl IsoBuilder {
    pub fn new(inputs: IsoInputs) -> Self {
        Self { inputs }
    }

    /// Writes the image to `dest` (atomically: temporary name, then rename).
    pub fn write(&self, dest: &Path) -> Result<IsoReport, IsoError> {
        let (image, esp_bytes) = self.assemble()?;
        output::write_atomic_with(dest, |out| image.write_to(out)).map_err(|e| {
            IsoError::Write {
                path: e.path,
                source: e.source,
            }
        })?;
        Ok(IsoReport {
            bytes: image.len,
            esp_bytes,
        })
    }

    /// Reads the inputs and lays the image out in memory (file data included); also
    /// returns the size of the ESP.
    fn assemble(&self) -> Result<(writer::Image, u64), IsoError> {
        let i = &self.inputs;
        check_label(&i.label)?;
        if i.extra_args.chars().any(char::is_control) {
            return Err(IsoError::BadArgs(i.extra_args.clone()));
        }
        let read = |what: &'static str, path: &Path| {
            fs::read(path).map_err(|source| IsoError::Read {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let kernel = read("kernel", &i.kernel)?;
        let initrd = read("initrd", &i.initrd)?;
        let isolinux = read("isolinux.bin", &i.isolinux_bin)?;
        let ldlinux = read("ldlinux.c32", &i.ldlinux_c32)?;
        let mbr_code = read("MBR boot code (isohdpfx.bin)", &i.isohdpfx)?;
        let shim = read("shim", &i.shim)?;
        let grub = read("GRUB (gcdx64)", &i.grub)?;
        let mm = read("MokManager", &i.mm)?;
        if kernel.len() < 0x202 + 4 || &kernel[0x202..0x206] != b"HdrS" {
            return Err(IsoError::BadInput {
                what: "kernel",
                path: i.kernel.clone(),
                why: "not a Linux bzImage (no HdrS header)",
            });
        }
        // syslinux doc/isolinux.txt: isolinux.bin carries this signature at offset 64 for
        // the hybrid (USB disk) entry point.
        if isolinux.len() < 68 || isolinux[64..68] != [0xFB, 0xC0, 0x78, 0x70] {
            return Err(IsoError::BadInput {
                what: "isolinux.bin",
                path: i.isolinux_bin.clone(),
                why: "no hybrid signature at offset 64",
            });
        }

        // The identifiers (FAT volume id, GUIDs, MBR signature) differ between images
        // yet stay the same for the same inputs.
        let mut seed = crc32fast::Hasher::new();
        for part in [&kernel, &initrd, &isolinux, &ldlinux, &shim, &grub, &mm] {
            seed.update(part);
        }
        let seed = (u64::from(seed.finalize()) << 32)
            ^ fnv1a(i.label.as_bytes())
            ^ (i.epoch as u64).rotate_left(17);

        let menus = Menus::new(i);
        let mut esp_files = vec![
            EspFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: &shim,
            },
            EspFile {
                path: "EFI/BOOT/grubx64.efi",
                data: &grub,
            },
            EspFile {
                path: "EFI/BOOT/mmx64.efi",
                data: &mm,
            },
        ];
        if !i.image_id.is_empty() {
            esp_files.push(EspFile {
                path: "boot/grub/grub.cfg",
                data: menus.esp_grub_cfg.as_bytes(),
            });
        }
        let esp = esp::build_esp(&esp_files, seed as u32, i.epoch)?;
        let esp_bytes = esp.len() as u64;
        let disk_info = format!("failback {} ({})\n", i.version, i.label);

        let mut tree = Tree::new();
        // Order of these calls = order of the data on the medium.
        let catalog = tree.add("isolinux/boot.cat", vec![0; SECTOR as usize])?;
        let isolinux = tree.add("isolinux/isolinux.bin", isolinux)?;
        tree.add("isolinux/ldlinux.c32", ldlinux)?;
        tree.add("isolinux/isolinux.cfg", menus.isolinux_cfg.into_bytes())?;
        tree.add("boot/grub/grub.cfg", menus.grub_cfg.into_bytes())?;
        tree.add(".disk/info", disk_info.into_bytes())?;
        if !i.image_id.is_empty() {
            tree.add(&format!(".disk/failback-{}", i.image_id), Vec::new())?;
        }
        tree.add("boot/vmlinuz", kernel)?;
        tree.add("boot/initrd.img", initrd)?;
        let esp = tree.add("boot/efi.img", esp)?;
        let boot = BootFiles {
            catalog,
            isolinux,
            esp,
        };
        let image = layout::lay_out(tree, boot, i, &mbr_code, seed)?;
        Ok((image, esp_bytes))
    }
}

/// The label must be ISO 9660 d-characters, at most 32 (ECMA-119 8.4.6).
pub fn check_label(label: &str) -> Result<(), IsoError> {
    let ok = (1..=32).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(IsoError::Label(label.to_string()))
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    fn inputs_dir() -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("inputs");
        assert!(
            dir.join("usr/lib/ISOLINUX/isolinux.bin").exists(),
            "{} lacks the Debian inputs: run scripts/fetch-inputs.sh",
            dir.display()
        );
        dir
    }

    /// Real bootloaders and kernel, a dummy initrd.
    fn test_inputs(tmp: &Path) -> IsoInputs {
        let inputs = inputs_dir();
        let kernel = crate::build::inputs::locate_kernel(&inputs, None, None)
            .unwrap()
            .image;
        let initrd = tmp.join("initrd.img");
        fs::write(&initrd, vec![0x5Au8; 100_000]).unwrap();
        let mut i = IsoInputs::debian(&inputs, kernel, initrd);
        i.epoch = 1_700_000_000;
        i
    }

    fn tool(name: &str, args: &[&str]) -> std::process::Output {
        Command::new(name)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{name} is needed by this test (apt-get install it): {e}"))
    }

    #[test]
    fn labels_are_checked() {
        assert!(check_label("FAILBACK").is_ok());
        assert!(check_label("A_2").is_ok());
        for bad in ["", "lower", "TOO_LONG_TOO_LONG_TOO_LONG_TOO_LONG", "A-B"] {
            assert!(matches!(check_label(bad), Err(IsoError::Label(_))), "{bad}");
        }
    }

    #[test]
    fn newlines_in_kernel_args_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut i = test_inputs(tmp.path());
        i.extra_args = "quiet\ndefault evil".into();
        let err = IsoBuilder::new(i)
            .write(&tmp.path().join("x.iso"))
            .unwrap_err();
        assert!(matches!(err, IsoError::BadArgs(_)), "{err}");
    }

    #[test]
    fn missing_input_leaves_no_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut i = test_inputs(tmp.path());
        i.kernel = tmp.path().join("nope");
        let dest = tmp.path().join("failback.iso");
        let err = IsoBuilder::new(i).write(&dest).unwrap_err();
        assert!(err.to_string().contains("cannot read the kernel"), "{err}");
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "only the initrd"
        );
    }

    #[test]
    fn oracles_accept_the_image_and_builds_are_reproducible() {
        let tmp = tempfile::tempdir().unwrap();
        let i = test_inputs(tmp.path());
        let a = tmp.path().join("a.iso");
        let b = tmp.path().join("b.iso");
        let report = IsoBuilder::new(i.clone()).write(&a).unwrap();
        IsoBuilder::new(i).write(&b).unwrap();
        assert_eq!(
            fs::read(&a).unwrap(),
            fs::read(&b).unwrap(),
            "not reproducible"
        );
        assert_eq!(report.bytes, fs::metadata(&a).unwrap().len());
        if let Some(keep) = std::env::var_os("FAILBACK_KEEP_ISO") {
            fs::copy(&a, keep).unwrap();
        }
        let a = a.to_str().unwrap();

        let out = tool("xorriso", &["-indev", a, "-report_el_torito", "plain"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        println!("{text}");
    }

    /// The gpt crate reads the built image's GPT: partition 1 is the ISO 9660 volume from
    /// its PVD, partition 2 the ESP, at the very sectors El Torito's UEFI entry loads.
    #[test]
    fn the_gpt_crate_finds_the_esp_where_el_torito_loads_it() {
        use gpt::partition_types::{BASIC, EFI};
        let tmp = tempfile::tempdir().unwrap();
        let iso = tmp.path().join("a.iso");
        let report = IsoBuilder::new(test_inputs(tmp.path()))
            .write(&iso)
            .unwrap();
        let disk = gpt::GptConfig::new()
            .only_valid_headers(true)
            .open(&iso)
            .unwrap();
        let image = fs::read(&iso).unwrap();
        let parts = disk.partitions();
        assert_eq!(parts.len(), 2, "{parts:?}");
        let (data, esp) = (&parts[&1], &parts[&2]);
        assert_eq!(data.part_type_guid, BASIC);
        assert_eq!(esp.part_type_guid, EFI);
        assert_eq!((data.first_lba, data.last_lba + 1), (64, esp.first_lba));
        assert_eq!(&image[32768 + 1..32768 + 6], b"CD001");
        let esp_bytes = (esp.last_lba + 1 - esp.first_lba) * 512;
        assert_eq!(esp_bytes, report.esp_bytes.div_ceil(512) * 512);
        assert!(esp.last_lba <= disk.primary_header().unwrap().last_usable);

        // El Torito: boot record (sector 17) -> catalog -> the UEFI section's entry.
        let u32_at = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap());
        let catalog = u32_at(17 * 2048 + 71) as usize * 2048;
        let entry = catalog + 96;
        assert_eq!(image[catalog + 64 + 1], 0xEF, "the UEFI section header");
        assert_eq!(u64::from(u32_at(entry + 8)) * 4, esp.first_lba);
        let sectors = u16::from_le_bytes([image[entry + 6], image[entry + 7]]);
        assert_eq!(u64::from(sectors) * 512, esp_bytes);
        let fat = &image[esp.first_lba as usize * 512..][..512];
        assert_eq!(
            &fat[510..],
            &[0x55, 0xAA],
            "a boot sector at the ESP's start"
        );
    }
}
