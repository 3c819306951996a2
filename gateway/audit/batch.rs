//! The writer thread: it owns the segment files, chains records, and makes them durable with
//! group commit — every record queued while one `fdatasync` runs shares the next, and after a
//! batch the writer lets the records of exchanges still under way gather (up to `LINGER`,
//! woken by the last of them) rather than being woken by each. Tree heads, the index beside
//! the log and segment rotation happen here too, between batches.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::oneshot;

use super::index::{IndexWriter, Line, Shared};
use super::merkle::{leaf_hash, CompactRange};
use super::prealloc::{disk_room, is_full, zero_fill, Preparer};
use super::record::{timestamp, Record};
use super::segment::{segment_path, ChainHead, Place};
use super::sign::tree_head_message;
use crate::config::Durability;
use crate::keys::{sha256_hex, Signer};
use data_encoding::HEXLOWER;

/// How long the writer lets records gather after a batch at most, while exchanges are under
/// way. Chosen with a fixed linger on the full policy path with `sync` (100 µs −6% CPU per
/// request, 250 µs −10%, 500 µs −14%); waiting only while records are coming keeps that and
/// costs low-concurrency callers nothing (docs/performance.md).
const LINGER: Duration = Duration::from_micros(500);

/// With fewer exchanges than this under way, the writer lingers no longer than its last
/// commit took (PostgreSQL's `commit_siblings` = 5 and `commit_delay`, for the same reason):
/// under a steady trickle the count seldom falls to zero, so every record would wait out the
/// whole `LINGER` to save a commit that costs less than the wait.
const LINGER_SIBLINGS: usize = 5;

/// How long the writer lingers after a batch, with `arriving` exchanges under way and the last
/// commit (write, and `fdatasync` under `sync`) having taken `last_commit`.
fn linger(arriving: usize, last_commit: Duration) -> Option<Duration> {
    match arriving {
        0 => None,
        n if n < LINGER_SIBLINGS => Some(last_commit.min(LINGER)),
        _ => Some(LINGER),
    }
}

/// The room held for an exchange's record before it goes upstream: this plus six times its
/// request target's length (a target byte is at most six bytes of JSON). Every other field of
/// an exchange record is a name from the configuration, a hash or a number.
pub(super) const RECORD_ALLOWANCE: u64 = 4096;
/// The room held beyond the reservations for a tree head that may join a batch.
pub(super) const HEAD_ALLOWANCE: u64 = 1024;

/// How the writer is configured.
#[derive(Clone)]
pub struct WriterOptions {
    pub durability: Durability,
    pub flush_interval: Duration,
    pub segment_size: u64,
    /// Records that may wait for the writer; beyond it appends fail (fail closed).
    pub queue: usize,
    /// Signs tree heads; without it none are written.
    pub signer: Option<Arc<Signer>>,
    /// The gateway id the tree heads name.
    pub gateway: String,
    /// A tree head after this many records...
    pub tree_head_every: u64,
    /// ...or this long after the first record it does not cover yet.
    pub tree_head_interval: Duration,
}

/// Why a record could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit writer is unhealthy: {0}")]
    Unhealthy(String),
    #[error("the audit queue is full")]
    QueueFull,
    /// The disk has no room for the record: nothing of it was written, and the writer goes on
    /// once there is room again.
    #[error("the audit log has no room on its disk: {0}")]
    NoRoom(String),
}

/// Where an appended record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: String,
}

