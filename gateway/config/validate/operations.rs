//! `[[services.operations]]`: method and path template (or a gRPC method), schemas of
//! parameters, request and response, schema mode, cache lifetime, and what the audit log may
//! write in clear.

use http::Method;

use super::parse::{check_id, opt, parse_method};
use super::*;

pub(super) fn operation(
    errors: &mut Errors,
    at: &str,
    o: &OperationEntry,
    schemas: &mut Schemas<'_>,
    grpc: Option<&str>,
) -> Option<Operation> {
    let id_ok = errors.check(format!("{at}.id"), check_id(&o.id)).is_some();
    let (method, path) = method_and_path(errors, at, o, grpc);
    let path = path?;
    let template = errors.check(format!("{at}.path"), Template::parse(&path));
    let mut schema = |errors: &mut Errors, key: &str, name: &Option<String>| {
        let Some(name) = name else { return Some(None) };
        errors
            .check(format!("{at}.{key}"), schemas.get(name))
            .map(Some)
    };
    let request_schema = schema(errors, "request_schema", &o.request_schema);
    let response_schema = schema(errors, "response_schema", &o.response_schema);
    let mut params = Some(Vec::new());
    for (name, schema_name) in &o.params {
        let compiled = schema(
            errors,
            &format!("params.{name}"),
            &Some(schema_name.clone()),
        )
        .flatten();
        let location = match &template {
            Some(t) if t.params().any(|p| p == name) => ParamIn::Path,
            _ => ParamIn::Query,
        };
        match (compiled, &mut params) {
            (Some(s), Some(list)) => list.push(ParamSchema {
                name: name.clone(),
                location,
                schema: s,
            }),
            _ => params = None,
        }
    }
    let schema_mode = match o.schema_mode.as_deref() {
        None | Some("enforce") => Some(SchemaMode::Enforce),
        Some("monitor") => Some(SchemaMode::Monitor),
        Some(other) => {
            errors.push(
                format!("{at}.schema_mode"),
                format!("`{other}` is not a schema mode; use \"enforce\" or \"monitor\""),
            );
            None
        }
    };
    let cache_ttl = opt(
        errors,
        &format!("{at}.cache_ttl"),
        &o.cache_ttl,
        parse_duration,
    )
    .and_then(|ttl| match (ttl, &method) {
        (Some(ttl), _) if ttl.is_zero() => {
            errors.push(
                format!("{at}.cache_ttl"),
                "must be more than 0s; leave it out to not cache",
            );
            None
        }
        (Some(_), Some(m)) if m != Method::GET => {
            errors.push(
                format!("{at}.cache_ttl"),
                format!(
                    "only GET operations are cached (HEAD is answered from GET's entries), not {m}"
                ),
            );
            None
        }
        _ => Some(ttl),
    });
    audit_names(errors, at, o);
    let op = Operation {
        id: o.id.clone(),
        method: method?,
        path,
        template: template?,
        request_schema: request_schema?,
        response_schema: response_schema?,
        params: params?,
        schema_mode: schema_mode?,
        cache_ttl: cache_ttl?,
        audit_redact: o.audit_redact.clone(),
        audit_clear: o.audit_clear.clone(),
    };
    id_ok.then_some(op)
}

/// The method and path template of an HTTP operation, or the POST and full method name of a
/// gRPC one (`grpc`: the service's prefix), with what does not apply to gRPC refused.
fn method_and_path(
    errors: &mut Errors,
    at: &str,
    o: &OperationEntry,
    grpc: Option<&str>,
) -> (Option<Method>, Option<String>) {
    match grpc {
        None => (
            match &o.method {
                Some(m) => errors.check(format!("{at}.method"), parse_method(m)),
                None => {
                    errors.push(
                        format!("{at}.method"),
                        "is required: GET, POST, PUT, PATCH or DELETE",
                    );
                    None
                }
            },
            Some(o.path.clone()),
        ),
        Some(prefix) => {
            let method = match o.method.as_deref() {
                None | Some("POST") => Some(Method::POST),
                Some(other) => {
                    errors.push(
                        format!("{at}.method"),
                        format!("gRPC methods are called with POST, not {other}"),
                    );
                    None
                }
            };
            // `/pkg.Service/Method`, matched after the prefix (the service name).
            let rest = o.path.strip_prefix(prefix).filter(|rest| {
                rest.len() > 1 && rest.starts_with('/') && !rest[1..].contains(['/', '{', '}'])
            });
            if rest.is_none() {
                errors.push(
                    format!("{at}.path"),
                    format!(
                        "`{}`: a gRPC operation names its full method, `{prefix}/<Method>`",
                        o.path
                    ),
                );
            }
            for (key, set) in [
                ("request_schema", o.request_schema.is_some()),
                ("response_schema", o.response_schema.is_some()),
                ("cache_ttl", o.cache_ttl.is_some()),
                ("params", !o.params.is_empty()),
            ] {
                if set {
                    errors.push(
                        format!("{at}.{key}"),
                        "does not apply to gRPC operations (protobuf bodies are passed through)",
                    );
                }
            }
            (method, rest.map(str::to_owned))
        }
    }
}

/// `audit_redact` (redundant now: every value is hashed) and `audit_clear`.
fn audit_names(errors: &mut Errors, at: &str, o: &OperationEntry) {
    for (k, name) in o.audit_redact.iter().enumerate() {
        if name.trim().is_empty() {
            errors.push(
                format!("{at}.audit_redact[{k}]"),
                "must name a path or query parameter",
            );
        } else if o.audit_clear.contains(name) {
            errors.push(
                format!("{at}.audit_redact[{k}]"),
                format!("`{name}` is also in audit_clear: a value is either hashed or in clear"),
            );
        } else {
            errors.warn(
                format!("{at}.audit_redact[{k}]"),
                format!("`{name}` is hashed in the audit log anyway: every parameter value is, unless audit_clear names it; audit_redact can go"),
            );
        }
    }
    for (k, name) in o.audit_clear.iter().enumerate() {
        if name.trim().is_empty() || name.contains(['&', '=', '/', '?', '#']) {
            errors.push(
                format!("{at}.audit_clear[{k}]"),
                "must name a path or query parameter",
            );
        }
    }
}
