//! `failback build` as a user runs it: reproducible output, a clear refusal of a
//! dynamically linked client, and an initramfs that holds what the client needs.

mod common;

use common::{inputs_dir, static_client};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

/// The builder as users run it (the release binary from scripts/build.sh): `failback
/// build` from the inputs into `out`, for more arguments.
fn builder(out: &Path) -> Command {
    let mut build = Command::new(static_client());
    build
        .args(["build", "--inputs"])
        .arg(inputs_dir())
        .arg("--out")
        .arg(out);
    build
}

/// Runs the builder as users do, with `client` as the image's `/init`.
fn build(out: &Path, client: &Path, epoch: &str) -> Output {
    builder(out)
        .arg("--client")
        .arg(client)
        .env("SOURCE_DATE_EPOCH", epoch)
        .output()
        .unwrap()
}

/// (path, mode, data) of every entry of a zstd-compressed newc archive.
fn unpack(initrd: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let mut raw = Vec::new();
    zstd::Decoder::new(initrd)
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    let mut buf = &raw[..];
    let mut out = Vec::new();
    let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap() as usize;
    loop {
        assert_eq!(&buf[..6], b"070701", "newc magic");
        let (mode, size, namesize) = (hex(&buf[14..22]), hex(&buf[54..62]), hex(&buf[94..102]));
        let name = String::from_utf8(buf[110..110 + namesize - 1].to_vec()).unwrap();
        let data = (110 + namesize).div_ceil(4) * 4;
        if name == "TRAILER!!!" {
            return out;
        }
        out.push((name, mode as u32, buf[data..data + size].to_vec()));
        buf = &buf[(data + size).div_ceil(4) * 4..];
    }
}

#[test]
fn same_inputs_and_epoch_give_a_bit_identical_initrd() {
    let client = static_client();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    for (out, epoch) in [(&a, "1700000000"), (&b, "1700000000"), (&c, "1700000001")] {
        let o = build(out, &client, epoch);
        assert!(
            o.status.success(),
            "build failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let read = |dir: &Path| std::fs::read(dir.join("pxe/initrd.img")).unwrap();
    assert!(
        read(&a) == read(&b),
        "two builds with the same SOURCE_DATE_EPOCH differ"
    );
    assert!(
        read(&a) != read(&c),
        "SOURCE_DATE_EPOCH does not reach the archive"
    );
    assert_eq!(
        std::fs::read(a.join("SHA256SUMS")).unwrap(),
        std::fs::read(b.join("SHA256SUMS")).unwrap()
    );
}

#[test]
fn the_initrd_holds_the_client_drivers_and_their_index() {
    let client = static_client();
    let tmp = tempfile::tempdir().unwrap();
    let o = build(tmp.path(), &client, "0");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(report.contains("kernel modules"), "build report: {report}");

    let entries = unpack(&std::fs::read(tmp.path().join("pxe/initrd.img")).unwrap());
    let get = |name: &str| {
        entries
            .iter()
            .find(|e| e.0 == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let init = get("init");
    assert_eq!(init.1, 0o100755);
    assert_eq!(
        init.2,
        std::fs::read(&client).unwrap(),
        "/init is the client"
    );
    assert_eq!(get("dev/console").1, 0o020600);
    // The diagnostics shell: Debian's static busybox, as fetched.
    let busybox = get("bin/busybox");
    assert_eq!(busybox.1, 0o100755);
    assert_eq!(
        busybox.2,
        std::fs::read(inputs_dir().join("bin/busybox")).unwrap(),
        "/bin/busybox is busybox-static's (scripts/fetch-inputs.sh)"
    );
    let moddir = entries
        .iter()
        .find(|e| e.0.ends_with("/modules.dep"))
        .unwrap()
        .0
        .trim_end_matches("modules.dep")
        .to_string();
    let dep = String::from_utf8(get(&format!("{moddir}modules.dep")).2.clone()).unwrap();
    let alias = String::from_utf8(get(&format!("{moddir}modules.alias")).2.clone()).unwrap();
    // Every module named in modules.dep (and each of its dependencies) is in the archive.
    for line in dep.lines() {
        for rel in line.replace(':', " ").split_whitespace() {
            get(&format!("{moddir}{rel}"));
        }
    }
    assert!(
        dep.lines()
            .any(|l| l.starts_with("kernel/drivers/ata/ahci.ko: ") && l.contains("libata.ko")),
        "{dep}"
    );
    for module in [
        "ahci",
        "nvme",
        "virtio_blk",
        "e1000e",
        "virtio_net",
        "mpt3sas",
        "megaraid_sas",
        "usb_storage",
    ] {
        assert!(
            alias.lines().any(|l| l.ends_with(&format!(" {module}"))),
            "no alias for {module}"
        );
    }
}

#[test]
fn a_dynamically_linked_client_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    // The binary under test is built without crt-static: dynamically linked.
    let o = build(tmp.path(), Path::new(env!("CARGO_BIN_EXE_failback")), "0");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("dynamically linked") && err.contains("crt-static"),
        "{err}"
    );
    assert!(!tmp.path().join("pxe").exists(), "nothing written");
}

#[test]
fn a_missing_inputs_dir_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(static_client())
        .args(["build", "--inputs", "/nonexistent/inputs", "--out"])
        .arg(tmp.path())
        .arg("--client")
        .arg(static_client())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/nonexistent/inputs") && err.contains("fetch-inputs.sh"),
        "{err}"
    );
}

