//! failback: boot a failed-back host and pull its disks back from AWS.
//!
//! The library behind the `failback` binary (src/main.rs dispatches to it), one module
//! per job; tests and the examples use it directly.

pub mod agent;
pub mod block;
pub mod boot;
pub mod build;
pub mod cmdline;
pub mod config;
pub mod disks;
pub mod fingerprint;
pub mod mapping;
pub mod net;
pub mod parse;
pub mod report;
pub mod retry;
pub mod secret;
pub mod source;
pub mod sync;