/// What the handle and the writer thread share.
pub(super) struct State {
    pub(super) healthy: AtomicBool,
    /// Records handed to the writer and not yet committed, and how many may be.
    pub(super) queued: AtomicUsize,
    pub(super) bound: usize,
    pub(super) failure: std::sync::Mutex<Option<String>>,
    pub(super) inject_failure: AtomicBool,
    /// While set, the writer takes no new batch (a slow disk, for fault drills).
    pub(super) stalled: AtomicBool,
    /// Seconds each fsync of a segment took (the metrics register it).
    pub(super) fsync_seconds: Histogram,
    /// Exchanges under way whose record has not been handed over yet ([`AuditLog::expect`]).
    pub(super) arriving: AtomicUsize,
    /// The writer is lingering for them: the one that brings `arriving` to zero wakes it.
    pub(super) lingering: AtomicBool,
    pub(super) writer: std::sync::OnceLock<std::thread::Thread>,
    /// What the index beside the log has published, for look-ups.
    pub(super) index: Arc<Shared>,
    /// The log's directory.
    pub(super) dir: PathBuf,
    /// Bytes the writer can write without the disk allocating anything: the larger of what is
    /// left of the pre-allocated segment and the size of the prepared next one (a batch that
    /// does not fit the first goes whole into the second).
    pub(super) room: AtomicU64,
    /// Bytes held for the records of admitted exchanges not yet written.
    pub(super) reserved: AtomicU64,
}

pub(super) struct Job {
    pub(super) record: Record,
    pub(super) done: oneshot::Sender<Result<Appended, AuditError>>,
    /// The room held for it at admission, released once it is written (or refused).
    pub(super) reserved: u64,
}

pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) options: WriterOptions,
    pub(super) segment: u64,
    pub(super) file: File,
    /// Where the records of the segment end: the next write's offset.
    pub(super) size: u64,
    /// The segment's pre-allocated size (its file's length).
    pub(super) capacity: u64,
    /// The next segment, prepared ahead.
    pub(super) next: Preparer,
    pub(super) head: ChainHead,
    pub(super) last_sync: Instant,
    pub(super) unsynced: bool,
    pub(super) state: Arc<State>,
    pub(super) range: CompactRange,
    pub(super) since_head: u64,
    pub(super) last_head: Instant,
    /// The index beside the log; `None` once it could not be written (look-ups then read
    /// the log itself).
    pub(super) index: Option<IndexWriter>,
}

