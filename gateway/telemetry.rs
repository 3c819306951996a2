//! Metrics, as a handle the pipeline calls and the admin listener encodes (Prometheus text).
//! Labels are ids from the configuration and outcome slugs, never values from requests, so a
//! caller cannot grow the label space.

use std::collections::HashMap;
use std::sync::RwLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::Snapshot;

type Labels = Vec<(&'static str, String)>;
/// (configuration generation, service, operation, consumer, outcome): indexes mean something
/// only within one generation.
type ExchangeKey = (
    u64,
    Option<usize>,
    Option<usize>,
    Option<usize>,
    &'static str,
);

pub struct Telemetry {
    registry: Registry,
    exchanges: Family<Labels, Counter>,
    /// (service, operation, consumer, outcome) → its counter, for the hot path.
    known: RwLock<HashMap<ExchangeKey, Counter>>,
    schema_violations: Family<Labels, Counter>,
    cache: CacheMetrics,
    reloads: Counter,
    reload_failures: Counter,
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
            "Exchanges by service, operation, consumer and outcome (forwarded or the problem type)",
            exchanges.clone(),
        );
        let schema_violations = Family::<Labels, Counter>::default();
        registry.register(
            "schema_violations",
            "Schema violations by service, operation, direction and schema_mode",
            schema_violations.clone(),
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
        Telemetry {
            registry,
            exchanges,
            known: RwLock::new(HashMap::new()),
            schema_violations,
            cache,
            reloads,
            reload_failures,
        }
    }

    /// Counts an exchange. The labelled counter is looked up by snapshot indexes under a read
    /// lock; the label strings are built only the first time a combination is seen.
    #[allow(clippy::too_many_arguments)]
    pub fn exchange(
        &self,
        snapshot: &Snapshot,
        generation: u64,
        service: Option<usize>,
        operation: Option<usize>,
        consumer: Option<usize>,
        outcome: &'static str,
    ) {
        let key = (generation, service, operation, consumer, outcome);
        if let Some(counter) = self.known.read().ok().and_then(|k| k.get(&key).cloned()) {
            counter.inc();
            return;
        }
        let service_id = service.map_or("", |i| snapshot.services[i].id.as_str());
        let operation_id = match (service, operation) {
            (Some(i), Some(j)) => snapshot.services[i].operations[j].id.as_str(),
            _ => "",
        };
        let consumer_code = consumer.map_or("", |i| snapshot.agencies[i].code.as_str());
        let counter = self
            .exchanges
            .get_or_create(&vec![
                ("service", service_id.to_owned()),
                ("operation", operation_id.to_owned()),
                ("consumer", consumer_code.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .clone();
        counter.inc();
        if let Ok(mut known) = self.known.write() {
            known.insert(key, counter);
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
