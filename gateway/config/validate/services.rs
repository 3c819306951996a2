//! `[[services]]`: each service's owner, classification, prefix and protocol, its upstreams and
//! their TLS and credentials, its limits and health check, its operations, and the routes they
//! add to the table.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::operations::operation;
use super::parse::{
    check_id, check_prefix, classification, opt, parse_upstream, positive_duration,
};
use super::*;

/// The services that validated, their names, and the route table they make.
pub(super) struct Services {
    pub services: Vec<Service>,
    pub index: Index,
    pub routes: RouteTable,
}

/// What every service is validated against.
pub(super) struct ServiceContext<'a> {
    pub agency_index: &'a Index,
    pub gateway_chain: Option<&'a Vec<CertificateDer<'static>>>,
    pub gateway_key: Option<&'a PrivateKeyDer<'static>>,
    pub default_body: u64,
    pub default_request_timeout: Duration,
    pub max_buffered: u64,
    pub resolve: &'a dyn Fn(&str) -> PathBuf,
}

pub(super) fn services(
    errors: &mut Errors,
    file: &FileConfig,
    ctx: &ServiceContext<'_>,
    schemas: &mut Schemas<'_>,
    certificates: &mut Vec<CertInfo>,
) -> Services {
    let mut services = Vec::new();
    let mut service_index = Index::default();
    let mut routes = RouteTable::default();
    for (i, s) in file.services.iter().enumerate() {
        let at = format!("services[{i}]");
        if !service_index.declared.insert(s.id.clone()) {
            errors.push(
                format!("{at}.id"),
                format!("duplicate service id `{}`", s.id),
            );
            continue;
        }
        let index = services.len();
        if let Some(service) = service(errors, &at, s, ctx, schemas, certificates) {
            register_routes(errors, &at, index, s, &service, &mut routes);
            service_index.valid.insert(s.id.clone(), index);
            services.push(service);
        }
    }
    Services {
        services,
        index: service_index,
        routes,
    }
}

fn service(
    errors: &mut Errors,
    at: &str,
    s: &ServiceEntry,
    ctx: &ServiceContext<'_>,
    schemas: &mut Schemas<'_>,
    certificates: &mut Vec<CertInfo>,
) -> Option<Service> {
    let id_ok = errors.check(format!("{at}.id"), check_id(&s.id)).is_some();
    let owner = errors
        .check(
            format!("{at}.owner"),
            ctx.agency_index.resolve("agency", &s.owner),
        )
        .flatten();
    let classification = errors.check(
        format!("{at}.classification"),
        classification(&s.classification),
    );
    let prefix = errors.check(format!("{at}.prefix"), check_prefix(&s.prefix));
    let protocol = match s.protocol.as_deref() {
        None | Some("http") => Some(Protocol::Http),
        Some("grpc") => {
            // The prefix is the gRPC service's full name: `/pkg.Service`.
            if !(s.prefix.len() > 1 && s.prefix[1..].contains('.') && !s.prefix[1..].contains('/'))
            {
                errors.push(
                    format!("{at}.prefix"),
                    format!("`{}`: a grpc service's prefix is its full gRPC service name, e.g. \"/kependudukan.v1.Penduduk\"", s.prefix),
                );
            }
            Some(Protocol::Grpc)
        }
        Some(other) => {
            errors.push(
                format!("{at}.protocol"),
                format!("`{other}` is not a protocol; use \"http\" or \"grpc\""),
            );
            None
        }
    };
    let (timeout, request_timeout, max_body) = limits(errors, at, s, ctx);
    let upstream_certs = Arc::new(crate::tls::ServerCerts::default());
    let (upstreams, upstream_tls) =
        upstreams(errors, at, s, ctx, certificates, upstream_certs.clone());
    let upstream_auth = match &s.upstream_auth {
        None => Some(None),
        Some(entry) => super::super::credentials::upstream_auth(
            errors,
            &format!("{at}.upstream_auth"),
            entry,
            s.allow_plaintext,
            ctx.resolve,
        )
        .map(Some),
    };

    let health = health_check(errors, at, s, protocol);

    let mut operations = Vec::new();
    let mut op_ids = HashSet::new();
    for (j, o) in s.operations.iter().enumerate() {
        let at = format!("{at}.operations[{j}]");
        if !op_ids.insert(o.id.as_str()) {
            errors.push(
                format!("{at}.id"),
                format!("duplicate operation id `{}` in service `{}`", o.id, s.id),
            );
            continue;
        }
        let grpc = (protocol == Some(Protocol::Grpc)).then_some(s.prefix.as_str());
        operations.extend(operation(errors, &at, o, schemas, grpc));
    }
    if s.operations.is_empty() {
        errors.push(
            format!("{at}.operations"),
            "a service must declare at least one operation; only declared operations are reachable",
        );
    }

    // Secret services are never cached, whatever an operation says.
    if classification.is_some_and(|c| c >= Classification::Rahasia) {
        for (j, op) in operations.iter_mut().enumerate() {
            if op.cache_ttl.take().is_some() {
                errors.warn(
                    format!("{at}.operations[{j}].cache_ttl"),
                    format!(
                        "ignored: `{}` is {}, and responses of rahasia and sangat_rahasia services are never cached",
                        s.id, s.classification
                    ),
                );
            }
        }
    }

    Some(Service {
        fingerprint: fingerprint(s, &operations),
        id: s.id.clone(),
        owner: owner?,
        classification: classification?,
        prefix: prefix?,
        protocol: protocol?,
        upstreams,
        upstream_tls: upstream_tls?,
        upstream_certs,
        upstream_auth: upstream_auth?,
        timeout: timeout?,
        request_timeout: request_timeout?,
        max_request_body: max_body?,
        max_in_flight: match s.max_in_flight {
            Some(0) => {
                errors.push(
                    format!("{at}.max_in_flight"),
                    "must be at least 1 (leave it out for no limit)",
                );
                return None;
            }
            other => other,
        },
        health: health?,
        operations,
    })
    .filter(|_| id_ok)
}

