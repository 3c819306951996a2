//! Shared test fixtures: a named test PKI, a gateway on `127.0.0.1:0` with a recording mTLS
//! upstream behind it, and a client that speaks HTTP/1.1 or HTTP/2 with or without a client
//! certificate.
//!
//! Entities (all generated with rcgen per test run):
//! - `ca`: the regency CA; issues the gateway, upstream and agency certificates.
//! - `dinkes`, `dukcapil`: agency client certificates (CN `dinkes.test`, `dukcapil.test`).
//! - `stranger`: a valid certificate from `ca` whose CN names no agency.
//! - `foreign_ca_client`: CN `dinkes.test` — the right name — from a CA the gateway does not trust.
//! - `revoked`: CN `dinkes.test` from `ca`, listed in the CRL the gateway loads.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use penghubung::demo::{self, json_response, Seen};
use penghubung::pki::{Authority, Issued};
use penghubung::runtime::Gateway;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

pub const DINKES: &str = "dinkes.test";
pub const DUKCAPIL: &str = "dukcapil.test";

pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: Authority,
    pub gateway: Issued,
    pub upstream: Issued,
    pub dinkes: Issued,
    pub dukcapil: Issued,
    pub stranger: Issued,
    pub foreign_ca_client: Issued,
    pub revoked: Issued,
}

impl TestPki {
    pub fn new() -> TestPki {
        let ca = Authority::new("Test Regency CA").unwrap();
        let foreign = Authority::new("Some Other CA").unwrap();
        let gateway = ca
            .issue_server("gateway.test", &["localhost", "127.0.0.1"])
            .unwrap();
        let upstream = ca.issue_server("upstream.test", &["127.0.0.1"]).unwrap();
        let dinkes = ca.issue_client(DINKES, None).unwrap();
        let dukcapil = ca.issue_client(DUKCAPIL, None).unwrap();
        let stranger = ca.issue_client("stranger.test", None).unwrap();
        let foreign_ca_client = foreign.issue_client(DINKES, None).unwrap();
        let revoked = ca.issue_client(DINKES, None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.crt", &ca.cert_pem());
        write("gateway.crt", &gateway.cert_pem);
        write("gateway.key", &gateway.key_pem);
        write("crl.pem", &ca.crl_pem(&[&revoked.serial]).unwrap());
        TestPki {
            dir,
            ca,
            gateway,
            upstream,
            dinkes,
            dukcapil,
            stranger,
            foreign_ca_client,
            revoked,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A configuration for the test gateway: two agencies, two services (one `terbatas` that
/// `dinkes` may call under agreement `PKS-TEST-1`, one `terbuka`), and `extra` appended.
pub fn config_text(upstream: &str, timeout: &str, extra: &str) -> String {
    format!(
        r#"
[gateway]
id = "spl.test"
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
max_request_body = "1KiB"
shutdown_grace = "5s"

[tls]
cert = "gateway.crt"
key = "gateway.key"
client_ca = ["ca.crt"]
crl = ["crl.pem"]

[[agencies]]
code = "dinkes"
name = "Dinas Kesehatan"
clearance = "terbatas"
identities = ["{DINKES}"]

[[agencies]]
code = "dukcapil"
name = "Dinas Kependudukan dan Pencatatan Sipil"
clearance = "rahasia"
identities = ["{DUKCAPIL}"]

[[services]]
id = "dukcapil-penduduk"
owner = "dukcapil"
classification = "terbatas"
prefix = "/dukcapil/penduduk"
upstreams = ["{upstream}"]
upstream_ca = "ca.crt"
timeout = "{timeout}"

  [[services.operations]]
  id = "get-penduduk"
  method = "GET"
  path = "/penduduk/{{nik}}"

  [[services.operations]]
  id = "verifikasi"
  method = "POST"
  path = "/verifikasi"

[[services]]
id = "dinkes-faskes"
owner = "dinkes"
classification = "terbuka"
prefix = "/dinkes"
upstreams = ["{upstream}"]
upstream_ca = "ca.crt"

  [[services.operations]]
  id = "list-faskes"
  method = "GET"
  path = "/faskes"

[[agreements]]
id = "PKS-TEST-1"
consumer = "dinkes"
service = "dukcapil-penduduk"
purpose = "Pengujian gateway"
valid_from = 2020-01-01
valid_until = 2099-12-31
{extra}
"#
    )
}

/// The TLS configuration of a test upstream: the `upstream` certificate, and client
/// certificates required from `ca` (the gateway presents its own).
pub fn upstream_tls(pki: &TestPki) -> Arc<rustls::ServerConfig> {
    penghubung::tls::server_config(
        vec![pki.upstream.cert.clone()],
        pki.upstream.key.clone_key(),
        vec![pki.ca.cert()],
        Vec::new(),
    )
    .unwrap()
}

/// What the recording upstream saw.
#[derive(Clone, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    pub fn push(&self, seen: Seen) {
        self.seen.lock().unwrap().push(seen);
    }
}

/// An mTLS upstream that records every request and answers with a JSON echo of it.
pub async fn recording_upstream(pki: &TestPki) -> (String, Recorder) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorder = Recorder::default();
    let seen = recorder.seen.clone();
    let tls = upstream_tls(pki);
    let handler: demo::Handler = Arc::new(move |s: Seen| {
        let echo = json!({"method": s.method.as_str(), "path": s.path_and_query, "body_len": s.body.len()});
        seen.lock().unwrap().push(s);
        json_response(StatusCode::OK, &echo)
    });
    tokio::spawn(demo::serve_sample(listener, tls, handler));
    (format!("https://{addr}"), recorder)
}

/// An upstream like [`recording_upstream`] but presenting a server certificate from another CA.
pub async fn impostor_upstream(pki: &TestPki) -> (String, Recorder) {
    let foreign = Authority::new("Impostor CA").unwrap();
    let cert = foreign
        .issue_server("upstream.test", &["127.0.0.1"])
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorder = Recorder::default();
    let seen = recorder.seen.clone();
    let tls =
        penghubung::tls::server_config(vec![cert.cert], cert.key, vec![pki.ca.cert()], Vec::new())
            .unwrap();
    let handler: demo::Handler = Arc::new(move |s: Seen| {
        seen.lock().unwrap().push(s);
        json_response(StatusCode::OK, &json!({"stolen": true}))
    });
    tokio::spawn(demo::serve_sample(listener, tls, handler));
    (format!("https://{addr}"), recorder)
}

/// An upstream that completes TLS, reads the request, and never answers.
pub async fn silent_upstream(pki: &TestPki) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = upstream_tls(pki);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            if let Ok(mut tls) = acceptor.accept(stream).await {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await;
                held.push(tls);
            }
        }
    });
    format!("https://{addr}")
}

