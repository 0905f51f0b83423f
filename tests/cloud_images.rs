//! The cloud images `failback build` writes under `out/cloud/`, each checked against its
//! format by a reader written here from the spec (not the writer's code) or by `qemu-img`:
//! GCE's oldgnu tar.gz of `disk.raw`, Azure's fixed VHD and the qcow2.

mod common;

use common::{inputs_dir, static_client};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const EPOCH: u64 = 1_700_000_000;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// One build with SOURCE_DATE_EPOCH = `epoch`, shared by the tests of this file.
fn built(epoch: u64) -> PathBuf {
    static BUILDS: OnceLock<std::sync::Mutex<Vec<(u64, tempfile::TempDir)>>> = OnceLock::new();
    let builds = BUILDS.get_or_init(Default::default);
    let mut builds = builds.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, dir)) = builds.iter().find(|(e, _)| *e == epoch) {
        return dir.path().to_path_buf();
    }
    let dir = tempfile::tempdir().unwrap();
    let client = static_client();
    let o = Command::new(&client)
        .args(["build", "--inputs"])
        .arg(inputs_dir())
        .arg("--out")
        .arg(dir.path())
        .arg("--client")
        .arg(&client)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(report.contains("cloud images: "), "build report: {report}");
    let path = dir.path().to_path_buf();
    builds.push((epoch, dir));
    path
}

fn iso(out: &Path) -> Vec<u8> {
    std::fs::read(out.join("failback.iso")).unwrap()
}

fn octal(field: &[u8]) -> u64 {
    let text = std::str::from_utf8(field).unwrap();
    u64::from_str_radix(text.trim_matches(|c| c == ' ' || c == '\0'), 8).unwrap()
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().unwrap())
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap())
}

/// Reads exactly `n` bytes and says whether they are all zero.
fn zeros(r: &mut impl Read, mut n: u64) -> bool {
    let mut buf = vec![0u8; 1 << 20];
    while n > 0 {
        let chunk = n.min(buf.len() as u64) as usize;
        r.read_exact(&mut buf[..chunk]).unwrap();
        if buf[..chunk].iter().any(|&b| b != 0) {
            return false;
        }
        n -= chunk as u64;
    }
    true
}

#[test]
fn the_cloud_images_are_reproducible_and_in_sha256sums() {
    let a = built(EPOCH);
    let other = tempfile::tempdir().unwrap();
    let client = static_client();
    let o = Command::new(&client)
        .args(["build", "--inputs"])
        .arg(inputs_dir())
        .arg("--out")
        .arg(other.path())
        .arg("--client")
        .arg(&client)
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sums = std::fs::read_to_string(a.join("SHA256SUMS")).unwrap();
    for file in [
        "cloud/failback-gce.tar.gz",
        "cloud/failback-azure.vhd",
        "cloud/failback.qcow2",
    ] {
        let bytes = std::fs::read(a.join(file)).unwrap();
        assert!(
            bytes == std::fs::read(other.path().join(file)).unwrap(),
            "two builds with the same SOURCE_DATE_EPOCH give two {file}"
        );
        use sha2::Digest;
        let line = format!("{}  {file}", hex::encode(sha2::Sha256::digest(&bytes)));
        assert!(sums.lines().any(|l| l == line), "{line} not in {sums}");
    }
}

#[test]
fn gce_gets_an_oldgnu_tar_gz_of_disk_raw_a_whole_number_of_gib() {
    let out = built(EPOCH);
    let iso = iso(&out);
    let gz = std::fs::read(out.join("cloud/failback-gce.tar.gz")).unwrap();
    // RFC 1952 2.3: ID1 ID2 CM=8, FLG without FNAME (bit 3), MTIME 0.
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
    assert_eq!(gz[3] & 0x08, 0, "the gzip header names no file");
    assert_eq!(&gz[4..8], &[0; 4], "the gzip header has no mtime");
    let mut tar = flate2::read::GzDecoder::new(&gz[..]);
    let mut h = [0u8; 512];
    tar.read_exact(&mut h).unwrap();
    // POSIX 1003.1-1988 header with GNU's magic ("ustar  \0": the oldgnu format).
    assert_eq!(&h[..9], b"disk.raw\0");
    assert_eq!(&h[257..265], b"ustar  \0", "oldgnu magic");
    assert_eq!(h[156], b'0', "a regular file");
    assert_eq!(octal(&h[100..108]), 0o644);
    assert_eq!((octal(&h[108..116]), octal(&h[116..124])), (0, 0), "owner");
    assert_eq!(octal(&h[136..148]), EPOCH, "mtime is SOURCE_DATE_EPOCH");
    let mut unsummed = h;
    unsummed[148..156].fill(b' ');
    let sum: u64 = unsummed.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(octal(&h[148..156]), sum, "header checksum");
    let size = octal(&h[124..136]);
    assert_eq!(size % GIB, 0, "disk.raw is {size} bytes: not whole GiB");
    assert!(size >= iso.len() as u64 && size - (iso.len() as u64) < GIB);
    // disk.raw is the ISO, then zeros; then the two zero blocks that end the archive.
    let mut head = vec![0u8; iso.len()];
    tar.read_exact(&mut head).unwrap();
    assert!(head == iso, "disk.raw does not start with the ISO");
    assert!(zeros(&mut tar, size - iso.len() as u64), "padding not zero");
    let mut rest = Vec::new();
    tar.read_to_end(&mut rest).unwrap();
    assert!(
        rest.len() >= 1024 && rest.iter().all(|&b| b == 0),
        "end of archive"
    );
}

