//! OTLP/gRPC export (`[telemetry] otlp_endpoint`): every exchange as a trace span, and the
//! gateway's metrics — the same registry `/metrics` shows — every `metrics_interval`.
//!
//! The span is the gateway's hop of the caller's W3C trace: its trace id and span id are the
//! ones the upstream receives in `traceparent`, its parent the caller's span, so a trace
//! backend joins caller, gateway and upstream. Spans go through a bounded queue to one task
//! that sends them as soon as it is free — what arrives during one export (at most 512) makes
//! the next — and at shutdown on a flush; a full queue or an unreachable collector drops spans
//! and counts them — an exchange never waits for telemetry.
//!
//! Metrics are cumulative from the gateway's start: counters become monotonic sums (without
//! Prometheus' `_total`), gauges gauges, histograms explicit-bucket histograms.
//!
//! Sampling follows the caller: a `traceparent` without the sampled flag is not exported; an
//! exchange that starts a trace is.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    self as otel, metric::Data, number_data_point, AggregationTemporality, HistogramDataPoint,
    NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as prom;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::config::OtlpSettings;
use crate::exchange::Exchange;
use crate::outcome::Outcome;

/// Spans waiting for the exporter; beyond this they are dropped.
const QUEUE: usize = 8192;
/// Spans per export request at most.
const BATCH: usize = 512;
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the export task is sent.
enum Message {
    Span(Box<Span>),
    /// Send what is held now, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The handle the pipeline records spans into. The export task starts with the first span
/// (on the runtime that serves it) and ends, after sending what it holds, when the handle is
/// dropped — a reload that changes the endpoint drops the old one with the old configuration.
pub struct Exporter {
    settings: OtlpSettings,
    resource: Resource,
    /// Made on first use, within the runtime; spans and metrics share its connection.
    channel: OnceLock<tonic::transport::Channel>,
    queue: OnceLock<mpsc::Sender<Message>>,
    /// Spans dropped (queue full, export failed).
    dropped: Counter,
}

/// What the pipeline knows of an exchange when it ends.
pub struct Ended<'a> {
    pub exchange: &'a Exchange,
    /// How long ago the request's head arrived.
    pub elapsed: Duration,
    pub method: &'a str,
    pub consumer: Option<&'a str>,
    pub service: Option<&'a str>,
    pub operation: Option<&'a str>,
    pub outcome: Outcome,
    pub status: u16,
}

impl Exporter {
    /// An exporter to `settings.endpoint`; `dropped` counts the spans lost.
    pub fn new(settings: OtlpSettings, dropped: Counter) -> Exporter {
        let resource = Resource {
            attributes: vec![
                text("service.name", &settings.service_name),
                text("service.version", crate::VERSION),
            ],
            ..Default::default()
        };
        Exporter {
            settings,
            resource,
            channel: OnceLock::new(),
            queue: OnceLock::new(),
            dropped,
        }
    }

    /// Where it exports, and as what.
    pub fn settings(&self) -> &OtlpSettings {
        &self.settings
    }

    /// Queues the exchange's span if its trace is sampled; never waits. Call from within the
    /// tokio runtime.
    pub fn record(&self, ended: Ended<'_>) {
        if !sampled(&ended.exchange.trace.flags) {
            return;
        }
        let queue = self.queue.get_or_init(|| self.start());
        if queue
            .try_send(Message::Span(Box::new(span(ended))))
            .is_err()
        {
            self.dropped.inc();
        }
    }

    /// Sends the spans waiting now, and returns once they are sent (or lost): at shutdown.
    pub async fn flush(&self) {
        let Some(queue) = self.queue.get() else {
            return;
        };
        let (done, sent) = tokio::sync::oneshot::channel();
        if queue.send(Message::Flush(done)).await.is_ok() {
            let _ = sent.await;
        }
    }

    /// Sends the metric families (as `prometheus_client` encodes them), cumulative since
    /// `start`.
    pub async fn export_metrics(
        &self,
        families: Vec<prom::MetricFamily>,
        start: SystemTime,
    ) -> Result<(), tonic::Status> {
        let request = metrics_request(&self.resource, families, start, SystemTime::now());
        MetricsServiceClient::new(self.channel())
            .export(request)
            .await
            .map(drop)
    }

    fn channel(&self) -> tonic::transport::Channel {
        self.channel
            .get_or_init(|| {
                tonic::transport::Channel::builder(self.settings.endpoint.clone())
                    .connect_timeout(EXPORT_TIMEOUT)
                    .timeout(EXPORT_TIMEOUT)
                    .connect_lazy()
            })
            .clone()
    }

    fn start(&self) -> mpsc::Sender<Message> {
        let (queue, spans) = mpsc::channel(QUEUE);
        tokio::spawn(export(
            TraceServiceClient::new(self.channel()),
            self.resource.clone(),
            spans,
            self.dropped.clone(),
        ));
        queue
    }
}

/// The sampled bit of W3C trace flags.
fn sampled(flags: &str) -> bool {
    unhex(flags).first().is_some_and(|f| f & 1 == 1)
}

