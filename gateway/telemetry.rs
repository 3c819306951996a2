//! Metrics, as a handle the pipeline calls and the admin listener encodes (Prometheus text).
//! Labels are ids from the configuration and outcome slugs, never values from requests, so a
//! caller cannot grow the label space.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::config::Snapshot;
use crate::outcome::Outcome;

type Labels = Vec<(&'static str, String)>;
/// (configuration generation, parties, outcome, status): indexes mean something only within
/// one generation.
type ExchangeKey = (u64, Parties, Outcome, u16);

/// The hot path's maps: keys are snapshot indexes, never caller input, so a fast hash with a
/// per-process seed does (SipHash cost more than the rest of the look-up).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Who took part in an exchange, as indexes of its snapshot; each is known once the stage that
/// learns it has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Parties {
    pub service: Option<usize>,
    pub operation: Option<usize>,
    pub consumer: Option<usize>,
    pub agreement: Option<usize>,
}

/// The metrics one combination of an exchange's labels counts into.
type Counted = (Counter, Histogram, Option<Counter>);

type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

pub struct Telemetry {
    registry: Registry,
    exchanges: Family<Labels, Counter>,
    /// Exchanges under an agreement, by agreement and its legal basis.
    agreement_exchanges: Family<Labels, Counter>,
    /// Seconds from the request head to the response head, by service and operation.
    durations: Histograms,
    /// (service, operation, consumer, outcome) → its counter and duration histogram, for the
    /// hot path.
    known: RwLock<FastMap<ExchangeKey, Counted>>,
    /// Seconds the upstream took to answer (response head), by service.
    upstream_durations: Histograms,
    known_upstreams: RwLock<FastMap<(u64, usize), Histogram>>,
    schema_violations: Family<Labels, Counter>,
    cache: CacheMetrics,
    reloads: Counter,
    reload_failures: Counter,
    otlp_dropped: Counter,
    otlp_metrics_failed: Counter,
    /// Refreshed before each scrape or export by [`Telemetry::refresh`].
    upstream_up: Family<Labels, Gauge>,
    certificate_expiry: Family<Labels, Gauge>,
    client_certificate_expiry: Family<Labels, Gauge>,
    upstream_certificate_expiry: Family<Labels, Gauge>,
    audit_queue: Gauge,
    buffered: Gauge,
    buffered_max: Gauge,
}

/// Latency buckets: 100 µs doubling to about 6.6 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

/// What the metrics read from the gateway's state at a scrape.
pub struct Scrape<'a> {
    /// (service, upstream origin, up) for every upstream of the configuration in force.
    pub upstreams: Vec<(&'a str, String, bool)>,
    /// (used_as, file, seconds until not usable) for every certificate and CRL.
    pub certificates: Vec<(&'a str, &'a str, i64)>,
    /// (role, party, SHA-256, seconds until notAfter) for every certificate seen on the wire
    /// in the last 30 days: an agency's or peer's (client), a service's upstream's.
    pub seen: Vec<(crate::seen::Role, &'a str, &'a str, i64)>,
    /// Records waiting for the audit writer.
    pub audit_queue: Option<usize>,
    /// Bytes of bodies held now, and the budget (`[gateway] max_buffered`).
    pub buffered: (u64, u64),
}

type Reason = [(&'static str, &'static str); 1];

/// The cache's metrics; the cache holds a clone (every field is a shared handle).
#[derive(Clone, Default)]
pub struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    coalesced_waits: Counter,
    refused: Family<Reason, Counter>,
    evictions: Family<Reason, Counter>,
    entries: Gauge,
    bytes: Gauge,
}

/// Where a schema violation was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Parameter,
    Request,
    Response,
}

// === impl Telemetry ===

