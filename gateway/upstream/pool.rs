//! Connection pools to each service's upstreams, and the one call that forwards a request.
//!
//! One pooled hyper client per service, because each service has its own upstream CA. The
//! pool is a handle: built from a snapshot, called by the pipeline, and replaced with it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::credentials::{self, Credentials, HttpClient, TokenSource};
use crate::config::{Protocol, Service, Snapshot};
use crate::reject::Reject;

const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Pool {
    services: Vec<ServicePool>,
}

struct ServicePool {
    client: HttpClient,
    next: AtomicUsize,
    credentials: Option<Credentials>,
    upstreams: Vec<UpstreamState>,
    budget: RetryBudget,
    /// `max_in_flight`: permits for requests under way to the upstream.
    in_flight: Option<tokio::sync::Semaphore>,
    /// When the next active health check is due (tokio time); `None`: at once.
    next_check: std::sync::Mutex<Option<Instant>>,
    /// What `ejected_until` counts from.
    epoch: Instant,
}

/// Consecutive failures after which an upstream is left out of the rotation.
const EJECT_AFTER: u32 = 3;
/// How long an ejected upstream is left out.
pub const EJECT_FOR: Duration = Duration::from_secs(10);

/// Failed active checks in a row after which an upstream is out of the rotation; one passed
/// check brings it back.
const DOWN_AFTER: u32 = 2;

/// What the pool knows of one upstream.
#[derive(Default)]
struct UpstreamState {
    outstanding: AtomicUsize,
    failures: AtomicU32,
    /// Left out of the rotation until then: nanoseconds after the pool's `epoch` (tokio
    /// time); 0 when never ejected.
    ejected_until: AtomicU64,
    /// Failed active health checks in a row.
    failed_checks: AtomicU32,
    /// Out of the rotation until a health check passes.
    down: AtomicBool,
}

/// How an upstream stands, as `/readyz` and `penghubung_upstream_up` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamHealth {
    /// In the rotation.
    Up,
    /// Left out after failing requests in a row, until the ejection ends.
    Ejected,
    /// Left out after failing active health checks, until one passes.
    Down,
}

impl UpstreamHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamHealth::Up => "up",
            UpstreamHealth::Ejected => "ejected",
            UpstreamHealth::Down => "down",
        }
    }
}

/// Retries allowed: one per ten requests, at most ten banked (tenths, to stay in integers).
struct RetryBudget {
    tenths: AtomicU32,
}

// === impl Pool ===

impl Pool {
    pub fn new(snapshot: &Snapshot) -> Pool {
        let services = snapshot
            .services
            .iter()
            .map(|service| ServicePool {
                client: client_for(service),
                next: AtomicUsize::new(0),
                credentials: service.upstream_auth.as_ref().map(Credentials::new),
                upstreams: service
                    .upstreams
                    .iter()
                    .map(|_| UpstreamState::default())
                    .collect(),
                // Start with a little: the first failures of a fresh pool may be retried.
                budget: RetryBudget {
                    tenths: AtomicU32::new(30),
                },
                in_flight: service
                    .max_in_flight
                    .map(|n| tokio::sync::Semaphore::new(n as usize)),
                next_check: std::sync::Mutex::new(None),
                epoch: Instant::now(),
            })
            .collect();
        Pool { services }
    }

    /// How each upstream of service `index` stands, with its requests under way.
    pub fn health(&self, index: usize) -> Vec<(UpstreamHealth, usize)> {
        let pool = &self.services[index];
        let now = pool.now();
        pool.upstreams
            .iter()
            .map(|u| (u.health(now), u.outstanding.load(Ordering::Relaxed)))
            .collect()
    }

    /// The active health checks due now, as (service, upstream) indexes, and how long until
    /// the next one is due (at most `idle`). Each due service's next check is set.
    pub fn checks_due(
        &self,
        snapshot: &Snapshot,
        idle: Duration,
    ) -> (Vec<(usize, usize)>, Duration) {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut wait = idle;
        for (i, service) in snapshot.services.iter().enumerate() {
            let Some(check) = &service.health else {
                continue;
            };
            let Ok(mut next) = self.services[i].next_check.lock() else {
                continue;
            };
            match *next {
                Some(at) if at > now => wait = wait.min(at - now),
                _ => {
                    *next = Some(now + check.interval);
                    wait = wait.min(check.interval);
                    due.extend((0..service.upstreams.len()).map(|u| (i, u)));
                }
            }
        }
        (due, wait)
    }

