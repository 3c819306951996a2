//! Outbound credentials (`upstream_auth`) against a mock OAuth2 token endpoint and a real mTLS
//! upstream: the token is fetched once, cached, renewed before expiry (paused time), fetched by
//! one request for many, replaced after a 401 with exactly one retry; endpoint failures are 502
//! `upstream-credentials`; API keys come from files; and no secret or token reaches the logs or
//! the audit log.

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use penghubung::caller::Caller;
use penghubung::config::load_str;
use penghubung::demo::{self, json_response, Seen};
use penghubung::runtime::Gateway;
use penghubung::tls::IdentityField;
use serde_json::json;
use support::Edit;
use support::{config_text, upstream_tls, TestPki};
use tokio::net::TcpListener;

const SECRET: &str = "s3cr3t-client-secret";

/// The mock token endpoint: counts requests, checks the client's Basic credentials, and issues
/// `tok-1`, `tok-2`, … valid `lifetime` seconds (or answers `failing` as an OAuth2 error).
#[derive(Clone, Default)]
struct Issuer {
    issued: Arc<AtomicUsize>,
    lifetime: Arc<AtomicU64>,
    failing: Arc<Mutex<Option<&'static str>>>,
    requests: Arc<Mutex<Vec<Seen>>>,
}

/// The upstream: records the Authorization it got; 401 for revoked tokens.
#[derive(Clone, Default)]
struct Upstream {
    seen: Arc<Mutex<Vec<String>>>,
    revoked: Arc<Mutex<HashSet<String>>>,
}

struct Harness {
    gateway: Gateway,
    caller: Caller,
    issuer: Issuer,
    upstream: Upstream,
    pki: TestPki,
}

async fn serve(pki: &TestPki, handler: demo::Handler) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(demo::serve_sample(listener, upstream_tls(pki), handler));
    format!("https://{addr}")
}

impl Harness {
    async fn new(auth: &str) -> Harness {
        Harness::with(auth, "\n[audit]\n").await
    }

    /// `extra` configuration; the audit log's writer thread lets paused time jump, so the
    /// paused-time test leaves it out.
    async fn with(auth: &str, extra: &str) -> Harness {
        let pki = TestPki::new();
        std::fs::write(pki.path().join("client.secret"), format!("{SECRET}\n")).unwrap();
        std::fs::write(pki.path().join("api.key"), "k3y-value").unwrap();
        let issuer = Issuer::default();
        issuer.lifetime.store(60, Ordering::SeqCst);
        let i = issuer.clone();
        let token_url = serve(
            &pki,
            Arc::new(move |s: Seen| {
                i.requests.lock().unwrap().push(s);
                if let Some(error) = *i.failing.lock().unwrap() {
                    return json_response(StatusCode::BAD_REQUEST, &json!({"error": error}));
                }
                let n = i.issued.fetch_add(1, Ordering::SeqCst) + 1;
                json_response(
                    StatusCode::OK,
                    &json!({
                        "access_token": format!("tok-{n}"),
                        "token_type": "bearer",
                        "expires_in": i.lifetime.load(Ordering::SeqCst),
                    }),
                )
            }),
        )
        .await;
        let upstream = Upstream::default();
        let u = upstream.clone();
        let upstream_url = serve(
            &pki,
            Arc::new(move |s: Seen| {
                let auth = s
                    .headers
                    .get("authorization")
                    .or_else(|| s.headers.get("x-api-key"))
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                u.seen.lock().unwrap().push(auth.clone());
                let token = auth.trim_start_matches("Bearer ").to_owned();
                if u.revoked.lock().unwrap().contains(&token) {
                    return json_response(StatusCode::UNAUTHORIZED, &json!({"error": "revoked"}));
                }
                json_response(StatusCode::OK, &json!({"ok": true}))
            }),
        )
        .await;
        // Only OAuth2 has a token endpoint to fill in.
        let auth = auth.replace("TOKEN_URL", &format!("{token_url}/oauth/token"));
        let text = config_text(&upstream_url, "5s", extra)
            .edit_once("timeout = \"5s\"", &format!("timeout = \"5s\"\n{auth}"));
        let snapshot = load_str(&text, &pki.path().join("o.toml"), pki.path())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{:?}", snapshot.services[0].upstream_auth).contains(SECRET));
        let gateway = Gateway::new(Arc::new(snapshot)).unwrap();
        let caller = Caller::resolve(
            &gateway.snapshot(),
            "127.0.0.1:1".parse().unwrap(),
            IdentityField::SubjectCn.extract(&pki.dinkes.cert),
        );
        Harness {
            gateway,
            caller,
            issuer,
            upstream,
            pki,
        }
    }

