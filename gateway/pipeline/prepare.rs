//! Prepare the upstream request: its headers (the caller's identity, agreement and exchange
//! added; hop-by-hop, client-address and `SPL-*` headers of the caller's removed), the target
//! and the query. A cacheable operation's upstream sees only the caller headers the cache key
//! holds, and not the host the caller addressed: nothing outside the key can shape a response
//! that others may be served.

use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::request::Parts;

use crate::cache::{self, Cache};
use crate::config::Protocol;
use crate::upstream::{self, Forwarding};

use super::admit::Admitted;
use super::route::To;
use super::Ctx;

/// Where the upstream request goes, beside its head (prepared in place).
pub(super) struct Outbound {
    /// The path the upstream sees (the rest after the service prefix; a gRPC method whole).
    pub target: String,
    pub query: Option<String>,
    /// A cacheable operation: its `cache_ttl` and the caller's cache directives.
    pub cacheable: Option<(Duration, cache::Directives)>,
}

pub(super) fn upstream_request(
    x: &Ctx<'_>,
    consumer: usize,
    to: &To<'_>,
    admitted: &Admitted<'_>,
    parts: &mut Parts,
) -> Outbound {
    let cacheable = Cache::ceiling(to.service, to.operation)
        .map(|c| (c, cache::Directives::of(&parts.headers)));
    let host = match cacheable {
        Some(_) => {
            upstream::keep_only(&mut parts.headers, &cache::KEYED_HEADERS);
            None
        }
        None => parts
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                parts
                    .headers
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            }),
    };
    upstream::to_upstream(
        &mut parts.headers,
        &Forwarding {
            consumer: &x.snapshot.agencies[consumer].code,
            agreement: admitted
                .agreement
                .map(|a| (a.id.as_str(), a.purpose.as_str(), a.basis.as_str())),
            exchange: x.exchange,
            client: x.caller.remote,
            host: host.as_deref(),
        },
    );
    // A gRPC method is forwarded whole (`/pkg.Service/Method`), and gRPC wants `te: trailers`.
    let target = match to.service.protocol {
        Protocol::Http => to.path.encoded_from(to.matched.prefix_len),
        Protocol::Grpc => {
            parts
                .headers
                .insert(http::header::TE, HeaderValue::from_static("trailers"));
            to.path.encoded_from(0)
        }
    };
    let query = parts.uri.query().map(str::to_owned);
    Outbound {
        target,
        query,
        cacheable,
    }
}
