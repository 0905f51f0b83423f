//! The boot image's network under QEMU (TCG): DHCP from QEMU's user
//! networking, a static address, a link without DHCP giving way to the next,
//! a VLAN, and the clock set from NTP or from the HTTP Date of the agent or
//! of the EBS endpoint.

mod common;

use common::{BS, Scenario, Vm, need_qemu, out_dir};
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn boot(append: &str, nics: &[&str]) -> Vm {
    let cmdline = format!("console=ttyS0 failback.progress=json failback.after=poweroff {append}");
    let mut args = vec!["-device", "virtio-rng-pci"];
    args.extend(nics);
    common::boot_kernel(&out_dir(), &cmdline, &args)
}

/// The guest's firmware clock for the clock tests: 2001-01-01, 25 years off.
const RTC_2001: &str = "base=2001-01-01T00:00:00";
const UNIX_2001: f64 = 978_307_200.0;

/// Seconds the guest's clock must be moved: how far now is from 2001-01-01,
/// less the time the guest has been running (its clock ran from QEMU's start).
fn expected_step(qemu_started: SystemTime) -> f64 {
    qemu_started
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - UNIX_2001
}

/// `clock` (the network event's) stepped the guest's clock, `how`, from 2001-01-01 to
/// about now; QEMU started at `qemu_started`.
fn assert_stepped_to_now(clock: &serde_json::Value, qemu_started: SystemTime, how: &str) {
    let step = clock["step_s"].as_f64().unwrap();
    let expected = expected_step(qemu_started);
    eprintln!("clock stepped by {step:.1} s {how} (expected about {expected:.0})");
    assert!(
        (step - expected).abs() < 120.0,
        "step {step}, expected {expected}"
    );
}

