//! `failback pull --source ebs://…` against a small test-only EBS server on
//! 127.0.0.1: what moto cannot do (paging, throttling, 5xx, checksum mismatches, a
//! BlockSize other than 512 KiB, and the error answers of the real service).

mod common;
#[path = "ebs_support/fake.rs"]
mod ebs_server;

use common::{assert_pulled, disk_image, disk_image_with, text};
use ebs_server::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

/// The fake serving on 127.0.0.1, and a temporary directory for the disk to pull onto.
struct Served {
    fake: Arc<Fake>,
    endpoint: String,
    dir: tempfile::TempDir,
}

impl Served {
    /// Serves `snaps` of `bs`-byte blocks, misbehaving as `script` says.
    fn new(bs: u64, snaps: Vec<(&str, BTreeMap<u64, Vec<u8>>)>, script: Script) -> Served {
        Served::fake(fake(bs, snaps, script))
    }

    /// Serves `fake` as it is.
    fn fake(fake: Arc<Fake>) -> Served {
        let endpoint = serve(fake.clone());
        let dir = tempfile::tempdir().unwrap();
        Served {
            fake,
            endpoint,
            dir,
        }
    }

    /// The directory for targets.
    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A sparse, empty 1 GiB `disk.img` in the directory.
    fn empty_disk(&self) -> PathBuf {
        disk_image(self.path(), "disk.img", 1 << 30)
    }

    /// `failback pull --yes` of `ebs://{source}` onto `target`, mapping `snap`, plus `more`.
    fn pull(&self, source: &str, snap: &str, target: &Path, more: &[&str]) -> Output {
        pull_with(
            &self.endpoint,
            &format!("ebs://{source}"),
            target,
            snap,
            more,
        )
    }

    /// Asserts that the pull succeeded and left `target` holding snapshot `snap`.
    fn assert_holds(&self, out: &Output, target: &Path, snap: &str) {
        assert_ok(out);
        assert_pulled(out, target, &image(&self.fake, snap), "target differs", &[]);
    }
}

#[test]
fn pages_throttling_5xx_and_corrupt_blocks_converge_byte_for_byte() {
    const BS: u64 = 512 * 1024;
    let s = Served::new(
        BS,
        vec![("snap-a1", blocks(BS, (0..40).map(|i| i * 47 + 3), 3))],
        Script {
            page: 7,
            throttle: 5,
            fail5xx: 3,
            corrupt_once: vec![3, 50, 473],
            ..Script::default()
        },
    );
    // Garbage where the snapshot has no block: must become zeros.
    let garbage = [0xee; BS as usize];
    let target = disk_image_with(s.path(), "disk.img", 1 << 30, 10 * BS, &garbage);
    let out = s.pull("snap-a1", "snap-a1", &target, &[]);
    s.assert_holds(&out, &target, "snap-a1");
    // 40 blocks + 3 corrupt resends + 8 refused answers.
    assert_eq!(s.fake.gets.load(SeqCst), 40 + 3 + 5 + 3);
    assert_eq!(
        s.fake.authorized.load(SeqCst),
        s.fake.requests.load(SeqCst),
        "unsigned requests"
    );
    let text = text(&out);
    assert!(!text.contains(SECRET) && !text.contains("session-token-secret"));
    // Again: zero blocks are left alone, the 40 blocks are fetched (EBS has no
    // hashes up front) and none is rewritten: the file's mtime does not move.
    let past = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&target)
        .unwrap();
    f.set_modified(past).unwrap();
    drop(f);
    let out = s.pull("snap-a1", "snap-a1", &target, &[]);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(r#""zero_blocks":0"#), "{stdout}");
    assert_eq!(
        std::fs::metadata(&target).unwrap().modified().unwrap(),
        past,
        "rewritten"
    );
}

