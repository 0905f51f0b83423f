//! What the listing calls amount to, without HTTP: the pages of
//! ListSnapshotBlocks and ListChangedBlocks read into block lists ([`Pages`]),
//! and the lists turned into the engine's candidates ([`plan`]).
//!
//! The API's BlockSize is trusted: the engine works in 512 KiB blocks, and a
//! snapshot reporting a smaller size that divides 512 KiB is read as groups of
//! its blocks. An engine block is fetched when the snapshot holds any block of
//! its group, else it is zeros.
//!
//! Sizes from the service are checked: a VolumeSize beyond EBS's largest volume
//! is refused, and the pages of one call end within the volume's block count.

use super::Error;
use crate::block::BLOCK_SIZE;
use crate::source::Candidates;
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};

/// What the listing calls found, computed once.
#[derive(Debug)]
pub(super) struct Listing {
    /// Volume size in bytes.
    pub size: u64,
    /// The API's block size.
    pub api_block: u64,
    /// API block index -> BlockToken in the snapshot, for the blocks we may fetch.
    pub tokens: HashMap<u64, String>,
    pub candidates: Candidates,
}

/// One page of ListSnapshotBlocks or ListChangedBlocks.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Page {
    #[serde(default)]
    blocks: Vec<BlockEntry>,
    #[serde(default)]
    changed_blocks: Vec<ChangedEntry>,
    block_size: Option<u64>,
    volume_size: Option<u64>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BlockEntry {
    block_index: u64,
    block_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangedEntry {
    block_index: u64,
    second_block_token: Option<String>,
}

/// What one listing call (all its pages) reported.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct BlockList {
    pub block_size: u64,
    pub volume_gib: u64,
    /// Index -> token (`None`: present in the base, absent from the snapshot).
    pub entries: Vec<(u64, Option<String>)>,
}

/// EBS's largest volume (io2 Block Express: 64 TiB), in GiB.
pub(super) const MAX_VOLUME_GIB: u64 = 64 << 10;

/// The size in bytes of a volume of `gib` GiB, refused beyond [`MAX_VOLUME_GIB`].
pub(super) fn volume_bytes(snapshot: &str, gib: u64) -> Result<u64, Error> {
    match gib.checked_mul(1 << 30) {
        Some(bytes) if gib <= MAX_VOLUME_GIB => Ok(bytes),
        _ => Err(Error::VolumeSize {
            snapshot: snapshot.to_string(),
            gib,
            max: MAX_VOLUME_GIB,
        }),
    }
}

/// Engine blocks per API block of `bs` bytes, refused unless `bs` divides 512 KiB.
fn ratio(snapshot: &str, bs: u64) -> Result<u64, Error> {
    if bs == 0 || bs > BLOCK_SIZE || !BLOCK_SIZE.is_multiple_of(bs) {
        return Err(Error::BlockSize {
            snapshot: snapshot.to_string(),
            size: bs,
        });
    }
    Ok(BLOCK_SIZE / bs)
}

/// The pages of one listing call of `snapshot`, read one after the other.
pub(super) struct Pages {
    snapshot: String,
    list: BlockList,
    seen_tokens: BTreeSet<String>,
    pages: u64,
    /// API blocks in the volume, from the first page: no call lists more
    /// blocks, nor needs more pages (a server handing out new NextTokens
    /// forever would otherwise keep the client paging forever).
    blocks: u64,
}

impl Pages {
    pub fn new(snapshot: &str) -> Self {
        Pages {
            snapshot: snapshot.to_string(),
            list: BlockList::default(),
            seen_tokens: BTreeSet::new(),
            pages: 0,
            blocks: 0,
        }
    }

    /// Adds a page (the JSON body of an answer to `what`); gives the NextToken
    /// to ask the next page with, `None` after the last page.
    pub fn add(&mut self, what: &str, body: &[u8]) -> Result<Option<String>, Error> {
        let malformed = |message: String| Error::Malformed {
            what: what.to_string(),
            message,
        };
        let page: Page = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
        self.pages += 1;
        if self.pages == 1 {
            let (Some(bs), Some(gib)) = (page.block_size, page.volume_size) else {
                return Err(malformed("no BlockSize or VolumeSize".into()));
            };
            ratio(&self.snapshot, bs)?;
            self.blocks = volume_bytes(&self.snapshot, gib)? / bs;
        }
        let out = &mut self.list;
        if let Some(bs) = page.block_size {
            out.block_size = bs;
        }
        if let Some(v) = page.volume_size {
            out.volume_gib = v;
        }
        out.entries.extend(
            page.blocks
                .into_iter()
                .map(|b| (b.block_index, b.block_token)),
        );
        out.entries.extend(
            page.changed_blocks
                .into_iter()
                .map(|b| (b.block_index, b.second_block_token)),
        );
        if out.entries.len() as u64 > self.blocks {
            return Err(malformed(format!(
                "more blocks listed than the volume's {}",
                self.blocks
            )));
        }
        let next = page.next_token.filter(|t| !t.is_empty());
        if next.is_some() && self.pages >= self.blocks.max(1) {
            return Err(malformed(format!(
                "still paging after {} pages, for a volume of {} blocks",
                self.pages, self.blocks
            )));
        }
        match next {
            Some(t) if !self.seen_tokens.insert(t.clone()) => {
                Err(malformed("NextToken repeats an earlier page".into()))
            }
            next => Ok(next),
        }
    }

