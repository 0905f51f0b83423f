//! Resume by construction: `failback pull` killed with SIGKILL at 20 random moments
//! and restarted converges to a byte-identical target, each run planning no more
//! than the one before (it pulls only what is still missing).
//!
//! (No old-or-new watch here: SIGKILL can cut a 512 KiB buffered write short, which
//! leaves that one block partly written until the next run re-pulls it. The watch
//! runs in the fault tests, where the client is not killed.)

mod common;
use common::*;
use std::fs;
use std::time::{Duration, Instant};

#[test]
fn twenty_kill_nine_points_then_convergence() {
    let blocks = 48; // 24 MiB
    let old = random_bytes(blocks * BS, 11);
    let changed: Vec<usize> = (0..blocks).filter(|b| b % 5 != 0).collect();
    let new = mutate(&old, &changed, 12);
    let s = OneVolume::serve("v", new, old);
    // Slow the wire so that kills land while blocks are being pulled.
    let proxy = Proxy::start(
        s.served.agent.port,
        Faults {
            rate: 12 << 20,
            ..Faults::default()
        },
        5,
    );
    let url = proxy.url();
    let args = ["--yes", "--progress", "json", "--connections", "3"];

    let mut rng = Rng::new(99);
    let mut planned: Vec<u64> = Vec::new();
    let started = Instant::now();
    for _ in 0..20 {
        let mut child = s.pull_via(&url, &args).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(150 + rng.below(900)));
        child.kill().unwrap(); // SIGKILL
        let out = child.wait_with_output().unwrap();
        if let Some(p) = event(&events(&out), "plan") {
            planned.push(p["differing"].as_u64().unwrap());
        }
    }
    let out = run(s.pull_via(&url, &args));
    assert!(out.status.success(), "{}", text(&out));
    let evs = events(&out);
    let last_plan = event(&evs, "plan").unwrap()["differing"].as_u64().unwrap();
    planned.push(last_plan);
    assert_eq!(
        fs::read(&s.target).unwrap(),
        s.new,
        "target differs after the last run"
    );
    assert_eq!(
        event(&evs, "volume_done").unwrap()["sha256"],
        linear_digest(&s.new).as_str()
    );

    // Each run plans at most what the previous one did: what was written stays written.
    assert!(
        planned.windows(2).all(|w| w[1] <= w[0]),
        "plans grew: {planned:?}"
    );
    // And some runs were killed mid-pull, so the plans really shrank.
    assert_eq!(planned[0], changed.len() as u64, "first plan: {planned:?}");
    assert!(
        last_plan < changed.len() as u64 / 2,
        "kills never landed mid-pull: {planned:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(120));
}
