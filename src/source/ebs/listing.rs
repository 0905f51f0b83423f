//! What the listing calls amount to, without HTTP: the volume's [`Shape`] from
//! the first page, the pages of ListSnapshotBlocks and ListChangedBlocks over one
//! window's range read into block lists ([`Pages`]), and the lists turned into
//! that window's tokens and candidates ([`plan`]). Nothing outside the window is
//! kept, so memory follows the window, not the volume.
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
use std::ops::Range;

/// The volume as the first page of its listing tells: fixed for the pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    /// Volume size in bytes.
    pub size: u64,
    /// The API's block size.
    pub api_block: u64,
    /// API blocks per engine block.
    pub ratio: u64,
    /// Engine blocks of the base snapshot's volume (with a base): the blocks
    /// past them are all looked at.
    pub base_blocks: Option<u64>,
}

impl Shape {
    /// The shape of `snapshot`, whose listing reported BlockSize `block_size` and
    /// VolumeSize `gib`; `base_gib`: the base's VolumeSize, with a base.
    pub fn new(
        snapshot: &str,
        block_size: u64,
        gib: u64,
        base_gib: Option<u64>,
    ) -> Result<Self, Error> {
        let engine_blocks = |gib| Ok::<_, Error>(volume_bytes(snapshot, gib)?.div_ceil(BLOCK_SIZE));
        Ok(Shape {
            size: volume_bytes(snapshot, gib)?,
            api_block: block_size,
            ratio: ratio(snapshot, block_size)?,
            base_blocks: base_gib.map(engine_blocks).transpose()?,
        })
    }

    /// Engine blocks in the volume.
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(BLOCK_SIZE)
    }

    /// The API blocks of engine blocks `blocks`.
    pub fn api_range(&self, blocks: &Range<u64>) -> Range<u64> {
        blocks.start * self.ratio..blocks.end * self.ratio
    }
}

/// What the listing of one window found.
#[derive(Debug, Default)]
pub(super) struct WindowListing {
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
    /// The first block listed past the range (`u64::MAX`: the listing ended
    /// first): nothing lies between the range's end and it.
    pub next: u64,
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

/// The pages of one listing call of `snapshot` over API blocks `range`, read one
/// after the other. Blocks before the range (from a server that ignores
/// StartingBlockIndex) are skipped; the first block past it ends the listing.
pub(super) struct Pages {
    snapshot: String,
    range: Range<u64>,
    list: BlockList,
    seen_tokens: BTreeSet<String>,
    pages: u64,
    /// Blocks listed, in the range or not.
    listed: u64,
    /// API blocks in the volume, from the first page: no call lists more
    /// blocks, nor needs more pages (a server handing out new NextTokens
    /// forever would otherwise keep the client paging forever).
    blocks: u64,
}

impl Pages {
    pub fn new(snapshot: &str, range: Range<u64>) -> Self {
        Pages {
            snapshot: snapshot.to_string(),
            range,
            list: BlockList {
                next: u64::MAX,
                ..BlockList::default()
            },
            seen_tokens: BTreeSet::new(),
            pages: 0,
            listed: 0,
            blocks: 0,
        }
    }

    /// Adds a page (the JSON body of an answer to `what`); gives the NextToken
    /// to ask the next page with, `None` after the last page of the range.
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
        let entries: Vec<(u64, Option<String>)> = page
            .blocks
            .into_iter()
            .map(|b| (b.block_index, b.block_token))
            .chain(
                page.changed_blocks
                    .into_iter()
                    .map(|b| (b.block_index, b.second_block_token)),
            )
            .collect();
        self.listed += entries.len() as u64;
        if self.listed > self.blocks {
            return Err(malformed(format!(
                "more blocks listed than the volume's {}",
                self.blocks
            )));
        }
        let past = entries
            .iter()
            .map(|(i, _)| *i)
            .filter(|i| *i >= self.range.end)
            .min();
        if let Some(i) = past {
            out.next = out.next.min(i);
        }
        let past = past.is_some();
        let range = &self.range;
        out.entries
            .extend(entries.into_iter().filter(|(i, _)| range.contains(i)));
        let next = page.next_token.filter(|t| !t.is_empty() && !past);
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

