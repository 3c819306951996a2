//! The index beside the audit log, so that a receipt, the latest tree head or a consistency
//! proof costs O(log² n) small reads and hashes instead of reading and hashing every segment.
//!
//! Files under `<data_dir>/audit/index/` (all little-endian, fixed-size entries):
//!
//! | file | entry |
//! |---|---|
//! | `level-LL.bin` | 32 bytes: the root of the complete subtree of leaves `[i·2^L, (i+1)·2^L)`; level 0 holds the leaves |
//! | `lines.bin` | 16 bytes per record, by `seq`: segment (u32), byte offset (u64), length without the newline (u32) |
//! | `heads.bin` | 16 bytes per signed tree head, in order: tree size (u64), its record's `seq` (u64) |
//! | `ids-NNNNNN.bin` | for each segment but the one being written: 24 bytes per exchange record, sorted by id: the exchange id (a UUID, 16 bytes big-endian), `seq` (u64) |
//!
//! The index is derived data, never the record: the writer rebuilds it at every start while it
//! walks the log to verify the chain (which it does anyway), so a crash can leave it behind but
//! never wrong for long. A reader only ever reads entries the writer has published
//! ([`Shared`]), so a half-written line of the active segment is never read. Every receipt is
//! checked against its signed root before it is handed out; an index that disagrees with the
//! log yields [`LookupError::Inconsistent`], never a wrong receipt.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use data_encoding::HEXLOWER;

use super::merkle::{
    consistency_proof_from, inclusion_proof_from, leaf_hash, verify_consistency, verify_inclusion,
    Hash, Nodes,
};
use super::receipt::{Consistency, Receipt, CONSISTENCY_FORMAT, RECEIPT_FORMAT};
use super::record::Record;
use super::segment::{segment_path, Place};

const LINE_ENTRY: u64 = 16;
const HEAD_ENTRY: u64 = 16;
const ID_ENTRY: u64 = 24;

/// Why a look-up found nothing to give.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no record of exchange {0}")]
    NotFound(String),
    #[error("exchange {0} is recorded, but no signed tree head covers it yet")]
    NotCovered(String),
    #[error("no signed tree head of size {0}")]
    NoSuchHead(u64),
    #[error("the old tree head must not be larger than the new one")]
    Backwards,
    #[error("no tree head is signed yet")]
    NoHead,
    /// The index and the log disagree (a proof did not lead to the signed root).
    #[error("the audit index disagrees with the log: {0}")]
    Inconsistent(String),
    #[error("the audit index could not be read: {0}")]
    Io(#[from] io::Error),
}

/// What the writer has published, for readers.
#[derive(Debug, Default)]
pub struct Shared {
    view: RwLock<View>,
}

#[derive(Debug, Default, Clone)]
struct View {
    /// Records indexed (leaves, lines).
    size: u64,
    /// Tree heads indexed.
    heads: u64,
    /// The newest tree head's line.
    latest_head: Option<Arc<str>>,
    /// The segment being written, and its exchanges: id → seq.
    active_segment: u64,
    active_ids: HashMap<u128, u64>,
    /// Sealed segments with exchange records: (segment, smallest id, largest id).
    sealed: Vec<(u64, u128, u128)>,
}

/// The writer's side: appends to the index files as records become durable.
pub(super) struct IndexWriter {
    dir: PathBuf,
    levels: Vec<BufWriter<File>>,
    lines: BufWriter<File>,
    heads: BufWriter<File>,
    shared: Arc<Shared>,
    /// What this batch added, published at [`IndexWriter::publish`] (all but exchange ids).
    pending: View,
    /// Exchange ids added since the last publication.
    fresh_ids: Vec<(u128, u64)>,
    /// When the files were last flushed and what they hold published.
    published: std::time::Instant,
}

/// How stale the published index may be while records keep coming: its files are flushed (a
/// write per file) at most this often, not once per group commit. A receipt waits for a
/// signed tree head anyway, which comes later than this.
const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// One record as the index takes it.
pub(super) struct Line<'a> {
    pub seq: u64,
    pub record: &'a Record,
    pub line: &'a [u8],
    pub place: Place,
    /// The complete subtrees its leaf completed: (level, index, hash).
    pub nodes: &'a [(u32, u64, Hash)],
}

