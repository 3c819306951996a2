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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::sync::oneshot;

use super::batch::{sync_dir, Appended, AuditError, Job, State, Writer, WriterOptions};
use super::index::{IndexWriter, Line, Lookup};
use super::merkle::{leaf_hash, CompactRange};
use super::record::{timestamp, Record};
use super::segment::{segment_path, segments, walk, walk_at};

/// The handle the pipeline, the CLI and administrative acts append through.
#[derive(Clone)]
pub struct AuditLog {
    jobs: SyncSender<Job>,
    state: Arc<State>,
}

/// An exchange that will append a record: while any is under way, the writer lets a batch
/// gather; the last one to hand over its record (or to end without one) wakes it.
pub struct Expected {
    state: Arc<State>,
}

impl Drop for Expected {
    fn drop(&mut self) {
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
                let removed = file.metadata()?.len() - broken.offset;
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
        walk_at(dir, |record, line, place| {
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
        let (segment, path) = match segments(dir)?.last() {
            Some((n, p)) => (*n, p.clone()),
            None => (1, segment_path(dir, 1)),
        };
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        sync_dir(dir)?;
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
        });
        let (jobs, queue) = mpsc::sync_channel(options.queue);
        let writer = Writer {
            dir: dir.to_path_buf(),
            options,
            segment,
            file,
            size,
            head,
            last_sync: Instant::now(),
            unsynced: false,
            state: state.clone(),
            range,
            since_head,
            last_head: Instant::now(),
            index: Some(index),
        };
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

    /// Whether appends can currently succeed — the writer works and its queue has room;
    /// checked before any upstream contact.
    pub fn healthy(&self) -> bool {
        self.state.healthy.load(Ordering::Acquire)
            && self.state.queued.load(Ordering::Acquire) < self.state.bound
    }

    /// Announces an exchange that will append a record; hand the guard to
    /// [`AuditLog::append_expected`] (or drop it) when the record is ready.
    pub fn expect(&self) -> Expected {
        self.state.arriving.fetch_add(1, Ordering::SeqCst);
        Expected {
            state: self.state.clone(),
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
        expected: Option<Expected>,
    ) -> Result<Appended, AuditError> {
        if !self.healthy() {
            return Err(self.unhealthy());
        }
        let (done, wait) = oneshot::channel();
        self.state.queued.fetch_add(1, Ordering::AcqRel);
        let sent = self.jobs.try_send(Job { record, done });
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

    /// Queues a record without waiting for it (administrative records at start-up, which
    /// precede every exchange record because the queue is first in, first out).
    pub fn enqueue(&self, record: Record) -> Result<(), AuditError> {
        let (done, _) = oneshot::channel();
        self.state.queued.fetch_add(1, Ordering::AcqRel);
        self.jobs.try_send(Job { record, done }).map_err(|e| {
            self.state.queued.fetch_sub(1, Ordering::AcqRel);
            match e {
                TrySendError::Full(_) => AuditError::QueueFull,
                TrySendError::Disconnected(_) => self.unhealthy(),
            }
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
        let never = log.expect();
        let appends = (0..50).map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                let expected = log.expect();
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
