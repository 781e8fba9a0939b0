//! Moving a copy of a job's group from one node's block to another's while the job runs: what a
//! drain does with every block of the node, and what repair does with the blocks of a node
//! that is gone (from the group's other copy).
//!
//! A move is two etcd transactions around a copy. [`start`] reserves the new block under the
//! job's lease, marked `from` the node its items are copied from, and marks the old block
//! `moving_to` the new one (or deletes it, when its node is gone). From then on clients write to
//! the new block and read from it, falling back to the old one for what is not copied yet; the
//! old block refuses writes and serves reads. The copy (the controller's) takes each item the new
//! block does not have and has not seen deleted. [`finish`] deletes the old block's key and
//! clears the mark, and the old node lets the bytes go. The marks are in etcd, so a controller
//! that dies halfway is followed by one that finds the moves under way ([`under_way`]) and
//! copies again: copying is idempotent.

use crate::alloc::{Block, BlockMap, Holder, job_key};
use crate::error::{Error, Result};
use crate::etcd::{Compare, Etcd, Op};

/// A move under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The new block.
    pub to: Block,
    /// Its holder (the job and group, marked `from`).
    pub holder: Holder,
    /// The node the items are copied from.
    pub copy_from: String,
    /// The block leaving, if its node is still there.
    pub leaving: Option<Block>,
}

fn encode(key: &str, holder: &Holder) -> Result<Vec<u8>> {
    serde_json::to_vec(holder).map_err(|e| Error::Corrupt { key: key.to_string(), reason: e.to_string() })
}

/// The moves the map shows under way.
pub fn under_way(map: &BlockMap) -> Vec<Move> {
    map.held
        .iter()
        .filter_map(|(to, holder)| {
            let copy_from = holder.from.clone()?;
            let leaving = map
                .held
                .iter()
                .find(|(_, h)| {
                    h.job == holder.job && h.group == holder.group && h.moving_to.as_deref() == Some(to.node.as_str())
                })
                .map(|(b, _)| b.clone());
            Some(Move { to: to.clone(), holder: holder.clone(), copy_from, leaving })
        })
        .collect()
}

/// Starts moving `block` to a free block on another node. `None` when nothing can be done: no
/// free block fits, the job is gone, or the block's node is gone and the group has no other
/// copy to copy from.
pub async fn start(etcd: &Etcd, map: &BlockMap, block: &Block) -> Result<Option<Move>> {
    let Some(holder) = map.held.get(block) else { return Ok(None) };
    if holder.from.is_some() || holder.moving_to.is_some() {
        return Ok(None);
    }
    let Some(record) = etcd.get(&job_key(holder.job)).await? else { return Ok(None) };
    let alive = map.is_member(&block.node);
    let copy_from = if alive {
        block.node.clone()
    } else {
        // The other copy of the group, if it is whole and its node is there.
        let other = map.held.iter().find(|(b, h)| {
            h.job == holder.job
                && h.group == holder.group
                && *b != block
                && h.from.is_none()
                && h.moving_to.is_none()
                && map.is_member(&b.node)
        });
        match other {
            Some((b, _)) => b.node.clone(),
            None => return Ok(None),
        }
    };
    let Some(to) = map.replacement(holder.job, holder.group, block.tier) else { return Ok(None) };
    let incoming = Holder { from: Some(copy_from.clone()), ..holder.clone() };
    let current = encode(&block.key(), holder)?;
    let mut ops = vec![Op::Put(to.key(), encode(&to.key(), &incoming)?, record.lease)];
    if alive {
        let leaving = Holder { moving_to: Some(to.node.clone()), ..holder.clone() };
        ops.push(Op::Put(block.key(), encode(&block.key(), &leaving)?, record.lease));
    } else {
        ops.push(Op::Delete(block.key()));
    }
    let compare = [Compare::Absent(to.key()), Compare::Value(block.key(), current)];
    if !etcd.txn(&compare, &ops).await? {
        // The map changed under this move (the job ended, another move took the block): the
        // caller reads it again.
        return Ok(None);
    }
    Ok(Some(Move { to, holder: incoming, copy_from, leaving: alive.then(|| block.clone()) }))
}

/// Ends a move whose items are all copied: the new block is a plain copy of the group, the old
/// one is given back.
pub async fn finish(etcd: &Etcd, done: &Move) -> Result<bool> {
    let Some(now) = etcd.get(&done.to.key()).await? else { return Ok(false) };
    let plain = Holder { from: None, ..done.holder.clone() };
    let mut ops = vec![Op::Put(done.to.key(), encode(&done.to.key(), &plain)?, now.lease)];
    if let Some(leaving) = &done.leaving {
        ops.push(Op::Delete(leaving.key()));
    }
    etcd.txn(&[Compare::Value(done.to.key(), now.value)], &ops).await
}
