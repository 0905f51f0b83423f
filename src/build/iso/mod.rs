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

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use zerocopy::IntoBytes;
use zerocopy::byteorder::{BigEndian, LittleEndian, U16, U32};

use super::esp::{self, EspError, EspFile};
use super::hybrid::{self, GPT_TAIL_BYTES, HybridError, HybridLayout};
use super::iso_types::*;

/// Boot menu templates; `@NAME@` placeholders are filled by [`render`].
const ISOLINUX_CFG: &str = include_str!("../../iso/isolinux.cfg");
const GRUB_CFG: &str = include_str!("../../iso/grub.cfg");
const GRUB_ESP_CFG: &str = include_str!("../../iso/grub-esp.cfg");

/// Kernel arguments of every entry: the console on screen and on the first serial port
/// (the last `console=` becomes /dev/console, where the client prints).
pub const CONSOLE_ARGS: &str = "console=tty0 console=ttyS0,115200";
/// Added to the default entry.
pub(super) const DEFAULT_ARGS: &str = "quiet";
/// Added to the "verbose + debug" entry.
pub(super) const DEBUG_ARGS: &str = "loglevel=7 failback.debug=1";

/// The image size is a multiple of this (whole "cylinders" for old BIOSes, USB friendly).
const IMAGE_ROUND: u64 = 1024 * 1024;

/// Why the ISO could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error(
        "volume label {0:?} is not 1 to 32 characters of A-Z, 0-9 and _ (ISO 9660 d-characters)"
    )]
    Label(String),
    #[error("cannot read the {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the {what} {} is not usable: {why}", path.display())]
    BadInput {
        what: &'static str,
        path: PathBuf,
        why: &'static str,
    },
    #[error("cannot write the ISO {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("kernel arguments {0:?} contain a control character (a newline would break the menus)")]
    BadArgs(String),
    #[error("two ISO files map to the same ISO 9660 name {0}")]
    NameClash(String),
    #[error("the ISO would be too large ({0})")]
    TooLarge(&'static str),
    #[error(transparent)]
    Esp(#[from] EspError),
    #[error(transparent)]
    Hybrid(#[from] HybridError),
}

/// What goes into the ISO.
#[derive(Debug, Clone)]
pub struct IsoInputs {
    /// ISO 9660 volume label (`--label`).
    pub label: String,
    /// SOURCE_DATE_EPOCH: every timestamp in the image.
    pub epoch: i64,
    /// Shown in the menus and `/.disk/info`.
    pub version: String,
    /// Appended to the kernel arguments of every menu entry (e.g. `failback.progress=json`).
    pub extra_args: String,
    /// The image's id (hex): marked in the volume descriptor and passed to the client
    /// as `failback.image=`, so that it knows its own boot medium among the disks.
    pub image_id: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// syslinux: the BIOS boot image, its core module, and the MBR boot code.
    pub isolinux_bin: PathBuf,
    pub ldlinux_c32: PathBuf,
    pub isohdpfx: PathBuf,
    /// Debian's signed shim, GRUB for CD (gcdx64) and MokManager.
    pub shim: PathBuf,
    pub grub: PathBuf,
    pub mm: PathBuf,
}

impl IsoInputs {
    /// Bootloaders at their places in Debian packages unpacked under `inputs`.
    pub fn debian(inputs: &Path, kernel: PathBuf, initrd: PathBuf) -> Self {
        Self {
            label: "FAILBACK".into(),
            epoch: 0,
            version: env!("CARGO_PKG_VERSION").into(),
            extra_args: String::new(),
            image_id: String::new(),
            kernel,
            initrd,
            isolinux_bin: inputs.join("usr/lib/ISOLINUX/isolinux.bin"),
            ldlinux_c32: inputs.join("usr/lib/syslinux/modules/bios/ldlinux.c32"),
            isohdpfx: inputs.join("usr/lib/ISOLINUX/isohdpfx.bin"),
            shim: inputs.join("usr/lib/shim/shimx64.efi.signed"),
            grub: inputs.join("usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed"),
            mm: inputs.join("usr/lib/shim/mmx64.efi.signed"),
        }
    }
}

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
        let image = self.assemble()?;
        let werr = |source| IsoError::Write {
            path: dest.to_path_buf(),
            source,
        };
        let dir = dest
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // Removed on drop unless persisted: a failed build leaves nothing behind.
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(werr)?;
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
        image.emit(&mut out).map_err(werr)?;
        out.flush().map_err(werr)?;
        drop(out);
        tmp.as_file().sync_all().map_err(werr)?;
        tmp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(werr)?;
        tmp.persist(dest).map_err(|e| werr(e.error))?;
        Ok(IsoReport {
            bytes: image.image_bytes,
            esp_bytes: image.esp_bytes,
        })
    }

    /// Reads the inputs and lays the image out in memory (file data included).
    fn assemble(&self) -> Result<Image, IsoError> {
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

        let mut seed = crc32fast::Hasher::new();
        for part in [&kernel, &initrd, &isolinux, &ldlinux, &shim, &grub, &mm] {
            seed.update(part);
        }
        let seed = (u64::from(seed.finalize()) << 32)
            ^ fnv1a(i.label.as_bytes())
            ^ (i.epoch as u64).rotate_left(17);

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
        let esp_cfg = render(GRUB_ESP_CFG, &[("IMAGE", &i.image_id)]);
        if !i.image_id.is_empty() {
            esp_files.push(EspFile {
                path: "boot/grub/grub.cfg",
                data: esp_cfg.as_bytes(),
            });
        }
        let esp = esp::build_esp(&esp_files, seed as u32, i.epoch)?;

        let extra = match i.image_id.as_str() {
            "" => i.extra_args.clone(),
            id => format!("failback.image={id} {}", i.extra_args),
        };
        let args = |more: &str| kernel_args(more, &extra);
        let vars = [
            ("VERSION", i.version.as_str()),
            ("LABEL", i.label.as_str()),
            ("APPEND", &args(DEFAULT_ARGS)),
            ("APPEND_DEBUG", &args(DEBUG_ARGS)),
        ];
        let disk_info = format!("failback {} ({})\n", i.version, i.label);

        let mut tree = Tree::new();
        // Order of these calls = order of the data on the medium.
        let catalog = tree.add("isolinux/boot.cat", vec![0; SECTOR as usize])?;
        let isolinux = tree.add("isolinux/isolinux.bin", isolinux)?;
        tree.add("isolinux/ldlinux.c32", ldlinux)?;
        tree.add(
            "isolinux/isolinux.cfg",
            render(ISOLINUX_CFG, &vars).into_bytes(),
        )?;
        tree.add("boot/grub/grub.cfg", render(GRUB_CFG, &vars).into_bytes())?;
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
        Image::lay_out(tree, boot, &self.inputs, mbr_code, seed)
    }
}

