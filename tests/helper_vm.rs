//! `failback pull` on a helper VM, the targets attached and no `--map`: the mapping is
//! proposed from the local disks as the boot image proposes it, by identity, else by
//! size, and unattended runs take only what is proven. The disks here are a fake
//! sysfs (`--sys`) whose `block/` names image files under a fake `/dev` (`--dev-dir`).

mod common;

use common::{BS, Scenario, events, random_bytes, run};
use std::fs;
use std::path::Path;

/// A volume with an MBR disk signature `id` (offset 440, boot signature at 510).
fn with_mbr(mut bytes: Vec<u8>, id: u32) -> Vec<u8> {
    bytes[440..444].copy_from_slice(&id.to_le_bytes());
    bytes[510..512].copy_from_slice(&[0x55, 0xAA]);
    bytes
}

/// Lists disk `name` of `bytes` in the fake sysfs `sys` and writes it under `dev`.
fn disk(sys: &Path, dev: &Path, name: &str, bytes: &[u8]) {
    let dir = sys.join("block").join(name);
    fs::create_dir_all(dir.join("device")).unwrap();
    fs::write(dir.join("size"), format!("{}\n", bytes.len() / 512)).unwrap();
    fs::write(dir.join("removable"), "0\n").unwrap();
    fs::create_dir_all(dev).unwrap();
    fs::write(dev.join(name), bytes).unwrap();
}

#[test]
fn without_map_the_disk_with_the_volumes_identity_is_proposed_and_taken_unattended() {
    let size = 8 * BS;
    let new = with_mbr(random_bytes(size, 1), 0x1234_5678);
    let s = Scenario::serve(&[("system", &new)]);
    let (sys, dev) = (s.path().join("sys"), s.path().join("dev"));
    // The old state of the system disk (same MBR id), and a blank disk that fits too.
    let old = with_mbr(random_bytes(size, 2), 0x1234_5678);
    disk(&sys, &dev, "sdb", &vec![0u8; size]);
    disk(&sys, &dev, "sdc", &old);
    let out = run(s.pull(&[
        "--yes",
        "--progress",
        "json",
        "--sys",
        sys.to_str().unwrap(),
        "--dev-dir",
        dev.to_str().unwrap(),
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events(&out);
    let mapping = evs.iter().find(|e| e["event"] == "mapping").unwrap();
    assert_eq!(mapping["choices"][0]["reason"], "mbr-id", "{mapping}");
    assert_eq!(fs::read(dev.join("sdc")).unwrap(), new, "the system disk");
    assert_eq!(
        fs::read(dev.join("sdb")).unwrap(),
        vec![0u8; size],
        "the other disk is untouched"
    );
}

#[test]
fn unattended_a_fit_by_size_alone_is_refused_unless_allowed() {
    let size = 8 * BS;
    let new = random_bytes(size, 3);
    let s = Scenario::serve(&[("data", &new)]);
    let (sys, dev) = (s.path().join("sys"), s.path().join("dev"));
    disk(&sys, &dev, "sdb", &vec![7u8; size]);
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "--yes".to_string(),
            "--sys".into(),
            sys.display().to_string(),
            "--dev-dir".into(),
            dev.display().to_string(),
        ];
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let refused = run(s.pull(&args(&[]).iter().map(String::as_str).collect::<Vec<_>>()));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("chosen by size alone"), "{err}");
    assert_eq!(fs::read(dev.join("sdb")).unwrap(), vec![7u8; size]);

    let allowed = run(s.pull(
        &args(&["--map-by-size"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert_eq!(fs::read(dev.join("sdb")).unwrap(), new);
}
