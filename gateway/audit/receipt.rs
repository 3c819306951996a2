//! What auditors run: verification of a whole log (chain, tree heads, signatures), and
//! per-exchange receipts — the record, its inclusion proof, and the signed tree head that
//! covers it — that verify on their own, offline.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::merkle::{inclusion_proof, leaf_hash, verify_inclusion, CompactRange, Hash};
use super::record::Record;
use super::segment::{walk, Broken, ChainHead};
use super::sign::{tree_head_message, unhex, verify_signature};
use data_encoding::HEXLOWER;

/// What `verify` found in a log that verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub records: u64,
    pub exchanges: u64,
    pub tree_heads: u64,
    /// Whether tree-head signatures were checked (a public key was given).
    pub signatures_checked: bool,
    pub head: ChainHead,
}

/// A receipt: one exchange's record, proven to be in a tree the gateway signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub format: String,
    /// The record's line, exactly as in the log.
    pub record: String,
    pub leaf_index: u64,
    pub tree_size: u64,
    /// The audit path, leaf to root, 64 hex each.
    pub inclusion_proof: Vec<String>,
    /// The covering tree head's line, exactly as in the log.
    pub tree_head: String,
}

pub const RECEIPT_FORMAT: &str = "penghubung-receipt-v1";

/// Verifies the chain and every tree head (size, root and, with `public_key`, signature).
pub fn verify(dir: &Path, public_key: Option<&[u8]>) -> Result<Report, Broken> {
    let mut range = CompactRange::default();
    let mut report = Report {
        records: 0,
        exchanges: 0,
        tree_heads: 0,
        signatures_checked: public_key.is_some(),
        head: ChainHead {
            next_seq: 0,
            last_hash: String::new(),
        },
    };
    let head = walk(dir, |record, line| {
        if record.kind == "tree-head" {
            check_tree_head(record, &range, public_key)?;
            report.tree_heads += 1;
        }
        range.push(leaf_hash(line));
        report.records += 1;
        report.exchanges += u64::from(record.kind == "exchange");
        Ok(())
    })?;
    report.head = head;
    Ok(report)
}

fn check_tree_head(
    record: &Record,
    range: &CompactRange,
    public_key: Option<&[u8]>,
) -> Result<(), String> {
    let (Some(size), Some(root), Some(signature)) =
        (record.tree_size, &record.root, &record.signature)
    else {
        return Err("tree head without tree_size, root or signature".into());
    };
    if size != range.size() {
        return Err(format!(
            "tree head covers {size} records, but {} precede it",
            range.size()
        ));
    }
    let computed = HEXLOWER.encode(&range.root());
    if *root != computed {
        return Err(format!(
            "tree head root {root} is not the root of the records before it ({computed})"
        ));
    }
    if let Some(key) = public_key {
        let message = tree_head_message(&record.gateway, size, root, &record.time);
        if !verify_signature(key, &message, signature) {
            return Err("tree head signature does not verify with the given public key".into());
        }
    }
    Ok(())
}