#[test]
fn a_preset_is_validated_and_baked_in() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "after = \"reboot\"\nsorce = \"https://10.0.2.2:1500\"\n",
    )
    .unwrap();
    let run =
        |preset: &Path, out: &Path| builder(out).arg("--config").arg(preset).output().unwrap();
    let o = run(&bad, &tmp.path().join("bad-out"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.toml") && err.contains("line 2") && err.contains("sorce"),
        "{err}"
    );
    assert!(
        !tmp.path().join("bad-out").exists(),
        "nothing written for a bad preset"
    );

    let good = tmp.path().join("good.toml");
    let text =
        "# rack 1\nsource = \"https://10.0.2.2:1500\"\nafter = \"poweroff\"\nprogress = \"json\"\n";
    std::fs::write(&good, text).unwrap();
    let out = tmp.path().join("good-out");
    let o = run(&good, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let entries = unpack(&std::fs::read(out.join("pxe/initrd.img")).unwrap());
    let preset = entries
        .iter()
        .find(|e| e.0 == "etc/failback.toml")
        .expect("etc/failback.toml in the initrd");
    assert_eq!(preset.2, text.as_bytes());
}

#[test]
fn bad_kernel_arguments_in_append_or_a_hosts_args_fail_the_build_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let preset = tmp.path().join("fleet.toml");
    std::fs::write(
        &preset,
        "[[hosts]]\nmac = \"52:54:00:aa:bb:01\"\nname = \"rack1-07\"\n\
         args = \"failback.after=later failback.debug\"\n",
    )
    .unwrap();
    for (args, names) in [
        (
            vec!["--config".into(), preset.display().to_string()],
            ["52:54:00:aa:bb:01 (rack1-07)", "failback.after=\"later\""],
        ),
        (
            vec!["--append".into(), "failback.progress=fancy".into()],
            ["--append", "failback.progress=\"fancy\""],
        ),
    ] {
        let out = tmp.path().join("out");
        let o = builder(&out).args(&args).output().unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(names.iter().all(|n| err.contains(n)), "{err}");
        assert!(!out.exists(), "nothing written: {err}");
    }
}