/// An upstream that reads a request, signals `received`, and answers `200 ok` over HTTP/1.1
/// only once the test signals `release`: an in-flight request the test controls.
pub async fn held_upstream(
    pki: &TestPki,
) -> (String, Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = upstream_tls(pki);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let received = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (notify, wait) = (received.clone(), release.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(stream).await else {
                continue;
            };
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            notify.notify_one();
            wait.notified().await;
            let _ = tls
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok",
                )
                .await;
            let _ = tls.flush().await;
            tokio::spawn(async move {
                let _ = tls.read(&mut buf).await;
            });
        }
    });
    (format!("https://{addr}"), received, release)
}

/// An address nothing listens on, and nothing can start listening on while it is held: the
/// port is bound but not listening, so connections to it are refused.
pub struct ClosedPort {
    pub url: String,
    _bound: tokio::net::TcpSocket,
}

impl ClosedPort {
    /// The port starts listening: the upstream that was down comes back on it.
    pub fn listen(self) -> TcpListener {
        self._bound.listen(1024).unwrap()
    }
}

pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    ClosedPort {
        url: format!("https://{addr}"),
        _bound: socket,
    }
}

/// A `penghubung serve` process on ports the OS had free, killed when dropped.
pub struct Served {
    pub child: std::process::Child,
    pub port: u16,
    pub admin: u16,
    pub file: PathBuf,
}