/// `timeout`, `request_timeout` (at least the upstream timeout) and `max_request_body` (within
/// `[gateway] max_buffered`).
fn limits(
    errors: &mut Errors,
    at: &str,
    s: &ServiceEntry,
    ctx: &ServiceContext<'_>,
) -> (Option<Duration>, Option<Duration>, Option<u64>) {
    let timeout = opt(errors, &format!("{at}.timeout"), &s.timeout, parse_duration)
        .map(|t| t.unwrap_or(DEFAULT_TIMEOUT));
    let max_body = opt(
        errors,
        &format!("{at}.max_request_body"),
        &s.max_request_body,
        parse_size,
    )
    .map(|t| t.unwrap_or(ctx.default_body))
    .and_then(|body| {
        if body > ctx.max_buffered {
            errors.push(
                format!("{at}.max_request_body"),
                format!(
                    "{body} bytes is more than [gateway] max_buffered ({} bytes), so a body of that size could never be admitted",
                    ctx.max_buffered
                ),
            );
            return None;
        }
        Some(body)
    });
    let request_timeout = opt(
        errors,
        &format!("{at}.request_timeout"),
        &s.request_timeout,
        positive_duration,
    )
    .and_then(|explicit| {
        let deadline = explicit.unwrap_or(ctx.default_request_timeout);
        match timeout {
            Some(timeout) if deadline < timeout => {
                let (path, whose) = match explicit {
                    Some(_) => (format!("{at}.request_timeout"), "its `request_timeout`"),
                    None => (
                        format!("{at}.timeout"),
                        "[gateway] request_timeout (set the service's own `request_timeout`)",
                    ),
                };
                errors.push(
                    path,
                    format!(
                        "the upstream timeout ({timeout:?}) is longer than {whose} ({deadline:?}), so the exchange would end before the upstream's time is up"
                    ),
                );
                None
            }
            _ => Some(deadline),
        }
    });

    (timeout, request_timeout, max_body)
}

