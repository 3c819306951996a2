//! The request path, top to bottom. Every stage returns `Result<_, Reject>`; the first refusal
//! becomes the response. Reading `run` is reading what the gateway does to a request.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tracing::Instrument;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, HOST};
use http::{Method, Request, Response};
use http_body_util::Full;

use crate::audit::{
    self, AuditLog, BodyDigest, Nonce, Record, WriterOptions, SPL_COMMITMENT_NONCE,
};
use crate::authorize::{authorize, Ask, Grant};
use crate::body::{collect_within, full, read_up_to, Body, Read};
use crate::budget::{Budget, Held, Part};
use crate::cache::{self, Cache, Fetched, Key, Lookup, Sharing};
use crate::caller::{Caller, Resolved};
use crate::catalog;
use crate::clock::Clock;
use crate::config::{Classification, Protocol, Snapshot};
use crate::exchange::Exchange;
use crate::otlp;
use crate::quota::{Decision, Quotas};
use crate::reject::{
    rate_limit_headers, retry_seconds, CloseConnection, Refusal, Reject, Severity,
};
use crate::route::{self, Miss};
use crate::telemetry::{Direction, Telemetry};
use crate::upstream::{self, Forwarding, Pool, SPL_AGREEMENT, SPL_EXCHANGE_ID};
use crate::validate;

/// The gateway as a value: a snapshot and the handles the pipeline calls. Tests drive it
/// without sockets where they can; the server drives it from connections.
pub struct Gateway {
    /// The configuration in force and the handles built from it, swapped whole on reload; a
    /// request keeps the one it started with.
    active: ArcSwap<Active>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    clock: Clock,
    audit: Option<AuditLog>,
    cache: Cache,
    telemetry: Telemetry,
    sla: crate::sla::Sla,
    /// `[gateway] max_buffered`: the bodies held by all exchanges.
    budget: Arc<Budget>,
    /// When the gateway started: the start of every cumulative metric.
    started: std::time::SystemTime,
}

/// A snapshot and what is built from it: the upstream pools and the quotas.
/// One service's upstreams as `/readyz` and the metrics show them: (origin, health, requests
/// under way).
#[derive(Debug, Clone)]
pub struct ServiceHealth {
    pub service: String,
    pub upstreams: Vec<(String, upstream::UpstreamHealth, usize)>,
}

pub struct Active {
    pub snapshot: Arc<Snapshot>,
    /// Counts reloads: a caller resolved against another generation is resolved again.
    pub generation: u64,
    upstreams: Pool,
    quotas: Quotas,
    /// `[telemetry] otlp_endpoint`: where exchange spans go.
    otlp: Option<Arc<otlp::Exporter>>,
}

impl Active {
    fn new(snapshot: Arc<Snapshot>, generation: u64, telemetry: &Telemetry) -> Active {
        Active {
            upstreams: Pool::new(&snapshot),
            quotas: Quotas::new(&snapshot),
            otlp: snapshot
                .otlp
                .clone()
                .map(|settings| Arc::new(otlp::Exporter::new(settings, telemetry.otlp_dropped()))),
            snapshot,
            generation,
        }
    }

    /// The configuration that replaces `previous`, with the quota spent so far carried over
    /// and the span exporter kept when its settings did not change.
    fn replacing(snapshot: Arc<Snapshot>, previous: &Active, telemetry: &Telemetry) -> Active {
        let otlp = match (&snapshot.otlp, &previous.otlp) {
            (Some(settings), Some(exporter)) if exporter.settings() == settings => {
                Some(exporter.clone())
            }
            (settings, _) => settings
                .clone()
                .map(|settings| Arc::new(otlp::Exporter::new(settings, telemetry.otlp_dropped()))),
        };
        Active {
            upstreams: Pool::new(&snapshot),
            quotas: Quotas::carried(&snapshot, &previous.quotas, &previous.snapshot),
            otlp,
            snapshot,
            generation: previous.generation + 1,
        }
    }
}

/// With an audit log, a response is read whole for its digest before it is released; one larger
/// than this is refused (502) rather than held in memory without bound.
pub const MAX_AUDITED_RESPONSE: usize = 64 << 20;

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
    /// What the cache did: `hit`, `coalesced`, `stored` or `miss`; none for operations that
    /// are not cached.
    cache: Option<&'static str>,
    /// On a hit, the exchange whose upstream response was served.
    origin: Option<String>,
}

/// The exchange as the audit record describes it.
struct Seen<'a> {
    active: &'a Active,
    caller: &'a Caller,
    exchange: &'a Exchange,
    method: &'a http::Method,
    outcome: &'static str,
    started: std::time::Instant,
    /// The caller speaks gRPC: refusals are gRPC statuses, and responses stream.
    grpc: bool,
    /// The exchange is an `Exchange.Call` of the gRPC front: the caller gets a gRPC status
    /// (OK, or its refusal's code), which its record carries.
    call: bool,
    /// Announced to the audit writer at the start; released when the record is handed over.
    expected: Option<audit::Expected>,
}

