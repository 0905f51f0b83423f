//! A qcow2 image (OpenStack, Proxmox, libvirt), written here so that it is the same bytes
//! whatever `qemu-img` the build host has.
//!
//! Spec: QEMU's `docs/interop/qcow2.txt`: "Header" (version 3, 104 bytes), "Host cluster
//! management" (refcount table and blocks, 16-bit refcounts), "Cluster mapping" (L1 and L2
//! tables). The layout is plain, in file order: header cluster, refcount table, refcount
//! blocks, L1 table, the L2 tables that map data, then the data clusters in guest order.
//! Only clusters holding a non-zero byte are allocated; the rest read as zeros.

use std::io::{self, Write};
use zerocopy::byteorder::{BigEndian, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

type Be32 = U32<BigEndian>;
type Be64 = U64<BigEndian>;

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// 8-byte entries per L1/L2 table cluster or refcount table cluster.
const ENTRIES: u64 = CLUSTER / 8;
/// refcount_order 4: 16-bit refcounts, so a refcount block covers this many clusters.
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / 2;
/// "Cluster mapping": bit 63 of an L1/L2 entry, QCOW_OFLAG_COPIED: refcount is exactly 1.
const COPIED: u64 = 1 << 63;

/// "Header": the version 3 fields, big-endian; the header extensions area that follows is
/// empty (its end marker, type 0, is the zeros after it).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Header {
    magic: Be32,
    version: Be32,
    backing_file_offset: Be64,
    backing_file_size: Be32,
    cluster_bits: Be32,
    size: Be64,
    crypt_method: Be32,
    l1_size: Be32,
    l1_table_offset: Be64,
    refcount_table_offset: Be64,
    refcount_table_clusters: Be32,
    nb_snapshots: Be32,
    snapshots_offset: Be64,
    incompatible_features: Be64,
    compatible_features: Be64,
    autoclear_features: Be64,
    refcount_order: Be32,
    header_length: Be32,
}
const _: () = assert!(size_of::<Header>() == 104);

/// Where each part goes, in clusters from the start of the file.
struct Layout {
    refcount_table: u64,
    refcount_table_clusters: u64,
    refcount_blocks: u64,
    refcount_block_count: u64,
    l1_table: u64,
    l1_entries: u64,
    l1_clusters: u64,
    /// Guest L2 table index -> host cluster of that table, for the tables that map data.
    l2_tables: Vec<(u64, u64)>,
    first_data: u64,
    total: u64,
}

fn layout(guest_clusters: u64, data: &[u64]) -> Layout {
    let l1_entries = guest_clusters.div_ceil(ENTRIES);
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER).max(1);
    let mut l2_indexes: Vec<u64> = data.iter().map(|c| c / ENTRIES).collect();
    l2_indexes.dedup();
    let fixed = 1 + l1_clusters + l2_indexes.len() as u64 + data.len() as u64;
    // The refcount structures count themselves: grow them until they cover everything.
    let (mut table_clusters, mut blocks) = (1, 1);
    loop {
        let total = fixed + table_clusters + blocks;
        let need_blocks = total.div_ceil(REFCOUNTS_PER_BLOCK);
        let need_table = need_blocks.div_ceil(ENTRIES);
        if need_blocks <= blocks && need_table <= table_clusters {
            break;
        }
        blocks = blocks.max(need_blocks);
        table_clusters = table_clusters.max(need_table);
    }
    let refcount_blocks = 1 + table_clusters;
    let l1_table = refcount_blocks + blocks;
    let first_l2 = l1_table + l1_clusters;
    let l2_tables = l2_indexes
        .iter()
        .enumerate()
        .map(|(i, &index)| (index, first_l2 + i as u64))
        .collect::<Vec<_>>();
    let first_data = first_l2 + l2_tables.len() as u64;
    Layout {
        refcount_table: 1,
        refcount_table_clusters: table_clusters,
        refcount_blocks,
        refcount_block_count: blocks,
        l1_table,
        l1_entries,
        l1_clusters,
        l2_tables,
        first_data,
        total: first_data + data.len() as u64,
    }
}

