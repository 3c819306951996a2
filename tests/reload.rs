//! Hot reload: an invalid file changes nothing; 20 reloads under a bounded load fail no request
//! and never mix two configurations in one answer; a rotated certificate serves new
//! connections; the admin API reloads and reports errors; every reload is audited.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use penghubung::caller::Caller;
use penghubung::demo::{self, json_response, Seen};
use penghubung::runtime::{Gateway, ReloadError};
use penghubung::tls::IdentityField;
use serde_json::json;
use support::Edit;
use support::{config_text, upstream_tls, write_config, TestPki};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers who it is and the agreement it was told.
async fn named_upstream(pki: &TestPki, name: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler: demo::Handler = Arc::new(move |s: Seen| {
        let agreement = s
            .headers
            .get("spl-agreement")
            .map(|v| v.to_str().unwrap().to_owned());
        json_response(
            StatusCode::OK,
            &json!({"upstream": name, "agreement": agreement}),
        )
    });
    tokio::spawn(demo::serve_sample(listener, upstream_tls(pki), handler));
    format!("https://{addr}")
}

/// Configuration `variant` ("A" or "B"): the terbatas service goes to that upstream, and
/// Dinkes' agreement is named after it.
fn config(upstream: &str, variant: &str) -> String {
    config_text(upstream, "5s", "\n[audit]\n")
        .edit("PKS-TEST-1", &format!("PKS-{variant}"))
        .edit(
            "purpose = \"Pengujian gateway\"",
            "purpose = \"Pengujian gateway\"\nrate = \"1000000/s\"",
        )
}

struct Harness {
    gateway: Arc<Gateway>,
    file: std::path::PathBuf,
    pki: TestPki,
    a: String,
    b: String,
}

impl Harness {
    async fn new() -> Harness {
        let pki = TestPki::new();
        let a = named_upstream(&pki, "A").await;
        let b = named_upstream(&pki, "B").await;
        let file = write_config(pki.path(), &config(&a, "A"));
        let snapshot = penghubung::config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        let gateway = Arc::new(Gateway::new(Arc::new(snapshot)).unwrap());
        Harness {
            gateway,
            file,
            pki,
            a,
            b,
        }
    }

    fn caller(&self) -> Caller {
        Caller::resolve(
            &self.gateway.snapshot(),
            "127.0.0.1:1".parse().unwrap(),
            IdentityField::SubjectCn.extract(&self.pki.dinkes.cert),
        )
    }

