//! The gateway's documents for PD developers: the catalog shows each agency what it may see,
//! and each visible service's OpenAPI 3.1 document passes an independent validator
//! (openapi-spec-validator, from PyPI).

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use penghubung::caller::Caller;
use penghubung::config::load_str;
use penghubung::runtime::Gateway;
use penghubung::tls::IdentityField;
use serde_json::Value;
use support::Edit;
use support::TestPki;

const EXTRA: &str = r#"
[[services]]
id = "rahasia-x"
owner = "dukcapil"
classification = "rahasia"
prefix = "/rahasia"
upstreams = ["https://127.0.0.1:9"]
upstream_ca = "ca.crt"
  [[services.operations]]
  id = "baca"
  method = "GET"
  path = "/baca/{id}"
"#;

fn schemas_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .display()
        .to_string()
}

async fn get(gateway: &Gateway, caller: &Caller, target: &str) -> (StatusCode, Bytes) {
    let response = gateway
        .handle(
            caller,
            Request::get(target).body(Full::new(Bytes::new())).unwrap(),
        )
        .await;
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn each_agency_sees_what_its_clearance_and_agreements_allow() {
    let pki = TestPki::new();
    let text = support::config_text("https://127.0.0.1:9", "5s", EXTRA).edit_once(
        "max_request_body = \"1KiB\"",
        &format!(
            "max_request_body = \"1KiB\"\nschemas_dir = \"{}\"",
            schemas_dir()
        ),
    );
    let snapshot =
        load_str(&text, &pki.path().join("c.toml"), pki.path()).unwrap_or_else(|e| panic!("{e}"));
    let gateway = Gateway::new(Arc::new(snapshot)).unwrap();
    let caller = |cert: &penghubung::pki::Issued| {
        Caller::resolve(
            &gateway.snapshot(),
            "127.0.0.1:1".parse().unwrap(),
            IdentityField::SubjectCn.extract(&cert.cert),
        )
    };
    let (dinkes, dukcapil) = (caller(&pki.dinkes), caller(&pki.dukcapil));

    let (status, body) = get(&gateway, &dinkes, "/.well-known/spl/catalog").await;
    assert_eq!(status, 200);
    let catalog: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(catalog["agency"], "dinkes");
    let ids: Vec<&str> = catalog["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["dukcapil-penduduk", "dinkes-faskes"],
        "dinkes (terbatas) must not see rahasia-x"
    );
    let get_penduduk = &catalog["services"][0]["operations"][0];
    assert_eq!(get_penduduk["path"], "/dukcapil/penduduk/penduduk/{nik}");
    assert_eq!(get_penduduk["agreements"][0]["id"], "PKS-TEST-1");
    assert_eq!(get_penduduk["agreements"][0]["in_force"], true);
    assert_eq!(
        catalog["services"][1]["operations"][0]["agreements"],
        Value::Array(vec![])
    );

    // rahasia-x is invisible to dinkes, in the catalog and as a document: 404, as if absent.
    let (status, _) = get(&gateway, &dinkes, "/.well-known/spl/openapi/rahasia-x.json").await;
    assert_eq!(status, 404);
    let (status, _) = get(&gateway, &dinkes, "/.well-known/spl/openapi/tidak-ada.json").await;
    assert_eq!(status, 404);
    // dukcapil (rahasia) sees it.
    let (status, body) = get(
        &gateway,
        &dukcapil,
        "/.well-known/spl/openapi/rahasia-x.json",
    )
    .await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/baca/{id}"]["get"].is_object());
    // Paths are normalised first: a document path that climbs out is an ordinary service call,
    // refused exactly as the direct call is.
    let (status, _) = get(&gateway, &dinkes, "/dinkes/../.well-known/spl/catalog").await;
    assert_eq!(status, 200);
    let climbed = get(
        &gateway,
        &dinkes,
        "/.well-known/spl/catalog/../../../rahasia/baca/1",
    )
    .await;
    let direct = get(&gateway, &dinkes, "/rahasia/baca/1").await;
    assert_eq!(climbed.0, 403);
    assert_eq!(climbed.0, direct.0);
}

#[test]
fn openapi_documents_pass_an_independent_validator() {
    let validator = Command::new("openapi-spec-validator")
        .arg("--help")
        .output();
    if validator.is_err() {
        panic!("openapi-spec-validator is needed: python3 -m pip install openapi-spec-validator");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    let config_dir = work.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::copy(
        root.join("config/penghubung.toml"),
        config_dir.join("penghubung.toml"),
    )
    .unwrap();
    let agencies = [
        ("dinkes", "dinkes.parigimoutongkab.go.id"),
        ("dukcapil", "dukcapil.parigimoutongkab.go.id"),
    ];
    penghubung::pki::init(&config_dir.join("pki"), &["localhost"], &agencies).unwrap();
    let text = std::fs::read_to_string(config_dir.join("penghubung.toml"))
        .unwrap()
        .edit(
            "schemas_dir = \"../schemas\"",
            &format!("schemas_dir = \"{}\"", root.join("schemas").display()),
        );
    std::fs::write(config_dir.join("penghubung.toml"), text).unwrap();
    support::sign_example(&config_dir.join("penghubung.toml"));
    let snapshot = penghubung::config::load(&config_dir.join("penghubung.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!snapshot.services.is_empty());
    for (service, served) in snapshot.services.iter().zip(&snapshot.openapi) {
        // The CLI prints what the gateway serves.
        let out = Command::new(env!("CARGO_BIN_EXE_penghubung"))
            .args(["openapi", "--service", &service.id, "--config"])
            .arg(config_dir.join("penghubung.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.trim_ascii_end(), served.as_ref());
        let file = work.path().join(format!("{}.json", service.id));
        std::fs::write(&file, served).unwrap();
        let check = Command::new("openapi-spec-validator")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{} is not a valid OpenAPI document:\n{}{}",
            service.id,
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        // Every schema is bundled: no $ref leaves the document.
        let text = String::from_utf8_lossy(served);
        for line in text.lines().filter(|l| l.contains("\"$ref\"")) {
            assert!(
                line.contains("\"#/components/schemas/"),
                "{}: {line}",
                service.id
            );
        }
    }
    let unknown = Command::new(env!("CARGO_BIN_EXE_penghubung"))
        .args(["openapi", "--service", "tidak-ada", "--config"])
        .arg(config_dir.join("penghubung.toml"))
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr)
        .contains("known: dukcapil-penduduk, dinkes-faskes"));
}