/// A `-netdev` named `dead`: a link with carrier but nobody on it (a UDP socket pair
/// to nowhere), on ports from `base` up.
fn dead_link(base: u16) -> String {
    let port = base + (std::process::id() % 20000) as u16;
    format!(
        "socket,id=dead,udp=127.0.0.1:{port},localaddr=127.0.0.1:{}",
        port + 1
    )
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn dhcp_configures_the_link_and_dns() {
    need_qemu();
    let mut vm = boot(
        "",
        &["-nic", "user,model=virtio-net-pci,mac=52:54:00:aa:00:01"],
    );
    let (drivers, _) = vm.event("drivers", Duration::from_secs(120));
    let (net, _) = vm.event("network", Duration::from_secs(120));
    eprintln!(
        "DHCP: network configured {:.1} s after the drivers were loaded",
        net["uptime_s"].as_f64().unwrap() - drivers["uptime_s"].as_f64().unwrap()
    );
    assert_eq!(net["method"], "dhcp");
    assert_eq!(net["vlan"], serde_json::Value::Null);
    assert_eq!(net["mac"], "52:54:00:aa:00:01");
    assert_eq!(net["address"], "10.0.2.15/24");
    assert_eq!(net["gateway"], "10.0.2.2");
    assert_eq!(net["dns"], serde_json::json!(["10.0.2.3"]));
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn a_static_address_from_the_command_line() {
    need_qemu();
    let mut vm = boot(
        "failback.ip=10.0.2.77/24,10.0.2.2,10.0.2.3,9.9.9.9",
        &["-nic", "user,model=e1000"],
    );
    let (net, _) = vm.event("network", Duration::from_secs(120));
    assert_eq!(net["method"], "static");
    assert_eq!(net["address"], "10.0.2.77/24");
    assert_eq!(net["gateway"], "10.0.2.2");
    assert_eq!(net["dns"], serde_json::json!(["10.0.2.3", "9.9.9.9"]));
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn a_link_without_dhcp_times_out_and_the_next_is_tried() {
    need_qemu();
    // eth0: a link with carrier but nobody on it; eth1: QEMU's user networking with
    // its DHCP server.
    let dead = dead_link(20000);
    let mut vm = boot(
        "failback.dhcp_timeout=4",
        &[
            "-netdev",
            &dead,
            "-device",
            "e1000,netdev=dead,mac=52:54:00:aa:00:01",
            "-netdev",
            "user,id=live",
            "-device",
            "e1000,netdev=live,mac=52:54:00:aa:00:02",
        ],
    );
    let (drivers, _) = vm.event("drivers", Duration::from_secs(120));
    let (net, _) = vm.event("network", Duration::from_secs(120));
    let took = net["uptime_s"].as_f64().unwrap() - drivers["uptime_s"].as_f64().unwrap();
    eprintln!("DHCP timeout (4 s) on eth0, then a lease on eth1: {took:.1} s after the drivers");
    assert_eq!(net["interface"], "eth1", "the second link: {net}");
    assert_eq!(net["mac"], "52:54:00:aa:00:02", "the second link: {net}");
    assert_eq!(net["address"], "10.0.2.15/24");
    assert!(took >= 4.0, "eth0 was given its 4 s: {took}");
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn no_dhcp_anywhere_is_one_clear_error() {
    need_qemu();
    let dead = dead_link(40000);
    let mut vm = boot(
        "failback.dhcp_timeout=3",
        &["-netdev", &dead, "-device", "virtio-net-pci,netdev=dead"],
    );
    let (error, _) = vm.event("error", Duration::from_secs(120));
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("no DHCP offer on eth0 within 3 s") && message.contains("failback.ip="),
        "{message}"
    );
    assert!(
        vm.wait_exit(Duration::from_secs(60)).success(),
        "after = poweroff also on error"
    );
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn a_static_address_reaches_the_host_and_the_agent_date_sets_the_clock() {
    need_qemu();
    let served = Scenario::serve(&[("v", &vec![0u8; BS])]);
    let url = served.guest_url();
    // No disk to map the volume to: the pull stops with an error after the network event.
    let started = SystemTime::now();
    let mut vm = boot(
        &format!(
            "failback.ip=10.0.2.15/24,10.0.2.2,10.0.2.3 {}",
            served.kernel_source()
        ),
        &["-rtc", RTC_2001, "-nic", "user,model=e1000"],
    );
    let (net, _) = vm.event("network", Duration::from_secs(180));
    assert_eq!(net["method"], "static");
    assert_eq!(net["address"], "10.0.2.15/24");
    assert_eq!(net["gateway"], "10.0.2.2");
    let clock = &net["clock"];
    assert_eq!(clock["source"], "http-date", "{net}");
    assert_eq!(clock["server"], url.as_str());
    assert_stepped_to_now(clock, started, "from the agent's Date");
    vm.wait_exit(Duration::from_secs(60));
    assert!(
        vm.log().contains("no free local disk is large enough"),
        "the pull went on without a disk to map to:\n{}",
        vm.log()
    );
}

/// An EBS endpoint that signs nobody in: every request on 127.0.0.1 (the guest's
/// 10.0.2.2) is answered 403 AccessDeniedException with the host's `Date`, as the
/// real one answers a request it cannot authenticate. Records each request line.
fn refusing_ebs() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && matches!(stream.read(&mut byte), Ok(1)) {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head);
            s.lock()
                .unwrap()
                .push(head.lines().next().unwrap_or("").to_string());
            let body = r#"{"message":"no"}"#;
            let answer = format!(
                "HTTP/1.1 403 Forbidden\r\nDate: {}\r\nx-amzn-ErrorType: AccessDeniedException\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                httpdate::fmt_http_date(SystemTime::now()),
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (port, seen)
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn without_ntp_the_ebs_endpoint_date_sets_the_clock() {
    need_qemu();
    let (port, requests) = refusing_ebs();
    let endpoint = format!("http://10.0.2.2:{port}");
    // Region, credentials and endpoint reach PID 1 only through the preset's [aws].
    let tmp = tempfile::tempdir().unwrap();
    let preset = tmp.path().join("failback.toml");
    std::fs::write(
        &preset,
        format!(
            "source = \"ebs://snap-0123456789abcdef0\"\n\n[aws]\nregion = \"eu-west-1\"\n\
             access_key_id = \"AKIDTEST\"\nsecret_access_key = \"not-a-secret\"\n\
             endpoint = \"{endpoint}\"\n"
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    common::build_into(&out, &["--config", preset.to_str().unwrap()]);
    let started = SystemTime::now();
    let mut vm = common::boot_kernel(
        &out,
        "console=ttyS0 failback.progress=json failback.after=poweroff",
        &[
            "-device",
            "virtio-rng-pci",
            "-rtc",
            RTC_2001,
            "-nic",
            "user,model=virtio-net-pci",
        ],
    );
    let (net, _) = vm.event("network", Duration::from_secs(180));
    assert_eq!(net["ntp"], serde_json::json!([]), "no NTP from DHCP: {net}");
    let clock = &net["clock"];
    assert_eq!(clock["source"], "http-date", "{net}");
    assert_eq!(clock["server"], endpoint.as_str());
    assert_stepped_to_now(clock, started, "from the EBS endpoint's Date");
    // The endpoint refuses the listing: one clear error, then poweroff.
    let (error, _) = vm.event("error", Duration::from_secs(120));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("access denied to EBS snapshot"),
        "{error}"
    );
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
    let requests = requests.lock().unwrap();
    assert_eq!(
        requests[0], "HEAD / HTTP/1.1",
        "the Date first: {requests:?}"
    );
    assert!(
        requests[1].starts_with("GET /snapshots/snap-0123456789abcdef0/blocks"),
        "then the listing: {requests:?}"
    );
}

/// An SNTP server on 127.0.0.1 (the guest's 10.0.2.2) answering with the
/// host's clock; counts the requests.
fn sntp_server() -> (u16, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if n < 48 || buf[0] & 7 != 3 {
                continue;
            }
            c.fetch_add(1, Ordering::SeqCst);
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            let ts = ((now.as_secs() + 2_208_988_800) << 32)
                | ((u64::from(now.subsec_nanos()) << 32) / 1_000_000_000);
            let mut reply = [0u8; 48];
            reply[0] = (4 << 3) | 4;
            reply[1] = 2;
            reply[24..32].copy_from_slice(&buf[40..48]);
            reply[32..40].copy_from_slice(&ts.to_be_bytes());
            reply[40..48].copy_from_slice(&ts.to_be_bytes());
            let _ = socket.send_to(&reply, from);
        }
    });
    (port, count)
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn ntp_sets_the_clock_before_anything_else() {
    need_qemu();
    let (port, requests) = sntp_server();
    let started = SystemTime::now();
    let mut vm = boot(
        &format!("failback.ntp=10.0.2.2:{port}"),
        &["-rtc", RTC_2001, "-nic", "user,model=virtio-net-pci"],
    );
    let (net, _) = vm.event("network", Duration::from_secs(180));
    let clock = &net["clock"];
    assert_eq!(clock["source"], "ntp", "{net}");
    assert_eq!(clock["server"], format!("10.0.2.2:{port}"));
    assert_stepped_to_now(clock, started, "by NTP");
    assert!(requests.load(Ordering::SeqCst) >= 1);
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn a_vlan_interface_carries_the_address() {
    need_qemu();
    let mut vm = boot(
        "failback.vlan=42 failback.ip=192.0.2.10/24,192.0.2.1,192.0.2.53",
        &["-nic", "user,model=virtio-net-pci,mac=52:54:00:aa:00:07"],
    );
    let (net, _) = vm.event("network", Duration::from_secs(120));
    assert_eq!(net["interface"], "eth0.42", "{net}");
    assert_eq!(net["vlan"], 42);
    assert_eq!(net["mac"], "52:54:00:aa:00:07");
    assert_eq!(net["address"], "192.0.2.10/24");
    assert_eq!(net["method"], "static");
    assert_eq!(
        net["clock"]["source"], "none",
        "no NTP server and no source: {net}"
    );
    vm.drain();
    assert!(
        vm.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        vm.log()
    );
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn the_lease_is_renewed_with_the_server_while_the_client_runs() {
    need_qemu();
    // QEMU's leases last 24 h: failback.dhcp_renew=3 brings the first T1 forward.
    // failback.after=wait keeps the client (and its renewal thread) running.
    let mut vm = boot(
        "failback.dhcp_renew=3 failback.after=wait",
        &["-nic", "user,model=virtio-net-pci"],
    );
    let (net, _) = vm.event("network", Duration::from_secs(120));
    assert_eq!(net["method"], "dhcp");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (notice, _) = vm.event("notice", deadline - std::time::Instant::now());
        let message = notice["message"].as_str().unwrap();
        if message.starts_with("DHCP on eth0") {
            assert_eq!(
                message,
                "DHCP on eth0: lease of 10.0.2.15 renewed (renewing with 10.0.2.2) for 86400 s",
                "{}",
                vm.log()
            );
            break;
        }
    }
}
