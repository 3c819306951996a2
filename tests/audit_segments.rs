//! Pre-allocated audit segments (#19): the segment being written is a zero-filled file of
//! `segment_size` bytes, the next one is prepared ahead, a closed one is cut to its records.
//! A crash at any stage of that leaves a log that opens, verifies and goes on; a log written
//! before pre-allocation still verifies and is carried on; and on a disk that fills up the
//! gateway refuses exchanges before their record could fail to fit — the owner's service never
//! sees an unrecorded request — and the log verifies without a restart.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use http::Version;
use penghubung::audit::{self, AuditLog, Record, WriterOptions};
use support::{recording_upstream, Client, Edit, Running, TestPki};

const PREPARED: &str = "segment-next.prepared";
const PREPARING: &str = "segment-next.preparing";
const SEGMENT: u64 = 8 << 10;

fn options(signer: Arc<audit::Signer>) -> WriterOptions {
    // About a dozen records a segment.
    support::audit_options(signer, SEGMENT, 5)
}

use support::audit_signer as signer;

fn exchange(i: usize) -> Record {
    Record {
        time: audit::timestamp(1_767_225_600_000 + i as i64),
        gateway: "spl.test".into(),
        kind: "exchange".into(),
        outcome: "forwarded".into(),
        exchange_id: Some(format!("01890000-0000-7000-8000-{i:012}")),
        consumer: Some("dinkes".into()),
        service: Some("dukcapil-penduduk".into()),
        target: Some(format!("/dukcapil/penduduk/hmac-sha256:{:064}", i)),
        ..Record::default()
    }
}

/// Appends `n` exchange records one by one, each durable before the next.
async fn fill(log: &AuditLog, from: usize, n: usize) {
    for i in from..from + n {
        log.append(exchange(i)).await.unwrap();
    }
}

/// The log verifies whole with the key, and holds these exchanges.
fn verifies(dir: &Path, signer: &audit::Signer, exchanges: usize) -> Vec<Record> {
    let key = audit::unhex(&signer.public_key_hex()).unwrap();
    let verification = audit::verify_all(dir, Some(&key));
    assert!(
        verification.problems.is_empty(),
        "{:?}",
        verification.problems
    );
    let mut all = Vec::new();
    audit::walk(dir, |r, _| {
        all.push(r.clone());
        Ok(())
    })
    .unwrap();
    let ids: Vec<usize> = all
        .iter()
        .filter_map(|r| r.exchange_id.as_deref())
        .map(|id| id[24..].parse().unwrap())
        .collect();
    assert_eq!(ids, (0..exchanges).collect::<Vec<_>>());
    all
}

fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    audit::segments(dir).unwrap()
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn zeros_after_records(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    (bytes.len() - audit::content(&bytes).len()) as u64
}