impl Served {
    /// Writes `text` — a configuration whose `listen` and `admin_listen` are `127.0.0.1:0` —
    /// into `dir` with two free ports in their place, and starts `command(file)` (which must
    /// run `serve --config FILE`). A process that exits before it listens (another test took
    /// a port between the choice and the bind) is started again on other ports, up to five
    /// times; a port is never assumed to stay free.
    pub async fn start(
        dir: &Path,
        text: &str,
        command: impl Fn(&Path) -> std::process::Command,
    ) -> Served {
        for _ in 0..5 {
            let free = || {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            };
            let (port, admin) = (free(), free());
            let text = replace_once(
                &replace_once(
                    text,
                    "\nlisten = \"127.0.0.1:0\"",
                    &format!("\nlisten = \"127.0.0.1:{port}\""),
                ),
                "\nadmin_listen = \"127.0.0.1:0\"",
                &format!("\nadmin_listen = \"127.0.0.1:{admin}\""),
            );
            let file = write_config(dir, &text);
            let mut child = command(&file).spawn().unwrap();
            let mut listening = false;
            for _ in 0..1200 {
                if let Some(status) = child.try_wait().unwrap() {
                    eprintln!("the gateway exited at start ({status}); trying other ports");
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    // Ours, not a stranger's on a port we lost: we would have exited by now.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    listening = child.try_wait().unwrap().is_none();
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            if listening {
                return Served {
                    child,
                    port,
                    admin,
                    file,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the gateway did not start on any of five pairs of free ports");
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP/1.1 request to an admin listener: (status, body).
pub async fn admin_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `penghubung serve --config FILE`, its output discarded: for [`Served::start`].
pub fn quiet_serve(file: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_penghubung"));
    command
        .args(["serve", "--config"])
        .arg(file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

/// `penghubung serve --config FILE` for a file the gateway must refuse to start on: its
/// standard error.
pub fn serve_refused(file: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_penghubung"))
        .args(["serve", "--config"])
        .arg(file)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the gateway started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `config_text` with a synchronous audit log and a redaction key written beside it.
pub fn audited_config(upstream: &str, pki: &TestPki) -> String {
    std::fs::write(
        pki.path().join("redaction.key"),
        penghubung::pki::redaction_key(),
    )
    .unwrap();
    config_text(
        upstream,
        "5s",
        "\n[audit]\nredaction_key = \"redaction.key\"\ndurability = \"sync\"\n",
    )
}

/// `text` with `from` replaced by `to` once; a fixture whose anchor moved fails here, instead
/// of silently testing the unchanged text.
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the fixture does not contain {from:?}:\n{text}"
    );
    text.replacen(from, to, 1)
}

/// A running gateway.
pub struct Running {
    pub addr: SocketAddr,
    pub pki: TestPki,
    pub gateway: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub async fn start(pki: TestPki, config: &str) -> Running {
        let snapshot =
            penghubung::config::load_str(config, &pki.path().join("test.toml"), pki.path())
                .unwrap_or_else(|e| panic!("{e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gateway = Arc::new(Gateway::new(Arc::new(snapshot)).unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(penghubung::server::serve(
            listener,
            gateway.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        Running {
            addr,
            pki,
            gateway,
            stop: Some(stop),
            task,
        }
    }

    /// Starts the drain, as SIGTERM does.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A response as the test client saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts a problem document of the given status and type slug, and returns it.
    pub fn problem(&self, status: u16, slug: &str) -> serde_json::Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.headers["content-type"], "application/problem+json");
        let doc = self.json();
        assert_eq!(doc["type"], format!("urn:penghubung:problem:{slug}"));
        assert_eq!(doc["status"], status);
        assert!(doc["title"].is_string() && doc["detail"].is_string());
        assert_eq!(
            doc["exchange_id"],
            self.headers["spl-exchange-id"].to_str().unwrap()
        );
        doc
    }
}

/// A client: one fresh TLS connection per request, as `identity` (or none), over HTTP/1.1 or
/// HTTP/2. The request target is sent exactly as given, unnormalised.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub ca: CertificateDer<'static>,
    pub identity: Option<(CertificateDer<'static>, Arc<PrivateKeyDer<'static>>)>,
    pub version: Version,
}

impl Client {
    pub fn new(
        addr: SocketAddr,
        ca: &Authority,
        identity: Option<&Issued>,
        version: Version,
    ) -> Client {
        Client {
            addr,
            ca: ca.cert(),
            identity: identity.map(|i| (i.cert.clone(), Arc::new(i.key.clone_key()))),
            version,
        }
    }

    pub fn with_identity(&self, identity: Option<&Issued>) -> Client {
        Client {
            identity: identity.map(|i| (i.cert.clone(), Arc::new(i.key.clone_key()))),
            ..self.clone()
        }
    }

    pub async fn get(
        &self,
        target: &str,
    ) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
        self.send(Request::get(target).body(Full::new(Bytes::new()))?)
            .await
    }

    /// A TLS connection to the gateway as this client, offering `alpn`.
    pub async fn connect(
        &self,
        alpn: &[u8],
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Box<dyn std::error::Error + Send + Sync>>
    {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((cert, key)) => {
                builder.with_client_auth_cert(vec![cert.clone()], key.clone_key())?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = TcpStream::connect(self.addr).await?;
        Ok(TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?)
    }

    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
        let alpn: &[u8] = if self.version == Version::HTTP_2 {
            b"h2"
        } else {
            b"http/1.1"
        };
        let tls = self.connect(alpn).await?;
        let io = TokioIo::new(tls);
        let response = if self.version == Version::HTTP_2 {
            let target = request.uri().to_string();
            *request.uri_mut() =
                format!("https://localhost:{}{target}", self.addr.port()).parse()?;
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            sender.send_request(request).await?
        } else {
            request.headers_mut().insert("host", "localhost".parse()?);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            sender.send_request(request).await?
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }
}

pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("penghubung.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Edits of a configuration fixture that fail loudly when their anchor is not in the text:
/// a replacement that silently matches nothing would test the unchanged fixture.
pub trait Edit {
    /// Every occurrence of `from`; there must be at least one.
    fn edit(&self, from: &str, to: &str) -> String;
    /// The first occurrence of `from`, which must be there.
    fn edit_once(&self, from: &str, to: &str) -> String;
}

impl<T: AsRef<str> + ?Sized> Edit for T {
    fn edit(&self, from: &str, to: &str) -> String {
        let text = self.as_ref();
        assert!(
            text.contains(from),
            "the fixture does not contain {from:?}:\n{text}"
        );
        text.replace(from, to)
    }

    fn edit_once(&self, from: &str, to: &str) -> String {
        replace_once(self.as_ref(), from, to)
    }
}

/// Signs, as the data owner, every agreement of an example configuration that names an
/// `owner_signature`, with the owner's key `pki init` wrote beside it (`pki/<owner>.crt`), by
/// `penghubung agreement sign` as the example's header says.
pub fn sign_example(file: &Path) {
    let dir = file.parent().unwrap();
    let value: toml::Table = toml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let none = Vec::new();
    let list = |key: &str| value.get(key).and_then(|v| v.as_array()).unwrap_or(&none);
    for agreement in list("agreements") {
        let Some(signature) = agreement.get("owner_signature").and_then(|s| s.as_str()) else {
            continue;
        };
        let service = agreement["service"].as_str().unwrap();
        let owner = list("services")
            .iter()
            .find(|s| s["id"].as_str() == Some(service))
            .and_then(|s| s["owner"].as_str())
            .unwrap();
        let id = agreement["id"].as_str().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_penghubung"))
            .args(["agreement", "sign", "--id", id, "--config"])
            .arg(file)
            .arg("--cert")
            .arg(dir.join(format!("pki/{owner}.crt")))
            .arg("--key")
            .arg(dir.join(format!("pki/{owner}.key")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "agreement sign {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = dir.join(signature);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, out.stdout).unwrap();
    }
}

/// Writer options for audit tests: `sync`, signed tree heads every `tree_head_every` records,
/// segments of `segment_size` bytes (small, so a test's log spans several).
pub fn audit_options(
    signer: Arc<penghubung::audit::Signer>,
    segment_size: u64,
    tree_head_every: u64,
) -> penghubung::audit::WriterOptions {
    penghubung::audit::WriterOptions {
        durability: penghubung::config::Durability::Sync,
        flush_interval: std::time::Duration::from_millis(10),
        segment_size,
        queue: 1024,
        signer: Some(signer),
        gateway: "spl.test".into(),
        tree_head_every,
        tree_head_interval: std::time::Duration::from_secs(3600),
    }
}

/// A fresh Ed25519 audit signing key in `dir/audit.key`, loaded.
pub fn audit_signer(dir: &Path) -> Arc<penghubung::audit::Signer> {
    let key = dir.join("audit.key");
    std::fs::write(&key, penghubung::pki::ed25519_key_pem().unwrap()).unwrap();
    Arc::new(penghubung::audit::Signer::from_pem_file(&key).unwrap())
}
