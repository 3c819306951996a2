//! Segment files: `<data_dir>/audit/segment-<n>.jsonl`, one record per line, chained across
//! segments. Reading a directory back, for recovery and for verification.
//!
//! The segment being written is pre-allocated: a file of `segment_size` bytes whose unused
//! tail is zero bytes (so that a commit's `fdatasync` flushes data, not the file's size), and a
//! closed segment is truncated to its records. A reader stops at the first zero byte at a line
//! start; what follows it must be zeros too.

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

/// A segment's records: its bytes up to the zero-filled tail, if it has one. For readers that
/// trust the file (the index, tests); [`walk`] and `verify` check the tail line by line.
pub fn content(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &bytes[..end]
}

/// Whether the bytes from a line start are the zero-filled tail: `Some(true)` when a zero
/// starts them and all are zeros, `Some(false)` when a zero starts them but something else
/// follows (a write a crash cut short, or tampering), `None` when a record starts there.
pub fn zero_tail(rest: &[u8]) -> Option<bool> {
    (rest.first() == Some(&0)).then(|| rest.iter().all(|&b| b == 0))
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
    pub problem: Fault,
    /// Byte offset at which the bad line starts.
    pub offset: u64,
}

/// What is wrong at a [`Broken`] place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The directory or a segment could not be read.
    #[error("{0}")]
    Unreadable(String),
    /// The last line has no newline: a write the crash cut short.
    #[error("torn: the last line has no newline")]
    Torn,
    /// A zero byte starts a line, but not everything after it is zero: part of a write the
    /// crash cut short landed, or bytes were put where the segment's records had ended.
    #[error("bytes after the zero-filled end of the records")]
    AfterEnd,
    #[error("not UTF-8")]
    NotUtf8,
    #[error("not a record: {0}")]
    NotARecord(String),
    #[error("sequence {found} where {due} was due")]
    Sequence { found: u64, due: u64 },
    #[error("chain broken: prev {prev} is not the hash of the previous record ({expected})")]
    Chain { prev: String, expected: String },
    /// Segments missing between two that are there.
    #[error("{0}")]
    Missing(String),
    /// A tree head that does not verify, or what a reader of the records refused.
    #[error("{0}")]
    Refused(String),
}

impl Fault {
    /// A fault a crash mid-write can leave at the end of the last segment (and nothing else
    /// can explain away): crash recovery truncates it.
    pub fn may_be_torn_tail(&self) -> bool {
        matches!(
            self,
            Fault::Torn | Fault::AfterEnd | Fault::NotUtf8 | Fault::NotARecord(_)
        )
    }
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
        problem: Fault::Unreadable(e.to_string()),
        offset: 0,
    })?;
    for (segment, file) in files {
        let bytes = fs::read(&file).map_err(|e| Broken {
            file: file.display().to_string(),
            line: 0,
            problem: Fault::Unreadable(e.to_string()),
            offset: 0,
        })?;
        let mut offset = 0usize;
        let mut line_no = 0;
        while offset < bytes.len() {
            line_no += 1;
            let broken = |problem: Fault| Broken {
                file: file.display().to_string(),
                line: line_no,
                problem,
                offset: offset as u64,
            };
            match zero_tail(&bytes[offset..]) {
                Some(true) => break,
                Some(false) => return Err(broken(Fault::AfterEnd)),
                None => {}
            }
            let Some(end) = bytes[offset..].iter().position(|&b| b == b'\n') else {
                return Err(broken(Fault::Torn));
            };
            let line = &bytes[offset..offset + end];
            let text = std::str::from_utf8(line).map_err(|_| broken(Fault::NotUtf8))?;
            let record: Record =
                serde_json::from_str(text).map_err(|e| broken(Fault::NotARecord(e.to_string())))?;
            if record.seq != head.next_seq {
                return Err(broken(Fault::Sequence {
                    found: record.seq,
                    due: head.next_seq,
                }));
            }
            if record.prev != head.last_hash {
                return Err(broken(Fault::Chain {
                    prev: record.prev.clone(),
                    expected: head.last_hash.clone(),
                }));
            }
            let hash = sha256_hex(line);
            let place = Place {
                segment,
                offset: offset as u64,
            };
            visit(&record, line, place).map_err(|e| broken(Fault::Refused(e)))?;
            head = ChainHead {
                next_seq: record.seq + 1,
                last_hash: hash,
            };
            offset += end + 1;
        }
    }
    Ok(head)
}
