//! Where things are: the repository, the build output, the Debian inputs, the static
//! client and the stand-in recovered system, and the `failback` under test.

use std::path::PathBuf;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The build output (`scripts/build.sh`), or a failure saying how to make it.
pub fn out_dir() -> PathBuf {
    let out = std::env::var_os("FAILBACK_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("out"));
    assert!(
        out.join("failback.iso").is_file()
            && out.join("pxe/initrd.img").is_file()
            && out.join("pxe/vmlinuz").is_file(),
        "{} has no failback.iso + pxe/vmlinuz + pxe/initrd.img: run scripts/build.sh first",
        out.display()
    );
    out
}

/// The static client built by scripts/build.sh.
pub fn static_client() -> PathBuf {
    static_release("failback")
}

/// The Python of the tests' venv (`.venv-moto`, or MOTO_VENV: moto's server, boto3,
/// pyte); fails with the fix when there is none, so no test passes without its peer.
/// The tests using it are `#[ignore]`d: `scripts/test.sh` makes the venv and runs them.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-moto"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "no test venv at {}: run scripts/moto-venv.sh (scripts/test.sh does)",
        venv.display()
    );
    py
}

/// The inputs unpacked by scripts/fetch-inputs.sh.
pub fn inputs_dir() -> PathBuf {
    let path = repo().join("inputs");
    assert!(
        path.join("boot").is_dir() && path.join("usr/lib/ISOLINUX/isolinux.bin").is_file(),
        "{} lacks the Debian inputs: run scripts/fetch-inputs.sh first",
        path.display()
    );
    path
}

/// The stand-in "recovered system" init (examples/recovered_init.rs, static, built by
/// scripts/build.sh).
pub fn recovered_init() -> PathBuf {
    static_release("examples/recovered_init")
}

/// `name` in the static release build scripts/build.sh makes, or a failure saying how
/// to make it.
fn static_release(name: &str) -> PathBuf {
    let path = repo()
        .join("target/x86_64-unknown-linux-gnu/release")
        .join(name);
    assert!(
        path.is_file(),
        "{} missing: run scripts/build.sh first",
        path.display()
    );
    path
}

/// The `failback` under test (this build).
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_failback")
}
