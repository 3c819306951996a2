//! The audit writer: one thread that owns the segment files, chains records, and makes them
//! durable with group commit — every record queued while one `fdatasync` runs shares the next,
//! and after a batch the writer lets the records of exchanges still under way gather (up to
//! `LINGER`, woken by the last of them) rather than being woken by each.
//!
//! The pipeline holds an [`AuditLog`] handle. Fail closed: when the writer cannot write, it
//! turns unhealthy and every later append fails, so the pipeline refuses exchanges instead of
//! forwarding them unrecorded.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::sync::oneshot;

use super::batch::{
    Appended, AuditError, Job, State, Writer, WriterOptions, HEAD_ALLOWANCE, RECORD_ALLOWANCE,
};
use super::index::{IndexWriter, Line, Lookup};
use super::merkle::{leaf_hash, CompactRange};
use super::prealloc::{within_disk, zero_fill, Preparer};
use super::record::{timestamp, Record};
use super::segment::{content, segment_path, segments, walk, walk_at};
use crate::durable::sync_dir;

/// The handle the pipeline, the CLI and administrative acts append through.
#[derive(Clone)]
pub struct AuditLog {
    jobs: SyncSender<Job>,
    state: Arc<State>,
}

/// An exchange that will append a record, and the room its record has on the disk: while any
/// is under way, the writer lets a batch gather; the last one to hand over its record (or to
/// end without one) wakes it.
pub struct Expected {
    state: Arc<State>,
    /// Still counted among the exchanges the writer lingers for.
    arriving: bool,
    /// The bytes held for its record; handed to the writer with it.
    reserved: u64,
}

impl Expected {
    /// Keeps the room but stops the writer lingering for this record: for a streamed answer,
    /// recorded only when it ends.
    pub fn streaming(mut self) -> Expected {
        self.arrived();
        self
    }