// === impl Gateway ===

impl Gateway {
    /// Builds the gateway; with `[audit]` configured, opens (and if need be recovers) the audit
    /// log under `<data_dir>/audit` and records the start with the configuration's digest.
    pub fn new(snapshot: Arc<Snapshot>) -> std::io::Result<Gateway> {
        Gateway::with_clock(snapshot, Clock::system())
    }

    /// A gateway whose calendar (agreement validity) follows `clock`.
    pub fn with_clock(snapshot: Arc<Snapshot>, clock: Clock) -> std::io::Result<Gateway> {
        let audit = match &snapshot.audit {
            None => None,
            Some(settings) => {
                let id = &snapshot.gateway.id;
                let (log, recovered) = AuditLog::open(
                    &snapshot.gateway.data_dir.join("audit"),
                    id,
                    WriterOptions {
                        durability: settings.durability,
                        flush_interval: settings.flush_interval,
                        segment_size: settings.segment_size,
                        queue: settings.queue,
                        signer: settings.signer.clone(),
                        gateway: id.clone(),
                        tree_head_every: settings.tree_head_every,
                        tree_head_interval: settings.tree_head_interval,
                    },
                )?;
                for record in recovered {
                    log.enqueue(record).map_err(std::io::Error::other)?;
                }
                let detail = format!("{} sha256:{}", snapshot.source.display(), snapshot.digest);
                log.enqueue(audit::admin(id, "start", Some(detail)))
                    .map_err(std::io::Error::other)?;
                Some(log)
            }
        };
        let mut telemetry = Telemetry::new();
        if let Some(log) = &audit {
            telemetry.register_audit(log.fsync_seconds());
        }
        Ok(Gateway {
            cache: Cache::new(&snapshot.cache, telemetry.cache().clone()),
            budget: Budget::new(snapshot.gateway.max_buffered),
            active: ArcSwap::from_pointee(Active::new(snapshot, 0, &telemetry)),
            reloading: tokio::sync::Mutex::new(()),
            clock,
            audit,
            telemetry,
            sla: crate::sla::Sla::new(),
            started: std::time::SystemTime::now(),
        })
    }

    /// The metrics the pipeline keeps.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Today's date in the gateway's time zone, on the gateway's calendar clock.
    pub fn today(&self) -> crate::config::Date {
        self.clock.today(self.snapshot().gateway.timezone)
    }

    /// The live SLA figures (`/v1/sla`).
    pub fn sla(&self) -> &crate::sla::Sla {
        &self.sla
    }

    /// The response cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The Prometheus exposition, with the gauges brought up to date.
    pub fn metrics_text(&self) -> String {
        self.refresh_metrics();
        self.telemetry.encode()
    }

    /// Brings the gauges that mirror state (cache, upstreams, certificates, audit queue) up to
    /// date.
    fn refresh_metrics(&self) {
        let (entries, bytes) = self.cache.usage();
        self.telemetry.cache().usage(entries, bytes);
        let health = self.upstream_health();
        let snapshot = self.snapshot();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.telemetry.refresh(crate::telemetry::Scrape {
            upstreams: health
                .iter()
                .flat_map(|s| {
                    s.upstreams.iter().map(|(origin, state, _)| {
                        (
                            s.service.as_str(),
                            origin.clone(),
                            *state == upstream::UpstreamHealth::Up,
                        )
                    })
                })
                .collect(),
            certificates: snapshot
                .certificates
                .iter()
                .filter_map(|c| Some((c.used_as.as_str(), c.file.as_str(), c.not_after? - now)))
                .collect(),
            audit_queue: self.audit.as_ref().map(AuditLog::queued),
            buffered: (self.budget.used(), self.budget.max()),
        });
    }