/// The kernel arguments of a menu entry: console, the entry's own, the operator's.
pub(super) fn kernel_args(entry: &str, extra: &str) -> String {
    [CONSOLE_ARGS, entry, extra.trim()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The application-use field of the primary volume descriptor: `failback-image=ID`
/// (read back by `disks::identity`), space-padded.
fn image_mark(id: &str) -> [u8; 512] {
    let mut field = [b' '; 512];
    if !id.is_empty() {
        let mark = format!("{}{id}", crate::disks::identity::IMAGE_MARK);
        field[..mark.len()].copy_from_slice(mark.as_bytes());
    }
    field
}

/// Fills `@NAME@` placeholders.
pub(super) fn render(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(template.to_string(), |s, (k, v)| {
        s.replace(&format!("@{k}@"), v)
    })
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

/// A date in the proleptic Gregorian calendar, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl Civil {
    /// Seconds since 1970-01-01 UTC to a civil date (H. Hinnant's days-to-civil).
    pub fn from_epoch(epoch: i64) -> Self {
        let days = epoch.div_euclid(86_400);
        let secs = epoch.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            year,
            month,
            day,
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
        }
    }

    /// ECMA-119 9.1.5 (years 1900..=2155 representable).
    fn dir_date(self) -> DirDate {
        DirDate {
            year: (self.year.clamp(1900, 2155) - 1900) as u8,
            month: self.month,
            day: self.day,
            hour: self.hour,
            minute: self.minute,
            second: self.second,
            gmt_offset: 0,
        }
    }

    /// ECMA-119 8.4.26.1.
    fn vol_date(self) -> VolDate {
        let text = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}00",
            self.year.clamp(1, 9999),
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second
        );
        let mut digits = [b'0'; 16];
        digits.copy_from_slice(text.as_bytes());
        VolDate {
            digits,
            gmt_offset: 0,
        }
    }
}

