//! The admin listener over a real socket: liveness, readiness that follows the audit log, and
//! Prometheus metrics of the exchanges the pipeline handled.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use penghubung::caller::Caller;
use penghubung::config::load_str;
use penghubung::pipeline::Gateway;
use penghubung::tls::IdentityField;
use support::{config_text, recording_upstream, TestPki};
use tokio::net::{TcpListener, TcpStream};

async fn admin_get(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let text = config_text(&upstream, "5s", "\n[audit]\n");
    let snapshot = load_str(&text, &pki.path().join("a.toml"), pki.path()).unwrap();
    let gateway = Arc::new(Gateway::new(Arc::new(snapshot)).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(penghubung::admin::serve_admin(
        listener,
        gateway.clone(),
        std::future::pending(),
    ));

    let dinkes = Caller::resolve(
        gateway.snapshot(),
        "127.0.0.1:1".parse().unwrap(),
        IdentityField::SubjectCn.extract(&pki.dinkes.cert),
    );
    for target in [
        "/dinkes/faskes",
        "/dinkes/faskes",
        "/dukcapil/penduduk/tidak-ada",
    ] {
        let _ = gateway
            .handle(
                &dinkes,
                Request::get(target).body(Full::new(Bytes::new())).unwrap(),
            )
            .await;
    }

    assert_eq!(
        admin_get(addr, "GET", "/healthz").await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(admin_get(addr, "GET", "/readyz").await.0, 200);
    let (status, metrics) = admin_get(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"penghubung_exchanges_total{service="dinkes-faskes",operation="list-faskes",consumer="dinkes",outcome="forwarded"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"outcome="no-operation"} 1"#),
        "{metrics}"
    );
    assert_eq!(admin_get(addr, "GET", "/elsewhere").await.0, 404);
    assert_eq!(admin_get(addr, "POST", "/metrics").await.0, 405);

    // A failing audit log makes the gateway not ready.
    gateway.audit().unwrap().inject_failure();
    let _ = gateway
        .handle(
            &dinkes,
            Request::get("/dinkes/faskes")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(admin_get(addr, "GET", "/readyz").await.0, 503);
    assert_eq!(admin_get(addr, "GET", "/healthz").await.0, 200);
}
