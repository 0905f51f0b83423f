//! Entry points for the fuzz targets (`fuzz/`): what EBS's answers go through, the
//! same functions the client calls, without HTTP.

use super::Error;
use super::client::{BlockHeaders, check_block};
use super::listing::{self, Listed, Pages, Shape};
use crate::block::Hash;
use crate::source::Candidates;
use std::ops::Range;

/// Reads `pages` as the answers of ListSnapshotBlocks (`changes`: of ListChangedBlocks,
/// with the same pages as the whole listing when it is needed) for the window of engine
/// blocks `window`, and plans it. A volume above `max_gib` is read but not planned: its
/// plan may take much memory.
pub fn listing(
    changes: bool,
    pages: &[&[u8]],
    window: Range<u64>,
    max_gib: u64,
) -> Result<Option<Candidates>, Error> {
    // The API blocks of the window, at the largest ratio (an API block of 512 bytes).
    let api = window.start.saturating_mul(1024)..window.end.saturating_mul(1024);
    let read = |what: &str| -> Result<_, Error> {
        let mut list = Pages::new("snap-fuzz", api.clone());
        for page in pages {
            if list.add(what, page)?.is_none() {
                break;
            }
        }
        list.finish(what)
    };
    let first = read(if changes {
        "ListChangedBlocks"
    } else {
        "ListSnapshotBlocks"
    })?;
    if first.volume_gib > max_gib {
        return Ok(None);
    }
    // The base as large as the snapshot: its extension is tested elsewhere.
    let base = changes.then_some(first.volume_gib);
    let shape = Shape::new("snap-fuzz", first.block_size, first.volume_gib, base)?;
    let listed = if changes {
        let all = Listed::needs_all(&shape)
            .then(|| read("ListSnapshotBlocks"))
            .transpose()?;
        Listed::Changes {
            changed: first,
            all,
        }
    } else {
        Listed::Snapshot(first)
    };
    Ok(Some(
        listing::plan("snap-fuzz", &shape, window, &listed)?.candidates,
    ))
}

/// Checks a GetSnapshotBlock answer: its `x-amz-Data-Length`, `x-amz-Checksum` and
/// `x-amz-Checksum-Algorithm` headers against its data.
pub fn block_answer(
    length: Option<String>,
    checksum: Option<String>,
    algorithm: Option<String>,
    data: &[u8],
    block_size: u64,
) -> Result<Hash, Error> {
    let headers = BlockHeaders {
        length,
        checksum,
        algorithm,
    };
    check_block("snap-fuzz", 0, block_size, &headers, data)
}

/// The error an error answer of EBS (HTTP `status`, `x-amzn-ErrorType`, JSON body)
/// becomes, for a snapshot with a base snapshot or without.
pub fn error_answer(status: u16, kind_header: Option<String>, body: &str, base: bool) -> Error {
    let var = |k: &str| {
        let v = match k {
            "AWS_REGION" => "eu-west-3",
            "AWS_ACCESS_KEY_ID" => "fuzz",
            "AWS_SECRET_ACCESS_KEY" => "fuzz",
            _ => return None,
        };
        Some(v.to_string())
    };
    let base = base.then(|| "snap-base".to_string());
    let cfg = super::EbsConfig::resolve("snap-fuzz".into(), base, None, None, var)
        .expect("a complete configuration");
    Error::from_answer(&cfg, "ListChangedBlocks", status, kind_header, body)
}
