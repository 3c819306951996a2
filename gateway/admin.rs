//! The admin listener (`[gateway] admin_listen`: plain HTTP on loopback, or HTTPS with admin
//! client certificates when `[admin] identities` is set):
//! `/healthz`, `/readyz`, `/metrics`, `/v1/catalog`, `/v1/certificates`, `/v1/sla`, `POST /v1/reload` and
//! `POST /v1/cache/purge`, through the same handles the
//! pipeline uses. Errors are problem+json documents, like the pipeline's.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

use crate::body::{full, Body};
use crate::runtime::{Gateway, PurgeError, ReloadError};
use crate::server::Accept;

/// At most this many admin connections are open at once; further ones wait in the kernel's
/// backlog. The admin API serves a few operators and scrapers, never a crowd.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Serves the admin API on `listener` until `shutdown` resolves, with the discipline of the
/// main listener: a connection cap, back-off on accept errors, and a deadline for request
/// heads (`[gateway] header_read_timeout`, `max_header_size`).
pub async fn serve_admin(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let accept = Accept::new(listener, MAX_ADMIN_CONNECTIONS);
    loop {
        let (stream, remote, permit) = tokio::select! {
            next = accept.next() => next,
            () = &mut shutdown => return,
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            connection(gateway, stream, remote).await;
            drop(permit);
        });
    }
}

/// One admin connection. Without `[admin] identities` (loopback only, enforced at load) it is
/// plain HTTP/1.1. With them it is HTTPS with the gateway's certificate and a client
/// certificate required from `tls.client_ca`; a certificate that names no administrator gets
/// 403 for every request. Both follow the configuration in force when the connection arrives.
async fn connection(gateway: Arc<Gateway>, stream: TcpStream, remote: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let active = gateway.active();
    let snapshot = active.snapshot.clone();
    drop(active);
    let settings = &snapshot.gateway;
    let mut http = auto::Builder::new(TokioExecutor::new());
    // A client that trickles its request head is cut off, as on the main listener.
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_size as usize);
    http.http2().max_header_list_size(settings.max_header_size);
    if settings.admin_identities.is_empty() {
        let by = Some(format!("admin {remote}"));
        let _ = http
            .http1_only()
            .serve_connection(TokioIo::new(stream), admin_service(gateway, by))
            .await;
        return;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(snapshot.server_tls.clone());
    let tls =
        match tokio::time::timeout(snapshot.gateway.handshake_timeout, acceptor.accept(stream))
            .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::info!(%remote, error = %e, "admin TLS handshake refused");
                return;
            }
            Err(_) => return,
        };
    let names = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|cert| snapshot.identity.extract(cert).names)
        .unwrap_or_default();
    let admin = names
        .iter()
        .find(|n| snapshot.gateway.admin_identities.contains(n));
    let by = match admin {
        Some(name) => Some(format!("admin {name} from {remote}")),
        None => {
            tracing::warn!(%remote, ?names, "admin API refused: the certificate names no administrator");
            None
        }
    };
    let _ = http
        .serve_connection(TokioIo::new(tls), admin_service(gateway, by))
        .await;
}

/// The admin API for one connection: `by` names the administrator (as audit records say it),
/// `None` refuses every request.
fn admin_service(
    gateway: Arc<Gateway>,
    by: Option<String>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    let by: Option<Arc<str>> = by.map(Arc::from);
    service_fn(move |request: Request<Incoming>| {
        let gateway = gateway.clone();
        let by = by.clone();
        async move {
            Ok::<_, Infallible>(match by {
                Some(by) => answer(&gateway, request, &by).await,
                None => problem(
                    StatusCode::FORBIDDEN,
                    "not-an-administrator",
                    "the client certificate names no identity listed in [admin] identities",
                ),
            })
        }
    })
}

async fn answer(gateway: &Gateway, request: Request<Incoming>, by: &str) -> Response<Body> {
    let path = request.uri().path();
    if path == "/v1/reload" {
        if request.method() != Method::POST {
            return problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "reloading is a POST",
            );
        }
        return reload(gateway, by).await;
    }
    if path == "/v1/cache/purge" {
        if request.method() != Method::POST {
            return problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "purging is a POST",
            );
        }
        return purge(gateway, request, by).await;
    }
    if path == "/v1/suspend" || path == "/v1/resume" {
        if request.method() != Method::POST {
            return problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "suspending and resuming are POSTs",
            );
        }
        let suspend = path == "/v1/suspend";
        return suspension(gateway, request, suspend, by).await;
    }
    if request.method() != Method::GET {
        return problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            &format!("{path} answers GET only"),
        );
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readiness(gateway),
        "/v1/sla" => json(&gateway.sla().report()),
        "/v1/certificates" => {
            let now = time::OffsetDateTime::now_utc();
            let warn_days = crate::inventory::DEFAULT_WARN_DAYS;
            let mut doc = crate::inventory::certificates_json(&gateway.snapshot(), now, warn_days);
            let seen = gateway.certificates_seen();
            doc["seen"] = crate::inventory::seen_json(&seen, now, warn_days);
            json(&doc)
        }
        "/v1/catalog" => json(&crate::inventory::catalog_json(
            &gateway.snapshot(),
            gateway.today(),
            &gateway.suspensions(),
        )),
        "/v1/suspensions" => json(&serde_json::json!({ "suspensions": *gateway.suspensions() })),
        "/metrics" => {
            let mut response = text(StatusCode::OK, &gateway.metrics_text());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => problem(
            StatusCode::NOT_FOUND,
            "no-route",
            &format!("the admin API has no {path}"),
        ),
    }
}