#[test]
fn secrets_in_the_image_or_a_pxe_menu_are_one_warning_and_never_quoted() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |preset: &Path, out: &Path| {
        builder(out)
            .arg("--config")
            .arg(preset)
            .args(["--append", "failback.token=append-secret-0123"])
            .output()
            .unwrap()
    };
    let preset = tmp.path().join("secrets.toml");
    std::fs::write(
        &preset,
        "source = \"https://10.0.2.2:1500\"\ntoken = \"agent-secret-0123\"\n\
         [aws]\nregion = \"eu-west-1\"\naccess_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"wJalrXUtnFEMI\"\n\
         [[hosts]]\nmac = \"52:54:00:aa:bb:01\"\nargs = \"failback.token=host-secret-0123\"\n",
    )
    .unwrap();
    let o = run(&preset, &tmp.path().join("out"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let warnings: Vec<&str> = all.lines().filter(|l| l.contains("secret")).collect();
    assert_eq!(warnings.len(), 1, "{all}");
    for name in [
        "token",
        "aws.secret_access_key",
        "failback.token= (--append)",
        "failback.token= (host 52:54:00:aa:bb:01)",
    ] {
        assert!(warnings[0].contains(name), "{name}: {}", warnings[0]);
    }
    for secret in [
        "agent-secret",
        "wJalrXUtnFEMI",
        "append-secret",
        "host-secret",
    ] {
        assert!(!all.contains(secret), "{secret} shown: {all}");
    }

    // A syntax error on a secret's line names the line, not the secret.
    std::fs::write(&preset, "[aws]\nsecret_access_key = \"wJalrXUtnFEMI\" x\n").unwrap();
    let o = run(&preset, &tmp.path().join("bad"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line 2 `secret_access_key = ***`"), "{err}");
    assert!(!err.contains("wJalrXUtnFEMI"), "{err}");
}

/// The `firmware=` names of a module file (its `.modinfo` strings).
fn requested_firmware(module: &Path) -> Vec<String> {
    std::fs::read(module)
        .unwrap()
        .split(|&b| b == 0)
        .filter_map(|s| s.strip_prefix(b"firmware="))
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

fn find_module(dir: &Path, file: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_module(&path, file) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == file) {
            return Some(path);
        }
    }
    None
}

#[test]
fn the_report_gives_the_initrd_size_per_class() {
    let tmp = tempfile::tempdir().unwrap();
    let client = static_client();
    let o = build(tmp.path(), &client, "0");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = String::from_utf8_lossy(&o.stdout);
    // "  CLASS  N UNIT  X.XX MiB unpacked  Y.YY MiB zstd"
    let class = |name: &str| -> (usize, f64, f64) {
        let line = report
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} line in the report:\n{report}"));
        let w: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            (w[4], w[5], w[7], w[8]),
            ("MiB", "unpacked", "MiB", "zstd"),
            "{line}"
        );
        (
            w[1].parse().unwrap(),
            w[3].parse().unwrap(),
            w[6].parse().unwrap(),
        )
    };
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    for name in ["storage", "network", "base"] {
        let (files, unpacked, packed) = class(name);
        assert!(files > 0 && unpacked > 0.0, "{name}: {report}");
        assert!(packed > 0.0 && packed < unpacked, "{name}: {report}");
    }
    let (files, unpacked, _) = class("client");
    assert_eq!(files, 1);
    let size = mib(std::fs::metadata(&client).unwrap().len());
    assert!(
        (unpacked - size).abs() < 0.01,
        "client {unpacked} vs {size}"
    );
    // The firmware lines count what went in: the free and the non-free firmware of the inputs.
    let entries = unpack(&std::fs::read(tmp.path().join("pxe/initrd.img")).unwrap());
    let firmware: Vec<&(String, u32, Vec<u8>)> = entries
        .iter()
        .filter(|e| e.0.starts_with("lib/firmware/") && e.1 & 0o170000 == 0o100000)
        .collect();
    let (free, free_mib, _) = class("firmware");
    let (non_free, non_free_mib, _) = class("non-free");
    assert!(non_free > 0, "{report}");
    assert_eq!(free + non_free, firmware.len(), "{report}");
    let bytes: usize = firmware.iter().map(|e| e.2.len()).sum();
    assert!(
        (free_mib + non_free_mib - mib(bytes as u64)).abs() < 0.02,
        "{report}"
    );
    // The sum of the classes is the archive, give or take the index files and headers.
    let entries_total: usize = entries.iter().map(|e| e.2.len()).sum();
    let (files, unpacked, _) = class("shell");
    assert_eq!(files, 1);
    let size = mib(std::fs::metadata(inputs_dir().join("bin/busybox"))
        .unwrap()
        .len());
    assert!((unpacked - size).abs() < 0.01, "shell {unpacked} vs {size}");
    let classes_total: f64 = [
        "storage", "network", "base", "firmware", "non-free", "shell", "client",
    ]
    .iter()
    .map(|c| class(c).1)
    .sum();
    let index = mib(entries_total as u64) - classes_total;
    assert!(
        (0.0..1.0).contains(&index),
        "classes {classes_total} MiB, archive data {entries_total} B"
    );
}