    /// Sends the metrics to the OTLP collector of the configuration in force every
    /// `metrics_interval`, never returning: spawn it beside the listeners. Follows reloads
    /// (checks at least every second); a failed export is logged and counted, and the next
    /// sends the cumulative values again.
    pub async fn export_metrics(self: Arc<Self>) {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let active = self.active();
            let Some(exporter) = &active.otlp else {
                continue;
            };
            if last.elapsed() < exporter.settings().metrics_interval {
                continue;
            }
            last = tokio::time::Instant::now();
            self.send_metrics(exporter).await;
        }
    }

    /// At shutdown, after the drain: the spans still queued and the metrics as they end go to
    /// the OTLP collector, within `limit`.
    pub async fn flush_telemetry(&self, limit: std::time::Duration) {
        let active = self.active();
        let Some(exporter) = &active.otlp else {
            return;
        };
        let flushed = tokio::time::timeout(limit, async {
            exporter.flush().await;
            self.send_metrics(exporter).await;
        })
        .await;
        if flushed.is_err() {
            tracing::warn!(limit = ?limit, "OTLP flush at shutdown did not finish in time");
        }
    }

    async fn send_metrics(&self, exporter: &otlp::Exporter) {
        self.refresh_metrics();
        if let Err(status) = exporter
            .export_metrics(self.telemetry.families(), self.started)
            .await
        {
            self.telemetry.otlp_metrics_failed();
            tracing::warn!(error = %status.message(), "OTLP metrics export failed");
        }
    }

    /// The audit log, when one is configured.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// Runs the active health checks (`health_path`) of the configuration in force, never
    /// returning: spawn it beside the listeners. A reload's new services are checked within a
    /// second; each check runs on its own task, bounded by its interval.
    pub async fn check_upstreams(self: Arc<Self>) {
        loop {
            let active = self.active();
            let (due, wait) = active
                .upstreams
                .checks_due(&active.snapshot, std::time::Duration::from_secs(1));
            for (service, upstream) in due {
                let active = active.clone();
                tokio::spawn(async move {
                    let config = &active.snapshot.services[service];
                    active.upstreams.check(service, config, upstream).await;
                });
            }
            drop(active);
            tokio::time::sleep(wait).await;
        }
    }

    /// Each service's upstreams and how they stand, in the configuration in force.
    pub fn upstream_health(&self) -> Vec<ServiceHealth> {
        let active = self.active.load();
        active
            .snapshot
            .services
            .iter()
            .enumerate()
            .map(|(i, service)| ServiceHealth {
                service: service.id.clone(),
                upstreams: service
                    .upstreams
                    .iter()
                    .zip(active.upstreams.health(i))
                    .map(|(u, (health, in_flight))| (u.origin.to_string(), health, in_flight))
                    .collect(),
            })
            .collect()
    }

    /// The configuration in force now, with its generation and handles.
    pub fn active(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// The configuration in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.active.load().snapshot.clone()
    }

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
        let active = self.active.load_full();
        let caller = caller.at(&active.snapshot, active.generation);
        let caller = &*caller;
        let mut facts = Facts {
            nonce: self.audit.as_ref().map(|_| Nonce::fresh()),
            ..Facts::default()
        };
        let mut held = self.budget.account();
        let expected = self.audit.as_ref().map(AuditLog::expect);
        async {
            let version = request.version();
            let result = run(
                self, &active, caller, &exchange, request, &mut facts, &mut held,
            )
            .await;
            let seen = Seen {
                active: &active,
                caller,
                exchange: &exchange,
                method: &method,
                outcome: "",
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
            response.map(|body| held.attach(body))
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
        let active = self.active.load_full();
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
            outcome: "",
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

    /// The end of every exchange: the outcome, the refusal logged, metrics, the audit record
    /// (before the response is released), and `SPL-Exchange-Id`.
    async fn conclude(
        &self,
        mut seen: Seen<'_>,
        mut facts: Facts,
        result: Result<Response<Body>, Reject>,
        held: &mut Held,
    ) -> Response<Body> {
        let outcome = match &result {
            Ok(_) if matches!(facts.cache, Some("hit" | "coalesced")) => "served-from-cache",
            Ok(_) if facts.unconforming => "forwarded-schema-violation",
            Ok(_) => "forwarded",
            Err(reject) => reject.slug(),
        };
        let span = tracing::Span::current();
        if !span.is_disabled() {
            let s = &seen.active.snapshot;
            if let Some(i) = facts.consumer {
                span.record("consumer", s.agencies[i].code.as_str());
            }
            if let Some(i) = facts.service {
                span.record("service", s.services[i].id.as_str());
                if let Some(j) = facts.operation {
                    span.record("operation", s.services[i].operations[j].id.as_str());
                }
            }
            span.record("outcome", outcome);
        }
        let mut response = match result {
            Ok(response) => response,
            Err(reject) => {
                log_refusal(&reject, &seen, &facts);
                refusal(&reject, &seen)
            }
        };
        self.count(
            &seen.active.snapshot,
            seen.active.generation,
            &facts,
            outcome,
            response.status().as_u16(),
            seen.started.elapsed(),
        );
        if let Some(i) = facts.service {
            let grpc_status = audit::stream::grpc_status(response.headers());
            let status = Some(response.status().as_u16());
            let kind = crate::report::classify(outcome, status, grpc_status);
            let service = &seen.active.snapshot.services[i].id;
            self.sla.record(service, kind, seen.started.elapsed());
        }
        let id = HeaderValue::from_str(&seen.exchange.id);
        let started = seen.started;
        let (active, exchange, method) = (seen.active, seen.exchange, seen.method);
        let (consumer, service, operation) = (facts.consumer, facts.service, facts.operation);
        // With an audit log every exchange has a nonce (drawn in `handle` or `refuse`).
        let nonce = facts.nonce.take();
        if let (Some(audit), Some(nonce)) = (&self.audit, &nonce) {
            seen.outcome = outcome;
            response = self.record(audit, seen, facts, nonce, response, held).await;
        }
        if let Ok(id) = id {
            response.headers_mut().insert(SPL_EXCHANGE_ID, id);
        }
        if let Some(nonce) = nonce {
            response
                .headers_mut()
                .insert(SPL_COMMITMENT_NONCE, nonce.header_value());
        }
        if let Some(exporter) = &active.otlp {
            let s = &active.snapshot;
            let service_entry = service.map(|i| &s.services[i]);
            exporter.record(otlp::Ended {
                exchange,
                elapsed: started.elapsed(),
                method: recorded_method(method),
                consumer: consumer.map(|i| s.agencies[i].code.as_str()),
                service: service_entry.map(|e| e.id.as_str()),
                operation: service_entry
                    .zip(operation)
                    .map(|(e, j)| e.operations[j].id.as_str()),
                outcome,
                status: response.status().as_u16(),
            });
        }
        // The access log, for those who ask for it (RUST_LOG=penghubung=debug); the audit log
        // is the record.
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "exchange concluded"
        );
        response
    }
}

