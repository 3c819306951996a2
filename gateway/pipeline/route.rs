//! Route: the gateway's own documents, or a service by prefix and an operation by template and
//! method; the exchange's deadline; the protocol the service speaks; the target as the audit
//! record writes it.

use http::Request;
use tokio::time::Instant;

use crate::body::Body;
use crate::catalog;
use crate::config::{Operation, Protocol, Service, Snapshot};
use crate::reject::Reject;
use crate::route::{Matched, Miss, NormalPath};

use super::{is_grpc, Ctx, Facts};

/// Where a request goes.
pub(super) enum Routed<'a> {
    /// A catalog or OpenAPI document of `/.well-known/spl/`, answered by the gateway.
    Catalog(http::Response<Body>),
    /// An operation of a service.
    Operation(To<'a>),
}

/// The operation a request addresses.
pub(super) struct To<'a> {
    pub service_index: usize,
    pub service: &'a Service,
    pub operation: &'a Operation,
    pub matched: Matched<'a>,
    pub path: &'a NormalPath,
    /// From the request head to the last byte of the response (`request_timeout`).
    pub deadline: Instant,
    /// The request is a gRPC call (and the service a gRPC service).
    pub grpc: bool,
}

pub(super) fn route<'a, B>(
    x: &Ctx<'a>,
    consumer: usize,
    request: &Request<B>,
    path: &'a NormalPath,
    facts: &mut Facts,
) -> Result<Routed<'a>, Reject> {
    let snapshot = x.snapshot;
    if catalog::is_catalog_path(path) {
        let today = x.gw.clock.today(snapshot.gateway.timezone);
        return catalog::serve(snapshot, consumer, today, request.method(), path)
            .map(Routed::Catalog);
    }
    let matched = snapshot
        .routes
        .lookup(request.method(), path)
        .map_err(|miss| miss_to_reject(snapshot, miss, request.method()))?;
    let service = &snapshot.services[matched.service];
    let operation = &service.operations[matched.operation];
    facts.service = Some(matched.service);
    facts.operation = Some(matched.operation);
    // A gRPC service takes gRPC calls only, and an HTTP service no gRPC call.
    let grpc = is_grpc(request.headers());
    if grpc != (service.protocol == Protocol::Grpc) {
        return Err(Reject::UnsupportedMediaType {
            expected: match service.protocol {
                Protocol::Grpc => "gRPC (application/grpc)",
                Protocol::Http => "plain HTTP requests",
            },
            found: request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        });
    }
    if x.gw.audit.is_some() {
        facts.target = Some(crate::audit::audit_target(
            &service.prefix,
            operation,
            &path.segments()[matched.prefix_len..],
            request.uri().query(),
            snapshot.audit.as_ref().and_then(|a| a.redactor.as_deref()),
        ));
    }
    Ok(Routed::Operation(To {
        service_index: matched.service,
        service,
        operation,
        deadline: x.exchange.begun + service.request_timeout,
        matched,
        path,
        grpc,
    }))
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
