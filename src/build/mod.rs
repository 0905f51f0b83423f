//! `failback build`: assemble the boot artifacts from the inputs, a preset and
//! the static client binary.

pub mod cloud;
mod cpio;
pub mod esp;
pub mod firmware;
pub mod hybrid;
pub mod initramfs;
pub mod inputs;
pub mod iso;
pub mod iso_types;
pub mod modules;
pub mod output;
pub mod pxe;
pub mod secrets;

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;

/// What to build from and where to.
#[derive(Debug, Clone)]
pub struct Options {
    pub inputs: PathBuf,
    pub out: PathBuf,
    pub client: PathBuf,
    pub kernel: Option<PathBuf>,
    pub modules: Option<PathBuf>,
    /// The preset to bake in as /etc/failback.toml.
    pub preset: Option<PathBuf>,
    /// SOURCE_DATE_EPOCH: the one timestamp every output carries.
    pub source_date_epoch: u32,
    /// ISO 9660 volume label of failback.iso.
    pub label: String,
    /// Extra kernel arguments for every entry of the ISO's boot menus.
    pub append: String,
    /// The kernel's serial port, and whether the boot menus drive it too.
    pub console: iso::Console,
    /// Firmware directories of the operator (e.g. a host's /lib/firmware with
    /// Debian's non-free firmware), searched before the inputs' firmware.
    pub firmware: Vec<PathBuf>,
    /// Whether the inputs' non-free firmware (inputs/non-free/lib/firmware) goes in.
    pub non_free_firmware: bool,
}

/// The id of an image: the first 16 hex digits of its initrd's SHA-256, so the same
/// inputs give the same id and any other build another.
fn image_id(initrd: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(initrd)[..8])
}

/// What was built, for the operator.
pub struct Report {
    pub kernel_version: String,
    pub initrd_bytes: usize,
    pub initrd_uncompressed: usize,
    pub modules: usize,
    pub classes: Vec<initramfs::ClassStats>,
    /// Module -> requested firmware found in no firmware directory.
    pub firmware_missing: std::collections::BTreeMap<String, Vec<String>>,
    pub firmware_dirs: Vec<PathBuf>,
    /// The inputs' non-free firmware was left out on purpose.
    pub non_free_left_out: bool,
    /// Where busybox was looked for, when it was not found: the image has no shell.
    pub no_shell: Option<PathBuf>,
    /// Secrets the image or the boot menus carry.
    pub exposed: secrets::Exposed,
    pub iso_bytes: u64,
    pub esp_bytes: u64,
    pub iso_seconds: f64,
    /// (output, bytes) of each cloud image.
    pub cloud_bytes: Vec<(String, u64)>,
    pub cloud_seconds: f64,
    pub outputs: Vec<PathBuf>,
    pub seconds: f64,
}

/// Checks the `failback.*` arguments a menu will pass (`--append`, a host's `args`) as
/// the client will read them: a bad value fails the build, not the host's boot.
fn check_kernel_args(whose: &str, args: &str) -> Result<()> {
    let (_, errors) = crate::cmdline::Cmdline::parse(args);
    match errors.is_empty() {
        true => Ok(()),
        false => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::bail!("{whose}: {}", errors.join("; "))
        }
    }
}