impl Writer {
    pub(super) fn run(mut self, queue: mpsc::Receiver<Job>) {
        // After a batch, while exchanges are still on their way to append (see `Expected`),
        // the writer waits up to `LINGER` for them (no longer than its last commit took while
        // only a few are under way, see `linger`) — woken by the last — and then takes what
        // came, instead of waiting on the queue: under load no append has to wake it (a futex
        // call and two context switches per record on a busy core), and batches grow. With
        // nothing under way, or idle, it waits on the queue, so no record waits for others
        // that are not coming.
        self.state.writer.get_or_init(std::thread::current);
        let mut busy = false;
        let mut last_commit = Duration::ZERO;
        loop {
            while self.state.stalled.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let next = if busy {
                self.state.lingering.store(true, Ordering::SeqCst);
                if let Some(wait) = linger(self.state.arriving.load(Ordering::SeqCst), last_commit)
                {
                    std::thread::park_timeout(wait);
                }
                self.state.lingering.store(false, Ordering::SeqCst);
                match queue.try_recv() {
                    Ok(job) => Ok(job),
                    Err(mpsc::TryRecvError::Empty) => {
                        busy = false;
                        continue;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                }
            } else {
                queue.recv_timeout(self.options.flush_interval)
            };
            busy = next.is_ok();
            let first = match next {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    if self.tree_head_due() {
                        let _ = self.commit(&mut []);
                    }
                    self.flush_if_due();
                    self.publish_index();
                    self.update_room();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush_if_due();
                    return;
                }
            };
            // A stalled writer holds what it has received: it stays counted as queued.
            while self.state.stalled.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut batch = vec![first];
            while batch.len() < 4096 {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let result = self.commit(&mut batch);
            last_commit = started.elapsed();
            self.update_room();
            let reserved = batch.iter().map(|job| job.reserved).sum();
            self.state.reserved.fetch_sub(reserved, Ordering::AcqRel);
            self.state.queued.fetch_sub(batch.len(), Ordering::AcqRel);
            for (job, outcome) in batch.into_iter().zip(result) {
                let _ = job.done.send(outcome);
            }
        }
    }

    /// Writes a batch with one write and (under `sync`) one `fdatasync`.
    fn commit(&mut self, batch: &mut [Job]) -> Vec<Result<Appended, AuditError>> {
        let fail = |state: &State, why: String| {
            state.healthy.store(false, Ordering::Release);
            if let Ok(mut f) = state.failure.lock() {
                f.get_or_insert(why.clone());
            }
            AuditError::Unhealthy(why)
        };
        if !self.state.healthy.load(Ordering::Acquire) {
            let why = self
                .state
                .failure
                .lock()
                .ok()
                .and_then(|f| f.clone())
                .unwrap_or_default();
            return batch
                .iter()
                .map(|_| Err(AuditError::Unhealthy(why.clone())))
                .collect();
        }
        let mut buffer = Vec::with_capacity(batch.len() * 512);
        let mut leaves = Vec::with_capacity(batch.len() + 1);
        // Each line's span in the buffer, for the index.
        let mut spans = Vec::with_capacity(batch.len() + 1);
        let mut appended = Vec::with_capacity(batch.len());
        let mut head = self.head.clone();
        for job in batch.iter_mut() {
            job.record.seq = head.next_seq;
            job.record.prev = head.last_hash.clone();
            // Serialised straight into the batch; the line is what was just written.
            let start = buffer.len();
            if let Err(e) = serde_json::to_writer(&mut buffer, &job.record) {
                let e = fail(&self.state, format!("cannot serialise a record: {e}"));
                return batch.iter().map(|_| Err(e.clone())).collect();
            }
            let line = &buffer[start..];
            let hash = sha256_hex(line);
            leaves.push(leaf_hash(line));
            spans.push((start, line.len()));
            buffer.push(b'\n');
            appended.push(Appended {
                seq: head.next_seq,
                hash: hash.clone(),
            });
            head = ChainHead {
                next_seq: head.next_seq + 1,
                last_hash: hash,
            };
        }
        let mut range = self.range.clone();
        // The complete subtrees each leaf completes, for the index: all in one vector, each
        // leaf's ending at its entry in `ends`.
        let mut nodes: Vec<(u32, u64, super::merkle::Hash)> =
            Vec::with_capacity(2 * leaves.len() + 2);
        let mut ends = Vec::with_capacity(leaves.len() + 1);
        for leaf in &leaves {
            range.push_with(*leaf, |level, i, hash| nodes.push((level, i, *hash)));
            ends.push(nodes.len());
        }
        let since_head = self.since_head + batch.len() as u64;
        let due = since_head >= self.options.tree_head_every
            || self.last_head.elapsed() >= self.options.tree_head_interval;
        let signed = match &self.options.signer {
            Some(signer) if since_head > 0 && due => {
                let mut record = tree_head(signer, &self.options.gateway, &range);
                record.seq = head.next_seq;
                record.prev = head.last_hash.clone();
                match serde_json::to_vec(&record) {
                    Ok(line) => {
                        let hash = sha256_hex(&line);
                        range.push_with(leaf_hash(&line), |level, i, hash| {
                            nodes.push((level, i, *hash))
                        });
                        ends.push(nodes.len());
                        spans.push((buffer.len(), line.len()));
                        buffer.extend_from_slice(&line);
                        buffer.push(b'\n');
                        head = ChainHead {
                            next_seq: head.next_seq + 1,
                            last_hash: hash,
                        };
                        Some(record)
                    }
                    Err(_) => None,
                }
            }
            _ => None,
        };
        if buffer.is_empty() {
            return Vec::new();
        }
        let written = if self.state.inject_failure.load(Ordering::Acquire) {
            Err(io::Error::other("injected failure"))
        } else {
            self.write(&buffer)
        };
        let base = match written {
            Ok(base) => base,
            Err(e) if is_full(&e) => {
                // Nothing of the batch is in the log; the writer goes on when there is room.
                let e = AuditError::NoRoom(e.to_string());
                tracing::error!(error = %e, "audit records refused for want of room");
                return batch.iter().map(|_| Err(e.clone())).collect();
            }
            Err(e) => {
                let e = fail(
                    &self.state,
                    format!(
                        "writing {}: {e}",
                        segment_path(&self.dir, self.segment).display()
                    ),
                );
                tracing::error!(error = %e, "audit writer failed; refusing exchanges until restarted");
                return batch.iter().map(|_| Err(e.clone())).collect();
            }
        };
        let first_seq = self.head.next_seq;
        self.head = head;
        self.range = range;
        let records = batch.iter().map(|job| &job.record).chain(signed.as_ref());
        self.index(first_seq, base, &buffer, &spans, (&nodes, &ends), records);
        if signed.is_some() {
            self.since_head = 0;
            self.last_head = Instant::now();
        } else {
            self.since_head = since_head;
        }
        match self.options.durability {
            Durability::Sync => self.last_sync = Instant::now(),
            Durability::Interval => {
                self.unsynced = true;
                self.flush_if_due();
            }
        }
        appended.into_iter().map(Ok).collect()
    }

    /// Hands the lines just written to the index. The index is derived data: if it cannot be
    /// written it is dropped (look-ups then read the log), and exchanges go on.
    fn index<'a>(
        &mut self,
        first_seq: u64,
        base: u64,
        buffer: &[u8],
        spans: &[(usize, usize)],
        (nodes, ends): (&[(u32, u64, super::merkle::Hash)], &[usize]),
        records: impl Iterator<Item = &'a Record>,
    ) {
        let Some(index) = self.index.as_mut() else {
            return;
        };
        let mut added = Ok(());
        let mut from = 0;
        for (i, ((record, (start, len)), end)) in records.zip(spans).zip(ends).enumerate() {
            let made = &nodes[from..*end];
            from = *end;
            added = index.add(Line {
                seq: first_seq + i as u64,
                record,
                line: &buffer[*start..start + len],
                place: Place {
                    segment: self.segment,
                    offset: base + *start as u64,
                },
                nodes: made,
            });
            if added.is_err() {
                break;
            }
        }
        if let Err(e) = added.and_then(|()| index.publish_soon()) {
            tracing::error!(error = %e, "the audit index could not be written; look-ups will read the log");
            self.index = None;
        }
    }

