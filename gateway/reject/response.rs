//! A refusal as the caller receives it: an RFC 9457 `application/problem+json` document with
//! its status and headers (`Retry-After`, `Allow`, the rate-limit headers), or the same as a
//! gRPC Trailers-Only response; and the marks the listener and the gRPC front read.

use http::header::{HeaderName, HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Response, StatusCode};
use serde::Serialize;
use std::time::Duration;

use crate::schema::Violation;

use super::{Reject, PROBLEM_BASE};
use crate::body::{full, Body};
use crate::config::Rate;
use crate::outcome::Problem;

#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: String,
    exchange_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    violations: Option<&'a [Violation]>,
}

impl Reject {
    /// The problem+json response for this refusal. It carries a [`Refusal`] in its extensions,
    /// so that the gRPC front can answer with a status instead.
    pub fn to_response(&self, exchange_id: &str) -> Response<Body> {
        let status = self.status();
        let problem = Document {
            kind: format!("{PROBLEM_BASE}{}", self.slug()),
            title: self.title(),
            status: status.as_u16(),
            detail: self.to_string(),
            exchange_id,
            violations: self.violations(),
        };
        let refusal = Refusal {
            problem: self.problem(),
            code: self.grpc_code(),
            detail: problem.detail.clone(),
        };
        // Serialising a struct of strings and a number cannot fail.
        let json = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = Response::new(full(json));
        *response.status_mut() = status;
        response.extensions_mut().insert(refusal);
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Reject::QuotaExceeded {
            agreement,
            rate,
            retry_after,
        } = self
        {
            let seconds = retry_seconds(*retry_after);
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
            for (name, value) in rate_limit_headers(agreement, *rate, 0, seconds) {
                headers.insert(name, value);
            }
        }
        if let Reject::Overloaded { .. } | Reject::OverBudget(_) = self {
            headers.insert(RETRY_AFTER, HeaderValue::from(1));
        }

        if let Reject::MethodNotAllowed { allow, .. } = self {
            let list = allow
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(value) = HeaderValue::from_str(&list) {
                headers.insert(ALLOW, value);
            }
        }
        if self.closes_connection() {
            let http2 = !matches!(self, Reject::RequestTimeout { .. });
            response.extensions_mut().insert(CloseConnection { http2 });
        }
        response
    }
}

/// Marks a response after which the connection must close (in its extensions): on HTTP/1.1
/// the pipeline answers with `Connection: close`, and the listener ends the connection; on
/// HTTP/2 the listener sends GOAWAY when `http2` says so (a late body ends only its stream).
#[derive(Debug, Clone, Copy)]
pub struct CloseConnection {
    pub http2: bool,
}

/// Marks a response as the gateway's refusal (in its extensions).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub problem: Problem,
    pub code: tonic::Code,
    pub detail: String,
}

impl Reject {
    /// The refusal as a gRPC "Trailers-Only" response, for callers speaking gRPC: HTTP 200,
    /// `grpc-status` and `grpc-message` (the detail, percent-encoded), and `spl-problem`.
    pub fn to_grpc_response(&self, exchange_id: &str) -> Response<Body> {
        let (mut parts, _) = self.to_response(exchange_id).into_parts();
        parts.status = StatusCode::OK;
        let headers = &mut parts.headers;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(self.grpc_code() as i32));
        if let Ok(message) = HeaderValue::from_str(&crate::percent::encode_text(&self.to_string()))
        {
            headers.insert("grpc-message", message);
        }
        headers.insert("spl-problem", HeaderValue::from_static(self.slug()));
        Response::from_parts(parts, full(bytes::Bytes::new()))
    }
}

pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10), the policy
/// named after the agreement: `"PKS-1";q=20;w=1` and `"PKS-1";r=0;t=1`. Agreement ids are
/// validated to be printable ASCII without quotes or backslashes, so they are valid sf-strings.
pub fn rate_limit_headers(
    agreement: &str,
    rate: Rate,
    remaining: u32,
    reset_seconds: u64,
) -> [(HeaderName, HeaderValue); 2] {
    let policy = format!("\"{agreement}\";q={};w={}", rate.count, rate.per.as_secs());
    let limit = format!("\"{agreement}\";r={remaining};t={reset_seconds}");
    [
        (
            RATELIMIT_POLICY,
            HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("")),
        ),
        (
            RATELIMIT,
            HeaderValue::from_str(&limit).unwrap_or(HeaderValue::from_static("")),
        ),
    ]
}

/// Whole seconds, rounded up, and at least 1: a client told "0" would retry at once.
pub fn retry_seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}
