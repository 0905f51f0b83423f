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
    about = "Fail back disks from AWS to the original hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the boot image: PXE tree (kernel + initramfs) and checksums.
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
        /// The serial port of the kernel's console and the BIOS menu: ttyS1 (COM2) for
        /// a BMC's serial port (iLO VSP, iDRAC SOL). GRUB's menu and the client use
        /// COM1 and COM2 either way.
        #[arg(long, default_value = "ttyS0", value_name = "ttyS0|ttyS1")]
        serial: build::iso::SerialPort,
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
    /// List local disks with their identity.
    Disks {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Where to read block devices from (for tests).
        #[arg(long, default_value = "/sys/block", hide = true)]
        sys_block: PathBuf,
    },
    /// Pull remote volumes into local disks or images (only the blocks that differ).
    Pull(sync::cli::PullArgs),
    /// Serve volumes read-only to `failback pull` (the agent).
    Serve(agent::ServeArgs),
    /// Cut continuous pulls over: each runs a final pass and verifies (run it after
    /// stopping the workload).
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
                serial,
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
        Command::Cutover(args) => agent::cutover_cmd::run(args),
    }
}
