//! The events the client reports: what it sees and what it does, from boot to the end.

use serde::Serialize;
use std::collections::BTreeMap;

/// One thing worth telling. Serialized as `{"event":"<name>", ...fields}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// PID 1 is running.
    Boot {
        version: String,
        uptime_s: f64,
        secure_boot: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        /// The consoles the client writes to and reads from, when more than one.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        consoles: Vec<String>,
    },
    /// Kernel modules loaded by coldplug.
    Drivers {
        loaded: Vec<String>,
        failed: Vec<String>,
        /// Module parameters from the kernel command line, as the kernel holds them
        /// (`MODULE.PARAM` -> value).
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        params: BTreeMap<String, String>,
        uptime_s: f64,
    },
    /// Local disks found.
    Disks { disks: Vec<crate::disks::Disk> },
    /// The network is configured.
    Network {
        #[serde(flatten)]
        network: crate::net::Network,
        uptime_s: f64,
    },
    /// The client waits for something outside its control.
    Waiting { what: String },
    /// Something the operator should know that is not an error.
    Notice { message: String },
    /// Something went wrong; what follows is `failback.after`.
    Error { message: String },
    /// Which local disk receives which volume, and why.
    Mapping {
        choices: Vec<crate::mapping::automap::Choice>,
    },
    /// The plan for one volume: what differs between it and its local target.
    Plan {
        volume: String,
        target: String,
        size: u64,
        blocks: u64,
        /// Blocks whose remote content differs from the target's.
        differing: u64,
        /// Of those, blocks that are all zero remotely: written locally, never fetched.
        zero_blocks: u64,
        /// Bytes of block data to fetch (before compression).
        bytes_to_pull: u64,
        dry_run: bool,
    },
    /// How far a volume got in its current phase (`hashing`, `pulling`, `verifying`).
    Progress {
        volume: String,
        phase: String,
        done_bytes: u64,
        total_bytes: u64,
        wire_bytes: u64,
        retries: u64,
    },
    /// A volume is written, flushed and verified.
    VolumeDone {
        volume: String,
        target: String,
        /// Whole-volume digest of the target after the pull (SHA-256 over the ordered
        /// 512 KiB block SHA-256s, the EBS "LINEAR" aggregation).
        sha256: String,
        /// The same digest computed from the remote volume's block hashes.
        remote_sha256: String,
        pulled_blocks: u64,
        zero_blocks: u64,
        wire_bytes: u64,
        retries: u64,
        seconds: f64,
    },
    /// The pull is over (or, with `dry_run`, the plan is).
    Done {
        volumes: u64,
        pulled_blocks: u64,
        wire_bytes: u64,
        retries: u64,
        seconds: f64,
        dry_run: bool,
    },
}