/// The file tree: directories in ISO 9660 path table order once laid out.
struct Tree {
    dirs: Vec<DirNode>,
    files: Vec<FileNode>,
}

struct DirNode {
    /// Rock Ridge name ("" for the root).
    name: String,
    /// ISO 9660 identifier.
    ident: Vec<u8>,
    parent: usize,
    subdirs: Vec<usize>,
    files: Vec<usize>,
    /// Laid out: first sector and size in bytes.
    lba: u32,
    size: u32,
}

struct FileNode {
    name: String,
    ident: Vec<u8>,
    data: Vec<u8>,
    lba: u32,
}

impl Tree {
    fn new() -> Self {
        Self {
            dirs: vec![DirNode {
                name: String::new(),
                ident: vec![0],
                parent: 0,
                subdirs: vec![],
                files: vec![],
                lba: 0,
                size: 0,
            }],
            files: vec![],
        }
    }

    /// Adds a file at `path` ("a/b/name"), making its directories.
    fn add(&mut self, path: &str, data: Vec<u8>) -> Result<usize, IsoError> {
        let (dir_path, name) = path.rsplit_once('/').unwrap_or(("", path));
        let mut dir = 0;
        for part in dir_path.split('/').filter(|p| !p.is_empty()) {
            dir = match self.dirs[dir]
                .subdirs
                .iter()
                .find(|&&d| self.dirs[d].name == part)
            {
                Some(&d) => d,
                None => {
                    let ident = iso_dir_ident(part);
                    self.check_clash(dir, &ident)?;
                    self.dirs.push(DirNode {
                        name: part.to_string(),
                        ident,
                        parent: dir,
                        subdirs: vec![],
                        files: vec![],
                        lba: 0,
                        size: 0,
                    });
                    let d = self.dirs.len() - 1;
                    self.dirs[dir].subdirs.push(d);
                    d
                }
            };
        }
        let ident = iso_file_ident(name);
        self.check_clash(dir, &ident)?;
        self.files.push(FileNode {
            name: name.to_string(),
            ident,
            data,
            lba: 0,
        });
        let f = self.files.len() - 1;
        self.dirs[dir].files.push(f);
        Ok(f)
    }

    fn check_clash(&self, dir: usize, ident: &[u8]) -> Result<(), IsoError> {
        let d = &self.dirs[dir];
        let clash = d.subdirs.iter().any(|&s| self.dirs[s].ident == ident)
            || d.files.iter().any(|&f| self.files[f].ident == ident);
        if clash {
            Err(IsoError::NameClash(
                String::from_utf8_lossy(ident).into_owned(),
            ))
        } else {
            Ok(())
        }
    }

    /// ECMA-119 9.3: a directory's records ordered by identifier, "." and ".." first.
    fn entries(&self, dir: usize) -> Vec<Entry> {
        let d = &self.dirs[dir];
        let mut v: Vec<Entry> = d
            .subdirs
            .iter()
            .map(|&s| Entry::Dir(s))
            .chain(d.files.iter().map(|&f| Entry::File(f)))
            .collect();
        v.sort_by_key(|e| self.sort_key(*e));
        v
    }

    fn sort_key(&self, e: Entry) -> (Vec<u8>, Vec<u8>) {
        let ident = match e {
            Entry::Dir(d) => &self.dirs[d].ident,
            Entry::File(f) => &self.files[f].ident,
        };
        let stem = ident.split(|&b| b == b';').next().unwrap_or(ident);
        match stem.iter().position(|&b| b == b'.') {
            Some(dot) => (stem[..dot].to_vec(), stem[dot + 1..].to_vec()),
            None => (stem.to_vec(), vec![]),
        }
    }

    /// Directories in path table order (ECMA-119 6.9.1): by level, then parent, then name.
    fn path_table_order(&self) -> Vec<usize> {
        let mut order = vec![0];
        let mut i = 0;
        while i < order.len() {
            let d = order[i];
            for e in self.entries(d) {
                if let Entry::Dir(s) = e {
                    order.push(s);
                }
            }
            i += 1;
        }
        order
    }
}

#[derive(Debug, Clone, Copy)]
enum Entry {
    Dir(usize),
    File(usize),
}

