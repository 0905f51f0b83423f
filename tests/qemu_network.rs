//! The boot image's network under QEMU (TCG): DHCP from QEMU's user
//! networking, a static address, and a link without DHCP giving way to the next.

mod common;

use common::{Vm, have_qemu, out_dir};
use std::time::Duration;

fn boot(append: &str, nics: &[&str]) -> Vm {
    let cmdline = format!("console=ttyS0 failback.progress=json failback.after=poweroff {append}");
    common::boot_kernel(&out_dir(), &cmdline, nics)
}

#[test]
fn dhcp_configures_the_link_and_dns() {
    if !have_qemu() {
        return;
    }
    let mut vm = boot(
        "",
        &["-nic", "user,model=virtio-net-pci,mac=52:54:00:aa:00:01"],
    );
    let (net, _) = vm.event("network", Duration::from_secs(120));
    assert_eq!(net["method"], "dhcp");
    assert_eq!(net["mac"], "52:54:00:aa:00:01");
    assert_eq!(net["address"], "10.0.2.15/24");
    assert_eq!(net["gateway"], "10.0.2.2");
    assert_eq!(net["dns"], serde_json::json!(["10.0.2.3"]));
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
}

#[test]
fn a_static_address_from_the_command_line() {
    if !have_qemu() {
        return;
    }
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
fn a_link_without_dhcp_times_out_and_the_next_is_tried() {
    if !have_qemu() {
        return;
    }
    // eth0: a link with carrier but nobody on it (a UDP socket pair to nowhere);
    // eth1: QEMU's user networking with its DHCP server.
    let port = 20000 + (std::process::id() % 20000) as u16;
    let dead = format!(
        "socket,id=dead,udp=127.0.0.1:{port},localaddr=127.0.0.1:{}",
        port + 1
    );
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
    let (net, _) = vm.event("network", Duration::from_secs(120));
    assert_eq!(net["mac"], "52:54:00:aa:00:02", "the second link: {net}");
    assert_eq!(net["address"], "10.0.2.15/24");
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
}

#[test]
fn no_dhcp_anywhere_is_one_clear_error() {
    if !have_qemu() {
        return;
    }
    let port = 40000 + (std::process::id() % 20000) as u16;
    let dead = format!(
        "socket,id=dead,udp=127.0.0.1:{port},localaddr=127.0.0.1:{}",
        port + 1
    );
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
