//! `penghubung suspend` and `resume`: the admin API's `POST /v1/suspend` and `/v1/resume`, from
//! the command line. Plain HTTP to a loopback admin listener; HTTPS with the administrator's
//! certificate when `[admin] identities` is set (`--cacert`, `--cert`, `--key`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What to suspend or resume, and where the admin API is.
#[derive(Args)]
pub struct SuspensionArgs {
    /// The admin listener (`[gateway] admin_listen`), as HOST:PORT.
    #[arg(long, env = "PENGHUBUNG_ADMIN", default_value = "127.0.0.1:9090")]
    admin: String,
    /// An agency or peer (its code or id): every exchange it makes as consumer.
    #[arg(long, group = "what")]
    agency: Option<String>,
    /// An agreement: every exchange under it.
    #[arg(long, group = "what")]
    agreement: Option<String>,
    /// A service: every exchange with it, whoever calls.
    #[arg(long, group = "what")]
    service: Option<String>,
    /// The CA that issued the admin listener's certificate (HTTPS admin API).
    #[arg(long, requires = "cert")]
    cacert: Option<PathBuf>,
    /// The administrator's client certificate (HTTPS admin API).
    #[arg(long, requires_all = ["key", "cacert"])]
    cert: Option<PathBuf>,
    /// The administrator's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

/// `suspend` (with a reason) or `resume` (without).
pub async fn suspension_command(
    args: SuspensionArgs,
    reason: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut body = serde_json::Map::new();
    for (key, value) in [
        ("agency", &args.agency),
        ("agreement", &args.agreement),
        ("service", &args.service),
    ] {
        if let Some(id) = value {
            body.insert(key.to_owned(), id.clone().into());
        }
    }
    if body.is_empty() {
        eprintln!("penghubung: name what to act on: --agency, --agreement or --service");
        return Ok(ExitCode::FAILURE);
    }
    let path = match reason {
        Some(reason) => {
            body.insert("reason".to_owned(), reason.into());
            "/v1/suspend"
        }
        None => "/v1/resume",
    };
    let (status, answer) = match post(&args, path, serde_json::Value::Object(body)).await {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!(
                "penghubung: the admin API at {} did not answer: {e}",
                args.admin
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let text = String::from_utf8_lossy(&answer);
    if status.is_success() {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let detail = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|doc| doc["detail"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned());
    eprintln!("penghubung: {path}: {status}: {detail}");
    Ok(ExitCode::FAILURE)
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

async fn post(
    args: &SuspensionArgs,
    path: &str,
    body: serde_json::Value,
) -> Result<(http::StatusCode, Bytes), Failure> {
    let tcp = TcpStream::connect(&args.admin).await?;
    let scheme = if args.cert.is_some() { "https" } else { "http" };
    let request = http::Request::post(format!("{scheme}://{}{path}", args.admin))
        .header(http::header::HOST, &args.admin)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let response = match (&args.cacert, &args.cert, &args.key) {
        (Some(ca), Some(cert), Some(key)) => {
            let tls = tls(ca, cert, key)?;
            let host = args.admin.rsplit_once(':').map_or(&*args.admin, |(h, _)| h);
            let name =
                rustls_pki_types::ServerName::try_from(host.trim_matches(['[', ']']))?.to_owned();
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            send(TokioIo::new(stream), request).await?
        }
        _ => send(TokioIo::new(tcp), request).await?,
    };
    Ok(response)
}

async fn send<T>(
    io: T,
    request: http::Request<Full<Bytes>>,
) -> Result<(http::StatusCode, Bytes), Failure>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn tls(
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ClientConfig>, Failure> {
    let mut roots = rustls::RootCertStore::empty();
    for c in penghubung::tls::load_certs(ca)? {
        roots.add(c)?;
    }
    let chain = penghubung::tls::load_certs(cert)?;
    let key = penghubung::tls::load_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(config))
}
