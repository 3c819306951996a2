//! Cache lookup: every policy stage has passed for this request. A fresh entry is served; a
//! miss leads the one upstream request for its key, or waits for the one under way. The key
//! keeps agencies (and agreements) apart unless the service is `terbuka`.

use std::time::Duration;

use http::{HeaderMap, Method, Response};

use crate::body::Body;
use crate::cache::{self, Fetch, Key, Lookup, Sharing};
use crate::config::Classification;
use crate::outcome::CacheState;
use crate::reject::Reject;

use super::admit::Admitted;
use super::prepare::Outbound;
use super::route::To;
use super::{Ctx, Facts};

/// What the cache did.
pub(super) enum Looked<'c> {
    /// A stored answer, to serve.
    Hit(Response<Body>),
    /// Go upstream; with a fetch to finish when this exchange leads it.
    Miss(Option<Pending<'c>>),
}

/// A miss this exchange fetches for the cache.
pub(super) struct Pending<'c> {
    pub fetch: Fetch<'c>,
    /// The headers the upstream is sent (what the entry is stored under).
    pub sent: HeaderMap,
    /// The operation's `cache_ttl`.
    pub ceiling: Duration,
}

pub(super) async fn cached<'c>(
    x: &Ctx<'c>,
    consumer: usize,
    to: &To<'_>,
    admitted: &Admitted<'_>,
    parts: &http::request::Parts,
    outbound: &Outbound,
    facts: &mut Facts,
) -> Result<Looked<'c>, Reject> {
    let Some((ceiling, directives)) = outbound.cacheable else {
        return Ok(Looked::Miss(None));
    };
    let service = to.service;
    let headers = &parts.headers;
    let key = Key::primary(&cache::Request {
        service: &service.id,
        operation: &to.operation.id,
        sharing: match service.classification {
            Classification::Terbuka => Sharing::Everyone,
            _ => Sharing::Consumer {
                agency: &x.snapshot.agencies[consumer].code,
                agreement: admitted.agreement.map(|a| a.id.as_str()),
            },
        },
        target: &outbound.target,
        query: outbound.query.as_deref(),
        headers,
    });
    let head = parts.method == Method::HEAD;
    match x
        .gw
        .cache
        .lookup(key, headers, directives, !head, service.timeout)
        .await
    {
        Lookup::Hit(hit) => {
            facts.cache = Some(if hit.coalesced {
                CacheState::Coalesced
            } else {
                CacheState::Hit
            });
            facts.origin = Some(hit.stored().origin.clone());
            Ok(Looked::Hit(hit.response(head)))
        }
        Lookup::TimedOut(after) => {
            facts.cache = Some(CacheState::Coalesced);
            Err(Reject::UpstreamTimeout {
                service: service.id.clone(),
                after,
            })
        }
        Lookup::Miss(fetch) => {
            facts.cache = Some(CacheState::Miss);
            // HEAD answers carry no body to store.
            Ok(Looked::Miss((!head).then(|| Pending {
                fetch,
                sent: headers.clone(),
                ceiling,
            })))
        }
    }
}
