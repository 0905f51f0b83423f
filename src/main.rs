//! failback: boot a failed-back host and pull its disks back from AWS.
//!
//! One binary, several roles chosen by subcommand (and by being PID 1 as `/init`).
//! `main` only parses arguments and dispatches; each role lives in its own module.

mod build;
mod disks;
mod events;

use anyhow::Result;
use clap::{Parser, Subcommand};
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
    /// List local disks with their identity.
    Disks {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Where to read block devices from (for tests).
        #[arg(long, default_value = "/sys/block", hide = true)]
        sys_block: PathBuf,
    },
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        eprintln!("failback: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Disks { json, sys_block } => {
            let disks = disks::discover(&sys_block)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&disks)?);
            } else {
                for d in &disks {
                    println!("{d}");
                }
            }
            Ok(())
        }
    }
}