/// The receipt of the exchange `exchange_id`, from the first tree head that covers it.
pub fn receipt(dir: &Path, exchange_id: &str) -> Result<Receipt, String> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut found: Option<usize> = None;
    let mut covering: Option<(usize, u64)> = None;
    walk(dir, |record, line| {
        if found.is_none() && record.exchange_id.as_deref() == Some(exchange_id) {
            found = Some(lines.len());
        }
        if let (Some(m), None, Some(size)) = (found, covering, record.tree_size) {
            if size > m as u64 && record.kind == "tree-head" {
                covering = Some((lines.len(), size));
            }
        }
        lines.push(line.to_vec());
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let m = found.ok_or_else(|| format!("no record of exchange {exchange_id}"))?;
    let (head_index, size) = covering.ok_or_else(|| {
        format!("exchange {exchange_id} is recorded, but no signed tree head covers it yet")
    })?;
    let leaves: Vec<Hash> = lines[..size as usize]
        .iter()
        .map(|l| leaf_hash(l))
        .collect();
    Ok(Receipt {
        format: RECEIPT_FORMAT.to_owned(),
        record: String::from_utf8_lossy(&lines[m]).into_owned(),
        leaf_index: m as u64,
        tree_size: size,
        inclusion_proof: inclusion_proof(m, &leaves)
            .iter()
            .map(|h| HEXLOWER.encode(h))
            .collect(),
        tree_head: String::from_utf8_lossy(&lines[head_index]).into_owned(),
    })
}

/// Checks a receipt on its own: the record is the leaf at `leaf_index` of the tree the head
/// describes, and the head is signed by `public_key`. Returns the record.
pub fn verify_receipt(receipt: &Receipt, public_key: &[u8]) -> Result<Record, String> {
    if receipt.format != RECEIPT_FORMAT {
        return Err(format!("unknown receipt format `{}`", receipt.format));
    }
    let record: Record =
        serde_json::from_str(&receipt.record).map_err(|e| format!("record: {e}"))?;
    let head: Record =
        serde_json::from_str(&receipt.tree_head).map_err(|e| format!("tree head: {e}"))?;
    let (Some(size), Some(root), Some(signature)) = (head.tree_size, &head.root, &head.signature)
    else {
        return Err("the tree head has no tree_size, root or signature".into());
    };
    if head.kind != "tree-head" || size != receipt.tree_size {
        return Err("the tree head does not match the receipt".into());
    }
    if record.seq != receipt.leaf_index {
        return Err(format!(
            "the record has seq {}, the receipt says leaf {}",
            record.seq, receipt.leaf_index
        ));
    }
    let message = tree_head_message(&head.gateway, size, root, &head.time);
    if !verify_signature(public_key, &message, signature) {
        return Err("the tree head's signature does not verify with this public key".into());
    }
    let root = to_hash(root).ok_or("the tree head's root is not 64 hex digits")?;
    let proof = receipt
        .inclusion_proof
        .iter()
        .map(|h| to_hash(h))
        .collect::<Option<Vec<Hash>>>()
        .ok_or("a proof hash is not 64 hex digits")?;
    let leaf = leaf_hash(receipt.record.as_bytes());
    if !verify_inclusion(&leaf, receipt.leaf_index, size, &proof, &root) {
        return Err("the inclusion proof does not lead from this record to the signed root".into());
    }
    Ok(record)
}

/// Reads a public key: 64 hex digits, optionally prefixed `ed25519:`.
pub fn parse_public_key(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let hex_part = text.strip_prefix("ed25519:").unwrap_or(text);
    match unhex(hex_part) {
        Some(key) if key.len() == 32 => Ok(key),
        _ => Err("a public key is 64 hex digits (as `penghubung audit pubkey` prints it)".into()),
    }
}

fn to_hash(text: &str) -> Option<Hash> {
    let bytes = unhex(text)?;
    bytes.try_into().ok()
}

/// A consistency proof between two signed tree heads of the log: that the tree of `old` records
/// is a prefix of the tree of `new` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consistency {
    pub old_size: u64,
    pub old_root: String,
    pub new_size: u64,
    pub new_root: String,
    pub proof: Vec<String>,
}

/// Builds (and checks) the consistency proof between the tree heads of sizes `old` and `new`.
pub fn consistency(dir: &Path, old: u64, new: u64) -> Result<Consistency, String> {
    let mut leaves: Vec<Hash> = Vec::new();
    let mut roots: Vec<(u64, String)> = Vec::new();
    walk(dir, |record, line| {
        if let (Some(size), Some(root)) = (record.tree_size, &record.root) {
            roots.push((size, root.clone()));
        }
        leaves.push(leaf_hash(line));
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let root_of = |size: u64| {
        roots
            .iter()
            .find(|(s, _)| *s == size)
            .map(|(_, r)| r.clone())
            .ok_or_else(|| format!("no signed tree head of size {size}"))
    };
    if old > new {
        return Err("the old tree head must not be larger than the new one".into());
    }
    let (old_root, new_root) = (root_of(old)?, root_of(new)?);
    let proof = super::merkle::consistency_proof(old as usize, &leaves[..new as usize]);
    let (r1, r2) = (
        to_hash(&old_root).ok_or("bad root")?,
        to_hash(&new_root).ok_or("bad root")?,
    );
    if !super::merkle::verify_consistency(old, new, &proof, &r1, &r2) {
        return Err(format!(
            "the log does not prove tree {old} consistent with tree {new}"
        ));
    }
    Ok(Consistency {
        old_size: old,
        old_root,
        new_size: new,
        new_root,
        proof: proof.iter().map(|h| HEXLOWER.encode(h)).collect(),
    })
}

/// The lines of records that pass `keep`, in order.
pub fn select(dir: &Path, mut keep: impl FnMut(&Record) -> bool) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    walk(dir, |record, line| {
        if keep(record) {
            out.push(String::from_utf8_lossy(line).into_owned());
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok(out)
}
