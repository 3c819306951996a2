//! Pre-allocated segments, as PostgreSQL does for its WAL (`wal_init_zero`): the segment being
//! written is a file of `segment_size` bytes written full of zeros before any record goes into
//! it, so that a commit's `fdatasync` flushes the records and not the file's new size (no
//! journal commit per group commit), and so that the space every admitted exchange's record
//! needs is held before the exchange goes upstream.
//!
//! The next segment is prepared in the background once the one being written is half full:
//! zeros written to `segment-next.preparing`, made durable, and renamed
//! `segment-next.prepared`; at rotation it is renamed to the next segment's name. A crash can
//! leave a half-written `.preparing` (removed at the next start) or a `.prepared` (kept); neither
//! name is a segment's, so no reader sees them.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::durable::sync_dir;

/// The next segment, zero-filled and durable, waiting for its rotation.
pub(super) const PREPARED: &str = "segment-next.prepared";
/// The next segment while its zeros are written.
const PREPARING: &str = "segment-next.preparing";
/// Zeros written per call.
const CHUNK: usize = 1 << 20;
/// The smallest next segment worth preparing on a disk that is filling up.
const SMALLEST: u64 = 8 << 10;
/// How long after a preparation failed (a full disk) the next one is tried.
const RETRY: Duration = Duration::from_secs(1);

/// Whether an error says the disk (or the quota) is full: no room, rather than broken.
pub(super) fn is_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// The bytes of the disk under `dir` that are free for an unprivileged writer, less what a
/// preparation of the next segment (`reserve`) may take: room beyond the pre-allocated, for
/// segments smaller than a batch.
pub(super) fn disk_room(dir: &Path, reserve: u64) -> u64 {
    rustix::fs::statvfs(dir).map_or(0, |stat| {
        stat.f_bavail
            .saturating_mul(stat.f_frsize)
            .saturating_sub(reserve)
    })
}

/// How far a segment that is `from` bytes long may be pre-allocated towards `size`: never
/// beyond three quarters of the disk's free space, which leaves the rest of the data directory
/// (the configuration archive, the index, the certificate inventory) room on a small disk.
pub(super) fn within_disk(dir: &Path, from: u64, size: u64) -> u64 {
    size.min(from + disk_room(dir, 0) / 4 * 3)
}

/// Writes zeros over `[from, to)` of `file` as far as the disk allows and makes them durable,
/// with the file's size: returns where the zeros end — `to`, or less when the disk is full
/// (the file is then cut back to the zeros that landed whole).
pub(super) fn zero_fill(file: &File, from: u64, to: u64) -> io::Result<u64> {
    let zeros = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at).map_or(CHUNK, |left| left.min(CHUNK));
        match file.write_at(&zeros[..n], at) {
            Ok(0) => break,
            Ok(written) => at += written as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_full(&e) => break,
            Err(e) => return Err(e),
        }
    }
    if at < to && file.metadata()?.len() > at {
        file.set_len(at)?;
    }
    file.sync_all()?;
    Ok(at)
}

/// Prepares `segment-next.prepared` in `dir`: returns its size, which is `wanted` unless the
/// disk is filling up.
fn prepare(dir: &Path, wanted: u64) -> io::Result<u64> {
    let size = within_disk(dir, 0, wanted);
    if size < SMALLEST.min(wanted) {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "no room on the disk for the next audit segment",
        ));
    }
    let preparing = dir.join(PREPARING);
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&preparing)?;
    let reached = zero_fill(&file, 0, size)?;
    if reached == 0 {
        drop(file);
        let _ = fs::remove_file(&preparing);
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "no room on the disk for the next audit segment",
        ));
    }
    fs::rename(&preparing, dir.join(PREPARED))?;
    sync_dir(dir)?;
    Ok(reached)
}

/// The next segment: prepared in the background, installed at rotation.
pub(super) struct Preparer {
    dir: PathBuf,
    size: u64,
    job: Option<JoinHandle<io::Result<u64>>>,
    /// The size of `segment-next.prepared`, once it is there.
    ready: Option<u64>,
    failed: Option<Instant>,
}

