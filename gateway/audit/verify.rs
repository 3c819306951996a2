//! `audit verify`: the whole log checked, and every problem reported — not only the first. After
//! a broken line the check goes on from that line as it stands (its `seq`, its hash, its leaf),
//! so a second tampering further on, a bad signature or a missing segment is reported too.
//!
//! What is checked: segments numbered from 1 without a gap; each line a JSON record of a known
//! kind (`exchange`, `admin`, `tree-head`; the format defines no way to skip others), ending in
//! `\n`; `seq` counting from 0; `prev` the SHA-256 of the line before (the genesis value first);
//! each tree head's `tree_size` and `root` those of the lines before it and, with a public key,
//! its signature.

use std::fs;
use std::path::Path;

use data_encoding::HEXLOWER;

use super::merkle::{leaf_hash, CompactRange};
use super::record::{Record, GENESIS};
use super::segment::{segments, zero_tail, Broken, ChainHead, Fault};
use super::sign::{tree_head_message, verify_signature};
use crate::keys::sha256_hex;

/// The record kinds the format defines.
pub const KINDS: [&str; 3] = ["exchange", "admin", "tree-head"];

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

/// Verifies the chain and every tree head (size, root and, with `public_key`, signature);
/// the first problem, if any ([`verify_all`] lists them all).
pub fn verify(dir: &Path, public_key: Option<&[u8]>) -> Result<Report, Broken> {
    let found = verify_all(dir, public_key);
    match found.problems.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(found.report),
    }
}

/// What a verification found: the counts, and every problem (none: the log verifies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub report: Report,
    pub problems: Vec<Broken>,
}

/// Checks every segment of `dir` (see the module documentation); with `public_key`, every tree
/// head's signature too.
pub fn verify_all(dir: &Path, public_key: Option<&[u8]>) -> Verification {
    let mut problems = Vec::new();
    let mut report = Report {
        records: 0,
        exchanges: 0,
        tree_heads: 0,
        signatures_checked: public_key.is_some(),
        head: ChainHead {
            next_seq: 0,
            last_hash: GENESIS.to_owned(),
        },
    };
    let whole = |problem: Fault| Broken {
        file: dir.display().to_string(),
        line: 0,
        problem,
        offset: 0,
    };
    let files = match segments(dir) {
        Ok(files) => files,
        Err(e) => {
            problems.push(whole(Fault::Unreadable(e.to_string())));
            return Verification { report, problems };
        }
    };
    if files.is_empty() {
        problems.push(whole(Fault::Missing(
            "no segment files (segment-NNNNNN.jsonl)".into(),
        )));
    }
    let mut expected_segment = 1;
    let mut range = CompactRange::default();
    for (number, file) in files {
        if number != expected_segment {
            let missing = if number == expected_segment + 1 {
                format!("segment {expected_segment} is missing")
            } else {
                format!("segments {expected_segment} to {} are missing", number - 1)
            };
            problems.push(Broken {
                file: file.display().to_string(),
                line: 0,
                problem: Fault::Missing(missing),
                offset: 0,
            });
        }
        expected_segment = number + 1;
        let bytes = match fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) => {
                problems.push(Broken {
                    file: file.display().to_string(),
                    line: 0,
                    problem: Fault::Unreadable(e.to_string()),
                    offset: 0,
                });
                continue;
            }
        };
        let mut offset = 0usize;
        let mut line_no = 0;
        while offset < bytes.len() {
            line_no += 1;
            let start = offset as u64;
            let mut broken = |problem: Fault| {
                problems.push(Broken {
                    file: file.display().to_string(),
                    line: line_no,
                    problem,
                    offset: start,
                })
            };
            match zero_tail(&bytes[offset..]) {
                // The pre-allocated tail of the segment being written: its records end here.
                Some(true) => break,
                Some(false) => {
                    broken(Fault::AfterEnd);
                    break;
                }
                None => {}
            }
            let (line, next) = match bytes[offset..].iter().position(|&b| b == b'\n') {
                Some(end) => (&bytes[offset..offset + end], offset + end + 1),
                None => {
                    broken(Fault::Torn);
                    (&bytes[offset..], bytes.len())
                }
            };
            offset = next;
            // Whatever the line holds, it is a leaf of the tree the heads after it sign.
            let leaf = leaf_hash(line);
            report.records += 1;
            let hash = sha256_hex(line);
            let record: Record = match std::str::from_utf8(line)
                .map_err(|_| Fault::NotUtf8)
                .and_then(|text| {
                    serde_json::from_str(text).map_err(|e| Fault::NotARecord(e.to_string()))
                }) {
                Ok(record) => record,
                Err(problem) => {
                    broken(problem);
                    range.push(leaf);
                    report.head = ChainHead {
                        next_seq: report.head.next_seq + 1,
                        last_hash: hash,
                    };
                    continue;
                }
            };
            if record.seq != report.head.next_seq {
                broken(Fault::Sequence {
                    found: record.seq,
                    due: report.head.next_seq,
                });
            }
            if record.prev != report.head.last_hash {
                broken(Fault::Chain {
                    prev: record.prev.clone(),
                    expected: report.head.last_hash.clone(),
                });
            }
            if !KINDS.contains(&record.kind.as_str()) {
                broken(Fault::Refused(format!(
                    "unknown record kind `{}`",
                    record.kind
                )));
            }
            report.exchanges += u64::from(record.kind == "exchange");
            if record.kind == "tree-head" {
                report.tree_heads += 1;
                // The head covers the lines before it, not itself.
                if let Err(problem) = check_tree_head(&record, &range, public_key) {
                    broken(Fault::Refused(problem));
                }
            }
            range.push(leaf);
            report.head = ChainHead {
                next_seq: record.seq + 1,
                last_hash: hash,
            };
        }
    }
    Verification { report, problems }
}

/// A tree head against the tree of the lines before it (and, with a key, its signature).
pub(super) fn check_tree_head(
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
