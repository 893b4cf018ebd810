//! Sync 1.1 commit proofs: a firehose `#commit`'s ops inverted on the
//! partial MST its blocks carry, so the tree before the commit can be
//! recomputed and compared with the message's `prevData`.
//!
//! Owns: [`PartialTree`] (the in-order leaves of the tree under a root,
//! with every subtree whose node is not among the blocks kept as an opaque
//! stub of known CID and layer), the three inversions (create → remove,
//! update → restore `prev`, delete → re-insert `prev`) and the root of the
//! result. Does not own: signatures, the commit block, the message.
//!
//! Why a flat list: an MST's shape is a function of its keys alone, so the
//! tree before the commit is fully determined by the leaves after
//! inversion; the root is rebuilt from them, reusing a stub's CID exactly
//! where the rebuilt tree has a subtree made of that stub alone. Anything
//! that would need a stub's contents — a key to look up or insert between
//! two leaves with a stub in between, a rebuilt subtree that mixes a stub
//! with other items — means the proof is incomplete and the commit is
//! rejected (`InvertError::Incomplete`). The result does not depend on the
//! order the ops are inverted in.
//!
//! Invariants: every node read hashes to its CID and holds only keys of its
//! layer, keys strictly increase, recursion is bounded by
//! [`super::mst::MAX_LAYER`], and a node block is decoded at most once per
//! reference (a hostile DAG cannot make the walk exponential: a budget of
//! as many nodes as there are blocks).

use super::mst::{self, MAX_LAYER, dag_cbor_cid, head, key_layer, link_or_null, text};
use super::stream::Blocks;
use crate::source::codecs::car::{self, Car};

/// Where node blocks come from: a whole-repo CAR or a commit's CAR slice.
pub trait BlockSource {
    /// The block named by the binary `cid`, not yet hash-checked.
    fn block(&self, cid: &[u8]) -> Option<&[u8]>;
    /// How many blocks there are (bounds the walk).
    fn count(&self) -> usize;
}

impl BlockSource for Blocks {
    fn block(&self, cid: &[u8]) -> Option<&[u8]> {
        self.get(cid)
    }
    fn count(&self) -> usize {
        self.len()
    }
}

impl BlockSource for Car<'_> {
    fn block(&self, cid: &[u8]) -> Option<&[u8]> {
        self.get(cid)
    }
    fn count(&self) -> usize {
        self.blocks().len()
    }
}

/// Why a commit's proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvertError {
    /// A node does not hash to its CID, holds keys of another layer, keys
    /// out of order, or is not an MST node at all.
    #[error("MST node invalid: {0}")]
    BadNode(&'static str),
    /// The blocks do not include a node the inversion needs.
    #[error("the commit's blocks do not cover the operations")]
    Incomplete,
    /// An op does not match the tree: a created or updated key with
    /// another value, a deleted key still present, a missing `prev`.
    #[error("operation does not match the tree: {0}")]
    OpMismatch(&'static str),
    /// The tree rebuilt from the loaded leaves is not the root it was
    /// loaded from (a non-canonical tree).
    #[error("the tree is not canonical")]
    NotCanonical,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Leaf {
        key: Vec<u8>,
        value: Vec<u8>,
        layer: u32,
    },
    /// A subtree whose node is not among the blocks.
    Stub { cid: Vec<u8>, layer: u32 },
}

/// The leaves of a tree in key order, with stubs for the subtrees not
/// loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialTree {
    items: Vec<Item>,
}

/// Where a key falls among the items.
enum Slot {
    /// The leaf at this index has the key.
    Leaf(usize),
    /// The key is absent; it would go at this index.
    Absent(usize),
}

impl PartialTree {
    /// Loads the tree under `root` from `blocks`. The root node itself must
    /// be present; any other node that is absent becomes a stub.
    pub fn load(blocks: &impl BlockSource, root: &[u8]) -> Result<PartialTree, InvertError> {
        let bytes = blocks.block(root).ok_or(InvertError::Incomplete)?;
        car::verify(root, bytes).map_err(|_| InvertError::BadNode("hash"))?;
        let node = mst::parse_node(bytes).map_err(|_| InvertError::BadNode("not a node"))?;
        let layer = match (node.entries.first(), node.left) {
            (Some(e), _) => key_layer(&e.key),
            (None, None) => return Ok(PartialTree { items: Vec::new() }),
            // A root without entries is trimmed away in a canonical tree.
            (None, Some(_)) => return Err(InvertError::NotCanonical),
        };
        let mut items = Vec::new();
        let mut budget = blocks.count();
        walk(blocks, node, layer, MAX_LAYER, &mut budget, &mut items)?;
        Ok(PartialTree { items })
    }