/// accept → TLS + identity (per connection: `caller`) → route → authorize → quota → validate
/// parameters → read body → validate request → cache → upstream → validate response → (store)
/// → respond.
async fn run<B>(
    gw: &Gateway,
    active: &Active,
    caller: &Caller,
    exchange: &Exchange,
    request: Request<B>,
    facts: &mut Facts,
    held: &mut Held,
) -> Result<Response<Body>, Reject>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let snapshot = &*active.snapshot;

    // Fail closed: nothing goes upstream while the audit log cannot record it.
    if gw.audit.as_ref().is_some_and(|a| !a.healthy()) {
        return Err(Reject::AuditUnavailable);
    }

    // Identity: the certificate was verified at the handshake; it must also name an agency.
    let consumer = caller.consumer(snapshot)?;
    let agency = &snapshot.agencies[consumer];
    facts.consumer = Some(consumer);

    // Route: normalise, then the gateway's own documents, or a service by prefix and an
    // operation by template and method.
    let path = route::normalize(request.uri().path())?;
    let today = gw.clock.today(snapshot.gateway.timezone);
    if catalog::is_catalog_path(&path) {
        return catalog::serve(snapshot, consumer, today, request.method(), &path);
    }
    let matched = snapshot
        .routes
        .lookup(request.method(), &path)
        .map_err(|miss| miss_to_reject(snapshot, miss, request.method()))?;
    let service = &snapshot.services[matched.service];
    let operation = &service.operations[matched.operation];
    // From the request head to the last byte of the response.
    let deadline = exchange.begun + service.request_timeout;
    facts.service = Some(matched.service);
    facts.operation = Some(matched.operation);
    // A gRPC service takes gRPC calls only, and an HTTP service no gRPC call.
    let grpc_call = is_grpc(request.headers());
    if grpc_call != (service.protocol == Protocol::Grpc) {
        return Err(Reject::UnsupportedMediaType {
            expected: match service.protocol {
                Protocol::Grpc => "gRPC (application/grpc)",
                Protocol::Http => "plain HTTP requests",
            },
            found: request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        });
    }
    if gw.audit.is_some() {
        facts.target = Some(audit::audit_target(
            &service.prefix,
            operation,
            &path.segments()[matched.prefix_len..],
            request.uri().query(),
            snapshot.audit.as_ref().and_then(|a| a.redactor.as_deref()),
        ));
    }

    // Authorize: classification and agreements, evaluated against today's date.
    let chosen = match request.headers().get(SPL_AGREEMENT) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| Reject::AgreementNotYours {
            agreement: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            agency: agency.code.clone(),
            service: service.id.clone(),
        })?),
    };
    let grant = authorize(
        snapshot,
        Ask {
            consumer,
            service: matched.service,
            operation: matched.operation,
            chosen,
            today,
        },
    )?;
    let agreement = match grant {
        Grant::Open => None,
        Grant::Agreement(i) => Some((i, &snapshot.agreements[i])),
    };
    facts.agreement = agreement.map(|(i, _)| i);

    // Quota: charged per agreement, before any work on the body or the upstream.
    let mut quota_headers = None;
    if let Some((index, a)) = agreement {
        match active.quotas.check(index) {
            None => {}
            Some((rate, Decision::Admitted { remaining, reset })) => {
                quota_headers = Some(rate_limit_headers(
                    &a.id,
                    rate,
                    remaining,
                    retry_seconds(reset),
                ));
            }
            Some((rate, Decision::Limited { retry_after })) => {
                return Err(Reject::QuotaExceeded {
                    agreement: a.id.clone(),
                    rate,
                    retry_after,
                })
            }
        }
    }

    // Validate parameters: before the body is even read.
    validate::params(operation, &matched.params, request.uri().query())?;

    // Body: bounded, and read completely before any upstream contact.
    let (mut parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // One timer for the exchange's deadline, from here to the response's last byte (each
    // timer is a registration in tokio's timer wheel).
    let mut timer = Box::pin(tokio::time::sleep_until(deadline));
    let read = collect_within(
        body,
        declared,
        service.max_request_body,
        Some((&mut *held, Part::Request)),
    );
    let body = tokio::select! {
        biased;
        read = read => read?,
        () = timer.as_mut() => {
            return Err(Reject::RequestTimeout {
                after: service.request_timeout,
            })
        }
    };
    if let Some(nonce) = &facts.nonce {
        facts.request = Some(audit::commit(nonce, grpc_call, &body));
    }

    // Validate the request body against the operation's schema.
    validate::request(operation, &parts.headers, &body)?;

    // Upstream headers. A cacheable operation's upstream sees only the caller headers the
    // cache key holds, and not the host the caller addressed: nothing outside the key can
    // shape a response that others may be served.
    let ceiling = Cache::ceiling(service, operation);
    let directives = ceiling.map(|_| cache::Directives::of(&parts.headers));
    let host = match ceiling {
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
            consumer: &agency.code,
            agreement: agreement.map(|(_, a)| (a.id.as_str(), a.purpose.as_str())),
            exchange,
            client: caller.remote,
            host: host.as_deref(),
        },
    );
    // A gRPC method is forwarded whole (`/pkg.Service/Method`), and gRPC wants `te: trailers`.
    let target = match service.protocol {
        Protocol::Http => path.encoded_from(matched.prefix_len),
        Protocol::Grpc => {
            parts
                .headers
                .insert(http::header::TE, HeaderValue::from_static("trailers"));
            path.encoded_from(0)
        }
    };
    let query = parts.uri.query().map(str::to_owned);

    // Cache: every policy stage above has passed for this request. A fresh entry is served;
    // a miss leads the one upstream request for its key, or waits for the one under way.
    let mut fetch = None;
    if let (Some(ceiling), Some(directives)) = (ceiling, directives) {
        let key = Key::primary(&cache::Request {
            service: &service.id,
            operation: &operation.id,
            sharing: match service.classification {
                Classification::Terbuka => Sharing::Everyone,
                _ => Sharing::Consumer {
                    agency: &agency.code,
                    agreement: agreement.map(|(_, a)| a.id.as_str()),
                },
            },
            target: &target,
            query: query.as_deref(),
            headers: &parts.headers,
        });
        let head = parts.method == Method::HEAD;
        match gw
            .cache
            .lookup(key, &parts.headers, directives, !head, service.timeout)
            .await
        {
            Lookup::Hit(hit) => {
                facts.cache = Some(if hit.coalesced { "coalesced" } else { "hit" });
                facts.origin = Some(hit.stored().origin.clone());
                let mut response = hit.response(head);
                if let Some(headers) = quota_headers {
                    for (name, value) in headers {
                        response.headers_mut().insert(name, value);
                    }
                }
                return Ok(response);
            }
            Lookup::TimedOut(after) => {
                facts.cache = Some("coalesced");
                return Err(Reject::UpstreamTimeout {
                    service: service.id.clone(),
                    after,
                });
            }
            Lookup::Miss(f) => {
                facts.cache = Some("miss");
                // HEAD answers carry no body to store.
                if !head {
                    fetch = Some((f, parts.headers.clone(), ceiling));
                }
            }
        }
    }

    // Upstream: forward (the owner's service gets the commitment nonce), and pass the
    // response back.
    if let Some(nonce) = &facts.nonce {
        parts
            .headers
            .insert(SPL_COMMITMENT_NONCE, nonce.header_value());
    }
    let request = Request::from_parts(parts, Full::new(body));
    let asked = tokio::time::Instant::now();
    let forward =
        active
            .upstreams
            .forward(matched.service, service, &target, query.as_deref(), request);
    let forwarded = tokio::select! {
        biased;
        forwarded = forward => forwarded,
        () = timer.as_mut() => Err(Reject::UpstreamTimeout {
            service: service.id.clone(),
            after: service.request_timeout,
        }),
    };
    gw.telemetry.upstream(
        snapshot,
        active.generation,
        matched.service,
        asked.elapsed(),
    );
    let response = match forwarded {
        Ok(response) => response,
        Err(reject) => {
            if let (Some((fetch, _, _)), Reject::UpstreamTimeout { after, .. }) = (fetch, &reject) {
                fetch.timed_out(*after);
            }
            return Err(reject);
        }
    };

    let (mut parts, body) = response.into_parts();
    upstream::to_caller(&mut parts.headers);
    let body = crate::body::with_deadline(body, timer, service.request_timeout);
    let response = Response::from_parts(parts, body);

    // Validate the response before the caller sees it.
    let (response, checked) = validate::response(service, operation, response, held).await?;
    facts.unconforming = checked == validate::Checked::ForwardedUnconforming;
    let (mut parts, mut body) = response.into_parts();

    // Store: only a conforming response, read whole within the entry limit.
    if let Some((fetch, sent, ceiling)) = fetch {
        if facts.unconforming {
            fetch.refuse("schema-violation");
        } else {
            let limit = fetch.entry_limit();
            match read_up_to(body, limit, held).await {
                Ok(Read::Whole(bytes)) => {
                    let fetched = Fetched {
                        request: &sent,
                        response: &parts,
                        body: &bytes,
                        ceiling,
                        origin: &exchange.id,
                    };
                    if fetch.finish(&fetched).is_ok() {
                        facts.cache = Some("stored");
                    }
                    body = full(bytes);
                }
                Ok(Read::Stream(rest, reason)) => {
                    fetch.refuse(reason);
                    body = rest;
                }
                Err(error) => return Err(Reject::upstream_body(&service.id, error)),
            }
        }
    }
    if let Some(headers) = quota_headers {
        for (name, value) in headers {
            parts.headers.insert(name, value);
        }
    }
    tracing::debug!(
        exchange_id = %exchange.id,
        consumer = %agency.code,
        service = %service.id,
        operation = %operation.id,
        agreement = agreement.map_or("", |(_, a)| a.id.as_str()),
        status = parts.status.as_u16(),
        "forwarded"
    );
    Ok(Response::from_parts(parts, body))
}