    fn arrived(&mut self) {
        if !std::mem::take(&mut self.arriving) {
            return;
        }
        let state = &self.state;
        // SeqCst here and in the writer: each side writes one flag and reads the other's.
        if state.arriving.fetch_sub(1, Ordering::SeqCst) == 1
            && state.lingering.load(Ordering::SeqCst)
        {
            if let Some(writer) = state.writer.get() {
                writer.unpark();
            }
        }
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        self.arrived();
        let reserved = std::mem::take(&mut self.reserved);
        self.state.reserved.fetch_sub(reserved, Ordering::AcqRel);
    }
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens (or creates) the log in `dir`, recovering a torn tail left by a crash: the partial
    /// last line is truncated, and the truncation is itself recorded.
    pub fn open(
        dir: &Path,
        gateway: &str,
        options: WriterOptions,
    ) -> io::Result<(AuditLog, Vec<Record>)> {
        fs::create_dir_all(dir)?;
        let mut notes = Vec::new();
        let head = match walk(dir, |_, _| Ok(())) {
            Ok(head) => head,
            Err(broken) => {
                // Only a torn or unreadable tail of the last segment is repaired; anything
                // earlier is tampering or corruption for `audit verify` to report, not to hide.
                let last = segments(dir)?.last().map(|(_, p)| p.display().to_string());
                if last.as_deref() != Some(broken.file.as_str())
                    || !broken.problem.may_be_torn_tail()
                {
                    return Err(io::Error::other(format!(
                        "the audit log does not verify and is not a torn tail: {broken}"
                    )));
                }
                let file = OpenOptions::new().write(true).open(&broken.file)?;
                // What the crash left beyond the last whole record, not counting the zeros of
                // the pre-allocated tail (which the segment gets back below).
                let removed = content(&fs::read(&broken.file)?).len() as u64 - broken.offset;
                file.set_len(broken.offset)?;
                file.sync_all()?;
                notes.push(format!(
                    "truncated {removed} bytes of a torn record at {}, line {}",
                    broken.file, broken.line
                ));
                walk(dir, |_, _| Ok(())).map_err(io::Error::other)?
            }
        };
        // The Merkle tree over every record so far, how many came after the last head, and
        // the index beside the log, rebuilt from the log as it is read.
        let mut range = CompactRange::default();
        let mut since_head = 0u64;
        let mut index = IndexWriter::create(dir)?;
        let mut nodes = Vec::new();
        // Where each segment's records end.
        let mut ends = std::collections::HashMap::new();
        walk_at(dir, |record, line, place| {
            ends.insert(place.segment, place.offset + line.len() as u64 + 1);
            nodes.clear();
            range.push_with(leaf_hash(line), |level, i, hash| {
                nodes.push((level, i, *hash))
            });
            since_head = if record.kind == "tree-head" {
                0
            } else {
                since_head + 1
            };
            index
                .add(Line {
                    seq: record.seq,
                    record,
                    line,
                    place,
                    nodes: &nodes,
                })
                .map_err(|e| format!("cannot write the audit index: {e}"))
        })
        .map_err(io::Error::other)?;
        index.publish()?;
        let shared = index.shared();
        let all = segments(dir)?;
        // A crash during a rotation can leave a closed segment with its zero tail: cut it.
        for (n, path) in all.iter().rev().skip(1) {
            let end = ends.get(n).copied().unwrap_or(0);
            if fs::metadata(path)?.len() > end {
                let file = OpenOptions::new().write(true).open(path)?;
                file.set_len(end)?;
                file.sync_all()?;
            }
        }
        let (segment, path) = match all.last() {
            Some((n, p)) => (*n, p.clone()),
            None => (1, segment_path(dir, 1)),
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        let size = ends.get(&segment).copied().unwrap_or(0);
        // The segment being written is pre-allocated: zeros up to `segment_size` (as far as
        // the disk allows), durable before any record goes into them.
        let length = file.metadata()?.len();
        let capacity = if length < options.segment_size {
            zero_fill(
                &file,
                length,
                within_disk(dir, length, options.segment_size),
            )?
        } else {
            length
        };
        sync_dir(dir)?;
        let next = Preparer::open(dir, options.segment_size)?;
        let state = Arc::new(State {
            healthy: AtomicBool::new(true),
            queued: AtomicUsize::new(0),
            bound: options.queue,
            failure: std::sync::Mutex::new(None),
            inject_failure: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            // 50 µs doubling to about 1.6 s.
            fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            arriving: AtomicUsize::new(0),
            lingering: AtomicBool::new(false),
            writer: std::sync::OnceLock::new(),
            index: shared,
            dir: dir.to_path_buf(),
            room: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
        });
        let (jobs, queue) = mpsc::sync_channel(options.queue);
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            options,
            segment,
            file,
            size,
            capacity,
            next,
            head,
            last_sync: Instant::now(),
            unsynced: false,
            state: state.clone(),
            range,
            since_head,
            last_head: Instant::now(),
            index: Some(index),
        };
        writer.update_room();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(queue))?;
        let log = AuditLog { jobs, state };
        let mut recovered = Vec::new();
        for note in notes {
            recovered.push(admin(gateway, "recovered", Some(note)));
        }
        Ok((log, recovered))
    }

    /// Look-ups against this log through its index (receipts, tree heads, consistency).
    pub fn lookup(&self) -> Lookup {
        Lookup::new(&self.state.dir, self.state.index.clone())
    }

    /// Records handed to the writer and not yet durable (or written, with `interval`).
    pub fn queued(&self) -> usize {
        self.state.queued.load(Ordering::Acquire)
    }

    /// The histogram of fsync durations, for the metrics registry.
    pub fn fsync_seconds(&self) -> Histogram {
        self.state.fsync_seconds.clone()
    }

    /// Whether the writer works and its queue has room.
    fn working(&self) -> bool {
        self.state.healthy.load(Ordering::Acquire)
            && self.state.queued.load(Ordering::Acquire) < self.state.bound
    }

    /// Whether an exchange's record can be taken now — the writer works, its queue has room,
    /// and its disk has room for one (readiness).
    pub fn healthy(&self) -> bool {
        self.working()
            && self.state.room.load(Ordering::Acquire) >= RECORD_ALLOWANCE + HEAD_ALLOWANCE
    }

    /// Whether the writer works but its disk has no room for one more exchange's record.
    pub fn full(&self) -> bool {
        self.working() && !self.healthy()
    }

    /// Whether the exchanges announced with [`AuditLog::expect`] — this one among them — can
    /// go upstream: the writer works, its queue has room, and the room held for all their
    /// records is there. Checked before any upstream contact.
    pub fn admits(&self) -> bool {
        self.working()
            && self.state.reserved.load(Ordering::Acquire) + HEAD_ALLOWANCE
                <= self.state.room.load(Ordering::Acquire)
    }

    /// The bytes the disk holds ready for records, and the bytes held for admitted exchanges'
    /// records.
    pub fn room(&self) -> (u64, u64) {
        (
            self.state.room.load(Ordering::Acquire),
            self.state.reserved.load(Ordering::Acquire),
        )
    }

    /// Announces an exchange that will append a record, holding room for it (its request
    /// target is `target_len` bytes); hand the guard to [`AuditLog::append_expected`] (or drop
    /// it) when the record is ready.
    pub fn expect(&self, target_len: usize) -> Expected {
        let reserved = RECORD_ALLOWANCE + 6 * target_len as u64;
        self.state.reserved.fetch_add(reserved, Ordering::AcqRel);
        self.state.arriving.fetch_add(1, Ordering::SeqCst);
        Expected {
            state: self.state.clone(),
            arriving: true,
            reserved,
        }
    }

    /// Appends a record; resolves once it is durable (`sync`) or written (`interval`).
    pub async fn append(&self, record: Record) -> Result<Appended, AuditError> {
        self.append_expected(record, None).await
    }

    /// [`AuditLog::append`] for an exchange announced with [`AuditLog::expect`]: the guard is
    /// released once the record is in the writer's queue.
    pub async fn append_expected(
        &self,
        record: Record,
        mut expected: Option<Expected>,
    ) -> Result<Appended, AuditError> {
        if !self.working() {
            return Err(self.unhealthy());
        }
        let (done, wait) = oneshot::channel();
        self.state.queued.fetch_add(1, Ordering::AcqRel);
        // The room held for the record goes with it; the writer releases it.
        let reserved = expected
            .as_mut()
            .map_or(0, |e| std::mem::take(&mut e.reserved));
        let sent = self.jobs.try_send(Job {
            record,
            done,
            reserved,
        });
        if sent.is_err() {
            self.state.reserved.fetch_sub(reserved, Ordering::AcqRel);
        }
        drop(expected);
        match sent {
            Ok(()) => {}
            Err(e) => {
                self.state.queued.fetch_sub(1, Ordering::AcqRel);
                return Err(match e {
                    TrySendError::Full(_) => AuditError::QueueFull,
                    TrySendError::Disconnected(_) => self.unhealthy(),
                });
            }
        }
        wait.await.unwrap_or_else(|_| Err(self.unhealthy()))
    }

    /// Appends the records of a start (recoveries, the configuration applied) and waits until
    /// they are written: they precede every exchange record, and a gateway that answers has
    /// recorded its start. Callable from inside an async runtime or outside one.
    pub fn record_start(&self, records: Vec<Record>) -> Result<(), AuditError> {
        let mut waits = Vec::new();
        for record in records {
            let (done, wait) = oneshot::channel();
            self.state.queued.fetch_add(1, Ordering::AcqRel);
            let job = Job {
                record,
                done,
                reserved: 0,
            };
            if let Err(e) = self.jobs.try_send(job) {
                self.state.queued.fetch_sub(1, Ordering::AcqRel);
                return Err(match e {
                    TrySendError::Full(_) => AuditError::QueueFull,
                    TrySendError::Disconnected(_) => self.unhealthy(),
                });
            }
            waits.push(wait);
        }
        // A thread of its own may block on the answers whatever the caller runs in.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    waits.into_iter().try_for_each(|wait| {
                        wait.blocking_recv()
                            .unwrap_or_else(|_| Err(self.unhealthy()))
                            .map(drop)
                    })
                })
                .join()
                .unwrap_or_else(|_| Err(self.unhealthy()))
        })
    }

    /// Makes every later write fail, as a full or broken disk would: for fault drills and tests.
    pub fn inject_failure(&self) {
        self.state.inject_failure.store(true, Ordering::Release);
    }

    /// Holds (or releases) the writer as a stalled disk would, so that records queue up: for
    /// fault drills and tests of the queue bound.
    pub fn stall(&self, stalled: bool) {
        self.state.stalled.store(stalled, Ordering::Release);
    }

    fn unhealthy(&self) -> AuditError {
        let why = self
            .state
            .failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_else(|| "the writer stopped".to_owned());
        AuditError::Unhealthy(why)
    }
}

