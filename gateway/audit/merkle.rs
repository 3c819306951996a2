//! The Merkle tree over the log (RFC 6962 §2.1 / RFC 9162 §2.1): leaves are records' lines,
//! `leaf = SHA-256(0x00 ‖ line)`, `node = SHA-256(0x01 ‖ left ‖ right)`, and a tree of `n`
//! leaves splits at the largest power of two below `n`. Inclusion proofs show a record is in a
//! signed tree; consistency proofs show a later tree extends an earlier one.

use ring::digest::{Context, SHA256};

pub type Hash = [u8; 32];

pub fn leaf_hash(line: &[u8]) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[0x00]);
    c.update(line);
    to_hash(c)
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[0x01]);
    c.update(left);
    c.update(right);
    to_hash(c)
}

fn to_hash(c: Context) -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(c.finish().as_ref());
    h
}

/// The hash of an empty tree.
pub fn empty_root() -> Hash {
    to_hash(Context::new(&SHA256))
}

/// The roots of the perfect subtrees covering the leaves so far, largest first: enough to
/// compute the root after every append in O(log n) memory.
#[derive(Debug, Clone, Default)]
pub struct CompactRange {
    subtrees: Vec<(u64, Hash)>,
    size: u64,
}

// === impl CompactRange ===

impl CompactRange {
    pub fn push(&mut self, leaf: Hash) {
        self.push_with(leaf, |_, _, _| {});
    }

