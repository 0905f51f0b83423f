//! The boot menus: isolinux's and GRUB's on the ISO, and the ESP's GRUB stub that finds
//! this image's own volume. Kernel arguments are put together here for PXE too.

use super::inputs::IsoInputs;

/// Boot menu templates; `@NAME@` placeholders are filled by [`render`].
const ISOLINUX_CFG: &str = include_str!("../../../iso/isolinux.cfg");
const GRUB_CFG: &str = include_str!("../../../iso/grub.cfg");
const GRUB_ESP_CFG: &str = include_str!("../../../iso/grub-esp.cfg");

/// The serial port of the kernel's console and of the BIOS menu (`failback build
/// --serial`): COM1 (`ttyS0`) by default, COM2 (`ttyS1`) for a BMC's serial port (HP iLO's
/// Virtual Serial Port, Dell iDRAC's Serial-over-LAN). The kernel prints to one serial port
/// and isolinux drives one; GRUB and the client use both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SerialPort(u8);

impl std::str::FromStr for SerialPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ttyS0" | "ttyS1" | "ttyS2" | "ttyS3" => Ok(SerialPort(s.as_bytes()[4] - b'0')),
            _ => Err(format!(
                "serial port {s:?} is not ttyS0 to ttyS3 (COM1 to COM4): give e.g. --serial ttyS1"
            )),
        }
    }
}

impl SerialPort {
    /// Kernel arguments of every entry: the console on screen and on the serial port
    /// (the last `console=` becomes /dev/console, where the client prints).
    pub fn console_args(self) -> String {
        format!("console=tty0 console=ttyS{},115200", self.0)
    }

    /// The unit number isolinux's `serial` directive takes.
    pub(in crate::build) fn unit(self) -> String {
        self.0.to_string()
    }
}
/// Added to the default entry.
pub(in crate::build) const DEFAULT_ARGS: &str = "quiet";
/// Added to the "verbose + debug" entry.
pub(in crate::build) const DEBUG_ARGS: &str = "loglevel=7 failback.debug=1";

/// The rendered menus of one image.
pub(super) struct Menus {
    pub isolinux_cfg: String,
    pub grub_cfg: String,
    /// `/boot/grub/grub.cfg` of the ESP; only useful when the image has an id to search by.
    pub esp_grub_cfg: String,
}

impl Menus {
    pub fn new(i: &IsoInputs) -> Self {
        let extra = match i.image_id.as_str() {
            "" => i.extra_args.clone(),
            id => format!("failback.image={id} {}", i.extra_args),
        };
        let args = |more: &str| kernel_args(i.serial, more, &extra);
        let unit = i.serial.unit();
        let vars = [
            ("SERIAL", unit.as_str()),
            ("VERSION", i.version.as_str()),
            ("LABEL", i.label.as_str()),
            ("APPEND", &args(DEFAULT_ARGS)),
            ("APPEND_DEBUG", &args(DEBUG_ARGS)),
        ];
        Self {
            isolinux_cfg: render(ISOLINUX_CFG, &vars),
            grub_cfg: render(GRUB_CFG, &vars),
            esp_grub_cfg: render(GRUB_ESP_CFG, &[("IMAGE", &i.image_id)]),
        }
    }
}

/// The kernel arguments of a menu entry: console, the entry's own, the operator's.
pub(in crate::build) fn kernel_args(serial: SerialPort, entry: &str, extra: &str) -> String {
    [&serial.console_args(), entry, extra.trim()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fills `@NAME@` placeholders.
pub(in crate::build) fn render(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(template.to_string(), |s, (k, v)| {
        s.replace(&format!("@{k}@"), v)
    })
}
