//! Validation against the interoperability schemas, both ways: parameters and request bodies
//! before any upstream contact, response bodies before they reach the caller.
//!
//! Each body is read once, in place, for the schema; only a body that breaks it is parsed again
//! into a `serde_json::Value` to word the violations. A request that breaks
//! its schema never reaches the upstream; a response that breaks its schema never reaches the
//! caller under `schema_mode = "enforce"`, and is forwarded and logged under `"monitor"`.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Response};
use serde_json::Value;

use crate::body::{collect_within, Body};
use crate::budget::{Held, Part};
use crate::config::{Operation, ParamIn, SchemaMode, Service};
use crate::reject::Reject;
use crate::schema::{body_violations, violations, Violation};

/// Responses larger than this cannot be validated and are refused (under `enforce`).
pub const MAX_VALIDATED_RESPONSE: usize = 8 << 20;

/// Path parameters (`values`, in template order) and query parameters that have schemas.
pub fn params(operation: &Operation, values: &[&str], query: Option<&str>) -> Result<(), Reject> {
    for param in &operation.params {
        let value = match param.location {
            ParamIn::Path => operation
                .template
                .params()
                .position(|p| p == param.name)
                .and_then(|i| values.get(i))
                .map(|v| (*v).to_owned()),
            ParamIn::Query => query_value(query.unwrap_or(""), &param.name)?,
        };
        // An absent query parameter is the upstream's business; a present one must conform.
        let Some(value) = value else { continue };
        let found = violations(&param.schema, &Value::String(value));
        if !found.is_empty() {
            return Err(Reject::InvalidParameter {
                name: param.name.clone(),
                location: match param.location {
                    ParamIn::Path => "path",
                    ParamIn::Query => "query",
                },
                violations: found,
            });
        }
    }
    Ok(())
}

/// A request body, when the operation has a `request_schema`: JSON by content type, well-formed,
/// and valid.
pub fn request(operation: &Operation, headers: &HeaderMap, body: &Bytes) -> Result<(), Reject> {
    let Some(schema) = &operation.request_schema else {
        return Ok(());
    };
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if !content_type.as_deref().is_some_and(is_json) {
        return Err(Reject::UnsupportedMediaType {
            expected: "application/json",
            found: content_type,
        });
    }
    let found = body_violations(schema, body).map_err(|e| Reject::MalformedJson {
        detail: e.to_string(),
    })?;
    if found.is_empty() {
        Ok(())
    } else {
        Err(Reject::RequestSchemaViolation {
            schema: schema.name.clone(),
            violations: found,
        })
    }
}

/// What response validation found, when it let the response through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// No schema applied, or the response conforms.
    Conforming,
    /// It breaks its schema and was forwarded anyway (`schema_mode = "monitor"`).
    ForwardedUnconforming,
}

/// An upstream response, when the operation has a `response_schema` and the status is 2xx:
/// read whole (up to [`MAX_VALIDATED_RESPONSE`]), parsed and validated. Other responses stream
/// through untouched.
pub async fn response(
    service: &Service,
    operation: &Operation,
    response: Response<Body>,
    held: &mut Held,
) -> Result<(Response<Body>, Checked), Reject> {
    let Some(schema) = &operation.response_schema else {
        return Ok((response, Checked::Conforming));
    };
    if !response.status().is_success() {
        return Ok((response, Checked::Conforming));
    }
    let (parts, body) = response.into_parts();
    let hold = Some((held, Part::Response));
    let bytes = match collect_within(body, None, MAX_VALIDATED_RESPONSE as u64, hold).await {
        Ok(bytes) => bytes,
        Err(unread) => {
            return Err(Reject::unread_response(&service.id, unread, |limit| {
                Reject::UpstreamSchemaViolation {
                    service: service.id.clone(),
                    schema: schema.name.clone(),
                    violations: vec![Violation {
                        pointer: String::new(),
                        keyword: "size".to_owned(),
                        message: format!(
                            "the response exceeds {limit} bytes and cannot be validated"
                        ),
                    }],
                }
            }))
        }
    };
    let json_type = parts
        .headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let found = match body_violations(schema, &bytes) {
        Ok(found) if json_type.as_deref().is_some_and(is_json) => found,
        Ok(_) => vec![Violation {
            pointer: String::new(),
            keyword: "contentType".to_owned(),
            message: format!(
                "the response is labelled {:?}, not JSON",
                json_type.unwrap_or_default()
            ),
        }],
        Err(e) => vec![Violation {
            pointer: String::new(),
            keyword: "json".to_owned(),
            message: format!("the response is not JSON: {e}"),
        }],
    };
    if !found.is_empty() {
        match operation.schema_mode {
            SchemaMode::Enforce => {
                return Err(Reject::UpstreamSchemaViolation {
                    service: service.id.clone(),
                    schema: schema.name.clone(),
                    violations: found,
                })
            }
            SchemaMode::Monitor => {
                tracing::warn!(
                    service = %service.id,
                    operation = %operation.id,
                    schema = %schema.name,
                    violations = found.len(),
                    // The keyword, not the message: that may quote the response's values.
                    first = %found[0].keyword,
                    "response breaks its schema (monitor mode: forwarded)"
                );
                let response = Response::from_parts(parts, crate::body::full(bytes));
                return Ok((response, Checked::ForwardedUnconforming));
            }
        }
    }
    Ok((
        Response::from_parts(parts, crate::body::full(bytes)),
        Checked::Conforming,
    ))
}

/// `application/json` or any `application/*+json`, with or without parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The first value of `name` in an `application/x-www-form-urlencoded` query.
fn query_value(query: &str, name: &str) -> Result<Option<String>, Reject> {
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(key).as_deref() == Some(name) {
            return form_decode(value)
                .map(Some)
                .ok_or_else(|| Reject::InvalidParameter {
                    name: name.to_owned(),
                    location: "query",
                    violations: vec![Violation {
                        pointer: String::new(),
                        keyword: "encoding".to_owned(),
                        message: "not valid percent-encoded UTF-8".to_owned(),
                    }],
                });
        }
    }
    Ok(None)
}

fn form_decode(text: &str) -> Option<String> {
    let bytes = crate::percent::decode(text, crate::percent::Plus::Space).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/json"));
        assert!(!is_json("application/jsonx"));
        assert!(!is_json("text/plain"));
    }

    #[test]
    fn query_values_are_form_decoded() {
        assert_eq!(
            query_value("a=1&nik=32%2001+x", "nik")
                .ok()
                .flatten()
                .as_deref(),
            Some("32 01 x")
        );
        assert_eq!(query_value("a=1", "nik").ok().flatten(), None);
        assert!(query_value("nik=%ff", "nik").is_err());
        assert!(query_value("nik=%f", "nik").is_err());
        // `u8::from_str_radix` took a sign: `%+5` was read as 0x05.
        for bad in ["nik=%+5", "nik=%-5", "nik=% 5"] {
            assert!(query_value(bad, "nik").is_err(), "{bad}");
        }
    }
}