/// `/readyz`: 200 while the gateway can serve (configuration loaded, audit log writable), 503
/// when it cannot; the body says why, with every service's upstreams and how they stand. A
/// service whose upstreams are all out does not make the gateway unready: its callers get 503
/// problems while every other service goes on.
fn readiness(gateway: &Gateway) -> Response<Body> {
    let audit = match gateway.audit() {
        None => "off",
        Some(audit) if audit.healthy() => "ok",
        Some(audit) if audit.full() => "full",
        Some(_) => "failing",
    };
    let active = gateway.active();
    let services: Vec<serde_json::Value> = gateway
        .upstream_health()
        .into_iter()
        .map(|s| {
            let upstreams: Vec<serde_json::Value> = s
                .upstreams
                .iter()
                .map(|(url, health, in_flight)| {
                    serde_json::json!({"url": url, "state": health.as_str(), "in_flight": in_flight})
                })
                .collect();
            let available = s
                .upstreams
                .iter()
                .any(|(_, health, _)| *health == crate::upstream::UpstreamHealth::Up);
            serde_json::json!({"id": s.service, "available": available, "upstreams": upstreams})
        })
        .collect();
    let ready = audit != "failing";
    let mut response = json(&serde_json::json!({
        "status": if ready { "ready" } else { "not-ready" },
        "audit": audit,
        "config": {
            "generation": active.generation,
            "digest": active.snapshot.digest,
            "source": active.snapshot.source.display().to_string(),
        },
        "services": services,
    }));
    if !ready {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response
}

/// What to purge: nothing named is everything.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PurgeScope {
    service: Option<String>,
    operation: Option<String>,
}

/// `POST /v1/cache/purge` with an optional JSON body `{"service": …, "operation": …}`.
async fn purge(gateway: &Gateway, request: Request<Incoming>, by: &str) -> Response<Body> {
    let body = match crate::body::collect_within(request.into_body(), None, 4096, None).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "malformed-body",
                &format!("the body could not be read (at most 4 KiB): {e}"),
            )
        }
    };
    let scope = if body.iter().all(u8::is_ascii_whitespace) {
        PurgeScope::default()
    } else {
        match serde_json::from_slice::<PurgeScope>(&body) {
            Ok(scope) => scope,
            Err(e) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "malformed-json",
                    &format!("expected {{\"service\": …, \"operation\": …}} (both optional): {e}"),
                )
            }
        }
    };
    match gateway
        .purge_cache(scope.service.as_deref(), scope.operation.as_deref(), by)
        .await
    {
        Ok(purged) => {
            let doc = serde_json::json!({
                "purged": purged,
                "service": scope.service,
                "operation": scope.operation,
            });
            json_line(&doc)
        }
        Err(e @ (PurgeError::UnknownService(_) | PurgeError::UnknownOperation { .. })) => {
            problem(StatusCode::NOT_FOUND, "no-such-scope", &e.to_string())
        }
        Err(e @ PurgeError::OperationWithoutService) => {
            problem(StatusCode::BAD_REQUEST, "no-such-scope", &e.to_string())
        }
        Err(e @ PurgeError::Unrecorded(_)) => {
            tracing::error!(error = %e, "cache purge refused");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit-unavailable",
                "the purge could not be recorded in the audit log, so it was not done",
            )
        }
    }
}

/// What `/v1/suspend` and `/v1/resume` name: exactly one of `agency`, `agreement`, `service`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SuspensionAct {
    agency: Option<String>,
    agreement: Option<String>,
    service: Option<String>,
    #[serde(default)]
    reason: String,
}