// === impl Gateway (audit) ===

impl Gateway {
    /// Counts the exchange, and a schema violation if that is what happened to it.
    fn count(
        &self,
        s: &Snapshot,
        generation: u64,
        facts: &Facts,
        outcome: &'static str,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        self.telemetry.exchange(
            s,
            generation,
            facts.service,
            facts.operation,
            facts.consumer,
            outcome,
            status,
            elapsed,
        );
        let service = facts.service.map_or("", |i| s.services[i].id.as_str());
        let operation = match (facts.service, facts.operation) {
            (Some(i), Some(j)) => s.services[i].operations[j].id.as_str(),
            _ => "",
        };
        let violation = match outcome {
            "invalid-parameter" => Some((Direction::Parameter, true)),
            "request-schema-violation" => Some((Direction::Request, true)),
            "upstream-schema-violation" => Some((Direction::Response, true)),
            "forwarded-schema-violation" => Some((Direction::Response, false)),
            _ => None,
        };
        if let Some((direction, enforced)) = violation {
            self.telemetry
                .schema_violation(service, operation, direction, enforced);
        }
    }

    /// Records the exchange and releases the response only once the record is durable; the
    /// response body is read whole first, for its commitment under `nonce`. If the record cannot
    /// be made durable
    /// the caller gets 503 instead of the response.
    async fn record(
        &self,
        audit: &AuditLog,
        mut seen: Seen<'_>,
        facts: Facts,
        nonce: &Nonce,
        response: Response<Body>,
        held: &mut Held,
    ) -> Response<Body> {
        let expected = seen.expected.take();
        // A gRPC answer streams (server-streaming calls may be long); it is recorded when it
        // ends, from the commitment taken on the way.
        if seen.grpc && response.extensions().get::<Refusal>().is_none() {
            let record = self.skeleton(&seen, facts);
            let (parts, body) = response.into_parts();
            let body =
                audit::stream::recorded(body, record, audit.clone(), seen.started, &parts, nonce);
            return Response::from_parts(parts, body);
        }
        // What an `Exchange.Call` caller gets: OK, or its refusal's code.
        let call_status = seen.call.then(|| {
            response
                .extensions()
                .get::<Refusal>()
                .map_or(0, |refusal| refusal.code as u32)
        });
        let (parts, body) = response.into_parts();
        let hold = Some((&mut *held, Part::Response));
        let collected = collect_within(body, None, MAX_AUDITED_RESPONSE as u64, hold).await;
        let (parts, bytes, outcome, call_status) = match collected {
            Ok(bytes) => (parts, bytes, seen.outcome, call_status),
            Err(unread) => {
                let service = facts
                    .service
                    .map(|i| seen.active.snapshot.services[i].id.clone())
                    .unwrap_or_default();
                let reject = Reject::unread_response(&service, unread, |limit| {
                    Reject::UpstreamResponseTooLarge {
                        service: service.clone(),
                        limit,
                    }
                });
                tracing::warn!(exchange_id = %seen.exchange.id, problem = reject.slug(), error = %reject.log_message(), "the upstream response could not be read whole");
                let (parts, body) = refusal(&reject, &seen).into_parts();
                let bytes = collect_within(body, None, MAX_AUDITED_RESPONSE as u64, None)
                    .await
                    .unwrap_or_default();
                // Refused while its answer was read: the caller gets the refusal's code.
                let call_status = seen.call.then(|| reject.grpc_code() as u32);
                (parts, bytes, reject.slug(), call_status)
            }
        };
        let mut record = self.skeleton(&seen, facts);
        record.outcome = outcome.to_owned();
        record.status = Some(parts.status.as_u16());
        record.grpc_status = audit::stream::grpc_status(&parts.headers).or(call_status);
        record.response = Some(audit::commit(nonce, false, &bytes));
        record.latency_us =
            Some(u64::try_from(seen.started.elapsed().as_micros()).unwrap_or(u64::MAX));
        match audit.append_expected(record, expected).await {
            Ok(_) => Response::from_parts(parts, full(bytes)),
            Err(e) => {
                tracing::error!(exchange_id = %seen.exchange.id, error = %e, "exchange not recorded; refusing it");
                refusal(&Reject::AuditUnavailable, &seen)
            }
        }
    }

    /// The exchange's record, but for what only the response's end tells (status, response
    /// commitment, latency).
    fn skeleton(&self, seen: &Seen<'_>, facts: Facts) -> Record {
        let s = &*seen.active.snapshot;
        let service = facts.service.map(|i| &s.services[i]);
        let operation = service
            .zip(facts.operation)
            .map(|(svc, j)| &svc.operations[j]);
        let agreement = facts.agreement.map(|i| &s.agreements[i]);
        Record {
            time: audit::timestamp(self.clock.now_millis()),
            gateway: s.gateway.id.clone(),
            kind: "exchange".to_owned(),
            outcome: seen.outcome.to_owned(),
            exchange_id: Some(seen.exchange.id.clone()),
            consumer: facts.consumer.map(|i| s.agencies[i].code.clone()),
            cert_sha256: Some(seen.caller.identity.fingerprint.clone()),
            service: service.map(|svc| svc.id.clone()),
            owner: service.map(|svc| s.agencies[svc.owner].code.clone()),
            operation: operation.map(|op| op.id.clone()),
            agreement: agreement.map(|a| a.id.clone()),
            purpose: agreement.map(|a| a.purpose.clone()),
            method: Some(recorded_method(seen.method).to_owned()),
            path_template: operation.map(|op| op.path.clone()),
            redaction_key: facts
                .target
                .as_ref()
                .and(s.audit.as_ref())
                .and_then(|a| a.redactor.as_ref())
                .map(|r| r.key_id().to_owned()),
            target: facts.target,
            request: facts.request,
            cache: facts.cache.map(str::to_owned),
            detail: facts.origin.map(|id| format!("stored by exchange {id}")),
            trace_id: Some(seen.exchange.trace.trace_id.clone()),
            ..Record::default()
        }
    }
}

