//! Which local disk receives which remote volume, and which disks may never be
//! written: the mapping given (`--map`, the preset, `failback.map=`), the one proposed
//! by identity or size, and the checks that refuse a target.

pub mod automap;
pub mod map;
pub mod safety;