/// A log of `n` exchanges over several segments, closed.
async fn written(dir: &Path, signer: &Arc<audit::Signer>, n: usize) {
    let (log, _) = AuditLog::open(dir, "spl.test", options(signer.clone())).unwrap();
    fill(&log, 0, n).await;
    drop(log);
    // The writer thread ends when the last handle goes; give it a moment to let go.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_preallocated_prepared_ahead_and_cut_when_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let signer = signer(tmp.path());
    let (log, _) = AuditLog::open(&dir, "spl.test", options(signer.clone())).unwrap();
    // The first segment is pre-allocated before any record goes in.
    let files = segment_files(&dir);
    assert_eq!(files.len(), 1);
    assert_eq!(len(&files[0].1), SEGMENT);
    assert_eq!(zeros_after_records(&files[0].1), SEGMENT);
    fill(&log, 0, 40).await;
    // The next segment was prepared before it was needed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let files = segment_files(&dir);
    assert!(files.len() >= 3, "{files:?}");
    for (_, closed) in &files[..files.len() - 1] {
        assert_eq!(zeros_after_records(closed), 0, "{closed:?} is cut");
        assert!(len(closed) <= SEGMENT);
    }
    let active = &files[files.len() - 1].1;
    assert_eq!(len(active), SEGMENT, "the active segment keeps its size");
    assert!(zeros_after_records(active) > 0);
    drop(log);
    verifies(&dir, &signer, 40);
    // The independent verifier of docs/ reads a pre-allocated log too.
    let pubkey = tmp.path().join("audit.pub");
    std::fs::write(&pubkey, format!("ed25519:{}\n", signer.public_key_hex())).unwrap();
    let verifier = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/audit-example/verify.py");
    let python = || {
        let out = Command::new("python3")
            .arg(&verifier)
            .args(files.iter().map(|(_, p)| p))
            .arg("--pubkey")
            .arg(&pubkey)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), said)
    };
    let (ok, said) = python();
    assert!(ok, "{said}");
    // Bytes after the zeros are refused by both.
    let mut bytes = std::fs::read(active).unwrap();
    let at = bytes.len() - 10;
    bytes[at] = b'x';
    std::fs::write(active, &bytes).unwrap();
    let (ok, said) = python();
    assert!(!ok && said.contains("after the zero-filled end"), "{said}");
    let key = audit::unhex(&signer.public_key_hex()).unwrap();
    let problems = audit::verify_all(&dir, Some(&key)).problems;
    assert!(
        matches!(problems.as_slice(), [one] if one.problem == audit::Fault::AfterEnd),
        "{problems:?}"
    );
}

/// Each state a `kill -9` can leave at a stage of pre-allocation, preparation, rotation or a
/// write: the log opens, verifies, takes more records and verifies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_stage_of_preallocation_or_rotation_leaves_a_log_that_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = signer(tmp.path());
    let base = tmp.path().join("base");
    written(&base, &signer, 30).await;

    type Stage = fn(&Path);
    let stages: Vec<(&str, Stage)> = vec![
        ("preparing the next segment, half written", |dir| {
            std::fs::write(dir.join(PREPARING), vec![0u8; 1000]).unwrap();
        }),
        ("the next segment prepared, not yet installed", |dir| {
            std::fs::write(dir.join(PREPARED), vec![0u8; SEGMENT as usize]).unwrap();
        }),
        (
            "rotating: the next segment installed, the closed one not yet cut",
            |dir| {
                let (n, _) = audit::segments(dir).unwrap().pop().unwrap();
                let next = dir.join(format!("segment-{:06}.jsonl", n + 1));
                std::fs::write(next, vec![0u8; SEGMENT as usize]).unwrap();
            },
        ),
        ("rotating: the closed segment cut, nothing more", |dir| {
            let (_, last) = audit::segments(dir).unwrap().pop().unwrap();
            let bytes = std::fs::read(&last).unwrap();
            std::fs::write(&last, audit::content(&bytes)).unwrap();
        }),
        ("pre-allocating at start, half way", |dir| {
            let (_, last) = audit::segments(dir).unwrap().pop().unwrap();
            let bytes = std::fs::read(&last).unwrap();
            let end = audit::content(&bytes).len() + 100;
            std::fs::write(&last, &bytes[..end]).unwrap();
        }),
        (
            "writing a batch: a later page landed, an earlier one not",
            |dir| {
                let (_, last) = audit::segments(dir).unwrap().pop().unwrap();
                let mut bytes = std::fs::read(&last).unwrap();
                let end = audit::content(&bytes).len();
                let tail = b"\"seq\":31,\"prev\":\"ab\"}\n";
                bytes[end + 300..end + 300 + tail.len()].copy_from_slice(tail);
                std::fs::write(&last, &bytes).unwrap();
            },
        ),
        ("writing a batch: half a line", |dir| {
            let (_, last) = audit::segments(dir).unwrap().pop().unwrap();
            let mut bytes = std::fs::read(&last).unwrap();
            let end = audit::content(&bytes).len();
            bytes[end..end + 12].copy_from_slice(b"{\"seq\":30,\"p");
            std::fs::write(&last, &bytes).unwrap();
        }),
    ];
    for (i, (stage, crash)) in stages.into_iter().enumerate() {
        let dir = tmp.path().join(format!("stage-{i}"));
        copy_dir(&base, &dir);
        crash(&dir);
        let (log, recovered) = AuditLog::open(&dir, "spl.test", options(signer.clone()))
            .unwrap_or_else(|e| panic!("{stage}: {e}"));
        for record in recovered {
            log.append(record).await.unwrap();
        }
        fill(&log, 30, 20).await;
        drop(log);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!dir.join(PREPARING).exists(), "{stage}");
        let all = verifies(&dir, &signer, 50);
        let torn = stage.starts_with("writing");
        assert_eq!(
            all.iter().any(|r| r.outcome == "recovered"),
            torn,
            "{stage}: a recovery is recorded exactly when records were cut"
        );
        let files = segment_files(&dir);
        for (_, closed) in &files[..files.len() - 1] {
            assert_eq!(zeros_after_records(closed), 0, "{stage}: {closed:?} is cut");
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A log as the gateway wrote it before segments were pre-allocated — every segment, the
/// last one too, holding its records only — verifies as it is, and the gateway carries it on:
/// the last segment gets its zeros, the chain goes on from its last record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_before_preallocation_verifies_and_is_carried_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let signer = signer(tmp.path());
    written(&dir, &signer, 30).await;
    for (_, path) in segment_files(&dir) {
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, audit::content(&bytes)).unwrap();
    }
    std::fs::remove_file(dir.join(PREPARED)).ok();
    let (_, last) = segment_files(&dir).pop().unwrap();
    assert_eq!(zeros_after_records(&last), 0);
    verifies(&dir, &signer, 30);
    let (log, recovered) = AuditLog::open(&dir, "spl.test", options(signer.clone())).unwrap();
    assert!(recovered.is_empty(), "nothing to repair: {recovered:?}");
    assert_eq!(len(&last), SEGMENT, "the last segment is pre-allocated");
    fill(&log, 30, 20).await;
    drop(log);
    verifies(&dir, &signer, 50);
}

