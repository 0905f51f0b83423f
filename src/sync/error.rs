//! Why a pull stops: every error the sync engine reports.

use crate::disks;
use crate::mapping::{automap, map, select};
use crate::source::SourceError;
use std::path::{Path, PathBuf};

/// Why a pull stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Map(#[from] map::Error),
    #[error("volume target: {0}")]
    Select(#[from] select::Error),
    #[error(transparent)]
    Automap(#[from] automap::Error),
    #[error(transparent)]
    Disks(#[from] disks::Error),
    #[error("--map names volume '{name}', but the agent offers only: {available}")]
    UnknownVolume { name: String, available: String },
    #[error(
        "volume '{name}' is neither mapped nor excluded: add --map {name}=TARGET or --map {name}=EXCLUDE"
    )]
    Unmapped { name: String },
    #[error("nothing to do: no volume is mapped to a target (use --map NAME=TARGET)")]
    NothingMapped,
    #[error("cannot open target {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "target {path} has {size} bytes, smaller than volume '{volume}' ({volume_size} bytes): map a target at least as large"
    )]
    TooSmall {
        path: PathBuf,
        size: u64,
        volume: String,
        volume_size: u64,
    },
    #[error(
        "target {path} is named for both '{first}' and '{second}': give each volume its own target"
    )]
    Twice {
        path: PathBuf,
        first: String,
        second: String,
    },
    #[error("target {path} is mounted on {mount_point}: unmount it first")]
    Mounted { path: PathBuf, mount_point: String },
    #[error("target {path} is the disk this system booted from: map another disk")]
    BootDisk { path: PathBuf },
    #[error(
        "volume {volume} is mapped to {path}, the medium this image booted from: map another disk"
    )]
    BootMedium { volume: String, path: PathBuf },
    #[error("cannot {what} {path} at offset {offset}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        offset: u64,
        source: std::io::Error,
    },
    #[error(
        "gave up on volume '{volume}' after {attempts} attempts without progress; last problem: {last}"
    )]
    GaveUp {
        volume: String,
        attempts: u32,
        last: String,
    },
    #[error(
        "volume '{volume}': block {block} of {path} does not hold the remote content at the end of the pull"
    )]
    Verify {
        volume: String,
        block: u64,
        path: PathBuf,
    },
    #[error("stopped: the plan was not confirmed, nothing was written")]
    Declined,
    #[error(
        "volume '{volume}' changed size between passes ({was} bytes, now {now} bytes): start the pull again to plan its new size"
    )]
    SizeChanged { volume: String, was: u64, now: u64 },
    #[error(
        "volume '{volume}' is no longer offered by the source: serve it again, or start the pull again without it"
    )]
    VolumeGone { volume: String },
    #[error(
        "--continuous needs an agent source (https://...): an EBS snapshot never changes, pull it once without --continuous"
    )]
    ContinuousNeedsAgent,
}

impl Error {
    /// A failed read, write or flush of `path` at `offset`.
    pub(super) fn io(what: &'static str, path: &Path, offset: u64, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_path_buf(),
            offset,
            source,
        }
    }
}
