//! The audit log: one hash-chained record per exchange and per administrative act, in segment
//! files under `<data_dir>/audit/`, made durable before a response leaves (group commit).

mod batch;
mod commit;
mod index;
mod merkle;
mod prealloc;
mod receipt;
mod record;
mod redact;
mod segment;
mod sign;
pub mod stream;
mod verify;
mod writer;

pub use crate::keys::{key_id, sha256_hex, BadRedactionKey, Redactor, Signer};
pub use batch::{Appended, AuditError, WriterOptions};
pub use commit::{commit, prove, BadNonce, Committer, Nonce, Proven, SPL_COMMITMENT_NONCE};
pub use index::{Lookup, LookupError};
pub use merkle::{
    consistency_proof, consistency_proof_from, inclusion_proof, inclusion_proof_from, leaf_hash,
    root, subtree_root, verify_consistency, verify_inclusion, CompactRange, Hash, Nodes,
};
pub use receipt::{
    consistency, parse_public_key, receipt, select, verify_consistency_proof, verify_receipt,
    Consistency, Receipt, CONSISTENCY_FORMAT, RECEIPT_FORMAT,
};
pub use record::{timestamp, BodyDigest, Record, GENESIS};
pub use redact::audit_target;
pub use segment::{
    content, segment_path, segments, walk, walk_at, Broken, ChainHead, Fault, Place,
};
pub use sign::{tree_head_message, unhex, verify_signature};
pub use verify::{verify, verify_all, Report, Verification, KINDS};
pub use writer::{admin, AuditLog, Expected};
