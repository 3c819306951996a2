//! `penghubung report` against an audit log written by a gateway: the counts per consumer,
//! service and outcome, refusals by reason, availability and latency per service, in md, csv
//! and json; a window that excludes the day; and a tampered log that gives no report.

mod support;

use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use penghubung::caller::Caller;
use penghubung::config::load_str;
use penghubung::runtime::Gateway;
use penghubung::tls::IdentityField;
use support::Edit;
use support::{closed_port, config_text, recording_upstream, TestPki};

const BIN: &str = env!("CARGO_BIN_EXE_penghubung");

fn report(dir: &std::path::Path, since: &str, until: &str, format: &str) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["report", "--audit"])
        .arg(dir)
        .args([
            "--since",
            since,
            "--until",
            until,
            "--format",
            format,
            "--timezone",
            "UTC",
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_review_is_computed_from_the_audit_log() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let closed = closed_port();
    let down = closed.url.clone();
    // dukcapil-penduduk answers; dinkes-faskes' upstream is down.
    let text = config_text(&upstream, "5s", "\n[audit]\n").edit_once(
        &format!("upstreams = [\"{upstream}\"]\nupstream_ca = \"ca.crt\"\n\n  [[services.operations]]\n  id = \"list-faskes\""),
        &format!("upstreams = [\"{down}\"]\nupstream_ca = \"ca.crt\"\n\n  [[services.operations]]\n  id = \"list-faskes\""));
    assert!(
        text.contains(&down),
        "the fixture did not take the closed port"
    );
    let snapshot = load_str(&text, &pki.path().join("r.toml"), pki.path()).unwrap();
    let gateway = Gateway::new(Arc::new(snapshot)).unwrap();
    let caller = |cert: &penghubung::pki::Issued| {
        Caller::resolve(
            &gateway.snapshot(),
            "127.0.0.1:1".parse().unwrap(),
            IdentityField::SubjectCn.extract(&cert.cert),
        )
    };
    let (dinkes, dukcapil) = (caller(&pki.dinkes), caller(&pki.dukcapil));
    let send = |who: &Caller, target: &str| {
        let request = Request::get(target).body(Full::new(Bytes::new())).unwrap();
        let who = who.clone();
        let gateway = &gateway;
        async move { gateway.handle(&who, request).await.status().as_u16() }
    };
    for _ in 0..3 {
        assert_eq!(send(&dinkes, "/dukcapil/penduduk/penduduk/1").await, 200);
    }
    assert_eq!(send(&dukcapil, "/dukcapil/penduduk/penduduk/1").await, 403);
    assert_eq!(send(&dinkes, "/dinkes/faskes").await, 503);
    assert_eq!(send(&dinkes, "/tidak-ada").await, 404);

    let dir = pki.path().join("data/audit");
    let today =
        &penghubung::audit::timestamp(penghubung::clock::Clock::system().now_millis())[..10];
    let (ok, json, err) = report(&dir, today, today, "json");
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["exchanges"], 6);
    let service = |id: &str| {
        doc["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == id)
            .cloned()
            .unwrap()
    };
    let penduduk = service("dukcapil-penduduk");
    assert_eq!(
        (penduduk["answered"].as_u64(), penduduk["refused"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(penduduk["availability"], 1.0);
    assert!(penduduk["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    let faskes = service("dinkes-faskes");
    assert_eq!(
        (faskes["failed"].as_u64(), faskes["availability"].as_f64()),
        (Some(1), Some(0.0))
    );
    let count = |consumer: &str, service: &str, outcome: &str| {
        doc["exchanges_by_outcome"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["consumer"] == consumer && r["service"] == service && r["outcome"] == outcome
            })
            .map(|r| r["exchanges"].as_u64().unwrap())
    };
    assert_eq!(count("dinkes", "dukcapil-penduduk", "forwarded"), Some(3));
    assert_eq!(
        count("dukcapil", "dukcapil-penduduk", "no-agreement"),
        Some(1)
    );
    assert_eq!(count("dinkes", "(no service)", "no-route"), Some(1));
    assert_eq!(doc["refusals"]["upstream-unavailable"], 1);
    assert_eq!(doc["refusals"]["no-agreement"], 1);

    let (ok, md, _) = report(&dir, today, today, "md");
    assert!(ok);
    assert!(
        md.contains("| dukcapil-penduduk | 3 | 0 | 1 | 100.00% |"),
        "{md}"
    );
    assert!(
        md.contains("| dinkes | dukcapil-penduduk | forwarded | 3 |"),
        "{md}"
    );
    let (ok, csv, _) = report(&dir, today, today, "csv");
    assert!(ok);
    assert!(
        csv.lines().any(|l| l == "refusals,,,no-agreement,1,,,,,,,"),
        "{csv}"
    );
    assert!(csv.lines().all(|l| l.split(',').count() == 12), "{csv}");

    // A window that does not hold the day: nothing.
    let (ok, json, _) = report(&dir, "2020-01-01", "2020-01-31", "json");
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap()["exchanges"],
        0
    );
    // Bad arguments name the flag.
    let (ok, _, err) = report(&dir, "2026-13-01", today, "md");
    assert!(!ok && err.contains("--since"), "{err}");
    let (ok, _, err) = report(&dir, today, today, "pdf");
    assert!(!ok && err.contains("--format"), "{err}");

    // A tampered log gives no report.
    drop(gateway);
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .expect("a segment");
    let text = std::fs::read_to_string(&segment).unwrap();
    std::fs::write(
        &segment,
        text.edit_once("\"no-agreement\"", "\"forwarded\""),
    )
    .unwrap();
    let (ok, _, err) = report(&dir, today, today, "md");
    assert!(!ok && err.contains("does not verify"), "{err}");
}