    /// Where to list on from without a NextToken (after one expired): past the
    /// last block listed in the range.
    pub fn resume_at(&self) -> u64 {
        self.list
            .entries
            .last()
            .map_or(self.range.start, |(i, _)| i + 1)
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
}

/// What was listed over one window.
pub(super) enum Listed {
    /// ListSnapshotBlocks (no base snapshot): every block of the window is looked at.
    Snapshot(BlockList),
    /// ListChangedBlocks against a base snapshot: only the changed blocks are
    /// looked at, and the blocks past the end of the base ([`Shape::base_blocks`])
    /// when the volume grew: neither snapshot may hold them, and then nothing
    /// lists them, yet the target holds whatever was there. With API blocks
    /// smaller than the engine's, a changed group needs the tokens of all its
    /// blocks, changed or not: `all` (ListSnapshotBlocks) gives them (see
    /// [`Listed::needs_all`]).
    Changes {
        changed: BlockList,
        all: Option<BlockList>,
    },
}

impl Listed {
    /// Whether changes listed in blocks of `shape` need ListSnapshotBlocks beside them.
    pub fn needs_all(shape: &Shape) -> bool {
        shape.api_block != BLOCK_SIZE
    }
}

/// Window `blocks` (engine blocks) of `snapshot`: its blocks' tokens, and which
/// of its engine blocks to fetch or to zero. A list whose BlockSize or
/// VolumeSize changed since the first page is refused.
pub(super) fn plan(
    snapshot: &str,
    shape: &Shape,
    blocks: Range<u64>,
    listed: &Listed,
) -> Result<WindowListing, Error> {
    let (list, changed) = match listed {
        Listed::Snapshot(all) => (all, None),
        Listed::Changes { changed, all } => (all.as_ref().unwrap_or(changed), Some(changed)),
    };
    for l in [Some(list), changed].into_iter().flatten() {
        if l.block_size != shape.api_block {
            return Err(Error::Malformed {
                what: format!("the listing of {snapshot}"),
                message: format!(
                    "BlockSize {} after {} on the first page",
                    l.block_size, shape.api_block
                ),
            });
        }
    }
    let ratio = shape.ratio;
    let blocks = blocks.start..blocks.end.min(shape.blocks());
    let api = shape.api_range(&blocks);
    let tokens: HashMap<u64, String> = list
        .entries
        .iter()
        .filter(|(i, _)| api.contains(i))
        .filter_map(|(i, t)| Some((*i, t.clone()?)))
        .collect();
    // Engine blocks worth a look, then split by whether any part is present.
    let look: BTreeSet<u64> = match changed {
        None => blocks.clone().collect(),
        Some(c) => {
            let grown = shape.base_blocks.unwrap_or(0).max(blocks.start)..blocks.end;
            c.entries
                .iter()
                .map(|(i, _)| i / ratio)
                .chain(grown)
                .collect()
        }
    };
    // Engine blocks holding any API block: from the tokens, not by trying each API
    // block of each group (a BlockSize of 1 made that 2^19 lookups a block).
    let held: BTreeSet<u64> = tokens.keys().map(|j| j / ratio).collect();
    let mut candidates = Candidates::default();
    for i in look.into_iter().filter(|i| blocks.contains(i)) {
        if held.contains(&i) {
            candidates.fetch.push(i);
        } else {
            candidates.zero.push(i);
        }
    }
    Ok(WindowListing { tokens, candidates })
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
            next: u64::MAX,
        }
    }

    fn shape(block_size: u64, gib: u64, base_gib: Option<u64>) -> Shape {
        Shape::new("snap-1", block_size, gib, base_gib).unwrap()
    }

    fn read_range(what: &str, range: Range<u64>, pages: &[&str]) -> Result<BlockList, Error> {
        let mut p = Pages::new("snap-1", range);
        for (k, page) in pages.iter().enumerate() {
            let next = p.add(what, page.as_bytes())?;
            assert_eq!(next.is_some(), k + 1 < pages.len(), "page {k}: {next:?}");
        }
        p.finish(what)
    }

