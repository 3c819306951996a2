//! The gateway core over real sockets: mTLS at the handshake, agency identity, routing and its
//! refusals, forwarding and header hygiene, upstream failures, body limits, shutdown.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
use support::{
    closed_port, config_text, held_upstream, impostor_upstream, recording_upstream,
    silent_upstream, Client, Running, TestPki,
};

async fn gateway_with_recorder() -> (Running, support::Recorder) {
    let pki = TestPki::new();
    let (upstream, recorder) = recording_upstream(&pki).await;
    let gw = Running::start(pki, &config_text(&upstream, "5s", "")).await;
    (gw, recorder)
}

fn client(gw: &Running, version: Version) -> Client {
    Client::new(gw.addr, &gw.pki.ca, Some(&gw.pki.dinkes), version)
}

#[tokio::test]
async fn forwards_over_http1_and_http2() {
    let (gw, recorder) = gateway_with_recorder().await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let answer = client(&gw, version)
            .get("/dukcapil/penduduk/penduduk/7208014101900001?x=1")
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.version, version);
        let echo = answer.json();
        assert_eq!(echo["method"], "GET");
        // The prefix is stripped; the query is kept.
        assert_eq!(echo["path"], "/penduduk/7208014101900001?x=1");
        let id = answer.headers["spl-exchange-id"].to_str().unwrap();
        assert_eq!(id.len(), 36);
        let seen = recorder.requests().pop().unwrap();
        assert_eq!(seen.headers["spl-consumer"], "dinkes");
        assert_eq!(seen.headers["spl-exchange-id"], id);
        assert!(seen.headers["forwarded"]
            .to_str()
            .unwrap()
            .starts_with("for=\"127.0.0.1:"));
        assert!(seen.headers["traceparent"]
            .to_str()
            .unwrap()
            .starts_with("00-"));
    }
    assert_eq!(recorder.count(), 2);
}

/// The TLS alert the gateway sends a client during or right after the handshake: with TLS 1.3
/// the client's certificate is judged after the client has finished, so the alert is read on
/// the first read. `None`: no alert, the connection works (an HTTP answer came back).
async fn handshake_alert(c: &Client) -> Option<rustls::AlertDescription> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let alert_of =
        |e: &std::io::Error| match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::AlertReceived(alert)) => Some(*alert),
            other => panic!("not a TLS alert: {e} ({other:?})"),
        };
    let mut tls = match c.connect(b"http/1.1").await {
        Ok(tls) => tls,
        Err(e) => {
            let io = e.downcast::<std::io::Error>().expect("an I/O error");
            return alert_of(&io);
        }
    };
    let _ = tls
        .write_all(b"GET /dinkes/faskes HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    match tls.read(&mut buf).await {
        Ok(n) => {
            assert!(buf[..n].starts_with(b"HTTP/1.1 "), "{:?}", &buf[..n]);
            None
        }
        Err(e) => alert_of(&e),
    }
}

#[tokio::test]
async fn no_client_certificate_fails_the_handshake() {
    let (gw, recorder) = gateway_with_recorder().await;
    // Positive control, same listener: a certificate gets an answer.
    assert_eq!(handshake_alert(&client(&gw, Version::HTTP_11)).await, None);
    let without = client(&gw, Version::HTTP_11).with_identity(None);
    assert_eq!(
        handshake_alert(&without).await,
        Some(rustls::AlertDescription::CertificateRequired)
    );
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let c = client(&gw, version).with_identity(None);
        let result = c.get("/dinkes/faskes").await;
        assert!(
            result.is_err(),
            "got an HTTP answer without a certificate: {result:?}"
        );
    }
    assert_eq!(recorder.count(), 1);
}

#[tokio::test]
async fn certificate_from_a_foreign_ca_fails_the_handshake() {
    let (gw, recorder) = gateway_with_recorder().await;
    assert_eq!(handshake_alert(&client(&gw, Version::HTTP_11)).await, None);
    let c = client(&gw, Version::HTTP_11).with_identity(Some(&gw.pki.foreign_ca_client));
    assert_eq!(
        handshake_alert(&c).await,
        Some(rustls::AlertDescription::UnknownCA)
    );
    assert!(c.get("/dinkes/faskes").await.is_err());
    assert_eq!(recorder.count(), 1);
}

