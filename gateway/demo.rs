//! `penghubung demo`: a development PKI, two sample PD services behind mTLS (a Dukcapil
//! population lookup and a Dinkes health-facility list, with obviously fake data), and the
//! gateway in front of them, with curl commands that work when pasted.
//!
//! The sample services are also what the tests use as upstreams ([`serve_sample`]).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::body::{full, Body};
use crate::pki;

/// What a sample service sees of a request: enough for handlers and for tests' assertions.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// A sample service's request handler.
pub type Handler = Arc<dyn Fn(Seen) -> Response<Body> + Send + Sync>;

/// The files and addresses of a prepared demo.
pub struct Demo {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub listen: SocketAddr,
    pub grpc: SocketAddr,
}

/// Serves `handler` over TLS on `listener` until the task is dropped. With a verifying
/// `tls` configuration (see [`crate::tls::server_config`]) only holders of a certificate from
/// the trusted CA, such as the gateway, get an answer.
pub async fn serve_sample(listener: TcpListener, tls: Arc<rustls::ServerConfig>, handler: Handler) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |request: Request<Incoming>| {
                let handler = handler.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let seen = Seen {
                        method: parts.method,
                        path_and_query: parts
                            .uri
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        headers: parts.headers,
                        body,
                    };
                    Ok::<_, Infallible>(handler(seen))
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The schemas the demo's operations use, written into `<dir>/schemas`.
const SCHEMAS: [(&str, &str); 6] = [
    (
        "common/nik.v1.json",
        include_str!("../schemas/common/nik.v1.json"),
    ),
    (
        "common/tanggal.v1.json",
        include_str!("../schemas/common/tanggal.v1.json"),
    ),
    (
        "common/daftar.v1.json",
        include_str!("../schemas/common/daftar.v1.json"),
    ),
    (
        "dukcapil/penduduk.v1.json",
        include_str!("../schemas/dukcapil/penduduk.v1.json"),
    ),
    (
        "dukcapil/verifikasi-request.v1.json",
        include_str!("../schemas/dukcapil/verifikasi-request.v1.json"),
    ),
    (
        "dinkes/faskes-daftar.v1.json",
        include_str!("../schemas/dinkes/faskes-daftar.v1.json"),
    ),
];

/// Fake residents of Parigi Moutong (regency code 72.08); NIKs follow the real structure but
/// the people do not exist.
const RESIDENTS: [(&str, &str, &str, &str); 3] = [
    ("7208014101900001", "WARGA CONTOH SATU", "1990-01-01", "P"),
    ("7208020203850002", "WARGA CONTOH DUA", "1985-03-02", "L"),
    ("7208035512000003", "WARGA CONTOH TIGA", "2000-12-15", "P"),
];

/// The Dukcapil sample: `GET /penduduk/{nik}` and `POST /verifikasi`.
pub fn dukcapil_handler() -> Handler {
    Arc::new(|seen: Seen| {
        let consumer = seen
            .headers
            .get("spl-consumer")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let path = seen.path_and_query.split('?').next().unwrap_or("");
        match (seen.method.as_str(), path.strip_prefix("/penduduk/")) {
            ("GET", Some(nik)) => match RESIDENTS.iter().find(|r| r.0 == nik) {
                Some((nik, nama, lahir, jk)) => json_response(
                    StatusCode::OK,
                    &json!({
                        "nik": nik, "nama": nama, "tanggal_lahir": lahir, "jenis_kelamin": jk,
                        "kabupaten": "PARIGI MOUTONG", "catatan": "data fiktif untuk demo",
                        "diminta_oleh": consumer,
                    }),
                ),
                None => json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"pesan": "NIK tidak ditemukan"}),
                ),
            },
            ("POST", None) if path == "/verifikasi" => {
                let asked: serde_json::Value =
                    serde_json::from_slice(&seen.body).unwrap_or_default();
                let cocok = RESIDENTS.iter().any(|r| {
                    Some(r.0) == asked["nik"].as_str() && Some(r.1) == asked["nama"].as_str()
                });
                json_response(
                    StatusCode::OK,
                    &json!({ "cocok": cocok, "diminta_oleh": consumer }),
                )
            }
            _ => json_response(StatusCode::NOT_FOUND, &json!({"pesan": "tidak ada"})),
        }
    })
}