    fn read(what: &str, pages: &[&str]) -> Result<BlockList, Error> {
        read_range(what, 0..u64::MAX, pages)
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
    fn a_windows_listing_keeps_its_range_and_ends_past_it() {
        // Block 2 is before the range (a server ignoring StartingBlockIndex);
        // block 9 is past it: the listing ends there, though a NextToken came.
        let mut p = Pages::new("snap-1", 4..8);
        let page = r#"{"Blocks":[{"BlockIndex":2,"BlockToken":"t2"},{"BlockIndex":5,"BlockToken":"t5"}],"BlockSize":524288,"VolumeSize":1,"NextToken":"p2"}"#;
        assert_eq!(p.add("X", page.as_bytes()).unwrap().as_deref(), Some("p2"));
        assert_eq!(p.resume_at(), 6, "past the last block listed in the range");
        let page = r#"{"Blocks":[{"BlockIndex":7,"BlockToken":"t7"},{"BlockIndex":9,"BlockToken":"t9"}],"NextToken":"p3"}"#;
        assert_eq!(p.add("X", page.as_bytes()).unwrap(), None);
        let got = p.finish("X").unwrap();
        let mut want = list(BLOCK_SIZE, &[(5, Some("t5")), (7, Some("t7"))]);
        want.next = 9;
        assert_eq!(got, want);
        assert_eq!(Pages::new("snap-1", 4..8).resume_at(), 4);
    }

    #[test]
    fn malformed_pages_are_refused() {
        let page = r#"{"Blocks":[],"BlockSize":524288,"VolumeSize":1,"NextToken":"again"}"#;
        let mut p = Pages::new("snap-1", 0..N);
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
        // A later listing with another BlockSize.
        let l = list(BLOCK_SIZE / 2, &[]);
        let err = plan(
            "snap-1",
            &shape(BLOCK_SIZE, 1, None),
            0..N,
            &Listed::Snapshot(l),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("BlockSize 262144 after 524288"),
            "{err}"
        );
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
        let s = shape(BLOCK_SIZE, 1, None);
        assert_eq!((s.size, s.api_block, s.blocks()), (1 << 30, BLOCK_SIZE, N));
        let got = plan("snap-1", &s, 0..N, &Listed::Snapshot(l.clone())).unwrap();
        assert_eq!(got.tokens.len(), 2);
        assert_eq!(got.candidates.fetch, [0, 5]);
        assert_eq!(got.candidates.zero.len() as u64, N - 2);
        assert!(!got.candidates.zero.contains(&5));
        // A window: its blocks only, and its tokens only.
        let got = plan("snap-1", &s, 4..8, &Listed::Snapshot(l)).unwrap();
        assert_eq!(got.candidates.fetch, [5]);
        assert_eq!(got.candidates.zero, [4, 6, 7]);
        assert_eq!(got.tokens.keys().collect::<Vec<_>>(), [&5]);
    }

    #[test]
    fn smaller_api_blocks_are_read_in_groups() {
        // 128 KiB: four API blocks an engine block.
        let l = list(
            BLOCK_SIZE / 4,
            &[(0, Some("a")), (1, Some("b")), (9, Some("c"))],
        );
        let s = shape(BLOCK_SIZE / 4, 1, None);
        assert_eq!((s.ratio, s.api_range(&(2..3))), (4, 8..12));
        let got = plan("snap-1", &s, 0..N, &Listed::Snapshot(l)).unwrap();
        assert_eq!(got.candidates.fetch, [0, 2]);
        assert_eq!(got.candidates.zero.len() as u64, N - 2);
    }

    #[test]
    fn changes_limit_the_look_to_the_changed_blocks() {
        let changed = list(
            BLOCK_SIZE,
            &[(3, Some("t3")), (7, None), (N + 1, Some("beyond"))],
        );
        let s = shape(BLOCK_SIZE, 1, Some(1));
        assert!(!Listed::needs_all(&s));
        let listed = Listed::Changes { changed, all: None };
        let got = plan("snap-1", &s, 0..N, &listed).unwrap();
        assert_eq!(got.candidates.fetch, [3]);
        assert_eq!(got.candidates.zero, [7]);
        let got = plan("snap-1", &s, 4..N, &listed).unwrap();
        assert_eq!(
            got.candidates,
            Candidates {
                fetch: vec![],
                zero: vec![7]
            }
        );
    }

    #[test]
    fn smaller_changed_blocks_take_their_groups_tokens_from_the_whole_listing() {
        let changed = list(BLOCK_SIZE / 4, &[(9, None), (13, None)]);
        let all = list(BLOCK_SIZE / 4, &[(0, Some("a")), (8, Some("b"))]);
        let s = shape(BLOCK_SIZE / 4, 1, Some(1));
        assert!(Listed::needs_all(&s));
        let listed = Listed::Changes {
            changed,
            all: Some(all),
        };
        let got = plan("snap-1", &s, 0..N, &listed).unwrap();
        // Group 2 (blocks 8-11) still holds block 8; group 3 holds nothing.
        assert_eq!(got.candidates.fetch, [2]);
        assert_eq!(got.candidates.zero, [3]);
        assert_eq!(got.tokens.get(&8).map(String::as_str), Some("b"));
    }

    #[test]
    fn a_volume_that_grew_since_the_base_zeros_its_unlisted_extension() {
        // 1 GiB base, 2 GiB now: nothing lists the extension's empty blocks.
        let changed = list(BLOCK_SIZE, &[(3, Some("t3")), (N + 5, Some("t"))]);
        let s = shape(BLOCK_SIZE, 2, Some(1));
        assert_eq!(s.size, 2 << 30);
        let listed = Listed::Changes { changed, all: None };
        let got = plan("snap-1", &s, 0..2 * N, &listed).unwrap();
        assert_eq!(got.candidates.fetch, [3, N + 5]);
        let zero = &got.candidates.zero;
        assert_eq!(zero.len() as u64, N - 1, "the extension but block N + 5");
        assert_eq!((zero[0], zero[zero.len() - 1]), (N, 2 * N - 1));
        // Window by window: a window across the base's end looks at its extension part.
        let got = plan("snap-1", &s, N - 2..N + 2, &listed).unwrap();
        assert_eq!(got.candidates.zero, [N, N + 1]);
    }

    #[test]
    fn a_volume_size_beyond_ebs_is_refused_not_wrapped() {
        for gib in [MAX_VOLUME_GIB + 1, (1 << 34) + 1, u64::MAX] {
            let err = Shape::new("snap-1", BLOCK_SIZE, gib, None).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("EBS snapshot snap-1 reports VolumeSize {gib} GiB")),
                "{err}"
            );
            let err = Shape::new("snap-1", BLOCK_SIZE, 1, Some(gib)).unwrap_err();
            assert!(matches!(err, Error::VolumeSize { .. }), "{err}");
            let page = format!(r#"{{"Blocks":[],"BlockSize":524288,"VolumeSize":{gib}}}"#);
            let err = read("X", &[page.as_str()]).unwrap_err();
            assert!(matches!(err, Error::VolumeSize { .. }), "{err}");
        }
        assert!(Shape::new("snap-1", BLOCK_SIZE, MAX_VOLUME_GIB, None).is_ok());
    }

    #[test]
    fn paging_ends_within_the_volumes_block_count() {
        // 1 GiB of 512 KiB blocks: 2048 blocks, so at most 2048 pages.
        let mut p = Pages::new("snap-1", 0..N);
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
        // More blocks than the volume holds, in the window or not.
        let blocks: Vec<String> = (0..2049)
            .map(|i| format!(r#"{{"BlockIndex":{i},"BlockToken":"t"}}"#))
            .collect();
        let page = format!(
            r#"{{"Blocks":[{}],"BlockSize":524288,"VolumeSize":1}}"#,
            blocks.join(",")
        );
        let err = read_range("X", 2040..3000, &[page.as_str()]).unwrap_err();
        assert!(err.to_string().contains("more blocks listed"), "{err}");
    }

    #[test]
    fn block_sizes_that_do_not_divide_512_kib_are_refused() {
        for bs in [0, 3000, 2 * BLOCK_SIZE] {
            let err = Shape::new("snap-1", bs, 1, None).unwrap_err();
            assert!(
                matches!(err, Error::BlockSize { size, .. } if size == bs),
                "{bs}: {err}"
            );
        }
    }
}
