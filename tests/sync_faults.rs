//! Faults between client and agent: a proxy drops connections, stalls and flips
//! bytes; the agent is killed and restarted mid-pull. The pull must finish with a
//! byte-identical target, count its retries, and never put a block on the target
//! that is neither its old nor its new content.

mod common;
use common::*;
use std::fs;
use std::process::Command;
use std::time::Duration;

/// Volume `v` served, and a target holding an older state: two blocks in three differ.
fn setup(blocks: usize, seed: u64) -> OneVolume {
    let old = random_bytes(blocks * BS, seed);
    let changed: Vec<usize> = (0..blocks).filter(|b| b % 3 != 1).collect();
    let new = mutate(&old, &changed, seed + 1);
    OneVolume::serve("v", new, old)
}

/// `failback pull` through `proxy`, with JSON progress and no questions, plus `extra`
/// arguments.
fn pull_through(s: &OneVolume, proxy: &Proxy, extra: &[&str]) -> Command {
    let args = [&["--yes", "--progress", "json"], extra].concat();
    s.pull_via(&proxy.url(), &args)
}

#[test]
fn drops_stalls_and_flipped_bytes_never_corrupt_the_target() {
    let s = setup(40, 21);
    let (agent, tgt) = (&s.served.agent, &s.target);
    let faults = Faults {
        drop: 0.004,
        stall: 0.002,
        stall_for: Duration::from_secs(3),
        flip: 0.004,
        rate: 0,
    };
    let proxy = Proxy::start(agent.port, faults, 77);
    let watch = Watch::start(tgt, &s.old, &s.new);
    let out = run(pull_through(
        &s,
        &proxy,
        &["--timeout", "2", "--max-attempts", "40"],
    ));
    let scans = watch
        .finish()
        .expect("every block old or new during the pull");
    assert!(out.status.success(), "{}", text(&out));
    assert!(scans > 0);
    assert_eq!(fs::read(tgt).unwrap(), s.new);
    let evs = events(&out);
    let retries = event(&evs, "done").unwrap()["retries"].as_u64().unwrap();
    let injected = proxy.drops.load(std::sync::atomic::Ordering::Relaxed)
        + proxy.flips.load(std::sync::atomic::Ordering::Relaxed)
        + proxy.stalls.load(std::sync::atomic::Ordering::Relaxed);
    assert!(injected > 0, "the proxy injected nothing");
    assert!(
        retries > 0,
        "faults were injected ({injected}) but no retry was reported"
    );
    assert!(!text(&out).contains(TOKEN));
    assert!(!agent.output().contains(TOKEN));
}

#[test]
fn an_agent_restarted_mid_pull_is_survived() {
    let mut s = setup(40, 31);
    let (old, new, tgt) = (&s.old, &s.new, &s.target);
    let fp = s.served.agent.fingerprint.clone();
    let proxy = Proxy::start(
        s.served.agent.port,
        Faults {
            rate: 8 << 20,
            ..Faults::default()
        },
        3,
    );
    let watch = Watch::start(tgt, old, new);
    let child = pull_through(&s, &proxy, &["--timeout", "3"])
        .spawn()
        .unwrap();
    // Kill the agent once the first new blocks have landed on the target.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = fs::read(tgt).unwrap();
        let landed = block_hashes(&now)
            .iter()
            .zip(block_hashes(new))
            .zip(block_hashes(old))
            .filter(|((t, n), o)| *t == n && n != o)
            .count();
        if landed > 0 {
            assert!(
                landed < 20,
                "the pull was nearly over before the agent was killed"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no block landed");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.served.agent.kill();
    std::thread::sleep(Duration::from_millis(800));
    let agent2 = s.served.agent.start_again();
    assert_eq!(
        agent2.fingerprint, fp,
        "the restarted agent keeps its certificate"
    );
    let out = child.wait_with_output().unwrap();
    watch
        .finish()
        .expect("every block old or new during the pull");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(tgt).unwrap(), *new);
    let evs = events(&out);
    assert!(event(&evs, "done").unwrap()["retries"].as_u64().unwrap() > 0);
}
