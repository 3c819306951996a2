//! Forward: to an upstream of the service (the owner's service gets the commitment nonce),
//! within the exchange's deadline; the answer's headers rewritten for the caller, and its body
//! held to the same deadline.

use std::pin::Pin;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::Full;
use tokio::time::Sleep;

use crate::audit::SPL_COMMITMENT_NONCE;
use crate::body::{with_deadline, Body};
use crate::reject::Reject;
use crate::upstream;

use super::lookup::Pending;
use super::prepare::Outbound;
use super::route::To;
use super::{Ctx, Facts};

#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
    x: &Ctx<'_>,
    to: &To<'_>,
    mut parts: Parts,
    outbound: &Outbound,
    body: Bytes,
    mut deadline: Pin<Box<Sleep>>,
    pending: &mut Option<Pending<'_>>,
    facts: &Facts,
) -> Result<Response<Body>, Reject> {
    if let Some(nonce) = &facts.nonce {
        parts
            .headers
            .insert(SPL_COMMITMENT_NONCE, nonce.header_value());
    }
    let service = to.service;
    let request = Request::from_parts(parts, Full::new(body));
    let asked = tokio::time::Instant::now();
    let forward = x.active.upstreams.forward(
        to.service_index,
        service,
        &outbound.target,
        outbound.query.as_deref(),
        request,
    );
    let forwarded = tokio::select! {
        biased;
        forwarded = forward => forwarded,
        () = deadline.as_mut() => Err(Reject::UpstreamTimeout {
            service: service.id.clone(),
            after: service.request_timeout,
        }),
    };
    x.gw.telemetry.upstream(
        x.snapshot,
        x.active.generation,
        to.service_index,
        asked.elapsed(),
    );
    let response = match forwarded {
        Ok(response) => response,
        Err(reject) => {
            // Those waiting on this fetch learn it timed out, rather than waiting on.
            if let Reject::UpstreamTimeout { after, .. } = &reject {
                if let Some(pending) = pending.take() {
                    pending.fetch.timed_out(*after);
                }
            }
            return Err(reject);
        }
    };
    let (mut parts, body) = response.into_parts();
    upstream::to_caller(&mut parts.headers);
    let body = with_deadline(body, deadline, service.request_timeout);
    Ok(Response::from_parts(parts, body))
}