/// The VHD spec's "CHS Calculation" (appendix), as the test's own oracle.
fn chs(size: u64) -> (u64, u64, u64) {
    let total = (size / 512).min(65535 * 16 * 255);
    if total >= 65535 * 16 * 63 {
        return (total / 255 / 16, 16, 255);
    }
    let mut spt = 17;
    let mut cth = total / spt;
    let mut heads = cth.div_ceil(1024).max(4);
    if cth >= heads * 1024 || heads > 16 {
        (spt, heads, cth) = (31, 16, total / 31);
    }
    if cth >= heads * 1024 {
        (spt, heads, cth) = (63, 16, total / 63);
    }
    (cth / heads, heads, spt)
}

#[test]
fn azure_gets_a_fixed_vhd_with_a_right_footer() {
    let out = built(EPOCH);
    let iso = iso(&out);
    let vhd = std::fs::read(out.join("cloud/failback-azure.vhd")).unwrap();
    let size = vhd.len() as u64 - 512;
    assert_eq!(size % MIB, 0, "the disk is {size} bytes: not whole MiB");
    assert!(size >= iso.len() as u64 && size - (iso.len() as u64) < 3 * MIB);
    assert!(vhd[..iso.len()] == iso[..], "the disk is the ISO");
    assert!(vhd[iso.len()..size as usize].iter().all(|&b| b == 0));
    // "Hard Disk Footer Format", big-endian fields at their offsets.
    let f = &vhd[size as usize..];
    assert_eq!(&f[0..8], b"conectix");
    assert_eq!(be32(&f[8..12]), 2, "features");
    assert_eq!(be32(&f[12..16]), 0x0001_0000, "file format version");
    assert_eq!(be64(&f[16..24]), u64::MAX, "data offset of a fixed disk");
    assert_eq!(
        u64::from(be32(&f[24..28])),
        EPOCH - 946_684_800,
        "time stamp"
    );
    assert_eq!(&f[36..40], b"Wi2k", "creator host OS");
    assert_eq!(be64(&f[40..48]), size, "original size");
    assert_eq!(be64(&f[48..56]), size, "current size");
    let geometry = (
        u64::from(u16::from_be_bytes([f[56], f[57]])),
        u64::from(f[58]),
        u64::from(f[59]),
    );
    assert_eq!(geometry, chs(size), "CHS geometry");
    assert_eq!(be32(&f[60..64]), 2, "disk type fixed");
    let sum: u32 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .map(|(_, &b)| u32::from(b))
        .sum();
    assert_eq!(be32(&f[64..68]), !sum, "checksum");
    assert_ne!(&f[68..84], &[0u8; 16], "unique id");
    assert_eq!(f[84], 0, "saved state");
    assert!(f[85..].iter().all(|&b| b == 0), "reserved");
    // qemu-img reads it as a VHD ("vpc"), sized by the geometry as Virtual PC does for a
    // creator it does not know (Azure reads the current size): all of the ISO either way.
    let info = qemu_img(
        &["info", "--output", "json", "-f", "vpc"],
        &out.join("cloud/failback-azure.vhd"),
    );
    assert_eq!(info["format"], "vpc", "{info}");
    assert_eq!(
        info["virtual-size"].as_u64(),
        Some(geometry.0 * geometry.1 * geometry.2 * 512),
        "{info}"
    );
    assert!(
        geometry.0 * geometry.1 * geometry.2 * 512 >= iso.len() as u64,
        "the geometry holds the whole ISO: {geometry:?}"
    );
}

fn qemu_img(args: &[&str], file: &Path) -> serde_json::Value {
    let o = Command::new("qemu-img")
        .args(args)
        .arg(file)
        .output()
        .expect("qemu-img (qemu-utils) must be installed: scripts/test.sh installs it");
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn the_qcow2_passes_qemu_img_check_and_converts_back_to_the_iso() {
    let out = built(EPOCH);
    let iso = iso(&out);
    let qcow2 = out.join("cloud/failback.qcow2");
    let check = qemu_img(&["check", "--output", "json"], &qcow2);
    assert_eq!(check["check-errors"], 0, "{check}");
    assert!(
        check.get("leaks").is_none() && check.get("corruptions").is_none(),
        "{check}"
    );
    let info = qemu_img(&["info", "--output", "json"], &qcow2);
    assert_eq!(info["format"], "qcow2", "{info}");
    assert_eq!(
        info["format-specific"]["data"]["compat"], "1.1",
        "version 3: {info}"
    );
    assert_eq!(info["cluster-size"], 65536, "{info}");
    let virtual_size = info["virtual-size"].as_u64().unwrap();
    assert_eq!(
        virtual_size,
        (iso.len() as u64).div_ceil(MIB) * MIB,
        "{info}"
    );
    // Only what is not zero is stored.
    assert!(std::fs::metadata(&qcow2).unwrap().len() < iso.len() as u64 + 4 * MIB);

    let raw = tempfile::NamedTempFile::new().unwrap();
    let o = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&qcow2)
        .arg(raw.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut padded = iso.clone();
    padded.resize(virtual_size as usize, 0);
    assert!(
        std::fs::read(raw.path()).unwrap() == padded,
        "qemu-img convert of the qcow2 is not the ISO padded"
    );
}