/// Look-ups against the log and its index: receipts, the latest tree head, consistency proofs.
#[derive(Clone)]
pub struct Lookup {
    audit: PathBuf,
    shared: Arc<Shared>,
    /// Index and segment files, opened once: a look-up is a few dozen small reads, and an
    /// open per read would cost more than the reads.
    files: Arc<std::sync::Mutex<HashMap<PathBuf, Arc<File>>>>,
}

/// The stored nodes, read from `level-LL.bin`.
struct Levels<'a> {
    lookup: &'a Lookup,
    size: u64,
}

// === impl IndexWriter ===

impl IndexWriter {
    /// A new, empty index in `<audit>/index` (whatever was there is replaced).
    pub(super) fn create(audit: &Path) -> io::Result<IndexWriter> {
        let dir = audit.join("index");
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let open = |name: &str| -> io::Result<BufWriter<File>> {
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(dir.join(name))?;
            Ok(BufWriter::with_capacity(64 << 10, file))
        };
        Ok(IndexWriter {
            lines: open("lines.bin")?,
            heads: open("heads.bin")?,
            levels: Vec::new(),
            dir,
            shared: Arc::new(Shared::default()),
            pending: View::default(),
            fresh_ids: Vec::new(),
            published: std::time::Instant::now(),
        })
    }

