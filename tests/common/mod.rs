//! Test helpers: where the built image is, building test images with `failback build`,
//! a QEMU (TCG) runner that boots them (kernel + initrd, or the ISO under one of the
//! firmware/medium combinations) and reads the client's JSON events from the serial
//! console, and for the pull tests the agent (`failback serve`), `failback pull`, seeded
//! volumes and a fault-injecting proxy, everything on 127.0.0.1, and the scenario
//! of those tests: volumes served by an agent and older copies of them to pull onto,
//! and a writer that keeps changing a served volume during continuous passes.
#![allow(dead_code)] // each test binary uses its own part of this module

mod agent;
mod data;
mod faults;
mod image;
mod paths;
mod pull;
mod qemu;
mod scenario;
mod terminal;
mod vm;
mod writer;

// Each test binary uses its own part of these too.
#[allow(unused_imports)]
pub use {
    agent::*, data::*, faults::*, image::*, paths::*, pull::*, qemu::*, scenario::*, terminal::*,
    vm::*, writer::*,
};
