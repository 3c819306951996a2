//! gRPC pass-through on the main listener: agencies call a gRPC upstream (a tonic server over
//! mTLS) through the gateway with a tonic client; methods are authorized one by one, refusals
//! are gRPC statuses, the upstream's statuses and trailers arrive intact, a server stream flows
//! message by message, and every call is audited with its gRPC status and body digests.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use penghubung::audit::{self, Record};
use penghubung::pki::Issued;
use support::Edit;
use support::{config_text, upstream_tls, Running, TestPki};
use tokio::net::TcpListener;
use tonic::codegen::Service;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// A tonic health service over mTLS (HTTP/2), as a PD's or the national SPLP's gRPC upstream.
async fn grpc_upstream(pki: &TestPki) -> (String, HealthReporter) {
    let (reporter, health) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(upstream_tls(pki));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (acceptor, health) = (acceptor.clone(), health.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |request: Request<Incoming>| {
                    let mut health = health.clone();
                    async move {
                        let response = health.call(request.map(tonic::body::Body::new)).await;
                        Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (format!("https://{addr}"), reporter)
}

const SERVICE: &str = r#"
[[services]]
id = "kesehatan-grpc"
owner = "dukcapil"
classification = "terbatas"
protocol = "grpc"
prefix = "/grpc.health.v1.Health"
upstreams = ["UPSTREAM"]
upstream_ca = "ca.crt"

  [[services.operations]]
  id = "check"
  path = "/grpc.health.v1.Health/Check"

  [[services.operations]]
  id = "watch"
  path = "/grpc.health.v1.Health/Watch"

[[agreements]]
id = "PKS-GRPC-1"
consumer = "dinkes"
service = "kesehatan-grpc"
operations = ["check", "watch"]
purpose = "Pemantauan layanan"
valid_from = 2020-01-01
valid_until = 2099-12-31

[[agreements]]
id = "PKS-GRPC-2"
consumer = "dukcapil"
service = "kesehatan-grpc"
operations = ["check"]
purpose = "Pemantauan layanan"
valid_from = 2020-01-01
valid_until = 2099-12-31

[audit]
"#;

async fn client(gateway: &Running, who: &Issued) -> HealthClient<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(gateway.pki.ca.cert_pem()))
        .identity(Identity::from_pem(&who.cert_pem, &who.key_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", gateway.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

fn problem(status: &tonic::Status) -> &str {
    status
        .metadata()
        .get("spl-problem")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

fn exchanges(pki: &TestPki) -> Vec<Record> {
    let mut all = Vec::new();
    audit::walk(&pki.path().join("data/audit"), |r, _| {
        if r.kind == "exchange" {
            all.push(r.clone());
        }
        Ok(())
    })
    .unwrap();
    all
}

#[tokio::test]
async fn grpc_calls_pass_through_authorized_per_method_and_audited() {
    let pki = TestPki::new();
    let (upstream, reporter) = grpc_upstream(&pki).await;
    reporter
        .set_service_status("kependudukan", ServingStatus::Serving)
        .await;
    let text = config_text(
        "https://127.0.0.1:9",
        "5s",
        &SERVICE.edit("UPSTREAM", &upstream),
    );
    let gateway = Running::start(pki, &text).await;

    // Unary, allowed: the upstream's answer.
    let mut health = client(&gateway, &gateway.pki.dinkes).await;
    let answer = health
        .check(HealthCheckRequest {
            service: "kependudukan".into(),
        })
        .await
        .unwrap();
    assert_eq!(answer.get_ref().status, ServingStatus::Serving as i32);
    assert!(answer.metadata().get("spl-exchange-id").is_some());
    let nonce = audit::Nonce::parse(
        answer
            .metadata()
            .get("spl-commitment-nonce")
            .unwrap()
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let answered = prost::Message::encode_to_vec(answer.get_ref());

    // The upstream's own error status and message arrive intact (trailers preserved).
    let missing = health
        .check(HealthCheckRequest {
            service: "tidak-ada".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        problem(&missing),
        "",
        "an upstream status was taken for a refusal"
    );

    // Authorization per method: Dukcapil's agreement covers Check, not Watch.
    let mut other = client(&gateway, &gateway.pki.dukcapil).await;
    assert!(other
        .check(HealthCheckRequest {
            service: "kependudukan".into(),
        })
        .await
        .is_ok());
    let refused = other
        .watch(HealthCheckRequest {
            service: "kependudukan".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), problem(&refused)),
        (Code::PermissionDenied, "operation-not-covered")
    );
    let stranger = client(&gateway, &gateway.pki.stranger)
        .await
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (stranger.code(), problem(&stranger)),
        (Code::PermissionDenied, "unknown-agency")
    );

    // A gRPC service takes only gRPC calls.
    let http = support::Client::new(
        gateway.addr,
        &gateway.pki.ca,
        Some(&gateway.pki.dinkes),
        http::Version::HTTP_2,
    )
    .send(
        Request::post("/grpc.health.v1.Health/Check")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await
    .unwrap();
    http.problem(415, "unsupported-media-type");

    // Server streaming flows message by message, while the stream is open.
    let mut stream = health
        .watch(HealthCheckRequest {
            service: "kependudukan".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    reporter
        .set_service_status("kependudukan", ServingStatus::NotServing)
        .await;
    let second = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the second message of the stream was held back")
        .unwrap()
        .unwrap();
    assert_eq!(second.status, ServingStatus::NotServing as i32);
    drop(stream);
    drop(health);

    // Every call is recorded with its gRPC status; the cancelled stream too.
    let mut records = Vec::new();
    for _ in 0..50 {
        records = exchanges(&gateway.pki);
        if records.len() >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen: Vec<(String, Option<String>, Option<u32>)> = records
        .iter()
        .map(|r| (r.outcome.clone(), r.operation.clone(), r.grpc_status))
        .collect();
    let op = |s: &str| Some(s.to_owned());
    assert_eq!(
        seen,
        [
            ("forwarded".to_owned(), op("check"), Some(0)),
            ("forwarded".to_owned(), op("check"), Some(5)),
            ("forwarded".to_owned(), op("check"), Some(0)),
            ("operation-not-covered".to_owned(), op("watch"), Some(7)),
            ("unknown-agency".to_owned(), None, Some(7)),
            ("unsupported-media-type".to_owned(), op("check"), None),
            ("caller-cancelled".to_owned(), op("watch"), None),
        ]
    );
    let first = &records[0];
    assert_eq!(first.path_template.as_deref(), Some("/Check"));
    // A call commits to its messages' bytes (what the gRPC client sees), under the nonce the
    // caller got in its response metadata.
    let asked = prost::Message::encode_to_vec(&HealthCheckRequest {
        service: "kependudukan".into(),
    });
    assert_eq!(first.request, Some(audit::commit(&nonce, false, &asked)));
    assert_eq!(
        first.response,
        Some(audit::commit(&nonce, false, &answered))
    );
    // Two messages of two bytes each reached the caller before it went away.
    assert_eq!(records[6].response.as_ref().unwrap().length, 2 * 2);
}
