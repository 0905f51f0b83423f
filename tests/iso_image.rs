//! failback.iso checked by independent tools (xorriso, sgdisk, fsck.vfat, isoinfo, isovfy),
//! its menus and contents, reproducibility, and the builder's refusals of bad input.

mod common;

use common::{build_args, build_into, failback, inputs_dir, out_dir, tool};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn iso() -> PathBuf {
    out_dir().join("failback.iso")
}

fn iso_file(iso: &Path, path: &str) -> Vec<u8> {
    let o = tool("isoinfo", &["-R", "-i", iso.to_str().unwrap(), "-x", path]);
    assert!(o.status.success(), "isoinfo -x {path}: {}", text(&o));
    o.stdout
}

/// GPT partition 2 (the ESP) as (first byte, length), from the primary GPT.
fn esp_extent(image: &[u8]) -> (usize, usize) {
    let entry = &image[1024 + 128..1024 + 256];
    let first = u64::from_le_bytes(entry[32..40].try_into().unwrap()) as usize;
    let last = u64::from_le_bytes(entry[40..48].try_into().unwrap()) as usize;
    (first * 512, (last + 1 - first) * 512)
}

#[test]
fn el_torito_has_bios_and_uefi_entries() {
    let iso = iso();
    let o = tool(
        "xorriso",
        &[
            "-indev",
            iso.to_str().unwrap(),
            "-report_el_torito",
            "plain",
        ],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let entry = |platform: &str| {
        t.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            l.starts_with("El Torito boot img")
                && w.get(6) == Some(&platform)
                && w.get(7) == Some(&"y")
                && w.get(8) == Some(&"none")
        })
    };
    assert!(entry("BIOS"), "no bootable no-emulation BIOS entry:\n{t}");
    assert!(
        entry("UEFI"),
        "no bootable UEFI (platform 0xef) entry:\n{t}"
    );
    assert!(
        t.contains("boot-info-table"),
        "isolinux.bin without boot-info-table:\n{t}"
    );
    assert!(
        t.contains("/isolinux/isolinux.bin") && t.contains("/boot/efi.img"),
        "{t}"
    );
}

#[test]
fn gpt_is_valid() {
    let iso = iso();
    let o = tool("sgdisk", &["-v", iso.to_str().unwrap()]);
    assert!(
        o.status.success() && text(&o).contains("No problems found"),
        "{}",
        text(&o)
    );
    let o = tool("sgdisk", &["-p", iso.to_str().unwrap()]);
    let t = text(&o);
    assert!(
        t.contains("EF00") && t.contains("EFI System"),
        "no ESP partition:\n{t}"
    );
}