/// An administrative record (start, recovery, reload, purge), to be appended.
pub fn admin(gateway: &str, act: &str, detail: Option<String>) -> Record {
    Record {
        time: timestamp(crate::clock::Clock::system().now_millis()),
        gateway: gateway.to_owned(),
        kind: "admin".to_owned(),
        outcome: act.to_owned(),
        detail,
        ..Record::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use std::time::Duration;

    fn log(dir: &Path) -> AuditLog {
        let options = WriterOptions {
            durability: Durability::Sync,
            flush_interval: Duration::from_millis(100),
            segment_size: 1 << 20,
            queue: 64,
            signer: None,
            gateway: "spl.test".into(),
            tree_head_every: 1000,
            tree_head_interval: Duration::from_secs(3600),
        };
        AuditLog::open(dir, "spl.test", options).unwrap().0
    }

    /// An exchange announced but never recorded (its caller went away mid-way) holds no one
    /// up for more than a linger per batch, and announced ones that do append release it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn announced_exchanges_never_hold_records_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        let never = log.expect(20);
        let appends = (0..50).map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                let expected = log.expect(20);
                let record = admin("spl.test", "test", Some(i.to_string()));
                log.append_expected(record, Some(expected)).await
            })
        });
        let all = async {
            let mut seqs = Vec::new();
            for append in appends.collect::<Vec<_>>() {
                seqs.push(append.await.unwrap().unwrap().seq);
            }
            seqs
        };
        let mut seqs = tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .expect("appends waited on an exchange that never recorded");
        seqs.sort_unstable();
        assert_eq!(seqs, (0..50).collect::<Vec<u64>>());
        assert_eq!(
            log.state.arriving.load(Ordering::SeqCst),
            1,
            "only `never` is left"
        );
        drop(never);
        assert_eq!(log.state.arriving.load(Ordering::SeqCst), 0);
        // Quiet again: a lone record is committed without lingering on anyone.
        let lone = log.append(admin("spl.test", "test", None)).await.unwrap();
        assert_eq!(lone.seq, 50);
    }
}