    /// (status, the RateLimit-Policy's agreement, the upstream's JSON).
    async fn get(&self, caller: &Caller) -> (u16, String, serde_json::Value) {
        let request = Request::get("/dukcapil/penduduk/penduduk/1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self.gateway.handle(caller, request).await;
        let status = response.status().as_u16();
        let policy = response
            .headers()
            .get("ratelimit-policy")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let doc = serde_json::from_slice(&body).unwrap_or(json!(String::from_utf8_lossy(&body)));
        (status, policy, doc)
    }
}

#[tokio::test]
async fn an_invalid_file_changes_nothing() {
    let h = Harness::new().await;
    let caller = h.caller();
    assert_eq!(h.get(&caller).await.0, 200);
    std::fs::write(
        &h.file,
        config(&h.b, "B").edit_once("\nlisten = ", "\nlisten_port = 1\nlisten = "),
    )
    .unwrap();
    match h.gateway.reload("test").await {
        Err(ReloadError::Invalid(errors)) => {
            assert!(
                errors
                    .to_string()
                    .contains("gateway.listen_port: unknown key"),
                "{errors}"
            )
        }
        other => panic!("{other:?}"),
    }
    let (status, policy, doc) = h.get(&caller).await;
    assert_eq!((status, doc["upstream"].as_str()), (200, Some("A")));
    assert!(policy.contains("PKS-A"));
    assert!(h
        .gateway
        .metrics_text()
        .contains("penghubung_config_reload_failures_total 1"));
}

#[tokio::test]
async fn twenty_reloads_under_load_fail_nothing_and_mix_nothing() {
    let h = Arc::new(Harness::new().await);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = Arc::new(Mutex::new((0usize, 0usize)));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (h, done, seen) = (h.clone(), done.clone(), seen.clone());
        load.push(tokio::spawn(async move {
            let caller = h.caller();
            // Bounded: at most 3,000 requests per loop.
            for _ in 0..3000 {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let (status, policy, doc) = h.get(&caller).await;
                assert_eq!(status, 200, "a request failed during reloads: {doc}");
                let upstream = doc["upstream"].as_str().unwrap().to_owned();
                let agreement = doc["agreement"].as_str().unwrap().to_owned();
                // One configuration per answer: the gateway's policy header, the agreement the
                // upstream was told, and the upstream itself all agree.
                assert_eq!(agreement, format!("PKS-{upstream}"));
                assert!(
                    policy.starts_with(&format!("\"PKS-{upstream}\"")),
                    "{policy} vs {upstream}"
                );
                let mut s = seen.lock().unwrap();
                if upstream == "A" {
                    s.0 += 1;
                } else {
                    s.1 += 1;
                }
            }
        }));
    }
    for i in 0..20 {
        let (upstream, variant) = if i % 2 == 0 { (&h.b, "B") } else { (&h.a, "A") };
        std::fs::write(&h.file, config(upstream, variant)).unwrap();
        let reloaded = h.gateway.reload("test").await.unwrap();
        assert_eq!(reloaded.generation, i + 1);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let (a, b) = *seen.lock().unwrap();
    assert!(a > 0 && b > 0, "answers from A: {a}, from B: {b}");

    // Each reload is an audited act with the file's digest.
    let mut reloads = 0;
    penghubung::audit::walk(&h.pki.path().join("data/audit"), |r, _| {
        if r.outcome == "reload" {
            assert!(r.detail.as_deref().unwrap().contains("sha256:"));
            reloads += 1;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(reloads, 20);
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections() {
    let h = Harness::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(penghubung::server::serve(
        listener,
        h.gateway.clone(),
        std::future::pending(),
    ));
    let first = server_certificate(&h.pki, addr).await;
    let rotated = h
        .pki
        .ca
        .issue_server("localhost", &["localhost", "127.0.0.1"])
        .unwrap();
    std::fs::write(h.pki.path().join("gateway.crt"), &rotated.cert_pem).unwrap();
    std::fs::write(h.pki.path().join("gateway.key"), &rotated.key_pem).unwrap();
    h.gateway.reload("test").await.unwrap();
    let second = server_certificate(&h.pki, addr).await;
    assert_ne!(first, second);
    assert_eq!(second, rotated.cert.as_ref());
    // And the rotated listener still answers.
    let client = support::Client::new(addr, &h.pki.ca, Some(&h.pki.dinkes), http::Version::HTTP_11);
    assert_eq!(client.get("/dinkes/faskes").await.unwrap().status, 200);
}

/// The certificate a new mTLS connection to `addr` is shown.
async fn server_certificate(pki: &TestPki, addr: std::net::SocketAddr) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.cert()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(vec![pki.dinkes.cert.clone()], pki.dinkes.key.clone_key())
    .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

#[tokio::test]
async fn a_reload_neither_refills_nor_spends_a_quota() {
    let h = Harness::new().await;
    let limited =
        |upstream: &str| config(upstream, "A").edit("rate = \"1000000/s\"", "rate = \"3/h\"");
    std::fs::write(&h.file, limited(&h.a)).unwrap();
    h.gateway.reload("test").await.unwrap();
    let caller = h.caller();
    for _ in 0..3 {
        assert_eq!(h.get(&caller).await.0, 200);
    }
    assert_eq!(h.get(&caller).await.0, 429);
    // The same agreement and rate after a reload (another upstream): still spent.
    std::fs::write(&h.file, limited(&h.b)).unwrap();
    h.gateway.reload("test").await.unwrap();
    assert_eq!(h.get(&caller).await.0, 429, "the reload refilled the quota");
    // A changed rate is a new quota.
    std::fs::write(
        &h.file,
        limited(&h.b).edit("rate = \"3/h\"", "rate = \"5/h\""),
    )
    .unwrap();
    h.gateway.reload("test").await.unwrap();
    assert_eq!(h.get(&caller).await.0, 200);
}