// === impl Gateway (administrative acts) ===

/// Why a reload did not happen; the configuration in force stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(#[from] crate::config::ConfigErrors),
    #[error("the reload could not be recorded in the audit log, so it was not done: {0}")]
    Unrecorded(#[source] audit::AuditError),
    #[error("the configuration could not be read: {0}")]
    Internal(String),
}

/// What a reload changed.
#[derive(Debug)]
pub struct Reloaded {
    pub generation: u64,
    pub digest: String,
    /// Services whose cached responses were dropped (changed or gone).
    pub cache_dropped: Vec<String>,
    pub warnings: Vec<crate::config::ConfigError>,
}

impl Gateway {
    /// Reads, validates and compiles the configuration file again (schemas, TLS material,
    /// CRLs: everything, off the request path), records the act, then swaps it in whole. A
    /// request in flight finishes on the configuration it started with; listeners stay bound.
    /// An invalid file changes nothing. `[audit]` settings apply from the next start.
    pub async fn reload(&self, by: &str) -> Result<Reloaded, ReloadError> {
        let _one = self.reloading.lock().await;
        let current = self.active.load_full();
        let path = current.snapshot.source.clone();
        let loaded = tokio::task::spawn_blocking(move || crate::config::load(&path))
            .await
            .map_err(|e| ReloadError::Internal(e.to_string()));
        let snapshot = match loaded.and_then(|r| r.map_err(ReloadError::from)) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                self.telemetry.reload(false);
                tracing::error!(error = %e, "reload refused; the running configuration stays");
                return Err(e);
            }
        };
        if let Some(audit) = &self.audit {
            let detail = format!(
                "{} sha256:{} by {by}",
                snapshot.source.display(),
                snapshot.digest
            );
            let record = audit::admin(&snapshot.gateway.id, "reload", Some(detail));
            if let Err(e) = audit.append(record).await {
                self.telemetry.reload(false);
                return Err(ReloadError::Unrecorded(e));
            }
        }
        let next = Arc::new(Active::replacing(
            Arc::new(snapshot),
            &current,
            &self.telemetry,
        ));
        let generation = next.generation;
        let cache_dropped = self
            .cache
            .retain_unchanged(&current.snapshot, &next.snapshot);
        let reloaded = Reloaded {
            generation,
            digest: next.snapshot.digest.clone(),
            cache_dropped,
            warnings: next.snapshot.warnings.clone(),
        };
        self.budget.set_max(next.snapshot.gateway.max_buffered);
        self.active.store(next);
        self.telemetry.forget_before(generation);
        self.telemetry.reload(true);
        tracing::info!(generation, digest = %reloaded.digest, by, "configuration reloaded");
        Ok(reloaded)
    }
}