/// ECMA-119 7.5/7.6, level 1: 8.3 uppercase d-characters, files with ";1".
fn d_chars(s: &str, max: usize) -> Vec<u8> {
    let mut v: Vec<u8> = s
        .bytes()
        .map(|b| match b.to_ascii_uppercase() {
            c @ (b'A'..=b'Z' | b'0'..=b'9' | b'_') => c,
            _ => b'_',
        })
        .take(max)
        .collect();
    if v.is_empty() {
        v.push(b'_');
    }
    v
}

fn iso_dir_ident(name: &str) -> Vec<u8> {
    d_chars(name, 8)
}

fn iso_file_ident(name: &str) -> Vec<u8> {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, e),
        _ => (name, ""),
    };
    let mut v = d_chars(stem, 8);
    v.push(b'.');
    if !ext.is_empty() {
        v.extend(d_chars(ext, 3));
    }
    v.extend_from_slice(b";1");
    v
}

/// One directory record to write.
struct Record {
    ident: Vec<u8>,
    lba: u32,
    len: u32,
    dir: bool,
    /// Rock Ridge: mode, links, name (None for "." and ".."), and the root's SP + CE.
    mode: u32,
    nlink: u32,
    rr_name: Option<String>,
    root_dot: bool,
}

/// A laid-out image.
struct Image {
    tree: Tree,
    order: Vec<usize>,
    pvd: PrimaryVolumeDescriptor,
    boot_record: BootRecordDescriptor,
    l_table: Vec<u8>,
    m_table: Vec<u8>,
    l_lba: u32,
    m_lba: u32,
    ce_lba: u32,
    er: Vec<u8>,
    system: hybrid::SystemArea,
    date: DirDate,
    image_bytes: u64,
    esp_bytes: u64,
}

/// Indexes of the files El Torito and the GPT point at. The ESP must be the last file.
struct BootFiles {
    catalog: usize,
    isolinux: usize,
    esp: usize,
}

