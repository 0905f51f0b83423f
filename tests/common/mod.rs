//! Test helpers: where the built image is, building test images with `failback build`,
//! and a QEMU (TCG) runner that boots them (kernel + initrd, or the ISO under one of the
//! firmware/medium combinations) and reads the client's JSON events from the serial console.
#![allow(dead_code)] // each test binary uses its own part of this module

mod data;
mod image;
mod paths;
mod qemu;
mod vm;

// Each test binary uses its own part of these too.
#[allow(unused_imports)]
pub use {data::*, image::*, paths::*, qemu::*, vm::*};
