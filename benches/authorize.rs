//! What does one authorization decision cost — clearance, the consumer's agreements for the
//! service, operation coverage and validity — with 1,000 agencies and 5,000 agreements?

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use penghubung::authorize::{authorize, Ask};
use penghubung::config::{load_str, Date};
use penghubung::pki::Authority;

const AGENCIES: usize = 1_000;
const SERVICES: usize = 50;
const PER_AGENCY: usize = 5;

fn config(dir: &std::path::Path) -> String {
    let ca = Authority::new("Bench CA").unwrap();
    let gw = ca.issue_server("localhost", &["localhost"]).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(dir.join("gw.crt"), &gw.cert_pem).unwrap();
    std::fs::write(dir.join("gw.key"), &gw.key_pem).unwrap();
    let mut t = String::from(
        "[gateway]\nid = \"bench\"\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"gw.crt\"\nkey = \"gw.key\"\nclient_ca = [\"ca.crt\"]\n",
    );
    for a in 0..AGENCIES {
        let _ = write!(
            t,
            "[[agencies]]\ncode = \"a{a}\"\nname = \"Agency {a}\"\nclearance = \"rahasia\"\nidentities = [\"a{a}.test\"]\n"
        );
    }
    for s in 0..SERVICES {
        let class = if s == 0 { "terbuka" } else { "terbatas" };
        let _ = write!(
            t,
            "[[services]]\nid = \"s{s}\"\nowner = \"a0\"\nclassification = \"{class}\"\nprefix = \"/s{s}\"\nupstreams = [\"https://127.0.0.1:9\"]\nupstream_ca = \"ca.crt\"\n"
        );
        for o in 0..4 {
            let _ = write!(t, "  [[services.operations]]\n  id = \"o{o}\"\n  method = \"GET\"\n  path = \"/o{o}/{{id}}\"\n");
        }
    }
    for a in 0..AGENCIES {
        for k in 0..PER_AGENCY {
            let s = 1 + (a * PER_AGENCY + k) % (SERVICES - 1);
            let _ = write!(
                t,
                "[[agreements]]\nid = \"PKS-{a}-{k}\"\nconsumer = \"a{a}\"\nservice = \"s{s}\"\noperations = [\"o0\", \"o1\"]\npurpose = \"p\"\nvalid_from = 2025-01-01\nvalid_until = 2026-12-31\n"
            );
        }
    }
    t
}

fn decide(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path());
    let snapshot = load_str(&text, &dir.path().join("bench.toml"), dir.path()).unwrap();
    assert_eq!(snapshot.agreements.len(), AGENCIES * PER_AGENCY);
    let today = Date {
        year: 2026,
        month: 6,
        day: 1,
    };
    let consumer = 777;
    let service = 1 + (consumer * PER_AGENCY + 2) % (SERVICES - 1);
    fn ask(
        consumer: usize,
        service: usize,
        operation: usize,
        chosen: Option<&str>,
        today: Date,
    ) -> Ask<'_> {
        Ask {
            consumer,
            service,
            operation,
            chosen,
            today,
        }
    }
    let ask = |service, operation, chosen| ask(consumer, service, operation, chosen, today);
    assert!(authorize(&snapshot, ask(service, 0, None)).is_ok());

    let mut group = c.benchmark_group("authorize_1000_agencies_5000_agreements");
    group.bench_function("allowed", |b| {
        b.iter(|| black_box(authorize(&snapshot, black_box(ask(service, 0, None))).is_ok()))
    });
    group.bench_function("allowed-with-choice", |b| {
        let id = format!("PKS-{consumer}-2");
        b.iter(|| {
            let choice = ask_with(consumer, service, &id, today);
            black_box(authorize(&snapshot, black_box(choice)).is_ok())
        })
    });
    group.bench_function("terbuka", |b| {
        b.iter(|| black_box(authorize(&snapshot, black_box(ask(0, 3, None))).is_ok()))
    });
    group.bench_function("refused-no-agreement", |b| {
        let other = (1..SERVICES)
            .find(|&s| snapshot.agreements_for(consumer, s).is_empty())
            .unwrap();
        assert!(authorize(&snapshot, ask(other, 0, None)).is_err());
        b.iter(|| black_box(authorize(&snapshot, black_box(ask(other, 0, None))).is_err()))
    });
    group.bench_function("refused-operation-not-covered", |b| {
        assert!(authorize(&snapshot, ask(service, 3, None)).is_err());
        b.iter(|| black_box(authorize(&snapshot, black_box(ask(service, 3, None))).is_err()))
    });
    group.finish();
}

fn ask_with<'a>(consumer: usize, service: usize, id: &'a str, today: Date) -> Ask<'a> {
    Ask {
        consumer,
        service,
        operation: 1,
        chosen: Some(id),
        today,
    }
}

criterion_group!(benches, decide);
criterion_main!(benches);