    /// One active health check: `GET health_path` on upstream `chosen` of service `index`,
    /// answered 2xx or 3xx within the interval (and the service's timeout). Two failures in a
    /// row take the upstream out of the rotation; one pass brings it back.
    pub async fn check(&self, index: usize, service: &Service, chosen: usize) {
        let Some(check) = &service.health else {
            return;
        };
        let upstream = &service.upstreams[chosen];
        let target = format!("{}{}", upstream.base_path, check.path);
        let mut parts = upstream.origin.clone().into_parts();
        let Ok(path) = PathAndQuery::try_from(target) else {
            return;
        };
        parts.path_and_query = Some(path);
        let Ok(uri) = Uri::from_parts(parts) else {
            return;
        };
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri;
        request.headers_mut().insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static("penghubung-health-check"),
        );
        let pool = &self.services[index];
        let limit = check.interval.min(service.timeout);
        let passed = match tokio::time::timeout(limit, pool.client.request(request)).await {
            Ok(Ok(response)) => {
                let status = response.status();
                // Read the (small) answer so the connection goes back to the pool.
                let _ = tokio::time::timeout(
                    limit,
                    http_body_util::BodyExt::collect(response.into_body()),
                )
                .await;
                status.is_success() || status.is_redirection()
            }
            Ok(Err(_)) | Err(_) => false,
        };
        let state = &pool.upstreams[chosen];
        if passed {
            state.failed_checks.store(0, Ordering::Relaxed);
            if state.down.swap(false, Ordering::Relaxed) {
                tracing::info!(service = %service.id, upstream = %upstream.origin, "health check passed: back in the rotation");
            }
        } else if state.failed_checks.fetch_add(1, Ordering::Relaxed) + 1 >= DOWN_AFTER
            && !state.down.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(service = %service.id, upstream = %upstream.origin, path = %check.path, "health checks failing: out of the rotation");
        }
    }

    /// Sends a request to one of the service's upstreams and waits for the response head, at
    /// most the service's `timeout`. `target` is the canonical path after the prefix, `query`
    /// the caller's query string.
    ///
    /// The upstream is the less busy of two picked among those not ejected (power of two
    /// choices on requests outstanding); one that fails `EJECT_AFTER` times in a row (no
    /// connection, a timeout, or 502/503/504) is left out for `EJECT_FOR`. A request that could
    /// not connect is retried once on another upstream if its method is idempotent and the
    /// service's retry budget (a tenth of its requests) allows.
    pub async fn forward(
        &self,
        index: usize,
        service: &Service,
        target: &str,
        query: Option<&str>,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, Reject> {
        let pool = &self.services[index];
        // Load shedding: over `max_in_flight`, refuse at once rather than queue.
        let _permit = match &pool.in_flight {
            None => None,
            Some(limit) => Some(limit.try_acquire().map_err(|_| Reject::Overloaded {
                service: service.id.clone(),
                limit: service.max_in_flight.unwrap_or(0),
            })?),
        };
        pool.budget.earn();
        let first = pool.pick(None);
        let idempotent = matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        let again = (idempotent && service.upstreams.len() > 1).then(|| copy(&request));
        let result = self
            .attempt(pool, service, first, target, query, request)
            .await;
        match (result, again) {
            (Err(Reject::UpstreamUnavailable { .. }), Some(request)) if pool.budget.spend() => {
                let second = pool.pick(Some(first));
                tracing::info!(service = %service.id, "no connection to an upstream: retrying on another");
                self.attempt(pool, service, second, target, query, request)
                    .await
            }
            (result, _) => result,
        }
    }

    /// One request to upstream `chosen`, with the service's credentials, and its outcome noted.
    async fn attempt(
        &self,
        pool: &ServicePool,
        service: &Service,
        chosen: usize,
        target: &str,
        query: Option<&str>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, Reject> {
        let upstream = &service.upstreams[chosen];
        let mut path = String::with_capacity(
            upstream.base_path.len() + target.len() + 1 + query.map_or(0, str::len),
        );
        path.push_str(&upstream.base_path);
        path.push_str(target);
        if let Some(q) = query {
            path.push('?');
            path.push_str(q);
        }
        let mut parts = upstream.origin.clone().into_parts();
        parts.path_and_query =
            Some(PathAndQuery::try_from(path).map_err(|e| Reject::BadHeader(e.into()))?);
        *request.uri_mut() = Uri::from_parts(parts).map_err(|e| Reject::BadHeader(e.into()))?;
        *request.version_mut() = match service.protocol {
            Protocol::Http => http::Version::HTTP_11,
            Protocol::Grpc => http::Version::HTTP_2,
        };
        let state = &pool.upstreams[chosen];
        state.outstanding.fetch_add(1, Ordering::Relaxed);
        let result = with_credentials(pool, service, request).await;
        state.outstanding.fetch_sub(1, Ordering::Relaxed);
        let failed = match &result {
            Ok(response) => matches!(response.status().as_u16(), 502..=504),
            Err(Reject::UpstreamUnavailable { .. } | Reject::UpstreamTimeout { .. }) => true,
            Err(_) => false,
        };
        if state.outcome(failed, || pool.now()) {
            tracing::warn!(service = %service.id, upstream = %upstream.origin, ejected_for = ?EJECT_FOR, "upstream failing: left out of the rotation");
        }
        result
    }
}

/// Sends with the service's credentials; with an OAuth2 token, one retry after a 401.
async fn with_credentials(
    pool: &ServicePool,
    service: &Service,
    mut request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, Reject> {
    let with_token = match &pool.credentials {
        None => None,
        Some(Credentials::ApiKey { header, value }) => {
            request.headers_mut().insert(header.clone(), value.clone());
            None
        }
        Some(Credentials::OAuth2(source)) => {
            let token = bearer(source, &pool.client, service).await?;
            request
                .headers_mut()
                .insert(AUTHORIZATION, token.header.clone());
            Some((source, token.generation))
        }
    };
    // With a token, keep what a retry needs: the upstream may refuse a token it revoked.
    let retry = with_token.map(|(source, generation)| (source, generation, copy(&request)));
    let response = send(pool, service, request).await?;
    match retry {
        Some((source, generation, mut again)) if response.status() == StatusCode::UNAUTHORIZED => {
            tracing::info!(service = %service.id, "the upstream refused its token (401): fetching another, retrying once");
            source.reject(generation);
            let token = bearer(source, &pool.client, service).await?;
            again.headers_mut().insert(AUTHORIZATION, token.header);
            send(pool, service, again).await
        }
        _ => Ok(response),
    }
}

/// A copy of a request whose body is already in memory.
fn copy(request: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut again = Request::new(request.body().clone());
    *again.method_mut() = request.method().clone();
    *again.uri_mut() = request.uri().clone();
    *again.version_mut() = request.version();
    *again.headers_mut() = request.headers().clone();
    again
}

/// A token for the service's upstream, or the refusal that says the gateway could not get one.
async fn bearer(
    source: &TokenSource,
    client: &HttpClient,
    service: &Service,
) -> Result<credentials::Bearer, Reject> {
    source
        .bearer(client, service.timeout)
        .await
        .map_err(|cause| {
            tracing::warn!(service = %service.id, %cause, "no credentials for the upstream");
            Reject::UpstreamCredentials {
                service: service.id.clone(),
            }
        })
}

// === impl ServicePool ===

impl ServicePool {
    /// The less busy of two upstreams among those in the rotation (all, if none is), other
    /// than `not` when there is another.
    fn pick(&self, not: Option<usize>) -> usize {
        let n = self.upstreams.len();
        if n == 1 {
            return 0;
        }
        let now = self.now();
        let other = |i: &usize| Some(*i) != not;
        let up = |i: &usize| other(i) && self.upstreams[*i].health(now) == UpstreamHealth::Up;
        // Those up (but `not`), or all but `not` when none is; counted, then indexed, without
        // collecting them.
        let any_up = (0..n).any(|i| up(&i));
        let usable = |i: &usize| if any_up { up(i) } else { other(i) };
        let k = (0..n).filter(usable).count();
        let nth = |j: usize| (0..n).filter(usable).nth(j).unwrap_or(0);
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let a = nth(turn % k);
        if k == 1 {
            return a;
        }
        let b = nth((turn % k + 1 + (turn / k) % (k - 1)) % k);
        let load = |i: usize| self.upstreams[i].outstanding.load(Ordering::Relaxed);
        if load(b) < load(a) {
            b
        } else {
            a
        }
    }

    /// Nanoseconds since `epoch`, at least 1 (0 marks "never ejected").
    fn now(&self) -> u64 {
        let since = Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX).max(1)
    }
}

// === impl UpstreamState ===

impl UpstreamState {
    /// How the upstream stands at `now` (the pool's clock, [`ServicePool::now`]).
    fn health(&self, now: u64) -> UpstreamHealth {
        let ejected = now < self.ejected_until.load(Ordering::Relaxed);
        if self.down.load(Ordering::Relaxed) {
            UpstreamHealth::Down
        } else if ejected {
            UpstreamHealth::Ejected
        } else {
            UpstreamHealth::Up
        }
    }

    /// Notes an outcome; true when it ejects the upstream.
    fn outcome(&self, failed: bool, now: impl FnOnce() -> u64) -> bool {
        if !failed {
            self.failures.store(0, Ordering::Relaxed);
            return false;
        }
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 < EJECT_AFTER {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let eject_for = u64::try_from(EJECT_FOR.as_nanos()).unwrap_or(u64::MAX);
        self.ejected_until
            .store(now().saturating_add(eject_for), Ordering::Relaxed);
        true
    }
}

// === impl RetryBudget ===

impl RetryBudget {
    fn earn(&self) {
        let _ = self
            .tenths
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t < 100).then_some(t + 1)
            });
    }

    fn spend(&self) -> bool {
        self.tenths
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(10))
            .is_ok()
    }
}

