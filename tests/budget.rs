//! The memory budget of held bodies (`[gateway] max_buffered`): exchanges that would pass it
//! are refused with 503 `overloaded` and `Retry-After` — request bodies before any upstream
//! contact when their size is declared — every admitted exchange is answered whole, and the
//! gateway process's peak memory stays bounded under a burst of large answers.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Version;
use support::Edit;
use support::{config_text, recording_upstream, upstream_tls, Client, Running, TestPki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP/1.1 upstream answering every request with `size` bytes of JSON (a string of
/// `x`), once `together` requests have arrived (or 2 s passed), so that they are in flight at
/// the same time.
async fn large_answers(pki: &TestPki, size: usize, together: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(upstream_tls(pki));
    let arrived = Arc::new(AtomicUsize::new(0));
    let all_here = Arc::new(tokio::sync::Notify::new());
    let body: Arc<[u8]> = {
        let mut b = b"{\"data\":\"".to_vec();
        b.resize(size - 2, b'x');
        b.extend_from_slice(b"\"}");
        b.into()
    };
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (acceptor, arrived, all_here, body) = (
                acceptor.clone(),
                arrived.clone(),
                all_here.clone(),
                body.clone(),
            );
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                loop {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let waiting = all_here.notified();
                    if arrived.fetch_add(1, Ordering::SeqCst) + 1 >= together {
                        all_here.notify_waiters();
                    } else {
                        let _ = tokio::time::timeout(Duration::from_secs(2), waiting).await;
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if tls.write_all(head.as_bytes()).await.is_err()
                        || tls.write_all(&body).await.is_err()
                        || tls.flush().await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    format!("https://{addr}")
}

#[tokio::test]
async fn a_declared_request_body_over_the_budget_is_refused_before_any_upstream_contact() {
    let pki = TestPki::new();
    let (upstream, recorder) = recording_upstream(&pki).await;
    let text = config_text(&upstream, "5s", "\n[audit]\n")
        .edit_once(
            "shutdown_grace = \"5s\"",
            "shutdown_grace = \"5s\"\nmax_buffered = \"1MiB\"",
        )
        .edit_once(
            "max_request_body = \"1KiB\"",
            "max_request_body = \"700KiB\"",
        );
    assert!(text.contains("max_buffered") && text.contains("700KiB"));
    let gw = Running::start(pki, &text).await;
    let client = Client::new(gw.addr, &gw.pki.ca, Some(&gw.pki.dinkes), Version::HTTP_11);

    // The first upload declares 700 KiB and sends half: the gateway holds room for all of it.
    let mut first = client.connect(b"http/1.1").await.unwrap();
    let size = 700 * 1024;
    first
        .write_all(
            format!(
                "POST /dukcapil/penduduk/verifikasi HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let half = vec![b' '; size / 2];
    first.write_all(&half).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A second one of the same size does not fit: 503 at once, Retry-After, nothing upstream.
    let second = http::Request::post("/dukcapil/penduduk/verifikasi")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            b' ';
            size
        ])))
        .unwrap();
    let answer = client.send(second).await.unwrap();
    answer.problem(503, "overloaded");
    assert_eq!(answer.headers["retry-after"], "1");
    assert_eq!(recorder.count(), 0);

    // The first completes and is forwarded whole.
    first.write_all(&half[..size - size / 2]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), first.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(recorder.requests()[0].body.len(), size);
    // And once it is answered, the room is free again.
    let third = http::Request::post("/dukcapil/penduduk/verifikasi")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            b' ';
            size
        ])))
        .unwrap();
    assert_eq!(client.send(third).await.unwrap().status, 200);
}

/// Resident memory of a process: (current, peak) in KiB, from `/proc/<pid>/status`.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The binary, an 8 MiB budget, the audit log on (every answer is read whole for its digest),
/// and 40 answers of 2 MiB arriving at once: without the budget they need 80 MiB or more of
/// buffers; with it some are refused, every admitted one arrives whole, and the process's peak
/// resident memory grows by well under that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_answers_stays_within_the_budget() {
    const ANSWER: usize = 2 << 20;
    const BURST: usize = 40;
    let pki = TestPki::new();
    let upstream = large_answers(&pki, ANSWER, BURST).await;
    std::fs::write(
        pki.path().join("audit.key"),
        penghubung::pki::ed25519_key_pem().unwrap(),
    )
    .unwrap();
    let text = support::replace_once(
        &config_text(&upstream, "5s", "\n[audit]\nsigning_key = \"audit.key\"\n"),
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nmax_buffered = \"8MiB\"",
    );
    let served = support::Served::start(pki.path(), &text, support::quiet_serve).await;
    let pid = served.child.id();
    let client = Client::new(served.addr(), &pki.ca, Some(&pki.dinkes), Version::HTTP_11);
    let mut started = false;
    for _ in 0..400 {
        if client.get("/dinkes/faskes").await.is_ok() {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(started, "the gateway never answered");
    let (baseline, _) = memory_kib(pid);

    let mut calls = Vec::new();
    for _ in 0..BURST {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            client.get("/dukcapil/penduduk/penduduk/1").await.unwrap()
        }));
    }
    let (mut whole, mut refused) = (0, 0);
    for call in calls {
        let answer = call.await.unwrap();
        match answer.status.as_u16() {
            200 => {
                assert_eq!(answer.body.len(), ANSWER);
                assert!(answer.body[9..ANSWER - 2].iter().all(|&b| b == b'x'));
                whole += 1;
            }
            _ => {
                answer.problem(503, "overloaded");
                assert_eq!(answer.headers["retry-after"], "1");
                refused += 1;
            }
        }
    }
    let (_, peak) = memory_kib(pid);
    let grown_mib = peak.saturating_sub(baseline) / 1024;
    assert!(
        whole >= 1 && refused >= 1,
        "{whole} answered, {refused} refused"
    );
    assert!(
        grown_mib < 48,
        "peak resident memory grew by {grown_mib} MiB over {baseline} KiB ({whole} answered, {refused} refused)"
    );
}
