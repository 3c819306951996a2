//! What does schema validation add to one exchange with a 1 KB JSON body — the request checked
//! against its schema and the 1 KB response against its own — measured through the whole
//! in-process pipeline (`Gateway::handle` to a loopback mTLS upstream) against the same
//! operation without schemas, and on its own (through a `serde_json::Value`, and read in place
//! as the pipeline does)?

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

#[path = "support/pipeline.rs"]
mod support;

use support::document;

fn pipeline(c: &mut Criterion) {
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let body = Bytes::from(serde_json::to_vec(&document()).unwrap());
    assert!(
        (900..1200).contains(&body.len()),
        "body is {} bytes",
        body.len()
    );

    let (gateway, caller) = rt.block_on(support::gateway(dir.path()));

    let mut group = c.benchmark_group("exchange_1kb_json");
    for path in ["/s/plain", "/s/validated"] {
        let (gateway, caller, body, rt) =
            (gateway.clone(), caller.clone(), body.clone(), rt.clone());
        group.bench_function(path.trim_start_matches("/s/"), move |b| {
            b.to_async(&*rt).iter(|| {
                let (gateway, caller, body) = (gateway.clone(), caller.clone(), body.clone());
                async move {
                    let request = Request::post(path)
                        .header("content-type", "application/json")
                        .body(Full::new(body))
                        .unwrap();
                    let response = gateway.handle(&caller, request).await;
                    assert_eq!(response.status(), 200);
                    response
                        .into_body()
                        .collect()
                        .await
                        .unwrap()
                        .to_bytes()
                        .len()
                }
            })
        });
    }
    group.finish();

    // The validation work alone, on a valid 1 KB body: into a serde_json::Value and validated
    // (the way before the tape), and the way the pipeline does it now (read in place).
    let mut registry = penghubung::schema::Registry::new(dir.path()).unwrap();
    let schema = registry.get("doc.json").unwrap();
    c.bench_function("parse_and_validate_1kb", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(std::hint::black_box(&body)).unwrap();
            std::hint::black_box(penghubung::schema::violations(&schema, &value).is_empty())
        })
    });
    c.bench_function("body_violations_1kb", |b| {
        b.iter(|| {
            let found = penghubung::schema::body_violations(&schema, std::hint::black_box(&body));
            std::hint::black_box(found.unwrap().is_empty())
        })
    });
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