/// The gateway's data directory on a 300 KiB tmpfs, with the default segment size: it
/// pre-allocates what it can, refuses exchanges with 503 `audit-unavailable` once the room
/// for their records is not there — before any upstream contact — and its log verifies while
/// it runs. When room comes back, so do exchanges, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_nothing_reaches_the_owner_unrecorded() {
    let pki = TestPki::new();
    let disk = Tmpfs::mount(&pki.path().join("disk"), "300k");
    let data = disk.path.join("data");
    let (upstream, recorder) = recording_upstream(&pki).await;
    let text = support::audited_config(&upstream, &pki).edit_once(
        "[gateway]\n",
        &format!("[gateway]\ndata_dir = \"{}\"\n", data.display()),
    );
    let mut running = Running::start(pki, &text).await;
    let client = Client::new(
        running.addr,
        &running.pki.ca,
        Some(&running.pki.dinkes),
        Version::HTTP_11,
    );
    let audit_dir = data.join("audit");
    let mut answered = 0;
    let mut refused = 0;
    for _ in 0..3000 {
        let answer = client.get("/dinkes/faskes").await.unwrap();
        match answer.status.as_u16() {
            200 => answered += 1,
            503 => {
                answer.problem(503, "audit-unavailable");
                refused += 1;
                if refused == 20 {
                    break;
                }
            }
            other => panic!("{other}: {}", String::from_utf8_lossy(&answer.body)),
        }
    }
    assert!(
        answered > 50,
        "only {answered} exchanges before the disk filled"
    );
    assert_eq!(refused, 20, "the disk never filled");
    // Every request the owner's service saw is in the log, which verifies as it stands.
    let verification = audit::verify_all(&audit_dir, None);
    assert!(
        verification.problems.is_empty(),
        "{:?}",
        verification.problems
    );
    let mut recorded = std::collections::HashSet::new();
    audit::walk(&audit_dir, |r, _| {
        if r.outcome == "forwarded" {
            recorded.insert(r.exchange_id.clone().unwrap());
        }
        Ok(())
    })
    .unwrap();
    let seen = recorder.requests();
    assert_eq!(seen.len(), answered);
    for request in &seen {
        let id = request.headers["spl-exchange-id"].to_str().unwrap();
        assert!(recorded.contains(id), "{id} reached the owner unrecorded");
    }
    assert_eq!(recorded.len(), answered);
    // Room again (the operator moved the index away): exchanges resume without a restart.
    std::fs::remove_dir_all(audit_dir.join("index")).unwrap();
    let mut resumed = false;
    for _ in 0..100 {
        if client.get("/dinkes/faskes").await.unwrap().status == 200 {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "the gateway did not take exchanges again");
    running.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(10), &mut running.task).await;
    let verification = audit::verify_all(&audit_dir, None);
    assert!(
        verification.problems.is_empty(),
        "{:?}",
        verification.problems
    );
    // The disk goes before the PKI directory it is mounted in.
    drop(disk);
}