#[test]
fn a_base_snapshot_limits_the_pull_to_changed_blocks_of_a_smaller_block_size() {
    // The API's BlockSize is trusted: 64 KiB blocks, read as groups of 8.
    const BS: u64 = 64 * 1024;
    let old = blocks(BS, (0..200).map(|i| i * 61), 5);
    let mut new = old.clone();
    let changed = blocks(BS, [61 * 10, 61 * 11, 7].into_iter(), 9);
    new.extend(changed);
    new.remove(&(61 * 20)); // deleted: zeros in the new snapshot
    let s = Served::new(
        BS,
        vec![("snap-old", old), ("snap-new", new)],
        Script::paged(2),
    );
    let target = s.path().join("disk.img");
    let mut initial = image(&s.fake, "snap-old");
    // Outside the changed blocks the target is trusted to match the base: this
    // stray byte must survive.
    let stray = 900 * BS as usize + 5;
    initial[stray] = 0x42;
    std::fs::write(&target, &initial).unwrap();
    let out = s.pull("snap-new?base=snap-old", "snap-new", &target, &[]);
    assert_ok(&out);
    let mut expected = image(&s.fake, "snap-new");
    expected[stray] = 0x42;
    // Changed groups: 610/8=76, 671/8=83, 7/8=0 fetched; 1220/8=152 zeroed.
    assert_pulled(
        &out,
        &target,
        &expected,
        "target differs",
        &[r#""differing":4"#, r#""zero_blocks":1"#],
    );
}

#[test]
fn refusals_are_one_clear_line_each() {
    let cases: [(u16, &str, &str, &str); 5] = [
        (
            403,
            "AccessDeniedException",
            "User is not authorized",
            "access denied to EBS snapshot snap-x1",
        ),
        (
            404,
            "ResourceNotFoundException",
            "The snapshot does not exist",
            "EBS snapshot snap-x1 was not found in eu-west-1",
        ),
        (
            403,
            "ExpiredTokenException",
            "The security token included in the request is expired",
            "the AWS credentials have expired",
        ),
        (
            400,
            "ValidationException",
            "The snapshot is not completed",
            "EBS snapshot snap-x1 is not completed yet",
        ),
        (
            403,
            "UnrecognizedClientException",
            "The security token is invalid",
            "AWS rejected the credentials",
        ),
    ];
    for (status, kind, message, expected) in cases {
        let s = Served::new(
            512 * 1024,
            vec![("snap-x1", BTreeMap::new())],
            Script {
                page: 10,
                error: Some((status, kind, message)),
                ..Script::default()
            },
        );
        let target = s.empty_disk();
        let started = std::time::Instant::now();
        let out = s.pull("snap-x1", "snap-x1", &target, &[]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{kind}: {stderr}");
        assert!(lines[0].contains(expected), "{kind}: {stderr}");
        assert!(!stderr.contains(SECRET) && !stderr.contains("session-token-secret"));
        // Not retried.
        assert_eq!(s.fake.requests.load(SeqCst), 1, "{kind}");
        assert!(started.elapsed().as_secs() < 5);
    }
}

#[test]
fn a_volume_that_grew_since_the_base_gets_its_extension_zeroed() {
    const BS: u64 = 512 * 1024;
    const N: u64 = (1 << 30) / BS;
    let old = blocks(BS, (0..20).map(|i| i * 50), 5);
    let mut new = old.clone();
    new.extend(blocks(BS, [7, N + 10, N + 500].into_iter(), 9));
    let mut fake = fake(
        BS,
        vec![("snap-old", old), ("snap-new", new.clone())],
        Script::paged(100),
    );
    Arc::get_mut(&mut fake)
        .unwrap()
        .gib_of
        .insert("snap-new".into(), 2);
    let s = Served::fake(fake);
    // The base's gigabyte, then what the larger disk held past it.
    let target = disk_image_with(
        s.path(),
        "disk.img",
        2 << 30,
        0,
        &image(&s.fake, "snap-old"),
    );
    let garbage = vec![0xee; BS as usize];
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&target)
        .unwrap();
    for i in [N, N + 10, N + 100, 2 * N - 1] {
        std::os::unix::fs::FileExt::write_all_at(&f, &garbage, i * BS).unwrap();
    }
    drop(f);
    let out = s.pull("snap-new?base=snap-old", "snap-new", &target, &[]);
    assert_ok(&out);
    // Block by block: the new snapshot, zeros where it holds nothing.
    let f = std::fs::File::open(&target).unwrap();
    let mut buf = vec![0u8; BS as usize];
    let zeros = vec![0u8; BS as usize];
    for i in 0..2 * N {
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, i * BS).unwrap();
        let want = new.get(&i).unwrap_or(&zeros);
        assert!(buf == *want, "block {i} differs from the new snapshot");
    }
}

#[test]
fn listing_pages_that_never_end_are_refused_within_the_block_count() {
    let s = Served::new(
        512 * 1024,
        vec![("snap-e1", blocks(512 * 1024, [1].into_iter(), 3))],
        Script {
            page: 10,
            endless: true,
            ..Script::default()
        },
    );
    let target = s.empty_disk();
    let out = s.pull("snap-e1", "snap-e1", &target, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("still paging after 2048 pages, for a volume of 2048 blocks"),
        "{stderr}"
    );
    // The first page (the volume's size), the head's listing (for its
    // identity), then at most 2048 pages.
    let requests = s.fake.requests.load(SeqCst);
    assert!(requests <= 2 + 2048, "{requests} requests");
}