impl Preparer {
    /// Takes over what the last run left in `dir`: a half-written `.preparing` is removed, a
    /// `.prepared` kept.
    pub(super) fn open(dir: &Path, size: u64) -> io::Result<Preparer> {
        match fs::remove_file(dir.join(PREPARING)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let ready = match fs::metadata(dir.join(PREPARED)) {
            Ok(meta) if meta.len() > 0 => Some(meta.len()),
            Ok(_) => {
                fs::remove_file(dir.join(PREPARED))?;
                None
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Preparer {
            dir: dir.to_path_buf(),
            size,
            job: None,
            ready,
            failed: None,
        })
    }

    /// The bytes the prepared segment holds (0 while none is ready).
    pub(super) fn room(&self) -> u64 {
        self.ready.unwrap_or(0)
    }

    /// Starts preparing the next segment in the background, unless one is ready or under way,
    /// or the last attempt failed less than a second ago.
    pub(super) fn start(&mut self) {
        self.poll();
        if self.ready.is_some()
            || self.job.is_some()
            || self.failed.is_some_and(|at| at.elapsed() < RETRY)
        {
            return;
        }
        let (dir, size) = (self.dir.clone(), self.size);
        match std::thread::Builder::new()
            .name("audit-prepare".into())
            .spawn(move || prepare(&dir, size))
        {
            Ok(job) => self.job = Some(job),
            Err(e) => self.fail(&e),
        }
    }

    /// Takes in a preparation that has finished, without waiting.
    pub(super) fn poll(&mut self) {
        if self.job.as_ref().is_some_and(JoinHandle::is_finished) {
            self.finish();
        }
    }

    fn finish(&mut self) {
        let Some(job) = self.job.take() else {
            return;
        };
        match job
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the preparing thread panicked")))
        {
            Ok(size) => {
                self.ready = Some(size);
                self.failed = None;
            }
            Err(e) => self.fail(&e),
        }
    }

    fn fail(&mut self, e: &io::Error) {
        if self.failed.is_none() {
            tracing::error!(error = %e, dir = %self.dir.display(), "the next audit segment could not be prepared; exchanges are refused once the current one is full");
        }
        self.failed = Some(Instant::now());
    }

    /// Makes the prepared segment `path` (waiting for a preparation under way, or preparing
    /// here when none is ready): returns its size.
    pub(super) fn install(&mut self, path: &Path) -> io::Result<u64> {
        self.finish();
        let size = match self.ready.take() {
            Some(size) => size,
            None => prepare(&self.dir, self.size).inspect_err(|e| self.fail(e))?,
        };
        if let Err(e) = fs::rename(self.dir.join(PREPARED), path).and_then(|()| sync_dir(&self.dir))
        {
            self.ready = fs::metadata(self.dir.join(PREPARED)).ok().map(|m| m.len());
            return Err(e);
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prepared_segment_is_zeros_of_the_size_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut next = Preparer::open(dir.path(), 64 << 10).unwrap();
        assert_eq!(next.room(), 0);
        next.start();
        next.finish();
        assert_eq!(next.room(), 64 << 10);
        let bytes = fs::read(dir.path().join(PREPARED)).unwrap();
        assert_eq!(bytes.len(), 64 << 10);
        assert!(bytes.iter().all(|&b| b == 0));
        // A crash here: the next start finds it ready, and installs it.
        let mut again = Preparer::open(dir.path(), 64 << 10).unwrap();
        assert_eq!(again.room(), 64 << 10);
        let segment = dir.path().join("segment-000002.jsonl");
        assert_eq!(again.install(&segment).unwrap(), 64 << 10);
        assert!(!dir.path().join(PREPARED).exists());
        assert_eq!(fs::metadata(&segment).unwrap().len(), 64 << 10);
    }

    #[test]
    fn a_half_prepared_segment_is_removed_and_prepared_again() {
        let dir = tempfile::tempdir().unwrap();
        // A crash while the zeros were being written.
        fs::write(dir.path().join(PREPARING), [0u8; 100]).unwrap();
        let mut next = Preparer::open(dir.path(), 8 << 10).unwrap();
        assert!(!dir.path().join(PREPARING).exists());
        assert_eq!(next.room(), 0);
        // Nothing prepared in the background yet: installing prepares it there and then.
        let segment = dir.path().join("segment-000003.jsonl");
        assert_eq!(next.install(&segment).unwrap(), 8 << 10);
        assert_eq!(fs::read(&segment).unwrap(), vec![0u8; 8 << 10]);
    }

    #[test]
    fn zero_fill_extends_a_file_and_keeps_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment-000001.jsonl");
        fs::write(&path, b"{\"seq\":0}\n").unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        assert_eq!(zero_fill(&file, 10, 3 << 20).unwrap(), 3 << 20);
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[..10], b"{\"seq\":0}\n");
        assert!(bytes[10..].iter().all(|&b| b == 0));
        assert_eq!(bytes.len(), 3 << 20);
    }
}