impl Image {
    fn lay_out(
        tree: Tree,
        boot: BootFiles,
        inputs: &IsoInputs,
        mbr_code: Vec<u8>,
        seed: u64,
    ) -> Result<Self, IsoError> {
        let mut tree = tree;
        let civil = Civil::from_epoch(inputs.epoch);
        let date = civil.dir_date();
        let order = tree.path_table_order();
        let dir_number = |d: usize| order.iter().position(|&x| x == d).unwrap_or(0) + 1;

        // Path tables (ECMA-119 9.4).
        let mut l_table = Vec::new();
        let mut m_table_len = 0usize;
        for &d in &order {
            let n = tree.dirs[d].ident.len();
            let rec = 8 + n + n % 2;
            l_table.resize(l_table.len() + rec, 0);
            m_table_len += rec;
        }
        let path_table_size =
            u32::try_from(m_table_len).map_err(|_| IsoError::TooLarge("path table"))?;
        let table_sectors = sectors(m_table_len as u64)?;

        // Sectors 16, 17, 18: descriptors; then L table, M table, CE area, directories.
        let mut next: u32 = 19;
        let l_lba = next;
        next = add(next, table_sectors)?;
        let m_lba = next;
        next = add(next, table_sectors)?;
        let ce_lba = next;
        next = add(next, 1)?;
        for &d in &order {
            let size = dir_size(&tree, d)?;
            tree.dirs[d].lba = next;
            tree.dirs[d].size = size;
            next = add(next, sectors(u64::from(size))?)?;
        }
        // Files in the order they were added; the ESP last, 4 KiB aligned (GPT partition).
        for f in 0..tree.files.len() {
            if f == boot.esp {
                next = next
                    .checked_add(next % 2)
                    .ok_or(IsoError::TooLarge("sectors"))?;
            }
            tree.files[f].lba = next;
            next = add(next, sectors(tree.files[f].data.len() as u64)?)?;
        }
        let data_end = u64::from(next) * SECTOR;
        let image_bytes = data_end
            .checked_add(GPT_TAIL_BYTES)
            .map(|b| b.div_ceil(IMAGE_ROUND) * IMAGE_ROUND)
            .ok_or(IsoError::TooLarge("image"))?;
        let volume_sectors =
            u32::try_from(image_bytes / SECTOR).map_err(|_| IsoError::TooLarge("volume"))?;

        // Path table contents now that directories have places.
        let mut m_table = Vec::with_capacity(m_table_len);
        l_table.clear();
        for &d in &order {
            let dir = &tree.dirs[d];
            let parent = u16::try_from(dir_number(dir.parent))
                .map_err(|_| IsoError::TooLarge("directories"))?;
            let n = dir.ident.len() as u8;
            let l = PathRecordL {
                name_len: n,
                ext_attr_len: 0,
                extent: U32::<LittleEndian>::new(dir.lba),
                parent: U16::<LittleEndian>::new(parent),
            };
            let m = PathRecordM {
                name_len: n,
                ext_attr_len: 0,
                extent: U32::<BigEndian>::new(dir.lba),
                parent: U16::<BigEndian>::new(parent),
            };
            for (table, head) in [(&mut l_table, l.as_bytes()), (&mut m_table, m.as_bytes())] {
                table.extend_from_slice(head);
                table.extend_from_slice(&dir.ident);
                if n % 2 == 1 {
                    table.push(0);
                }
            }
        }

        // El Torito: patch the boot-info table into isolinux.bin, fill the catalog.
        let iso_lba = tree.files[boot.isolinux].lba;
        boot_info_table(&mut tree.files[boot.isolinux].data, iso_lba)?;
        let esp_lba = tree.files[boot.esp].lba;
        let esp_bytes = tree.files[boot.esp].data.len() as u64;
        let catalog_lba = tree.files[boot.catalog].lba;
        tree.files[boot.catalog].data = boot_catalog(iso_lba, esp_lba, esp_bytes)?;

        let system = hybrid::system_area(
            &mbr_code,
            &HybridLayout {
                image_bytes,
                boot_file: u64::from(iso_lba) * SECTOR,
                esp_start: u64::from(esp_lba) * SECTOR,
                esp_bytes: esp_bytes.div_ceil(DISK_SECTOR) * DISK_SECTOR,
                seed,
            },
        )?;

        let root = &tree.dirs[0];
        let mut root_record = [0u8; 34];
        root_record[..33].copy_from_slice(
            DirRecordHead {
                len: 34,
                ext_attr_len: 0,
                extent: Both32::new(root.lba),
                data_len: Both32::new(root.size),
                date,
                flags: DIR_FLAG_DIRECTORY,
                unit_size: 0,
                gap_size: 0,
                vol_seq: Both16::new(1),
                name_len: 1,
            }
            .as_bytes(),
        );
        let app = format!("FAILBACK {}", inputs.version.to_ascii_uppercase());
        let pvd = PrimaryVolumeDescriptor {
            kind: VD_PRIMARY,
            id: CD001,
            version: 1,
            unused1: 0,
            system_id: a_chars("LINUX"),
            volume_id: a_chars(&inputs.label),
            unused2: [0; 8],
            volume_space_size: Both32::new(volume_sectors),
            unused3: [0; 32],
            volume_set_size: Both16::new(1),
            volume_seq: Both16::new(1),
            block_size: Both16::new(SECTOR as u16),
            path_table_size: Both32::new(path_table_size),
            l_path_table: U32::new(l_lba),
            opt_l_path_table: U32::new(0),
            m_path_table: U32::new(m_lba),
            opt_m_path_table: U32::new(0),
            root_record,
            volume_set_id: a_chars(&inputs.label),
            publisher_id: a_chars(""),
            preparer_id: a_chars("FAILBACK BUILD"),
            application_id: a_chars(&app),
            copyright_file: a_chars(""),
            abstract_file: a_chars(""),
            bibliographic_file: a_chars(""),
            created: civil.vol_date(),
            modified: civil.vol_date(),
            expires: VolDate::UNSPECIFIED,
            effective: VolDate::UNSPECIFIED,
            file_structure_version: 1,
            reserved1: 0,
            application_use: image_mark(&inputs.image_id),
            reserved2: [0; 653],
        };
        let mut boot_system_id = [0u8; 32];
        boot_system_id[..EL_TORITO_ID.len()].copy_from_slice(EL_TORITO_ID);
        let boot_record = BootRecordDescriptor {
            kind: VD_BOOT_RECORD,
            id: CD001,
            version: 1,
            boot_system_id,
            boot_id: [0; 32],
            catalog_lba: U32::new(catalog_lba),
            unused: [0; 1973],
        };

        let mut er = SuspErHead {
            sig: *b"ER",
            len: 0,
            version: 1,
            id_len: RRIP_ID.len() as u8,
            descriptor_len: RRIP_DESCRIPTOR.len() as u8,
            source_len: RRIP_SOURCE.len() as u8,
            ext_version: 1,
        };
        er.len =
            (size_of::<SuspErHead>() + RRIP_ID.len() + RRIP_DESCRIPTOR.len() + RRIP_SOURCE.len())
                as u8;
        let mut er_bytes = er.as_bytes().to_vec();
        er_bytes.extend_from_slice(RRIP_ID);
        er_bytes.extend_from_slice(RRIP_DESCRIPTOR);
        er_bytes.extend_from_slice(RRIP_SOURCE);

        Ok(Self {
            tree,
            order,
            pvd,
            boot_record,
            l_table,
            m_table,
            l_lba,
            m_lba,
            ce_lba,
            er: er_bytes,
            system,
            date,
            image_bytes,
            esp_bytes,
        })
    }

