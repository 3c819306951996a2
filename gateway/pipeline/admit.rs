//! Authorize and charge: suspensions of the service and the agreement, classification and
//! clearance, the agreement in force (or the one `SPL-Agreement` names) evaluated against
//! today's date, then the agreement's quota — before any work on the body or the upstream.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Response;

use crate::authorize::{authorize, Ask, Grant};
use crate::body::Body;
use crate::config::{Agreement, Classification};
use crate::quota::Decision;
use crate::reject::{rate_limit_headers, retry_seconds, Reject};
use crate::suspension::Scope;
use crate::upstream::{SPL_AGREEMENT, SPL_CLASSIFICATION};

use super::route::To;
use super::{Ctx, Facts};

/// What the exchange was admitted under.
pub(super) struct Admitted<'a> {
    /// The agreement that covers it; none for an open (`terbuka`) service without one.
    pub agreement: Option<&'a Agreement>,
    /// The service's classification: the consumer's handling label.
    classification: Classification,
    /// `RateLimit-Policy` and `RateLimit`, for an agreement with a rate.
    quota: Option<[(HeaderName, HeaderValue); 2]>,
}

pub(super) fn admit<'a>(
    x: &Ctx<'a>,
    consumer: usize,
    to: &To<'a>,
    headers: &HeaderMap,
    facts: &mut Facts,
) -> Result<Admitted<'a>, Reject> {
    let snapshot = x.snapshot;
    not_suspended(x, Scope::Service, &to.service.id)?;
    let chosen = match headers.get(SPL_AGREEMENT) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| Reject::AgreementNotYours {
            agreement: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            agency: snapshot.agencies[consumer].code.clone(),
            service: to.service.id.clone(),
        })?),
    };
    let grant = authorize(
        snapshot,
        Ask {
            consumer,
            service: to.service_index,
            operation: to.matched.operation,
            chosen,
            today: x.gw.clock.today(snapshot.gateway.timezone),
        },
    )?;
    let index = match grant {
        Grant::Open => {
            return Ok(Admitted {
                agreement: None,
                classification: to.service.classification,
                quota: None,
            })
        }
        Grant::Agreement(i) => i,
    };
    facts.agreement = Some(index);
    let agreement = &snapshot.agreements[index];
    not_suspended(x, Scope::Agreement, &agreement.id)?;
    let quota = match x.active.quotas.check(index) {
        None => None,
        Some((rate, Decision::Admitted { remaining, reset })) => Some(rate_limit_headers(
            &agreement.id,
            rate,
            remaining,
            retry_seconds(reset),
        )),
        Some((rate, Decision::Limited { retry_after })) => {
            return Err(Reject::QuotaExceeded {
                agreement: agreement.id.clone(),
                rate,
                retry_after,
            })
        }
    };
    Ok(Admitted {
        agreement: Some(agreement),
        classification: to.service.classification,
        quota,
    })
}

/// Refuses an exchange that touches a suspended agency, agreement or service.
pub(super) fn not_suspended(x: &Ctx<'_>, scope: Scope, id: &str) -> Result<(), Reject> {
    match x.gw.suspensions.holds(scope, id) {
        true => Err(Reject::Suspended {
            scope,
            id: id.to_owned(),
        }),
        false => Ok(()),
    }
}

impl Admitted<'_> {
    /// `response` labelled for the consumer (Perbup Maluku Tengah 50/2020 Ps 14(5)): the
    /// service's `SPL-Classification`, the `SPL-Agreement` it was answered under, and the
    /// agreement's quota headers when it has a rate.
    pub fn label(&self, mut response: Response<Body>) -> Response<Body> {
        let headers = response.headers_mut();
        headers.insert(
            SPL_CLASSIFICATION,
            HeaderValue::from_static(self.classification.as_str()),
        );
        if let Some(agreement) = self.agreement {
            if let Ok(id) = HeaderValue::from_str(&agreement.id) {
                headers.insert(SPL_AGREEMENT, id);
            }
        }
        if let Some(quota) = &self.quota {
            for (name, value) in quota {
                headers.insert(name, value.clone());
            }
        }
        response
    }
}
