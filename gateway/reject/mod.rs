//! Every way an exchange can fail, and the one place that maps each to its HTTP status,
//! problem type, title and log level. A refusal is always an RFC 9457
//! `application/problem+json` document carrying the exchange id.
//!
//! `detail` is written for the caller: it names what the caller sent and what rule refused it,
//! never upstream addresses or internal errors (those go to the log, from `source`).

use std::time::Duration;

use http::{Method, StatusCode};

use crate::body::{BodyError, Unread};
use crate::config::{Classification, Date, Rate};
use crate::outcome::Problem;

mod response;

use crate::route::PathRejected;
use crate::schema::Violation;
pub use response::{
    rate_limit_headers, retry_seconds, CloseConnection, Refusal, RATELIMIT, RATELIMIT_POLICY,
};

/// The base of every problem `type`; the slug after it is stable and documented in
/// `docs/problems.md`.
pub const PROBLEM_BASE: &str = "urn:penghubung:problem:";

#[derive(Debug, thiserror::Error)]
pub enum Reject {
    #[error("the client certificate names no registered agency")]
    UnknownAgency,
    #[error("agency `{agency}` accepts only pinned certificates, and this is not one of them")]
    CertificateNotPinned { agency: String },
    /// A CRL loaded after the connection opened revokes its certificate.
    #[error("the client certificate has been revoked (a CRL of this gateway lists it); the connection is closed")]
    CertificateRevoked,
    /// The configuration in force no longer trusts the connection's certificate.
    #[error("the client certificate is no longer accepted (its issuer is no longer trusted, or it has expired); the connection is closed")]
    CertificateUntrusted,
    #[error("agency `{agency}` has clearance `{}`, below service `{service}`'s classification `{}`", clearance.as_str(), classification.as_str())]
    ClearanceInsufficient {
        agency: String,
        clearance: Classification,
        service: String,
        classification: Classification,
    },
    #[error("agency `{agency}` has no data-sharing agreement for service `{service}`")]
    NoAgreement { agency: String, service: String },
    #[error("`{agreement}` is not an agreement of agency `{agency}` for service `{service}`")]
    AgreementNotYours {
        agreement: String,
        agency: String,
        service: String,
    },
    #[error("no agreement of yours for service `{service}` covers operation `{operation}`")]
    OperationNotCovered { service: String, operation: String },
    /// An administrator suspended the caller, the agreement or the service (`POST
    /// /v1/suspend`); the reason is the administrators', not the caller's.
    #[error("{} `{id}` is suspended", scope.as_str())]
    Suspended {
        scope: crate::suspension::Scope,
        id: String,
    },
    #[error("agreement `{agreement}` is in force from {valid_from}")]
    AgreementNotYetValid { agreement: String, valid_from: Date },
    #[error("agreement `{agreement}` ended on {valid_until}")]
    AgreementExpired {
        agreement: String,
        valid_until: Date,
    },
    #[error("several of your agreements cover this request ({}); name one with the SPL-Agreement header", candidates.join(", "))]
    AgreementChoiceRequired { candidates: Vec<String> },
    #[error("the quota of agreement `{agreement}` ({} per {}) is used up; retry in {} s", rate.count, window(rate.per), retry_seconds(*retry_after))]
    QuotaExceeded {
        agreement: String,
        rate: Rate,
        retry_after: Duration,
    },
    #[error("the request path was refused: {0}")]
    BadPath(#[from] PathRejected),
    #[error("no service is published under this path")]
    NoService,
    #[error("service `{service}` declares no operation at this path")]
    NoOperation { service: String },
    #[error("service `{service}` does not allow {method} at this path")]
    MethodNotAllowed {
        service: String,
        method: Method,
        allow: Vec<Method>,
    },
    #[error("the request body is not well-formed JSON: {detail}")]
    MalformedJson { detail: String },
    #[error("this operation takes {expected}, not {}", found.as_deref().unwrap_or("a body without Content-Type"))]
    UnsupportedMediaType {
        expected: &'static str,
        found: Option<String>,
    },
    #[error("the request body breaks schema `{schema}` ({} violation{})", violations.len(), if violations.len() == 1 { "" } else { "s" })]
    RequestSchemaViolation {
        schema: String,
        violations: Vec<Violation>,
    },
    #[error("{location} parameter `{name}` breaks its schema: {}", violations.first().map_or("", |v| v.message.as_str()))]
    InvalidParameter {
        name: String,
        location: &'static str,
        violations: Vec<Violation>,
    },
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the request body could not be read")]
    BodyRead(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the request has a header that cannot be forwarded")]
    BadHeader(#[source] http::Error),
    #[error("the upstream of service `{service}` could not be reached")]
    UpstreamUnavailable {
        service: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("the upstream of service `{service}` did not answer within {}", humanize(*after))]
    UpstreamTimeout { service: String, after: Duration },
    /// The caller's request body had not arrived when the exchange's deadline passed.
    #[error("the request body did not arrive within {}", humanize(*after))]
    RequestTimeout { after: Duration },
    #[error("the upstream of service `{service}` failed TLS verification: its certificate is not from the service's upstream CA or not for its address")]
    UpstreamTls {
        service: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("the response of service `{service}` breaks schema `{schema}` ({} violation{}); it was not forwarded", violations.len(), if violations.len() == 1 { "" } else { "s" })]
    UpstreamSchemaViolation {
        service: String,
        schema: String,
        violations: Vec<Violation>,
    },
    #[error("the upstream of service `{service}` broke off its response")]
    UpstreamBodyRead {
        service: String,
        #[source]
        source: hyper::Error,
    },
    #[error(
        "the response of service `{service}` exceeds {limit} bytes, more than the gateway records"
    )]
    UpstreamResponseTooLarge { service: String, limit: u64 },
    /// The gateway could not obtain the credentials `upstream_auth` asks for (the cause is
    /// logged, never sent: it may concern secrets).
    #[error("the gateway could not obtain credentials for the upstream of service `{service}`")]
    UpstreamCredentials { service: String },
    /// The service's `max_in_flight` requests are already under way: shed, with `Retry-After`.
    #[error("service `{service}` has {limit} requests in flight, its limit; try again shortly")]
    Overloaded { service: String, limit: u32 },
    #[error("the audit log cannot record exchanges; nothing is forwarded unrecorded")]
    AuditUnavailable,
    /// The gateway holds as many bodies as its memory budget (`[gateway] max_buffered`)
    /// allows: shed, with `Retry-After`.
    #[error("the gateway is holding as much as its memory budget allows; try again shortly")]
    OverBudget(#[source] crate::budget::OverBudget),
    #[error("the upstream of service `{service}` broke the HTTP protocol")]
    UpstreamProtocol {
        service: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
}

/// A caller's request body that could not be read whole.
impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<Unread<E>> for Reject {
    fn from(unread: Unread<E>) -> Reject {
        match unread {
            Unread::TooLarge { limit } => Reject::BodyTooLarge { limit },
            Unread::Broken(source) => Reject::BodyRead(source.into()),
            Unread::OverBudget(over) => Reject::OverBudget(over),
        }
    }
}

/// How loudly a refusal is logged: caller mistakes are routine, upstream failures are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Caller,
    Upstream,
}

// === impl Reject ===

impl Reject {
    /// An upstream response body that could not be read whole within `limit` (`too_large`
    /// says what that means for the caller).
    pub fn unread_response(
        service: &str,
        unread: Unread<BodyError>,
        too_large: impl FnOnce(u64) -> Reject,
    ) -> Reject {
        match unread {
            Unread::Broken(error) => Reject::upstream_body(service, error),
            Unread::TooLarge { limit } => too_large(limit),
            Unread::OverBudget(over) => Reject::OverBudget(over),
        }
    }

    /// An upstream response body that stopped before its end: a timeout when the exchange's
    /// deadline passed, a protocol error when the upstream broke off.
    pub fn upstream_body(service: &str, error: BodyError) -> Reject {
        match error {
            BodyError::Deadline(after) => Reject::UpstreamTimeout {
                service: service.to_owned(),
                after,
            },
            BodyError::Broken(source) => Reject::UpstreamBodyRead {
                service: service.to_owned(),
                source,
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Reject::BadPath(_)
            | Reject::BodyRead(_)
            | Reject::BadHeader(_)
            | Reject::AgreementChoiceRequired { .. }
            | Reject::MalformedJson { .. } => StatusCode::BAD_REQUEST,
            Reject::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reject::RequestSchemaViolation { .. } | Reject::InvalidParameter { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Reject::UnknownAgency
            | Reject::CertificateNotPinned { .. }
            | Reject::CertificateRevoked
            | Reject::CertificateUntrusted
            | Reject::ClearanceInsufficient { .. }
            | Reject::NoAgreement { .. }
            | Reject::AgreementNotYours { .. }
            | Reject::OperationNotCovered { .. }
            | Reject::AgreementNotYetValid { .. }
            | Reject::Suspended { .. }
            | Reject::AgreementExpired { .. } => StatusCode::FORBIDDEN,
            Reject::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Reject::NoService | Reject::NoOperation { .. } => StatusCode::NOT_FOUND,
            Reject::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Reject::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::UpstreamTls { .. }
            | Reject::UpstreamProtocol { .. }
            | Reject::UpstreamBodyRead { .. }
            | Reject::UpstreamResponseTooLarge { .. }
            | Reject::UpstreamCredentials { .. }
            | Reject::UpstreamSchemaViolation { .. } => StatusCode::BAD_GATEWAY,
            Reject::UpstreamUnavailable { .. }
            | Reject::AuditUnavailable
            | Reject::Overloaded { .. }
            | Reject::OverBudget(_) => StatusCode::SERVICE_UNAVAILABLE,
            Reject::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Reject::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// What the log says of the refusal: its message, less anything the caller chose (a
    /// header value, a body fragment, a parameter's value, a method): the problem document may
    /// quote the caller's own input back to the caller, a log line never does.
    pub fn log_message(&self) -> std::borrow::Cow<'static, str> {
        use std::borrow::Cow;
        match self {
            Reject::AgreementNotYours {
                agency, service, ..
            } => Cow::Owned(format!(
                "SPL-Agreement names no agreement of agency `{agency}` for service `{service}`"
            )),
            Reject::MalformedJson { .. } => {
                Cow::Borrowed("the request body is not well-formed JSON")
            }
            Reject::UnsupportedMediaType { expected, .. } => Cow::Owned(format!(
                "this operation takes {expected}; the request sent another type"
            )),
            Reject::InvalidParameter {
                name,
                location,
                violations,
            } => Cow::Owned(format!(
                "{location} parameter `{name}` breaks its schema ({})",
                violations.first().map_or("", |v| v.keyword.as_str())
            )),
            Reject::MethodNotAllowed { service, .. } => Cow::Owned(format!(
                "service `{service}` does not allow this method at this path"
            )),
            // Messages made of the configuration's names, limits and durations only. Listed one
            // by one: a new refusal decides here whether its message may be logged.
            Reject::UnknownAgency
            | Reject::CertificateNotPinned { .. }
            | Reject::CertificateRevoked
            | Reject::CertificateUntrusted
            | Reject::ClearanceInsufficient { .. }
            | Reject::NoAgreement { .. }
            | Reject::OperationNotCovered { .. }
            | Reject::AgreementNotYetValid { .. }
            | Reject::AgreementExpired { .. }
            | Reject::Suspended { .. }
            | Reject::AgreementChoiceRequired { .. }
            | Reject::QuotaExceeded { .. }
            | Reject::BadPath(_)
            | Reject::NoService
            | Reject::NoOperation { .. }
            | Reject::RequestSchemaViolation { .. }
            | Reject::BodyTooLarge { .. }
            | Reject::BodyRead(_)
            | Reject::BadHeader(_)
            | Reject::UpstreamUnavailable { .. }
            | Reject::UpstreamTimeout { .. }
            | Reject::RequestTimeout { .. }
            | Reject::UpstreamTls { .. }
            | Reject::UpstreamSchemaViolation { .. }
            | Reject::UpstreamBodyRead { .. }
            | Reject::UpstreamResponseTooLarge { .. }
            | Reject::UpstreamCredentials { .. }
            | Reject::Overloaded { .. }
            | Reject::AuditUnavailable
            | Reject::OverBudget(_)
            | Reject::UpstreamProtocol { .. } => Cow::Owned(self.to_string()),
        }
    }

    /// The problem type; its slug is also the audit outcome of a refused exchange.
    pub fn problem(&self) -> Problem {
        match self {
            Reject::UnknownAgency => Problem::UnknownAgency,
            Reject::CertificateNotPinned { .. } => Problem::CertificateNotPinned,
            Reject::CertificateRevoked => Problem::CertificateRevoked,
            Reject::CertificateUntrusted => Problem::CertificateUntrusted,
            Reject::ClearanceInsufficient { .. } => Problem::ClearanceInsufficient,
            // A foreign agreement id gets the same answer as having none: nothing to learn.
            Reject::NoAgreement { .. } | Reject::AgreementNotYours { .. } => Problem::NoAgreement,
            Reject::OperationNotCovered { .. } => Problem::OperationNotCovered,
            Reject::AgreementNotYetValid { .. } => Problem::AgreementNotYetValid,
            Reject::AgreementExpired { .. } => Problem::AgreementExpired,
            Reject::Suspended { .. } => Problem::Suspended,
            Reject::AgreementChoiceRequired { .. } => Problem::AgreementChoiceRequired,
            Reject::QuotaExceeded { .. } => Problem::QuotaExceeded,
            Reject::MalformedJson { .. } => Problem::MalformedJson,
            Reject::UnsupportedMediaType { .. } => Problem::UnsupportedMediaType,
            Reject::RequestSchemaViolation { .. } => Problem::RequestSchemaViolation,
            Reject::InvalidParameter { .. } => Problem::InvalidParameter,
            Reject::UpstreamSchemaViolation { .. } => Problem::UpstreamSchemaViolation,
            Reject::UpstreamResponseTooLarge { .. } => Problem::UpstreamResponseTooLarge,
            Reject::UpstreamCredentials { .. } => Problem::UpstreamCredentials,
            Reject::Overloaded { .. } | Reject::OverBudget(_) => Problem::Overloaded,
            Reject::BadPath(_) => Problem::MalformedPath,
            Reject::NoService => Problem::NoRoute,
            Reject::NoOperation { .. } => Problem::NoOperation,
            Reject::MethodNotAllowed { .. } => Problem::MethodNotAllowed,
            Reject::BodyTooLarge { .. } => Problem::BodyTooLarge,
            Reject::BodyRead(_) => Problem::MalformedBody,
            Reject::BadHeader(_) => Problem::MalformedHeader,
            Reject::UpstreamUnavailable { .. } => Problem::UpstreamUnavailable,
            Reject::AuditUnavailable => Problem::AuditUnavailable,
            Reject::UpstreamTimeout { .. } => Problem::UpstreamTimeout,
            Reject::RequestTimeout { .. } => Problem::RequestTimeout,
            Reject::UpstreamTls { .. } => Problem::UpstreamTls,
            Reject::UpstreamProtocol { .. } | Reject::UpstreamBodyRead { .. } => {
                Problem::UpstreamProtocolError
            }
        }
    }

    /// The stable name of the problem (`docs/problems.md`).
    pub fn slug(&self) -> &'static str {
        self.problem().as_str()
    }

    pub fn title(&self) -> &'static str {
        match self {
            Reject::UnknownAgency => "Caller is not a registered agency",
            Reject::CertificateNotPinned { .. } => "Certificate not pinned for this agency",
            Reject::CertificateRevoked => "Certificate revoked",
            Reject::CertificateUntrusted => "Certificate no longer trusted",
            Reject::ClearanceInsufficient { .. } => "Clearance below the service's classification",
            Reject::NoAgreement { .. } | Reject::AgreementNotYours { .. } => {
                "No data-sharing agreement"
            }
            Reject::OperationNotCovered { .. } => "Operation not covered by the agreement",
            Reject::AgreementNotYetValid { .. } => "Agreement not yet in force",
            Reject::AgreementExpired { .. } => "Agreement expired",
            Reject::Suspended { .. } => "Suspended",
            Reject::AgreementChoiceRequired { .. } => "Agreement choice required",
            Reject::QuotaExceeded { .. } => "Quota exceeded",
            Reject::MalformedJson { .. } => "Malformed JSON",
            Reject::UnsupportedMediaType { .. } => "Unsupported media type",
            Reject::RequestSchemaViolation { .. } => "Request breaks its schema",
            Reject::InvalidParameter { .. } => "Invalid parameter",
            Reject::UpstreamSchemaViolation { .. } => "Upstream response breaks its schema",
            Reject::UpstreamResponseTooLarge { .. } => "Upstream response too large",
            Reject::UpstreamCredentials { .. } => "Upstream credentials unavailable",
            Reject::Overloaded { .. } => "Service overloaded",
            Reject::OverBudget(_) => "Gateway overloaded",
            Reject::BadPath(_) => "Malformed request path",
            Reject::NoService => "No such service",
            Reject::NoOperation { .. } => "No such operation",
            Reject::MethodNotAllowed { .. } => "Method not allowed",
            Reject::BodyTooLarge { .. } => "Request body too large",
            Reject::BodyRead(_) => "Malformed request body",
            Reject::BadHeader(_) => "Malformed request header",
            Reject::UpstreamUnavailable { .. } => "Upstream unavailable",
            Reject::AuditUnavailable => "Audit unavailable",
            Reject::UpstreamTimeout { .. } => "Upstream timeout",
            Reject::RequestTimeout { .. } => "Request timeout",
            Reject::UpstreamTls { .. } => "Upstream failed TLS verification",
            Reject::UpstreamProtocol { .. } | Reject::UpstreamBodyRead { .. } => {
                "Upstream protocol error"
            }
        }
    }

    pub fn severity(&self) -> Severity {
        match self {
            Reject::UpstreamUnavailable { .. }
            | Reject::AuditUnavailable
            | Reject::UpstreamTimeout { .. }
            | Reject::UpstreamTls { .. }
            | Reject::UpstreamProtocol { .. }
            | Reject::UpstreamBodyRead { .. }
            | Reject::UpstreamResponseTooLarge { .. }
            | Reject::UpstreamCredentials { .. }
            | Reject::Overloaded { .. }
            | Reject::OverBudget(_)
            | Reject::UpstreamSchemaViolation { .. } => Severity::Upstream,
            _ => Severity::Caller,
        }
    }

    /// Whether the connection must close after this refusal: the rest of a late body may still
    /// be on its way, or the certificate the connection was opened with earns no answer ever
    /// again on it. (HTTP/1.1: `Connection: close`; HTTP/2: GOAWAY.)
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Reject::RequestTimeout { .. }
                | Reject::UnknownAgency
                | Reject::CertificateNotPinned { .. }
                | Reject::CertificateRevoked
                | Reject::CertificateUntrusted
        )
    }

    /// The schema violations behind a 422 or a 502 `upstream-schema-violation`.
    pub fn violations(&self) -> Option<&[Violation]> {
        match self {
            Reject::RequestSchemaViolation { violations, .. }
            | Reject::InvalidParameter { violations, .. }
            | Reject::UpstreamSchemaViolation { violations, .. } => Some(violations),
            _ => None,
        }
    }

    /// The gRPC status code of this refusal, for callers on `grpc_listen` (documented in
    /// `proto/penghubung/v1/exchange.proto`).
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self.status().as_u16() {
            _ if matches!(self, Reject::AgreementChoiceRequired { .. }) => Code::FailedPrecondition,
            _ if matches!(self, Reject::BodyTooLarge { .. }) => Code::ResourceExhausted,
            _ if matches!(self, Reject::AuditUnavailable) => Code::Unavailable,
            408 => Code::DeadlineExceeded,
            400 | 405 | 415 | 422 => Code::InvalidArgument,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            429 => Code::ResourceExhausted,
            503 => Code::Unavailable,
            504 => Code::DeadlineExceeded,
            _ => Code::Internal,
        }
    }
}

fn window(per: Duration) -> &'static str {
    match per.as_secs() {
        1 => "second",
        60 => "minute",
        3600 => "hour",
        _ => "day",
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use http::header::{ALLOW, CONTENT_TYPE};
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn problem_document_has_every_member() {
        let reject = Reject::MethodNotAllowed {
            service: "dukcapil-penduduk".into(),
            method: Method::DELETE,
            allow: vec![Method::GET, Method::HEAD],
        };
        let response = reject.to_response("0193-x");
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["type"], "urn:penghubung:problem:method-not-allowed");
        assert_eq!(json["title"], "Method not allowed");
        assert_eq!(json["status"], 405);
        assert_eq!(json["exchange_id"], "0193-x");
        assert!(json["detail"].as_str().unwrap().contains("DELETE"));
    }
}
