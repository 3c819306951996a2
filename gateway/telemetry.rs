//! Metrics, as a handle the pipeline calls and the admin listener encodes (Prometheus text).
//! Labels are ids from the configuration and outcome slugs, never values from requests, so a
//! caller cannot grow the label space.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Telemetry {
    registry: Registry,
    exchanges: Family<Labels, Counter>,
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
            schema_violations,
        }
    }

    pub fn exchange(&self, service: &str, operation: &str, consumer: &str, outcome: &str) {
        self.exchanges
            .get_or_create(&vec![
                ("service", service.to_owned()),
                ("operation", operation.to_owned()),
                ("consumer", consumer.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
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