    /// Publishes what the index holds (the writer is idle: nothing later would).
    fn publish_index(&mut self) {
        if let Some(Err(e)) = self.index.as_mut().map(IndexWriter::publish) {
            tracing::error!(error = %e, "the audit index could not be written; look-ups will read the log");
            self.index = None;
        }
    }

    /// `fdatasync` of the current segment, timed.
    fn sync(&self) -> io::Result<()> {
        let started = Instant::now();
        let synced = self.file.sync_data();
        self.state
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        synced
    }

    fn tree_head_due(&self) -> bool {
        self.options.signer.is_some()
            && self.since_head > 0
            && self.last_head.elapsed() >= self.options.tree_head_interval
    }

    fn flush_if_due(&mut self) {
        if self.unsynced && self.last_sync.elapsed() >= self.options.flush_interval {
            if let Err(e) = self.sync() {
                self.state.healthy.store(false, Ordering::Release);
                tracing::error!(error = %e, "audit fsync failed");
            }
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
    }

    /// Writes `buffer` after the segment's records — into the next segment when it does not
    /// fit what is left of this one — and (under `sync`) makes it durable: returns the offset
    /// it starts at. On any failure nothing of it stays: the bytes it may have left are zeroed
    /// again, so the log ends at its last whole record.
    fn write(&mut self, buffer: &[u8]) -> io::Result<u64> {
        let len = buffer.len() as u64;
        if self.size + len > self.capacity && self.size > 0 {
            self.rotate()?;
        }
        let base = self.size;
        let written =
            self.file
                .write_all_at(buffer, base)
                .and_then(|()| match self.options.durability {
                    Durability::Sync => self.sync(),
                    Durability::Interval => Ok(()),
                });
        if let Err(e) = written {
            self.undo(base, len);
            return Err(e);
        }
        self.size = base + len;
        self.capacity = self.capacity.max(self.size);
        Ok(base)
    }

    /// Zeroes what a failed write of `len` bytes at `base` may have left (within the
    /// pre-allocated size; beyond it the file is cut back).
    fn undo(&mut self, base: u64, len: u64) {
        let end = (base + len).min(self.capacity);
        let undone = self.file.metadata().and_then(|meta| {
            if meta.len() > self.capacity.max(base) {
                self.file.set_len(self.capacity.max(base))?;
            }
            zero_fill(&self.file, base, end)
        });
        match undone {
            // The disk took back what could not be zeroed: the segment ends there.
            Ok(reached) if reached < end => self.capacity = reached,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "a failed audit write could not be undone; the next start truncates it");
                self.state.healthy.store(false, Ordering::Release);
            }
        }
    }

    /// Closes the segment and goes on in the prepared next one. The next segment is in place
    /// before this one is cut to its records: a crash in between leaves a closed segment with
    /// a zero tail, which readers stop at and the next start cuts.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let path = segment_path(&self.dir, self.segment + 1);
        let capacity = self.next.install(&path)?;
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        if let Err(e) = self
            .file
            .set_len(self.size)
            .and_then(|()| self.file.sync_all())
        {
            tracing::warn!(error = %e, segment = self.segment, "a closed audit segment keeps its zero tail until the next start");
        }
        self.file = file;
        self.segment += 1;
        self.size = 0;
        self.capacity = capacity;
        Ok(())
    }

    /// Prepares the next segment once this one is half full, and tells admission how much
    /// room there is.
    pub(super) fn update_room(&mut self) {
        if self.size.saturating_mul(2) >= self.capacity {
            self.next.start();
        } else {
            self.next.poll();
        }
        // A batch that fits no pre-allocated segment grows one, so the disk's own free space
        // counts too: the pre-allocated room alone (a segment) would let a few hundred slow
        // exchanges with long targets hold every other agency's room on a disk with plenty.
        let room = self
            .capacity
            .saturating_sub(self.size)
            .max(self.next.room())
            .max(disk_room(&self.dir, self.options.segment_size));
        self.state.room.store(room, Ordering::Release);
    }
}

