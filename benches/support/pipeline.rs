//! What `benches/validate.rs` and `examples/exchanges.rs` share (included with `#[path]`): a
//! gateway in front of a loopback mTLS upstream that answers a ~1 KB JSON document, with two
//! operations: `plain` (no schema) and `validated` (request and response checked against
//! `SCHEMA`).

use std::path::Path;
use std::sync::Arc;

use http::StatusCode;
use penghubung::caller::Caller;
use penghubung::config::load_str;
use penghubung::demo::{json_response, serve_sample, Handler, Seen};
use penghubung::pki::Authority;
use penghubung::runtime::Gateway;
use penghubung::tls::IdentityField;
use serde_json::{json, Value};

pub const SCHEMA: &str = r#"{
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
pub fn document() -> Value {
    let anggota: Vec<Value> = (0..8)
        .map(|i| json!({"nik": format!("72080141019000{:02}", i + 1), "hubungan": if i == 0 { "kepala" } else { "anak" }}))
        .collect();
    json!({"nik": "7208014101900001", "nama": "WARGA CONTOH SATU", "alamat": "x".repeat(500), "anggota": anggota})
}

/// The gateway, its upstream spawned on the current runtime, and the caller's identity; the
/// certificates and the schema are written into `dir`.
pub async fn gateway(dir: &Path) -> (Arc<Gateway>, Arc<Caller>) {
    let ca = Authority::new("Bench CA").unwrap();
    let gw = ca
        .issue_server("localhost", &["localhost", "127.0.0.1"])
        .unwrap();
    let client = ca.issue_client("bench.test", None).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(dir.join("gw.crt"), &gw.cert_pem).unwrap();
    std::fs::write(dir.join("gw.key"), &gw.key_pem).unwrap();
    std::fs::write(dir.join("doc.json"), SCHEMA).unwrap();
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
    let snapshot = load_str(&text, &dir.join("b.toml"), dir).unwrap();
    let gateway = Arc::new(Gateway::new(Arc::new(snapshot)).unwrap());
    let caller = Caller::resolve(
        &gateway.snapshot(),
        "127.0.0.1:1".parse().unwrap(),
        IdentityField::SubjectCn.extract(&client.cert),
    );
    (gateway, Arc::new(caller))
}
