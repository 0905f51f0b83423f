//! The boot image pulls continuously (`failback.continuous=1`, unattended) while a
//! writer on the host keeps changing the served volume; the writer stops,
//! `failback cutover` runs on the host, and the client's final pass makes the
//! local disk equal the volume before it does `after` (here: power off).

mod common;

use common::{BS, OneVolume, Rng, TOKEN, bin, mutate, need_qemu, out_dir, random_bytes};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn the_image_pulls_in_passes_until_cutover_then_powers_off() {
    need_qemu();
    let out = out_dir();
    let blocks = 32;
    let remote = random_bytes(blocks * BS, 17);
    let local = mutate(&remote, &(0..blocks).step_by(2).collect::<Vec<_>>(), 3);
    let s = OneVolume::serve("system", remote, local);
    let served = s.served.path().join("served-system.img");

    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (writing, served) = (writing.clone(), served.clone());
        std::thread::spawn(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(served)
                .unwrap();
            let mut rng = Rng::new(5);
            while writing.load(Relaxed) {
                let mut buf = vec![0u8; 4096];
                rng.fill(&mut buf);
                file.write_all_at(&buf, rng.below((blocks * BS - 4096) as u64))
                    .unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
            file.sync_all().unwrap();
        })
    };

    let cmdline = format!(
        "console=ttyS0 failback.progress=json failback.after=poweroff failback.unattended=1 \
         failback.continuous=1 failback.host=vm1 {} failback.map=system=/dev/vda",
        s.served.kernel_source()
    );
    let mut vm = common::boot_kernel(
        &out,
        &cmdline,
        &[
            "-drive",
            &format!("if=none,id=local,format=raw,file={}", s.target.display()),
            "-device",
            "virtio-blk-pci,drive=local",
            "-nic",
            "user,model=virtio-net-pci",
        ],
    );
    let (first, _) = vm.event("pass", Duration::from_secs(300));
    assert_eq!(first["consistent"], false, "{first}");
    assert_eq!(first["host"], "vm1", "{first}");
    let (second, _) = vm.event("pass", Duration::from_secs(120));
    assert_eq!(second["pass"], 2, "{second}");
    writing.store(false, Relaxed);
    writer.join().unwrap();

    let cutover = Command::new(bin())
        .args(["cutover", "--source", &s.served.agent.url()])
        .args([
            "--fingerprint",
            &s.served.agent.fingerprint,
            "--host",
            "vm1",
        ])
        .env("FAILBACK_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&cutover.stdout).to_string();
    assert!(cutover.status.success(), "{cutover:?}\n{}", vm.log());
    assert!(said.starts_with("vm1: digests match"), "{said}");
    let (done, at) = vm.event("cutover_done", Duration::from_secs(120));
    eprintln!("cutover done {at:.1} s after QEMU started: {done}");
    assert_eq!(done["consistent"], true);
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
    assert!(
        std::fs::read(&s.target).unwrap() == std::fs::read(&served).unwrap(),
        "the local disk equals the served volume after cutover"
    );
}
