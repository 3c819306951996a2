//! OTLP export (`[telemetry] otlp_endpoint`): every exchange becomes a span of the caller's W3C
//! trace, and the metrics follow every `metrics_interval`, sent to a collector — here a fake
//! OTLP/gRPC collector (opentelemetry-proto's tonic services) on 127.0.0.1:0 that keeps what it
//! is sent. The span's ids are the ones the upstream received in `traceparent`; unsampled
//! traces are not exported; the metrics are the ones `/metrics` shows; a collector that is
//! down costs spans (counted), never an exchange.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{number_data_point, AggregationTemporality, Metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use support::{closed_port, config_text, recording_upstream, Client, Running, TestPki};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::codegen::Service;

/// What a collector received: each span with its resource's `service.name`, and each metrics
/// export.
#[derive(Clone)]
struct Collector {
    spans: mpsc::UnboundedSender<(String, Span)>,
    metrics: mpsc::UnboundedSender<(String, Vec<Metric>)>,
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        for resource_metrics in request.into_inner().resource_metrics {
            let service = service_name(resource_metrics.resource);
            for scope in resource_metrics.scope_metrics {
                assert_eq!(scope.scope.unwrap().name, "penghubung");
                let _ = self.metrics.send((service.clone(), scope.metrics));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource_spans in request.into_inner().resource_spans {
            let service = service_name(resource_spans.resource);
            for scope in resource_spans.scope_spans {
                assert_eq!(scope.scope.unwrap().name, "penghubung");
                for span in scope.spans {
                    let _ = self.spans.send((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The `service.name` an export names its sender by.
fn service_name(resource: Option<Resource>) -> String {
    text(&resource.unwrap_or_default().attributes, "service.name").unwrap_or_default()
}

type Received<T> = mpsc::UnboundedReceiver<(String, T)>;

/// An OTLP/gRPC collector (plain HTTP/2) on loopback: its address, and the spans and metrics
/// it receives.
async fn collector() -> (String, Received<Span>, Received<Vec<Metric>>) {
    let (spans, received_spans) = mpsc::unbounded_channel();
    let (metrics, received_metrics) = mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector { spans, metrics };
    let traces = TraceServiceServer::new(collector.clone());
    let metrics = MetricsServiceServer::new(collector);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (traces, metrics) = (traces.clone(), metrics.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (mut traces, mut metrics) = (traces.clone(), metrics.clone());
                    async move {
                        let request = request.map(tonic::body::Body::new);
                        let response = if request.uri().path().contains(".metrics.") {
                            metrics.call(request).await
                        } else {
                            traces.call(request).await
                        };
                        Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), received_spans, received_metrics)
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The next span the collector receives, within 10 s.
async fn next<T>(received: &mut Received<T>) -> (String, T) {
    tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("nothing reached the collector within 10 s")
        .unwrap()
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const UNSAMPLED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

#[tokio::test]
async fn exchanges_are_exported_as_spans_of_the_callers_trace() {
    let pki = TestPki::new();
    let (upstream, recorder) = recording_upstream(&pki).await;
    let (endpoint, mut received, _) = collector().await;
    let extra =
        format!("\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"spl-kab-test\"\n");
    let gateway = Running::start(pki, &config_text(&upstream, "5s", &extra)).await;
    let client = Client::new(
        gateway.addr,
        &gateway.pki.ca,
        Some(&gateway.pki.dinkes),
        Version::HTTP_11,
    );
    let traced = |target: &str, traceparent: &str| {
        Request::get(target)
            .header("traceparent", traceparent)
            .header("tracestate", "vendor=opaque")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };

    // 1. Forwarded, within the caller's trace.
    let forwarded = client
        .send(traced(
            "/dukcapil/penduduk/penduduk/3201010101010001",
            &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"),
        ))
        .await
        .unwrap();
    assert_eq!(forwarded.status, 200);
    let sent_upstream = recorder.requests()[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let gateway_span = sent_upstream.split('-').nth(2).unwrap().to_owned();
    assert!(sent_upstream.starts_with(&format!("00-{CALLER_TRACE}-")));
    assert_ne!(gateway_span, CALLER_SPAN);

    // 2. Unsampled by the caller: forwarded, not exported.
    let unsampled = client
        .send(traced(
            "/dukcapil/penduduk/penduduk/3201010101010001",
            &format!("00-{UNSAMPLED_TRACE}-{CALLER_SPAN}-00"),
        ))
        .await
        .unwrap();
    assert_eq!(unsampled.status, 200);

    // 3. Refused, starting a trace of its own.
    let refused = client.get("/dukcapil/penduduk/tidak-ada").await.unwrap();
    refused.problem(404, "no-operation");

    let (service_name, span) = next(&mut received).await;
    assert_eq!(service_name, "spl-kab-test");
    assert_eq!(hex(&span.trace_id), CALLER_TRACE);
    assert_eq!(
        hex(&span.span_id),
        gateway_span,
        "the span the upstream saw as its parent"
    );
    assert_eq!(hex(&span.parent_span_id), CALLER_SPAN);
    assert_eq!(span.trace_state, "vendor=opaque");
    assert_eq!(span.name, "dukcapil-penduduk/get-penduduk");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert!(span.start_time_unix_nano > 0 && span.start_time_unix_nano <= span.end_time_unix_nano);
    let attributes = &span.attributes;
    assert_eq!(
        text(attributes, "spl.exchange_id").unwrap(),
        forwarded.headers["spl-exchange-id"].to_str().unwrap()
    );
    assert_eq!(text(attributes, "spl.consumer").unwrap(), "dinkes");
    assert_eq!(
        text(attributes, "spl.service").unwrap(),
        "dukcapil-penduduk"
    );
    assert_eq!(text(attributes, "spl.operation").unwrap(), "get-penduduk");
    assert_eq!(text(attributes, "spl.outcome").unwrap(), "forwarded");
    assert_eq!(text(attributes, "http.request.method").unwrap(), "GET");
    assert_eq!(
        text(attributes, "http.response.status_code").unwrap(),
        "200"
    );
    assert_eq!(span.status.unwrap().code, StatusCode::Unset as i32);

    let (_, span) = next(&mut received).await;
    assert_ne!(
        hex(&span.trace_id),
        UNSAMPLED_TRACE,
        "an unsampled trace was exported"
    );
    assert!(
        span.parent_span_id.is_empty(),
        "a trace the gateway started has no parent"
    );
    assert_eq!(
        text(&span.attributes, "spl.exchange_id").unwrap(),
        refused.headers["spl-exchange-id"].to_str().unwrap()
    );
    // Unrouted: named for what it is, with no service or operation of its own.
    assert_eq!(span.name, "exchange");
    assert_eq!(text(&span.attributes, "spl.service"), None);
    assert_eq!(text(&span.attributes, "spl.consumer").unwrap(), "dinkes");
    assert_eq!(
        text(&span.attributes, "spl.outcome").unwrap(),
        "no-operation"
    );
    assert_eq!(
        text(&span.attributes, "http.response.status_code").unwrap(),
        "404"
    );
    let status = span.status.unwrap();
    assert_eq!(
        (status.code, status.message.as_str()),
        (StatusCode::Error as i32, "no-operation")
    );

    // Nothing else arrives: the unsampled exchange was never sent.
    assert!(
        tokio::time::timeout(Duration::from_millis(2500), received.recv())
            .await
            .is_err(),
        "a third span was exported"
    );
    assert!(gateway
        .gateway
        .metrics_text()
        .contains("penghubung_otlp_spans_dropped_total 0\n"));
}

#[tokio::test]
async fn a_collector_that_is_down_costs_spans_not_exchanges() {
    let pki = TestPki::new();
    let (upstream, recorder) = recording_upstream(&pki).await;
    let down = closed_port();
    let endpoint = down.url.replace("https://", "http://");
    let extra = format!("\n[telemetry]\notlp_endpoint = \"{endpoint}\"\n");
    let gateway = Running::start(pki, &config_text(&upstream, "5s", &extra)).await;
    let client = Client::new(
        gateway.addr,
        &gateway.pki.ca,
        Some(&gateway.pki.dinkes),
        Version::HTTP_2,
    );
    for _ in 0..3 {
        let answer = client.get("/dinkes/faskes").await.unwrap();
        assert_eq!(answer.status, 200);
    }
    assert_eq!(recorder.count(), 3);
    // The batch goes out within a second and fails; its spans are counted as dropped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = gateway.gateway.metrics_text();
        if metrics.contains("penghubung_otlp_spans_dropped_total 3\n") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans not counted as dropped:\n{}",
            metrics
                .lines()
                .filter(|l| l.contains("otlp"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_are_exported_as_the_registry_shows_them() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let (endpoint, _, mut received) = collector().await;
    let extra =
        format!("\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nmetrics_interval = \"1s\"\n");
    let gateway = Running::start(pki, &config_text(&upstream, "5s", &extra)).await;
    let client = Client::new(
        gateway.addr,
        &gateway.pki.ca,
        Some(&gateway.pki.dinkes),
        Version::HTTP_11,
    );
    for _ in 0..2 {
        assert_eq!(client.get("/dinkes/faskes").await.unwrap().status, 200);
    }
    client
        .get("/dukcapil/penduduk/tidak-ada")
        .await
        .unwrap()
        .problem(404, "no-operation");

    // Exports every second; the first after the three exchanges holds them.
    let metrics = loop {
        let (service_name, metrics) = next(&mut received).await;
        assert_eq!(
            service_name, "spl.test",
            "service.name defaults to the gateway id"
        );
        let find = |name: &str| metrics.iter().find(|m| m.name == name).cloned();
        let Some(exchanges) = find("penghubung_exchanges") else {
            continue;
        };
        let Some(Data::Sum(sum)) = &exchanges.data else {
            panic!("exchanges is not a sum: {exchanges:?}");
        };
        let total: f64 = sum
            .data_points
            .iter()
            .map(|p| match p.value {
                Some(number_data_point::Value::AsDouble(v)) => v,
                _ => 0.0,
            })
            .sum();
        if total >= 3.0 {
            break metrics;
        }
    };
    let metric = |name: &str| {
        metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} not exported"))
    };

    let Some(Data::Sum(exchanges)) = &metric("penghubung_exchanges").data else {
        unreachable!()
    };
    assert!(exchanges.is_monotonic);
    assert_eq!(
        exchanges.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    let forwarded = exchanges
        .data_points
        .iter()
        .find(|p| text(&p.attributes, "service").as_deref() == Some("dinkes-faskes"))
        .expect("the forwarded exchanges' data point");
    assert_eq!(text(&forwarded.attributes, "consumer").unwrap(), "dinkes");
    assert_eq!(text(&forwarded.attributes, "outcome").unwrap(), "forwarded");
    assert_eq!(
        forwarded.value,
        Some(number_data_point::Value::AsDouble(2.0))
    );
    assert!(forwarded.start_time_unix_nano > 0);
    assert!(forwarded.start_time_unix_nano <= forwarded.time_unix_nano);
    assert_eq!(text(&forwarded.attributes, "status").unwrap(), "200");
    let refused = exchanges
        .data_points
        .iter()
        .find(|p| text(&p.attributes, "outcome").as_deref() == Some("no-operation"))
        .expect("the refusal's data point");
    assert_eq!(text(&refused.attributes, "status").unwrap(), "404");

    let Some(Data::Histogram(durations)) = &metric("penghubung_request_duration_seconds").data
    else {
        panic!("request_duration_seconds is not a histogram");
    };
    let point = durations
        .data_points
        .iter()
        .find(|p| text(&p.attributes, "service").as_deref() == Some("dinkes-faskes"))
        .expect("the forwarded exchanges' durations");
    assert_eq!(point.count, 2);
    assert!(point.sum.unwrap() > 0.0);
    assert_eq!(
        point.explicit_bounds.len(),
        17,
        "100 µs doubling, 17 bounds"
    );
    assert_eq!(point.explicit_bounds[0], 0.000_1);
    assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
    assert_eq!(
        point.bucket_counts.iter().sum::<u64>(),
        2,
        "per-bucket, not cumulative"
    );

    let Some(Data::Gauge(up)) = &metric("penghubung_upstream_up").data else {
        panic!("upstream_up is not a gauge");
    };
    assert!(up
        .data_points
        .iter()
        .all(|p| p.value == Some(number_data_point::Value::AsDouble(1.0))));
    assert_eq!(up.data_points.len(), 2, "one per service's upstream");
    metric("penghubung_otlp_spans_dropped");
    metric("penghubung_certificate_expiry_seconds");
}

#[tokio::test]
async fn a_reload_moves_the_export_to_the_new_collector() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let (first, mut first_spans, _) = collector().await;
    let (second, mut second_spans, _) = collector().await;
    let config = |endpoint: &str| {
        let extra = format!("\n[telemetry]\notlp_endpoint = \"{endpoint}\"\n");
        config_text(&upstream, "5s", &extra)
    };
    let gateway = Running::start(pki, &config(&first)).await;
    let client = Client::new(
        gateway.addr,
        &gateway.pki.ca,
        Some(&gateway.pki.dinkes),
        Version::HTTP_11,
    );
    let before = client.get("/dinkes/faskes").await.unwrap();
    let (_, span) = next(&mut first_spans).await;
    assert_eq!(
        text(&span.attributes, "spl.exchange_id").unwrap(),
        before.headers["spl-exchange-id"].to_str().unwrap()
    );

    std::fs::write(gateway.pki.path().join("test.toml"), config(&second)).unwrap();
    gateway.gateway.reload("test").await.unwrap();
    let after = client.get("/dinkes/faskes").await.unwrap();
    let (_, span) = next(&mut second_spans).await;
    assert_eq!(
        text(&span.attributes, "spl.exchange_id").unwrap(),
        after.headers["spl-exchange-id"].to_str().unwrap()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), first_spans.recv())
            .await
            .is_err(),
        "the old collector still receives spans"
    );
}

#[tokio::test]
async fn at_shutdown_the_last_spans_and_metrics_are_sent() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let (endpoint, mut spans, mut metrics) = collector().await;
    // The default metrics_interval (60 s) does not come round in this test.
    let extra = format!("\n[telemetry]\notlp_endpoint = \"{endpoint}\"\n");
    let mut gateway = Running::start(pki, &config_text(&upstream, "5s", &extra)).await;
    let client = Client::new(
        gateway.addr,
        &gateway.pki.ca,
        Some(&gateway.pki.dinkes),
        Version::HTTP_11,
    );
    let answer = client.get("/dinkes/faskes").await.unwrap();
    assert_eq!(answer.status, 200);

    gateway.shutdown();
    (&mut gateway.task).await.unwrap().unwrap();
    // Once serve has returned, both have arrived: nothing is waited for here.
    let (_, span) = spans
        .try_recv()
        .expect("the span was not sent by the end of serve");
    assert_eq!(
        text(&span.attributes, "spl.exchange_id").unwrap(),
        answer.headers["spl-exchange-id"].to_str().unwrap()
    );
    let (_, last) = metrics
        .try_recv()
        .expect("the metrics were not sent at shutdown");
    let exchanges = last
        .iter()
        .find(|m| m.name == "penghubung_exchanges")
        .expect("exchanges exported");
    let Some(Data::Sum(sum)) = &exchanges.data else {
        panic!("not a sum")
    };
    assert_eq!(
        sum.data_points[0].value,
        Some(number_data_point::Value::AsDouble(1.0))
    );
}
