//! Suspension during an incident (issue #18): an agency, agreement or service cut off by an
//! administrator, recorded before it takes effect, in force on the next request of every
//! connection (open HTTP/2 ones included), kept across reloads and restarts, and lifted.

mod support;

use std::process::Command;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use penghubung::suspension::{Scope, SuspendError};
use support::{
    audited_config, config_text, quiet_serve, recording_upstream, Client, Running, Served, TestPki,
};

const BIN: &str = env!("CARGO_BIN_EXE_penghubung");
const NIK_PATH: &str = "/dukcapil/penduduk/penduduk/7208014101900001";

/// `penghubung suspend|resume ARGS --admin 127.0.0.1:PORT`: (success, stdout, stderr).
fn admin_cli(admin: u16, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A raw HTTP/1.1 request to the admin listener: (status, body).
async fn admin_http(admin: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    support::admin_request(([127, 0, 0, 1], admin).into(), method, path, body).await
}

type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// One HTTP/2 connection as `client`, kept open.
async fn h2(client: &Client) -> H2 {
    let tls = client.connect(b"h2").await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get_on(sender: &mut H2, port: u16, path: &str) -> (u16, serde_json::Value) {
    let request = Request::get(format!("https://localhost:{port}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn audit_records(pki: &TestPki) -> Vec<penghubung::audit::Record> {
    let mut all = Vec::new();
    penghubung::audit::walk(&pki.path().join("data/audit"), |r, _| {
        all.push(r.clone());
        Ok(())
    })
    .unwrap();
    all
}

#[tokio::test]
async fn a_suspended_agency_is_refused_on_its_open_connection_across_reload_and_restart() {
    let pki = TestPki::new();
    let (upstream, recorder) = recording_upstream(&pki).await;
    let text = audited_config(&upstream, &pki);
    let served = Served::start(pki.path(), &text, quiet_serve).await;
    let dinkes = Client::new(served.addr(), &pki.ca, Some(&pki.dinkes), Version::HTTP_2);
    let mut open = h2(&dinkes).await;
    assert_eq!(get_on(&mut open, served.port, NIK_PATH).await.0, 200);

    let reason = "Insiden keamanan: kunci aplikasi SIMPUS bocor (tiket 2026-117)";
    let (ok, out, err) = admin_cli(
        served.admin,
        &["suspend", "--agency", "dinkes", "--reason", reason],
    );
    assert!(ok, "{out}{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["scope"], "agency");
    assert_eq!(answer["id"], "dinkes");
    assert!(answer["by"]
        .as_str()
        .unwrap()
        .starts_with("admin 127.0.0.1:"));

    // The open connection's next request is refused, naming what is suspended but not why.
    let seen = recorder.count();
    let (status, doc) = get_on(&mut open, served.port, NIK_PATH).await;
    assert_eq!(status, 403, "{doc}");
    assert_eq!(doc["type"], "urn:penghubung:problem:suspended");
    assert_eq!(doc["detail"], "agency `dinkes` is suspended");
    assert!(!doc.to_string().contains("SIMPUS"));
    assert_eq!(
        get_on(&mut open, served.port, "/dinkes/faskes").await.0,
        403
    );
    assert_eq!(
        recorder.count(),
        seen,
        "a suspended agency reached an upstream"
    );
    // Others are not touched.
    let dukcapil = dinkes.with_identity(Some(&pki.dukcapil));
    assert_eq!(dukcapil.get("/dinkes/faskes").await.unwrap().status, 200);

    // Twice is a conflict; the admin catalog lists it.
    let (ok, _, err) = admin_cli(
        served.admin,
        &["suspend", "--agency", "dinkes", "--reason", "lagi"],
    );
    assert!(!ok && err.contains("already suspended"), "{err}");
    let (status, catalog) = admin_http(served.admin, "GET", "/v1/catalog", "").await;
    assert_eq!(status, 200);
    let catalog: serde_json::Value = serde_json::from_str(&catalog).unwrap();
    assert_eq!(catalog["suspensions"][0]["id"], "dinkes");
    assert_eq!(catalog["suspensions"][0]["reason"], reason);

    // A reload keeps it.
    let (status, body) = admin_http(served.admin, "POST", "/v1/reload", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get_on(&mut open, served.port, NIK_PATH).await.0, 403);

    // The act was recorded before the first refusal it caused.
    let records = audit_records(&pki);
    let act = records
        .iter()
        .position(|r| r.kind == "admin" && r.outcome == "suspend")
        .expect("a suspend record");
    let first_refusal = records
        .iter()
        .position(|r| r.outcome == "suspended")
        .expect("a refused exchange");
    assert!(act < first_refusal);
    let detail = records[act].detail.as_deref().unwrap();
    assert!(
        detail.starts_with("agency=dinkes reason=\"Insiden keamanan"),
        "{detail}"
    );

    // A restart (killed, not stopped) keeps it too.
    drop(open);
    drop(served);
    let served = Served::start(pki.path(), &text, quiet_serve).await;
    let dinkes = Client::new(served.addr(), &pki.ca, Some(&pki.dinkes), Version::HTTP_2);
    let refused = dinkes.get(NIK_PATH).await.unwrap();
    refused.problem(403, "suspended");

    let (ok, out, err) = admin_cli(served.admin, &["resume", "--agency", "dinkes"]);
    assert!(ok, "{out}{err}");
    assert_eq!(dinkes.get(NIK_PATH).await.unwrap().status, 200);
    let (ok, _, err) = admin_cli(served.admin, &["resume", "--agency", "dinkes"]);
    assert!(!ok && err.contains("not suspended"), "{err}");
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pki.path().join("data/suspensions.json")).unwrap())
            .unwrap();
    assert_eq!(kept, serde_json::json!([]));

    // The review report lists the acts.
    let today = time::OffsetDateTime::now_utc().date();
    let day = penghubung::report::parse_date(&today.to_string()).unwrap();
    let report = penghubung::report::build(
        &pki.path().join("data/audit"),
        penghubung::report::Window {
            since: day,
            until: day,
            zone: penghubung::config::TimeZone::parse("UTC").unwrap(),
        },
    )
    .unwrap()
    .markdown();
    let section = report.split("## Suspensions").nth(1).unwrap();
    let section = section.split("## Administrative acts").next().unwrap();
    assert!(
        section.contains("| suspend | agency=dinkes reason="),
        "{report}"
    );
    assert!(
        section.contains("| resume | agency=dinkes by admin"),
        "{report}"
    );
}

#[tokio::test]
async fn an_agreement_or_a_service_can_be_suspended_and_resumed() {
    let pki = TestPki::new();
    let (upstream, _recorder) = recording_upstream(&pki).await;
    let text = config_text(&upstream, "5s", "");
    let running = Running::start(pki, &text).await;
    let pki = &running.pki;
    let gateway = &running.gateway;
    let dinkes = Client::new(running.addr, &pki.ca, Some(&pki.dinkes), Version::HTTP_11);
    let dukcapil = dinkes.with_identity(Some(&pki.dukcapil));

    gateway
        .suspend(Scope::Agreement, "PKS-TEST-1", "audit PKS", "test")
        .await
        .unwrap();
    let doc = dinkes
        .get(NIK_PATH)
        .await
        .unwrap()
        .problem(403, "suspended");
    assert_eq!(doc["detail"], "agreement `PKS-TEST-1` is suspended");
    assert_eq!(dinkes.get("/dinkes/faskes").await.unwrap().status, 200);

    gateway
        .suspend(
            Scope::Service,
            "dinkes-faskes",
            "pemeliharaan darurat",
            "test",
        )
        .await
        .unwrap();
    for caller in [&dinkes, &dukcapil] {
        let doc = caller
            .get("/dinkes/faskes")
            .await
            .unwrap()
            .problem(403, "suspended");
        assert_eq!(doc["detail"], "service `dinkes-faskes` is suspended");
    }
    assert_eq!(gateway.suspensions().len(), 2);

    gateway
        .resume(Scope::Agreement, "PKS-TEST-1", "test")
        .await
        .unwrap();
    gateway
        .resume(Scope::Service, "dinkes-faskes", "test")
        .await
        .unwrap();
    assert_eq!(dinkes.get(NIK_PATH).await.unwrap().status, 200);
    assert_eq!(dukcapil.get("/dinkes/faskes").await.unwrap().status, 200);

    // What cannot be done, and why.
    let unknown = gateway.suspend(Scope::Agency, "dinsos", "x", "test").await;
    assert!(matches!(
        unknown,
        Err(SuspendError::Unknown {
            scope: Scope::Agency,
            ..
        })
    ));
    let no_reason = gateway.suspend(Scope::Agency, "dinkes", "  ", "test").await;
    assert!(matches!(no_reason, Err(SuspendError::NoReason)));
    let not = gateway
        .resume(Scope::Service, "dinkes-faskes", "test")
        .await;
    assert!(matches!(not, Err(SuspendError::NotSuspended { .. })));
}

#[tokio::test]
async fn the_admin_api_refuses_malformed_suspensions() {
    let pki = TestPki::new();
    let (upstream, _recorder) = recording_upstream(&pki).await;
    let text = config_text(&upstream, "5s", "");
    let served = Served::start(pki.path(), &text, quiet_serve).await;
    let cases = [
        (
            "{\"agency\":\"dinkes\",\"service\":\"dinkes-faskes\",\"reason\":\"x\"}",
            400,
            "exactly one",
        ),
        ("{\"reason\":\"x\"}", 400, "exactly one"),
        ("{\"agency\":\"dinkes\"}", 400, "needs a reason"),
        (
            "{\"agency\":\"dinkes\",\"reason\":\"x\",\"extra\":1}",
            400,
            "unknown field",
        ),
        ("not json", 400, "expected"),
        (
            "{\"agency\":\"dinsos\",\"reason\":\"x\"}",
            404,
            "no agency `dinsos`",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, answer) = admin_http(served.admin, "POST", "/v1/suspend", body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer.contains(needle), "{body}: {answer}");
    }
    let (got, _) = admin_http(served.admin, "GET", "/v1/suspend", "").await;
    assert_eq!(got, 405);
    let (got, answer) = admin_http(served.admin, "GET", "/v1/suspensions", "").await;
    assert_eq!(got, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&answer).unwrap(),
        serde_json::json!({"suspensions": []})
    );
    // Nothing was suspended by any of them.
    let dinkes = Client::new(served.addr(), &pki.ca, Some(&pki.dinkes), Version::HTTP_11);
    assert_eq!(dinkes.get("/dinkes/faskes").await.unwrap().status, 200);
    // A suspension file that cannot be read stops the start: it would reopen what was closed.
    drop(served);
    std::fs::create_dir_all(pki.path().join("data")).unwrap();
    std::fs::write(pki.path().join("data/suspensions.json"), "[{\"scope\":").unwrap();
    let err = support::serve_refused(&pki.path().join("penghubung.toml"));
    assert!(err.contains("suspensions.json"), "{err}");
}
