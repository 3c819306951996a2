//! Several upstreams per service: a dead one is retried around (idempotent methods only),
//! left out of the rotation after repeated failures, and taken back once it has been out for
//! `EJECT_FOR` (paused time).

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use penghubung::caller::Caller;
use penghubung::config::load_str;
use penghubung::pipeline::Gateway;
use penghubung::tls::IdentityField;
use penghubung::upstream::EJECT_FOR;
use support::{closed_port, config_text, recording_upstream, Recorder, TestPki};
use tokio::net::TcpListener;

struct Harness {
    gateway: Gateway,
    caller: Caller,
    live: Recorder,
    dead: String,
    pki: TestPki,
}

/// Both services with two upstreams: a dead one first, then a live one.
async fn harness() -> Harness {
    let pki = TestPki::new();
    let (live_url, live) = recording_upstream(&pki).await;
    let dead = closed_port().await;
    let text = config_text(&live_url, "5s", "").replace(
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
        dead,
        pki,
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
    let h = harness().await;
    for _ in 0..10 {
        assert_eq!(h.call(Method::GET).await, 200);
    }
    // The dead upstream came back on its port.
    let addr = h.dead.trim_start_matches("https://").to_owned();
    let listener = TcpListener::bind(&addr).await.unwrap();
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
