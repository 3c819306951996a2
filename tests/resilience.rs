//! Several upstreams per service: a dead one is retried around (idempotent methods only),
//! left out of the rotation after repeated failures, and taken back once it has been out for
//! `EJECT_FOR` (paused time); one that dies while serving is failed over without a failed
//! request and taken back when it returns (real time).

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use penghubung::caller::Caller;
use penghubung::config::load_str;
use penghubung::runtime::Gateway;
use penghubung::tls::IdentityField;
use penghubung::upstream::EJECT_FOR;
use support::Edit;
use support::{closed_port, config_text, recording_upstream, Recorder, TestPki};
use tokio::net::TcpListener;

struct Harness {
    gateway: Gateway,
    caller: Caller,
    live: Recorder,
    pki: TestPki,
    dead_port: Option<support::ClosedPort>,
}

/// Both services with two upstreams: a dead one first, then a live one.
async fn harness() -> Harness {
    let pki = TestPki::new();
    let (live_url, live) = recording_upstream(&pki).await;
    let dead_port = closed_port();
    let dead = dead_port.url.clone();
    let text = config_text(&live_url, "5s", "").edit(
        &format!("upstreams = [\"{live_url}\"]"),
        &format!("upstreams = [\"{dead}\", \"{live_url}\"]"),
    );
    assert!(text.contains(&dead));
    let snapshot = load_str(&text, &pki.path().join("r.toml"), pki.path()).unwrap();
    let gateway = Gateway::new(Arc::new(snapshot)).unwrap();
    let caller = Caller::resolve(
        &gateway.snapshot(),
        "127.0.0.1:1".parse().unwrap(),
        IdentityField::SubjectCn.extract(&pki.dinkes.cert),
    );
    Harness {
        gateway,
        caller,
        live,
        pki,
        dead_port: Some(dead_port),
    }
}

impl Harness {
    async fn call(&self, method: Method) -> u16 {
        let target = if method == Method::POST {
            "/dukcapil/penduduk/verifikasi"
        } else {
            "/dinkes/faskes"
        };
        let request = Request::builder()
            .method(method)
            .uri(target)
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.gateway
            .handle(&self.caller, request)
            .await
            .status()
            .as_u16()
    }
}

#[tokio::test]
async fn a_dead_upstream_is_retried_around_for_idempotent_calls_only() {
    let h = harness().await;
    // A fresh pool tries the first upstream first: the dead one. POST is not retried.
    assert_eq!(h.call(Method::POST).await, 503, "a POST was retried");
    assert_eq!(h.live.count(), 0);
    assert_eq!(
        h.call(Method::GET).await,
        200,
        "a GET was not retried on the live upstream"
    );
    assert_eq!(h.live.count(), 1);
    for _ in 0..20 {
        assert_eq!(h.call(Method::GET).await, 200);
    }
    assert_eq!(h.live.count(), 21);
}

#[tokio::test(start_paused = true)]
async fn a_failing_upstream_is_left_out_then_taken_back() {
    let mut h = harness().await;
    for _ in 0..10 {
        assert_eq!(h.call(Method::GET).await, 200);
    }
    // The dead upstream came back on its port.
    let listener = h.dead_port.take().unwrap().listen();
    let revived = support::Recorder::default();
    let seen = revived.clone();
    let handler: penghubung::demo::Handler = Arc::new(move |s: penghubung::demo::Seen| {
        seen.push(s);
        penghubung::demo::json_response(http::StatusCode::OK, &serde_json::json!({"revived": true}))
    });
    tokio::spawn(penghubung::demo::serve_sample(
        listener,
        support::upstream_tls(&h.pki),
        handler,
    ));
    // Still ejected: nothing goes there yet.
    for _ in 0..4 {
        assert_eq!(h.call(Method::GET).await, 200);
    }
    assert_eq!(revived.count(), 0, "an ejected upstream got requests");
    tokio::time::advance(EJECT_FOR + Duration::from_secs(1)).await;
    for _ in 0..10 {
        assert_eq!(h.call(Method::GET).await, 200);
    }
    assert!(revived.count() > 0, "the upstream was not taken back");
}