#[test]
fn the_free_firmware_of_the_inputs_goes_in() {
    // isci (Intel C600 SAS) requests isci/isci_firmware.bin, which Debian ships
    // freely in firmware-linux-free, pinned in inputs.lock.
    let free = inputs_dir().join("lib/firmware/isci/isci_firmware.bin");
    assert!(
        free.is_file(),
        "{} missing: run scripts/fetch-inputs.sh (firmware-linux-free)",
        free.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let o = build(tmp.path(), &static_client(), "0");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let entries = unpack(&std::fs::read(tmp.path().join("pxe/initrd.img")).unwrap());
    let fw = entries
        .iter()
        .find(|e| e.0 == "lib/firmware/isci/isci_firmware.bin")
        .expect("isci firmware in the initrd");
    assert_eq!(fw.2, std::fs::read(&free).unwrap());
    // Only what a module requests: firmware-linux-free has more.
    assert!(
        !entries.iter().any(|e| e.0.starts_with("lib/firmware/cis/")),
        "unrequested firmware went in"
    );
}

#[test]
fn firmware_from_an_operator_dir_goes_in_and_the_missing_is_one_warning() {
    let modules = inputs_dir().join("lib/modules");
    let tg3 = find_module(&modules, "tg3.ko").expect("tg3.ko in the inputs");
    let names = requested_firmware(&tg3);
    assert!(!names.is_empty(), "tg3 requests firmware");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("firmware");
    for (i, name) in names.iter().enumerate() {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("fake firmware {i}")).unwrap();
    }
    std::fs::write(dir.join("nobody-asks.bin"), b"x").unwrap();
    let out = tmp.path().join("out");
    let o = builder(&out).arg("--firmware").arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let entries = unpack(&std::fs::read(out.join("pxe/initrd.img")).unwrap());
    for (i, name) in names.iter().enumerate() {
        let e = entries
            .iter()
            .find(|e| e.0 == format!("lib/firmware/{name}"))
            .unwrap_or_else(|| panic!("lib/firmware/{name} not in the initrd"));
        assert_eq!(e.2, format!("fake firmware {i}").as_bytes());
        assert_eq!(e.1, 0o100644);
    }
    assert!(!entries.iter().any(|e| e.0.ends_with("nobody-asks.bin")));
    // What is still missing (other modules' non-free firmware) is one warning
    // line that says how to add it, and no longer names tg3.
    let err = String::from_utf8_lossy(&o.stderr);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert!(warnings.len() <= 1, "{err}");
    if let Some(w) = warnings.first() {
        assert!(w.contains("--firmware DIR") && !w.contains("tg3 ("), "{w}");
    }

    let o = builder(&tmp.path().join("out2"))
        .args(["--firmware", "/nonexistent/firmware"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/firmware"), "{err}");
}

/// The firmware files of a module of the inputs' kernel, as it requests them.
fn firmware_of(module: &str) -> Vec<String> {
    let modules = inputs_dir().join("lib/modules");
    let path = find_module(&modules, &format!("{module}.ko"))
        .unwrap_or_else(|| panic!("{module}.ko in the inputs"));
    let names = requested_firmware(&path);
    assert!(!names.is_empty(), "{module} requests firmware");
    names
}

#[test]
fn the_firmware_of_servers_nics_goes_in_and_can_be_left_out() {
    // Broadcom NetXtreme (tg3) and NetXtreme II (bnx2x), Realtek (r8169), Intel E810 (ice,
    // whose DDP package it cannot run without): Debian's non-free-firmware, pinned in
    // inputs.lock and unpacked apart in inputs/non-free.
    let nics = ["tg3", "bnx2x", "r8169", "ice"];
    assert!(
        firmware_of("ice").contains(&"intel/ice/ddp/ice.pkg".to_string()),
        "ice requests its DDP package"
    );
    let tmp = tempfile::tempdir().unwrap();
    let o = build(tmp.path(), &static_client(), "0");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("firmware"), "a firmware warning: {err}");
    let entries = unpack(&std::fs::read(tmp.path().join("pxe/initrd.img")).unwrap());
    let has = |name: &str| {
        entries.iter().any(|e| {
            e.0 == format!("lib/firmware/{name}") || e.0 == format!("lib/firmware/{name}.xz")
        })
    };
    for module in nics {
        for name in firmware_of(module) {
            assert!(has(&name), "{module}'s {name} is not in the initrd");
        }
    }
    // Only what a module requests: firmware-misc-nonfree holds far more.
    let firmware = entries
        .iter()
        .filter(|e| e.0.starts_with("lib/firmware/") && e.1 & 0o170000 == 0o100000)
        .count();
    assert!(firmware < 200, "{firmware} firmware files");

    let out = tmp.path().join("free");
    let o = builder(&out)
        .arg("--no-non-free-firmware")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let entries = unpack(&std::fs::read(out.join("pxe/initrd.img")).unwrap());
    for module in nics {
        for name in firmware_of(module) {
            assert!(
                !entries.iter().any(|e| e.0.contains(&name)),
                "{name} went in with --no-non-free-firmware"
            );
        }
    }
    let err = String::from_utf8_lossy(&o.stderr);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("--no-non-free-firmware") && warnings[0].contains("tg3 ("),
        "{}",
        warnings[0]
    );
}

