//! A volume pulled in many windows (`--window-blocks`, hidden, small here): through
//! faults, killed and resumed, and reviewed before writing. Each ends with the
//! volume's bytes on the target and the whole-volume digests of the volume.

mod common;
use common::*;
use std::fs;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

/// 41 blocks and a short tail (windows of 4: eleven, the last one short), some of
/// them zeros; the target holds an older state where two blocks in three differ.
fn setup(seed: u64) -> OneVolume {
    let blocks = 42;
    let mut old = random_bytes(blocks * BS, seed);
    old.truncate(blocks * BS - 3000);
    let changed: Vec<usize> = (0..blocks).filter(|b| b % 3 != 1).collect();
    let mut new = mutate(&old, &changed, seed + 1);
    for b in [5, 17, 30] {
        new[b * BS..(b + 1) * BS].fill(0);
    }
    OneVolume::serve("v", new, old)
}

/// The end of a pull: the target holds the volume, and the volume's digests (the
/// target's and the agent's) are those of all its blocks in order.
fn assert_whole(s: &OneVolume, out: &std::process::Output) {
    assert!(out.status.success(), "{}", text(out));
    assert_eq!(fs::read(&s.target).unwrap(), s.new, "target differs");
    let evs = events(out);
    let done = event(&evs, "volume_done").expect("a volume_done event");
    let digest = linear_digest(&s.new);
    assert_eq!(done["sha256"], digest.as_str());
    assert_eq!(done["remote_sha256"], digest.as_str());
}

#[test]
fn many_windows_through_drops_and_flipped_bytes() {
    let s = setup(41);
    let faults = Faults {
        drop: 0.004,
        flip: 0.004,
        ..Faults::default()
    };
    let proxy = Proxy::start(s.served.agent.port, faults, 7);
    let args = ["--yes", "--progress", "json", "--window-blocks", "4"];
    let args = [&args[..], &["--timeout", "2", "--max-attempts", "40"]].concat();
    let out = run(s.pull_via(&proxy.url(), &args));
    assert_whole(&s, &out);
    let evs = events(&out);
    let differing = differing_blocks(&s.old, &s.new).len() as u64;
    assert_eq!(event(&evs, "plan").unwrap()["differing"], differing);
    let injected = proxy.drops.load(std::sync::atomic::Ordering::Relaxed)
        + proxy.flips.load(std::sync::atomic::Ordering::Relaxed);
    assert!(injected > 0, "the proxy injected nothing");
    assert!(event(&evs, "done").unwrap()["retries"].as_u64().unwrap() > 0);
}

#[test]
fn many_windows_killed_mid_pull_resume_to_the_volume() {
    let s = setup(51);
    // A slow wire, so that kills land while windows are being pulled.
    let faults = Faults {
        rate: 3 << 20,
        ..Faults::default()
    };
    let proxy = Proxy::start(s.served.agent.port, faults, 9);
    let args = ["--yes", "--progress", "json", "--window-blocks", "4"];
    let mut states = Vec::new();
    for wait in [700, 1200, 900] {
        let mut child = s.pull_via(&proxy.url(), &args).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(wait));
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(event(&events(&out), "volume_done").is_none(), "not killed");
        states.push(fs::read(&s.target).unwrap());
    }
    let out = run(s.pull_via(&proxy.url(), &args));
    assert_whole(&s, &out);
    // The killed runs got somewhere, and the last run pulled only what was left.
    let left = differing_blocks(&states[2], &s.new).len() as u64;
    assert!(left < differing_blocks(&s.old, &s.new).len() as u64);
    assert_eq!(event(&events(&out), "plan").unwrap()["differing"], left);
}

#[test]
fn a_reviewed_plan_of_many_windows_is_pulled_as_planned() {
    // Windows of 2: more than a reviewed plan keeps, so most are planned again
    // after the confirmation.
    let s = setup(61);
    let mut cmd = s.pull(&["--progress", "json", "--window-blocks", "2"]);
    let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"yes\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(text(&out).contains("Type 'yes'"), "{}", text(&out));
    assert_whole(&s, &out);
    let evs = events(&out);
    let plan = event(&evs, "plan").unwrap();
    let done = event(&evs, "volume_done").unwrap();
    let differing = differing_blocks(&s.old, &s.new).len() as u64;
    assert_eq!(plan["differing"], differing);
    assert_eq!(done["zero_blocks"], plan["zero_blocks"]);
    assert_eq!(
        done["pulled_blocks"].as_u64().unwrap(),
        differing - plan["zero_blocks"].as_u64().unwrap()
    );
}