#[tokio::test]
async fn over_max_in_flight_requests_are_shed_with_retry_after() {
    let pki = TestPki::new();
    let (held, received, release) = support::held_upstream(&pki).await;
    let text = config_text(&held, "5s", "")
        .edit_once("timeout = \"5s\"", "timeout = \"5s\"\nmax_in_flight = 1");
    let snapshot = load_str(&text, &pki.path().join("s.toml"), pki.path()).unwrap();
    let gateway = Arc::new(Gateway::new(Arc::new(snapshot)).unwrap());
    let caller = Caller::resolve(
        &gateway.snapshot(),
        "127.0.0.1:1".parse().unwrap(),
        IdentityField::SubjectCn.extract(&pki.dinkes.cert),
    );
    let get = |gateway: Arc<Gateway>, caller: Caller| async move {
        let request = Request::get("/dukcapil/penduduk/penduduk/1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        gateway.handle(&caller, request).await
    };
    let first = tokio::spawn(get(gateway.clone(), caller.clone()));
    tokio::time::timeout(Duration::from_secs(5), received.notified())
        .await
        .expect("the first request never reached the upstream");
    let shed = get(gateway.clone(), caller.clone()).await;
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    let body = http_body_util::BodyExt::collect(shed.into_body())
        .await
        .unwrap()
        .to_bytes();
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["type"], "urn:penghubung:problem:overloaded");
    release.notify_one();
    assert_eq!(first.await.unwrap().status(), 200);
    // The permit is back: the next request is not shed (it reaches the held upstream, which
    // does not answer it; a shed one would be answered at once).
    let again =
        tokio::time::timeout(Duration::from_millis(500), get(gateway.clone(), caller)).await;
    assert!(
        again.as_ref().map_or(true, |r| r.status() != 503),
        "the permit was not given back"
    );
}

/// A TLS connection to the gateway as Dinkes, handshake done.
async fn connect(
    pki: &TestPki,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
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
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let text = config_text(&upstream, "5s", "").edit_once(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nheader_read_timeout = \"1s\"\nmax_connections = 2",
    );
    let gateway = support::Running::start(pki, &text).await;
    let pki = &gateway.pki;

    // A client that sends half a request head and waits is cut off after the timeout.
    let mut slow = connect(pki, gateway.addr).await.unwrap();
    slow.write_all(b"GET /dinkes/faskes HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a slow-header client was kept for {:?}",
        started.elapsed()
    );

    // Two connections open: a third waits for one to close.
    let one = connect(pki, gateway.addr).await.unwrap();
    let _two = connect(pki, gateway.addr).await.unwrap();
    let third = connect(pki, gateway.addr);
    tokio::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_millis(700), &mut third)
            .await
            .is_err(),
        "a third connection was served past max_connections"
    );
    drop(one);
    let third = tokio::time::timeout(Duration::from_secs(5), &mut third)
        .await
        .expect("the third connection was never served once one closed");
    assert!(third.is_ok());
}

#[tokio::test]
async fn oversized_request_headers_are_refused_on_both_protocols() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::new();
    let (upstream, seen) = recording_upstream(&pki).await;
    let text = config_text(&upstream, "5s", "").edit_once(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nmax_header_size = \"8KiB\"",
    );
    let gateway = support::Running::start(pki, &text).await;
    let pki = &gateway.pki;
    let big = "x".repeat(12 * 1024);
    let fits = "x".repeat(4 * 1024);

    // HTTP/1.1: a head over the limit is answered 431 and never forwarded.
    for (value, expected) in [(&big, "HTTP/1.1 431"), (&fits, "HTTP/1.1 200")] {
        let mut tls = connect(pki, gateway.addr).await.unwrap();
        let head = format!(
            "GET /dinkes/faskes HTTP/1.1\r\nHost: localhost\r\nX-Padding: {value}\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer))
            .await
            .expect("no answer")
            .ok();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with(expected), "{expected}: {answer:.80}");
    }
    assert_eq!(seen.count(), 1, "only the request that fit was forwarded");

    // HTTP/2: a header list over the limit is answered 431 by h2, before the pipeline.
    let client = support::Client::new(
        gateway.addr,
        &pki.ca,
        Some(&pki.dinkes),
        http::Version::HTTP_2,
    );
    let request = |value: &str| {
        Request::get("/dinkes/faskes")
            .header("x-padding", value)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert_eq!(client.send(request(&big)).await.unwrap().status, 431);
    assert_eq!(client.send(request(&fits)).await.unwrap().status, 200);
    assert_eq!(seen.count(), 2, "only the request that fit was forwarded");
}

