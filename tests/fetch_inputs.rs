//! `scripts/fetch-inputs.sh` treats inputs.lock as cargo treats Cargo.lock: a pinned
//! version the archive no longer has is replaced by the archive's current one, said in
//! one line, and the lock is rewritten; `--locked` refuses instead. Runs the script of
//! this checkout against the Debian archive, in a directory of its own (the download
//! cache and package lists of inputs/ are copied in, so only the drift path runs).

mod common;

use common::{inputs_dir, repo};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// package -> (version, sha256)
fn read_lock(path: &Path) -> BTreeMap<String, (String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 3, "lock line {l:?}");
            (w[0].to_string(), (w[1].to_string(), w[2].to_string()))
        })
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else if entry.file_type().unwrap().is_file() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn fetch(dir: &Path, args: &[&str]) -> Output {
    Command::new(dir.join("scripts/fetch-inputs.sh"))
        .args(args)
        .env("FAILBACK_INPUTS", dir.join("inputs"))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
#[ignore = "asks the Debian archive: scripts/test.sh runs it after scripts/build.sh"]
fn a_version_gone_from_the_archive_is_re_pinned_and_locked_refuses() {
    let real = read_lock(&repo().join("inputs.lock"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::copy(
        repo().join("scripts/fetch-inputs.sh"),
        dir.join("scripts/fetch-inputs.sh"),
    )
    .unwrap();
    let inputs = dir.join("inputs");
    copy_tree(&inputs_dir().join("debs"), &inputs.join("debs"));
    copy_tree(&inputs_dir().join("apt/lists"), &inputs.join("apt/lists"));

    // A lock as an older checkout has it: a kernel whose ABI the archive has moved on
    // from (6.1.0-56, gone since 6.1.192-3), and a busybox build it never had.
    let mut stale = String::from("# package version sha256\n");
    for (pkg, (ver, sum)) in &real {
        let line = match pkg.as_str() {
            "linux-image-amd64" => format!("{pkg} 6.1.192-2 {}", "a".repeat(64)),
            p if p.starts_with("linux-image-6") => {
                format!("linux-image-6.1.0-56-amd64 6.1.192-2 {}", "b".repeat(64))
            }
            "busybox-static" => format!("{pkg} 1:1.35.0-4+deb12u0 {}", "c".repeat(64)),
            _ => format!("{pkg} {ver} {sum}"),
        };
        stale.push_str(&line);
        stale.push('\n');
    }
    let lock = dir.join("inputs.lock");
    std::fs::write(&lock, &stale).unwrap();

    // --locked: a one-line refusal that names the package, and the lock untouched.
    let o = fetch(dir, &["--locked"]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    let refusal: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("fetch-inputs:"))
        .collect();
    assert_eq!(refusal.len(), 1, "{out}");
    assert!(
        refusal[0].contains("--locked refuses") && refusal[0].contains("linux-image-amd64"),
        "{out}"
    );
    assert!(
        out.contains("busybox-static 1:1.35.0-4+deb12u0 is gone"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), stale);

    // Without it: one line per drifted package, and the lock rewritten.
    let o = fetch(dir, &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let new = read_lock(&lock);
    let image = new
        .keys()
        .find(|p| p.starts_with("linux-image-6"))
        .expect("an ABI-named kernel image in the new lock");
    assert_ne!(image, "linux-image-6.1.0-56-amd64");
    let line = |pkg: &str, old: &str, using: &str| {
        let want = format!("inputs: {pkg} {old} is gone from the archive; using {using}");
        assert!(
            out.lines()
                .any(|l| l.starts_with(&want) && l.ends_with("and updating inputs.lock")),
            "no line {want:?} in:\n{out}"
        );
    };
    line(
        "linux-image-amd64",
        "6.1.192-2",
        &new["linux-image-amd64"].0,
    );
    line(
        "linux-image-6.1.0-56-amd64",
        "6.1.192-2",
        &format!("{image} {}", new[image].0),
    );
    line(
        "busybox-static",
        "1:1.35.0-4+deb12u0",
        &new["busybox-static"].0,
    );
    let drifted = out.lines().filter(|l| l.contains("is gone from")).count();
    assert_eq!(drifted, 3, "{out}");
    // Packages still in the archive keep their pins; each pin is the .deb's SHA-256.
    for (pkg, (ver, sum)) in &real {
        if !matches!(pkg.as_str(), "linux-image-amd64" | "busybox-static")
            && !pkg.starts_with("linux-image-6")
        {
            assert_eq!(new[pkg], (ver.clone(), sum.clone()), "{pkg}");
        }
    }
    for (pkg, (ver, sum)) in &new {
        let deb = std::fs::read_dir(inputs.join("debs"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with(&format!("{pkg}_{}_", ver.replace(':', "%3a")))
            })
            .unwrap_or_else(|| panic!("no .deb of {pkg} {ver}"));
        use sha2::Digest;
        let got = hex::encode(sha2::Sha256::digest(std::fs::read(&deb).unwrap()));
        assert_eq!(&got, sum, "{pkg}");
    }
    assert!(inputs.join("bin/busybox").is_file());
    assert!(inputs.join("non-free/lib/firmware").is_dir());

    // The lock now holds: nothing to do, nothing asked of the network, --locked agrees.
    let o = fetch(dir, &["--locked"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("up to date"), "{}", text(&o));
}
