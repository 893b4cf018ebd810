//! The Merkle Search Tree of a repository: walking it from the commit's
//! `data` CID to the ordered leaves, and recomputing the root CID from the
//! leaves alone (the full structural check).
//!
//! Node: `{e: [{k: key suffix, p: prefix length, t: subtree|null, v:
//! record}], l: subtree|null}`; an entry's key is the first `p` bytes of the
//! previous entry's key in the node followed by `k`. A key's layer is the
//! number of leading zero bits of SHA-256(key) divided by two (fanout 4);
//! the root sits at the highest layer of any key, every node holds the keys
//! of its layer, and subtrees one layer down fill the gaps (an empty node
//! with only `l` where a layer has no key; the empty tree is one empty
//! node).
//!
//! Owns: node decoding, [`walk`], [`key_layer`], [`root_cid`] and
//! [`build_nodes`] (the node blocks of a tree, for repository exports). Does not own:
//! record blocks (`verify`).
//!
//! Invariants: every node's bytes hash to the CID naming it (else
//! `MST root mismatch`); an absent node is `missing block`; recursion is
//! bounded by [`MAX_LAYER`]; keys come out strictly increasing or the walk
//! fails. Two trees with the same leaves have the same root, so comparing
//! [`root_cid`] of the walked leaves with `data` rejects any other shape.

use sha2::{Digest, Sha256};

use super::RepoError;
use super::stream::Blocks;
use crate::source::codecs::car;
use crate::source::codecs::dagcbor::Reader;

/// Deepest layer walked (a SHA-256 has at most 256 leading zero bits).
pub const MAX_LAYER: u32 = 128;
/// Longest MST key accepted (atproto caps `collection/rkey` well below).
pub const MAX_KEY_LEN: usize = 1024;

/// One leaf: `collection/rkey` and the binary CID of its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf<'a> {
    pub key: Vec<u8>,
    pub value: &'a [u8],
}

const MALFORMED: RepoError = RepoError::Malformed("MST node");

/// The layer of a key: leading zero bits of its SHA-256, halved.
pub fn key_layer(key: &[u8]) -> u32 {
    let hash = Sha256::digest(key);
    let mut zeros = 0;
    for b in hash {
        zeros += b.leading_zeros();
        if b != 0 {
            break;
        }
    }
    zeros / 2
}

/// Walks the tree under `root` and returns its leaves in key order.
pub fn walk<'a>(blocks: &'a Blocks, root: &[u8]) -> Result<Vec<Leaf<'a>>, RepoError> {
    let mut leaves = Vec::new();
    // A tree names each node once; a DAG reusing nodes could make the walk
    // exponential, so visiting more nodes than there are blocks fails.
    let mut budget = blocks.len();
    node(blocks, root, MAX_LAYER, &mut budget, &mut leaves)?;
    Ok(leaves)
}

fn node<'a>(
    blocks: &'a Blocks,
    cid: &[u8],
    depth_left: u32,
    budget: &mut usize,
    out: &mut Vec<Leaf<'a>>,
) -> Result<(), RepoError> {
    *budget = budget.checked_sub(1).ok_or(RepoError::MstRootMismatch)?;
    let bytes = blocks.get(cid).ok_or(RepoError::MissingBlock)?;
    car::verify(cid, bytes).map_err(|_| RepoError::MstRootMismatch)?;
    let depth_left = depth_left.checked_sub(1).ok_or(MALFORMED)?;
    let parsed = parse_node(bytes)?;
    if let Some(left) = parsed.left {
        node(blocks, left, depth_left, budget, out)?;
    }
    for e in parsed.entries {
        if out.last().is_some_and(|last| last.key >= e.key) {
            return Err(RepoError::MstRootMismatch); // out of order or duplicated
        }
        out.push(Leaf {
            key: e.key,
            value: e.value,
        });
        if let Some(tree) = e.tree {
            node(blocks, tree, depth_left, budget, out)?;
        }
    }
    Ok(())
}

/// One decoded MST node: its left subtree and its entries, keys expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node<'a> {
    pub left: Option<&'a [u8]>,
    pub entries: Vec<Entry<'a>>,
}

/// One entry of a node: the full key, its record CID and the subtree to
/// its right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub key: Vec<u8>,
    pub value: &'a [u8],
    pub tree: Option<&'a [u8]>,
}

