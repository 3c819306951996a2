//! The request path, top to bottom: `handle → run → conclude`. Every stage is a function in a
//! file of its own here, returning `Result<_, Reject>`; the first refusal becomes the response.
//! Reading `run` is reading what the gateway does to a request.
//!
//! | stage | file | what it does |
//! |---|---|---|
//! | identify | [`crate::caller`] | the connection's certificate names an agency of the configuration in force, not suspended ([`crate::suspension`]) |
//! | route | `route.rs` | the path normalised; the catalog, or a service and operation; the exchange's deadline |
//! | authorize and charge | `admit.rs` | suspensions, classification and agreements, then the agreement's quota |
//! | parameters | [`crate::validate`] | path and query parameters against their schemas, before the body is read |
//! | read the request | `read.rs` | the body, bounded and within the deadline; its commitment; its schema |
//! | prepare | `prepare.rs` | the upstream request's headers, target and query |
//! | cache lookup | `lookup.rs` | a fresh stored answer, a coalesced one, or the lead of the one fetch |
//! | forward | `forward.rs` | to a healthy upstream, within the deadline; the answer's headers back |
//! | check the response | `check.rs` | the answer against its schema |
//! | store | `store.rs` | a conforming, storable answer kept for the next caller |
//! | conclude | `conclude.rs` | outcome, log, metrics, SLA, audit record, span |

mod admit;
mod check;
mod conclude;
mod forward;
mod lookup;
mod prepare;
mod read;
mod route;
mod store;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response};
use tracing::Instrument;

use crate::audit::{BodyDigest, Nonce};
use crate::body::{holding, Body};
use crate::budget::Held;
use crate::caller::{Caller, Resolved};
use crate::config::Snapshot;
use crate::exchange::Exchange;
use crate::outcome::CacheState;
use crate::reject::{CloseConnection, Reject};
use crate::runtime::{Active, Gateway};
use crate::suspension::Scope;
use crate::validate;

pub use conclude::MAX_AUDITED_RESPONSE;

/// What every stage of one exchange reads: the gateway, the configuration the exchange started
/// on, who is calling, and the exchange's id and trace.
struct Ctx<'a> {
    gw: &'a Gateway,
    active: &'a Active,
    snapshot: &'a Snapshot,
    caller: &'a Caller,
    exchange: &'a Exchange,
}

/// What the stages learned about an exchange, for its metrics and audit record. Indexes into
/// the snapshot, so that learning them costs nothing on the hot path.
#[derive(Default)]
struct Facts {
    consumer: Option<usize>,
    service: Option<usize>,
    operation: Option<usize>,
    agreement: Option<usize>,
    target: Option<String>,
    /// With an audit log: the exchange's commitment nonce, for the two parties only.
    nonce: Option<Nonce>,
    request: Option<BodyDigest>,
    /// The response broke its schema and was forwarded under `monitor`.
    unconforming: bool,
    /// What the cache did; none for operations that are not cached.
    cache: Option<CacheState>,
    /// On a hit, the exchange whose upstream response was served.
    origin: Option<String>,
}

/// The exchange as its conclusion needs it.
struct Seen<'a> {
    active: &'a Active,
    caller: &'a Caller,
    exchange: &'a Exchange,
    method: &'a http::Method,
    started: std::time::Instant,
    /// The caller speaks gRPC: refusals are gRPC statuses, and responses stream.
    grpc: bool,
    /// The exchange is an `Exchange.Call` of the gRPC front: the caller gets a gRPC status
    /// (OK, or its refusal's code), which its record carries.
    call: bool,
    /// Announced to the audit writer at the start; released when the record is handed over.
    expected: Option<crate::audit::Expected>,
}

/// Marks the HTTP request the gRPC front made of an `Exchange.Call` (in its extensions).
#[derive(Debug, Clone, Copy)]
pub struct ExchangeCall;

// === impl Gateway ===

