//! The audit log: one hash-chained record per exchange and per administrative act, in segment
//! files under `<data_dir>/audit/`, made durable before a response leaves (group commit).

mod record;
mod redact;
mod segment;
mod writer;

pub use record::{sha256_hex, timestamp, BodyDigest, Record, GENESIS};
pub use redact::{audit_target, Redactor};
pub use segment::{segments, walk, Broken, ChainHead};
pub use writer::{admin, Appended, AuditError, AuditLog, WriterOptions};