/// An mTLS upstream whose `/healthz` answers `health` (changeable) and which records every
/// request, health checks included.
async fn checked_upstream(pki: &TestPki) -> (String, Recorder, Arc<std::sync::atomic::AtomicU16>) {
    use penghubung::demo::{self, json_response, Seen};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorder = Recorder::default();
    let health = Arc::new(std::sync::atomic::AtomicU16::new(200));
    let (seen, status) = (recorder.clone(), health.clone());
    let handler: demo::Handler = Arc::new(move |s: Seen| {
        let code = if s.path_and_query == "/healthz" {
            status.load(std::sync::atomic::Ordering::Relaxed)
        } else {
            200
        };
        seen.push(s);
        json_response(
            http::StatusCode::from_u16(code).unwrap(),
            &serde_json::json!({}),
        )
    });
    tokio::spawn(demo::serve_sample(
        listener,
        support::upstream_tls(pki),
        handler,
    ));
    (format!("https://{addr}"), recorder, health)
}

fn forwarded(recorder: &Recorder) -> usize {
    recorder
        .requests()
        .iter()
        .filter(|s| s.path_and_query != "/healthz")
        .count()
}

#[tokio::test]
async fn failing_health_checks_take_an_upstream_out_until_one_passes() {
    use penghubung::upstream::UpstreamHealth;
    let pki = TestPki::new();
    let (sick_url, sick, sick_health) = checked_upstream(&pki).await;
    let (well_url, well, _) = checked_upstream(&pki).await;
    sick_health.store(503, std::sync::atomic::Ordering::Relaxed);
    let text = config_text(&well_url, "5s", "")
        .edit_once(
            &format!("upstreams = [\"{well_url}\"]"),
            &format!("upstreams = [\"{sick_url}\", \"{well_url}\"]\nhealth_path = \"/healthz\"\nhealth_interval = \"1s\""));
    let snapshot = load_str(&text, &pki.path().join("h.toml"), pki.path()).unwrap();
    let gateway = Arc::new(Gateway::new(Arc::new(snapshot)).unwrap());
    let checks = tokio::spawn(gateway.clone().check_upstreams());
    let caller = Caller::resolve(
        &gateway.snapshot(),
        "127.0.0.1:1".parse().unwrap(),
        IdentityField::SubjectCn.extract(&pki.dinkes.cert),
    );
    let states = |gateway: &Gateway| -> Vec<UpstreamHealth> {
        gateway.upstream_health()[0]
            .upstreams
            .iter()
            .map(|(_, health, _)| *health)
            .collect()
    };
    let wait_for = |want: Vec<UpstreamHealth>| {
        let gateway = gateway.clone();
        async move {
            for _ in 0..50 {
                if states(&gateway) == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("upstreams never became {want:?}: {:?}", states(&gateway));
        }
    };

    // Two failed checks (at 0 s and 1 s) take the sick upstream out; the well one stays.
    wait_for(vec![UpstreamHealth::Down, UpstreamHealth::Up]).await;
    let check = &sick.requests()[0];
    assert_eq!(check.method, Method::GET);
    assert_eq!(
        check.headers["user-agent"].to_str().unwrap(),
        "penghubung-health-check"
    );
    let before = forwarded(&sick);
    let get = || async {
        let request = Request::get("/dukcapil/penduduk/penduduk/7201")
            .body(Full::new(Bytes::new()))
            .unwrap();
        gateway.handle(&caller, request).await.status().as_u16()
    };
    for _ in 0..10 {
        assert_eq!(get().await, 200);
    }
    assert_eq!(
        forwarded(&sick),
        before,
        "a down upstream was sent requests"
    );
    assert!(forwarded(&well) >= 10);
    assert!(gateway.metrics_text().contains(&format!(
        "penghubung_upstream_up{{service=\"dukcapil-penduduk\",upstream=\"{sick_url}/\"}} 0"
    )));

    // One passed check brings it back into the rotation.
    sick_health.store(200, std::sync::atomic::Ordering::Relaxed);
    wait_for(vec![UpstreamHealth::Up, UpstreamHealth::Up]).await;
    for _ in 0..10 {
        assert_eq!(get().await, 200);
    }
    assert!(
        forwarded(&sick) > before,
        "a recovered upstream got no requests"
    );
    checks.abort();
}

/// An upstream on a tokio runtime of its own, so that stopping it closes its listener and every
/// open connection at once, as a process that dies does.
struct Mortal {
    runtime: Option<tokio::runtime::Runtime>,
    recorder: Recorder,
}

impl Mortal {
    /// Serves on `listener`, handed over bound (never a port assumed to stay free).
    fn start(pki: &TestPki, listener: std::net::TcpListener) -> Mortal {
        use penghubung::demo::{self, json_response, Seen};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let recorder = Recorder::default();
        let seen = recorder.clone();
        let handler: demo::Handler = Arc::new(move |s: Seen| {
            seen.push(s);
            json_response(http::StatusCode::OK, &serde_json::json!({}))
        });
        let tls = support::upstream_tls(pki);
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            demo::serve_sample(listener, tls, handler).await;
        });
        Mortal {
            runtime: Some(runtime),
            recorder,
        }
    }

    /// Stops it and waits until its sockets are closed (blocking: call off the runtime).
    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Mortal {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[tokio::test]
async fn when_one_of_two_upstreams_dies_the_other_serves_until_it_returns() {
    let pki = TestPki::new();
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (a_listener, b_listener) = (bind(), bind());
    let (a_addr, b_addr) = (
        a_listener.local_addr().unwrap(),
        b_listener.local_addr().unwrap(),
    );
    let (a, b) = (
        Mortal::start(&pki, a_listener),
        Mortal::start(&pki, b_listener),
    );
    let (a_url, b_url) = (format!("https://{a_addr}"), format!("https://{b_addr}"));
    let text = config_text(&a_url, "5s", "").edit(
        &format!("upstreams = [\"{a_url}\"]"),
        &format!("upstreams = [\"{a_url}\", \"{b_url}\"]"),
    );
    let gateway = support::Running::start(pki, &text).await;
    let client = support::Client::new(
        gateway.addr,
        &gateway.pki.ca,
        Some(&gateway.pki.dinkes),
        http::Version::HTTP_11,
    );
    let get = || async { client.get("/dinkes/faskes").await.unwrap().status.as_u16() };
    for _ in 0..20 {
        assert_eq!(get().await, 200);
    }
    assert!(
        a.recorder.count() > 0 && b.recorder.count() > 0,
        "both serve"
    );

    // A dies with the gateway's pooled connections to it open: no caller notices.
    let a = tokio::task::spawn_blocking(move || {
        let mut a = a;
        a.kill();
        a
    })
    .await
    .unwrap();
    let (a_before, b_before) = (a.recorder.count(), b.recorder.count());
    for i in 0..30 {
        assert_eq!(get().await, 200, "request {i} after the upstream died");
    }
    assert_eq!(a.recorder.count(), a_before);
    assert_eq!(b.recorder.count(), b_before + 30);
    let states: Vec<_> = gateway.gateway.upstream_health()[1]
        .upstreams
        .iter()
        .map(|(_, health, _)| *health)
        .collect();
    assert_eq!(
        states,
        [
            penghubung::upstream::UpstreamHealth::Ejected,
            penghubung::upstream::UpstreamHealth::Up
        ]
    );

    // It returns on its port; once its ejection ends it gets requests again, and none fails.
    // (The port was ours a moment ago; should another test hold it now, wait for it.)
    let mut again = None;
    for _ in 0..50 {
        match std::net::TcpListener::bind(a_addr) {
            Ok(listener) => {
                again = Some(listener);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let revived = Mortal::start(
        &gateway.pki,
        again.expect("the upstream's port stayed taken"),
    );
    let deadline = tokio::time::Instant::now() + EJECT_FOR + Duration::from_secs(5);
    while revived.recorder.count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream was not taken back"
        );
        assert_eq!(get().await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(revived);
}