    pub(super) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Adds one durable record. Entries become visible to readers at [`Self::publish`].
    pub(super) fn add(&mut self, line: Line<'_>) -> io::Result<()> {
        for (level, _, hash) in line.nodes {
            let level = *level as usize;
            while self.levels.len() <= level {
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(self.dir.join(format!("level-{:02}.bin", self.levels.len())))?;
                self.levels.push(BufWriter::with_capacity(64 << 10, file));
            }
            self.levels[level].write_all(hash)?;
        }
        if line.place.segment != self.pending.active_segment {
            if self.pending.active_segment != 0 {
                self.seal()?;
            }
            self.pending.active_segment = line.place.segment;
        }
        let mut entry = [0u8; LINE_ENTRY as usize];
        entry[..4].copy_from_slice(
            &u32::try_from(line.place.segment)
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        entry[4..12].copy_from_slice(&line.place.offset.to_le_bytes());
        entry[12..].copy_from_slice(
            &u32::try_from(line.line.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        self.lines.write_all(&entry)?;
        if line.record.kind == "tree-head" {
            if let Some(size) = line.record.tree_size {
                self.heads.write_all(&size.to_le_bytes())?;
                self.heads.write_all(&line.seq.to_le_bytes())?;
                self.pending.heads += 1;
                self.pending.latest_head =
                    Some(Arc::from(String::from_utf8_lossy(line.line).as_ref()));
            }
        }
        if let Some(id) = line.record.exchange_id.as_deref().and_then(uuid_of) {
            self.fresh_ids.push((id, line.seq));
        }
        self.pending.size = line.seq + 1;
        Ok(())
    }

    /// Writes the active segment's exchange ids, sorted, as `ids-NNNNNN.bin`: its last record
    /// is in, the next goes to a new segment. Readers see the segment move from the active
    /// map to the sealed list at once.
    fn seal(&mut self) -> io::Result<()> {
        let segment = self.pending.active_segment;
        let Ok(mut view) = self.shared.view.write() else {
            return Err(io::Error::other("the audit index lock is poisoned"));
        };
        let mut ids: Vec<(u128, u64)> = view.active_ids.drain().collect();
        ids.append(&mut self.fresh_ids);
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_unstable();
        let mut out = BufWriter::new(File::create(
            self.dir.join(format!("ids-{segment:06}.bin")),
        )?);
        for (id, seq) in &ids {
            out.write_all(&id.to_be_bytes())?;
            out.write_all(&seq.to_le_bytes())?;
        }
        out.flush()?;
        let entry = (segment, ids[0].0, ids[ids.len() - 1].0);
        self.pending.sealed.push(entry);
        view.sealed.push(entry);
        Ok(())
    }

    /// Makes what was added visible to readers, unless that was done less than
    /// [`PUBLISH_EVERY`] ago (then it waits for a later call, or [`Self::publish`]).
    /// Exchange ids are published at once (an in-memory map), so that a look-up finds a
    /// recorded exchange even while its place is not yet published (it is then "not covered
    /// yet", as before its tree head).
    pub(super) fn publish_soon(&mut self) -> io::Result<()> {
        if self.published.elapsed() < PUBLISH_EVERY {
            if !self.fresh_ids.is_empty() {
                let Ok(mut view) = self.shared.view.write() else {
                    return Err(io::Error::other("the audit index lock is poisoned"));
                };
                view.active_ids.extend(self.fresh_ids.drain(..));
            }
            return Ok(());
        }
        self.publish()
    }

    /// Flushes what was added and makes it visible to readers.
    pub(super) fn publish(&mut self) -> io::Result<()> {
        self.published = std::time::Instant::now();
        if self.fresh_ids.is_empty()
            && self
                .shared
                .view
                .read()
                .is_ok_and(|v| v.size == self.pending.size)
        {
            return Ok(());
        }
        for level in &mut self.levels {
            level.flush()?;
        }
        self.lines.flush()?;
        self.heads.flush()?;
        let Ok(mut view) = self.shared.view.write() else {
            return Err(io::Error::other("the audit index lock is poisoned"));
        };
        view.size = self.pending.size;
        view.heads = self.pending.heads;
        view.latest_head.clone_from(&self.pending.latest_head);
        view.active_segment = self.pending.active_segment;
        view.sealed.clone_from(&self.pending.sealed);
        view.active_ids.extend(self.fresh_ids.drain(..));
        Ok(())
    }
}

// === impl Lookup ===

impl Lookup {
    pub(super) fn new(audit: &Path, shared: Arc<Shared>) -> Lookup {
        Lookup {
            audit: audit.to_path_buf(),
            shared,
            files: Arc::default(),
        }
    }

    /// The file at `path`, opened once and kept.
    fn file(&self, path: PathBuf) -> io::Result<Arc<File>> {
        let Ok(mut files) = self.files.lock() else {
            return File::open(&path).map(Arc::new);
        };
        if let Some(file) = files.get(&path) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(&path)?);
        files.insert(path, file.clone());
        Ok(file)
    }

    /// The index of a log no gateway is writing (the CLI): what its files hold, the active
    /// segment's exchanges read from that segment. `None` when the log has no index.
    pub fn open(audit: &Path) -> Result<Option<Lookup>, LookupError> {
        let dir = audit.join("index");
        if !dir.join("lines.bin").exists() {
            return Ok(None);
        }
        let len = |name: &str| fs::metadata(dir.join(name)).map(|m| m.len()).unwrap_or(0);
        let size = (len("lines.bin") / LINE_ENTRY).min(len("level-00.bin") / 32);
        let mut view = View {
            size,
            heads: len("heads.bin") / HEAD_ENTRY,
            ..View::default()
        };
        let lookup = Lookup::new(audit, Arc::new(Shared::default()));
        for entry in fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let Some(segment) = name
                .to_str()
                .and_then(|n| n.strip_prefix("ids-"))
                .and_then(|n| n.strip_suffix(".bin"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let file = File::open(dir.join(&name))?;
            let count = file.metadata()?.len() / ID_ENTRY;
            if count > 0 {
                let (min, _) = read_id(&file, 0)?;
                let (max, _) = read_id(&file, count - 1)?;
                view.sealed.push((segment, min, max));
            }
        }
        if size > 0 {
            let (segment, _, _) = lookup.place(size - 1)?;
            view.active_segment = segment;
            let sealed: std::collections::HashSet<u64> =
                view.sealed.iter().map(|(s, _, _)| *s).collect();
            if !sealed.contains(&segment) {
                // The segment being written: its exchanges, from the segment itself (bounded
                // by `segment_size`), up to what the index covers.
                let bytes = fs::read(segment_path(audit, segment))?;
                for line in super::segment::content(&bytes).split(|&b| b == b'\n') {
                    let Ok(record) = serde_json::from_slice::<Record>(line) else {
                        continue;
                    };
                    if record.seq >= size {
                        break;
                    }
                    if let Some(id) = record.exchange_id.as_deref().and_then(uuid_of) {
                        view.active_ids.insert(id, record.seq);
                    }
                }
            }
        }
        if view.heads > 0 {
            let (_, seq) = lookup.head(view.heads - 1)?;
            view.latest_head = Some(Arc::from(lookup.line(seq)?.as_str()));
        }
        if let Ok(mut shared) = lookup.shared.view.write() {
            *shared = view;
        }
        Ok(Some(lookup))
    }

    /// What is published now, but for the active segment's ids (looked up in place).
    fn view(&self) -> View {
        self.shared
            .view
            .read()
            .map(|v| View {
                size: v.size,
                heads: v.heads,
                latest_head: v.latest_head.clone(),
                active_segment: v.active_segment,
                active_ids: HashMap::new(),
                sealed: v.sealed.clone(),
            })
            .unwrap_or_default()
    }

    /// How many records the published index covers.
    pub fn indexed(&self) -> u64 {
        self.shared.view.read().map_or(0, |v| v.size)
    }

    /// The newest signed tree head's line.
    pub fn latest_head(&self) -> Option<String> {
        self.shared
            .view
            .read()
            .ok()
            .and_then(|v| v.latest_head.as_deref().map(str::to_owned))
    }

    /// The receipt of exchange `exchange_id`, from the first tree head that covers it.
    pub fn receipt(&self, exchange_id: &str) -> Result<Receipt, LookupError> {
        let not_found = || LookupError::NotFound(exchange_id.to_owned());
        let id = uuid_of(exchange_id).ok_or_else(not_found)?;
        let view = self.view();
        let active = self
            .shared
            .view
            .read()
            .ok()
            .and_then(|v| v.active_ids.get(&id).copied());
        let seq = match active {
            Some(seq) => seq,
            None => self.sealed_seq(&view, id)?.ok_or_else(not_found)?,
        };
        if seq >= view.size {
            // Recorded, and its place not yet published: as good as not yet covered.
            return Err(LookupError::NotCovered(exchange_id.to_owned()));
        }
        // The first tree head of a size above `seq`: heads only grow.
        let (mut lo, mut hi) = (0, view.heads);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.head(mid)?.0 > seq {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if lo == view.heads {
            return Err(LookupError::NotCovered(exchange_id.to_owned()));
        }
        let (size, head_seq) = self.head(lo)?;
        let record = self.line(seq)?;
        let tree_head = self.line(head_seq)?;
        let levels = Levels {
            lookup: self,
            size: view.size,
        };
        let proof = inclusion_proof_from(&levels, seq, size)?;
        let root = head_root(&tree_head)?;
        if !verify_inclusion(&leaf_hash(record.as_bytes()), seq, size, &proof, &root) {
            return Err(LookupError::Inconsistent(format!(
                "the inclusion proof of record {seq} does not lead to the root of tree head {size}"
            )));
        }
        Ok(Receipt {
            format: RECEIPT_FORMAT.to_owned(),
            record,
            leaf_index: seq,
            tree_size: size,
            inclusion_proof: proof.iter().map(|h| HEXLOWER.encode(h)).collect(),
            tree_head,
        })
    }

    /// The consistency proof between the signed tree heads of sizes `old` and `new`.
    pub fn consistency(&self, old: u64, new: u64) -> Result<Consistency, LookupError> {
        if old > new {
            return Err(LookupError::Backwards);
        }
        let view = self.view();
        let head_of = |size: u64| -> Result<String, LookupError> {
            let (mut lo, mut hi) = (0, view.heads);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let (s, seq) = self.head(mid)?;
                match s.cmp(&size) {
                    std::cmp::Ordering::Equal => return self.line(seq),
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                }
            }
            Err(LookupError::NoSuchHead(size))
        };
        let (old_line, new_line) = (head_of(old)?, head_of(new)?);
        let (old_root, new_root) = (head_root(&old_line)?, head_root(&new_line)?);
        let levels = Levels {
            lookup: self,
            size: view.size,
        };
        let proof = consistency_proof_from(&levels, old, new)?;
        if !verify_consistency(old, new, &proof, &old_root, &new_root) {
            return Err(LookupError::Inconsistent(format!(
                "the index does not prove tree {old} consistent with tree {new}"
            )));
        }
        Ok(Consistency {
            format: CONSISTENCY_FORMAT.to_owned(),
            old_size: old,
            old_root: HEXLOWER.encode(&old_root),
            new_size: new,
            new_root: HEXLOWER.encode(&new_root),
            proof: proof.iter().map(|h| HEXLOWER.encode(h)).collect(),
            old_tree_head: old_line,
            new_tree_head: new_line,
        })
    }

    /// The `seq` of exchange `id` in a sealed segment whose range of ids holds it.
    fn sealed_seq(&self, view: &View, id: u128) -> Result<Option<u64>, LookupError> {
        for (segment, min, max) in view.sealed.iter().rev() {
            if id < *min || id > *max {
                continue;
            }
            let file = self.file(self.audit.join(format!("index/ids-{segment:06}.bin")))?;
            let (mut lo, mut hi) = (0, file.metadata()?.len() / ID_ENTRY);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let (found, seq) = read_id(&file, mid)?;
                match found.cmp(&id) {
                    std::cmp::Ordering::Equal => return Ok(Some(seq)),
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                }
            }
        }
        Ok(None)
    }

    /// Tree head `i` (in order): its size and its record's `seq`.
    fn head(&self, i: u64) -> Result<(u64, u64), LookupError> {
        let file = self.file(self.audit.join("index/heads.bin"))?;
        let mut entry = [0u8; HEAD_ENTRY as usize];
        file.read_exact_at(&mut entry, i * HEAD_ENTRY)?;
        Ok((le64(&entry[..8]), le64(&entry[8..])))
    }

    /// Where record `seq`'s line is: segment, offset, length.
    fn place(&self, seq: u64) -> Result<(u64, u64, usize), LookupError> {
        let file = self.file(self.audit.join("index/lines.bin"))?;
        let mut entry = [0u8; LINE_ENTRY as usize];
        file.read_exact_at(&mut entry, seq * LINE_ENTRY)?;
        let segment = u64::from(u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]));
        let length = u32::from_le_bytes([entry[12], entry[13], entry[14], entry[15]]);
        Ok((segment, le64(&entry[4..12]), length as usize))
    }

