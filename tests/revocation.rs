//! What a certificate means is asked again after every reload, on connections already open: a
//! connection whose certificate a new CRL revokes, whose issuer is no longer trusted, that is
//! no longer pinned or names no agency any more gets 403 on its next request and is closed
//! (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY) — others go on. A certificate that names no
//! agency is closed after its first answer; every connection ends at `max_connection_age`.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use penghubung::pki::Issued;
use support::Edit;
use support::{config_text, recording_upstream, Client, Running, TestPki};

/// One open connection to the gateway, over HTTP/1.1 or HTTP/2.
enum Open {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>, u16),
}

impl Open {
    async fn new(gw: &Running, identity: &Issued, version: Version) -> (Open, ConnectionEnd) {
        let client = Client::new(gw.addr, &gw.pki.ca, Some(identity), version);
        let (ended, end) = tokio::sync::oneshot::channel();
        if version == Version::HTTP_2 {
            let tls = client.connect(b"h2").await.unwrap();
            let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(async move {
                let _ = ended.send(conn.await.is_ok());
            });
            (Open::H2(sender, gw.addr.port()), ConnectionEnd(end))
        } else {
            let tls = client.connect(b"http/1.1").await.unwrap();
            let (sender, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(async move {
                let _ = ended.send(conn.await.is_ok());
            });
            (Open::H1(sender), ConnectionEnd(end))
        }
    }

    async fn get(&mut self, path: &str) -> Result<Response<Incoming>, hyper::Error> {
        match self {
            Open::H1(sender) => {
                let request = Request::get(path)
                    .header("host", "localhost")
                    .body(Empty::new())
                    .unwrap();
                sender.send_request(request).await
            }
            Open::H2(sender, port) => {
                let request = Request::get(format!("https://localhost:{port}{path}"))
                    .body(Empty::new())
                    .unwrap();
                sender.send_request(request).await
            }
        }
    }
}

/// Resolves when the connection's task ends.
struct ConnectionEnd(tokio::sync::oneshot::Receiver<bool>);

impl ConnectionEnd {
    /// Waits (bounded) for the gateway to close the connection.
    async fn closed(self, what: &str) {
        tokio::time::timeout(Duration::from_secs(5), self.0)
            .await
            .unwrap_or_else(|_| panic!("{what}: the connection stayed open"))
            .unwrap();
    }
}

/// The problem slug of a refusal, after asserting its status.
async fn problem(response: Response<Incoming>, status: StatusCode) -> (String, http::HeaderMap) {
    assert_eq!(response.status(), status);
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let slug = doc["type"]
        .as_str()
        .unwrap()
        .trim_start_matches("urn:penghubung:problem:")
        .to_owned();
    (slug, headers)
}

/// A gateway whose configuration file is `pki/test.toml`, so that it can be reloaded.
async fn gateway(extra: &str) -> (Running, String) {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let text = config_text(&upstream, "5s", extra);
    std::fs::write(pki.path().join("test.toml"), &text).unwrap();
    (Running::start(pki, &text).await, text)
}

async fn reload(gw: &Running, text: &str) {
    std::fs::write(gw.pki.path().join("test.toml"), text).unwrap();
    gw.gateway.reload("test").await.unwrap();
}

/// A change to the configuration text (files it names may be written beside it).
type Change = fn(&Running, &str) -> String;

/// Each change a reload can make to what a certificate means, on HTTP/1.1 and HTTP/2: the
/// open connection of Dinkes gets the refusal on its next request and is closed, while
/// Dukcapil's open connection goes on.
#[tokio::test]
async fn a_reload_reaches_connections_already_open() {
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let cases: [(&str, Change); 4] = [
            ("certificate-revoked", |gw, text| {
                let crl = gw.pki.ca.crl_pem(&[&gw.pki.dinkes.serial]).unwrap();
                std::fs::write(gw.pki.path().join("crl2.pem"), crl).unwrap();
                text.edit_once("crl = [\"crl.pem\"]", "crl = [\"crl2.pem\"]")
            }),
            ("certificate-untrusted", |gw, text| {
                // Only Dukcapil's certificate is trusted now: a CA of its own.
                let other = penghubung::pki::Authority::new("Another Regency CA").unwrap();
                std::fs::write(gw.pki.path().join("other-ca.crt"), other.cert_pem()).unwrap();
                text.edit_once("client_ca = [\"ca.crt\"]", "client_ca = [\"other-ca.crt\"]")
            }),
            ("certificate-not-pinned", |_, text| {
                text.edit_once(
                    "identities = [\"dinkes.test\"]",
                    &format!(
                        "identities = [\"dinkes.test\"]\npin_sha256 = [\"{}\"]",
                        "ab".repeat(32)
                    ),
                )
            }),
            ("unknown-agency", |_, text| {
                text.edit_once(
                    "identities = [\"dinkes.test\"]",
                    "identities = [\"dinkes.other\"]",
                )
            }),
        ];
        for (slug, change) in cases {
            let (gw, text) = gateway("").await;
            let (mut dinkes, dinkes_end) = Open::new(&gw, &gw.pki.dinkes, version).await;
            let (mut dukcapil, _) = Open::new(&gw, &gw.pki.dukcapil, version).await;
            // Positive control: both are served on their open connections.
            assert_eq!(dinkes.get("/dinkes/faskes").await.unwrap().status(), 200);
            assert_eq!(dukcapil.get("/dinkes/faskes").await.unwrap().status(), 200);
            let changed = change(&gw, &text);
            assert_ne!(changed, text, "{slug}: the change did not apply");
            reload(&gw, &changed).await;

            let (found, headers) = problem(
                dinkes.get("/dinkes/faskes").await.unwrap(),
                StatusCode::FORBIDDEN,
            )
            .await;
            assert_eq!(found, slug, "{version:?}");
            if version == Version::HTTP_11 {
                assert_eq!(headers["connection"], "close", "{slug}");
            }
            dinkes_end.closed(&format!("{version:?} {slug}")).await;
            assert!(dinkes.get("/dinkes/faskes").await.is_err());
            if slug != "certificate-untrusted" {
                assert_eq!(
                    dukcapil.get("/dinkes/faskes").await.unwrap().status(),
                    200,
                    "{version:?} {slug}: an unaffected connection was disturbed"
                );
            }
        }
    }
}

