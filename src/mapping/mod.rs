//! Which local disk receives which remote volume, and which disks may never be
//! written: the mapping given (`--map`, the preset, `failback.map=`), the one proposed
//! by identity or size, the stable names of target disks, and the checks that refuse a target.

pub mod automap;
pub mod map;
pub mod safety;
pub mod select;
