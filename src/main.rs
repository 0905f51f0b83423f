//! failback: boot a failed-back host and pull its disks back from AWS.
//!
//! One binary, several roles chosen by subcommand (and by being PID 1 as `/init`).
//! `main` only parses arguments and dispatches; each role lives in its own module.

use anyhow::Result;
use clap::{Parser, Subcommand};
use failback::{agent, boot, build, disks, sync};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "failback",
    version,
    about = "Fail back disks from AWS to the original hosts",
    long_about = "Fail back disks from AWS to the original hosts: `serve` on the recovery \
        instance in AWS, `build` a boot image (ISO, PXE tree, cloud images) on any Linux \
        host, boot it on the original host (or `pull` from a running Linux), and only the \
        blocks that differ come back, each verified.",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The whole story, one line per role (`failback COMMAND --help` for each).
const EXAMPLES: &str = "Examples:
  failback serve --volume system=/dev/nvme0n1 --volume data=/dev/nvme1n1
  failback build --config failback.toml --out out
  failback pull --source https://10.0.0.5:1500 --fingerprint e40c-b277-58bf-ec98-20c4-ed9a --map system=/dev/sda
  failback disks
  failback status --source https://10.0.0.5:1500 --fingerprint e40c-b277-58bf-ec98-20c4-ed9a";

#[derive(Subcommand)]
enum Command {
    /// Build the boot image: hybrid ISO (BIOS, UEFI, Secure Boot; CD and USB), PXE
    /// tree and checksums, from the Debian inputs (scripts/fetch-inputs.sh).
    #[command(after_help = "Examples:
  failback build --config failback.toml
  failback build --out out --serial ttyS1 --append failback.progress=json
  failback build --serial ttyS1 --serial-menu")]
    Build {
        /// Unpacked Debian packages (scripts/fetch-inputs.sh).
        #[arg(long, default_value = "inputs")]
        inputs: PathBuf,
        /// Output directory.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// The static client binary to run as /init (default: this binary).
        #[arg(long)]
        client: Option<PathBuf>,
        /// Use this kernel image instead of the one in the inputs.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// The kernel's modules directory (lib/modules/VERSION) when --kernel is given.
        #[arg(long)]
        modules: Option<PathBuf>,
        /// A preset (failback.toml) to bake into the image; validated first.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Volume label of failback.iso (1-32 of A-Z 0-9 _).
        #[arg(long, default_value = "FAILBACK")]
        label: String,
        /// Extra kernel arguments for every boot menu entry of failback.iso.
        #[arg(long, default_value = "")]
        append: String,
        /// The serial port of the kernel's console: ttyS1 (COM2) for a BMC's serial
        /// port (iLO VSP, iDRAC SOL). The client uses COM1 and COM2 either way.
        #[arg(long, default_value = "ttyS0", value_name = "ttyS0|ttyS1")]
        serial: build::iso::SerialPort,
        /// The boot menus (isolinux, pxelinux, GRUB) drive the --serial port
        /// themselves, for firmware without console redirection. Leave it off when
        /// the BIOS/UEFI redirects its console to the serial line (a BMC's usual
        /// setup): the menu would arrive twice and garbled.
        #[arg(long)]
        serial_menu: bool,
        /// A firmware directory (laid out like /lib/firmware, e.g. with Debian's
        /// non-free firmware): the files the included modules request are taken
        /// from it. Repeatable; searched before the inputs' free firmware.
        #[arg(long, value_name = "DIR")]
        firmware: Vec<PathBuf>,
        /// Leave out the non-free firmware of the inputs (inputs/non-free), for
        /// images that must carry only freely redistributable files.
        #[arg(long)]
        no_non_free_firmware: bool,
    },
    /// Run as PID 1 in the initramfs (automatic when started as /init).
    #[command(hide = true)]
    Init,
    /// List local disks with their identity (size, model, serial, wwn, by-path name,
    /// GPT disk GUID and MBR signature when readable): the names a mapping can use.
    #[command(after_help = "Examples:
  failback disks
  failback disks --json")]
    Disks {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Where to read block devices from (for tests).
        #[arg(long, default_value = "/sys/block", hide = true)]
        sys_block: PathBuf,
    },
    /// Pull remote volumes into local disks or images (only the blocks that differ).
    #[command(after_help = "Examples:
  failback pull --source https://10.0.0.5:1500 --fingerprint e40c-b277-58bf-ec98-20c4-ed9a --map system=/dev/sda --map data=serial:S4EVNF0M
  failback pull --source ebs://snap-0123456789abcdef0 --map snap-0123456789abcdef0=/dev/sdb --dry-run
  failback pull --source ebs://snap-0123456789abcdef1?base=snap-0123456789abcdef0 --map snap-0123456789abcdef1=/dev/sdb --yes

