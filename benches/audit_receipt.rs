//! What does a receipt — the record, its inclusion proof and the signed tree head covering it —
//! cost from a log of 1,000,000 records, through the index beside the log (and what does a
//! consistency proof between two of its tree heads cost)? Target: under 1 ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use penghubung::audit::{commit, AuditLog, Nonce, Record, Signer, WriterOptions};
use penghubung::config::Durability;

const RECORDS: u64 = 1_000_000;

fn id(i: u64) -> String {
    format!("01a20aa3-7ced-7c0e-9bfc-{i:012x}")
}

fn record(i: u64) -> Record {
    Record {
        time: "2026-11-23T23:00:00.000Z".into(),
        gateway: "spl.bench".into(),
        kind: "exchange".into(),
        outcome: "forwarded".into(),
        exchange_id: Some(id(i)),
        status: Some(200),
        consumer: Some("dinkes".into()),
        service: Some("dukcapil-penduduk".into()),
        operation: Some("get-penduduk".into()),
        method: Some("GET".into()),
        response: Some(commit(&Nonce::fresh(), false, b"{}")),
        ..Record::default()
    }
}

fn receipt(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("audit.key"),
        penghubung::pki::ed25519_key_pem().unwrap(),
    )
    .unwrap();
    let signer = Arc::new(Signer::from_pem_file(&dir.path().join("audit.key")).unwrap());
    let audit = dir.path().join("audit");
    let options = WriterOptions {
        durability: Durability::Interval,
        flush_interval: Duration::from_millis(100),
        segment_size: 64 << 20,
        queue: 8192,
        signer: Some(signer),
        gateway: "spl.bench".into(),
        tree_head_every: 1000,
        tree_head_interval: Duration::from_secs(3600),
    };
    let (log, _) = AuditLog::open(&audit, "spl.bench", options).unwrap();
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..RECORDS {
            if tasks.len() >= 4096 {
                tasks.join_next().await.unwrap().unwrap();
            }
            let log = log.clone();
            tasks.spawn(async move { log.append(record(i)).await.unwrap() });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
    eprintln!(
        "wrote {RECORDS} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let lookup = log.lookup();
    // Ids spread over the whole log, most of them in sealed segments.
    let mut n = 0u64;
    c.bench_function("receipt_from_1m_records", |b| {
        b.iter(|| {
            n = (n + 7_919) % (RECORDS - 2_000);
            lookup.receipt(&id(n)).unwrap()
        })
    });
    let sizes: Vec<u64> = penghubung::audit::select(&audit, |r| r.kind == "tree-head")
        .unwrap()
        .iter()
        .map(|l| {
            serde_json::from_str::<Record>(l)
                .unwrap()
                .tree_size
                .unwrap()
        })
        .collect();
    let (old, new) = (sizes[sizes.len() / 10], sizes[sizes.len() - 1]);
    c.bench_function("consistency_proof_in_1m_records", |b| {
        b.iter(|| lookup.consistency(old, new).unwrap())
    });
}

criterion_group!(benches, receipt);
criterion_main!(benches);
