//! Cold memory blocks to flash: a storage node whose memory blocks are all held moves its
//! coldest one — the group no request has read or written for longest, and for at least
//! `cold_after` — to one of its free flash blocks, so that the memory serves the next block a
//! job asks for (Pocket's tiers: memory for what is hot, flash for the rest).
//!
//! The move stays on the node, so the job's clients notice nothing: they address the node and
//! the group, not the block. In the map it is one etcd transaction that holds only if the
//! memory block is still as the node last read it (no move, give-back or lapse since) and the
//! flash block is still free; the group's key moves from `m<i>` to `f<j>` under the same lease.
//! From then on the node writes the group's new items to flash, and [`sweep`] writes the items
//! it holds in memory to files, one at a time, each swapped in only if the item was not
//! replaced meanwhile. Until an item is swapped its bytes stay in memory, readable: a flash
//! write that fails (a full disk) loses nothing, and the next sweep tries again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use baton_fabric::JobId;
use bytes::Bytes;

use super::{Data, Shared, lock, write_flash};
use crate::alloc::{Block, Tier};
use crate::error::Result;
use crate::etcd::{Compare, Op};
use crate::proto::Part;

/// Free memory blocks a node keeps: below this it moves a cold one to flash.
const LOW_WATER: u64 = 1;

/// A held block's entry in the map, as the node last read it.
#[derive(Clone, Debug)]
pub(super) struct MapEntry {
    pub(super) block: Block,
    pub(super) value: Vec<u8>,
    pub(super) lease: i64,
}

/// Moves the coldest memory block to flash if the node's free memory blocks are below
/// [`LOW_WATER`], one of its flash blocks is free, and a memory block has been cold for
/// `cold_after`. The group moved, if one was.
pub(super) async fn relieve(shared: &Arc<Shared>) -> Result<Option<(JobId, u64)>> {
    if shared.flash.is_none() || shared.flash_blocks == 0 {
        return Ok(None);
    }
    // No read of the map may apply a listing from before the move after it.
    let _one = shared.syncing.lock().await;
    let Some((group, from, to)) = choose(shared) else { return Ok(None) };
    let compare = [Compare::Value(from.block.key(), from.value.clone()), Compare::Absent(to.key())];
    let ops = [Op::Delete(from.block.key()), Op::Put(to.key(), from.value.clone(), from.lease)];
    if !shared.etcd.txn(&compare, &ops).await? {
        // The map changed under the node (the group moved, was given back, a job took the
        // flash block): its next read sees how.
        return Ok(None);
    }
    {
        let mut state = lock(&shared.state);
        if let Some(view) = state.held.get_mut(&group) {
            view.tier = Tier::Flash;
        }
        state.keys.insert(group, MapEntry { block: to.clone(), ..from.clone() });
    }
    metrics::counter!("baton_store_node_demotions_total").increment(1);
    tracing::info!(
        "storage node {}: {} of {} (group {}) was cold: moved to {to}",
        shared.name,
        from.block,
        group.0,
        group.1
    );
    Ok(Some(group))
}

/// The group to move, its memory block's entry, and the flash block it goes to.
fn choose(shared: &Shared) -> Option<((JobId, u64), MapEntry, Block)> {
    let state = lock(&shared.state);
    let in_memory = state.keys.values().filter(|e| e.block.tier == Tier::Memory).count() as u64;
    if shared.memory_blocks.saturating_sub(in_memory) >= LOW_WATER {
        return None;
    }
    let flash_held: HashSet<u64> =
        state.keys.values().filter(|e| e.block.tier == Tier::Flash).map(|e| e.block.index).collect();
    let index = (0..shared.flash_blocks).find(|i| !flash_held.contains(i))?;
    let now = Instant::now();
    let (_, group) = state
        .held
        .iter()
        .filter(|(_, view)| view.tier == Tier::Memory && !view.incoming && !view.leaving)
        .filter_map(|(group, _)| {
            let touched = *state.touched.get(group)?;
            (now.duration_since(touched) >= shared.cold_after).then_some((touched, *group))
        })
        .min()?;
    let from = state.keys.get(&group).filter(|e| e.block.tier == Tier::Memory)?.clone();
    let to = Block { node: shared.name.clone(), tier: Tier::Flash, index };
    Some((group, from, to))
}

/// Writes to files the items that flash blocks still hold in memory (those of a block moved
/// to flash, and puts that arrived as it moved).
pub(super) async fn sweep(shared: &Arc<Shared>) {
    let pending: Vec<((JobId, u64), String, Part, Bytes)> = {
        let state = lock(&shared.state);
        state
            .held
            .iter()
            .filter(|(_, view)| view.tier == Tier::Flash)
            .filter_map(|(group, _)| Some((*group, state.groups.get(group)?)))
            .flat_map(|(group, g)| {
                g.items.iter().filter_map(move |(key, item)| match &item.data {
                    Data::Memory(bytes) => Some((group, key.clone(), item.part, bytes.clone())),
                    Data::Flash(_) => None,
                })
            })
            .collect()
    };
    for (group, key, part, bytes) in pending {
        let file = match write_flash(shared, bytes.clone()).await {
            Ok(file) => Arc::new(file),
            Err(e) => {
                tracing::warn!("storage node {}: cannot move an item of group {} to flash: {e}", shared.name, group.1);
                return;
            }
        };
        let unused = {
            let mut state = lock(&shared.state);
            let item = state.groups.get_mut(&group).and_then(|g| g.items.get_mut(&key));
            match item {
                // Still the bytes that were written out: the file takes their place.
                Some(item) if item.part == part && matches!(&item.data, Data::Memory(b) if same(b, &bytes)) => {
                    item.data = Data::Flash(file);
                    None
                }
                // Replaced or deleted meanwhile: the file goes.
                _ => Some(file),
            }
        };
        if let Some(file) = unused {
            let _ = tokio::task::spawn_blocking(move || drop(file)).await;
        }
    }
}

/// Whether two handles share the same bytes (not merely equal ones).
fn same(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}