  failback pull --source ebs://snap-0123456789abcdef0 --map snap-0123456789abcdef0=/dev/sdb --yes --host db-3 --report https://10.0.0.5:1500 --report-fingerprint e40c-b277-58bf-ec98-20c4-ed9a

The token is read from FAILBACK_TOKEN (or --token); AWS credentials and region from the
usual AWS_* variables; the collector's token from FAILBACK_REPORT_TOKEN.")]
    Pull(sync::cli::PullArgs),
    /// Serve volumes read-only to `failback pull` (the agent, on the recovery instance);
    /// without volumes, a collector of the fleet's reports with its dashboard.
    #[command(after_help = "Examples:
  failback serve --volume system=/dev/nvme0n1 --volume data=/dev/nvme1n1
  failback serve --volume disk=/srv/disk.img --listen 127.0.0.1:1500 --state-dir /var/lib/failback
  failback serve --listen 0.0.0.0:1500 --log json

It prints its certificate's fingerprint (type its first groups on the client) and, the first
time, the token it made (kept in the state directory). Without --volume it is a collector
only: pulls report to it with --report, and its dashboard is at https://HOST:PORT/.")]
    Serve(agent::ServeArgs),
    /// Show the fleet as an agent collecting its reports sees it; fails while any
    /// host has failed.
    Status(agent::status::StatusArgs),
    /// Cut continuous pulls over: each runs a final pass and verifies (run it after
    /// stopping the workload).
    #[command(after_help = "Examples:
  failback cutover --source https://127.0.0.1:1500 --fingerprint e40c-b277-58bf-ec98-20c4-ed9a
  failback cutover --source https://127.0.0.1:1500 --fingerprint e40c-b277-58bf-ec98-20c4-ed9a --host rack1-07 --timeout 120

The token is read from FAILBACK_TOKEN (or --token). It waits for every client's final pass
and prints, per host, whether the final digests match and the seconds the pass took.")]
    Cutover(agent::cutover_cmd::CutoverArgs),
}

fn main() {
    if std::process::id() == 1 {
        boot::main();
    }
    if let Err(err) = run(Cli::parse()) {
        eprintln!("failback: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build {
            inputs,
            out,
            client,
            kernel,
            modules,
            config,
            label,
            append,
            serial,
            serial_menu,
            firmware,
            no_non_free_firmware,
        } => {
            let client = match client {
                Some(c) => c,
                None => std::env::current_exe()?,
            };
            let opts = build::Options {
                inputs,
                out,
                client,
                kernel,
                modules,
                preset: config,
                source_date_epoch: build::source_date_epoch()?,
                label,
                append,
                console: build::iso::Console {
                    serial,
                    serial_menu,
                },
                firmware,
                non_free_firmware: !no_non_free_firmware,
            };
            let report = build::run(&opts)?;
            println!("{report}");
            for warning in report.warnings() {
                eprintln!("failback: warning: {warning}");
            }
            Ok(())
        }
        Command::Init => anyhow::bail!("failback init runs only as PID 1 in the boot image"),
        Command::Disks { json, sys_block } => {
            let mut disks = disks::discover(&sys_block)?;
            // Reading a disk's head needs root; without it the identity stays unknown.
            disks::identify(&mut disks, std::path::Path::new("/dev"), None);
            if json {
                println!("{}", serde_json::to_string_pretty(&disks)?);
            } else {
                for d in &disks {
                    println!("{d}");
                }
            }
            Ok(())
        }
        Command::Pull(args) => sync::cli::run(args),
        Command::Serve(args) => agent::run(args),
        Command::Status(args) => agent::status::run(args),
        Command::Cutover(args) => agent::cutover_cmd::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The `failback ...` lines of a help text's examples, as words.
    fn examples(help: &str) -> Vec<Vec<String>> {
        help.lines()
            .map(str::trim)
            .filter(|l| l.starts_with("failback "))
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect()
    }

    #[test]
    fn every_command_has_examples_and_they_parse() {
        let mut cli = Cli::command();
        let top = cli.render_long_help().to_string();
        let mut all = examples(&top);
        assert!(all.len() >= 3, "failback --help shows the story: {top}");
        for sub in cli.get_subcommands_mut().filter(|c| !c.is_hide_set()) {
            let name = sub.get_name().to_string();
            if name == "help" {
                continue;
            }
            let help = sub.render_long_help().to_string();
            let own = examples(&help);
            assert!(
                !own.is_empty(),
                "failback {name} --help has no example:\n{help}"
            );
            assert!(
                own.iter().all(|words| words[1] == name),
                "failback {name}'s examples are its own: {own:?}"
            );
            all.extend(own);
        }
        for words in all {
            if let Err(e) = Cli::try_parse_from(&words) {
                panic!("the example `{}` does not parse: {e}", words.join(" "));
            }
        }
    }
}