/// `POST /v1/suspend` `{"agency" | "agreement" | "service": id, "reason": "…"}` and
/// `POST /v1/resume` `{"agency" | "agreement" | "service": id}`.
async fn suspension(
    gateway: &Gateway,
    request: Request<Incoming>,
    suspend: bool,
    by: &str,
) -> Response<Body> {
    use crate::suspension::{Scope, SuspendError};
    const SHAPE: &str =
        "expected {\"agency\" | \"agreement\" | \"service\": id, \"reason\": \"…\"}";
    let body = match crate::body::collect_within(request.into_body(), None, 4096, None).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "malformed-body",
                &format!("the body could not be read (at most 4 KiB): {e}"),
            )
        }
    };
    let act = match serde_json::from_slice::<SuspensionAct>(&body) {
        Ok(act) => act,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                &format!("{SHAPE}: {e}"),
            )
        }
    };
    let named = [
        (Scope::Agency, act.agency),
        (Scope::Agreement, act.agreement),
        (Scope::Service, act.service),
    ];
    let mut named = named.into_iter().filter_map(|(s, id)| id.map(|id| (s, id)));
    let (scope, id) = match (named.next(), named.next()) {
        (Some(one), None) => one,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                &format!("{SHAPE}: name exactly one"),
            )
        }
    };
    let done = if suspend {
        gateway.suspend(scope, &id, &act.reason, by).await
    } else {
        gateway.resume(scope, &id, by).await
    };
    match done {
        Ok(s) => {
            let doc = serde_json::json!({
                "suspended": suspend,
                "scope": s.scope,
                "id": s.id,
                "reason": s.reason,
                "since": s.since,
                "by": s.by,
            });
            json_line(&doc)
        }
        Err(e @ (SuspendError::Unknown { .. } | SuspendError::NotSuspended { .. })) => {
            problem(StatusCode::NOT_FOUND, "no-such-scope", &e.to_string())
        }
        Err(e @ SuspendError::AlreadySuspended { .. }) => {
            problem(StatusCode::CONFLICT, "already-suspended", &e.to_string())
        }
        Err(e @ SuspendError::NoReason) => {
            problem(StatusCode::BAD_REQUEST, "malformed-json", &e.to_string())
        }
        Err(e @ SuspendError::Unrecorded(_)) => {
            tracing::error!(error = %e, "suspension act refused");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit-unavailable",
                &e.to_string(),
            )
        }
        Err(e @ SuspendError::NotPersisted { .. }) => {
            tracing::error!(error = %e, "suspension not persisted");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "not-persisted",
                &e.to_string(),
            )
        }
    }
}

/// `POST /v1/reload`: the file is read, validated and swapped in, or refused with every error.
async fn reload(gateway: &Gateway, by: &str) -> Response<Body> {
    match gateway.reload(by).await {
        Ok(done) => {
            let doc = serde_json::json!({
                "generation": done.generation,
                "sha256": done.digest,
                "cache_dropped": done.cache_dropped,
                "changes": done.changes,
                "warnings": done.warnings.iter().map(|w| format!("{}: {}", w.path, w.message)).collect::<Vec<_>>(),
            });
            json_line(&doc)
        }
        Err(ReloadError::Invalid(errors)) => {
            let mut response = problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "config-invalid",
                &format!(
                    "{}: {} error(s); the running configuration stays",
                    errors.file.display(),
                    errors.errors.len()
                ),
            );
            let list: Vec<serde_json::Value> = errors
                .errors
                .iter()
                .map(|e| serde_json::json!({"path": e.path, "message": e.message}))
                .collect();
            let doc = serde_json::json!({
                "type": "urn:penghubung:problem:config-invalid",
                "title": "Unprocessable Entity",
                "status": 422,
                "detail": format!("{}: {} error(s); the running configuration stays", errors.file.display(), errors.errors.len()),
                "errors": list,
            });
            *response.body_mut() = full(doc.to_string());
            response
        }
        Err(e @ ReloadError::Unrecorded(_)) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit-unavailable",
            &e.to_string(),
        ),
        Err(e @ ReloadError::Unarchived(_)) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reload-failed",
            &e.to_string(),
        ),
        Err(e @ ReloadError::Internal(_)) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reload-failed",
            &e.to_string(),
        ),
    }
}

/// 200 with `doc`, pretty-printed: the documents an operator reads.
fn json(doc: &serde_json::Value) -> Response<Body> {
    json_text(format!("{doc:#}\n"))
}

/// 200 with `doc` on one line: the answer to an act.
fn json_line(doc: &serde_json::Value) -> Response<Body> {
    json_text(format!("{doc}\n"))
}

fn json_text(body: String) -> Response<Body> {
    let mut response = text(StatusCode::OK, &body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An RFC 9457 problem document, with the pipeline's slugs where they mean the same.
fn problem(status: StatusCode, slug: &str, detail: &str) -> Response<Body> {
    let doc = serde_json::json!({
        "type": format!("urn:penghubung:problem:{slug}"),
        "title": status.canonical_reason().unwrap_or(""),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = Response::new(full(doc.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(full(body.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