/// Why a purge was not done.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("no service `{0}` is configured")]
    UnknownService(String),
    #[error("service `{service}` has no operation `{operation}`")]
    UnknownOperation { service: String, operation: String },
    #[error("an operation can only be named with its service")]
    OperationWithoutService,
    #[error("the purge could not be recorded in the audit log: {0}")]
    Unrecorded(#[source] audit::AuditError),
}

impl Gateway {
    /// Drops cached responses: all, a service's, or one operation's. With an audit log the act
    /// is recorded first (`cache-purge`, with the scope and `by`), and not done if it cannot be.
    pub async fn purge_cache(
        &self,
        service: Option<&str>,
        operation: Option<&str>,
        by: &str,
    ) -> Result<u64, PurgeError> {
        let s = &*self.snapshot();
        match (service, operation) {
            (None, Some(_)) => return Err(PurgeError::OperationWithoutService),
            (Some(id), op) => {
                let svc = s
                    .services
                    .iter()
                    .find(|svc| svc.id == id)
                    .ok_or_else(|| PurgeError::UnknownService(id.to_owned()))?;
                if let Some(op) = op.filter(|op| !svc.operations.iter().any(|o| o.id == *op)) {
                    return Err(PurgeError::UnknownOperation {
                        service: id.to_owned(),
                        operation: op.to_owned(),
                    });
                }
            }
            (None, None) => {}
        }
        if let Some(audit) = &self.audit {
            let scope = match (service, operation) {
                (Some(svc), Some(op)) => format!("service={svc} operation={op}"),
                (Some(svc), None) => format!("service={svc}"),
                _ => "all".to_owned(),
            };
            let record = audit::admin(
                &s.gateway.id,
                "cache-purge",
                Some(format!("{scope} by {by}")),
            );
            audit.append(record).await.map_err(PurgeError::Unrecorded)?;
        }
        let purged = self.cache.purge(service, operation);
        tracing::info!(
            service = service.unwrap_or("*"),
            operation = operation.unwrap_or("*"),
            purged,
            by,
            "cache purged"
        );
        Ok(purged)
    }
}