/// Decodes one node block strictly (no hash check: the caller has done
/// it). Keys are expanded from their prefix compression and bounded by
/// [`MAX_KEY_LEN`].
pub fn parse_node(bytes: &[u8]) -> Result<Node<'_>, RepoError> {
    let mut r = Reader::new(bytes);
    if r.read_map_len().map_err(|_| MALFORMED)? != 2 {
        return Err(MALFORMED);
    }
    if r.raw_key(None).map_err(|_| MALFORMED)? != b"e" {
        return Err(MALFORMED);
    }
    let n = r.read_array_len().map_err(|_| MALFORMED)?;
    // Entries are read first but `l` (after them in the map) comes first in
    // key order: collect them, then the caller descends.
    let mut entries = Vec::with_capacity(n.min(64) as usize);
    let mut key: Vec<u8> = Vec::new();
    for _ in 0..n {
        if r.read_map_len().map_err(|_| MALFORMED)? != 4 {
            return Err(MALFORMED);
        }
        let expect = |name: &[u8], r: &mut Reader<'_>| match r.raw_key(None) {
            Ok(k) if k == name => Ok(()),
            _ => Err(MALFORMED),
        };
        expect(b"k", &mut r)?;
        let suffix = r.read_bytes().map_err(|_| MALFORMED)?;
        expect(b"p", &mut r)?;
        let prefix = r.read_uint().map_err(|_| MALFORMED)?;
        expect(b"t", &mut r)?;
        let tree = if r.take_null() {
            None
        } else {
            Some(r.read_link().map_err(|_| MALFORMED)?)
        };
        expect(b"v", &mut r)?;
        let value = r.read_link().map_err(|_| MALFORMED)?;
        if prefix > key.len() as u64 || prefix as usize + suffix.len() > MAX_KEY_LEN {
            return Err(MALFORMED);
        }
        key.truncate(prefix as usize);
        key.extend_from_slice(suffix);
        entries.push(Entry {
            key: key.clone(),
            value,
            tree,
        });
    }
    if r.raw_key(Some(b"e")).map_err(|_| MALFORMED)? != b"l" {
        return Err(MALFORMED);
    }
    let left = if r.take_null() {
        None
    } else {
        Some(r.read_link().map_err(|_| MALFORMED)?)
    };
    if r.remaining() != 0 {
        return Err(MALFORMED);
    }
    Ok(Node { left, entries })
}

/// The root CID (binary) of the MST holding exactly `leaves`, which must be
/// in strictly increasing key order.
pub fn root_cid(leaves: &[Leaf<'_>]) -> Vec<u8> {
    let layers: Vec<u32> = leaves.iter().map(|l| key_layer(&l.key)).collect();
    let top = layers.iter().copied().max().unwrap_or(0);
    build(leaves, &layers, top, &mut None)
}

/// One encoded block: binary CID and bytes.
pub type NodeBlock = (Vec<u8>, Vec<u8>);

/// The root CID and every node block of the MST holding `leaves`
/// (strictly increasing keys): what a repository export carries.
pub fn build_nodes(leaves: &[Leaf<'_>]) -> (Vec<u8>, Vec<NodeBlock>) {
    let layers: Vec<u32> = leaves.iter().map(|l| key_layer(&l.key)).collect();
    let top = layers.iter().copied().max().unwrap_or(0);
    let mut nodes = Some(Vec::new());
    let root = build(leaves, &layers, top, &mut nodes);
    (root, nodes.unwrap_or_default())
}

/// Encodes the node at `layer` holding `leaves` (all at or below it) and
/// returns its CID (keeping the node's bytes in `nodes` when asked).
fn build(
    leaves: &[Leaf<'_>],
    layers: &[u32],
    layer: u32,
    nodes: &mut Option<Vec<NodeBlock>>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + leaves.len() * 16);
    let here: Vec<usize> = (0..leaves.len()).filter(|&i| layers[i] == layer).collect();
    let mut subtree = |from: usize, to: usize| -> Option<Vec<u8>> {
        (from < to && layer > 0)
            .then(|| build(&leaves[from..to], &layers[from..to], layer - 1, nodes))
    };
    head(&mut out, 5, 2);
    text(&mut out, "e");
    head(&mut out, 4, here.len() as u64);
    let mut prev_key: &[u8] = &[];
    for (n, &i) in here.iter().enumerate() {
        let key = &leaves[i].key;
        let prefix = key.iter().zip(prev_key).take_while(|(a, b)| a == b).count();
        let next = here.get(n + 1).copied().unwrap_or(leaves.len());
        head(&mut out, 5, 4);
        text(&mut out, "k");
        head(&mut out, 2, (key.len() - prefix) as u64);
        out.extend_from_slice(&key[prefix..]);
        text(&mut out, "p");
        head(&mut out, 0, prefix as u64);
        text(&mut out, "t");
        link_or_null(&mut out, subtree(i + 1, next).as_deref());
        text(&mut out, "v");
        link_or_null(&mut out, Some(leaves[i].value));
        prev_key = key;
    }
    text(&mut out, "l");
    let first = here.first().copied().unwrap_or(leaves.len());
    link_or_null(&mut out, subtree(0, first).as_deref());
    let cid = dag_cbor_cid(&out);
    if let Some(nodes) = nodes {
        nodes.push((cid.clone(), out));
    }
    cid
}

/// The CIDv1 (dag-cbor, sha2-256) of `bytes`, binary.
pub fn dag_cbor_cid(bytes: &[u8]) -> Vec<u8> {
    let mut cid = Vec::with_capacity(36);
    cid.extend_from_slice(&[0x01, 0x71, 0x12, 0x20]);
    cid.extend_from_slice(&Sha256::digest(bytes));
    cid
}

/// Writes a DAG-CBOR item head in its shortest form.
pub fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// Writes a text string item.
pub fn text(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Writes a CID link (tag 42), or `null` for `None`.
pub fn link_or_null(out: &mut Vec<u8>, cid: Option<&[u8]>) {
    match cid {
        None => out.push(0xf6),
        Some(cid) => {
            out.extend_from_slice(&[0xd8, 0x2a]);
            head(out, 2, cid.len() as u64 + 1);
            out.push(0);
            out.extend_from_slice(cid);
        }
    }
}