    /// The record CID under `key`: `Ok(None)` when the key is certainly
    /// absent, `Incomplete` when it could be inside a stub.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>, InvertError> {
        match self.slot(key)? {
            Slot::Leaf(i) => match &self.items[i] {
                Item::Leaf { value, .. } => Ok(Some(value)),
                Item::Stub { .. } => unreachable!("slot returns leaves only"),
            },
            Slot::Absent(_) => Ok(None),
        }
    }

    /// Inverts a create: the key must hold `cid`; it is removed.
    pub fn invert_create(&mut self, key: &[u8], cid: &[u8]) -> Result<(), InvertError> {
        match self.slot(key)? {
            Slot::Leaf(i) if self.value(i) == cid => {
                self.items.remove(i);
                Ok(())
            }
            _ => Err(InvertError::OpMismatch("created key does not hold its CID")),
        }
    }

    /// Inverts an update: the key must hold `cid`; it gets `prev` back.
    pub fn invert_update(
        &mut self,
        key: &[u8],
        cid: &[u8],
        prev: &[u8],
    ) -> Result<(), InvertError> {
        match self.slot(key)? {
            Slot::Leaf(i) if self.value(i) == cid => {
                if let Item::Leaf { value, .. } = &mut self.items[i] {
                    *value = prev.to_vec();
                }
                Ok(())
            }
            _ => Err(InvertError::OpMismatch("updated key does not hold its CID")),
        }
    }

    /// Inverts a delete: the key must be absent; it is inserted with `prev`.
    pub fn invert_delete(&mut self, key: &[u8], prev: &[u8]) -> Result<(), InvertError> {
        match self.slot(key)? {
            Slot::Absent(at) => {
                self.items.insert(
                    at,
                    Item::Leaf {
                        key: key.to_vec(),
                        value: prev.to_vec(),
                        layer: key_layer(key),
                    },
                );
                Ok(())
            }
            Slot::Leaf(_) => Err(InvertError::OpMismatch("deleted key is still present")),
        }
    }

    /// The root CID (binary) of the tree these items make.
    pub fn root(&self) -> Result<Vec<u8>, InvertError> {
        let top = self
            .items
            .iter()
            .map(|i| match i {
                Item::Leaf { layer, .. } | Item::Stub { layer, .. } => *layer,
            })
            .max()
            .unwrap_or(0);
        build(&self.items, top)
    }

    fn value(&self, i: usize) -> &[u8] {
        match &self.items[i] {
            Item::Leaf { value, .. } => value,
            Item::Stub { .. } => &[],
        }
    }

    /// Finds `key` among the leaves. A key between two leaves with a stub
    /// between them could be inside that stub: `Incomplete`.
    fn slot(&self, key: &[u8]) -> Result<Slot, InvertError> {
        // Index of the first item whose leaf key is >= key, skipping stubs
        // by looking at the leaves only (items are few: a commit's path).
        let mut at = self.items.len();
        for (i, item) in self.items.iter().enumerate() {
            if let Item::Leaf { key: k, .. } = item
                && k.as_slice() >= key
            {
                if k.as_slice() == key {
                    return Ok(Slot::Leaf(i));
                }
                at = i;
                break;
            }
        }
        // The items between the previous leaf and `at`: any stub there may
        // hold the key.
        let prev_leaf = self.items[..at]
            .iter()
            .rposition(|i| matches!(i, Item::Leaf { .. }))
            .map_or(0, |p| p + 1);
        if self.items[prev_leaf..at]
            .iter()
            .any(|i| matches!(i, Item::Stub { .. }))
        {
            return Err(InvertError::Incomplete);
        }
        Ok(Slot::Absent(at))
    }
}

/// In-order walk of one node at `layer`, appending its items.
fn walk(
    blocks: &impl BlockSource,
    node: mst::Node<'_>,
    layer: u32,
    depth_left: u32,
    budget: &mut usize,
    out: &mut Vec<Item>,
) -> Result<(), InvertError> {
    *budget = budget
        .checked_sub(1)
        .ok_or(InvertError::BadNode("node reused"))?;
    let depth_left = depth_left
        .checked_sub(1)
        .ok_or(InvertError::BadNode("too deep"))?;
    let mut child = |cid: &[u8], out: &mut Vec<Item>| -> Result<(), InvertError> {
        let below = layer
            .checked_sub(1)
            .ok_or(InvertError::BadNode("subtree under layer 0"))?;
        match blocks.block(cid) {
            None => {
                out.push(Item::Stub {
                    cid: cid.to_vec(),
                    layer: below,
                });
                Ok(())
            }
            Some(bytes) => {
                car::verify(cid, bytes).map_err(|_| InvertError::BadNode("hash"))?;
                let node =
                    mst::parse_node(bytes).map_err(|_| InvertError::BadNode("not a node"))?;
                walk(blocks, node, below, depth_left, budget, out)
            }
        }
    };
    if let Some(left) = node.left {
        child(left, out)?;
    }
    for e in node.entries {
        if key_layer(&e.key) != layer {
            return Err(InvertError::BadNode("key in the wrong layer"));
        }
        let last_key = out.iter().rev().find_map(|i| match i {
            Item::Leaf { key, .. } => Some(key),
            Item::Stub { .. } => None,
        });
        if last_key.is_some_and(|k| *k >= e.key) {
            return Err(InvertError::BadNode("keys out of order"));
        }
        out.push(Item::Leaf {
            key: e.key,
            value: e.value.to_vec(),
            layer,
        });
        if let Some(tree) = e.tree {
            child(tree, out)?;
        }
    }
    Ok(())
}