#[test]
fn esp_is_clean_fat_with_shim_grub_and_mokmanager() {
    let image = fs::read(iso()).unwrap();
    let (start, len) = esp_extent(&image);
    assert!(len <= 32 << 20, "ESP of {len} bytes is over 32 MiB");
    let esp = &image[start..start + len];
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("esp.img");
    fs::write(&path, esp).unwrap();
    let o = tool("fsck.vfat", &["-n", path.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "fsck.vfat -n:\n{t}");
    assert_eq!(t.lines().count(), 2, "fsck.vfat had remarks:\n{t}");

    let fs = fatfs::FileSystem::new(std::io::Cursor::new(esp.to_vec()), fatfs::FsOptions::new())
        .unwrap();
    let inputs = inputs_dir();
    for (name, source) in [
        ("EFI/BOOT/BOOTX64.EFI", "usr/lib/shim/shimx64.efi.signed"),
        (
            "EFI/BOOT/grubx64.efi",
            "usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed",
        ),
        ("EFI/BOOT/mmx64.efi", "usr/lib/shim/mmx64.efi.signed"),
    ] {
        let mut data = Vec::new();
        fs.root_dir()
            .open_file(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .read_to_end(&mut data)
            .unwrap();
        assert!(
            data == fs::read(inputs.join(source)).unwrap(),
            "{name} is not {source}"
        );
    }
}

#[test]
fn iso9660_with_rock_ridge_passes_isoinfo_and_isovfy() {
    let iso = iso();
    let p = iso.to_str().unwrap();
    let o = tool("isoinfo", &["-d", "-i", p]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("Volume id: FAILBACK"), "{t}");
    assert!(t.contains("Rock Ridge signatures version 1 found"), "{t}");
    assert!(t.contains("El Torito VD version 1 found"), "{t}");
    let o = tool("isovfy", &[p]);
    assert!(
        o.status.success() && text(&o).contains("No errors found"),
        "isovfy:\n{}",
        text(&o)
    );

    let o = tool("isoinfo", &["-R", "-f", "-i", p]);
    let listing = text(&o);
    for f in [
        "/.disk/info",
        "/boot/vmlinuz",
        "/boot/initrd.img",
        "/boot/grub/grub.cfg",
        "/isolinux/isolinux.bin",
        "/isolinux/ldlinux.c32",
        "/isolinux/isolinux.cfg",
    ] {
        assert!(
            listing.lines().any(|l| l == f),
            "{f} missing from:\n{listing}"
        );
    }
    let out = out_dir();
    assert!(iso_file(&iso, "/boot/vmlinuz") == fs::read(out.join("pxe/vmlinuz")).unwrap());
    assert!(iso_file(&iso, "/boot/initrd.img") == fs::read(out.join("pxe/initrd.img")).unwrap());
    let size = fs::metadata(&iso).unwrap().len();
    assert!(
        size <= 48 << 20,
        "ISO is {size} bytes, over the 48 MiB goal"
    );
}

#[test]
fn menus_have_a_quick_default_and_a_debug_entry_on_both_consoles() {
    let iso = iso();
    let isolinux = String::from_utf8(iso_file(&iso, "/isolinux/isolinux.cfg")).unwrap();
    let timeout: u32 = isolinux
        .lines()
        .find_map(|l| l.trim().strip_prefix("timeout "))
        .expect("isolinux timeout")
        .parse()
        .unwrap();
    assert!(
        timeout <= 30,
        "isolinux timeout {timeout} (1/10 s) over 3 s"
    );
    let appends: Vec<&str> = isolinux
        .lines()
        .filter(|l| l.trim().starts_with("append "))
        .collect();
    assert_eq!(appends.len(), 2, "{isolinux}");
    assert!(
        appends[1].contains("failback.debug=1") && appends[1].contains("loglevel=7"),
        "{isolinux}"
    );

    let grub = String::from_utf8(iso_file(&iso, "/boot/grub/grub.cfg")).unwrap();
    assert!(grub.contains("set timeout=3"), "{grub}");
    assert_eq!(grub.matches("menuentry ").count(), 2, "{grub}");
    assert!(grub.contains("verbose + debug"), "{grub}");
    let linux: Vec<&str> = grub
        .lines()
        .filter(|l| l.trim().starts_with("linux "))
        .collect();
    assert_eq!(linux.len(), 2, "{grub}");

    for line in appends.iter().chain(&linux) {
        assert!(
            line.contains("console=tty0 console=ttyS0,115200"),
            "no consoles in {line:?}"
        );
    }
}

#[test]
fn two_builds_are_bit_identical() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("iso_repro");
    let (a, b) = (dir.join("a"), dir.join("b"));
    build_into(&a, &[]);
    build_into(&b, &[]);
    let (ia, ib) = (
        fs::read(a.join("failback.iso")).unwrap(),
        fs::read(b.join("failback.iso")).unwrap(),
    );
    assert!(
        ia == ib,
        "two builds with the same SOURCE_DATE_EPOCH differ"
    );
    assert_eq!(
        fs::read(a.join("SHA256SUMS")).unwrap(),
        fs::read(b.join("SHA256SUMS")).unwrap()
    );
}

/// A refusal: non-zero exit, one line on stderr mentioning `what`, no ISO (nor temporary
/// file) left in the output directory.
fn assert_refused(out: &Path, args: &[&str], what: &str) {
    let o = failback(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "accepted: {args:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(what), "{err:?} does not mention {what:?}");
    let left: Vec<_> = fs::read_dir(out)
        .map(|d| {
            d.map(|e| e.unwrap().file_name())
                .filter(|n| {
                    n.to_string_lossy().contains("iso") || n.to_string_lossy().starts_with(".tmp")
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bad_labels_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let inputs = inputs_dir();
    let inputs = inputs.to_str().unwrap();
    for label in [
        "A_LABEL_OF_MORE_THAN_THIRTY_TWO_CHARS",
        "lower",
        "WITH-DASH",
    ] {
        assert_refused(
            tmp.path(),
            &["build", "--inputs", inputs, "--out", out, "--label", label],
            "volume label",
        );
    }
}

#[test]
fn missing_inputs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let client = common::static_client();
    assert_refused(
        tmp.path(),
        &build_args("/nonexistent/inputs", out, client.to_str().unwrap()),
        "/nonexistent/inputs",
    );
}

/// Inputs whose GRUB is too big for an El Torito ESP (everything else is the real inputs).
#[test]
fn an_esp_over_32_mib_is_refused() {
    let real = inputs_dir();
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("inputs");
    for dir in ["usr/lib/grub/x86_64-efi-signed", "usr/lib/syslinux"] {
        fs::create_dir_all(fake.join(dir)).unwrap();
    }
    let link = |p: &str| std::os::unix::fs::symlink(real.join(p), fake.join(p)).unwrap();
    for p in [
        "boot",
        "lib",
        "usr/lib/ISOLINUX",
        "usr/lib/shim",
        "usr/lib/syslinux/modules",
    ] {
        link(p);
    }
    fs::File::create(fake.join("usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed"))
        .unwrap()
        .set_len(33 << 20)
        .unwrap();
    let out = tmp.path().join("out");
    let client = common::static_client();
    assert_refused(
        &out,
        &build_args(
            fake.to_str().unwrap(),
            out.to_str().unwrap(),
            client.to_str().unwrap(),
        ),
        "32 MiB",
    );
}