/// The refusal as the caller's protocol expects it.
fn refusal(reject: &Reject, seen: &Seen<'_>) -> Response<Body> {
    if seen.grpc {
        reject.to_grpc_response(&seen.exchange.id)
    } else {
        reject.to_response(&seen.exchange.id)
    }
}

/// Marks the HTTP request the gRPC front made of an `Exchange.Call` (in its extensions).
#[derive(Debug, Clone, Copy)]
pub struct ExchangeCall;

/// A gRPC request (`application/grpc`, `application/grpc+proto`, ...).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn miss_to_reject(snapshot: &Snapshot, miss: Miss, method: &http::Method) -> Reject {
    match miss {
        Miss::NoService => Reject::NoService,
        Miss::NoOperation { service } => Reject::NoOperation {
            service: snapshot.services[service].id.clone(),
        },
        Miss::Method { service, allow } => Reject::MethodNotAllowed {
            service: snapshot.services[service].id.clone(),
            method: method.clone(),
            allow,
        },
    }
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
        outcome = tracing::field::Empty,
    )
}

/// A method as records and logs name it: one of RFC 9110's and PATCH, or `other` (an
/// extension method is any token the caller chose).
fn recorded_method(method: &Method) -> &str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::PATCH,
        Method::TRACE,
        Method::CONNECT,
    ];
    if KNOWN.contains(method) {
        method.as_str()
    } else {
        "other"
    }
}

/// The log line of a refusal: the exchange id, who and what it concerned (by configured
/// names), the problem slug and the target as the audit record writes it (values hashed) —
/// never the raw path, query, headers or body, which may carry a citizen's data.
fn log_refusal(reject: &Reject, seen: &Seen<'_>, facts: &Facts) {
    let s = &seen.active.snapshot;
    let consumer = facts.consumer.map_or("", |i| s.agencies[i].code.as_str());
    let service = facts.service.map(|i| &s.services[i]);
    let operation = service
        .zip(facts.operation)
        .map_or("", |(svc, j)| svc.operations[j].id.as_str());
    let service = service.map_or("", |svc| svc.id.as_str());
    let target = facts.target.as_deref().unwrap_or("");
    let message = reject.log_message();
    match reject.severity() {
        Severity::Caller => tracing::info!(
            exchange_id = %seen.exchange.id, remote = %seen.caller.remote, consumer, service,
            operation, target, problem = reject.slug(), "refused: {message}"
        ),
        Severity::Upstream => {
            // Transport errors (connect, TLS, HTTP framing): they name no data.
            let cause = std::error::Error::source(reject).map(|s| s.to_string());
            tracing::warn!(
                exchange_id = %seen.exchange.id, remote = %seen.caller.remote, consumer,
                service, operation, target, problem = reject.slug(),
                cause = cause.as_deref().unwrap_or(""), "refused: {message}"
            )
        }
    }
}
