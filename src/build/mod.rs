//! `failback build`: the host-side image builder.

pub mod esp;
pub mod hybrid;
pub mod iso;
pub mod iso_types;
