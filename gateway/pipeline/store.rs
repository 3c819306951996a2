//! Store: a conforming answer of a fetch this exchange leads, read whole within the cache's
//! entry limit, is offered to the cache (which keeps it if RFC 9111 and the operation's
//! `cache_ttl` allow); a larger one streams on, unstored.

use http::Response;

use crate::body::{full, read_up_to, Body, Read};
use crate::budget::Held;
use crate::cache::Fetched;
use crate::outcome::CacheState;
use crate::reject::Reject;

use super::lookup::Pending;
use super::route::To;
use super::{Ctx, Facts};

pub(super) async fn store(
    x: &Ctx<'_>,
    to: &To<'_>,
    pending: Option<Pending<'_>>,
    response: Response<Body>,
    facts: &mut Facts,
    held: &mut Held,
) -> Result<Response<Body>, Reject> {
    let Some(Pending {
        fetch,
        sent,
        ceiling,
    }) = pending
    else {
        return Ok(response);
    };
    if facts.unconforming {
        fetch.refuse("schema-violation");
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let limit = fetch.entry_limit();
    let body = match read_up_to(body, limit, held).await {
        Ok(Read::Whole(bytes)) => {
            let fetched = Fetched {
                request: &sent,
                response: &parts,
                body: &bytes,
                ceiling,
                origin: &x.exchange.id,
            };
            if fetch.finish(&fetched).is_ok() {
                facts.cache = Some(CacheState::Stored);
            }
            full(bytes)
        }
        Ok(Read::Stream(rest, reason)) => {
            fetch.refuse(reason);
            rest
        }
        Err(error) => return Err(Reject::upstream_body(&to.service.id, error)),
    };
    Ok(Response::from_parts(parts, body))
}