#[tokio::test]
async fn revoked_certificate_fails_the_handshake() {
    let (gw, recorder) = gateway_with_recorder().await;
    let c = client(&gw, Version::HTTP_11).with_identity(Some(&gw.pki.revoked));
    assert_eq!(
        handshake_alert(&c).await,
        Some(rustls::AlertDescription::CertificateRevoked)
    );
    assert!(c.get("/dinkes/faskes").await.is_err());
    // The same name from a certificate that is not revoked works.
    assert_eq!(
        client(&gw, Version::HTTP_11)
            .get("/dinkes/faskes")
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(recorder.count(), 1);
}

#[tokio::test]
async fn certificate_naming_no_agency_is_refused_with_403() {
    let (gw, recorder) = gateway_with_recorder().await;
    let c = client(&gw, Version::HTTP_11).with_identity(Some(&gw.pki.stranger));
    let answer = c.get("/dinkes/faskes").await.unwrap();
    answer.problem(403, "unknown-agency");
    assert_eq!(recorder.count(), 0);
}

#[tokio::test]
async fn unknown_prefix_undeclared_operation_and_wrong_method() {
    let (gw, recorder) = gateway_with_recorder().await;
    let c = client(&gw, Version::HTTP_11);
    c.get("/pajak/objek/1")
        .await
        .unwrap()
        .problem(404, "no-route");
    c.get("/dukcapilx/penduduk/penduduk/1")
        .await
        .unwrap()
        .problem(404, "no-route");
    c.get("/dukcapil/penduduk/admin")
        .await
        .unwrap()
        .problem(404, "no-operation");
    c.get("/dukcapil/penduduk/penduduk/1/keluarga")
        .await
        .unwrap()
        .problem(404, "no-operation");
    c.get("/dukcapil/penduduk/penduduk")
        .await
        .unwrap()
        .problem(404, "no-operation");
    let answer = c.get("/dukcapil/penduduk/verifikasi").await.unwrap();
    answer.problem(405, "method-not-allowed");
    assert_eq!(answer.headers["allow"], "POST");
    let delete = Request::delete("/dukcapil/penduduk/penduduk/1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = c.send(delete).await.unwrap();
    answer.problem(405, "method-not-allowed");
    assert_eq!(answer.headers["allow"], "GET, HEAD");
    assert_eq!(recorder.count(), 0);
}

#[tokio::test]
async fn traversal_and_encoding_tricks_reach_nothing_undeclared() {
    let (gw, recorder) = gateway_with_recorder().await;
    let c = client(&gw, Version::HTTP_11);
    // Refused outright: spellings that servers disagree on.
    for (target, slug) in [
        (
            "/dukcapil/penduduk/penduduk/1%2f..%2f..%2fadmin",
            "malformed-path",
        ),
        ("/dukcapil/penduduk/penduduk%2F1", "malformed-path"),
        (
            "/dukcapil/penduduk/penduduk/1%5c..%5cadmin",
            "malformed-path",
        ),
        ("/dukcapil/penduduk/penduduk/%00", "malformed-path"),
        ("/dukcapil/penduduk/penduduk/%zz", "malformed-path"),
        ("/../../etc/passwd", "malformed-path"),
        ("/%2e%2e/dukcapil/penduduk/penduduk/1", "malformed-path"),
    ] {
        c.get(target).await.unwrap().problem(400, slug);
    }
    // Normalised first, then routed: a dot segment can leave a service only to land on a path
    // that must itself be declared, and it is checked as that path.
    for target in [
        "/dinkes/../dukcapil/penduduk/admin",
        "/dukcapil/penduduk/penduduk/../../../dinkes/admin",
        "/dukcapil/%2e%2e/dukcapil/penduduk/admin",
        "/dukcapil/penduduk/penduduk/%2e%2e/verifikasi",
        "/dukcapil/penduduk/penduduk/1/%2e%2e/%2e%2e/admin",
    ] {
        let answer = c.get(target).await.unwrap();
        assert!(
            answer.status == 404 || answer.status == 405,
            "{target} → {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    assert_eq!(
        recorder.count(),
        0,
        "nothing undeclared may reach the upstream"
    );

    // Equivalent spellings of a declared operation reach exactly that operation, canonically.
    for target in [
        "/dukcapil//penduduk///penduduk/7208",
        "/dukcapil/penduduk/./penduduk/7208",
        "/dinkes/../dukcapil/penduduk/penduduk/7208",
        "/dukcapil/%70enduduk/penduduk/%37208",
    ] {
        let answer = c.get(target).await.unwrap();
        assert_eq!(answer.status, 200, "{target}");
        assert_eq!(answer.json()["path"], "/penduduk/7208", "{target}");
    }
    for seen in recorder.requests() {
        assert_eq!(seen.path_and_query, "/penduduk/7208");
    }
}

#[tokio::test]
async fn client_sent_spl_headers_never_reach_the_upstream() {
    let (gw, recorder) = gateway_with_recorder().await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let request = Request::get("/dukcapil/penduduk/penduduk/1")
            .header("SPL-Consumer", "dukcapil")
            .header("spl-agreement", "PKS-TEST-1")
            .header("SPL-Purpose", "forged")
            .header("spl-exchange-id", "forged")
            .header("forwarded", "for=10.0.0.1")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-host", "evil.example")
            .header("x-forwarded-proto", "http")
            .header("x-real-ip", "10.9.9.9")
            .header("true-client-ip", "10.9.9.9")
            .header("x-client-ip", "10.9.9.9")
            .header("client-ip", "10.9.9.9")
            .header("x-original-forwarded-for", "10.9.9.9")
            .header("x-cluster-client-ip", "10.9.9.9")
            .header("cf-connecting-ip", "10.9.9.9")
            .header("fastly-client-ip", "10.9.9.9")
            .header("x-originating-ip", "10.9.9.9")
            .header("x-application", "kept")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = client(&gw, version).send(request).await.unwrap();
        assert_eq!(answer.status, 200);
        let seen = recorder.requests().pop().unwrap();
        assert_eq!(
            seen.headers
                .get_all("spl-consumer")
                .iter()
                .collect::<Vec<_>>(),
            ["dinkes"]
        );
        // The agreement the caller chose is confirmed by the gateway, with its own purpose.
        assert_eq!(
            seen.headers
                .get_all("spl-agreement")
                .iter()
                .collect::<Vec<_>>(),
            ["PKS-TEST-1"]
        );
        assert_eq!(
            seen.headers
                .get_all("spl-purpose")
                .iter()
                .collect::<Vec<_>>(),
            ["Pengujian gateway"]
        );
        assert_ne!(seen.headers["spl-exchange-id"], "forged");
        assert_eq!(seen.headers.get_all("forwarded").iter().count(), 1);
        assert!(!seen.headers["forwarded"]
            .to_str()
            .unwrap()
            .contains("10.0.0.1"));
        // No caller-chosen client address reaches the owner, under any of the names proxies use.
        let chosen: Vec<_> = seen
            .headers
            .iter()
            .filter(|(name, value)| {
                let value = value.to_str().unwrap_or("");
                name.as_str().starts_with("x-forwarded-")
                    || value.contains("10.9.9.9")
                    || value.contains("10.0.0.1")
                    || value.contains("evil.example")
            })
            .collect();
        assert!(chosen.is_empty(), "reached the upstream: {chosen:?}");
        for name in penghubung::upstream::CLIENT_ADDRESS_HEADERS {
            assert!(seen.headers.get(name).is_none(), "{name}");
        }
        assert_eq!(seen.headers["x-application"], "kept");
    }
    // A forged agreement id is refused, never forwarded.
    let before = recorder.count();
    let forged = Request::get("/dukcapil/penduduk/penduduk/1")
        .header("spl-agreement", "PKS-FORGED")
        .body(Full::new(Bytes::new()))
        .unwrap();
    client(&gw, Version::HTTP_11)
        .send(forged)
        .await
        .unwrap()
        .problem(403, "no-agreement");
    assert_eq!(recorder.count(), before);
}

#[tokio::test]
async fn body_over_the_limit_never_reaches_the_upstream() {
    let (gw, recorder) = gateway_with_recorder().await;
    let c = client(&gw, Version::HTTP_11);
    // Declared length over the 1 KiB limit.
    let big = Request::post("/dukcapil/penduduk/verifikasi")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(vec![b'x'; 1025])))
        .unwrap();
    c.send(big).await.unwrap().problem(413, "body-too-large");
    // Over HTTP/2 without a content-length the limit still holds while streaming.
    let c2 = client(&gw, Version::HTTP_2);
    let big = Request::post("/dukcapil/penduduk/verifikasi")
        .body(Full::new(Bytes::from(vec![b'x'; 4096])))
        .unwrap();
    c2.send(big).await.unwrap().problem(413, "body-too-large");
    assert_eq!(recorder.count(), 0);
    // At the limit it is forwarded whole.
    let ok = Request::post("/dukcapil/penduduk/verifikasi")
        .body(Full::new(Bytes::from(vec![b'x'; 1024])))
        .unwrap();
    let answer = c.send(ok).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["body_len"], 1024);
    assert_eq!(recorder.count(), 1);
}

