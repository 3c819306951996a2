//! Connection pools to each service's upstreams, and the one call that forwards a request.
//!
//! One pooled hyper client per service, because each service has its own upstream CA. The
//! pool is a handle: built from a snapshot, called by the pipeline, and replaced with it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

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
            })
            .collect();
        Pool { services }
    }

    /// Sends a request to one of the service's upstreams (round robin) and waits for the
    /// response head, at most the service's `timeout`. `target` is the canonical path after
    /// the prefix, `query` the caller's query string.
    pub async fn forward(
        &self,
        index: usize,
        service: &Service,
        target: &str,
        query: Option<&str>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, Reject> {
        let pool = &self.services[index];
        let n = pool.next.fetch_add(1, Ordering::Relaxed);
        let upstream = &service.upstreams[n % service.upstreams.len()];
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
        let retry = with_token.map(|(source, generation)| {
            let mut again = Request::new(request.body().clone());
            *again.method_mut() = request.method().clone();
            *again.uri_mut() = request.uri().clone();
            *again.version_mut() = request.version();
            *again.headers_mut() = request.headers().clone();
            (source, generation, again)
        });
        let response = send(pool, service, request).await?;
        match retry {
            Some((source, generation, mut again))
                if response.status() == StatusCode::UNAUTHORIZED =>
            {
                tracing::info!(service = %service.id, "the upstream refused its token (401): fetching another, retrying once");
                source.reject(generation);
                let token = bearer(source, &pool.client, service).await?;
                again.headers_mut().insert(AUTHORIZATION, token.header);
                send(pool, service, again).await
            }
            _ => Ok(response),
        }
    }
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
