//! Where remote volumes come from: a [`BlockSource`] lists volumes, gives the SHA-256
//! of every 512 KiB block and hands over the blocks themselves. The agent over HTTPS
//! ([`agent::AgentSource`]) is one. An EBS snapshot ([`ebs::EbsSource`]) learns a
//! block's SHA-256 only with the block itself (GetSnapshotBlock's `x-amz-Checksum`),
//! so it offers [`BlockSource::candidates`] instead of hashes, window by window: the
//! blocks that may differ and those known to be zeros.

mod address;
pub mod agent;
pub mod ebs;
pub mod wire;

pub use address::Source;

use crate::block::{BLOCK_SIZE, Hash};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// One remote volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeInfo {
    /// The name the operator maps (`--map NAME=TARGET`).
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// Block size in bytes; always [`BLOCK_SIZE`]: a source refuses a volume
    /// announced with any other.
    pub block_size: u64,
    /// GPT disk GUID, if the volume starts with a GPT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpt_guid: Option<String>,
    /// MBR disk identifier (hex), if the volume starts with an MBR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbr_id: Option<String>,
}

impl VolumeInfo {
    /// Number of blocks (the last one may be short). Counted in [`BLOCK_SIZE`],
    /// the size every read and write uses, never in what a peer announced.
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(BLOCK_SIZE)
    }
}

/// Why a source call failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the agent at {url} refused the token (HTTP 401): check --token")]
    Unauthorized { url: String },
    #[error(
        "the agent at {url} presented a certificate with fingerprint {seen}, not the expected {expected}: check --fingerprint (or that you reach the right host)"
    )]
    Fingerprint {
        url: String,
        seen: String,
        expected: String,
    },
    #[error("the agent at {url} answered HTTP {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    #[error(
        "the agent at {url} offers volume {volume:?} in blocks of {block_size} bytes; this client works in blocks of {BLOCK_SIZE} bytes only: run an agent of the same failback release"
    )]
    BlockSize {
        url: String,
        volume: String,
        block_size: u64,
    },
    #[error("cannot talk to the agent at {url}: {message}")]
    Transport { url: String, message: String },
    #[error("the agent at {url} sent a malformed answer: {message}")]
    Protocol { url: String, message: String },
    #[error(transparent)]
    Ebs(#[from] ebs::Error),
}

impl SourceError {
    /// True when trying again may help (network trouble, agent restarting, 5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Transport { .. } | SourceError::Protocol { .. } => true,
            SourceError::Http { status, .. } => *status >= 500 || *status == 429,
            SourceError::Unauthorized { .. }
            | SourceError::Fingerprint { .. }
            | SourceError::BlockSize { .. } => false,
            SourceError::Ebs(e) => e.is_retryable(),
        }
    }
}

/// What the receiver of blocks says after each one.
pub enum Received {
    /// Carry on.
    Continue,
    /// Stop this transfer (the caller is aborting).
    Stop,
}

/// The blocks of a volume worth a look, from a source that cannot hash up front.
/// Blocks in neither list are taken to be what the target already holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidates {
    /// Blocks to fetch; their SHA-256 is learned from the data, which the source
    /// has checked against the checksum it came with.
    pub fetch: Vec<u64>,
    /// Blocks the remote volume does not hold: zeros.
    pub zero: Vec<u64>,
}

/// What [`BlockSource::blocks_hashed`] hands each block to: index, data, bytes over
/// the wire, and the SHA-256 the source computed while verifying it (if it did).
pub type HashedSink<'a> = dyn FnMut(u64, &[u8], u64, Option<Hash>) -> Received + 'a;

/// A remote set of volumes, read block by block. Calls are blocking and may be made
/// from several threads at once (each call may use its own connection).
pub trait BlockSource: Send + Sync {
    /// The volumes on offer.
    fn volumes(&self) -> Result<Vec<VolumeInfo>, SourceError>;

    /// SHA-256 of blocks `start..start+count` of `volume`, in order.
    fn hashes(&self, volume: &str, start: u64, count: u64) -> Result<Vec<Hash>, SourceError>;

    /// Whether the source learns a block's hash only with the block (EBS): then
    /// the engine plans with [`candidates`](Self::candidates), `hashes` is not
    /// called and [`blocks`](Self::blocks) delivers only blocks it has verified
    /// itself. `false` (the default): plan with [`hashes`](Self::hashes).
    fn learns(&self) -> bool {
        false
    }

    /// For a source that [`learns`](Self::learns): which of blocks `blocks` of
    /// `volume` to fetch and which are zeros. Asked window by window as the engine
    /// plans, so that a source lists no more than a window at a time. The default
    /// fetches them all.
    fn candidates(&self, _volume: &str, blocks: Range<u64>) -> Result<Candidates, SourceError> {
        Ok(Candidates {
            fetch: blocks.collect(),
            zero: Vec::new(),
        })
    }

    /// Fetches the blocks at `indexes` of `volume`; `sink(index, data, wire_bytes)` is
    /// called for each one as it arrives (any order). An error may come after some
    /// blocks were delivered; the caller retries the rest. The source does not verify.
    fn blocks(
        &self,
        volume: &str,
        indexes: &[u64],
        sink: &mut dyn FnMut(u64, &[u8], u64) -> Received,
    ) -> Result<(), SourceError>;

    /// [`blocks`](Self::blocks), and with each block the SHA-256 the source computed
    /// while verifying it against its own checksum (`None`: not computed). Only a
    /// source that [`learns`](Self::learns) is trusted with it: the caller
    /// then need not hash the block a second time. The default computes none.
    fn blocks_hashed(
        &self,
        volume: &str,
        indexes: &[u64],
        sink: &mut HashedSink<'_>,
    ) -> Result<(), SourceError> {
        self.blocks(volume, indexes, &mut |i, data, wire| {
            sink(i, data, wire, None)
        })
    }
}
