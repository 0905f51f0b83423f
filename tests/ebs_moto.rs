//! `failback pull --source ebs://…` against moto's server (a real peer speaking the
//! EBS direct APIs with SigV4), snapshots uploaded with boto3. Needs `.venv-moto`
//! (`scripts/moto-venv.sh`, or MOTO_VENV): ignored by a plain `cargo test`, run by
//! `scripts/test.sh`, and a failure (never a pass) without the venv.

mod common;

use common::{assert_pulled, disk_image_with, venv_python};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BS: usize = 512 * 1024;

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ebs_support")
        .join(name)
}

fn moto(py: &Path) -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(py)
        .arg(support("moto_server.py"))
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let m = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "moto did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    m
}

fn aws(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
}

/// Uploads `image` as a snapshot with boto3; returns its id.
fn upload(py: &Path, m: &Moto, image: &Path) -> String {
    let out = aws(Command::new(py)
        .arg(support("snapshots.py"))
        .arg(&m.endpoint)
        .arg(image))
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn pull(m: &Moto, source: &str, snap: &str, target: &Path) -> Output {
    let out = aws(&mut Command::new(env!("CARGO_BIN_EXE_failback")))
        .args(["pull", "--source", source, "--yes", "--progress", "json"])
        .arg("--map")
        .arg(format!("{snap}={}", target.display()))
        .env("AWS_ENDPOINT_URL_EBS", &m.endpoint)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// A 1 GiB volume image with data in every 5th block, zeros elsewhere.
fn volume(seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; 1 << 30];
    let mut x = seed | 1;
    for b in (0..2048).step_by(5) {
        for chunk in v[b * BS..(b + 1) * BS].chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
    }
    v
}

#[test]
#[ignore = "needs moto's server: scripts/test.sh runs it (scripts/moto-venv.sh)"]
fn snapshots_from_moto_pull_byte_for_byte_in_full_and_from_a_base() {
    let py = venv_python();
    let m = moto(&py);
    let dir = tempfile::tempdir().unwrap();
    let old = volume(7);
    let old_path = dir.path().join("old.img");
    std::fs::write(&old_path, &old).unwrap();
    // The new state: 5 blocks rewritten (moto reports changes only for blocks the
    // base holds), one block emptied.
    let mut new = old.clone();
    for b in [0usize, 5, 100, 1000, 2045] {
        new[b * BS..(b + 1) * BS]
            .iter_mut()
            .for_each(|x| *x = x.wrapping_add(1));
    }
    new[10 * BS..11 * BS].fill(0);
    let new_path = dir.path().join("new.img");
    std::fs::write(&new_path, &new).unwrap();
    let snap_old = upload(&py, &m, &old_path);
    let snap_new = upload(&py, &m, &new_path);

    // Full pull into a target with garbage where the snapshot has zeros.
    let target = disk_image_with(dir.path(), "disk.img", 1 << 30, 3 * BS as u64, &[0x5a; BS]);
    let out = pull(&m, &format!("ebs://{snap_old}"), &snap_old, &target);
    assert_pulled(
        &out,
        &target,
        &old,
        "full pull differs from the snapshot",
        &[r#""pulled_blocks":410"#, r#""zero_blocks":1"#],
    );

    // From the base: only the changed blocks.
    let out = pull(
        &m,
        &format!("ebs://{snap_new}?base={snap_old}"),
        &snap_new,
        &target,
    );
    assert_pulled(
        &out,
        &target,
        &new,
        "pull from the base differs",
        &[r#""pulled_blocks":5"#, r#""zero_blocks":1"#],
    );
}