    /// Writes the whole image, front to back.
    fn emit(&self, out: &mut impl Write) -> io::Result<()> {
        let mut w = Cursor { out, pos: 0 };
        w.put(&self.system.head)?;
        w.put(self.pvd.as_bytes())?;
        w.put(self.boot_record.as_bytes())?;
        let term = TerminatorDescriptor {
            kind: VD_TERMINATOR,
            id: CD001,
            version: 1,
            reserved: [0; 2041],
        };
        w.put(term.as_bytes())?;
        w.seek(self.l_lba)?;
        w.put(&self.l_table)?;
        w.seek(self.m_lba)?;
        w.put(&self.m_table)?;
        w.seek(self.ce_lba)?;
        w.put(&self.er)?;
        for &d in &self.order {
            w.seek(self.tree.dirs[d].lba)?;
            self.emit_dir(&mut w, d)?;
        }
        for f in &self.tree.files {
            w.seek(f.lba)?;
            w.put(&f.data)?;
        }
        w.zeros(self.system.tail_offset - w.pos)?;
        w.put(&self.system.tail)?;
        debug_assert_eq!(w.pos, self.image_bytes);
        Ok(())
    }

    fn emit_dir<W: Write>(&self, w: &mut Cursor<'_, W>, d: usize) -> io::Result<()> {
        let start = w.pos;
        let mut used = 0u64;
        for rec in records(&self.tree, d) {
            let bytes = self.record_bytes(&rec);
            let len = bytes.len() as u64;
            // ECMA-119 6.8.1.1: a record never crosses a sector boundary.
            if used % SECTOR + len > SECTOR {
                let pad = SECTOR - used % SECTOR;
                w.zeros(pad)?;
                used += pad;
            }
            w.put(&bytes)?;
            used += len;
        }
        w.zeros(u64::from(self.tree.dirs[d].size) - (w.pos - start))
    }

    fn record_bytes(&self, r: &Record) -> Vec<u8> {
        let su = system_use(r, self.date, self.ce_lba, self.er.len() as u32);
        let name_len = r.ident.len();
        let pad = usize::from(name_len.is_multiple_of(2));
        let mut len = 33 + name_len + pad + su.len();
        len += len % 2;
        let head = DirRecordHead {
            len: len as u8,
            ext_attr_len: 0,
            extent: Both32::new(r.lba),
            data_len: Both32::new(r.len),
            date: self.date,
            flags: if r.dir { DIR_FLAG_DIRECTORY } else { 0 },
            unit_size: 0,
            gap_size: 0,
            vol_seq: Both16::new(1),
            name_len: name_len as u8,
        };
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(head.as_bytes());
        v.extend_from_slice(&r.ident);
        v.resize(v.len() + pad, 0);
        v.extend_from_slice(&su);
        v.resize(len, 0);
        v
    }
}