    /// Pushes `leaf` and tells `made` of every complete subtree it completes — the leaf itself
    /// at level 0, then each merge — as (level, index at that level, hash): the nodes an index
    /// of the tree stores ([`Nodes`]).
    pub fn push_with(&mut self, leaf: Hash, mut made: impl FnMut(u32, u64, &Hash)) {
        made(0, self.size, &leaf);
        self.subtrees.push((1, leaf));
        self.size += 1;
        while self.subtrees.len() >= 2 {
            let n = self.subtrees.len();
            if self.subtrees[n - 1].0 != self.subtrees[n - 2].0 {
                break;
            }
            let (size, right) = self.subtrees.pop().unwrap_or_default();
            let (_, left) = self.subtrees.pop().unwrap_or_default();
            let node = node_hash(&left, &right);
            let merged = size * 2;
            made(merged.trailing_zeros(), self.size / merged - 1, &node);
            self.subtrees.push((merged, node));
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tree head root of all leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.subtrees.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// The root of `leaves` (MTH).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The audit path of leaf `m` in `leaves` (RFC 6962 `PATH(m, D[n])`).
pub fn inclusion_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut p = inclusion_proof(m, &leaves[..k]);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = inclusion_proof(m - k, &leaves[k..]);
        p.push(root(&leaves[..k]));
        p
    }
}

/// Where the complete subtrees of a tree are stored: the node at `level` and `index` is the
/// root of leaves `[index·2^level, (index+1)·2^level)`. With them a proof costs O(log² n) reads
/// and hashes instead of hashing every leaf.
pub trait Nodes {
    type Error;
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// The root of leaves `[start, start + size)`, a subtree as RFC 6962's recursion reaches it:
/// `start` is a multiple of the largest power of two not above `size`.
pub fn subtree_root<N: Nodes>(nodes: &N, start: u64, size: u64) -> Result<Hash, N::Error> {
    if size == 0 {
        return Ok(empty_root());
    }
    if size.is_power_of_two() {
        return nodes.node(size.trailing_zeros(), start / size);
    }
    let k = split64(size);
    let left = nodes.node(k.trailing_zeros(), start / k)?;
    let right = subtree_root(nodes, start + k, size - k)?;
    Ok(node_hash(&left, &right))
}

/// [`inclusion_proof`] of leaf `m` in the tree of the first `size` leaves, from stored nodes.
pub fn inclusion_proof_from<N: Nodes>(nodes: &N, m: u64, size: u64) -> Result<Vec<Hash>, N::Error> {
    fn path<N: Nodes>(nodes: &N, m: u64, start: u64, n: u64) -> Result<Vec<Hash>, N::Error> {
        if n <= 1 {
            return Ok(Vec::new());
        }
        let k = split64(n);
        if m < start + k {
            let mut p = path(nodes, m, start, k)?;
            p.push(subtree_root(nodes, start + k, n - k)?);
            Ok(p)
        } else {
            let mut p = path(nodes, m, start + k, n - k)?;
            p.push(subtree_root(nodes, start, k)?);
            Ok(p)
        }
    }
    path(nodes, m, 0, size)
}

/// [`consistency_proof`] between the trees of the first `m` and `n` leaves, from stored nodes.
pub fn consistency_proof_from<N: Nodes>(nodes: &N, m: u64, n: u64) -> Result<Vec<Hash>, N::Error> {
    fn sub<N: Nodes>(
        nodes: &N,
        m: u64,
        start: u64,
        n: u64,
        complete: bool,
    ) -> Result<Vec<Hash>, N::Error> {
        if m == n {
            return Ok(if complete {
                Vec::new()
            } else {
                vec![subtree_root(nodes, start, n)?]
            });
        }
        let k = split64(n);
        if m <= k {
            let mut p = sub(nodes, m, start, k, complete)?;
            p.push(subtree_root(nodes, start + k, n - k)?);
            Ok(p)
        } else {
            let mut p = sub(nodes, m - k, start + k, n - k, false)?;
            p.push(subtree_root(nodes, start, k)?);
            Ok(p)
        }
    }
    if m == 0 || m > n {
        return Ok(Vec::new());
    }
    sub(nodes, m, 0, n, true)
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split64(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// RFC 9162 §2.1.3.2: whether `proof` shows `leaf` at `index` in a tree of `size` with `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// RFC 6962 `PROOF(m, D[n])`: that the tree of the first `m` leaves is a prefix of `leaves`.
pub fn consistency_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    fn subproof(m: usize, leaves: &[Hash], complete: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if complete {
                Vec::new()
            } else {
                vec![root(leaves)]
            };
        }
        let k = split(n);
        if m <= k {
            let mut p = subproof(m, &leaves[..k], complete);
            p.push(root(&leaves[k..]));
            p
        } else {
            let mut p = subproof(m - k, &leaves[k..], false);
            p.push(root(&leaves[..k]));
            p
        }
    }
    if m == 0 || m > leaves.len() {
        return Vec::new();
    }
    subproof(m, leaves, true)
}

/// RFC 9162 §2.1.4.2: whether `proof` shows the tree (`size1`, `root1`) is a prefix of
/// (`size2`, `root2`).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> bool {
    if size1 == size2 {
        return proof.is_empty() && root1 == root2;
    }
    if size1 == 0 || size1 > size2 {
        return false;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if size1.is_power_of_two() {
        path.insert(0, *root1);
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && fr == *root1 && sr == *root2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("record {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn compact_range_matches_the_recursive_root() {
        let all = leaves(70);
        let mut range = CompactRange::default();
        assert_eq!(range.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            range.push(*leaf);
            assert_eq!(range.root(), root(&all[..=i]), "size {}", i + 1);
        }
    }

    /// Every complete subtree of `leaves`, as an index stores them.
    struct Stored(Vec<Vec<Hash>>);

    impl Nodes for Stored {
        type Error = ();
        fn node(&self, level: u32, index: u64) -> Result<Hash, ()> {
            self.0
                .get(level as usize)
                .and_then(|l| l.get(index as usize))
                .copied()
                .ok_or(())
        }
    }

    #[test]
    fn proofs_from_stored_nodes_equal_proofs_from_leaves() {
        let all = leaves(70);
        let mut stored = Stored(Vec::new());
        let mut range = CompactRange::default();
        for leaf in &all {
            range.push_with(*leaf, |level, index, hash| {
                let level = level as usize;
                if stored.0.len() <= level {
                    stored.0.resize(level + 1, Vec::new());
                }
                assert_eq!(stored.0[level].len() as u64, index, "nodes arrive in order");
                stored.0[level].push(*hash);
            });
        }
        for n in 1..=70u64 {
            assert_eq!(
                subtree_root(&stored, 0, n).unwrap(),
                root(&all[..n as usize])
            );
            for m in 0..n {
                assert_eq!(
                    inclusion_proof_from(&stored, m, n).unwrap(),
                    inclusion_proof(m as usize, &all[..n as usize]),
                    "inclusion m={m} n={n}"
                );
                assert_eq!(
                    consistency_proof_from(&stored, m + 1, n).unwrap(),
                    consistency_proof(m as usize + 1, &all[..n as usize]),
                    "consistency m={} n={n}",
                    m + 1
                );
            }
        }
    }

    #[test]
    fn rfc6962_empty_tree_hash() {
        assert_eq!(
            data_encoding::HEXLOWER.encode(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn inclusion_proofs_verify_and_fail_when_altered() {
        for n in 1..40 {
            let all = leaves(n);
            let r = root(&all);
            for m in 0..n {
                let proof = inclusion_proof(m, &all);
                assert!(
                    verify_inclusion(&all[m], m as u64, n as u64, &proof, &r),
                    "n={n} m={m}"
                );
                let other = leaf_hash(b"forged");
                assert!(!verify_inclusion(&other, m as u64, n as u64, &proof, &r));
                if n > 1 {
                    assert!(
                        !verify_inclusion(&all[m], ((m + 1) % n) as u64, n as u64, &proof, &r)
                            || all[m] == all[(m + 1) % n]
                    );
                }
            }
        }
    }

    #[test]
    fn consistency_proofs_verify_and_fail_when_altered() {
        let all = leaves(40);
        for n in 1..=40 {
            for m in 1..=n {
                let proof = consistency_proof(m, &all[..n]);
                let (r1, r2) = (root(&all[..m]), root(&all[..n]));
                assert!(
                    verify_consistency(m as u64, n as u64, &proof, &r1, &r2),
                    "m={m} n={n}"
                );
                if m < n {
                    let mut forged = all[..n].to_vec();
                    forged[m - 1] = leaf_hash(b"rewritten");
                    assert!(!verify_consistency(
                        m as u64,
                        n as u64,
                        &proof,
                        &root(&forged[..m]),
                        &r2
                    ));
                }
            }
        }
    }
}
