//! The fuzz targets' bodies: one function per parser of bytes from outside, run
//! coverage-guided by `cargo fuzz` (`fuzz_targets/NAME.rs`, nightly) and over the seed
//! corpus and generated inputs by `cargo test --test fuzz_corpus` (stable), which
//! includes this file. A parser may refuse any input; a panic here is a bug.

use base64::Engine as _;
use failback::block::BLOCK_SIZE;
use failback::cmdline::Cmdline;
use failback::config::Preset;
use failback::net::{clock, dhcp, renew};
use failback::source::{ebs, wire};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

/// A target's body: runs the parser over one input, panics on a bug.
pub type Body = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/NAME.rs` and `fuzz/corpus/NAME/` name it.
pub const TARGETS: &[(&str, Body)] = &[
    ("wire_frames", wire_frames),
    ("hashes_reply", hashes_reply),
    ("agent_request", agent_request),
    ("ebs_pages", ebs_pages),
    ("ebs_answer", ebs_answer),
    ("dhcp_reply", dhcp_reply),
    ("sntp_reply", sntp_reply),
    ("disk_identity", disk_identity),
    ("cmdline", cmdline),
    ("preset", preset),
];

/// The agent's block stream, frame after frame, as the client reads it.
pub fn wire_frames(data: &[u8]) {
    let mut stream = data;
    let (mut scratch, mut block) = (Vec::new(), Vec::new());
    while let Ok(Some(frame)) = wire::read_frame(&mut stream, &mut scratch, &mut block) {
        assert!(
            block.len() as u64 <= BLOCK_SIZE + 1024,
            "{} bytes",
            block.len()
        );
        assert!(frame.wire_bytes >= wire::HEADER as u64);
    }
}

/// The agent's answer to a hashes request: the block count asked for (2 bytes, LE),
/// then the body.
pub fn hashes_reply(data: &[u8]) {
    let (count, body) = split_u16(data);
    if let Ok(hashes) = wire::hashes(body, u64::from(count)) {
        assert_eq!(hashes.len(), usize::from(count));
        assert_eq!(hashes.concat(), body);
    }
}

/// What a client sends the agent, read as a hashes query and as the body of a
/// blocks request and of a progress event, for volumes of several sizes.
pub fn agent_request(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    for blocks in [0, 1, 2048, u64::MAX] {
        if let Ok((start, count)) = failback::agent::hashes_range(&query, blocks) {
            assert!(count <= 4096 && start + count <= blocks);
        }
        if let Ok(indexes) = failback::agent::block_indexes(data, blocks) {
            assert!(indexes.len() <= 1024 && indexes.iter().all(|&i| i < blocks));
        }
    }
    if let Some((_, line)) = failback::agent::posted_event(data) {
        assert!(!line.is_empty());
    }
}

/// The pages of EBS's ListSnapshotBlocks or ListChangedBlocks (first byte odd),
/// separated by 0xFF bytes (never in UTF-8 JSON), and the plan made from them.
pub fn ebs_pages(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let pages: Vec<&[u8]> = rest.split(|&b| b == 0xFF).collect();
    // Up to 4 GiB (8192 engine blocks), in a window of 2048 blocks the other bits of
    // the first byte place: a plan small enough for many runs a second.
    let start = u64::from(mode >> 1) * 64;
    let window = start..start + 2048;
    if let Ok(Some(plan)) = ebs::fuzzing::listing(mode & 1 == 1, &pages, window.clone(), 4) {
        let mut all: Vec<u64> = plan.fetch.iter().chain(&plan.zero).copied().collect();
        assert!(plan.fetch.is_sorted() && plan.zero.is_sorted());
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            all.len(),
            plan.fetch.len() + plan.zero.len(),
            "a block in both"
        );
        assert!(
            all.iter()
                .all(|&i| i < (4 << 30) / BLOCK_SIZE && window.contains(&i))
        );
    }
}

/// EBS's answers beside the listing: a flags byte, then lines. As an error answer:
/// the HTTP status (first line), `x-amzn-ErrorType` (second, if flag 1), the JSON
/// body (the rest). As a GetSnapshotBlock answer: `x-amz-Data-Length`,
/// `x-amz-Checksum` (the data's own if flag 2), `x-amz-Checksum-Algorithm`, the data.
pub fn ebs_answer(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.splitn(2, '\n');
    let status = lines
        .next()
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(400);
    let mut body = lines.next().unwrap_or_default();
    let mut kind = None;
    if flags & 1 == 1 {
        let (k, b) = body.split_once('\n').unwrap_or((body, ""));
        (kind, body) = (Some(k.to_string()), b);
    }
    let error = ebs::fuzzing::error_answer(status, kind, body, flags & 4 == 4);
    assert!(!error.to_string().is_empty());

    let mut parts = rest.splitn(4, |&b| b == b'\n');
    let mut line = || {
        parts
            .next()
            .map(|l| String::from_utf8_lossy(l).into_owned())
    };
    let (length, mut checksum, algorithm) = (line(), line(), line());
    let block = parts.next().unwrap_or_default();
    if flags & 2 == 2 {
        let sha = Sha256::digest(block);
        checksum = Some(base64::engine::general_purpose::STANDARD.encode(sha));
    }
    let block_size = if flags & 8 == 8 {
        BLOCK_SIZE
    } else {
        block.len() as u64
    };
    match ebs::fuzzing::block_answer(length, checksum, algorithm, block, block_size) {
        Ok(sha) => assert_eq!(sha, <[u8; 32]>::from(Sha256::digest(block))),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// A DHCP answer: the lease it describes and the renewal schedule made from it.
pub fn dhcp_reply(data: &[u8]) {
    let Some(msg) = dhcp::decode(data) else {
        return;
    };
    let Some(lease) = dhcp::parse_lease(&msg) else {
        return;
    };
    assert!(lease.prefix <= 32);
    let Some(times) = renew::Times::of(&lease) else {
        return;
    };
    assert!(times.t1 <= times.t2 && times.t2 <= times.expiry);
    let second = Duration::from_secs(1);
    for elapsed in [
        Duration::ZERO,
        times.t1,
        times.t2,
        times.expiry,
        times.t2 + second,
    ] {
        for last_try in [None, Some(elapsed), Some(times.t1), Some(times.t2)] {
            let last_try = last_try.filter(|t| *t <= elapsed);
            // A sleep of nothing would spin the renewer.
            if let renew::Action::Sleep(d) = renew::next_action(&times, elapsed, last_try) {
                assert!(!d.is_zero(), "{times:?} at {elapsed:?} after {last_try:?}");
            }
        }
    }
}

/// An SNTP answer, to the request it echoes and to another; also read as the
/// `Date` header of an HTTP answer (the clock's fallback).
pub fn sntp_reply(data: &[u8]) {
    let echoed = data
        .get(24..32)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
    for sent in [echoed, 0xe000_0000_0000_0000] {
        if let Ok(reply) = clock::parse_reply(data, clock::Timestamp(sent)) {
            let t1 = clock::Timestamp(sent).unix_seconds();
            assert!(clock::offset(t1, reply, t1 + 0.01).is_finite());
        }
    }
    let date = String::from_utf8_lossy(data);
    if let Some(offset) = clock::http_date_offset(&date, SystemTime::now()) {
        assert!(offset.is_finite());
    }
}

/// The first sectors of a disk: GPT disk GUID, MBR signature, failback image mark.
pub fn disk_identity(data: &[u8]) {
    let id = failback::disks::identity::parse(data);
    assert!(id.mbr_id.is_none_or(|m| m.len() == 8));
    assert!(id.gpt_guid.is_none_or(|g| g.len() == 36));
    assert!(id.image_id.is_none_or(|i| !i.is_empty()));
}

/// The kernel command line; what it parses to is written back and read the same.
pub fn cmdline(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (parsed, errors) = Cmdline::parse(&text);
    for e in &errors {
        assert!(!e.to_string().is_empty());
    }
    let written = parsed.to_string();
    let (again, errors) = Cmdline::parse(&written);
    assert_eq!(errors, [], "{written:?}");
    let without_modules = Cmdline {
        module_params: Default::default(),
        ..parsed.clone()
    };
    assert_eq!(again, without_modules, "{written:?}");
    let _ = Preset::default().overlay(&parsed);
}

/// The preset baked into an image (TOML), then overlaid by an empty command line.
pub fn preset(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Preset::parse(text, "preset.toml") {
        Ok(p) => assert_eq!(p.overlay(&Cmdline::default()), p),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// A count (2 bytes, LE) and the rest.
fn split_u16(data: &[u8]) -> (u16, &[u8]) {
    match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => (0, &[]),
    }
}
