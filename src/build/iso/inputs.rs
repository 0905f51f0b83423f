//! What goes into the ISO: the caller's description, read by every layer below the builder.

use std::path::{Path, PathBuf};

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
    /// The kernel's serial port, and whether the boot menus drive it too.
    pub console: super::Console,
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
            console: Default::default(),
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
