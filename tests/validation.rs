//! Schema validation in the pipeline: parameters and request bodies refused before any
//! upstream contact (415, 400, 422 with violations), responses checked before the caller sees
//! them (502 under enforce, forwarded under monitor).

mod support;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use penghubung::caller::Caller;
use penghubung::config::load_str;
use penghubung::demo;
use penghubung::runtime::Gateway;
use penghubung::tls::IdentityField;
use serde_json::Value;
use support::Edit;
use support::{recording_upstream, Recorder, TestPki};

struct Harness {
    gateway: Gateway,
    caller: Caller,
    recorder: Recorder,
    pki: TestPki,
    _schemas: tempfile::TempDir,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl Harness {
    async fn new() -> Harness {
        let pki = TestPki::new();
        let (upstream, recorder) = recording_upstream(&pki).await;
        Harness::with_upstream(pki, upstream, recorder).await
    }

    /// The harness in front of an upstream that answers every request with `body` (JSON).
    async fn answering(body: &'static str) -> Harness {
        let pki = TestPki::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = format!("https://{}", listener.local_addr().unwrap());
        let recorder = Recorder::default();
        let seen = recorder.clone();
        let handler: demo::Handler = Arc::new(move |s: demo::Seen| {
            seen.push(s);
            let mut response = http::Response::new(penghubung::body::full(body));
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
        });
        tokio::spawn(demo::serve_sample(
            listener,
            support::upstream_tls(&pki),
            handler,
        ));
        Harness::with_upstream(pki, upstream, recorder).await
    }

    async fn with_upstream(pki: TestPki, upstream: String, recorder: Recorder) -> Harness {
        let schemas = tempfile::tempdir().unwrap();
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"),
            schemas.path(),
        );
        // The recording upstream answers {"method", "path", "body_len"}.
        std::fs::write(
            schemas.path().join("echo.json"),
            r#"{"type": "object", "required": ["method", "path"], "properties": {"method": {"enum": ["GET", "POST"]}}}"#,
        )
        .unwrap();
        std::fs::write(
            schemas.path().join("needs-nik.json"),
            r#"{"type": "object", "required": ["nik"]}"#,
        )
        .unwrap();
        let ops = r#"
[[services]]
id = "kependudukan"
owner = "dukcapil"
classification = "terbuka"
prefix = "/kependudukan"
upstreams = ["UPSTREAM"]
upstream_ca = "ca.crt"
max_request_body = "1MiB"

  [[services.operations]]
  id = "get-penduduk"
  method = "GET"
  path = "/penduduk/{nik}"
  response_schema = "echo.json"
  [services.operations.params]
  nik = "common/nik.v1.json"
  tanggal = "common/tanggal.v1.json"

  [[services.operations]]
  id = "verifikasi"
  method = "POST"
  path = "/verifikasi"
  request_schema = "dukcapil/verifikasi-request.v1.json"

  [[services.operations]]
  id = "strict"
  method = "GET"
  path = "/strict"
  response_schema = "needs-nik.json"

  [[services.operations]]
  id = "lenient"
  method = "GET"
  path = "/lenient"
  response_schema = "needs-nik.json"
  schema_mode = "monitor"

[audit]
durability = "sync"
"#
        .edit("UPSTREAM", &upstream);
        let text = support::config_text(&upstream, "5s", &ops).edit_once(
            "max_request_body = \"1KiB\"",
            &format!(
                "max_request_body = \"1KiB\"\nschemas_dir = \"{}\"",
                schemas.path().display()
            ),
        );
        let snapshot = load_str(&text, &pki.path().join("v.toml"), pki.path())
            .unwrap_or_else(|e| panic!("{e}"));
        let gateway = Gateway::new(Arc::new(snapshot)).unwrap();
        let identity = IdentityField::SubjectCn.extract(&pki.dinkes.cert);
        let caller = Caller::resolve(
            &gateway.snapshot(),
            "127.0.0.1:1".parse().unwrap(),
            identity,
        );
        Harness {
            gateway,
            caller,
            recorder,
            pki,
            _schemas: schemas,
        }
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> (StatusCode, Value) {
        let response = self.gateway.handle(&self.caller, request).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn post(&self, content_type: Option<&str>, body: &str) -> (StatusCode, Value) {
        let mut request = Request::post("/kependudukan/verifikasi");
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        self.send(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
    }

    async fn get(&self, target: &str) -> (StatusCode, Value) {
        self.send(Request::get(target).body(Full::new(Bytes::new())).unwrap())
            .await
    }
}

fn slug(doc: &Value) -> &str {
    doc["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("urn:penghubung:problem:")
}

#[tokio::test]
async fn invalid_requests_never_reach_the_upstream() {
    let h = Harness::new().await;
    let valid = r#"{"nik": "7208014101900001", "nama": "WARGA CONTOH SATU"}"#;

    let (status, doc) = h.post(Some("text/plain"), valid).await;
    assert_eq!(
        (status.as_u16(), slug(&doc)),
        (415, "unsupported-media-type")
    );
    let (status, doc) = h.post(None, valid).await;
    assert_eq!(
        (status.as_u16(), slug(&doc)),
        (415, "unsupported-media-type")
    );

    let (status, doc) = h
        .post(Some("application/json"), r#"{"nik": "72080141"#)
        .await;
    assert_eq!((status.as_u16(), slug(&doc)), (400, "malformed-json"));
    assert!(doc["detail"].as_str().unwrap().contains("line 1"), "{doc}");

    let (status, doc) = h
        .post(
            Some("application/json"),
            r#"{"nik": "7208014001900001", "alamat": "x"}"#,
        )
        .await;
    assert_eq!(
        (status.as_u16(), slug(&doc)),
        (422, "request-schema-violation")
    );
    let violations = doc["violations"].as_array().unwrap();
    let find = |pointer: &str, keyword: &str| {
        violations
            .iter()
            .any(|v| v["pointer"] == pointer && v["keyword"] == keyword && v["message"].is_string())
    };
    assert!(find("/nik", "pattern"), "{doc}");
    assert!(find("", "required"), "{doc}");
    assert!(find("", "additionalProperties"), "{doc}");

    // Path and query parameters are checked before the body is read.
    let (status, doc) = h.get("/kependudukan/penduduk/7208014001900001").await;
    assert_eq!((status.as_u16(), slug(&doc)), (422, "invalid-parameter"));
    assert!(
        doc["detail"]
            .as_str()
            .unwrap()
            .contains("path parameter `nik`"),
        "{doc}"
    );
    assert_eq!(doc["violations"][0]["keyword"], "pattern");
    let (status, doc) = h
        .get("/kependudukan/penduduk/7208014101900001?tanggal=2025-02-30")
        .await;
    assert_eq!((status.as_u16(), slug(&doc)), (422, "invalid-parameter"));
    assert!(
        doc["detail"]
            .as_str()
            .unwrap()
            .contains("query parameter `tanggal`"),
        "{doc}"
    );

    assert_eq!(
        h.recorder.count(),
        0,
        "an invalid request reached the upstream"
    );
    let metrics = h.gateway.telemetry().encode();
    for (direction, n) in [("request", 1), ("parameter", 2)] {
        let line = format!("direction=\"{direction}\",mode=\"enforce\"}} {n}");
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }

    // The same requests, valid, are forwarded.
    let (status, _) = h.post(Some("application/json; charset=utf-8"), valid).await;
    assert_eq!(status, 200);
    let (status, _) = h
        .get("/kependudukan/penduduk/7208014101900001?tanggal=2025-03-01")
        .await;
    assert_eq!(status, 200);
    assert_eq!(h.recorder.count(), 2);

    // A percent escape is two hex digits, nothing else: `%+5` is not 0x05, in a query value
    // or in a path.
    for bad in ["%+5", "%-5", "2025-03-0%+1"] {
        let (status, doc) = h
            .get(&format!(
                "/kependudukan/penduduk/7208014101900001?tanggal={bad}"
            ))
            .await;
        assert_eq!((status.as_u16(), slug(&doc)), (422, "invalid-parameter"));
        assert_eq!(doc["violations"][0]["keyword"], "encoding", "{bad}: {doc}");
        let (status, doc) = h.get(&format!("/kependudukan/penduduk/{bad}")).await;
        assert_eq!((status.as_u16(), slug(&doc)), (400, "malformed-path"));
    }
    assert_eq!(h.recorder.count(), 2);
}

#[tokio::test]
async fn responses_that_break_their_schema_are_refused_under_enforce_and_forwarded_under_monitor() {
    let h = Harness::new().await;
    // The echo conforms to echo.json.
    let (status, doc) = h.get("/kependudukan/penduduk/7208014101900001").await;
    assert_eq!(status, 200);
    assert_eq!(doc["method"], "GET");
    // It lacks `nik`: under enforce the caller gets 502 with the violation, not the body.
    let (status, doc) = h.get("/kependudukan/strict").await;
    assert_eq!(
        (status.as_u16(), slug(&doc)),
        (502, "upstream-schema-violation")
    );
    assert_eq!(doc["violations"][0]["keyword"], "required");
    assert!(doc.get("method").is_none());
    // Under monitor the same response is forwarded.
    let (status, doc) = h.get("/kependudukan/lenient").await;
    assert_eq!(status, 200);
    assert_eq!(doc["path"], "/lenient");
    assert_eq!(h.recorder.count(), 3);
    // Either way the audit record says so.
    let mut outcomes = Vec::new();
    penghubung::audit::walk(&h.pki.path().join("data/audit"), |r, _| {
        if r.kind == "exchange" {
            outcomes.push((r.operation.clone().unwrap_or_default(), r.outcome.clone()));
        }
        Ok(())
    })
    .unwrap();
    let outcome = |op: &str| {
        outcomes
            .iter()
            .find(|(o, _)| o == op)
            .map(|(_, x)| x.as_str())
    };
    assert_eq!(outcome("get-penduduk"), Some("forwarded"));
    assert_eq!(outcome("strict"), Some("upstream-schema-violation"));
    assert_eq!(outcome("lenient"), Some("forwarded-schema-violation"));
    // And in the metrics, enforced or monitored.
    let metrics = h.gateway.telemetry().encode();
    for mode in ["enforce", "monitor"] {
        let op = if mode == "enforce" {
            "strict"
        } else {
            "lenient"
        };
        let line = format!(
            "penghubung_schema_violations_total{{service=\"kependudukan\",operation=\"{op}\",direction=\"response\",mode=\"{mode}\"}} 1"
        );
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
}

/// One reading of a body, shared with the owner (RFC 7493 I-JSON): a duplicate member name or a
/// lone surrogate is refused, request (400 `malformed-json`, naming the member) or response
/// (502), because the gateway's parser and the owner's may read such a document differently.
#[tokio::test]
async fn bodies_with_duplicate_members_or_lone_surrogates_are_refused() {
    let h = Harness::new().await;
    // The schema checks the last `nik` (serde_json keeps the last); an owner that keeps the
    // first would have seen the other one. It passed with 200 before.
    let smuggled = r#"{"nik":"not-a-nik; DROP TABLE","nama":"A","nik":"7208020203850002"}"#;
    let (status, doc) = h.post(Some("application/json"), smuggled).await;
    assert_eq!(
        (status.as_u16(), slug(&doc)),
        (400, "malformed-json"),
        "{doc}"
    );
    let detail = doc["detail"].as_str().unwrap();
    assert!(
        detail.contains("`nik`") && detail.contains("twice"),
        "{detail}"
    );
    for body in [
        r#"{"nik":"7208020203850002","nama":"A","nama":"B"}"#,
        r#"{"nik":"7208020203850002","nama":"A","x":{"y":1,"y":1}}"#,
        r#"{"nik":"7208020203850002","nama":"\ud800"}"#,
        r#"{"nik":"7208020203850002","nama":"A\udc00B"}"#,
    ] {
        let (status, doc) = h.post(Some("application/json"), body).await;
        assert_eq!(
            (status.as_u16(), slug(&doc)),
            (400, "malformed-json"),
            "{body}: {doc}"
        );
    }
    assert_eq!(h.recorder.count(), 0, "an ambiguous body reached the owner");
    // The same, unambiguous, goes through.
    let (status, _) = h
        .post(
            Some("application/json"),
            r#"{"nik":"7208020203850002","nama":"A \ud83d\ude00"}"#,
        )
        .await;
    assert_eq!(status, 200);

    // An owner's answer with a duplicate member is not passed on as if it had been checked.
    let h = Harness::answering(r#"{"nik":"7208020203850002","method":"GET","nik":"x"}"#).await;
    let (status, doc) = h.get("/kependudukan/strict").await;
    assert_eq!(
        (status.as_u16(), slug(&doc)),
        (502, "upstream-schema-violation"),
        "{doc}"
    );
    assert_eq!(doc["violations"][0]["keyword"], "json");
    assert!(doc["violations"][0]["message"]
        .as_str()
        .unwrap()
        .contains("`nik`"));
    let h = Harness::answering(r#"{"nik":"\udfff"}"#).await;
    let (status, doc) = h.get("/kependudukan/strict").await;
    assert_eq!(
        (status.as_u16(), slug(&doc)),
        (502, "upstream-schema-violation"),
        "{doc}"
    );
}

/// Bodies built to hurt a parser — deep nesting, a number of 100,000 digits, invalid UTF-8,
/// not JSON at all — are refused with 400 `malformed-json`, never forwarded, and cost the
/// gateway no crash (serde_json's recursion limit; the in-place reader stops at 100 levels).
#[tokio::test]
async fn bodies_built_to_hurt_a_parser_are_refused() {
    let h = Harness::new().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_objects = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    let long_number = format!("{{\"nik\":{}}}", "9".repeat(100_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("nesting 100,000", deep.into_bytes()),
        ("objects nested 50,000", deep_objects.into_bytes()),
        ("a 100,000-digit number", long_number.into_bytes()),
        (
            "invalid UTF-8",
            b"{\"nik\":\"\xff\xfe\",\"nama\":\"A\"}".to_vec(),
        ),
        ("overlong UTF-8", b"{\"nama\":\"\xc0\xaf\"}".to_vec()),
        ("not JSON", b"nik=7208020203850002&nama=A".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, body) in cases {
        let request = Request::post("/kependudukan/verifikasi")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let (status, doc) = h.send(request).await;
        assert_eq!(
            (status.as_u16(), slug(&doc)),
            (400, "malformed-json"),
            "{what}: {doc}"
        );
    }
    assert_eq!(h.recorder.count(), 0);
}
