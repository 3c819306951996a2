//! The admin listener over a real socket: liveness, readiness that follows the audit log, and
//! Prometheus metrics of the exchanges the pipeline handled.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use penghubung::caller::Caller;
use penghubung::config::load_str;
use penghubung::runtime::Gateway;
use penghubung::tls::IdentityField;
use support::Edit;
use support::{config_text, recording_upstream, TestPki};
use tokio::net::{TcpListener, TcpStream};

async fn admin_get(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    admin_send(addr, method, path, "").await
}

async fn admin_send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &'static str,
) -> (u16, String) {
    support::admin_request(addr, method, path, body).await
}

/// The exposition as the Prometheus project's Python client parses it — strictly as
/// OpenMetrics (what the Content-Type says) and as the classic text format:
/// `{family: {"type": …, "samples": {"name{label=value,…}": value}}}`, labels sorted.
fn prometheus_parse(exposition: &str) -> serde_json::Value {
    const PARSE: &str = r##"
import json, sys
from prometheus_client.openmetrics import parser as om
from prometheus_client import parser as text
data = sys.stdin.read()
out = {}
for f in om.text_string_to_metric_families(data):
    samples = {}
    for s in f.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        samples[s.name + ("{" + labels + "}" if labels else "")] = s.value
    out[f.name] = {"type": f.type, "samples": samples}
classic = list(text.text_string_to_metric_families(data.replace("# EOF\n", "")))
count = lambda families: sum(len(f.samples) for f in families)
assert count(classic) == sum(len(f["samples"]) for f in out.values()), "classic parse differs"
print(json.dumps(out))
"##;
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the exposition does not parse:\n{}\n{exposition}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A gateway from `text` and its admin API on a free loopback port.
async fn admin_on(pki: &TestPki, text: &str) -> (Arc<Gateway>, std::net::SocketAddr) {
    let snapshot = load_str(text, &pki.path().join("a.toml"), pki.path()).unwrap();
    let gateway = Arc::new(Gateway::new(Arc::new(snapshot)).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(penghubung::admin::serve_admin(
        listener,
        gateway.clone(),
        std::future::pending(),
    ));
    (gateway, addr)
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let text = config_text(&upstream, "5s", "\n[audit]\n").edit_once(
        "  path = \"/faskes\"",
        "  path = \"/faskes\"\n  cache_ttl = \"60s\"",
    );
    let (gateway, addr) = admin_on(&pki, &text).await;

    let dinkes = Caller::resolve(
        &gateway.snapshot(),
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
    let (status, ready) = admin_get(addr, "GET", "/readyz").await;
    assert_eq!(status, 200);
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(
        (&ready["status"], &ready["audit"]),
        (&"ready".into(), &"ok".into())
    );
    assert_eq!(ready["config"]["generation"], 0);
    assert_eq!(ready["config"]["digest"], gateway.snapshot().digest);
    let faskes = &ready["services"][1];
    assert_eq!(faskes["id"], "dinkes-faskes");
    assert_eq!(faskes["available"], true);
    assert_eq!(faskes["upstreams"][0]["state"], "up");
    assert_eq!(
        faskes["upstreams"][0]["url"]
            .as_str()
            .unwrap()
            .trim_end_matches('/'),
        upstream
    );
    let (status, metrics) = admin_get(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    let families = prometheus_parse(&metrics);
    for family in [
        "penghubung_exchanges",
        "penghubung_request_duration_seconds",
        "penghubung_upstream_duration_seconds",
        "penghubung_upstream_up",
        "penghubung_certificate_expiry_seconds",
        "penghubung_audit_queue_depth",
        "penghubung_audit_fsync_seconds",
        "penghubung_cache_hits",
        "penghubung_config_reloads",
    ] {
        assert!(
            families[family].is_object(),
            "{family} missing from the parsed exposition: {families}"
        );
    }
    // Three exchanges were timed, two of them forwarded (one miss went upstream).
    assert_eq!(
        families["penghubung_request_duration_seconds"]["samples"]
            ["penghubung_request_duration_seconds_count{operation=list-faskes,service=dinkes-faskes}"],
        2.0,
        "{families}"
    );
    assert_eq!(
        families["penghubung_upstream_duration_seconds"]["samples"]
            ["penghubung_upstream_duration_seconds_count{service=dinkes-faskes}"],
        1.0,
        "{families}"
    );
    assert!(
        families["penghubung_audit_fsync_seconds"]["samples"]
            ["penghubung_audit_fsync_seconds_count"]
            .as_f64()
            .unwrap()
            >= 1.0
    );
    let up = &families["penghubung_upstream_up"]["samples"];
    assert_eq!(
        up[format!("penghubung_upstream_up{{service=dinkes-faskes,upstream={upstream}/}}")],
        1.0,
        "{up}"
    );
    let expiry = families["penghubung_certificate_expiry_seconds"]["samples"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(name, _)| name.ends_with("gateway.crt,used_as=tls.cert}"))
        .map(|(_, seconds)| seconds.as_f64().unwrap())
        .unwrap();
    assert!(expiry > 300.0 * 86_400.0, "{expiry}");
    assert!(
        metrics.contains(r#"penghubung_exchanges_total{service="dinkes-faskes",operation="list-faskes",consumer="dinkes",outcome="forwarded",status="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"penghubung_exchanges_total{service="dinkes-faskes",operation="list-faskes",consumer="dinkes",outcome="served-from-cache",status="200"} 1"#),
        "{metrics}"
    );
    for line in [
        "penghubung_cache_hits_total 1",
        "penghubung_cache_misses_total 1",
        "penghubung_cache_entries 1",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
    assert!(
        metrics.contains(r#"outcome="no-operation",status="404"} 1"#),
        "{metrics}"
    );
    assert_eq!(admin_get(addr, "GET", "/elsewhere").await.0, 404);
    let (status, certs) = admin_get(addr, "GET", "/v1/certificates").await;
    assert_eq!(status, 200);
    let certs: serde_json::Value = serde_json::from_str(&certs).unwrap();
    let gateway_cert = certs["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["used_as"] == "tls.cert")
        .unwrap();
    assert_eq!(gateway_cert["state"], "ok");
    assert!(gateway_cert["days_left"].as_i64().unwrap() > 300);
    let (status, sla) = admin_get(addr, "GET", "/v1/sla").await;
    assert_eq!(status, 200);
    let sla: serde_json::Value = serde_json::from_str(&sla).unwrap();
    let faskes = sla["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "dinkes-faskes")
        .unwrap();
    assert_eq!(faskes["windows"]["5m"]["answered"], 2, "{sla}");
    assert_eq!(faskes["windows"]["1h"]["availability"], 1.0);
    assert!(faskes["windows"]["24h"]["p99_ms"].as_f64().unwrap() > 0.0);
    let (status, catalog) = admin_get(addr, "GET", "/v1/catalog").await;
    assert_eq!(status, 200);
    let catalog: serde_json::Value = serde_json::from_str(&catalog).unwrap();
    assert_eq!(catalog["agreements"][0]["id"], "PKS-TEST-1");
    assert_eq!(catalog["agreements"][0]["in_force"], true);
    assert_eq!(
        catalog["services"][1]["operations"][0]["cache_ttl_seconds"],
        60
    );
    assert_eq!(admin_get(addr, "POST", "/metrics").await.0, 405);

    // Cache purge: scoped, audited, and refused with a problem document for a bad scope.
    let purge = |body| admin_send(addr, "POST", "/v1/cache/purge", body);
    let (status, answer) = purge(r#"{"service": "dinkes-faskes"}"#).await;
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["purged"], 1, "{answer}");
    assert_eq!(purge("").await.0, 200);
    for (body, status, slug) in [
        (r#"{"service": "tidak-ada"}"#, 404, "no-such-scope"),
        (
            r#"{"service": "dinkes-faskes", "operation": "x"}"#,
            404,
            "no-such-scope",
        ),
        (r#"{"operation": "list-faskes"}"#, 400, "no-such-scope"),
        (r#"{"servis": "dinkes-faskes"}"#, 400, "malformed-json"),
        ("purge!", 400, "malformed-json"),
    ] {
        let (got, doc) = purge(body).await;
        assert_eq!(got, status, "{body}: {doc}");
        let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(
            doc["type"],
            format!("urn:penghubung:problem:{slug}"),
            "{body}"
        );
    }
    assert_eq!(admin_get(addr, "GET", "/v1/cache/purge").await.0, 405);
    let mut purges = Vec::new();
    penghubung::audit::walk(&pki.path().join("data/audit"), |r, _| {
        if r.outcome == "cache-purge" {
            purges.push(r.detail.clone().unwrap());
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(purges.len(), 2, "{purges:?}");
    assert!(purges[0].starts_with("service=dinkes-faskes by admin 127.0.0.1:"));
    assert!(purges[1].starts_with("all by admin 127.0.0.1:"));

    // Reload: the file this snapshot came from does not exist yet: refused, every error listed.
    let (status, doc) = admin_send(addr, "POST", "/v1/reload", "").await;
    assert_eq!(status, 422, "{doc}");
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["type"], "urn:penghubung:problem:config-invalid");
    assert!(
        doc["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cannot read"),
        "{doc}"
    );
    std::fs::write(pki.path().join("a.toml"), &text).unwrap();
    let (status, doc) = admin_send(addr, "POST", "/v1/reload", "").await;
    assert_eq!(status, 200, "{doc}");
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["generation"], 1);
    assert_eq!(doc["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(admin_get(addr, "GET", "/v1/reload").await.0, 405);
    let (_, metrics) = admin_get(addr, "GET", "/metrics").await;
    assert!(
        metrics.contains("penghubung_config_reloads_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("penghubung_config_reload_failures_total 1"),
        "{metrics}"
    );

    // A failing audit log makes the gateway not ready, and refuses purges it cannot record.
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
    assert_eq!(purge("").await.0, 503);
    assert_eq!(admin_send(addr, "POST", "/v1/reload", "").await.0, 503);
}

#[tokio::test]
async fn with_admin_identities_only_an_administrator_certificate_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let text = config_text(
        &upstream,
        "5s",
        "\n[audit]\n\n[admin]\nidentities = [\"ops.test\"]\n",
    );
    let (_gateway, addr) = admin_on(&pki, &text).await;
    let ops = pki.ca.issue_client("ops.test", None).unwrap();
    let client = |who: Option<&penghubung::pki::Issued>, version| {
        support::Client::new(addr, &pki.ca, who, version)
    };
    let purge = || {
        Request::post("/v1/cache/purge")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    // Plain HTTP is not answered: the listener speaks TLS.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain.read_to_end(&mut answer),
    )
    .await;
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    // No client certificate: the handshake is refused.
    assert!(client(None, http::Version::HTTP_11)
        .get("/healthz")
        .await
        .is_err());
    // An agency's certificate: 403 for every request, reads and acts alike.
    for request in [
        Request::get("/metrics")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        purge(),
    ] {
        let refused = client(Some(&pki.dinkes), http::Version::HTTP_11)
            .send(request)
            .await
            .unwrap();
        assert_eq!(refused.status, 403);
        assert_eq!(
            refused.json()["type"],
            "urn:penghubung:problem:not-an-administrator"
        );
    }
    // The administrator, over HTTP/1.1 and HTTP/2: served, and the act recorded in its name.
    for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
        let done = client(Some(&ops), version).send(purge()).await.unwrap();
        assert_eq!(done.status, 200, "{:?}", done.body);
    }
    let ready = client(Some(&ops), http::Version::HTTP_2)
        .get("/readyz")
        .await
        .unwrap();
    assert_eq!(ready.json()["status"], "ready");
    let mut purges = Vec::new();
    penghubung::audit::walk(&pki.path().join("data/audit"), |r, _| {
        if r.outcome == "cache-purge" {
            purges.push(r.detail.clone().unwrap());
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(purges.len(), 2, "{purges:?}");
    assert!(
        purges
            .iter()
            .all(|p| p.starts_with("all by admin ops.test from 127.0.0.1:")),
        "{purges:?}"
    );
}

/// The admin listener is held to the main one's discipline: a client that trickles its request
/// head is cut off after `header_read_timeout`, and at most `MAX_ADMIN_CONNECTIONS` are served
/// at once (the next waits in the backlog until one closes).
#[tokio::test]
async fn the_admin_listener_cuts_off_slow_heads_and_caps_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let text = config_text(&upstream, "5s", "").edit_once(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nheader_read_timeout = \"300ms\"",
    );
    assert!(text.contains("header_read_timeout = \"300ms\""));
    let (_gateway, addr) = admin_on(&pki, &text).await;
    // A complete head is answered (the positive control on the same listener)...
    assert_eq!(admin_get(addr, "GET", "/healthz").await.0, 200);
    // ...one that never ends is cut off.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        slow.read_to_end(&mut rest),
    )
    .await;
    assert!(
        ended.is_ok(),
        "a trickled head held the admin connection open"
    );
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));

    // The cap: every slot taken by an open keep-alive connection.
    let (_gateway, addr) = admin_on(&pki, &config_text(&upstream, "5s", "")).await;
    let mut held = Vec::new();
    for _ in 0..penghubung::admin::MAX_ADMIN_CONNECTIONS {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let early = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        waiting.read_to_end(&mut answer),
    )
    .await;
    assert!(
        early.is_err(),
        "a connection past the cap was served: {}",
        String::from_utf8_lossy(&answer)
    );
    // One closes; the waiting one is served.
    drop(held.pop());
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        waiting.read_to_end(&mut answer),
    )
    .await
    .expect("the waiting connection was not served when a slot freed")
    .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}