/// A signed tree head over every record in `range` (all lines before it).
fn tree_head(signer: &Signer, gateway: &str, range: &CompactRange) -> Record {
    let time = timestamp(crate::clock::Clock::system().now_millis());
    let root = HEXLOWER.encode(&range.root());
    let signature = signer.sign(&tree_head_message(gateway, range.size(), &root, &time));
    Record {
        time,
        gateway: gateway.to_owned(),
        kind: "tree-head".to_owned(),
        outcome: "signed".to_owned(),
        tree_size: Some(range.size()),
        root: Some(root),
        signature: Some(signature),
        ..Record::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A steady trickle of exchanges (a few always under way) waits at most one commit's time
    /// for company; a crowd waits the whole linger; nobody under way, no wait.
    #[test]
    fn the_linger_follows_how_many_are_on_their_way() {
        let fsync = Duration::from_micros(120);
        assert_eq!(linger(0, fsync), None);
        for few in 1..LINGER_SIBLINGS {
            assert_eq!(linger(few, fsync), Some(fsync), "{few} under way");
        }
        assert_eq!(linger(LINGER_SIBLINGS, fsync), Some(LINGER));
        assert_eq!(linger(64, fsync), Some(LINGER));
        // A commit slower than the linger never makes a few wait longer than a crowd.
        assert_eq!(linger(2, Duration::from_millis(30)), Some(LINGER));
    }
}