/// The CID of the node at `layer` holding `items` (all at or below it).
fn build(items: &[Item], layer: u32) -> Result<Vec<u8>, InvertError> {
    if let [Item::Stub { cid, layer: l }] = items
        && *l == layer
    {
        return Ok(cid.clone());
    }
    let mut out = Vec::with_capacity(64 + items.len() * 16);
    let mut here = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Item::Leaf { layer: l, .. } if *l == layer => here.push(i),
            Item::Leaf { layer: l, .. } if *l > layer => return Err(InvertError::Incomplete),
            // A stub at this layer among other items: its contents would
            // have to be merged or split.
            Item::Stub { layer: l, .. } if *l >= layer => return Err(InvertError::Incomplete),
            _ => {}
        }
    }
    let subtree = |from: usize, to: usize| -> Result<Option<Vec<u8>>, InvertError> {
        if from >= to {
            return Ok(None);
        }
        if layer == 0 {
            return Err(InvertError::Incomplete);
        }
        build(&items[from..to], layer - 1).map(Some)
    };
    head(&mut out, 5, 2);
    text(&mut out, "e");
    head(&mut out, 4, here.len() as u64);
    let mut prev_key: &[u8] = &[];
    for (n, &i) in here.iter().enumerate() {
        let Item::Leaf { key, value, .. } = &items[i] else {
            unreachable!("separators are leaves")
        };
        let prefix = key.iter().zip(prev_key).take_while(|(a, b)| a == b).count();
        let next = here.get(n + 1).copied().unwrap_or(items.len());
        head(&mut out, 5, 4);
        text(&mut out, "k");
        head(&mut out, 2, (key.len() - prefix) as u64);
        out.extend_from_slice(&key[prefix..]);
        text(&mut out, "p");
        head(&mut out, 0, prefix as u64);
        text(&mut out, "t");
        link_or_null(&mut out, subtree(i + 1, next)?.as_deref());
        text(&mut out, "v");
        link_or_null(&mut out, Some(value));
        prev_key = key;
    }
    text(&mut out, "l");
    let first = here.first().copied().unwrap_or(items.len());
    link_or_null(&mut out, subtree(0, first)?.as_deref());
    Ok(dag_cbor_cid(&out))
}

/// One op of a commit, as inversion needs it (binary CIDs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    Create {
        key: &'a [u8],
        cid: &'a [u8],
    },
    Update {
        key: &'a [u8],
        cid: &'a [u8],
        prev: Option<&'a [u8]>,
    },
    Delete {
        key: &'a [u8],
        prev: Option<&'a [u8]>,
    },
}

/// The Sync 1.1 check: the tree under `data` (the signed commit's root),
/// with `ops` inverted, has root `prev_data`. Also checks that the tree
/// loaded is canonical (rebuilding it gives `data`).
pub fn check_commit(
    blocks: &impl BlockSource,
    data: &[u8],
    ops: &[Op<'_>],
    prev_data: &[u8],
) -> Result<(), InvertError> {
    let mut tree = PartialTree::load(blocks, data)?;
    if tree.root()? != data {
        return Err(InvertError::NotCanonical);
    }
    let missing = InvertError::OpMismatch("update or delete without prev");
    for op in ops.iter().rev() {
        match *op {
            Op::Create { key, cid } => tree.invert_create(key, cid)?,
            Op::Update { key, cid, prev } => {
                tree.invert_update(key, cid, prev.ok_or(missing.clone())?)?
            }
            Op::Delete { key, prev } => tree.invert_delete(key, prev.ok_or(missing.clone())?)?,
        }
    }
    if tree.root()? != prev_data {
        return Err(InvertError::OpMismatch("inverted root is not prevData"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "invert_tests.rs"]
mod tests;
