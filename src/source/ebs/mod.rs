//! `ebs://snap-ID` and `ebs://snap-NEW?base=snap-OLD`: volumes read from EBS snapshots
//! through the EBS direct APIs (ListSnapshotBlocks, ListChangedBlocks,
//! GetSnapshotBlock), signed with SigV4 (service `ebs`).
//!
//! The snapshot is one volume named by its id. Its blocks have no hash before they
//! are fetched, so the source offers [`Candidates`], window by window: every block
//! the snapshot holds in the window (or, with a base, every block ListChangedBlocks
//! reports there) is fetched, checked against `x-amz-Data-Length` and
//! `x-amz-Checksum` (base64 SHA-256) and only then handed over; blocks the
//! snapshot does not hold are zeros.
//!
//! The listing is streamed: each window is listed when the engine plans it (from
//! its StartingBlockIndex to the first block past it) and only the last few
//! windows' tokens are held ([`held`]), so memory follows the window, not the
//! volume, and no token is kept long enough to expire (NextTokens last an hour,
//! BlockTokens 7 days). A block whose token expired anyway (a plan reviewed for
//! days) is listed again and fetched once more.
//!
//! The API's BlockSize is trusted: the engine works in 512 KiB blocks, and a snapshot
//! reporting a smaller size that divides 512 KiB is read as groups of its blocks.
//!
//! `settings` resolves the region, endpoint and credentials; `client` signs,
//! sends and retries the requests; `listing` turns the pages of the listing calls
//! into a window's candidates, without HTTP; `held` keeps the last windows'
//! tokens; `error` says what went wrong in one line.
//!
//! Requests that EBS throttles (HTTP 400 RequestThrottledException, 429, 503) or
//! that fail with 5xx or a network error are retried here with exponential backoff
//! and equal jitter ([`crate::retry`]), then reported as retryable to the engine,
//! which retries too. Calls are blocking (the engine runs them on plain threads),
//! so sleeping is fine.

mod client;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod held;
mod listing;
mod settings;

pub use error::Error;
pub use settings::{Aws, Credentials, EbsConfig};

use super::{BlockSource, Candidates, HashedSink, Received, SourceError, VolumeInfo};
use crate::block::{BLOCK_SIZE, Hash};
use crate::disks::identity::{self, Identity};
use client::Client;
use held::{Held, TOKEN_AGE, Tokens};
use listing::{Listed, Shape};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// A [`BlockSource`] reading one EBS snapshot.
pub struct EbsSource {
    client: Client,
    shape: OnceLock<Shape>,
    held: Held,
    /// The longest range of blocks candidates were asked for: the engine's window.
    window_len: AtomicU64,
    /// Held by the thread listing tokens that were not held, so that the others
    /// waiting for the same window find its listing rather than list it again.
    relisting: Mutex<()>,
    /// API blocks the last listing showed to hold nothing (from its range's end
    /// to the next block it listed): snapshots do not change.
    empty: Mutex<Range<u64>>,
    head: Mutex<Option<Identity>>,
}

impl EbsSource {
    /// Builds the HTTPS client (rustls on ring, webpki roots); makes no request yet.
    pub fn new(cfg: EbsConfig) -> Result<Self, SourceError> {
        Ok(Self {
            client: Client::new(cfg)?,
            shape: OnceLock::new(),
            held: Held::new(TOKEN_AGE),
            window_len: AtomicU64::new(0),
            relisting: Mutex::new(()),
            empty: Mutex::new(0..0),
            head: Mutex::new(None),
        })
    }

    /// How far the local clock is from EBS's, in seconds (positive: we are
    /// behind), from the `Date` of the endpoint's answer to an unsigned HEAD of
    /// its root (through the proxy, if any): the same roots as every request, but
    /// the certificate's dates are not held against the local clock, the very
    /// thing this asks about.
    pub fn date_offset(&self) -> Result<f64, SourceError> {
        Ok(self.client.date_offset()?)
    }

    fn cfg(&self) -> &EbsConfig {
        &self.client.cfg
    }

    /// The volume's size and block size, from the first page of the snapshot's
    /// listing (and of the base's: the volume may have grown since), asked once.
    fn shape(&self) -> Result<Shape, Error> {
        if let Some(s) = self.shape.get() {
            return Ok(*s);
        }
        let snap = &self.cfg().snapshot;
        let (block_size, gib) = self.client.first_page(snap)?;
        let base_gib = match &self.cfg().base {
            Some(base) => Some(self.client.first_page(base)?.1),
            None => None,
        };
        let shape = Shape::new(snap, block_size, gib, base_gib)?;
        Ok(*self.shape.get_or_init(|| shape))
    }