    /// The list, once the last page is in.
    pub fn finish(self, what: &str) -> Result<BlockList, Error> {
        if self.list.block_size == 0 || self.list.volume_gib == 0 {
            return Err(Error::Malformed {
                what: what.to_string(),
                message: "no BlockSize or VolumeSize".into(),
            });
        }
        // Beyond EBS's largest volume the size in bytes may wrap, and the plan of
        // every block would not fit in memory.
        if self.list.volume_gib > MAX_VOLUME_GIB {
            return Err(Error::Malformed {
                what: what.to_string(),
                message: format!(
                    "VolumeSize {} GiB is beyond EBS's largest volume ({MAX_VOLUME_GIB} GiB)",
                    self.list.volume_gib
                ),
            });
        }
        Ok(self.list)
    }

    /// The VolumeSize (GiB) the pages so far reported.
    pub fn volume_gib(&self) -> u64 {
        self.list.volume_gib
    }
}

/// What was listed for one snapshot.
pub(super) enum Listed {
    /// ListSnapshotBlocks (no base snapshot): every block of the volume is looked at.
    Snapshot(BlockList),
    /// ListChangedBlocks against a base snapshot: only the changed blocks are
    /// looked at, and the blocks past the end of the base (`base_gib` GiB) when
    /// the volume grew: neither snapshot may hold them, and then nothing lists
    /// them, yet the target holds whatever was there. With API blocks smaller
    /// than the engine's, a changed group needs the tokens of all its blocks,
    /// changed or not: `all` (ListSnapshotBlocks) gives them (see
    /// [`Listed::needs_all`]).
    Changes {
        changed: BlockList,
        all: Option<BlockList>,
        base_gib: u64,
    },
}

impl Listed {
    /// Whether the changes listed in `changed` need ListSnapshotBlocks beside them.
    pub fn needs_all(changed: &BlockList) -> bool {
        changed.block_size != BLOCK_SIZE
    }
}

