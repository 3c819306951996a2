//! What auditors run: verification of a whole log (chain, tree heads, signatures), and
//! per-exchange receipts — the record, its inclusion proof, and the signed tree head that
//! covers it — that verify on their own, offline.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::merkle::{inclusion_proof, leaf_hash, verify_inclusion, Hash};
use super::record::Record;
use super::segment::walk;
use super::sign::{tree_head_message, unhex, verify_signature};
use data_encoding::HEXLOWER;

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

/// Reads an Ed25519 public key: 64 hex digits, optionally prefixed `ed25519:` (as `penghubung
/// audit pubkey` prints it), or a PEM `PUBLIC KEY` (SubjectPublicKeyInfo, as `openssl pkey
/// -pubout` writes it).
pub fn parse_public_key(text: &str) -> Result<Vec<u8>, String> {
    /// `SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits, 32 bytes) }`
    const ED25519_SPKI: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        use rustls_pki_types::pem::PemObject;
        let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(text.as_bytes())
            .map_err(|e| format!("not a PEM public key: {e}"))?;
        return match spki.as_ref().strip_prefix(&ED25519_SPKI[..]) {
            Some(key) if key.len() == 32 => Ok(key.to_vec()),
            _ => Err("the PEM public key is not an Ed25519 key".into()),
        };
    }
    let hex_part = text.strip_prefix("ed25519:").unwrap_or(text);
    match unhex(hex_part) {
        Some(key) if key.len() == 32 => Ok(key),
        _ => Err("a public key is 64 hex digits, optionally after `ed25519:` (as `penghubung audit pubkey` prints it), or a PEM PUBLIC KEY (as `openssl pkey -pubout` writes it)".into()),
    }
}

fn to_hash(text: &str) -> Option<Hash> {
    let bytes = unhex(text)?;
    bytes.try_into().ok()
}

/// A consistency proof between two signed tree heads of the log: that the tree of `old` records
/// is a prefix of the tree of `new` records. With both heads' lines it checks offline
/// ([`verify_consistency_proof`]), as a receipt does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consistency {
    pub format: String,
    pub old_size: u64,
    pub old_root: String,
    pub new_size: u64,
    pub new_root: String,
    /// The RFC 6962 `PROOF(old_size, D[new_size])`, 64 hex each.
    pub proof: Vec<String>,
    /// The signed tree head of `old_size` records, its line exactly as in the log.
    pub old_tree_head: String,
    /// The signed tree head of `new_size` records, likewise.
    pub new_tree_head: String,
}

pub const CONSISTENCY_FORMAT: &str = "penghubung-consistency-v1";

/// Builds (and checks) the consistency proof between the tree heads of sizes `old` and `new`.
pub fn consistency(dir: &Path, old: u64, new: u64) -> Result<Consistency, String> {
    let mut leaves: Vec<Hash> = Vec::new();
    let mut heads: Vec<(u64, String, String)> = Vec::new();
    walk(dir, |record, line| {
        if let (Some(size), Some(root), "tree-head") =
            (record.tree_size, &record.root, record.kind.as_str())
        {
            heads.push((
                size,
                root.clone(),
                String::from_utf8_lossy(line).into_owned(),
            ));
        }
        leaves.push(leaf_hash(line));
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let head_of = |size: u64| {
        heads
            .iter()
            .find(|(s, _, _)| *s == size)
            .map(|(_, root, line)| (root.clone(), line.clone()))
            .ok_or_else(|| format!("no signed tree head of size {size}"))
    };
    if old > new {
        return Err("the old tree head must not be larger than the new one".into());
    }
    let ((old_root, old_line), (new_root, new_line)) = (head_of(old)?, head_of(new)?);
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
        format: CONSISTENCY_FORMAT.to_owned(),
        old_size: old,
        old_root,
        new_size: new,
        new_root,
        proof: proof.iter().map(|h| HEXLOWER.encode(h)).collect(),
        old_tree_head: old_line,
        new_tree_head: new_line,
    })
}

/// Checks a consistency proof on its own: both tree heads are signed by `public_key`, name the
/// sizes and roots the proof states, and the proof shows the old tree is a prefix of the new.
/// Returns the two heads.
pub fn verify_consistency_proof(
    proof: &Consistency,
    public_key: &[u8],
) -> Result<(Record, Record), String> {
    if proof.format != CONSISTENCY_FORMAT {
        return Err(format!(
            "unknown consistency proof format `{}`",
            proof.format
        ));
    }
    let signed = |line: &str, size: u64, root: &str, which: &str| -> Result<Record, String> {
        let head: Record =
            serde_json::from_str(line).map_err(|e| format!("{which} tree head: {e}"))?;
        let (Some(s), Some(r), Some(signature)) = (head.tree_size, &head.root, &head.signature)
        else {
            return Err(format!(
                "the {which} tree head has no tree_size, root or signature"
            ));
        };
        if head.kind != "tree-head" || s != size || r != root {
            return Err(format!(
                "the {which} tree head does not state size {size} and root {root}"
            ));
        }
        let message = tree_head_message(&head.gateway, s, r, &head.time);
        if !verify_signature(public_key, &message, signature) {
            return Err(format!(
                "the {which} tree head's signature does not verify with this public key"
            ));
        }
        Ok(head)
    };
    let old = signed(&proof.old_tree_head, proof.old_size, &proof.old_root, "old")?;
    let new = signed(&proof.new_tree_head, proof.new_size, &proof.new_root, "new")?;
    if old.gateway != new.gateway {
        return Err("the two tree heads name different gateways".into());
    }
    let hashes = proof
        .proof
        .iter()
        .map(|h| to_hash(h))
        .collect::<Option<Vec<Hash>>>()
        .ok_or("a proof hash is not 64 hex digits")?;
    let (r1, r2) = (
        to_hash(&proof.old_root).ok_or("the old root is not 64 hex digits")?,
        to_hash(&proof.new_root).ok_or("the new root is not 64 hex digits")?,
    );
    if !super::merkle::verify_consistency(proof.old_size, proof.new_size, &hashes, &r1, &r2) {
        return Err(format!(
            "the proof does not show tree {} to be a prefix of tree {}",
            proof.old_size, proof.new_size
        ));
    }
    Ok((old, new))
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
