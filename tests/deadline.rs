//! The deadline of a whole exchange (`request_timeout`), over real sockets: a caller that
//! trickles its body gets 408 and (HTTP/1.1) a closed connection; an upstream that trickles its
//! answer gets the caller a 504 when nothing was sent yet, a reset stream otherwise; every one
//! of them is recorded in the audit log.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use penghubung::audit::{self, Record};
use support::Edit;
use support::{config_text, recording_upstream, upstream_tls, Client, Running, TestPki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The test configuration with `request_timeout = "400ms"` on the terbatas service (whose
/// upstream `timeout` is 300ms), and an audit log.
fn config(upstream: &str, extra: &str) -> String {
    let text = config_text(upstream, "300ms", &format!("\n[audit]\n{extra}"));
    let text = text.edit_once(
        "timeout = \"300ms\"",
        "timeout = \"300ms\"\nrequest_timeout = \"400ms\"",
    );
    assert!(text.contains("request_timeout = \"400ms\""));
    text
}

fn records(gw: &Running) -> Vec<Record> {
    let mut all = Vec::new();
    audit::walk(&gw.pki.path().join("data/audit"), |r, _| {
        all.push(r.clone());
        Ok(())
    })
    .unwrap();
    all
}

/// Waits (bounded) for the exchange `id` to be in the audit log, and returns its record.
async fn record_of(gw: &Running, id: &str) -> Record {
    for _ in 0..100 {
        if let Some(r) = records(gw)
            .into_iter()
            .find(|r| r.exchange_id.as_deref() == Some(id))
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("exchange {id} was not recorded")
}

/// An upstream that answers the head and the first bytes of a 100-byte JSON body at once,
/// then holds the rest back for `hold`.
async fn trickling_upstream(pki: &TestPki, hold: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(upstream_tls(pki));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"data\":\"")
                    .await;
                let _ = tls.flush().await;
                tokio::time::sleep(hold).await;
                let _ = tls.write_all(&[b'x'; 89]).await;
                let _ = tls.write_all(b"\"}").await;
                let _ = tls.flush().await;
            });
        }
    });
    format!("https://{addr}")
}

#[tokio::test]
async fn a_caller_that_trickles_its_body_gets_408_and_a_closed_connection() {
    let pki = TestPki::new();
    let (upstream, recorder) = recording_upstream(&pki).await;
    let gw = Running::start(pki, &config(&upstream, "")).await;
    let client = Client::new(gw.addr, &gw.pki.ca, Some(&gw.pki.dinkes), Version::HTTP_11);

    // HTTP/1.1: a head announcing 100 bytes, then 10, then nothing.
    let mut tls = client.connect(b"http/1.1").await.unwrap();
    tls.write_all(b"POST /dukcapil/penduduk/verifikasi HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"nik\":\"72")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer))
        .await
        .expect("the connection was neither answered nor closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(
        answer.contains("urn:penghubung:problem:request-timeout"),
        "{answer}"
    );
    let id = answer
        .lines()
        .find_map(|l| l.strip_prefix("spl-exchange-id: "))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(record_of(&gw, &id).await.outcome, "request-timeout");

    // HTTP/2: the stream is refused, and the connection serves the next request.
    let tls = client.connect(b"h2").await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tx.send(Bytes::from_static(b"{\"nik\":\"72")).await.unwrap();
    let stalled = Request::post(format!(
        "https://localhost:{}/dukcapil/penduduk/verifikasi",
        gw.addr.port()
    ))
    .header("content-type", "application/json")
    .body(Channel(rx).boxed())
    .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(stalled))
        .await
        .expect("no answer to the stalled stream")
        .unwrap();
    assert_eq!(response.status(), 408);
    let id = response.headers()["spl-exchange-id"]
        .to_str()
        .unwrap()
        .to_owned();
    drop(tx);
    let next = Request::get(format!(
        "https://localhost:{}/dinkes/faskes",
        gw.addr.port()
    ))
    .body(
        http_body_util::Empty::<Bytes>::new()
            .map_err(|e| match e {})
            .boxed(),
    )
    .unwrap();
    let response = sender.send_request(next).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(record_of(&gw, &id).await.outcome, "request-timeout");
    // Neither stalled body reached the upstream; the last request did.
    assert_eq!(recorder.count(), 1);
}

/// A request body fed from a channel: it ends when the sender is dropped.
struct Channel(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Channel {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test]
async fn an_upstream_that_trickles_its_answer_is_cut_off_at_the_deadline() {
    // With the audit log, the answer is read whole before it is released: the caller gets
    // 504, recorded, and nothing of the partial body.
    let pki = TestPki::new();
    let upstream = trickling_upstream(&pki, Duration::from_secs(30)).await;
    let gw = Running::start(pki, &config(&upstream, "")).await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let client = Client::new(gw.addr, &gw.pki.ca, Some(&gw.pki.dinkes), version);
        let started = std::time::Instant::now();
        let answer = client.get("/dukcapil/penduduk/penduduk/1").await.unwrap();
        let doc = answer.problem(504, "upstream-timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(doc["detail"].as_str().unwrap().contains("400ms"), "{doc}");
        let id = answer.headers["spl-exchange-id"].to_str().unwrap();
        let record = record_of(&gw, id).await;
        assert_eq!(
            (record.outcome.as_str(), record.status),
            ("upstream-timeout", Some(504))
        );
    }

    // An answer that arrives within the deadline is whole.
    let pki = TestPki::new();
    let upstream = trickling_upstream(&pki, Duration::from_millis(50)).await;
    let gw = Running::start(pki, &config(&upstream, "")).await;
    let client = Client::new(gw.addr, &gw.pki.ca, Some(&gw.pki.dinkes), Version::HTTP_2);
    let answer = client.get("/dukcapil/penduduk/penduduk/1").await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), 100);
}

#[tokio::test]
async fn without_the_audit_log_a_streamed_answer_is_reset_at_the_deadline() {
    let pki = TestPki::new();
    let upstream = trickling_upstream(&pki, Duration::from_secs(30)).await;
    let text = config(&upstream, "").edit_once("\n[audit]\n", "\n");
    let gw = Running::start(pki, &text).await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let client = Client::new(gw.addr, &gw.pki.ca, Some(&gw.pki.dinkes), version);
        let alpn: &[u8] = if version == Version::HTTP_2 {
            b"h2"
        } else {
            b"http/1.1"
        };
        let tls = client.connect(alpn).await.unwrap();
        let io = TokioIo::new(tls);
        let started = std::time::Instant::now();
        let request = |uri: String| {
            Request::get(uri)
                .header("host", "localhost")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap()
        };
        let response = if version == Version::HTTP_2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender
                .send_request(request(format!(
                    "https://localhost:{}/dukcapil/penduduk/penduduk/1",
                    gw.addr.port()
                )))
                .await
                .unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            sender
                .send_request(request("/dukcapil/penduduk/penduduk/1".to_owned()))
                .await
                .unwrap()
        };
        // The head and the first bytes were passed on as they came...
        assert_eq!(response.status(), 200);
        // ...and the rest never comes: the stream is reset (HTTP/2) or the connection closed
        // (HTTP/1.1) at the deadline, not when the upstream's 30 s are up.
        let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
            .await
            .expect("the streamed answer outlived its deadline");
        assert!(body.is_err(), "{version:?}: a cut answer ended as if whole");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