#[tokio::test]
async fn upstream_down_is_503() {
    let pki = TestPki::new();
    let down = closed_port();
    let gw = Running::start(pki, &config_text(&down.url, "5s", "")).await;
    let answer = client(&gw, Version::HTTP_11)
        .get("/dinkes/faskes")
        .await
        .unwrap();
    let doc = answer.problem(503, "upstream-unavailable");
    // The caller learns which service failed, not where its upstream lives.
    let detail = doc["detail"].as_str().unwrap();
    assert!(detail.contains("dinkes-faskes"));
    assert!(!detail.contains("127.0.0.1"));
}

#[tokio::test]
async fn upstream_with_a_certificate_from_another_ca_gets_nothing() {
    let pki = TestPki::new();
    let (impostor, recorder) = impostor_upstream(&pki).await;
    let gw = Running::start(pki, &config_text(&impostor, "5s", "")).await;
    let answer = client(&gw, Version::HTTP_11)
        .get("/dukcapil/penduduk/penduduk/1")
        .await
        .unwrap();
    answer.problem(502, "upstream-tls");
    assert_eq!(
        recorder.count(),
        0,
        "the request must not be sent to an unverified upstream"
    );
}

#[tokio::test(start_paused = true)]
async fn upstream_slower_than_timeout_is_504() {
    let pki = TestPki::new();
    let silent = silent_upstream(&pki).await;
    let gw = Running::start(pki, &config_text(&silent, "2s", "")).await;
    let started = tokio::time::Instant::now();
    let answer = client(&gw, Version::HTTP_11)
        .get("/dukcapil/penduduk/penduduk/1")
        .await
        .unwrap();
    answer.problem(504, "upstream-timeout");
    // Paused time: the 2 s timeout elapsed on the tokio clock, not the wall clock.
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_then_returns() {
    let pki = TestPki::new();
    let (held, received, release) = held_upstream(&pki).await;
    let mut gw = Running::start(pki, &config_text(&held, "30s", "")).await;
    let c = client(&gw, Version::HTTP_11);
    let in_flight = tokio::spawn(async move { c.get("/dukcapil/penduduk/penduduk/1").await });
    received.notified().await;

    // SIGTERM while the request is at the upstream: the listener closes at once...
    gw.shutdown();
    let mut refused = false;
    for _ in 0..1000 {
        if tokio::net::TcpStream::connect(gw.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "the listener must stop accepting on shutdown");
    // ...but serve waits for the in-flight request.
    assert!(
        !gw.task.is_finished(),
        "serve returned with a request in flight"
    );
    assert!(!in_flight.is_finished());

    release.notify_one();
    let answer = in_flight.await.unwrap().unwrap();
    assert_eq!(answer.status, 200, "the in-flight request must finish");
    assert_eq!(&answer.body[..], b"ok");
    let result = tokio::time::timeout(Duration::from_secs(10), &mut gw.task).await;
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "serve did not return cleanly: {result:?}"
    );
}
