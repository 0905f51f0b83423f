//! Building test images with `failback build`, the tools that check them, and the
//! recovered system's volume that the ISO failback tests serve.

use super::data::random_bytes;
use super::paths::{bin, inputs_dir, recovered_init, repo, static_client};
use std::path::Path;
use std::process::{Command, Output};

/// Runs the `failback` under test (this build), with SOURCE_DATE_EPOCH fixed.
pub fn failback(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .current_dir(repo())
        .output()
        .expect("cannot run failback")
}

/// `failback build` into `out` with the static client; panics with its output on failure.
pub fn build_into(out: &Path, extra: &[&str]) {
    build_image(out, &static_client(), extra);
}

/// The arguments of [`failback`] for `failback build` from `inputs` into `out` with
/// `client` as the image's `/init`.
pub fn build_args<'a>(inputs: &'a str, out: &'a str, client: &'a str) -> [&'a str; 7] {
    [
        "build", "--inputs", inputs, "--out", out, "--client", client,
    ]
}

/// `failback build` into `out` with `client` as the image's `/init`.
pub fn build_image(out: &Path, client: &Path, extra: &[&str]) {
    let inputs = inputs_dir();
    let mut args = build_args(
        inputs.to_str().unwrap(),
        out.to_str().unwrap(),
        client.to_str().unwrap(),
    )
    .to_vec();
    args.extend_from_slice(extra);
    let o = failback(&args);
    assert!(
        o.status.success(),
        "failback build failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs an oracle tool; a missing tool is a failure (CI installs it), never a skip.
pub fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("{name} is needed by this test (apt-get install xorriso genisoimage gdisk dosfstools): {e}")
    })
}

/// A system volume of `size` random bytes (`seed`) that starts with a bootable image of
/// the stand-in init (the recovered system); returns it and that image's length.
pub fn recovered_system(size: usize, seed: u64) -> (Vec<u8>, usize) {
    let build = tempfile::tempdir().unwrap();
    let out = build.path().join("recovered");
    build_image(&out, &recovered_init(), &[]);
    let image = std::fs::read(out.join("failback.iso")).unwrap();
    let mut system = random_bytes(size, seed);
    system[..image.len()].copy_from_slice(&image);
    (system, image.len())
}