    /// Lists engine blocks `blocks` (or their changes since the base): their
    /// candidates, and their tokens, which are held. A range the last listing
    /// showed to hold nothing is not asked about (a sparse volume's empty windows).
    fn list(&self, blocks: Range<u64>) -> Result<(Arc<Tokens>, Candidates), Error> {
        let shape = self.shape()?;
        let api = shape.api_range(&blocks);
        let nothing = || listing::BlockList {
            block_size: shape.api_block,
            ..Default::default()
        };
        let known_empty = {
            let empty = self.empty.lock().unwrap_or_else(|p| p.into_inner());
            empty.start <= api.start && api.end <= empty.end
        };
        let listed = match &self.cfg().base {
            None if known_empty => Listed::Snapshot(nothing()),
            None => Listed::Snapshot(self.client.list(None, api.clone())?),
            Some(_) if known_empty => Listed::Changes {
                changed: nothing(),
                all: Listed::needs_all(&shape).then(nothing),
            },
            Some(base) => {
                let changed = self.client.list(Some(base), api.clone())?;
                // Groups of smaller blocks: a changed group needs the tokens of
                // all its blocks, changed or not.
                let all = if Listed::needs_all(&shape) {
                    Some(self.client.list(None, api.clone())?)
                } else {
                    None
                };
                Listed::Changes { changed, all }
            }
        };
        if !known_empty {
            let next = match &listed {
                Listed::Snapshot(l) => l.next,
                Listed::Changes { changed, all } => {
                    changed.next.min(all.as_ref().map_or(u64::MAX, |a| a.next))
                }
            };
            *self.empty.lock().unwrap_or_else(|p| p.into_inner()) = api.end..next;
        }
        let l = listing::plan(&self.cfg().snapshot, &shape, blocks.clone(), &listed)?;
        let tokens = self.held.put(Tokens {
            blocks,
            tokens: l.tokens,
            listed: Instant::now(),
        });
        Ok((tokens, l.candidates))
    }

    /// The tokens of engine blocks `blocks`: held, or listed now with the rest of
    /// their window (a reviewed plan's windows are pulled long after they were
    /// listed, and their tokens let go meanwhile).
    fn tokens(&self, blocks: Range<u64>) -> Result<Arc<Tokens>, Error> {
        if let Some(t) = self.held.get(&blocks, Instant::now()) {
            return Ok(t);
        }
        let _one = self.relisting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = self.held.get(&blocks, Instant::now()) {
            return Ok(t);
        }
        Ok(self.list(self.window_of(&blocks)?)?.0)
    }

    /// The engine's window holding `blocks`, widened to cover them: windows lie
    /// end to end from block 0, as long as the longest range candidates were
    /// asked for (a guess: any range covering `blocks` is right, a wider one
    /// only lists more).
    fn window_of(&self, blocks: &Range<u64>) -> Result<Range<u64>, Error> {
        let len = self.window_len.load(Relaxed).max(1);
        let start = blocks.start / len * len;
        let end = blocks.end.max(start + len).min(self.shape()?.blocks());
        Ok(start..end.max(blocks.end))
    }

    /// API block `j` of engine block `i` (with `tokens`, which hold its token if
    /// the snapshot holds it; `None`: zeros). A token that expired is listed
    /// again, with the rest of the batch (engine blocks `i..end`), once.
    fn api_block(
        &self,
        tokens: &mut Arc<Tokens>,
        i: u64,
        end: u64,
        j: u64,
    ) -> Result<Option<(Vec<u8>, Hash)>, Error> {
        let api_block = self.shape()?.api_block;
        let Some(token) = tokens.tokens.get(&j) else {
            return Ok(None);
        };
        match self.client.block(j, token, api_block) {
            Err(Error::TokenExpired { .. }) => {
                *tokens = self.list(i..end)?.0;
                match tokens.tokens.get(&j) {
                    Some(token) => Ok(Some(self.client.block(j, token, api_block)?)),
                    None => Ok(None),
                }
            }
            r => r.map(Some),
        }
    }

