//! What does schema validation add to one exchange with a 1 KB JSON body — the request checked
//! against its schema and the 1 KB response against its own — measured through the whole
//! in-process pipeline (`Gateway::handle` to a loopback mTLS upstream) against the same
//! operation without schemas, and on its own (through a `serde_json::Value`, and read in place
//! as the pipeline does)?

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use penghubung::caller::Caller;
use penghubung::config::load_str;
use penghubung::demo::{json_response, serve_sample, Handler, Seen};
use penghubung::pki::Authority;
use penghubung::runtime::Gateway;
use penghubung::tls::IdentityField;
use serde_json::{json, Value};

const SCHEMA: &str = r#"{
  "type": "object",
  "required": ["nik", "nama", "alamat", "anggota"],
  "properties": {
    "nik": {"type": "string", "pattern": "^[0-9]{16}$"},
    "nama": {"type": "string", "minLength": 1, "maxLength": 200},
    "alamat": {"type": "string", "maxLength": 2000},
    "anggota": {"type": "array", "maxItems": 50, "items": {
      "type": "object", "required": ["nik", "hubungan"],
      "properties": {"nik": {"type": "string", "pattern": "^[0-9]{16}$"}, "hubungan": {"enum": ["kepala", "istri", "suami", "anak", "lainnya"]}}
    }}
  }
}"#;

/// A ~1 KB document that satisfies `SCHEMA`.
fn document() -> Value {
    let anggota: Vec<Value> = (0..8)
        .map(|i| json!({"nik": format!("72080141019000{:02}", i + 1), "hubungan": if i == 0 { "kepala" } else { "anak" }}))
        .collect();
    json!({"nik": "7208014101900001", "nama": "WARGA CONTOH SATU", "alamat": "x".repeat(500), "anggota": anggota})
}

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

    let (gateway, caller) = rt.block_on(async {
        let ca = Authority::new("Bench CA").unwrap();
        let gw = ca
            .issue_server("localhost", &["localhost", "127.0.0.1"])
            .unwrap();
        let client = ca.issue_client("bench.test", None).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("gw.crt"), &gw.cert_pem).unwrap();
        std::fs::write(dir.path().join("gw.key"), &gw.key_pem).unwrap();
        std::fs::write(dir.path().join("doc.json"), SCHEMA).unwrap();
        let tls = penghubung::tls::server_config(
            vec![gw.cert.clone()],
            gw.key.clone_key(),
            vec![ca.cert()],
            Vec::new(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        let answer = document();
        let handler: Handler = Arc::new(move |_: Seen| json_response(StatusCode::OK, &answer));
        tokio::spawn(serve_sample(listener, tls, handler));
        let text = format!(
            r#"
[gateway]
id = "bench"
listen = "127.0.0.1:0"
schemas_dir = "."
[tls]
cert = "gw.crt"
key = "gw.key"
client_ca = ["ca.crt"]
[[agencies]]
code = "bench"
name = "Bench"
identities = ["bench.test"]
[[services]]
id = "s"
owner = "bench"
classification = "terbuka"
prefix = "/s"
upstreams = ["https://{upstream}"]
upstream_ca = "ca.crt"
  [[services.operations]]
  id = "plain"
  method = "POST"
  path = "/plain"
  [[services.operations]]
  id = "validated"
  method = "POST"
  path = "/validated"
  request_schema = "doc.json"
  response_schema = "doc.json"
"#
        );
        let snapshot = load_str(&text, &dir.path().join("b.toml"), dir.path()).unwrap();
        let gateway = Arc::new(Gateway::new(Arc::new(snapshot)).unwrap());
        let caller = Caller::resolve(
            &gateway.snapshot(),
            "127.0.0.1:1".parse().unwrap(),
            IdentityField::SubjectCn.extract(&client.cert),
        );
        (gateway, Arc::new(caller))
    });

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