/// The OTLP span of an ended exchange.
fn span(e: Ended<'_>) -> Span {
    let trace = &e.exchange.trace;
    let name = match (e.service, e.operation) {
        (Some(s), Some(o)) => format!("{s}/{o}"),
        (Some(s), None) => s.to_owned(),
        _ => "exchange".to_owned(),
    };
    let mut attributes = vec![
        text("spl.exchange_id", &e.exchange.id),
        text("spl.outcome", e.outcome.as_str()),
        text("http.request.method", e.method),
        KeyValue {
            key: "http.response.status_code".to_owned(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(i64::from(e.status))),
            }),
            ..Default::default()
        },
    ];
    for (key, value) in [
        ("spl.consumer", e.consumer),
        ("spl.service", e.service),
        ("spl.operation", e.operation),
    ] {
        if let Some(value) = value {
            attributes.push(text(key, value));
        }
    }
    let forwarded = e.outcome.answered();
    let now = SystemTime::now();
    Span {
        trace_id: unhex(&trace.trace_id),
        span_id: unhex(&trace.span_id),
        parent_span_id: trace
            .parent_span_id
            .as_deref()
            .map(unhex)
            .unwrap_or_default(),
        trace_state: trace.state.clone().unwrap_or_default(),
        name,
        kind: SpanKind::Server as i32,
        start_time_unix_nano: nanos(now - e.elapsed),
        end_time_unix_nano: nanos(now),
        attributes,
        status: Some(Status {
            code: if forwarded && e.status < 500 {
                StatusCode::Unset
            } else {
                StatusCode::Error
            } as i32,
            message: if forwarded {
                String::new()
            } else {
                e.outcome.as_str().to_owned()
            },
        }),
        ..Default::default()
    }
}

/// The export task: sends what has arrived (at most `BATCH` at a time) whenever it is free,
/// answers flushes once what preceded them is sent, and ends when the gateway (every
/// `Exporter`) is gone, after sending what it holds.
async fn export(
    mut client: TraceServiceClient<tonic::transport::Channel>,
    resource: Resource,
    mut messages: mpsc::Receiver<Message>,
    dropped: Counter,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut received = Vec::with_capacity(BATCH);
    loop {
        let mut flushed = None;
        let open = messages.recv_many(&mut received, BATCH).await > 0;
        for message in received.drain(..) {
            match message {
                Message::Span(span) => batch.push(*span),
                Message::Flush(done) => flushed = Some(done),
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(resource.clone()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(scope()),
                        spans: std::mem::take(&mut batch),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            if let Err(status) = client.export(request).await {
                dropped.inc_by(n);
                tracing::warn!(error = %status.message(), spans = n, "OTLP export failed; spans dropped");
            }
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
        if !open {
            return;
        }
    }
}

/// The OTLP form of the registry's metric families.
fn metrics_request(
    resource: &Resource,
    families: Vec<prom::MetricFamily>,
    start: SystemTime,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let (start, now) = (nanos(start), nanos(now));
    let metrics = families
        .into_iter()
        .filter_map(|family| {
            let kind = family.metric.first()?;
            let labels = |m: &prom::Metric| -> Vec<KeyValue> {
                m.label.iter().map(|l| text(&l.name, &l.value)).collect()
            };
            let number = |m: &prom::Metric, value: f64| NumberDataPoint {
                attributes: labels(m),
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsDouble(value)),
                ..Default::default()
            };
            let data = if kind.counter.is_some() {
                Data::Sum(otel::Sum {
                    data_points: family
                        .metric
                        .iter()
                        .filter_map(|m| Some(number(m, m.counter.as_ref()?.value)))
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })
            } else if kind.gauge.is_some() {
                Data::Gauge(otel::Gauge {
                    data_points: family
                        .metric
                        .iter()
                        .filter_map(|m| Some(number(m, m.gauge.as_ref()?.value)))
                        .collect(),
                })
            } else if kind.histogram.is_some() {
                Data::Histogram(otel::Histogram {
                    data_points: family
                        .metric
                        .iter()
                        .filter_map(|m| {
                            let h = m.histogram.as_ref()?;
                            let (explicit_bounds, bucket_counts) = buckets(h);
                            Some(HistogramDataPoint {
                                attributes: labels(m),
                                start_time_unix_nano: start,
                                time_unix_nano: now,
                                count: h.sample_count,
                                sum: Some(h.sample_sum),
                                bucket_counts,
                                explicit_bounds,
                                ..Default::default()
                            })
                        })
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })
            } else {
                return None;
            };
            let name = match data {
                Data::Sum(_) => family
                    .name
                    .strip_suffix("_total")
                    .unwrap_or(&family.name)
                    .to_owned(),
                _ => family.name,
            };
            Some(otel::Metric {
                name,
                description: family.help,
                unit: family.unit,
                data: Some(data),
                ..Default::default()
            })
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Prometheus' cumulative buckets as OTLP's finite bounds and per-bucket counts (one more count
/// than bounds: the overflow above the last bound).
fn buckets(h: &prom::Histogram) -> (Vec<f64>, Vec<u64>) {
    let finite: Vec<&prom::Bucket> = h
        .bucket
        .iter()
        .filter(|b| b.upper_bound.is_finite() && b.upper_bound < f64::MAX)
        .collect();
    let mut below = 0;
    let mut counts: Vec<u64> = finite
        .iter()
        .map(|b| {
            let n = b.cumulative_count.saturating_sub(below);
            below = b.cumulative_count;
            n
        })
        .collect();
    counts.push(h.sample_count.saturating_sub(below));
    (finite.iter().map(|b| b.upper_bound).collect(), counts)
}

/// What produced the spans and metrics.
fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "penghubung".to_owned(),
        version: crate::VERSION.to_owned(),
        ..Default::default()
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// Lowercase hex (as the trace context holds it) to bytes.
/// (The trace context was validated on the way in; nothing else reaches here.)
fn unhex(text: &str) -> Vec<u8> {
    data_encoding::HEXLOWER
        .decode(text.as_bytes())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_become_bytes() {
        assert_eq!(
            unhex("00f067aa0ba902b7"),
            [0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
    }

    #[test]
    fn only_sampled_traces_are_exported() {
        assert!(sampled("01"));
        assert!(sampled("03"));
        assert!(!sampled("00"));
        assert!(!sampled("02"));
        assert!(!sampled("zz"));
    }
}