    /// What the snapshot's first sectors say (GPT disk GUID, MBR id), for mapping by
    /// identity: one GetSnapshotBlock, made once. Unknown with a base snapshot, whose
    /// listing holds only the changed blocks.
    fn identity(&self, shape: &Shape) -> Result<Identity, Error> {
        let mut known = self.head.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = &*known {
            return Ok(id.clone());
        }
        let mut head = Vec::with_capacity(identity::HEAD_BYTES);
        if self.cfg().base.is_none() {
            let head_blocks = (identity::HEAD_BYTES as u64).div_ceil(BLOCK_SIZE);
            let mut tokens = self.tokens(0..head_blocks.min(shape.blocks()))?;
            for j in 0..(identity::HEAD_BYTES as u64).div_ceil(shape.api_block) {
                let i = j / shape.ratio;
                match self.api_block(&mut tokens, i, head_blocks, j)? {
                    Some((data, _)) => head.extend(data),
                    None => head.resize(head.len() + shape.api_block as usize, 0),
                }
            }
        }
        let id = identity::parse(&head);
        *known = Some(id.clone());
        Ok(id)
    }
}

impl BlockSource for EbsSource {
    fn volumes(&self) -> Result<Vec<VolumeInfo>, SourceError> {
        let shape = self.shape()?;
        let Identity {
            gpt_guid, mbr_id, ..
        } = self.identity(&shape)?;
        Ok(vec![VolumeInfo {
            id: self.cfg().snapshot.clone(),
            size: shape.size,
            block_size: BLOCK_SIZE,
            gpt_guid,
            mbr_id,
        }])
    }

    fn hashes(&self, volume: &str, _: u64, _: u64) -> Result<Vec<Hash>, SourceError> {
        Err(Error::Malformed {
            what: format!("volume '{volume}'"),
            message: "EBS has no block hashes before the blocks: use candidates()".into(),
        }
        .into())
    }

    fn learns(&self) -> bool {
        true
    }

    fn candidates(&self, _volume: &str, blocks: Range<u64>) -> Result<Candidates, SourceError> {
        self.window_len
            .fetch_max(blocks.end.saturating_sub(blocks.start), Relaxed);
        Ok(self.list(blocks)?.1)
    }

    fn blocks(
        &self,
        volume: &str,
        indexes: &[u64],
        sink: &mut dyn FnMut(u64, &[u8], u64) -> Received,
    ) -> Result<(), SourceError> {
        self.blocks_hashed(volume, indexes, &mut |i, data, wire, _| sink(i, data, wire))
    }

    /// With 512 KiB API blocks, each block is handed over as it arrived, with the
    /// SHA-256 that matched its x-amz-Checksum; smaller API blocks are assembled.
    /// The tokens are those of the window's listing, if still held; else the
    /// batch's blocks are listed again.
    fn blocks_hashed(
        &self,
        _volume: &str,
        indexes: &[u64],
        sink: &mut HashedSink<'_>,
    ) -> Result<(), SourceError> {
        let (Some(&first), Some(&last)) = (indexes.iter().min(), indexes.iter().max()) else {
            return Ok(());
        };
        let shape = self.shape()?;
        let (ratio, api_block) = (shape.ratio, shape.api_block);
        let end = last + 1;
        let mut tokens = self.tokens(first..end)?;
        let mut buf = Vec::new();
        for &i in indexes {
            let len = (shape.size - i * BLOCK_SIZE).min(BLOCK_SIZE) as usize;
            if ratio == 1 && len as u64 == api_block {
                let Some((data, sha)) = self.api_block(&mut tokens, i, end, i)? else {
                    // Not in the snapshot (any more): zeros.
                    buf.clear();
                    buf.resize(len, 0);
                    if let Received::Stop = sink(i, &buf, 0, None) {
                        break;
                    }
                    continue;
                };
                if let Received::Stop = sink(i, &data, data.len() as u64, Some(sha)) {
                    break;
                }
                continue;
            }
            buf.resize(BLOCK_SIZE as usize, 0);
            let mut wire = 0;
            for (k, j) in (i * ratio..(i + 1) * ratio).enumerate() {
                let part = &mut buf[k * api_block as usize..(k + 1) * api_block as usize];
                match self.api_block(&mut tokens, i, end, j)? {
                    Some((data, _)) => {
                        wire += data.len() as u64;
                        part.copy_from_slice(&data);
                    }
                    None => part.fill(0),
                }
            }
            if let Received::Stop = sink(i, &buf[..len], wire, None) {
                break;
            }
        }
        Ok(())
    }
}
