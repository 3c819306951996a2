//! Read the request: its body, bounded by the operation's `max_request_body` and the memory
//! budget, and read completely within the exchange's deadline before any upstream contact; its
//! commitment for the audit record; then its schema.

use std::pin::Pin;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::request::Parts;
use tokio::time::Sleep;

use crate::body::collect_within;
use crate::budget::{Held, Part};
use crate::reject::Reject;
use crate::validate;

use super::route::To;
use super::Facts;

pub(super) async fn body<B>(
    to: &To<'_>,
    parts: &Parts,
    body: B,
    deadline: &mut Pin<Box<Sleep>>,
    facts: &mut Facts,
    held: &mut Held,
) -> Result<Bytes, Reject>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let read = collect_within(
        body,
        declared,
        to.service.max_request_body,
        Some((held, Part::Request)),
    );
    let body = tokio::select! {
        biased;
        read = read => read?,
        () = deadline.as_mut() => {
            return Err(Reject::RequestTimeout {
                after: to.service.request_timeout,
            })
        }
    };
    if let Some(nonce) = &facts.nonce {
        facts.request = Some(crate::audit::commit(nonce, to.grpc, &body));
    }
    validate::request(to.operation, &parts.headers, &body)?;
    Ok(body)
}