/// Builds an image and checks that each of `wanted` modules is in its initrd with its
/// dependency closure; returns the initrd's paths and the closure.
fn initrd_with_closure_of(
    wanted: &[&str],
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let o = build(tmp.path(), &static_client(), "0");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let entries = unpack(&std::fs::read(tmp.path().join("pxe/initrd.img")).unwrap());
    let names: std::collections::BTreeSet<String> = entries.into_iter().map(|e| e.0).collect();
    let moddir = names
        .iter()
        .find(|n| n.ends_with("/modules.dep"))
        .unwrap()
        .trim_end_matches("modules.dep")
        .to_string();
    // The oracle of each closure: the modules' own `depends=` (.modinfo), followed.
    let modules = inputs_dir().join("lib/modules");
    let mut todo: Vec<String> = wanted.iter().map(|m| m.to_string()).collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(module) = todo.pop() {
        if !seen.insert(module.clone()) {
            continue;
        }
        let file = format!("{module}.ko");
        let path = find_module(&modules, &file)
            .or_else(|| find_module(&modules, &file.replace('_', "-")))
            .unwrap_or_else(|| panic!("{module} is not a module of the inputs' kernel"));
        let rel = path.strip_prefix(&modules).unwrap();
        let rel = rel.iter().skip(1).collect::<std::path::PathBuf>();
        assert!(
            names.contains(format!("{moddir}{}", rel.display()).as_str()),
            "{} (of the closure of {wanted:?}) is not in the initrd",
            rel.display()
        );
        let text = std::fs::read(&path).unwrap();
        for field in text.split(|&b| b == 0) {
            if let Some(deps) = field.strip_prefix(b"depends=") {
                let deps = String::from_utf8_lossy(deps).into_owned();
                todo.extend(
                    deps.split(',')
                        .filter(|d| !d.is_empty())
                        .map(str::to_string),
                );
            }
        }
    }
    (names, seen)
}

#[test]
fn the_drivers_a_rack_holds_go_in_with_their_closure_and_firmware() {
    // Cisco VIC, FastLinQ, Emulex, Solarflare, Chelsio, gVNIC, MANA NICs; MPI3 tri-mode
    // and Areca RAID; QLogic and Emulex Fibre Channel HBAs.
    let rack = [
        "enic",
        "qede",
        "be2net",
        "sfc",
        "cxgb4",
        "gve",
        "mana",
        "mpi3mr",
        "arcmsr",
        "qla2xxx",
        "lpfc",
        "scsi_transport_fc",
    ];
    let (names, seen) = initrd_with_closure_of(&rack);
    assert!(
        seen.len() > rack.len(),
        "the closure adds modules: {seen:?}"
    );
    let has_firmware = |name: &str| names.contains(format!("lib/firmware/{name}").as_str());
    for module in ["qed", "cxgb4", "qla2xxx"] {
        for name in firmware_of(module) {
            assert!(
                has_firmware(&name),
                "{module}'s {name} is not in the initrd"
            );
        }
    }
}

#[test]
fn the_drivers_cloud_vms_need_go_in_with_their_closure() {
    // GCP: virtio-scsi, virtio-net, NVMe, gVNIC; Azure: Hyper-V storage and network,
    // MANA, NVMe.
    let (_, seen) = initrd_with_closure_of(&[
        "virtio_scsi",
        "virtio_net",
        "nvme",
        "gve",
        "hv_storvsc",
        "hv_netvsc",
        "mana",
    ]);
    assert!(seen.contains("hv_vmbus"), "the closure: {seen:?}");
}