/// The listing of `snapshot`: its size, its blocks' tokens, and which engine
/// blocks to fetch or to zero.
pub(super) fn plan(snapshot: &str, listed: &Listed) -> Result<Listing, Error> {
    let (list, changed, base_gib) = match listed {
        Listed::Snapshot(all) => (all, None, 0),
        Listed::Changes {
            changed,
            all,
            base_gib,
        } => (all.as_ref().unwrap_or(changed), Some(changed), *base_gib),
    };
    let bs = list.block_size;
    let ratio = ratio(snapshot, bs)?;
    let size = volume_bytes(snapshot, list.volume_gib)?;
    let n = size.div_ceil(BLOCK_SIZE);
    let base_n = volume_bytes(snapshot, base_gib)?.div_ceil(BLOCK_SIZE);
    let mut tokens = HashMap::new();
    for (i, t) in &list.entries {
        if let Some(t) = t {
            tokens.insert(*i, t.clone());
        }
    }
    // Engine blocks worth a look, then split by whether any part is present.
    let look: BTreeSet<u64> = match changed {
        None => (0..n).collect(),
        Some(c) => c
            .entries
            .iter()
            .map(|(i, _)| i / ratio)
            .chain(base_n..n)
            .collect(),
    };
    // Engine blocks holding any API block: from the tokens, not by trying each API
    // block of each group (a BlockSize of 1 made that 2^19 lookups a block).
    let held: BTreeSet<u64> = tokens.keys().map(|j| j / ratio).collect();
    let mut candidates = Candidates::default();
    for i in look.into_iter().filter(|&i| i < n) {
        if held.contains(&i) {
            candidates.fetch.push(i);
        } else {
            candidates.zero.push(i);
        }
    }
    Ok(Listing {
        size,
        api_block: bs,
        tokens,
        candidates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Engine blocks in a 1 GiB volume.
    const N: u64 = (1 << 30) / BLOCK_SIZE;

    fn list(block_size: u64, entries: &[(u64, Option<&str>)]) -> BlockList {
        BlockList {
            block_size,
            volume_gib: 1,
            entries: entries
                .iter()
                .map(|(i, t)| (*i, t.map(str::to_string)))
                .collect(),
        }
    }

    fn read(what: &str, pages: &[&str]) -> Result<BlockList, Error> {
        let mut p = Pages::new("snap-1");
        for (k, page) in pages.iter().enumerate() {
            let next = p.add(what, page.as_bytes())?;
            assert_eq!(next.is_some(), k + 1 < pages.len(), "page {k}: {next:?}");
        }
        p.finish(what)
    }

    #[test]
    fn pages_are_read_into_one_list() {
        let got = read(
            "ListSnapshotBlocks snap-1",
            &[
                r#"{"Blocks":[{"BlockIndex":0,"BlockToken":"t0"}],"BlockSize":524288,"VolumeSize":1,"NextToken":"p2"}"#,
                r#"{"Blocks":[{"BlockIndex":7,"BlockToken":"t7"}],"NextToken":""}"#,
            ],
        )
        .unwrap();
        assert_eq!(got, list(BLOCK_SIZE, &[(0, Some("t0")), (7, Some("t7"))]));
        // ListChangedBlocks: a block absent from the snapshot has no second token.
        let got = read(
            "ListChangedBlocks snap-0 -> snap-1",
            &[
                r#"{"ChangedBlocks":[{"BlockIndex":3,"FirstBlockToken":"a","SecondBlockToken":"b"}],"BlockSize":524288,"VolumeSize":1,"NextToken":"p2"}"#,
                r#"{"ChangedBlocks":[{"BlockIndex":4,"FirstBlockToken":"c"}]}"#,
            ],
        )
        .unwrap();
        assert_eq!(got, list(BLOCK_SIZE, &[(3, Some("b")), (4, None)]));
    }

    #[test]
    fn malformed_pages_are_refused() {
        let page = r#"{"Blocks":[],"BlockSize":524288,"VolumeSize":1,"NextToken":"again"}"#;
        let mut p = Pages::new("snap-1");
        assert_eq!(
            p.add("X", page.as_bytes()).unwrap().as_deref(),
            Some("again")
        );
        let err = p.add("X", page.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("NextToken repeats"), "{err}");

        let err = read("X", &[r#"{"Blocks":[]}"#]).unwrap_err();
        assert!(
            err.to_string().contains("no BlockSize or VolumeSize"),
            "{err}"
        );
        let err = read("X", &["<html>"]).unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err}");
    }

    #[test]
    fn a_volume_size_beyond_ebs_largest_is_refused() {
        // 2^34 GiB would wrap the size in bytes; 2^20 GiB would plan 2^31 blocks.
        for gib in [1u64 << 34, 1 << 20] {
            let page = format!(r#"{{"Blocks":[],"BlockSize":524288,"VolumeSize":{gib}}}"#);
            let err = read("X", &[&page]).unwrap_err();
            assert!(err.to_string().contains("VolumeSize"), "{gib}: {err}");
        }
        assert!(read("X", &[r#"{"BlockSize":524288,"VolumeSize":65536}"#]).is_ok());
    }

    #[test]
    fn a_whole_snapshot_fetches_what_it_holds_and_zeros_the_rest() {
        let l = list(BLOCK_SIZE, &[(0, Some("t0")), (5, Some("t5"))]);
        let got = plan("snap-1", &Listed::Snapshot(l)).unwrap();
        assert_eq!(got.size, 1 << 30);
        assert_eq!(got.api_block, BLOCK_SIZE);
        assert_eq!(got.tokens.len(), 2);
        assert_eq!(got.candidates.fetch, [0, 5]);
        assert_eq!(got.candidates.zero.len() as u64, N - 2);
        assert!(!got.candidates.zero.contains(&5));
    }

    #[test]
    fn smaller_api_blocks_are_read_in_groups() {
        // 128 KiB: four API blocks an engine block.
        let l = list(
            BLOCK_SIZE / 4,
            &[(0, Some("a")), (1, Some("b")), (9, Some("c"))],
        );
        let got = plan("snap-1", &Listed::Snapshot(l)).unwrap();
        assert_eq!(got.api_block, BLOCK_SIZE / 4);
        assert_eq!(got.candidates.fetch, [0, 2]);
        assert_eq!(got.candidates.zero.len() as u64, N - 2);
    }

    #[test]
    fn changes_limit_the_look_to_the_changed_blocks() {
        let changed = list(
            BLOCK_SIZE,
            &[(3, Some("t3")), (7, None), (N + 1, Some("beyond"))],
        );
        let got = plan(
            "snap-1",
            &Listed::Changes {
                changed: changed.clone(),
                all: None,
                base_gib: 1,
            },
        )
        .unwrap();
        assert!(!Listed::needs_all(&changed));
        assert_eq!(got.candidates.fetch, [3]);
        assert_eq!(got.candidates.zero, [7]);
    }

    #[test]
    fn smaller_changed_blocks_take_their_groups_tokens_from_the_whole_listing() {
        let changed = list(BLOCK_SIZE / 4, &[(9, None), (13, None)]);
        let all = list(BLOCK_SIZE / 4, &[(0, Some("a")), (8, Some("b"))]);
        assert!(Listed::needs_all(&changed));
        let got = plan(
            "snap-1",
            &Listed::Changes {
                changed,
                all: Some(all),
                base_gib: 1,
            },
        )
        .unwrap();
        // Group 2 (blocks 8-11) still holds block 8; group 3 holds nothing.
        assert_eq!(got.candidates.fetch, [2]);
        assert_eq!(got.candidates.zero, [3]);
        assert_eq!(got.tokens.get(&8).map(String::as_str), Some("b"));
    }

    #[test]
    fn a_volume_that_grew_since_the_base_zeros_its_unlisted_extension() {
        // 1 GiB base, 2 GiB now: nothing lists the extension's empty blocks.
        let mut changed = list(BLOCK_SIZE, &[(3, Some("t3")), (N + 5, Some("t"))]);
        changed.volume_gib = 2;
        let got = plan(
            "snap-1",
            &Listed::Changes {
                changed,
                all: None,
                base_gib: 1,
            },
        )
        .unwrap();
        assert_eq!(got.size, 2 << 30);
        assert_eq!(got.candidates.fetch, [3, N + 5]);
        let zero = &got.candidates.zero;
        assert_eq!(zero.len() as u64, N - 1, "the extension but block N + 5");
        assert_eq!((zero[0], zero[zero.len() - 1]), (N, 2 * N - 1));
    }

    #[test]
    fn a_volume_size_beyond_ebs_is_refused_not_wrapped() {
        for gib in [MAX_VOLUME_GIB + 1, (1 << 34) + 1, u64::MAX] {
            let mut l = list(BLOCK_SIZE, &[]);
            l.volume_gib = gib;
            let err = plan("snap-1", &Listed::Snapshot(l)).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("EBS snapshot snap-1 reports VolumeSize {gib} GiB")),
                "{err}"
            );
            let page = format!(r#"{{"Blocks":[],"BlockSize":524288,"VolumeSize":{gib}}}"#);
            let err = read("X", &[page.as_str()]).unwrap_err();
            assert!(matches!(err, Error::VolumeSize { .. }), "{err}");
        }
        assert!(plan("snap-1", &Listed::Snapshot(list(BLOCK_SIZE, &[]))).is_ok());
    }

    #[test]
    fn paging_ends_within_the_volumes_block_count() {
        // 1 GiB of 512 KiB blocks: 2048 blocks, so at most 2048 pages.
        let mut p = Pages::new("snap-1");
        let mut pages = 0;
        let err = loop {
            pages += 1;
            assert!(pages <= 5000, "still paging");
            let page = format!(
                r#"{{"Blocks":[],"BlockSize":524288,"VolumeSize":1,"NextToken":"p{pages}"}}"#
            );
            if let Err(e) = p.add("X", page.as_bytes()) {
                break e;
            }
        };
        assert_eq!(pages, 2048);
        assert!(
            err.to_string().contains("still paging after 2048 pages"),
            "{err}"
        );
        // More blocks than the volume holds.
        let blocks: Vec<String> = (0..2049)
            .map(|i| format!(r#"{{"BlockIndex":{i},"BlockToken":"t"}}"#))
            .collect();
        let page = format!(
            r#"{{"Blocks":[{}],"BlockSize":524288,"VolumeSize":1}}"#,
            blocks.join(",")
        );
        let err = read("X", &[page.as_str()]).unwrap_err();
        assert!(err.to_string().contains("more blocks listed"), "{err}");
    }

    #[test]
    fn block_sizes_that_do_not_divide_512_kib_are_refused() {
        for bs in [0, 3000, 2 * BLOCK_SIZE] {
            let err = plan("snap-1", &Listed::Snapshot(list(bs, &[]))).unwrap_err();
            assert!(
                matches!(err, Error::BlockSize { size, .. } if size == bs),
                "{bs}: {err}"
            );
        }
    }
}
