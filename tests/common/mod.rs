//! Test helpers: where the built image is, and a QEMU (TCG) runner that reads
//! the client's JSON events from the serial console.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The build output (`scripts/build.sh`), or a failure saying how to make it.
pub fn out_dir() -> PathBuf {
    let out = std::env::var_os("FAILBACK_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("out"));
    assert!(
        out.join("pxe/initrd.img").is_file() && out.join("pxe/vmlinuz").is_file(),
        "{} has no pxe/vmlinuz + pxe/initrd.img: run scripts/build.sh first",
        out.display()
    );
    out
}

/// The static client built by scripts/build.sh.
pub fn static_client() -> PathBuf {
    let path = repo().join("target/x86_64-unknown-linux-gnu/release/failback");
    assert!(
        path.is_file(),
        "{} missing: run scripts/build.sh first",
        path.display()
    );
    path
}

/// The inputs unpacked by scripts/fetch-inputs.sh.
pub fn inputs_dir() -> PathBuf {
    let path = repo().join("inputs");
    assert!(
        path.join("boot").is_dir(),
        "{} missing: run scripts/fetch-inputs.sh first",
        path.display()
    );
    path
}

/// False (after saying so loudly) when QEMU is not installed. Under CI a
/// missing QEMU is a failure, never a skip.
pub fn have_qemu() -> bool {
    let found = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "qemu-system-x86_64 is not installed, and CI must install it"
        );
        eprintln!(
            "\n!!!!!!!! SKIPPED: qemu-system-x86_64 is not installed; this QEMU test did not run !!!!!!!!\n"
        );
    }
    found
}

/// A sparse raw disk image of `size` bytes in `dir`.
pub fn disk_image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    path
}

/// A running VM whose serial console we read.
pub struct Vm {
    child: Child,
    lines: Receiver<String>,
    started: Instant,
    /// Everything the console printed so far, for failure messages.
    pub console: Vec<String>,
}

impl Vm {
    /// Starts `qemu-system-x86_64 -accel tcg -nographic -no-reboot` + `args`.
    pub fn start(args: &[&str]) -> Vm {
        let mut child = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-nographic",
                "-no-reboot",
                "-monitor",
                "none",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start qemu-system-x86_64");
        let (tx, lines) = channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                // Firmware and boot loaders print bytes that are not UTF-8.
                let mut reader = BufReader::new(stream);
                let mut buf = Vec::new();
                while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    buf.clear();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Vm {
            child,
            lines,
            started: Instant::now(),
            console: Vec::new(),
        }
    }

    /// Waits for the JSON event named `name`; returns it and the seconds since
    /// QEMU started. Panics with the console log on timeout or on an `error` event.
    pub fn event(&mut self, name: &str, timeout: Duration) -> (serde_json::Value, f64) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.console.push(line.clone());
                    // Kernel messages may precede the JSON on the same line.
                    let Some(at) = line.find("{\"event\":") else {
                        continue;
                    };
                    let Ok(event) = serde_json::from_str::<serde_json::Value>(&line[at..]) else {
                        continue;
                    };
                    if event["event"] == name {
                        return (event, self.started.elapsed().as_secs_f64());
                    }
                    assert_ne!(
                        event["event"],
                        "error",
                        "client reported an error:\n{}",
                        self.log()
                    );
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no '{name}' event within {timeout:?}:\n{}", self.log())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("QEMU exited before the '{name}' event:\n{}", self.log())
                }
            }
        }
    }

    /// Waits for QEMU to exit by itself (e.g. the client powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain();
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "QEMU still running after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Collects what the console printed since the last look.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.console.push(line);
        }
    }

    pub fn log(&self) -> String {
        let start = self.console.len().saturating_sub(80);
        self.console[start..].join("\n")
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// QEMU arguments for OVMF (q35), with a fresh copy of the variable store in
/// `dir`; `secure`: Microsoft keys enrolled and Secure Boot enforced.
pub fn ovmf_args(dir: &Path, secure: bool) -> Vec<String> {
    let (code, vars, machine) = if secure {
        ("OVMF_CODE_4M.ms.fd", "OVMF_VARS_4M.ms.fd", "q35,smm=on")
    } else {
        ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd", "q35")
    };
    let copy = dir.join(vars);
    std::fs::copy(format!("/usr/share/OVMF/{vars}"), &copy)
        .unwrap_or_else(|e| panic!("OVMF is needed (apt-get install ovmf): {vars}: {e}"));
    let mut args = vec!["-machine".to_string(), machine.to_string()];
    if secure {
        args.extend([
            "-global".into(),
            "driver=cfi.pflash01,property=secure,value=on".into(),
        ]);
    }
    args.extend([
        "-drive".into(),
        format!("if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/{code}"),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", copy.display()),
    ]);
    args
}

/// Boots the kernel and initramfs of `out/pxe` directly (QEMU's -kernel/-initrd)
/// with 512 MiB and the kernel command line `append`, plus `extra` arguments.
pub fn boot_kernel(out: &Path, append: &str, extra: &[&str]) -> Vm {
    let kernel = out.join("pxe/vmlinuz");
    let initrd = out.join("pxe/initrd.img");
    let mut args = vec![
        "-m",
        "512",
        "-kernel",
        kernel.to_str().unwrap(),
        "-initrd",
        initrd.to_str().unwrap(),
    ];
    args.extend(["-append", append]);
    args.extend(extra);
    Vm::start(&args)
}