/// A certificate from a trusted CA that names no agency is answered 403 once and its
/// connection closed, not kept in a slot; one that sends nothing at all is closed after
/// `header_read_timeout`.
#[tokio::test]
async fn a_certificate_naming_no_agency_does_not_keep_its_connection() {
    let (gw, _) = gateway("").await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let (mut stranger, end) = Open::new(&gw, &gw.pki.stranger, version).await;
        let (slug, _) = problem(
            stranger.get("/dinkes/faskes").await.unwrap(),
            StatusCode::FORBIDDEN,
        )
        .await;
        assert_eq!(slug, "unknown-agency");
        end.closed(&format!("{version:?} after the refusal")).await;
    }
    let text = config_text("https://127.0.0.1:9", "5s", "").edit_once(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nheader_read_timeout = \"300ms\"",
    );
    let gw = Running::start(TestPki::new(), &text).await;
    let (_idle, end) = Open::new(&gw, &gw.pki.stranger, Version::HTTP_2).await;
    end.closed("an idle HTTP/2 connection naming no agency")
        .await;
    // An agency's idle connection is not closed that early.
    let (_idle, end) = Open::new(&gw, &gw.pki.dinkes, Version::HTTP_2).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(800), end.0)
            .await
            .is_err(),
        "an agency's idle connection was closed"
    );
}

#[tokio::test]
async fn connections_end_gracefully_at_max_connection_age() {
    let (gw, _) = gateway("").await;
    // The default (1 h) leaves a connection alone.
    let (mut open, end) = Open::new(&gw, &gw.pki.dinkes, Version::HTTP_2).await;
    assert_eq!(open.get("/dinkes/faskes").await.unwrap().status(), 200);
    assert!(tokio::time::timeout(Duration::from_millis(800), end.0)
        .await
        .is_err());
    let text = config_text("https://127.0.0.1:9", "5s", "").edit_once(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nmax_connection_age = \"500ms\"",
    );
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let text = text.edit("https://127.0.0.1:9", &upstream);
    let gw = Running::start(pki, &text).await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let (mut open, end) = Open::new(&gw, &gw.pki.dinkes, version).await;
        let started = std::time::Instant::now();
        assert_eq!(open.get("/dinkes/faskes").await.unwrap().status(), 200);
        end.closed(&format!("{version:?} past its age")).await;
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert!(open.get("/dinkes/faskes").await.is_err());
    }
}
