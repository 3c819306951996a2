//! Metrics, as a handle the pipeline calls and the admin listener encodes (Prometheus text).
//! Labels are ids from the configuration and outcome slugs, never values from requests, so a
//! caller cannot grow the label space.

use std::collections::HashMap;
use std::sync::RwLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::config::Snapshot;

type Labels = Vec<(&'static str, String)>;
type ExchangeKey = (Option<usize>, Option<usize>, Option<usize>, &'static str);

pub struct Telemetry {
    registry: Registry,
    exchanges: Family<Labels, Counter>,
    /// (service, operation, consumer, outcome) → its counter, for the hot path.
    known: RwLock<HashMap<ExchangeKey, Counter>>,
    schema_violations: Family<Labels, Counter>,
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
        Telemetry {
            registry,
            exchanges,
            known: RwLock::new(HashMap::new()),
            schema_violations,
        }
    }

    /// Counts an exchange. The labelled counter is looked up by snapshot indexes under a read
    /// lock; the label strings are built only the first time a combination is seen.
    pub fn exchange(
        &self,
        snapshot: &Snapshot,
        service: Option<usize>,
        operation: Option<usize>,
        consumer: Option<usize>,
        outcome: &'static str,
    ) {
        let key = (service, operation, consumer, outcome);
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

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Telemetry {
    fn default() -> Telemetry {
        Telemetry::new()
    }
}