impl Telemetry {
    pub fn new() -> Telemetry {
        let mut registry = Registry::with_prefix("penghubung");
        let exchanges = Family::<Labels, Counter>::default();
        registry.register(
            "exchanges",
            "Exchanges by service, operation, consumer, outcome (forwarded, served-from-cache or the problem type) and the HTTP status answered",
            exchanges.clone(),
        );
        let agreement_exchanges = Family::<Labels, Counter>::default();
        registry.register(
            "agreement_exchanges",
            "Exchanges under an agreement, by agreement, its legal basis (kesepakatan, sop, perintah_bupati), consumer, service and outcome",
            agreement_exchanges.clone(),
        );
        let schema_violations = Family::<Labels, Counter>::default();
        registry.register(
            "schema_violations",
            "Schema violations by service, operation, direction and schema_mode",
            schema_violations.clone(),
        );
        let durations: Histograms = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from a request's head to its response's head in the gateway, by service and operation",
            durations.clone(),
        );
        let upstream_durations: Histograms = Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_duration_seconds",
            "Time the upstream took to answer (response head), retries included, by service",
            upstream_durations.clone(),
        );
        let upstream_up = Family::<Labels, Gauge>::default();
        registry.register(
            "upstream_up",
            "1 when the upstream is in the rotation; 0 when ejected after failures or down by health checks",
            upstream_up.clone(),
        );
        let certificate_expiry = Family::<Labels, Gauge>::default();
        registry.register(
            "certificate_expiry_seconds",
            "Seconds until a certificate (notAfter) or CRL (nextUpdate) the gateway uses stops being usable; negative when past",
            certificate_expiry.clone(),
        );
        let client_certificate_expiry = Family::<Labels, Gauge>::default();
        registry.register(
            "client_certificate_expiry_seconds",
            "Seconds until a client certificate an agency or peer presented in the last 30 days expires (notAfter); negative when past",
            client_certificate_expiry.clone(),
        );
        let upstream_certificate_expiry = Family::<Labels, Gauge>::default();
        registry.register(
            "upstream_certificate_expiry_seconds",
            "Seconds until a server certificate a service's upstream presented in the last 30 days expires (notAfter); negative when past",
            upstream_certificate_expiry.clone(),
        );
        let audit_queue = Gauge::default();
        registry.register(
            "audit_queue_depth",
            "Audit records handed to the writer and not yet durable",
            audit_queue.clone(),
        );
        let (buffered, buffered_max) = (Gauge::default(), Gauge::default());
        registry.register(
            "buffered_bytes",
            "Bytes of request and response bodies held for validation, audit and the cache, all exchanges together",
            buffered.clone(),
        );
        registry.register(
            "buffered_max_bytes",
            "The budget of held bodies ([gateway] max_buffered); past it exchanges are refused with 503 overloaded",
            buffered_max.clone(),
        );
        let cache = CacheMetrics::default();
        cache.register(&mut registry);
        let (reloads, reload_failures) = (Counter::default(), Counter::default());
        registry.register(
            "config_reloads",
            "Configurations reloaded and swapped in",
            reloads.clone(),
        );
        registry.register(
            "config_reload_failures",
            "Reloads refused (invalid file, or not recordable); the running configuration stayed",
            reload_failures.clone(),
        );
        let otlp_dropped = Counter::default();
        registry.register(
            "otlp_spans_dropped",
            "Exchange spans not exported to the OTLP collector (queue full, collector unreachable or refusing)",
            otlp_dropped.clone(),
        );
        let otlp_metrics_failed = Counter::default();
        registry.register(
            "otlp_metric_exports_failed",
            "Metric exports to the OTLP collector that failed (the next one sends the cumulative values again)",
            otlp_metrics_failed.clone(),
        );
        Telemetry {
            registry,
            otlp_dropped,
            otlp_metrics_failed,
            exchanges,
            agreement_exchanges,
            durations,
            known: RwLock::new(FastMap::default()),
            upstream_durations,
            known_upstreams: RwLock::new(FastMap::default()),
            upstream_up,
            certificate_expiry,
            client_certificate_expiry,
            upstream_certificate_expiry,
            audit_queue,
            buffered,
            buffered_max,
            schema_violations,
            cache,
            reloads,
            reload_failures,
        }
    }

    /// The counter of spans the OTLP exporter lost.
    pub fn otlp_dropped(&self) -> Counter {
        self.otlp_dropped.clone()
    }

    /// Counts a failed OTLP metrics export.
    pub fn otlp_metrics_failed(&self) {
        self.otlp_metrics_failed.inc();
    }

    /// Counts an exchange and its time to the response head. The labelled metrics are looked
    /// up by snapshot indexes under a read lock; the label strings are built only the first
    /// time a combination is seen.
    pub fn exchange(
        &self,
        snapshot: &Snapshot,
        generation: u64,
        parties: Parties,
        outcome: Outcome,
        status: u16,
        elapsed: Duration,
    ) {
        let key = (generation, parties, outcome, status);
        if let Ok(known) = self.known.read() {
            if let Some((counter, histogram, agreement)) = known.get(&key) {
                counter.inc();
                histogram.observe(elapsed.as_secs_f64());
                if let Some(agreement) = agreement {
                    agreement.inc();
                }
                return;
            }
        }
        let service_id = parties
            .service
            .map_or("", |i| snapshot.services[i].id.as_str());
        let operation_id = match (parties.service, parties.operation) {
            (Some(i), Some(j)) => snapshot.services[i].operations[j].id.as_str(),
            _ => "",
        };
        let consumer_code = parties
            .consumer
            .map_or("", |i| snapshot.agencies[i].code.as_str());
        let counter = self
            .exchanges
            .get_or_create(&vec![
                ("service", service_id.to_owned()),
                ("operation", operation_id.to_owned()),
                ("consumer", consumer_code.to_owned()),
                ("outcome", outcome.as_str().to_owned()),
                ("status", status.to_string()),
            ])
            .clone();
        let histogram = self
            .durations
            .get_or_create(&vec![
                ("service", service_id.to_owned()),
                ("operation", operation_id.to_owned()),
            ])
            .clone();
        let agreement = parties.agreement.map(|i| {
            let a = &snapshot.agreements[i];
            self.agreement_exchanges
                .get_or_create(&vec![
                    ("agreement", a.id.clone()),
                    ("basis", a.basis.as_str().to_owned()),
                    ("consumer", consumer_code.to_owned()),
                    ("service", service_id.to_owned()),
                    ("outcome", outcome.as_str().to_owned()),
                ])
                .clone()
        });
        counter.inc();
        histogram.observe(elapsed.as_secs_f64());
        if let Some(agreement) = &agreement {
            agreement.inc();
        }
        if let Ok(mut known) = self.known.write() {
            known.insert(key, (counter, histogram, agreement));
        }
    }

    /// The time service `service` (an index of `snapshot`) took to answer.
    pub fn upstream(&self, snapshot: &Snapshot, generation: u64, service: usize, took: Duration) {
        let key = (generation, service);
        if let Ok(known) = self.known_upstreams.read() {
            if let Some(histogram) = known.get(&key) {
                histogram.observe(took.as_secs_f64());
                return;
            }
        }
        let histogram = self
            .upstream_durations
            .get_or_create(&vec![("service", snapshot.services[service].id.clone())])
            .clone();
        histogram.observe(took.as_secs_f64());
        if let Ok(mut known) = self.known_upstreams.write() {
            known.insert(key, histogram);
        }
    }

    /// A reload attempt.
    pub fn reload(&self, ok: bool) {
        if ok {
            self.reloads.inc();
        } else {
            self.reload_failures.inc();
        }
    }

    /// After a reload: counters cached for older generations are let go (the labelled
    /// counters themselves stay in the registry).
    pub fn forget_before(&self, generation: u64) {
        if let Ok(mut known) = self.known.write() {
            known.retain(|key, _| key.0 >= generation);
        }
        if let Ok(mut known) = self.known_upstreams.write() {
            known.retain(|key, _| key.0 >= generation);
        }
    }

    pub fn schema_violation(
        &self,
        service: &str,
        operation: &str,
        direction: Direction,
        enforced: bool,
    ) {
        let direction = match direction {
            Direction::Parameter => "parameter",
            Direction::Request => "request",
            Direction::Response => "response",
        };
        self.schema_violations
            .get_or_create(&vec![
                ("service", service.to_owned()),
                ("operation", operation.to_owned()),
                ("direction", direction.to_owned()),
                (
                    "mode",
                    if enforced { "enforce" } else { "monitor" }.to_owned(),
                ),
            ])
            .inc();
    }

    pub fn cache(&self) -> &CacheMetrics {
        &self.cache
    }

    /// Sets the gauges that mirror the gateway's state from `scrape` (upstreams and
    /// certificates of an older configuration disappear).
    pub fn refresh(&self, scrape: Scrape<'_>) {
        self.upstream_up.clear();
        for (service, upstream, up) in scrape.upstreams {
            self.upstream_up
                .get_or_create(&vec![
                    ("service", service.to_owned()),
                    ("upstream", upstream),
                ])
                .set(i64::from(up));
        }
        self.certificate_expiry.clear();
        for (used_as, file, seconds) in scrape.certificates {
            self.certificate_expiry
                .get_or_create(&vec![
                    ("used_as", used_as.to_owned()),
                    ("file", file.to_owned()),
                ])
                .set(seconds);
        }
        self.client_certificate_expiry.clear();
        self.upstream_certificate_expiry.clear();
        for (role, party, sha256, seconds) in scrape.seen {
            let (family, label) = match role {
                crate::seen::Role::Client => (&self.client_certificate_expiry, "consumer"),
                crate::seen::Role::Upstream => (&self.upstream_certificate_expiry, "service"),
            };
            family
                .get_or_create(&vec![
                    (label, party.to_owned()),
                    ("sha256", sha256.to_owned()),
                ])
                .set(seconds);
        }
        self.audit_queue.set(
            scrape
                .audit_queue
                .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)),
        );
        let (held, max) = scrape.buffered;
        self.buffered.set(i64::try_from(held).unwrap_or(i64::MAX));
        self.buffered_max
            .set(i64::try_from(max).unwrap_or(i64::MAX));
    }

    /// Registers the audit writer's fsync latency histogram.
    pub fn register_audit(&mut self, fsync_seconds: Histogram) {
        self.registry.register(
            "audit_fsync_seconds",
            "Time each audit fsync (fdatasync of a group-committed batch) took",
            fsync_seconds,
        );
    }

    /// Every metric as Prometheus metric families (the OTLP export's source).
    pub fn families(
        &self,
    ) -> Vec<prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::MetricFamily>
    {
        prometheus_client::encoding::prometheus_protobuf::encode(&self.registry).unwrap_or_default()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

// === impl CacheMetrics ===

impl CacheMetrics {
    fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("cache");
        r.register(
            "hits",
            "Requests served from the cache (after waiting for another's fetch or not)",
            self.hits.clone(),
        );
        r.register(
            "misses",
            "Requests the cache could not serve and sent upstream",
            self.misses.clone(),
        );
        r.register(
            "coalesced_waits",
            "Requests that waited for another request's upstream fetch of the same key",
            self.coalesced_waits.clone(),
        );
        r.register(
            "stores_refused",
            "Upstream responses of cacheable operations not stored, by reason",
            self.refused.clone(),
        );
        r.register(
            "evictions",
            "Entries removed by the byte budget (size) or on expiry (expired)",
            self.evictions.clone(),
        );
        r.register("entries", "Entries held", self.entries.clone());
        r.register(
            "bytes",
            "Bytes held, as weighed against cache.max_size",
            self.bytes.clone(),
        );
    }

    pub fn hit(&self) {
        self.hits.inc();
    }

    pub fn miss(&self) {
        self.misses.inc();
    }

    pub fn coalesced_wait(&self) {
        self.coalesced_waits.inc();
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn evicted(&self, cause: &'static str) {
        self.evictions.get_or_create(&[("cause", cause)]).inc();
    }

    /// Sets the gauges, before an exposition.
    pub fn usage(&self, entries: u64, bytes: u64) {
        self.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

impl Default for Telemetry {
    fn default() -> Telemetry {
        Telemetry::new()
    }
}