/// The records of directory `d`: ".", "..", then its entries in order.
fn records(tree: &Tree, d: usize) -> Vec<Record> {
    let dir = &tree.dirs[d];
    let parent = &tree.dirs[dir.parent];
    let links = |x: &DirNode| 2 + x.subdirs.len() as u32;
    let mut v = vec![
        Record {
            ident: vec![0],
            lba: dir.lba,
            len: dir.size,
            dir: true,
            mode: 0o040555,
            nlink: links(dir),
            rr_name: None,
            root_dot: d == 0,
        },
        Record {
            ident: vec![1],
            lba: parent.lba,
            len: parent.size,
            dir: true,
            mode: 0o040555,
            nlink: links(parent),
            rr_name: None,
            root_dot: false,
        },
    ];
    for e in tree.entries(d) {
        v.push(match e {
            Entry::Dir(s) => {
                let s = &tree.dirs[s];
                Record {
                    ident: s.ident.clone(),
                    lba: s.lba,
                    len: s.size,
                    dir: true,
                    mode: 0o040555,
                    nlink: links(s),
                    rr_name: Some(s.name.clone()),
                    root_dot: false,
                }
            }
            Entry::File(f) => {
                let f = &tree.files[f];
                Record {
                    ident: f.ident.clone(),
                    lba: f.lba,
                    len: f.data.len() as u32,
                    dir: false,
                    mode: 0o100444,
                    nlink: 1,
                    rr_name: Some(f.name.clone()),
                    root_dot: false,
                }
            }
        });
    }
    v
}

/// SUSP/RRIP entries of a record: [SP] PX TF [NM] [CE].
fn system_use(r: &Record, date: DirDate, ce_lba: u32, er_len: u32) -> Vec<u8> {
    let mut su = Vec::new();
    if r.root_dot {
        su.extend_from_slice(
            SuspSp {
                sig: *b"SP",
                len: 7,
                version: 1,
                check: [0xBE, 0xEF],
                skip: 0,
            }
            .as_bytes(),
        );
    }
    su.extend_from_slice(
        RripPx {
            sig: *b"PX",
            len: 36,
            version: 1,
            mode: Both32::new(r.mode),
            nlink: Both32::new(r.nlink),
            uid: Both32::new(0),
            gid: Both32::new(0),
        }
        .as_bytes(),
    );
    su.extend_from_slice(
        RripTf {
            sig: *b"TF",
            len: 26,
            version: 1,
            flags: TF_MODIFY_ACCESS_ATTRIBUTES,
            modify: date,
            access: date,
            attributes: date,
        }
        .as_bytes(),
    );
    if let Some(name) = &r.rr_name {
        let head = RripNmHead {
            sig: *b"NM",
            len: (5 + name.len()) as u8,
            version: 1,
            flags: 0,
        };
        su.extend_from_slice(head.as_bytes());
        su.extend_from_slice(name.as_bytes());
    }
    if r.root_dot {
        su.extend_from_slice(
            SuspCe {
                sig: *b"CE",
                len: 28,
                version: 1,
                lba: Both32::new(ce_lba),
                offset: Both32::new(0),
                size: Both32::new(er_len),
            }
            .as_bytes(),
        );
    }
    su
}

/// Bytes of directory `d`'s extent: its records packed into sectors.
fn dir_size(tree: &Tree, d: usize) -> Result<u32, IsoError> {
    let mut used = 0u64;
    for r in records(tree, d) {
        let su = system_use(&r, DirDate::default(), 0, 0).len();
        let mut len = 33 + r.ident.len() + usize::from(r.ident.len() % 2 == 0) + su;
        len += len % 2;
        if len > 255 {
            return Err(IsoError::TooLarge("directory record over 255 bytes"));
        }
        let len = len as u64;
        if used % SECTOR + len > SECTOR {
            used += SECTOR - used % SECTOR;
        }
        used += len;
    }
    u32::try_from(used.div_ceil(SECTOR) * SECTOR).map_err(|_| IsoError::TooLarge("directory"))
}

/// `mkisofs -boot-info-table`: PVD and file location, length and checksum at offset 8.
fn boot_info_table(data: &mut [u8], lba: u32) -> Result<(), IsoError> {
    let len = u32::try_from(data.len()).map_err(|_| IsoError::TooLarge("isolinux.bin"))?;
    let checksum = data[64..].chunks(4).fold(0u32, |sum, c| {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        sum.wrapping_add(u32::from_le_bytes(w))
    });
    let table = BootInfoTable {
        pvd_lba: U32::new(16),
        file_lba: U32::new(lba),
        file_len: U32::new(len),
        checksum: U32::new(checksum),
        reserved: [0; 40],
    };
    data[BOOT_INFO_OFFSET..BOOT_INFO_OFFSET + size_of::<BootInfoTable>()]
        .copy_from_slice(table.as_bytes());
    Ok(())
}

