//! `failback serve --freeze` on a real file system: an ext4 on a loop device,
//! served while mounted. Cutover freezes it for the final pass (a write waits),
//! thaws it after, and the target is a clean file system holding what was written
//! before cutover.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A 64 MiB ext4 image on a loop device, mounted; detached on drop.
struct Loop {
    dev: String,
    mnt: PathBuf,
}

impl Loop {
    fn new(dir: &Path) -> Loop {
        let img = disk_image(dir, "fs.img", 64 << 20);
        let out = tool("losetup", &["-f", "--show", img.to_str().unwrap()]);
        assert!(out.status.success(), "losetup: {out:?}");
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let mnt = dir.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let l = Loop { dev, mnt };
        assert!(tool("mkfs.ext4", &["-q", &l.dev]).status.success());
        assert!(
            tool("mount", &[&l.dev, l.mnt.to_str().unwrap()])
                .status
                .success()
        );
        l
    }

    /// Writes `bytes` to a new file `name` on the file system and flushes it: while
    /// the file system is frozen, this waits.
    fn write_through(&self, name: &str, bytes: &[u8]) {
        let mut file = std::fs::File::create(self.mnt.join(name)).unwrap();
        file.write_all(bytes).unwrap();
        file.sync_all().unwrap();
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // Thawed whatever happened, then let go.
        let _ = tool("fsfreeze", &["--unfreeze", self.mnt.to_str().unwrap()]);
        let _ = tool("umount", &[self.mnt.to_str().unwrap()]);
        let _ = tool("losetup", &["-d", &self.dev]);
    }
}

/// Starts an unattended `failback pull --continuous` from `agent`, a pass every
/// `interval` seconds, onto a new 64 MiB `target.img` in `dir`; returns both.
fn pull_continuously(agent: &Agent, dir: &Path, interval: &str) -> (PathBuf, Child) {
    let target = disk_image(dir, "target.img", 64 << 20);
    let map = mapping("fs", &target);
    let args = continuous_args(interval, &map);
    let child = pull_cmd(&agent.url(), &agent.fingerprint, &args)
        .spawn()
        .unwrap();
    (target, child)
}

#[test]
#[ignore = "needs root and /dev/loop-control: mounts an ext4 on a loop device"]
fn cutover_freezes_the_served_file_system_for_the_final_pass_only() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Loop::new(dir.path());
    let before = random_bytes(3 << 20, 5);
    std::fs::write(fs.mnt.join("before"), &before).unwrap();

    let agent = Agent::start_with(
        &dir.path().join("agent-state"),
        &[("fs", Path::new(&fs.dev))],
        0,
        |cmd| {
            cmd.arg("--freeze");
        },
    );
    let shown = format!("freeze:      {}", fs.mnt.display());
    agent.wait_for_output(&shown, Duration::from_secs(10));
    let (target, mut child) = pull_continuously(&agent, dir.path(), "0.2");
    let passes = Arc::new(Mutex::new(0));
    let reader = {
        let (passes, stdout) = (passes.clone(), child.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(r#""event":"pass""#) {
                    *passes.lock().unwrap() += 1;
                }
                lines.push(line);
            }
            lines
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while *passes.lock().unwrap() < 2 {
        assert!(Instant::now() < deadline, "no passes: {}", agent.output());
        std::thread::sleep(Duration::from_millis(100));
    }

    let cutover = std::thread::spawn({
        let (url, fp) = (agent.url(), agent.fingerprint.clone());
        move || cutover(&url, &fp, &[])
    });
    // Once frozen, a write (and its flush) waits for the thaw.
    agent.wait_for_output("froze ", Duration::from_secs(30));
    fs.write_through("late", b"after cutover");
    let at_write = agent.output();
    assert!(
        at_write.contains("thawed the served file systems (every client asked ended"),
        "the write went through before the thaw: {at_write}"
    );
    let out = cutover.join().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("digests match"),
        "{out:?}"
    );
    assert!(child.wait().unwrap().success());
    let lines = reader.join().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#""event":"cutover_done""#)),
        "{lines:?}"
    );

    // The target is a clean file system with what was written before cutover.
    let t = target.to_str().unwrap();
    let fsck = tool("e2fsck", &["-fn", t]);
    assert!(fsck.status.success(), "{fsck:?}");
    let dumped = dir.path().join("before.out");
    let cmd = format!("dump /before {}", dumped.display());
    assert!(tool("debugfs", &["-R", &cmd, t]).status.success());
    assert!(std::fs::read(&dumped).unwrap() == before);
}

#[test]
#[ignore = "needs root and /dev/loop-control: mounts an ext4 on a loop device"]
fn a_client_that_vanishes_in_its_final_pass_leaves_no_frozen_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Loop::new(dir.path());
    let agent = Agent::start_with(
        &dir.path().join("agent-state"),
        &[("fs", Path::new(&fs.dev))],
        0,
        |cmd| {
            cmd.args(["--freeze", "--freeze-timeout", "3"]);
        },
    );
    let (_target, mut child) = pull_continuously(&agent, dir.path(), "60");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(read_to_first_pass(lines.by_ref()), "no pass");
    // The agent's readable line for the pass event.
    agent.wait_for_output(": pass 1: ", Duration::from_secs(30));
    // The client goes before it hears of cutover: nobody will end the freeze but
    // the timeout.
    child.kill().unwrap();
    child.wait().unwrap();
    let cutover = cutover(&agent.url(), &agent.fingerprint, &["--timeout", "2"]);
    assert!(!cutover.status.success());
    let said = String::from_utf8_lossy(&cutover.stdout);
    assert!(said.contains("VANISHED"), "{cutover:?}");
    assert!(agent.output().contains("froze "), "{}", agent.output());
    // A write waits for the thaw at the timeout, then goes through.
    let t0 = Instant::now();
    fs.write_through("late", b"after the timeout");
    let log = agent.output();
    assert!(
        log.contains("thawed the served file systems (--freeze-timeout)"),
        "{log}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30));
}