/// `upstreams`, and `upstream_ca` with the gateway's own certificate for mTLS to them.
fn upstreams(
    errors: &mut Errors,
    at: &str,
    s: &ServiceEntry,
    ctx: &ServiceContext<'_>,
    certificates: &mut Vec<CertInfo>,
    seen: Arc<crate::tls::ServerCerts>,
) -> (Vec<Upstream>, Option<Option<rustls::ClientConfig>>) {
    if s.upstreams.is_empty() {
        errors.push(
            format!("{at}.upstreams"),
            "must list at least one upstream URL",
        );
    }
    let mut upstreams = Vec::new();
    let mut needs_tls = false;
    for (j, u) in s.upstreams.iter().enumerate() {
        if let Some(up) = errors.check(
            format!("{at}.upstreams[{j}]"),
            parse_upstream(u, s.allow_plaintext),
        ) {
            needs_tls |= up.origin.scheme_str() == Some("https");
            upstreams.push(up);
        }
    }
    let upstream_tls = match (&s.upstream_ca, needs_tls) {
        (None, true) => {
            errors.push(
                format!("{at}.upstream_ca"),
                "is required for https upstreams: the CA that issued the upstream's certificate",
            );
            None
        }
        (None, false) => Some(None),
        (Some(ca), _) => {
            let path = format!("{at}.upstream_ca");
            let file = (ctx.resolve)(ca);
            errors
                .check(&path, crate::tls::load_certs(&file))
                .and_then(|roots| {
                    certificates.extend(
                        roots
                            .iter()
                            .filter_map(|c| crate::tls::cert_info(&path, &file, c)),
                    );
                    let (chain, key) = (ctx.gateway_chain?, ctx.gateway_key?);
                    errors
                        .check(
                            &path,
                            crate::tls::upstream_config(
                                roots,
                                chain.clone(),
                                key.clone_key(),
                                seen,
                            ),
                        )
                        .map(Some)
                })
        }
    };

    (upstreams, upstream_tls)
}

/// `health_path` and `health_interval` (default 10 s, at least 1 s; only with a path).
fn health_check(
    errors: &mut Errors,
    at: &str,
    s: &ServiceEntry,
    protocol: Option<Protocol>,
) -> Option<Option<HealthCheck>> {
    let interval = opt(
        errors,
        &format!("{at}.health_interval"),
        &s.health_interval,
        |text| {
            let d = parse_duration(text)?;
            if d < Duration::from_secs(1) {
                return Err(format!("`{text}` is too short; at least 1s"));
            }
            Ok(d)
        },
    )?;
    let Some(path) = &s.health_path else {
        if interval.is_some() {
            errors.push(
                format!("{at}.health_interval"),
                "needs a health_path to check",
            );
            return None;
        }
        return Some(None);
    };
    if protocol == Some(Protocol::Grpc) {
        errors.push(
            format!("{at}.health_path"),
            "active checks are HTTP GETs; a gRPC service is watched passively (ejection on failures)",
        );
        return None;
    }
    let valid = path.starts_with('/')
        && path.parse::<http::uri::PathAndQuery>().is_ok()
        && !path.contains('#');
    if !valid {
        errors.push(
            format!("{at}.health_path"),
            format!("`{path}` is not an absolute path (e.g. \"/healthz\")"),
        );
        return None;
    }
    Some(Some(HealthCheck {
        path: path.clone(),
        interval: interval.unwrap_or(DEFAULT_HEALTH_INTERVAL),
    }))
}

/// What a stored response of the service depends on: its entry in the file and the schemas its
/// operations validate against. A reload that changes it drops the service's cache entries.
fn fingerprint(entry: &ServiceEntry, operations: &[Operation]) -> String {
    let mut text = format!("{entry:?}").into_bytes();
    let schemas = operations
        .iter()
        .flat_map(|op| op.request_schema.iter().chain(&op.response_schema));
    for schema in schemas {
        text.extend_from_slice(schema.name.as_bytes());
        text.extend(std::fs::read(&schema.file).unwrap_or_default());
    }
    crate::keys::sha256_hex(&text)
}

fn register_routes(
    errors: &mut Errors,
    at: &str,
    index: usize,
    entry: &ServiceEntry,
    service: &Service,
    routes: &mut RouteTable,
) {
    let Ok(prefix) = normalize(&service.prefix) else {
        return;
    };
    if let Err(_existing) = routes.add_service(index, &prefix) {
        errors.push(
            format!("{at}.prefix"),
            format!(
                "prefix `{}` is already used by another service",
                service.prefix
            ),
        );
        return;
    }
    for (j, op) in service.operations.iter().enumerate() {
        if let Err(conflict) = routes.add_operation(index, j, op.method.clone(), &op.template) {
            let other = &service.operations[conflict.existing_operation];
            let k = entry
                .operations
                .iter()
                .position(|o| o.id == op.id)
                .unwrap_or(j);
            errors.push(
                format!("{at}.operations[{k}].path"),
                format!(
                    "{} {} matches the same requests as operation `{}` ({} {})",
                    op.method, op.path, other.id, other.method, other.path
                ),
            );
        }
    }
}