#[test]
fn a_plain_http_endpoint_is_warned_about_in_one_line() {
    let s = Served::new(
        512 * 1024,
        vec![("snap-h1", blocks(512 * 1024, [0].into_iter(), 3))],
        Script::paged(10),
    );
    let target = s.empty_disk();
    let out = s.pull("snap-h1", "snap-h1", &target, &[]);
    assert_ok(&out);
    let warnings: Vec<_> = common::events(&out)
        .into_iter()
        .filter(|e| e["event"] == "notice")
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap_or("")
                .contains("plain http://")
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{}", text(&out));
    assert_eq!(
        warnings[0]["message"],
        format!(
            "the EBS endpoint {} is plain http://: block data and checksums can be forged in transit; use https://",
            s.endpoint
        )
    );
}

#[test]
fn a_volume_of_many_windows_is_listed_window_by_window_holding_few_tokens() {
    const BS: u64 = 512 * 1024;
    // 512 blocks over 1 GiB (every 4th), pulled in windows of 16 blocks (4 tokens
    // each), listed in pages of 10: 128 windows.
    let s = Served::new(
        BS,
        vec![("snap-w1", blocks(BS, (0..512).map(|i| i * 4 + 1), 5))],
        Script::paged(10),
    );
    let target = s.empty_disk();
    let out = s.pull("snap-w1", "snap-w1", &target, &["--window-blocks", "16"]);
    s.assert_holds(&out, &target, "snap-w1");
    assert_eq!(s.fake.gets.load(SeqCst), 512, "each block fetched once");
    // Tokens handed out and not yet used: at most the few windows held and a
    // page past the last one, never the volume's 512.
    let most = s.fake.most_outstanding.load(SeqCst);
    assert!(most <= 3 * 4 + 10, "{most} tokens outstanding at once");
}

#[test]
fn expired_tokens_are_listed_again_and_the_pull_completes() {
    const BS: u64 = 512 * 1024;
    // The BlockTokens expire after 20 blocks; the first NextToken is refused too.
    let s = Served::new(
        BS,
        vec![("snap-x1", blocks(BS, (0..60).map(|i| i * 31 + 2), 7))],
        Script {
            page: 25,
            expire_after_gets: Some(20),
            expire_a_page_token: true,
            ..Script::default()
        },
    );
    let target = s.empty_disk();
    let out = s.pull("snap-x1", "snap-x1", &target, &[]);
    s.assert_holds(&out, &target, "snap-x1");
    let expired = s.fake.expired.load(SeqCst);
    assert!(expired >= 2, "no BlockToken expired");
    // Each refused block lists its batch again and is fetched once more, not
    // given up on (the page token's refusal is no GetSnapshotBlock).
    assert_eq!(s.fake.gets.load(SeqCst), 60 + expired - 1);
}

#[test]
fn a_reviewed_plan_lists_each_window_at_most_twice() {
    const BS: u64 = 512 * 1024;
    // Windows of 64 blocks: the first 4 are kept with the reviewed plan, their
    // tokens let go by then (a few windows' only are held); their 64 blocks each
    // come in batches of 16.
    let s = Served::new(
        BS,
        vec![(
            "snap-r1",
            blocks(BS, (0..300).chain((0..60).map(|i| 400 + i * 27)), 9),
        )],
        Script::paged(40),
    );
    let target = s.empty_disk();
    let out = pull_reviewed(
        &s.endpoint,
        "ebs://snap-r1",
        &target,
        "snap-r1",
        &["--window-blocks", "64"],
    );
    s.assert_holds(&out, &target, "snap-r1");
    // Each block once, and block 0 once more for the volume's identity.
    assert_eq!(s.fake.gets.load(SeqCst), 360 + 1);
    // The volume's size and the head (2), then each of the 32 windows listed
    // when planned and at most once more when pulled: not once a batch.
    let lists = s.fake.lists.load(SeqCst);
    assert!(lists <= 2 + 2 * 32, "{lists} listing calls");
}

#[test]
fn a_sparse_volumes_empty_windows_are_not_listed_yet_zeroed() {
    const BS: u64 = 512 * 1024;
    // 3 blocks in 1 GiB, windows of 16 blocks: 128 windows, 2 of them hold blocks.
    let s = Served::new(
        BS,
        vec![("snap-s1", blocks(BS, [5, 6, 1500].into_iter(), 11))],
        Script::paged(10),
    );
    // Stale data in an empty window: it must become zeros all the same.
    let garbage = [0xee; BS as usize];
    let target = disk_image_with(s.path(), "disk.img", 1 << 30, 700 * BS, &garbage);
    let out = s.pull("snap-s1", "snap-s1", &target, &["--window-blocks", "16"]);
    s.assert_holds(&out, &target, "snap-s1");
    // The volume's size, the head, the windows of blocks 5-6 and 1500: each
    // listing says where the next block is, and the windows before it are empty.
    let lists = s.fake.lists.load(SeqCst);
    assert!(lists <= 4, "{lists} listing calls");
}
