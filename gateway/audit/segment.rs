//! Segment files: `<data_dir>/audit/segment-<n>.jsonl`, one record per line, chained across
//! segments. Reading a directory back, for recovery and for verification.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::record::{Record, GENESIS};
use crate::keys::sha256_hex;

/// The segment files of a directory, in order.
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    if !dir.exists() {
        return Ok(found);
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(n) = name
            .strip_prefix("segment-")
            .and_then(|r| r.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push((n, path));
        }
    }
    found.sort();
    Ok(found)
}

pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("segment-{n:06}.jsonl"))
}

/// Where a chain stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// The sequence number the next record gets.
    pub next_seq: u64,
    /// The hash of the last record.
    pub last_hash: String,
}

/// A place in the log that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}, line {line}: {problem}")]
pub struct Broken {
    pub file: String,
    pub line: usize,
    pub problem: String,
    /// Byte offset at which the bad line starts.
    pub offset: u64,
}

/// Where a line is: its segment's number and the byte offset it starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub segment: u64,
    pub offset: u64,
}

/// Walks every segment and checks the chain; stops at the first broken line.
/// `visit` sees each record and its line once the chain holds there; an error it returns stops
/// the walk as a [`Broken`] at that line.
pub fn walk(
    dir: &Path,
    mut visit: impl FnMut(&Record, &[u8]) -> Result<(), String>,
) -> Result<ChainHead, Broken> {
    walk_at(dir, |record, line, _| visit(record, line))
}

/// [`walk`], telling `visit` where each line is.
pub fn walk_at(
    dir: &Path,
    mut visit: impl FnMut(&Record, &[u8], Place) -> Result<(), String>,
) -> Result<ChainHead, Broken> {
    let mut head = ChainHead {
        next_seq: 0,
        last_hash: GENESIS.to_owned(),
    };
    let files = segments(dir).map_err(|e| Broken {
        file: dir.display().to_string(),
        line: 0,
        problem: e.to_string(),
        offset: 0,
    })?;
    for (segment, file) in files {
        let bytes = fs::read(&file).map_err(|e| Broken {
            file: file.display().to_string(),
            line: 0,
            problem: e.to_string(),
            offset: 0,
        })?;
        let mut offset = 0usize;
        let mut line_no = 0;
        while offset < bytes.len() {
            line_no += 1;
            let broken = |problem: String| Broken {
                file: file.display().to_string(),
                line: line_no,
                problem,
                offset: offset as u64,
            };
            let Some(end) = bytes[offset..].iter().position(|&b| b == b'\n') else {
                return Err(broken("torn: the last line has no newline".into()));
            };
            let line = &bytes[offset..offset + end];
            let text = std::str::from_utf8(line).map_err(|_| broken("not UTF-8".into()))?;
            let record: Record =
                serde_json::from_str(text).map_err(|e| broken(format!("not a record: {e}")))?;
            if record.seq != head.next_seq {
                return Err(broken(format!(
                    "sequence {} where {} was due",
                    record.seq, head.next_seq
                )));
            }
            if record.prev != head.last_hash {
                return Err(broken(format!(
                    "chain broken: prev {} is not the hash of the previous record ({})",
                    record.prev, head.last_hash
                )));
            }
            let hash = sha256_hex(line);
            let place = Place {
                segment,
                offset: offset as u64,
            };
            visit(&record, line, place).map_err(broken)?;
            head = ChainHead {
                next_seq: record.seq + 1,
                last_hash: hash,
            };
            offset += end + 1;
        }
    }
    Ok(head)
}