/// El Torito 2.0: validation entry, default entry (BIOS, isolinux.bin, no emulation, 4
/// virtual sectors as isolinux expects), last section header (EFI) with one entry (the ESP).
fn boot_catalog(isolinux_lba: u32, esp_lba: u32, esp_bytes: u64) -> Result<Vec<u8>, IsoError> {
    let esp_sectors = esp_bytes.div_ceil(DISK_SECTOR);
    let esp_count = u16::try_from(esp_sectors).map_err(|_| EspError::TooBig { size: esp_bytes })?;
    let mut validation = ValidationEntry {
        header_id: 1,
        platform: PLATFORM_X86,
        reserved: U16::new(0),
        id: [0; 24],
        checksum: U16::new(0),
        key: [0x55, 0xAA],
    };
    validation.id[..8].copy_from_slice(b"FAILBACK");
    let sum = validation.as_bytes().chunks(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    validation.checksum = U16::new(0u16.wrapping_sub(sum));
    let entry = |lba: u32, count: u16| BootEntry {
        indicator: BOOTABLE,
        media: NO_EMULATION,
        load_segment: U16::new(0),
        system_type: 0,
        unused: 0,
        sector_count: U16::new(count),
        load_rba: U32::new(lba),
        selection: [0; 20],
    };
    let section = SectionHeader {
        indicator: LAST_SECTION,
        platform: PLATFORM_EFI,
        entries: U16::new(1),
        id: [0; 28],
    };
    let mut cat = Vec::with_capacity(SECTOR as usize);
    cat.extend_from_slice(validation.as_bytes());
    cat.extend_from_slice(entry(isolinux_lba, 4).as_bytes());
    cat.extend_from_slice(section.as_bytes());
    cat.extend_from_slice(entry(esp_lba, esp_count).as_bytes());
    cat.resize(SECTOR as usize, 0);
    Ok(cat)
}

/// ECMA-119 7.4: a-characters padded with spaces.
fn a_chars<const N: usize>(s: &str) -> [u8; N] {
    let mut v = [b' '; N];
    for (slot, b) in v.iter_mut().zip(s.bytes()) {
        *slot = match b.to_ascii_uppercase() {
            c @ (b' '..=b'_') => c,
            _ => b'_',
        };
    }
    v
}

fn sectors(bytes: u64) -> Result<u32, IsoError> {
    u32::try_from(bytes.div_ceil(SECTOR)).map_err(|_| IsoError::TooLarge("sectors"))
}

fn add(a: u32, b: u32) -> Result<u32, IsoError> {
    a.checked_add(b).ok_or(IsoError::TooLarge("sectors"))
}

/// A forward-only writer that knows where it is.
struct Cursor<'a, W: Write> {
    out: &'a mut W,
    pos: u64,
}

impl<W: Write> Cursor<'_, W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> io::Result<()> {
        const Z: [u8; 4096] = [0; 4096];
        while n > 0 {
            let k = n.min(Z.len() as u64) as usize;
            self.put(&Z[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Pads with zeros up to sector `lba` (never backwards).
    fn seek(&mut self, lba: u32) -> io::Result<()> {
        let to = u64::from(lba) * SECTOR;
        if to < self.pos {
            return Err(io::Error::other(format!(
                "layout error: sector {lba} is behind the write position {}",
                self.pos
            )));
        }
        self.zeros(to - self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn civil_dates() {
        let c = Civil::from_epoch(0);
        assert_eq!((c.year, c.month, c.day, c.hour), (1970, 1, 1, 0));
        let c = Civil::from_epoch(1_700_000_000);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second),
            (2023, 11, 14, 22, 13, 20)
        );
        let c = Civil::from_epoch(951_782_400); // 2000-02-29
        assert_eq!((c.year, c.month, c.day), (2000, 2, 29));
    }

    #[test]
    fn iso_names_are_level_1() {
        assert_eq!(iso_file_ident("isolinux.bin"), b"ISOLINUX.BIN;1");
        assert_eq!(iso_file_ident("vmlinuz"), b"VMLINUZ.;1");
        assert_eq!(iso_file_ident("initrd.img"), b"INITRD.IMG;1");
        assert_eq!(iso_dir_ident(".disk"), b"_DISK");
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
}
