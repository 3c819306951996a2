//! What became of an exchange, and what the cache did for it: the audit record's `outcome` and
//! `cache`, the `outcome` label of the metrics, the span status, and what `report` and `/v1/sla`
//! count. The wire names live here and nowhere else (`docs/problems.md`, `docs/audit-format.md`).

use std::fmt;

/// The end of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream answered and the answer was passed on.
    Forwarded,
    /// The answer broke its schema and was passed on under `schema_mode = "monitor"`.
    ForwardedSchemaViolation,
    /// A stored (or coalesced) answer was served.
    ServedFromCache,
    /// A streamed gRPC answer the caller stopped reading.
    CallerCancelled,
    /// The gateway refused the exchange, or it failed: the problem's slug.
    Refused(Problem),
}

/// What `report` and `/v1/sla` make of an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The service answered (a cached answer counts).
    Answered,
    /// The service, its upstream or the gateway failed.
    Failed,
    /// The caller's doing: it does not count against the service.
    Refused,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::ForwardedSchemaViolation => "forwarded-schema-violation",
            Outcome::ServedFromCache => "served-from-cache",
            Outcome::CallerCancelled => "caller-cancelled",
            Outcome::Refused(problem) => problem.as_str(),
        }
    }

    /// The outcome an audit record names, if it is an exchange outcome.
    pub fn parse(name: &str) -> Option<Outcome> {
        Some(match name {
            "forwarded" => Outcome::Forwarded,
            "forwarded-schema-violation" => Outcome::ForwardedSchemaViolation,
            "served-from-cache" => Outcome::ServedFromCache,
            "caller-cancelled" => Outcome::CallerCancelled,
            other => Outcome::Refused(Problem::parse(other)?),
        })
    }

    /// Whether the caller got the service's answer (stored or fresh; its status may still be
    /// an error of the service's own).
    pub fn answered(self) -> bool {
        matches!(
            self,
            Outcome::Forwarded | Outcome::ForwardedSchemaViolation | Outcome::ServedFromCache
        )
    }

    /// Answered, failed on the gateway's or upstream's side, or refused (the caller's doing),
    /// given the HTTP status and gRPC status the caller got.
    pub fn kind(self, status: Option<u16>, grpc_status: Option<u32>) -> Kind {
        match self {
            _ if self.answered() => {
                if status.is_some_and(|s| s >= 500)
                    || grpc_status.is_some_and(|g| g != 0 && is_server_grpc(g))
                {
                    Kind::Failed
                } else {
                    Kind::Answered
                }
            }
            Outcome::Refused(problem) if problem.is_failure() => Kind::Failed,
            _ => Kind::Refused,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// gRPC codes that are the server's fault (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS), not the caller's.
fn is_server_grpc(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Declares the problems: each variant with its slug, the stable last part of its problem
/// `type` (`urn:penghubung:problem:<slug>`).
macro_rules! problems {
    ($($variant:ident => $slug:literal,)*) => {
        /// A refusal's problem type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Problem {
            $($variant,)*
        }

        impl Problem {
            /// Every problem, in the order `docs/problems.md` lists them.
            pub const ALL: &'static [Problem] = &[$(Problem::$variant,)*];

            /// The slug.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Problem::$variant => $slug,)*
                }
            }

            /// The problem a slug names.
            pub fn parse(slug: &str) -> Option<Problem> {
                match slug {
                    $($slug => Some(Problem::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

problems! {
    UnknownAgency => "unknown-agency",
    CertificateNotPinned => "certificate-not-pinned",
    CertificateRevoked => "certificate-revoked",
    CertificateUntrusted => "certificate-untrusted",
    ClearanceInsufficient => "clearance-insufficient",
    NoAgreement => "no-agreement",
    OperationNotCovered => "operation-not-covered",
    AgreementNotYetValid => "agreement-not-yet-valid",
    AgreementExpired => "agreement-expired",
    Suspended => "suspended",
    AgreementChoiceRequired => "agreement-choice-required",
    QuotaExceeded => "quota-exceeded",
    MalformedJson => "malformed-json",
    UnsupportedMediaType => "unsupported-media-type",
    RequestSchemaViolation => "request-schema-violation",
    InvalidParameter => "invalid-parameter",
    UpstreamSchemaViolation => "upstream-schema-violation",
    UpstreamResponseTooLarge => "upstream-response-too-large",
    UpstreamCredentials => "upstream-credentials",
    Overloaded => "overloaded",
    MalformedPath => "malformed-path",
    NoRoute => "no-route",
    NoOperation => "no-operation",
    MethodNotAllowed => "method-not-allowed",
    BodyTooLarge => "body-too-large",
    MalformedBody => "malformed-body",
    MalformedHeader => "malformed-header",
    UpstreamUnavailable => "upstream-unavailable",
    AuditUnavailable => "audit-unavailable",
    UpstreamTimeout => "upstream-timeout",
    RequestTimeout => "request-timeout",
    UpstreamTls => "upstream-tls",
    UpstreamProtocolError => "upstream-protocol-error",
}

impl Problem {
    /// A failure of the service's upstream or of the gateway, not a refusal of the caller's
    /// request: it counts against the service's availability.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Problem::UpstreamSchemaViolation
                | Problem::UpstreamResponseTooLarge
                | Problem::UpstreamCredentials
                | Problem::UpstreamUnavailable
                | Problem::UpstreamTimeout
                | Problem::UpstreamTls
                | Problem::UpstreamProtocolError
                | Problem::AuditUnavailable
        )
    }

    /// Whether a schema was broken, and where: (direction, enforced).
    pub fn violation(self) -> Option<Violated> {
        match self {
            Problem::InvalidParameter => Some(Violated::Parameter),
            Problem::RequestSchemaViolation => Some(Violated::Request),
            Problem::UpstreamSchemaViolation => Some(Violated::Response),
            _ => None,
        }
    }
}

/// Where a schema was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violated {
    Parameter,
    Request,
    Response,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the cache did for an exchange of a cacheable operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// A fresh stored answer was served.
    Hit,
    /// The answer of another exchange's fetch, waited for, was served.
    Coalesced,
    /// The upstream's answer was stored.
    Stored,
    /// The upstream was asked and its answer not stored.
    Miss,
}

impl CacheState {
    /// The wire name (the audit record's `cache`).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheState::Hit => "hit",
            CacheState::Coalesced => "coalesced",
            CacheState::Stored => "stored",
            CacheState::Miss => "miss",
        }
    }

    /// Whether a stored answer was served.
    pub fn served(self) -> bool {
        matches!(self, CacheState::Hit | CacheState::Coalesced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_name_reads_back_as_itself() {
        for &problem in Problem::ALL {
            let outcome = Outcome::Refused(problem);
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
        }
        for outcome in [
            Outcome::Forwarded,
            Outcome::ForwardedSchemaViolation,
            Outcome::ServedFromCache,
            Outcome::CallerCancelled,
        ] {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(Outcome::parse("start"), None);
    }

    #[test]
    fn upstream_failures_count_against_the_service_and_refusals_do_not() {
        let refused = |p| Outcome::Refused(p).kind(Some(502), None);
        assert_eq!(refused(Problem::UpstreamTimeout), Kind::Failed);
        assert_eq!(refused(Problem::AuditUnavailable), Kind::Failed);
        assert_eq!(refused(Problem::NoAgreement), Kind::Refused);
        assert_eq!(refused(Problem::Overloaded), Kind::Refused);
        assert_eq!(Outcome::Forwarded.kind(Some(200), None), Kind::Answered);
        assert_eq!(Outcome::Forwarded.kind(Some(503), None), Kind::Failed);
        assert_eq!(Outcome::Forwarded.kind(Some(200), Some(14)), Kind::Failed);
        assert_eq!(Outcome::Forwarded.kind(Some(200), Some(5)), Kind::Answered);
        assert_eq!(
            Outcome::CallerCancelled.kind(Some(200), None),
            Kind::Refused
        );
        // Every problem whose slug says `upstream-` is a failure, and only those and the
        // audit log's.
        for &p in Problem::ALL {
            assert_eq!(
                p.is_failure(),
                p.as_str().starts_with("upstream-") || p == Problem::AuditUnavailable,
                "{p}"
            );
        }
    }
}