/// Sends one request, waiting for the response head at most the service's `timeout`.
async fn send(
    pool: &ServicePool,
    service: &Service,
    request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, Reject> {
    match tokio::time::timeout(service.timeout, pool.client.request(request)).await {
        Err(_elapsed) => Err(Reject::UpstreamTimeout {
            service: service.id.clone(),
            after: service.timeout,
        }),
        Ok(Err(source)) if source.is_connect() && is_tls_failure(&source) => {
            Err(Reject::UpstreamTls {
                service: service.id.clone(),
                source,
            })
        }
        Ok(Err(source)) if source.is_connect() => Err(Reject::UpstreamUnavailable {
            service: service.id.clone(),
            source,
        }),
        Ok(Err(source)) => Err(Reject::UpstreamProtocol {
            service: service.id.clone(),
            source,
        }),
        Ok(Ok(response)) => Ok(response),
    }
}

fn client_for(service: &Service) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(service.timeout));
    // A service with only plaintext upstreams has no TLS configuration; its connector is never
    // asked for TLS, so an empty trust store is the safe placeholder.
    #[allow(clippy::expect_used)] // ring's provider supports the default protocol versions
    let tls = service.upstream_tls.clone().unwrap_or_else(|| {
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .expect("ring supports the default TLS versions")
    });
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new());
    match service.protocol {
        Protocol::Http => client.build(builder.enable_http1().wrap_connector(http)),
        // gRPC needs HTTP/2 (ALPN h2 over TLS, prior knowledge in plaintext) and its trailers.
        Protocol::Grpc => {
            client.http2_only(true).timer(TokioTimer::new());
            client.build(builder.enable_http2().wrap_connector(http))
        }
    }
}

/// Whether a connect error was the TLS handshake failing (an upstream certificate not from the
/// service's `upstream_ca`, or for another name) rather than the upstream being unreachable.
/// hyper-rustls reports a handshake failure as an `io::Error` wrapping another `io::Error` that
/// wraps the `rustls::Error`; `io::Error::source` skips a level, so `get_ref` is followed too.
fn is_tls_failure(error: &hyper_util::client::legacy::Error) -> bool {
    fn walk(e: &(dyn std::error::Error + 'static), depth: usize) -> bool {
        if depth > 8 {
            return false;
        }
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if walk(inner, depth + 1) {
                return true;
            }
        }
        e.source().is_some_and(|s| walk(s, depth + 1))
    }
    std::error::Error::source(error).is_some_and(|s| walk(s, 0))
}
