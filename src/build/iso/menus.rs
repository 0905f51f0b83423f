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
}

/// Where an image talks to the operator: the kernel's serial port (`--serial`), and
/// whether the boot loaders draw their menus there themselves (`--serial-menu`).
///
/// By default the menus go to the screen only. Firmware with console redirection
/// (SeaBIOS's sercon, OVMF, a server's BIOS or UEFI redirection to its BMC) copies the
/// screen to the serial line with cursor moves; a loader writing the same text there
/// raw makes every menu line arrive twice, garbled. Without redirection the serial line
/// shows the kernel and the client, not the menu (which boots the default in 3 s);
/// `--serial-menu` is for that firmware.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Console {
    pub serial: SerialPort,
    pub serial_menu: bool,
}

impl Console {
    /// isolinux's and pxelinux's `serial` directive, or nothing.
    pub(in crate::build) fn syslinux_serial(self) -> String {
        match self.serial_menu {
            true => format!("serial {} 115200", self.serial.0),
            false => String::new(),
        }
    }

    /// GRUB's terminal setup, or nothing (its default terminal is the firmware's console).
    pub(in crate::build) fn grub_serial(self) -> String {
        match self.serial_menu {
            true => {
                let unit = self.serial.0;
                format!(
                    "serial --unit={unit} --speed=115200\n\
                     terminal_input console serial_com{unit}\n\
                     terminal_output console serial_com{unit}"
                )
            }
            false => String::new(),
        }
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
        let args = |more: &str| kernel_args(i.console.serial, more, &extra);
        let vars = [
            ("VERSION", i.version.as_str()),
            ("LABEL", i.label.as_str()),
            ("APPEND", &args(DEFAULT_ARGS)),
            ("APPEND_DEBUG", &args(DEBUG_ARGS)),
        ];
        let with_serial = |template: &str, serial_menu: String| {
            render(&render(template, &[("SERIAL_MENU", &serial_menu)]), &vars)
        };
        Self {
            isolinux_cfg: with_serial(ISOLINUX_CFG, i.console.syslinux_serial()),
            grub_cfg: with_serial(GRUB_CFG, i.console.grub_serial()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn menus(console: Console) -> Menus {
        Menus::new(&IsoInputs {
            console,
            ..IsoInputs::debian("in".as_ref(), "k".into(), "i".into())
        })
    }

    /// The lines of a menu that are not comments.
    fn directives(cfg: &str) -> Vec<&str> {
        cfg.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn the_menus_leave_the_serial_line_to_the_firmware_by_default() {
        let m = menus(Console::default());
        for cfg in [&m.isolinux_cfg, &m.grub_cfg] {
            let serial = directives(cfg).into_iter().find(|l| l.contains("serial"));
            assert_eq!(serial, None, "{cfg}");
        }
        for cfg in [&m.isolinux_cfg, &m.grub_cfg] {
            assert!(!directives(cfg).concat().contains('@'), "all filled: {cfg}");
        }
        assert!(
            m.isolinux_cfg
                .contains("console=tty0 console=ttyS0,115200 quiet")
        );
    }

    #[test]
    fn serial_menu_makes_the_loaders_drive_the_chosen_port() {
        let m = menus(Console {
            serial: "ttyS1".parse().unwrap(),
            serial_menu: true,
        });
        assert!(
            m.isolinux_cfg.contains("\nserial 1 115200\n"),
            "{}",
            m.isolinux_cfg
        );
        for line in [
            "serial --unit=1 --speed=115200\n",
            "terminal_input console serial_com1\n",
            "terminal_output console serial_com1\n",
        ] {
            assert!(m.grub_cfg.contains(line), "{line}: {}", m.grub_cfg);
        }
        assert!(m.grub_cfg.contains("console=tty0 console=ttyS1,115200"));
    }
}
