//! How many records per second does the audit writer append — serialised, hashed, chained,
//! covered by a signed tree head every 1,000 records — with 64 appenders at a time, under
//! `interval` and under `sync` durability (one fdatasync per group commit)?

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use penghubung::audit::{commit, AuditLog, Nonce, Record, Signer, WriterOptions};
use penghubung::config::Durability;

fn record(i: u64) -> Record {
    Record {
        time: "2026-11-23T23:00:00.000Z".into(),
        gateway: "spl.bench".into(),
        kind: "exchange".into(),
        outcome: "forwarded".into(),
        exchange_id: Some(format!("01a20aa3-7ced-7c0e-9bfc-{i:012x}")),
        status: Some(200),
        consumer: Some("dinkes".into()),
        cert_sha256: Some("ab".repeat(32)),
        service: Some("dukcapil-penduduk".into()),
        owner: Some("dukcapil".into()),
        operation: Some("get-penduduk".into()),
        agreement: Some("PKS-2025-014".into()),
        purpose: Some("Verifikasi peserta JKN".into()),
        method: Some("GET".into()),
        path_template: Some("/penduduk/{nik}".into()),
        target: Some(format!(
            "/dukcapil/penduduk/penduduk/hmac-sha256:{}",
            "cd".repeat(32)
        )),
        request: Some(commit(&Nonce::fresh(), false, b"")),
        response: Some(commit(&Nonce::fresh(), false, &[b'x'; 1024])),
        latency_us: Some(850),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        ..Record::default()
    }
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
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
    let mut group = c.benchmark_group("audit_append_64_concurrent");
    group.throughput(Throughput::Elements(64));
    for (name, durability) in [
        ("interval", Durability::Interval),
        ("sync", Durability::Sync),
    ] {
        let (log, _) = AuditLog::open(
            &dir.path().join(name),
            "spl.bench",
            WriterOptions {
                durability,
                flush_interval: Duration::from_millis(100),
                segment_size: 64 << 20,
                queue: 4096,
                signer: Some(signer.clone()),
                gateway: "spl.bench".into(),
                tree_head_every: 1000,
                tree_head_interval: Duration::from_secs(3600),
            },
        )
        .unwrap();
        let log = Arc::new(log);
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                n += 64;
                let log = log.clone();
                let base = n;
                async move {
                    let mut tasks = Vec::with_capacity(64);
                    for i in 0..64 {
                        let log = log.clone();
                        tasks.push(tokio::spawn(async move {
                            log.append(record(base + i)).await.is_ok()
                        }));
                    }
                    for t in tasks {
                        assert!(t.await.unwrap());
                    }
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