/// A tmpfs of a fixed size, unmounted when dropped (the tests run as root, as CI does).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("mount(8)");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// `audit tail --follow` prints each record once, as it is written, across rotations — never
/// the zeros of the pre-allocated segment, never half a line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follow_prints_each_record_as_it_is_written() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let signer = signer(tmp.path());
    let (log, _) = AuditLog::open(&dir, "spl.test", options(signer.clone())).unwrap();
    fill(&log, 0, 5).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_penghubung"))
        .args(["audit", "tail", "-n", "2", "--follow"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let seqs = |rx: &std::sync::mpsc::Receiver<String>, until: u64| {
        let mut got = Vec::new();
        while got.last() != Some(&until) {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no more lines after {got:?}"));
            let record: Record = serde_json::from_str(&line).unwrap();
            got.push(record.seq);
        }
        got
    };
    // The last two of what is there (the fifth exchange and the tree head after it).
    assert_eq!(seqs(&rx, 5), [4, 5]);
    // Then everything written after, in order, though the log rotates on the way.
    let before = segment_files(&dir).len();
    fill(&log, 5, 40).await;
    assert!(segment_files(&dir).len() > before + 1, "the log rotated");
    let all = verifies(&dir, &signer, 45);
    let last = all.last().unwrap().seq;
    assert_eq!(seqs(&rx, last), (6..=last).collect::<Vec<_>>());
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A write the disk cannot take whole (records larger than a segment grow it, on a disk with
/// no room left): the batch is refused with `NoRoom`, what it left is zeroed, the log ends at
/// its last whole record and verifies as it stands; with room again, appends go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_disk_cannot_take_leaves_the_log_at_its_last_whole_record() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = signer(tmp.path());
    let disk = Tmpfs::mount(&tmp.path().join("disk"), "64k");
    let dir = disk.path.join("audit");
    let options = WriterOptions {
        segment_size: 1 << 10,
        tree_head_every: 1000,
        ..options(signer.clone())
    };
    let (log, _) = AuditLog::open(&dir, "spl.test", options).unwrap();
    let big = |i: usize| Record {
        target: Some(format!("/dinkes/faskes/{}", "a".repeat(10_000))),
        ..exchange(i)
    };
    let mut written = 0;
    let mut refused = None;
    for i in 0..100 {
        match log.append(big(i)).await {
            Ok(_) => written += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(audit::AuditError::NoRoom(_))),
        "{refused:?} after {written}"
    );
    assert!(
        written >= 3,
        "only {written} records before the disk filled"
    );
    let check = |n: usize| {
        let verification = audit::verify_all(&dir, None);
        assert!(
            verification.problems.is_empty(),
            "{:?}",
            verification.problems
        );
        assert_eq!(verification.report.exchanges, n as u64);
    };
    check(written);
    // Room again: the writer goes on without a restart.
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    let mut again = false;
    for _ in 0..50 {
        if log.append(big(written)).await.is_ok() {
            again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again, "no append succeeded with room again");
    check(written + 1);
    drop(log);
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(disk);
}
