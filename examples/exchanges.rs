//! A fixed number of exchanges through the in-process pipeline (`Gateway::handle` to a loopback
//! mTLS upstream), for instruction counts that do not depend on how busy the machine is:
//!
//! ```text
//! cargo build --release --example exchanges
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/examples/exchanges plain 2000
//! ```
//!
//! Run it with N and 2N exchanges: the difference of the two totals over N is the instructions
//! of one exchange, without start-up (docs/performance.md). The operation is `plain` (no
//! schema) or `validated` (a 1 KB JSON request and response, each checked against its schema),
//! as in `benches/validate.rs`.

use std::sync::Arc;

use bytes::Bytes;
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

fn main() {
    let mut args = std::env::args().skip(1);
    let operation = args.next().unwrap_or_else(|| "plain".to_owned());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
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

    let path = format!("/s/{operation}");
    rt.block_on(async {
        for _ in 0..count {
            let request = Request::post(path.as_str())
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .unwrap();
            let response = gateway.handle(&caller, request).await;
            assert_eq!(response.status(), StatusCode::OK);
            let read = response.into_body().collect().await.unwrap().to_bytes();
            assert!(!read.is_empty());
        }
    });
}
