//! The request path, top to bottom. Every stage returns `Result<_, Reject>`; the first refusal
//! becomes the response. Reading [`run`] is reading what the gateway does to a request.

use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_LENGTH, HOST};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::body::{read_limited, Body};
use crate::caller::Caller;
use crate::config::Snapshot;
use crate::exchange::Exchange;
use crate::reject::{Reject, Severity};
use crate::route::{self, Miss};
use crate::upstream::{self, Forwarding, Pool, SPL_EXCHANGE_ID};

/// The gateway as a value: a snapshot and the handles the pipeline calls. Tests drive it
/// without sockets where they can; the server drives it from connections.
pub struct Gateway {
    snapshot: Arc<Snapshot>,
    upstreams: Pool,
}

// === impl Gateway ===

impl Gateway {
    pub fn new(snapshot: Arc<Snapshot>) -> Gateway {
        let upstreams = Pool::new(&snapshot);
        Gateway {
            snapshot,
            upstreams,
        }
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Handles one request; never fails: a refusal is a problem+json response. Every response
    /// carries `SPL-Exchange-Id`.
    pub async fn handle(&self, caller: &Caller, request: Request<Incoming>) -> Response<Body> {
        let exchange = Exchange::begin(request.headers());
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let mut response = match run(self, caller, &exchange, request).await {
            Ok(response) => response,
            Err(reject) => {
                log_refusal(&reject, caller, &exchange, &method, &path);
                reject.to_response(&exchange.id)
            }
        };
        if let Ok(id) = HeaderValue::from_str(&exchange.id) {
            response.headers_mut().insert(SPL_EXCHANGE_ID, id);
        }
        response
    }
}

/// accept → TLS + identity (done per connection: `caller`) → route → (authorize, validate,
/// cache: later stages) → read body → upstream → respond.
async fn run(
    gw: &Gateway,
    caller: &Caller,
    exchange: &Exchange,
    request: Request<Incoming>,
) -> Result<Response<Body>, Reject> {
    let snapshot = &*gw.snapshot;

    // Identity: the certificate was verified at the handshake; it must also name an agency.
    let consumer = caller.agency.ok_or(Reject::UnknownAgency)?;
    let consumer = &snapshot.agencies[consumer];

    // Route: normalise, then service by prefix and operation by template and method.
    let path = route::normalize(request.uri().path())?;
    let matched = snapshot
        .routes
        .lookup(request.method(), &path)
        .map_err(|miss| miss_to_reject(snapshot, miss, request.method()))?;
    let service = &snapshot.services[matched.service];

    // Body: bounded, and read completely before any upstream contact.
    let (mut parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = read_limited(body, declared, service.max_request_body).await?;

    // Upstream: rewrite headers, forward, and pass the response back.
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    upstream::to_upstream(
        &mut parts.headers,
        &Forwarding {
            consumer: &consumer.code,
            exchange,
            client: caller.remote,
            host: host.as_deref(),
        },
    );
    let target = path.encoded_from(matched.prefix_len);
    let query = parts.uri.query().map(str::to_owned);
    let request = Request::from_parts(parts, Full::new(body));
    let response = gw
        .upstreams
        .forward(matched.service, service, &target, query.as_deref(), request)
        .await?;

    let (mut parts, body) = response.into_parts();
    upstream::to_caller(&mut parts.headers);
    tracing::debug!(
        exchange_id = %exchange.id,
        consumer = %consumer.code,
        service = %service.id,
        operation = %service.operations[matched.operation].id,
        status = parts.status.as_u16(),
        "forwarded"
    );
    Ok(Response::from_parts(parts, body.boxed()))
}

fn miss_to_reject(snapshot: &Snapshot, miss: Miss, method: &http::Method) -> Reject {
    match miss {
        Miss::NoService => Reject::NoService,
        Miss::NoOperation { service } => Reject::NoOperation {
            service: snapshot.services[service].id.clone(),
        },
        Miss::Method { service, allow } => Reject::MethodNotAllowed {
            service: snapshot.services[service].id.clone(),
            method: method.clone(),
            allow,
        },
    }
}

fn log_refusal(
    reject: &Reject,
    caller: &Caller,
    exchange: &Exchange,
    method: &http::Method,
    path: &str,
) {
    let source = std::error::Error::source(reject).map(|s| s.to_string());
    match reject.severity() {
        Severity::Caller => tracing::info!(
            exchange_id = %exchange.id, remote = %caller.remote, %method, path,
            problem = reject.slug(), "refused: {reject}"
        ),
        Severity::Upstream => tracing::warn!(
            exchange_id = %exchange.id, remote = %caller.remote, %method, path,
            problem = reject.slug(), cause = source.as_deref().unwrap_or(""), "refused: {reject}"
        ),
    }
}