    async fn get(&self) -> (u16, String) {
        let request = Request::get("/dukcapil/penduduk/penduduk/7201010101010001")
            .header("authorization", "Bearer caller-own-token")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self.gateway.handle(&self.caller, request).await;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn seen(&self) -> Vec<String> {
        self.upstream.seen.lock().unwrap().clone()
    }

    fn tokens_issued(&self) -> usize {
        self.issuer.issued.load(Ordering::SeqCst)
    }

    /// Nothing under the data directory (the audit log) holds the secret or a token.
    fn assert_no_secrets_recorded(&self) {
        for entry in walk(&self.pki.path().join("data")) {
            let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
            assert!(
                !text.contains(SECRET) && !text.contains("tok-"),
                "{}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

const OAUTH2: &str = r#"upstream_auth = { kind = "oauth2_client_credentials", token_url = "TOKEN_URL", client_id = "penghubung test", client_secret_file = "client.secret", scope = "kependudukan.read" }"#;

/// Logs of everything the closure's futures do on this thread, at every level.
fn capture() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(buffer.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

fn assert_clean(logs: &Arc<Mutex<Vec<u8>>>) {
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.contains("upstream token obtained"),
        "nothing was logged:\n{text}"
    );
    for secret in [SECRET, "tok-1", "tok-2", "k3y-value", "caller-own-token"] {
        assert!(!text.contains(secret), "`{secret}` was logged:\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_is_fetched_once_cached_and_renewed_before_it_expires() {
    let (logs, _guard) = capture();
    let h = Harness::with(OAUTH2, "").await;
    for _ in 0..3 {
        assert_eq!(h.get().await.0, 200);
    }
    assert_eq!(h.tokens_issued(), 1);
    assert_eq!(
        h.seen(),
        ["Bearer tok-1"; 3],
        "the caller's own Authorization reached the upstream"
    );
    let asked = h.issuer.requests.lock().unwrap()[0].clone();
    assert_eq!(asked.method, http::Method::POST);
    assert_eq!(asked.path_and_query, "/oauth/token");
    assert_eq!(
        String::from_utf8_lossy(&asked.body),
        "grant_type=client_credentials&scope=kependudukan.read"
    );
    use base64::Engine as _;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("penghubung+test:{SECRET}"));
    assert_eq!(
        asked.headers["authorization"],
        format!("Basic {basic}").as_str()
    );

    // 60 s tokens are renewed 6 s early.
    tokio::time::advance(Duration::from_secs(53)).await;
    h.get().await;
    assert_eq!(h.tokens_issued(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    h.get().await;
    assert_eq!(h.tokens_issued(), 2);
    assert_eq!(h.seen().last().unwrap(), "Bearer tok-2");
    assert_clean(&logs);
}

#[tokio::test]
async fn concurrent_requests_share_one_token_fetch() {
    let h = Harness::new(OAUTH2).await;
    let calls: Vec<_> = (0..20).map(|_| Box::pin(h.get())).collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call);
    }
    let results = join_all(statuses).await;
    assert!(results.iter().all(|(s, _)| *s == 200));
    assert_eq!(h.tokens_issued(), 1);
}

#[tokio::test]
async fn a_401_gets_a_new_token_and_exactly_one_retry() {
    let (logs, _guard) = capture();
    let h = Harness::new(OAUTH2).await;
    assert_eq!(h.get().await.0, 200);
    h.upstream.revoked.lock().unwrap().insert("tok-1".into());
    assert_eq!(h.get().await.0, 200);
    assert_eq!(h.tokens_issued(), 2);
    assert_eq!(h.seen(), ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]);

    // An upstream that refuses every token: one retry, then its 401 is the answer.
    h.upstream
        .revoked
        .lock()
        .unwrap()
        .extend(["tok-2".into(), "tok-3".into(), "tok-4".into()]);
    let before = h.seen().len();
    assert_eq!(h.get().await.0, 401);
    assert_eq!(h.seen().len(), before + 2);
    assert_clean(&logs);
    h.assert_no_secrets_recorded();
}

#[tokio::test]
async fn a_failing_token_endpoint_is_502_and_the_upstream_is_not_called() {
    let h = Harness::new(OAUTH2).await;
    *h.issuer.failing.lock().unwrap() = Some("invalid_client");
    let (status, body) = h.get().await;
    assert_eq!(status, 502);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["type"], "urn:penghubung:problem:upstream-credentials");
    assert!(!body.contains("oauth") && !body.contains(SECRET), "{body}");
    assert!(h.seen().is_empty());
}

#[tokio::test]
async fn an_api_key_from_a_file_replaces_the_callers_header() {
    let (logs, _guard) = capture();
    let h = Harness::new(
        r#"upstream_auth = { kind = "api_key", header = "X-Api-Key", secret_file = "api.key" }"#,
    )
    .await;
    let request = Request::get("/dukcapil/penduduk/penduduk/7201010101010001")
        .header("x-api-key", "forged")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = h.gateway.handle(&h.caller, request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(h.seen(), ["k3y-value"]);
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!text.contains("k3y-value"), "{text}");
    h.assert_no_secrets_recorded();
}

#[test]
fn secrets_are_never_in_the_configuration_and_must_be_found() {
    let pki = TestPki::new();
    let load = |auth: &str| {
        let text = config_text("https://127.0.0.1:9", "5s", "")
            .edit_once("timeout = \"5s\"", &format!("timeout = \"5s\"\n{auth}"));
        load_str(&text, &pki.path().join("s.toml"), pki.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let written = load(
        r#"upstream_auth = { kind = "oauth2_client_credentials", token_url = "https://x/t", client_id = "a", client_secret = "hunter2" }"#,
    );
    assert!(
        written.contains("services[0].upstream_auth.client_secret: secrets are never written"),
        "{written}"
    );
    assert!(!written.contains("hunter2"), "{written}");
    let missing = load(
        r#"upstream_auth = { kind = "oauth2_client_credentials", token_url = "https://x/t", client_id = "a", client_secret_file = "nope.secret" }"#,
    );
    assert!(
        missing.contains("services[0].upstream_auth.client_secret_file: cannot read"),
        "{missing}"
    );
    let env = load(
        r#"upstream_auth = { kind = "api_key", header = "X-Key", secret_env = "PENGHUBUNG_TEST_NO_SUCH_VAR" }"#,
    );
    assert!(
        env.contains("`PENGHUBUNG_TEST_NO_SUCH_VAR` is not set"),
        "{env}"
    );
    let plain = load(
        r#"upstream_auth = { kind = "oauth2_client_credentials", token_url = "http://x/t", client_id = "a", client_secret_env = "PATH" }"#,
    );
    assert!(plain.contains("must be an https URL"), "{plain}");
    let ours = load(
        r#"upstream_auth = { kind = "api_key", header = "SPL-Consumer", secret_env = "PATH" }"#,
    );
    assert!(ours.contains("is the gateway's own header"), "{ours}");
    let kind = load(r#"upstream_auth = { kind = "basic" }"#);
    assert!(kind.contains("`basic` is not a credential kind"), "{kind}");
}

/// Polls every future on this task until all are done.
async fn join_all<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futures.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match std::pin::Pin::new(f).poll(cx) {
                    std::task::Poll::Ready(v) => outputs[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}
