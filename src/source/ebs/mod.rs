//! `ebs://snap-ID` and `ebs://snap-NEW?base=snap-OLD`: volumes read from EBS snapshots
//! through the EBS direct APIs (ListSnapshotBlocks, ListChangedBlocks,
//! GetSnapshotBlock), signed with SigV4 (service `ebs`).
//!
//! The snapshot is one volume named by its id. Its blocks have no hash before they
//! are fetched, so the source offers [`Candidates`]: every block the snapshot holds
//! (or, with a base, every block ListChangedBlocks reports) is fetched, checked
//! against `x-amz-Data-Length` and `x-amz-Checksum` (base64 SHA-256) and only then
//! handed over; blocks the snapshot does not hold are zeros.
//!
//! The API's BlockSize is trusted: the engine works in 512 KiB blocks, and a snapshot
//! reporting a smaller size that divides 512 KiB is read as groups of its blocks.
//!
//! `settings` resolves the region, endpoint and credentials; `client` signs,
//! sends and retries the requests; `listing` turns the pages of the listing calls
//! into the candidates, without HTTP; `error` says what went wrong in one line.
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
mod listing;
mod settings;

pub use error::Error;
pub use settings::{Aws, Credentials, EbsConfig};

use super::{BlockSource, Candidates, HashedSink, Received, SourceError, VolumeInfo};
use crate::block::{BLOCK_SIZE, Hash};
use crate::disks::identity::{self, Identity};
use client::Client;
use listing::{Listed, Listing};
use std::sync::{Arc, Mutex};

/// A [`BlockSource`] reading one EBS snapshot.
pub struct EbsSource {
    client: Client,
    listing: Mutex<Option<Arc<Listing>>>,
    head: Mutex<Option<Identity>>,
}

impl EbsSource {
    /// Builds the HTTPS client (rustls on ring, webpki roots); makes no request yet.
    pub fn new(cfg: EbsConfig) -> Result<Self, SourceError> {
        Ok(Self {
            client: Client::new(cfg)?,
            listing: Mutex::new(None),
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

    /// The listing, made on first use (the engine calls `volumes` first).
    fn listing(&self) -> Result<Arc<Listing>, Error> {
        let mut g = self.listing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = &*g {
            return Ok(l.clone());
        }
        let l = Arc::new(self.list()?);
        *g = Some(l.clone());
        Ok(l)
    }

    /// What the snapshot's first sectors say (GPT disk GUID, MBR id), for mapping by
    /// identity: one GetSnapshotBlock, made once. Unknown with a base snapshot, whose
    /// listing holds only the changed blocks.
    fn identity(&self, l: &Listing) -> Result<Identity, Error> {
        let mut known = self.head.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = &*known {
            return Ok(id.clone());
        }
        let mut head = Vec::with_capacity(identity::HEAD_BYTES);
        if self.cfg().base.is_none() {
            for j in 0..(identity::HEAD_BYTES as u64).div_ceil(l.api_block) {
                match l.tokens.get(&j) {
                    Some(token) => head.extend(self.client.block(j, token, l.api_block)?.0),
                    None => head.resize(head.len() + l.api_block as usize, 0),
                }
            }
        }
        let id = identity::parse(&head);
        *known = Some(id.clone());
        Ok(id)
    }

    /// Lists the snapshot (or its changes since the base) and plans from that.
    fn list(&self) -> Result<Listing, Error> {
        let listed = match &self.cfg().base {
            None => Listed::Snapshot(self.client.list(None)?),
            Some(base) => {
                let mut changed = self.client.list(Some(base))?;
                // The volume may have grown since the base: each snapshot's own size.
                changed.volume_gib = self.client.volume_gib(&self.cfg().snapshot)?;
                let base_gib = self.client.volume_gib(base)?;
                // Groups of smaller blocks: a changed group needs the tokens of
                // all its blocks, changed or not.
                let all = if Listed::needs_all(&changed) {
                    Some(self.client.list(None)?)
                } else {
                    None
                };
                Listed::Changes {
                    changed,
                    all,
                    base_gib,
                }
            }
        };
        listing::plan(&self.cfg().snapshot, &listed)
    }
}

impl BlockSource for EbsSource {
    fn volumes(&self) -> Result<Vec<VolumeInfo>, SourceError> {
        let l = self.listing()?;
        let Identity {
            gpt_guid, mbr_id, ..
        } = self.identity(&l)?;
        Ok(vec![VolumeInfo {
            id: self.cfg().snapshot.clone(),
            size: l.size,
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

    fn candidates(&self, _volume: &str) -> Result<Option<Candidates>, SourceError> {
        Ok(Some(self.listing()?.candidates.clone()))
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
    fn blocks_hashed(
        &self,
        _volume: &str,
        indexes: &[u64],
        sink: &mut HashedSink<'_>,
    ) -> Result<(), SourceError> {
        let l = self.listing()?;
        let ratio = BLOCK_SIZE / l.api_block;
        let mut buf = Vec::new();
        for &i in indexes {
            let len = (l.size - i * BLOCK_SIZE).min(BLOCK_SIZE) as usize;
            if ratio == 1
                && len as u64 == l.api_block
                && let Some(token) = l.tokens.get(&i)
            {
                let (data, sha) = self.client.block(i, token, l.api_block)?;
                if let Received::Stop = sink(i, &data, data.len() as u64, Some(sha)) {
                    break;
                }
                continue;
            }
            buf.resize(BLOCK_SIZE as usize, 0);
            let mut wire = 0;
            for (k, j) in (i * ratio..(i + 1) * ratio).enumerate() {
                let part = &mut buf[k * l.api_block as usize..(k + 1) * l.api_block as usize];
                match l.tokens.get(&j) {
                    Some(token) => {
                        let (data, _) = self.client.block(j, token, l.api_block)?;
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
