//! A booted host reports to a collector: the image pulls a volume from the agent on
//! the host side and, told `failback.report=` and `failback.host=`, sends its events to
//! a collector (`failback serve` without volumes) there, which shows the host in
//! `GET /v1/sessions`: its name, MAC, state done and the bytes pulled.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn sessions(agent: &Agent) -> serde_json::Map<String, serde_json::Value> {
    let resp = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(format!("{}/v1/sessions", agent.url()))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert!(resp.status().is_success());
    resp.json().unwrap()
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn a_booted_host_reports_to_the_collector_under_its_name() {
    need_qemu();
    let out = out_dir();
    let remote = random_bytes(16 * BS, 61);
    let changed: Vec<usize> = (0..16).step_by(4).collect();
    let s = OneVolume::serve("system", remote.clone(), mutate(&remote, &changed, 62));
    let pulled = differing_blocks(&remote, &s.old).len();
    // The collector shares the agent's certificate (its state directory copied): the
    // fingerprint given for the source serves for the report too.
    let state = s.served.path().join("collector-state");
    std::fs::create_dir(&state).unwrap();
    for file in ["agent-cert.pem", "agent-key.pem"] {
        std::fs::copy(s.served.agent.state.join(file), state.join(file)).unwrap();
    }
    let collector = Agent::start(&state, &[], 0);
    assert_eq!(collector.fingerprint, s.served.agent.fingerprint);

    let cmdline = s.kernel_cmdline(&format!(
        "failback.host=rack1-07 failback.report=https://10.0.2.2:{}",
        collector.port
    ));
    let mut vm = boot_kernel_with_disk(&out, &cmdline, &s.target, ",mac=52:54:00:12:34:56");
    vm.event("done", Duration::from_secs(300));
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
    assert!(std::fs::read(&s.target).unwrap() == s.new);

    let deadline = Instant::now() + Duration::from_secs(20);
    let host = loop {
        let hosts = sessions(&collector);
        if let Some(h) = hosts.values().find(|h| h["state"] == "done") {
            break h.clone();
        }
        assert!(Instant::now() < deadline, "{hosts:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(host["host"], "rack1-07", "{host}");
    assert_eq!(host["mac"], "52:54:00:12:34:56", "{host}");
    assert_eq!(host["source"], s.served.guest_url(), "{host}");
    let system = &host["volumes"]["system"];
    assert_eq!(system["matched"], true, "{host}");
    assert_eq!(system["pulled_bytes"], (pulled * BS) as u64, "{host}");
    // The report went to the collector only.
    assert!(sessions(&s.served.agent).is_empty());
    assert!(collector.output().contains("client rack1-07 ("));
}