/// The Dinkes sample: `GET /faskes` lists fake health facilities.
pub fn dinkes_handler() -> Handler {
    Arc::new(|seen: Seen| {
        let items = json!([
            {"kode": "FKTP-7208-001", "nama": "Puskesmas Contoh Parigi", "jenis": "puskesmas"},
            {"kode": "FKTP-7208-002", "nama": "Puskesmas Contoh Tinombo", "jenis": "puskesmas"},
            {"kode": "FKRTL-7208-001", "nama": "RSUD Contoh Anuntaloko", "jenis": "rumah_sakit"},
        ]);
        match (seen.method.as_str(), seen.path_and_query.split('?').next()) {
            ("GET", Some("/faskes")) => json_response(
                StatusCode::OK,
                &json!({
                    "data": items,
                    "meta": {"halaman": 1, "per_halaman": 20, "total": 3},
                    "catatan": "data fiktif untuk demo",
                }),
            ),
            _ => json_response(StatusCode::NOT_FOUND, &json!({"pesan": "tidak ada"})),
        }
    })
}

/// Creates `dir` with a PKI and a configuration whose upstreams are the sample services, which
/// are started on loopback; returns the prepared demo and a future that runs the services.
pub async fn prepare(
    dir: &Path,
    listen: SocketAddr,
    grpc: SocketAddr,
) -> anyhow::Result<(Demo, impl Future<Output = ()>)> {
    let pki_dir = dir.join("pki");
    let (ca, _) = pki::init(
        &pki_dir,
        &["localhost", "127.0.0.1"],
        &[
            ("dinkes", "dinkes.demo.parigimoutongkab.go.id"),
            ("dukcapil", "dukcapil.demo.parigimoutongkab.go.id"),
            ("bappeda", "bappeda.demo.parigimoutongkab.go.id"),
            ("splp-nasional", "splp.demo.go.id"),
        ],
    )?;
    // The PD services' own server certificate, from the same CA the gateway trusts upstream.
    let services = ca.issue_server("layanan-pd.demo", &["127.0.0.1", "localhost"])?;

    let sample_tls = crate::tls::server_config(
        vec![services.cert.clone()],
        services.key.clone_key(),
        vec![ca.cert()],
        Vec::new(),
    )
    .map_err(anyhow::Error::msg)?;
    let dukcapil = TcpListener::bind("127.0.0.1:0").await?;
    let dinkes = TcpListener::bind("127.0.0.1:0").await?;
    let (dukcapil_addr, dinkes_addr) = (dukcapil.local_addr()?, dinkes.local_addr()?);
    let run = {
        let tls = sample_tls.clone();
        async move {
            tokio::join!(
                serve_sample(dukcapil, tls.clone(), dukcapil_handler()),
                serve_sample(dinkes, tls, dinkes_handler()),
            );
        }
    };

    for (name, text) in SCHEMAS {
        let path = dir.join("schemas").join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    let documents = agreement_documents(dir)?;
    let config = dir.join("penghubung.toml");
    std::fs::write(
        &config,
        demo_config(listen, grpc, dukcapil_addr, dinkes_addr, &documents),
    )?;
    sign_agreements(dir, &config, &pki_dir)?;
    Ok((
        Demo {
            dir: dir.to_path_buf(),
            config,
            listen,
            grpc,
        },
        run,
    ))
}

/// The demo's agreements: (id, the agreement document as signed on paper, stood for by a text).
const AGREEMENTS: [(&str, &str); 2] = [
    (
        "PKS-DEMO-001",
        "PERJANJIAN KERJA SAMA (contoh) PKS-DEMO-001\nDinas Kependudukan dan Pencatatan Sipil dan Dinas Kesehatan\nPemanfaatan data kependudukan untuk verifikasi peserta JKN.\n",
    ),
    (
        "PKS-DEMO-NASIONAL",
        "PERJANJIAN KERJA SAMA (contoh) PKS-DEMO-NASIONAL\nDinas Kependudukan dan Pencatatan Sipil dan SPLP Nasional\nIntegrasi data kependudukan nasional.\n",
    ),
];

/// Writes each agreement's document under `agreements/` and returns its SHA-256, in the
/// order of [`AGREEMENTS`].
fn agreement_documents(dir: &Path) -> anyhow::Result<Vec<String>> {
    let folder = dir.join("agreements");
    std::fs::create_dir_all(&folder)?;
    AGREEMENTS
        .iter()
        .map(|(id, text)| {
            std::fs::write(folder.join(format!("{id}.txt")), text)?;
            Ok(crate::keys::sha256_hex(text.as_bytes()))
        })
        .collect()
}

/// Dukcapil, the data owner (wali data) of both agreements' service, signs their terms with
/// its agency key, as `penghubung agreement sign` does: under `owner_consent = "required"`
/// the gateway loads no agreement without it.
fn sign_agreements(dir: &Path, config: &Path, pki_dir: &Path) -> anyhow::Result<()> {
    let chain =
        crate::tls::load_certs(&pki_dir.join("dukcapil.crt")).map_err(anyhow::Error::msg)?;
    let key = crate::tls::load_key(&pki_dir.join("dukcapil.key")).map_err(anyhow::Error::msg)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (id, _) in AGREEMENTS {
        let terms = crate::config::agreement_terms(config, id)?;
        let signed = crate::consent::sign(&terms, crate::consent::Role::Owner, &chain, &key, now)?;
        std::fs::write(
            dir.join("agreements").join(format!("{id}.sig")),
            signed.to_json(),
        )?;
    }
    Ok(())
}

/// The curl commands printed for the demo, relative to the current directory.
pub fn curl_commands(demo: &Demo) -> String {
    let d = demo.dir.display();
    let port = demo.listen.port();
    let curl = |agency: &str| {
        format!("curl -sS --cacert {d}/pki/ca.crt --cert {d}/pki/{agency}.crt --key {d}/pki/{agency}.key")
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Dinkes looks up a resident in Dukcapil's population service, under agreement PKS-DEMO-001:"
    );
    let _ = writeln!(
        out,
        "{} https://localhost:{port}/dukcapil/penduduk/penduduk/7208014101900001",
        curl("dinkes")
    );
    let _ = writeln!(
        out,
        "\n# The same lookup again within cache_ttl (60 s): answered from the gateway's cache, with `Age`\n# (authorization, quota and audit still apply to every hit):"
    );
    let _ = writeln!(
        out,
        "{} -i https://localhost:{port}/dukcapil/penduduk/penduduk/7208014101900001",
        curl("dinkes")
    );
    let _ = writeln!(out, "\n# Dinkes verifies a name against a NIK (POST):");
    let _ = writeln!(
        out,
        "{} -H 'content-type: application/json' -d '{{\"nik\":\"7208020203850002\",\"nama\":\"WARGA CONTOH DUA\"}}' https://localhost:{port}/dukcapil/penduduk/verifikasi",
        curl("dinkes")
    );
    let _ = writeln!(
        out,
        "\n# A request that breaks its schema (a NIK with day 40) never reaches the service: 422:"
    );
    let _ = writeln!(
        out,
        "{} -H 'content-type: application/json' -d '{{\"nik\":\"7208014001900001\"}}' https://localhost:{port}/dukcapil/penduduk/verifikasi",
        curl("dinkes")
    );
    let _ = writeln!(
        out,
        "\n# Dukcapil lists Dinkes' health facilities, over HTTP/2:"
    );
    let _ = writeln!(
        out,
        "{} --http2 https://localhost:{port}/dinkes/faskes/faskes",
        curl("dukcapil")
    );
    let _ = writeln!(
        out,
        "\n# Bappeda has no agreement and only `terbuka` clearance: refused with a problem document:"
    );
    let _ = writeln!(
        out,
        "{} https://localhost:{port}/dukcapil/penduduk/penduduk/7208014101900001",
        curl("bappeda")
    );
    let _ = writeln!(
        out,
        "\n# An undeclared operation, and a call without a client certificate:"
    );
    let _ = writeln!(
        out,
        "{} -i https://localhost:{port}/dukcapil/penduduk/admin",
        curl("dinkes")
    );
    let _ = writeln!(out, "curl -sS --cacert {d}/pki/ca.crt https://localhost:{port}/dinkes/faskes/faskes || echo 'refused at the TLS handshake'");
    let _ = writeln!(
        out,
        "\n# The national SPL (a [[peers]] entry with agreement PKS-DEMO-NASIONAL) looks the resident up over gRPC,\n# with a stock client: Python grpcio (python3 -m pip install grpcio grpcio-tools), from the repository root:"
    );
    let _ = writeln!(
        out,
        "python3 examples/grpc/call.py --addr localhost:{} --ca {d}/pki/ca.crt --cert {d}/pki/splp-nasional.crt --key {d}/pki/splp-nasional.key call dukcapil-penduduk get-penduduk --param nik=7208014101900001",
        demo.grpc.port()
    );
    let _ = writeln!(
        out,
        "\n# Only Dukcapil, the data owner, opens its data: PKS-DEMO-001 loads because Dukcapil signed its terms.\n# Widen the agreement in {d}/penghubung.toml and the gateway refuses the file; print the terms and sign again:"
    );
    let _ = writeln!(
        out,
        "penghubung agreement terms --config {d}/penghubung.toml --id PKS-DEMO-001"
    );
    let _ = writeln!(
        out,
        "penghubung agreement sign --config {d}/penghubung.toml --id PKS-DEMO-001 --cert {d}/pki/dukcapil.crt --key {d}/pki/dukcapil.key > {d}/agreements/PKS-DEMO-001.sig"
    );
    out
}

fn demo_config(
    listen: SocketAddr,
    grpc: SocketAddr,
    dukcapil: SocketAddr,
    dinkes: SocketAddr,
    documents: &[String],
) -> String {
    let (pks, nasional) = (&documents[0], &documents[1]);
    format!(
        r#"# Generated by `penghubung demo`; rewritten on every run. See config/ for an annotated example.
[gateway]
id = "spl.demo.parigimoutongkab"
listen = "{listen}"
grpc_listen = "{grpc}"             # gRPC (mTLS) for the provincial / national SPL
admin_listen = "127.0.0.1:0"       # the admin API (/metrics, /healthz); its port is logged at start
data_dir = "data"
shutdown_grace = "5s"

[tls]
cert = "pki/gateway.crt"
key = "pki/gateway.key"
client_ca = ["pki/ca.crt"]

[identity]
field = "subject.CN"

[audit]
signing_key = "pki/audit.key"
redaction_key = "pki/redaction.key"

# Only the data owner opens its data: an agreement for a service above `terbuka` loads only with
# its owner's signature over its terms (`penghubung agreement sign`), or on the Bupati's order.
[governance]
owner_consent = "required"

[[agencies]]
code = "dinkes"
name = "Dinas Kesehatan (demo)"
clearance = "terbatas"
clearance_basis = "Keputusan Kepala Dinas Kominfo No. DEMO/1/2025"
identities = ["dinkes.demo.parigimoutongkab.go.id"]

[[agencies]]
code = "dukcapil"
name = "Dinas Kependudukan dan Pencatatan Sipil (demo)"
clearance = "rahasia"
clearance_basis = "Keputusan Kepala Dinas Kominfo No. DEMO/2/2025"
identities = ["dukcapil.demo.parigimoutongkab.go.id"]

[[agencies]]
code = "bappeda"
name = "Badan Perencanaan Pembangunan Daerah (demo)"
clearance = "terbuka"
identities = ["bappeda.demo.parigimoutongkab.go.id"]

[[services]]
id = "dukcapil-penduduk"
owner = "dukcapil"
classification = "terbatas"
prefix = "/dukcapil/penduduk"
upstreams = ["https://{dukcapil}"]
upstream_ca = "pki/ca.crt"
timeout = "5s"

  [[services.operations]]
  id = "get-penduduk"
  method = "GET"
  path = "/penduduk/{{nik}}"
  response_schema = "dukcapil/penduduk.v1.json"
  cache_ttl = "60s"
  [services.operations.params]
  nik = "common/nik.v1.json"

  [[services.operations]]
  id = "verifikasi"
  method = "POST"
  path = "/verifikasi"
  request_schema = "dukcapil/verifikasi-request.v1.json"

[[services]]
id = "dinkes-faskes"
owner = "dinkes"
classification = "terbuka"
prefix = "/dinkes/faskes"
upstreams = ["https://{dinkes}"]
upstream_ca = "pki/ca.crt"
timeout = "5s"

  [[services.operations]]
  id = "list-faskes"
  method = "GET"
  path = "/faskes"
  response_schema = "dinkes/faskes-daftar.v1.json"

[[agreements]]
id = "PKS-DEMO-001"
consumer = "dinkes"
service = "dukcapil-penduduk"
purpose = "Verifikasi peserta JKN (demo)"
valid_from = 2025-01-01
valid_until = 2030-12-31
rate = "20/s"
basis = "kesepakatan"
document_sha256 = "{pks}"            # sha256sum agreements/PKS-DEMO-001.txt
owner_signature = "agreements/PKS-DEMO-001.sig"

# The national SPL, calling over gRPC: a consumer like an agency, under its own agreement.
[[peers]]
id = "splp-nasional"
kind = "national"
name = "SPLP Nasional (demo)"
clearance = "terbatas"
clearance_basis = "Keputusan Kepala Dinas Kominfo No. DEMO/3/2025"
identities = ["splp.demo.go.id"]

[[agreements]]
id = "PKS-DEMO-NASIONAL"
consumer = "splp-nasional"
service = "dukcapil-penduduk"
operations = ["get-penduduk"]
purpose = "Integrasi data kependudukan nasional (demo)"
valid_from = 2025-01-01
valid_until = 2030-12-31
document_sha256 = "{nasional}"
owner_signature = "agreements/PKS-DEMO-NASIONAL.sig"
"#
    )
}