    /// Record `seq`'s line, exactly as in the log.
    fn line(&self, seq: u64) -> Result<String, LookupError> {
        let (segment, offset, length) = self.place(seq)?;
        let file = self.file(segment_path(&self.audit, segment))?;
        let mut line = vec![0u8; length];
        file.read_exact_at(&mut line, offset)?;
        String::from_utf8(line).map_err(|_| {
            LookupError::Inconsistent(format!("record {seq} is not where the index says"))
        })
    }
}

// === impl Levels ===

impl Nodes for Levels<'_> {
    type Error = LookupError;

    fn node(&self, level: u32, index: u64) -> Result<Hash, LookupError> {
        // Only what the writer published: nodes entirely within the indexed records.
        if (index + 1) << level > self.size {
            return Err(LookupError::Inconsistent(format!(
                "node {index} of level {level} is past the indexed records"
            )));
        }
        let file = self.lookup.file(
            self.lookup
                .audit
                .join(format!("index/level-{level:02}.bin")),
        )?;
        let mut hash = [0u8; 32];
        file.read_exact_at(&mut hash, index * 32)?;
        Ok(hash)
    }
}

fn read_id(file: &File, i: u64) -> io::Result<(u128, u64)> {
    let mut entry = [0u8; ID_ENTRY as usize];
    file.read_exact_at(&mut entry, i * ID_ENTRY)?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&entry[..16]);
    Ok((u128::from_be_bytes(id), le64(&entry[16..])))
}

fn le64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

fn uuid_of(text: &str) -> Option<u128> {
    uuid::Uuid::parse_str(text).ok().map(|u| u.as_u128())
}

/// The root a tree head's line signs.
fn head_root(line: &str) -> Result<Hash, LookupError> {
    let record: Record = serde_json::from_str(line)
        .map_err(|e| LookupError::Inconsistent(format!("a tree head does not parse: {e}")))?;
    record
        .root
        .as_deref()
        .and_then(super::sign::unhex)
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| LookupError::Inconsistent("a tree head has no root".to_owned()))
}