/// Writes `disk` as a qcow2 image of virtual size `disk.len()` into `out`.
pub fn write(out: &mut dyn Write, disk: &[u8]) -> io::Result<()> {
    let size = disk.len() as u64;
    let guest_clusters = size.div_ceil(CLUSTER);
    let cluster_of = |c: u64| {
        let start = (c * CLUSTER) as usize;
        &disk[start..disk.len().min(start + CLUSTER as usize)]
    };
    let data: Vec<u64> = (0..guest_clusters)
        .filter(|&c| cluster_of(c).iter().any(|&b| b != 0))
        .collect();
    let l = layout(guest_clusters, &data);
    let too_big = || io::Error::other("qcow2: the image has too many clusters for its header");

    let header = Header {
        magic: Be32::new(0x5146_49fb),
        version: Be32::new(3),
        backing_file_offset: Be64::new(0),
        backing_file_size: Be32::new(0),
        cluster_bits: Be32::new(CLUSTER_BITS),
        size: Be64::new(size),
        crypt_method: Be32::new(0),
        l1_size: Be32::new(u32::try_from(l.l1_entries).map_err(|_| too_big())?),
        l1_table_offset: Be64::new(l.l1_table * CLUSTER),
        refcount_table_offset: Be64::new(l.refcount_table * CLUSTER),
        refcount_table_clusters: Be32::new(
            u32::try_from(l.refcount_table_clusters).map_err(|_| too_big())?,
        ),
        nb_snapshots: Be32::new(0),
        snapshots_offset: Be64::new(0),
        incompatible_features: Be64::new(0),
        compatible_features: Be64::new(0),
        autoclear_features: Be64::new(0),
        refcount_order: Be32::new(4),
        header_length: Be32::new(104),
    };
    let mut cluster = vec![0u8; CLUSTER as usize];
    cluster[..104].copy_from_slice(header.as_bytes());
    out.write_all(&cluster)?;

    // Refcount table: one entry per refcount block, then zeros to its last cluster.
    let mut table = vec![0u8; (l.refcount_table_clusters * CLUSTER) as usize];
    for b in 0..l.refcount_block_count {
        let at = (b * 8) as usize;
        table[at..at + 8].copy_from_slice(&((l.refcount_blocks + b) * CLUSTER).to_be_bytes());
    }
    out.write_all(&table)?;

    // Refcount blocks: every cluster of the file is used once.
    let mut blocks = vec![0u8; (l.refcount_block_count * CLUSTER) as usize];
    for c in 0..l.total {
        let at = (c * 2) as usize;
        blocks[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    out.write_all(&blocks)?;

    // L1 table: the host offset of each L2 table that maps data.
    let mut l1 = vec![0u8; (l.l1_clusters * CLUSTER) as usize];
    for &(index, host) in &l.l2_tables {
        let at = (index * 8) as usize;
        l1[at..at + 8].copy_from_slice(&((host * CLUSTER) | COPIED).to_be_bytes());
    }
    out.write_all(&l1)?;

    // L2 tables, then data clusters in the same (guest) order.
    let host_of_data = |i: usize| ((l.first_data + i as u64) * CLUSTER) | COPIED;
    let mut next = 0;
    for &(index, _) in &l.l2_tables {
        cluster.fill(0);
        while next < data.len() && data[next] / ENTRIES == index {
            let at = ((data[next] % ENTRIES) * 8) as usize;
            cluster[at..at + 8].copy_from_slice(&host_of_data(next).to_be_bytes());
            next += 1;
        }
        out.write_all(&cluster)?;
    }
    for &c in &data {
        let bytes = cluster_of(c);
        out.write_all(bytes)?;
        // A last partial cluster is padded: the file holds whole clusters.
        out.write_all(&cluster_zeros()[..CLUSTER as usize - bytes.len()])?;
    }
    Ok(())
}

fn cluster_zeros() -> &'static [u8] {
    static ZEROS: [u8; CLUSTER as usize] = [0; CLUSTER as usize];
    &ZEROS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_zero_clusters_are_stored() {
        let mut disk = vec![0u8; 4 << 20];
        disk[0] = 1;
        disk[3 << 20] = 2;
        let mut out = Vec::new();
        write(&mut out, &disk).unwrap();
        // Header, refcount table, one refcount block, L1, one L2, two data clusters.
        assert_eq!(out.len() as u64, 7 * CLUSTER);
        assert_eq!(&out[..4], b"QFI\xfb");
        assert_eq!(out[5 * CLUSTER as usize], 1);
        assert_eq!(out[6 * CLUSTER as usize], 2);
    }

    #[test]
    fn refcounts_cover_themselves_past_one_block() {
        // More clusters than one refcount block counts: a second block.
        let data: Vec<u64> = (0..REFCOUNTS_PER_BLOCK).collect();
        let l = layout(REFCOUNTS_PER_BLOCK, &data);
        assert_eq!(l.refcount_block_count, 2);
        assert!(l.total <= l.refcount_block_count * REFCOUNTS_PER_BLOCK);
    }
}