impl Gateway {
    /// Handles one request; never fails: a refusal is a problem+json response. Every response
    /// carries `SPL-Exchange-Id`.
    pub async fn handle<B>(&self, caller: &Caller, request: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = std::time::Instant::now();
        let exchange = Exchange::begin(request.headers());
        let method = request.method().clone();
        let grpc = is_grpc(request.headers());
        let call = request.extensions().get::<ExchangeCall>().is_some();
        let active = self.active();
        let caller = caller.at(&active.snapshot, active.generation);
        let caller = &*caller;
        let mut facts = Facts {
            nonce: self.audit.as_ref().map(|_| Nonce::fresh()),
            ..Facts::default()
        };
        let mut held = self.budget.account();
        // Room for the exchange's record is held before it can go upstream.
        let target_len = request
            .uri()
            .path_and_query()
            .map_or(0, |p| p.as_str().len());
        let expected = self.audit.as_ref().map(|audit| audit.expect(target_len));
        async {
            let version = request.version();
            let x = Ctx {
                gw: self,
                active: &active,
                snapshot: &active.snapshot,
                caller,
                exchange: &exchange,
            };
            let result = run(&x, request, &mut facts, &mut held).await;
            let seen = Seen {
                active: &active,
                caller,
                exchange: &exchange,
                method: &method,
                started,
                grpc,
                call,
                expected,
            };
            let mut response = self.conclude(seen, facts, result, &mut held).await;
            if version < http::Version::HTTP_2
                && response.extensions().get::<CloseConnection>().is_some()
            {
                response
                    .headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            // What the exchange holds is given back once its answer has been sent.
            response.map(|body| holding(body, held))
        }
        .instrument(exchange_span(&exchange))
        .await
    }

    /// Refuses an exchange that never became an HTTP request (an `Exchange.Call` naming no
    /// configured service or operation), with the same logging, metrics and audit record as
    /// any refusal.
    pub async fn refuse(
        &self,
        caller: &Caller,
        method: &http::Method,
        reject: Reject,
    ) -> Response<Body> {
        let exchange = Exchange::begin(&http::HeaderMap::new());
        let active = self.active();
        let caller = caller.at(&active.snapshot, active.generation);
        let caller = &*caller;
        let facts = Facts {
            consumer: match caller.agency {
                Resolved::Agency(i) => Some(i),
                _ => None,
            },
            nonce: self.audit.as_ref().map(|_| Nonce::fresh()),
            ..Facts::default()
        };
        let seen = Seen {
            active: &active,
            caller,
            exchange: &exchange,
            method,
            started: std::time::Instant::now(),
            grpc: false,
            call: true,
            expected: None,
        };
        let mut held = self.budget.account();
        self.conclude(seen, facts, Err(reject), &mut held)
            .instrument(exchange_span(&exchange))
            .await
    }
}

/// The stages, in order. Each returns to here; none calls another.
async fn run<B>(
    x: &Ctx<'_>,
    request: Request<B>,
    facts: &mut Facts,
    held: &mut Held,
) -> Result<Response<Body>, Reject>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Fail closed: nothing goes upstream while the audit log cannot record it, nor while its
    // disk lacks the room held for the records of the exchanges under way.
    if x.gw.audit.as_ref().is_some_and(|a| !a.admits()) {
        return Err(Reject::AuditUnavailable);
    }
    let consumer = x.caller.consumer(x.snapshot)?;
    facts.consumer = Some(consumer);
    let agency = &x.snapshot.agencies[consumer].code;
    admit::not_suspended(x, Scope::Agency, agency)?;
    let path = crate::route::normalize(request.uri().path())?;
    let to = match route::route(x, consumer, &request, &path, facts)? {
        route::Routed::Catalog(document) => return Ok(document),
        route::Routed::Operation(to) => to,
    };
    let admitted = admit::admit(x, consumer, &to, request.headers(), facts)?;
    validate::params(to.operation, &to.matched.params, request.uri().query())?;
    // One timer for the exchange's deadline, from here to the response's last byte.
    let mut deadline = Box::pin(tokio::time::sleep_until(to.deadline));
    let (mut parts, body) = request.into_parts();
    let body = read::body(&to, &parts, body, &mut deadline, facts, held).await?;
    let outbound = prepare::upstream_request(x, consumer, &to, &admitted, &mut parts);
    let looked = lookup::cached(x, consumer, &to, &admitted, &parts, &outbound, facts).await?;
    let mut fetch = match looked {
        lookup::Looked::Hit(response) => return Ok(admitted.label(response)),
        lookup::Looked::Miss(fetch) => fetch,
    };
    let response =
        forward::forward(x, &to, parts, &outbound, body, deadline, &mut fetch, facts).await?;
    let response = check::response(&to, response, facts, held).await?;
    let response = store::store(x, &to, fetch, response, facts, held).await?;
    Ok(admitted.label(response))
}

/// A gRPC request (`application/grpc`, `application/grpc+proto`, ...).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The span every exchange runs in: its id and W3C trace, and once known its consumer,
/// service, operation and outcome (recorded by `conclude`), so each log line of the exchange
/// carries them. At DEBUG level: off under the default `info` it costs nothing (an enabled span
/// costs about 1.5 µs of CPU per request, measured); refusal lines name their exchange id
/// either way.
fn exchange_span(exchange: &Exchange) -> tracing::Span {
    tracing::debug_span!(
        "exchange",
        id = %exchange.id,
        trace_id = %exchange.trace.trace_id,
        span_id = %exchange.trace.span_id,
        consumer = tracing::field::Empty,
        service = tracing::field::Empty,
        operation = tracing::field::Empty,
        agreement = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}
