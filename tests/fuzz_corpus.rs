//! The fuzz targets (fuzz/src/lib.rs) on stable: each over its seed corpus
//! (fuzz/corpus/NAME/, where crashes found are kept as regression inputs) and over
//! inputs generated from the seeds with a few random edits, for a fixed time each
//! (`ARBTEST_BUDGET_MS` to run longer). The coverage-guided runs are `scripts/fuzz.sh`.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use arbtest::arbitrary::{self, Unstructured};
use std::path::{Path, PathBuf};

/// Time for the generated inputs of one target.
const BUDGET_MS: u64 = 500;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn body(name: &str) -> targets::Body {
    targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name} in fuzz/src/lib.rs"))
        .1
}

/// The seed corpus of a target, sorted by file name.
fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no seed corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap();
            (f, bytes)
        })
        .collect()
}

/// Pieces a parser may care about, for the edits to put in.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"=",
    b" ",
    b"\n",
    b"\0",
    b"\xff",
    b"&",
    b"-1",
    b"0",
    b"4294967295",
    b"18446744073709551615",
    b"1e999",
    b"null",
    b"failback.",
    b"EFI PART",
    b"\x55\xaa",
    b"CD001",
];

/// A seed (or nothing) with up to 8 random edits: overwrite, insert bytes, delete,
/// insert a token, insert a piece of another seed.
fn mutate(u: &mut Unstructured<'_>, seeds: &[Vec<u8>]) -> arbitrary::Result<Vec<u8>> {
    let mut input = if seeds.is_empty() || u.ratio(1, 10)? {
        Vec::new()
    } else {
        u.choose(seeds)?.clone()
    };
    for _ in 0..u.int_in_range(0..=8)? {
        let at = u.int_in_range(0..=input.len())?;
        match u.int_in_range(0..=4)? {
            0 if at < input.len() => input[at] = u.arbitrary()?,
            1 => {
                let len = u.int_in_range(1..=16)?;
                let bytes = u.bytes(len)?.to_vec();
                input.splice(at..at, bytes);
            }
            2 => {
                let end = u.int_in_range(at..=input.len().min(at + 64))?;
                input.drain(at..end);
            }
            3 => {
                let token = *u.choose(TOKENS)?;
                input.splice(at..at, token.iter().copied());
            }
            _ if !seeds.is_empty() => {
                let other = u.choose(seeds)?;
                let from = u.int_in_range(0..=other.len())?;
                let to = u.int_in_range(from..=other.len().min(from + 256))?;
                input.splice(at..at, other[from..to].iter().copied());
            }
            _ => {}
        }
    }
    Ok(input)
}

/// Runs a target over its corpus, then over generated inputs; on a panic, prints the
/// input to keep as a regression file.
fn run(name: &str) {
    let body = body(name);
    let seeds = corpus(name);
    assert!(!seeds.is_empty(), "fuzz/corpus/{name} holds no seed");
    for (path, bytes) in &seeds {
        if std::panic::catch_unwind(|| body(bytes)).is_err() {
            panic!("fuzz target {name} panicked on {}", path.display());
        }
    }
    let seeds: Vec<Vec<u8>> = seeds.into_iter().map(|(_, b)| b).collect();
    let mut cases = 0u64;
    arbtest::arbtest(|u| {
        cases += 1;
        let input = mutate(u, &seeds)?;
        if let Err(panic) = std::panic::catch_unwind(|| body(&input)) {
            eprintln!(
                "fuzz target {name} panicked on {:?}",
                input.escape_ascii().to_string()
            );
            std::panic::resume_unwind(panic);
        }
        Ok(())
    })
    .budget_ms(BUDGET_MS)
    .run();
    eprintln!("{name}: {cases} generated inputs");
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { run(stringify!($name)); })*

        #[test]
        fn every_target_has_a_test_a_libfuzzer_binary_and_a_seed_corpus() {
            let tested = [$(stringify!($name)),*];
            let listed: Vec<&str> = targets::TARGETS.iter().map(|(n, _)| *n).collect();
            assert_eq!(listed, tested, "fuzz/src/lib.rs TARGETS and this file's targets! differ");
            let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
            let mut binaries: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
                .unwrap()
                .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
                .collect();
            binaries.sort();
            let mut wanted: Vec<&str> = listed.clone();
            wanted.sort();
            assert_eq!(binaries, wanted, "fuzz/fuzz_targets/*.rs and TARGETS differ");
            for name in listed {
                assert!(
                    manifest.contains(&format!("name = \"{name}\"")),
                    "fuzz/Cargo.toml has no [[bin]] {name}"
                );
                assert!(fuzz_dir().join("corpus").join(name).is_dir(), "no fuzz/corpus/{name}");
            }
        }
    };
}

targets!(
    wire_frames,
    hashes_reply,
    agent_request,
    ebs_pages,
    ebs_answer,
    dhcp_reply,
    sntp_reply,
    disk_identity,
    cmdline,
    preset,
);