/// Builds the PXE tree (kernel + initrd) and SHA256SUMS under `opts.out`.
pub fn run(opts: &Options) -> Result<Report> {
    let started = Instant::now();
    iso::check_label(&opts.label)?;
    inputs::check_static_client(&opts.client)?;
    let (preset, hosts) = match &opts.preset {
        Some(path) => {
            let parsed = crate::config::Preset::load(path)?;
            let text =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            (Some(text), parsed.hosts)
        }
        None => (None, Vec::new()),
    };
    check_kernel_args("--append", &opts.append)?;
    for host in &hosts {
        let name = host
            .name
            .as_deref()
            .map_or(String::new(), |n| format!(" ({n})"));
        let whose = format!("the preset's host {}{name}: args", host.mac);
        check_kernel_args(&whose, host.args.as_deref().unwrap_or(""))?;
    }
    let preset_text = preset.as_deref().map(String::from_utf8_lossy);
    let exposed = secrets::Exposed::find(preset_text.as_deref(), &hosts, &opts.append);
    let kernel = inputs::locate_kernel(
        &opts.inputs,
        opts.kernel.as_deref(),
        opts.modules.as_deref(),
    )?;
    let index = modules::ModuleIndex::scan(&kernel.modules)?;
    for dir in &opts.firmware {
        anyhow::ensure!(
            dir.is_dir(),
            "firmware directory {} not found: pass --firmware a directory laid out like /lib/firmware",
            dir.display()
        );
    }
    // The inputs' own firmware, as fetch-inputs.sh unpacks it: free, then non-free apart.
    let non_free = opts.inputs.join("non-free/lib/firmware");
    let firmware_dirs: Vec<PathBuf> = opts
        .firmware
        .iter()
        .cloned()
        .chain(Some(opts.inputs.join("lib/firmware")))
        .chain(opts.non_free_firmware.then(|| non_free.clone()))
        .filter(|d| d.is_dir())
        .collect();
    let busybox = inputs::locate_busybox(&opts.inputs)?;
    let initrd = initramfs::build(&initramfs::Spec {
        client: &opts.client,
        index: &index,
        kernel_version: &kernel.version,
        preset,
        mtime: opts.source_date_epoch,
        firmware_dirs: &firmware_dirs,
        non_free_firmware: &non_free,
        busybox: busybox.as_deref(),
    })?;

    let vmlinuz = std::fs::read(&kernel.image)
        .with_context(|| format!("cannot read {}", kernel.image.display()))?;
    let files = ["pxe/vmlinuz", "pxe/initrd.img", "failback.iso"];
    output::write_atomic(&opts.out.join(files[0]), &vmlinuz)?;
    output::write_atomic(&opts.out.join(files[1]), &initrd.image)?;

    // The hybrid ISO (BIOS + UEFI, CD + USB), from the same kernel and initrd.
    let iso_inputs = iso::IsoInputs {
        label: opts.label.clone(),
        epoch: i64::from(opts.source_date_epoch),
        extra_args: opts.append.clone(),
        console: opts.console,
        image_id: image_id(&initrd.image),
        ..iso::IsoInputs::debian(&opts.inputs, kernel.image.clone(), opts.out.join(files[1]))
    };
    let iso_started = Instant::now();
    let iso = iso::IsoBuilder::new(iso_inputs).write(&opts.out.join(files[2]))?;
    let iso_seconds = iso_started.elapsed().as_secs_f64();

    // The PXE tree beside the kernel and initrd.
    let pxe_files = pxe::write(
        &opts.out.join("pxe"),
        &pxe::PxeInputs::debian(&opts.inputs),
        &hosts,
        &opts.append,
        opts.console,
    )?;
    let pxe_files: Vec<String> = pxe_files.iter().map(|f| format!("pxe/{f}")).collect();

    // The cloud images, from the ISO as written.
    let cloud_started = Instant::now();
    cloud::write(&opts.out.join(files[2]), &opts.out, opts.source_date_epoch)?;
    let cloud_seconds = cloud_started.elapsed().as_secs_f64();
    let cloud_bytes = cloud::FILES
        .iter()
        .map(|f| {
            let path = opts.out.join(f);
            let len = std::fs::metadata(&path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            Ok((f.to_string(), len))
        })
        .collect::<Result<Vec<_>>>()?;

    let all: Vec<&str> = files
        .iter()
        .copied()
        .chain(pxe_files.iter().map(String::as_str))
        .chain(cloud::FILES)
        .collect();
    let sums = output::sha256sums(&opts.out, &all)?;
    output::write_atomic(&opts.out.join("SHA256SUMS"), sums.as_bytes())?;

    Ok(Report {
        kernel_version: kernel.version,
        initrd_bytes: initrd.image.len(),
        initrd_uncompressed: initrd.uncompressed,
        modules: initrd.modules,
        classes: initrd.classes,
        firmware_missing: initrd.firmware_missing,
        firmware_dirs,
        non_free_left_out: !opts.non_free_firmware && non_free.is_dir(),
        no_shell: busybox.is_none().then(|| opts.inputs.join("bin/busybox")),
        exposed,
        iso_bytes: iso.bytes,
        esp_bytes: iso.esp_bytes,
        iso_seconds,
        cloud_bytes,
        cloud_seconds,
        outputs: files
            .iter()
            .chain(&cloud::FILES)
            .chain(&["SHA256SUMS"])
            .map(|f| opts.out.join(f))
            .collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

impl Report {
    /// Things the operator should know that did not stop the build, one line each.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.firmware_missing.is_empty() {
            let count: usize = self.firmware_missing.values().map(Vec::len).sum();
            let per_module: Vec<String> = self
                .firmware_missing
                .iter()
                .map(|(m, names)| format!("{m} ({})", names.len()))
                .collect();
            let dirs = if self.firmware_dirs.is_empty() {
                "no firmware directory".to_string()
            } else {
                self.firmware_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let why = if self.non_free_left_out {
                "the inputs' non-free firmware was left out by --no-non-free-firmware"
            } else {
                "Debian ships most such firmware in non-free-firmware"
            };
            out.push(format!(
                "{count} firmware files the modules request are not in {dirs}: {}; \
                 the devices that need them may not work ({why}): \
                 add them with --firmware DIR (laid out like /lib/firmware)",
                per_module.join(", ")
            ));
        }
        if let Some(path) = &self.no_shell {
            out.push(format!(
                "no {} (Debian's busybox-static: scripts/fetch-inputs.sh): the image has no \
                 diagnostics shell, and failback.after=shell waits for the operator instead",
                path.display()
            ));
        }
        out.extend(self.exposed.warning());
        out
    }
}

/// SOURCE_DATE_EPOCH from the environment (reproducible builds), else 0.
pub fn source_date_epoch() -> Result<u32> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a Unix time in seconds")),
        Err(_) => Ok(0),
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        writeln!(
            f,
            "initramfs: {:.1} MiB zstd ({:.1} MiB unpacked), {} kernel modules for {}",
            mib(self.initrd_bytes as u64),
            mib(self.initrd_uncompressed as u64),
            self.modules,
            self.kernel_version
        )?;
        // One line per class: files, unpacked, and compressed alone.
        for c in &self.classes {
            let unit = match c.class.as_str() {
                "firmware" | "non-free" => "files",
                "client" | "shell" => "file",
                _ => "modules",
            };
            write!(
                f,
                "  {:<8} {:>4} {:<7} {:>6.2} MiB unpacked {:>6.2} MiB zstd",
                c.class,
                c.files,
                unit,
                mib(c.bytes),
                mib(c.packed)
            )?;
            if !c.missing.is_empty() && c.class != "firmware" {
                write!(f, "  (not in this kernel: {})", c.missing.join(" "))?;
            } else if !c.missing.is_empty() {
                write!(f, "  ({} requested files not found)", c.missing.len())?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "iso: {:.1} MiB (EFI System Partition {:.1} MiB) in {:.1} s",
            mib(self.iso_bytes),
            mib(self.esp_bytes),
            self.iso_seconds
        )?;
        let sizes: Vec<String> = self
            .cloud_bytes
            .iter()
            .map(|(f, b)| format!("{} {:.1} MiB", f.trim_start_matches("cloud/"), mib(*b)))
            .collect();
        writeln!(
            f,
            "cloud images: {} in {:.1} s",
            sizes.join(", "),
            self.cloud_seconds
        )?;
        for o in &self.outputs {
            writeln!(f, "wrote {}", o.display())?;
        }
        write!(f, "built in {:.1} s", self.seconds)
    }
}
