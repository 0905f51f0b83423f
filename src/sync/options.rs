//! How to pull: the engine's options and their defaults.

use crate::disks::Disk;
use std::path::PathBuf;
use std::time::Duration;

/// How to pull.
#[derive(Debug, Clone)]
pub struct Options {
    /// Plan only; open targets read-only and write nothing.
    pub dry_run: bool,
    /// No questions: every remote volume must be mapped or excluded.
    pub unattended: bool,
    /// Threads hashing local blocks (and remote hash requests in flight).
    pub hash_threads: usize,
    /// Connections fetching blocks at once.
    pub connections: usize,
    /// Blocks per fetch request.
    pub batch_blocks: usize,
    /// Blocks of a volume planned and pulled at a time: the engine holds about 120
    /// bytes for each (plus buffers), whatever the volume's size.
    pub window_blocks: u64,
    /// Consecutive attempts without progress before giving up.
    pub max_attempts: u32,
    /// Interval between progress events.
    pub tick: Duration,
    /// /proc/self/mountinfo (tests pass a fake).
    pub mountinfo: PathBuf,
    /// /sys (tests pass a fake).
    pub sys: PathBuf,
    /// The boot disk; `None` = detect.
    pub boot_disk: Option<PathBuf>,
    /// The local disks as discovered (PID 1): a target on the one holding the image
    /// booted ([`Disk::boot_medium`]) is refused. Empty: none known.
    pub disks: Vec<Disk>,
    /// The source may change under the pull (a pass of a continuous pull before
    /// cutover): a block arriving with another SHA-256 than planned is left, never
    /// written, for the next pass, and the end digests may differ.
    pub live: bool,
}

/// The default window: 2 GiB of blocks (about 0.5 MB of hashes).
pub const WINDOW_BLOCKS: u64 = 4096;

impl Default for Options {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            dry_run: false,
            unattended: false,
            hash_threads: cpus,
            connections: 4,
            batch_blocks: 16,
            window_blocks: WINDOW_BLOCKS,
            max_attempts: 12,
            tick: Duration::from_millis(500),
            mountinfo: "/proc/self/mountinfo".into(),
            sys: "/sys".into(),
            boot_disk: None,
            disks: Vec::new(),
            live: false,
        }
    }
}
