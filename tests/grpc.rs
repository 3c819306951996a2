//! The gRPC front over a real mTLS socket, with tonic clients: `Exchange.Call` through the
//! pipeline (forwarded, refused with the mapped codes, audited), `Catalog`, `Audit` receipts
//! that verify offline, standard health checking and server reflection.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use penghubung::audit;
use penghubung::config::load_str;
use penghubung::grpc::proto;
use penghubung::grpc::proto::audit_client::AuditClient;
use penghubung::grpc::proto::catalog_client::CatalogClient;
use penghubung::grpc::proto::exchange_client::ExchangeClient;
use penghubung::pki::Issued;
use penghubung::runtime::Gateway;
use support::Edit;
use support::{closed_port, config_text, recording_upstream, Recorder, TestPki};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

struct Front {
    addr: std::net::SocketAddr,
    gateway: Arc<Gateway>,
    recorder: Recorder,
    pki: TestPki,
    /// The configuration file the gateway was loaded from (and reloads).
    file: std::path::PathBuf,
    text: String,
}

/// The test configuration, `verifikasi` with its request schema, an audit log, and the gRPC
/// front on a free port.
async fn start(upstream: Option<&str>) -> Front {
    start_with(upstream, "").await
}

async fn start_with(upstream: Option<&str>, extra: &str) -> Front {
    let pki = TestPki::new();
    let (recording, recorder) = recording_upstream(&pki).await;
    let upstream = upstream.map_or(recording, str::to_owned);
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    std::fs::write(
        pki.path().join("audit.key"),
        penghubung::pki::ed25519_key_pem().unwrap(),
    )
    .unwrap();
    let audit =
        format!("\n[audit]\nsigning_key = \"audit.key\"\ntree_head_interval = \"100ms\"\n{extra}");
    let text = config_text(&upstream, "5s", &audit)
        .edit_once(
            "  path = \"/verifikasi\"",
            "  path = \"/verifikasi\"\n  request_schema = \"dukcapil/verifikasi-request.v1.json\"",
        )
        .edit_once(
            "max_request_body = \"1KiB\"",
            &format!(
                "max_request_body = \"1KiB\"\nschemas_dir = \"{}\"",
                schemas.display()
            ),
        );
    let file = pki.path().join("g.toml");
    std::fs::write(&file, &text).unwrap();
    let snapshot = load_str(&text, &file, pki.path()).unwrap_or_else(|e| panic!("{e}"));
    let gateway = Arc::new(Gateway::new(Arc::new(snapshot)).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(penghubung::server::serve_grpc(
        listener,
        gateway.clone(),
        std::future::pending(),
    ));
    Front {
        addr,
        gateway,
        recorder,
        pki,
        file,
        text,
    }
}

impl Front {
    /// Verifies a receipt offline with the gateway's audit public key; returns its record.
    fn verify(&self, receipt: &audit::Receipt) -> audit::Record {
        let snapshot = self.gateway.snapshot();
        let signer = snapshot.audit.as_ref().unwrap().signer.as_ref().unwrap();
        let key = audit::unhex(&signer.public_key_hex()).unwrap();
        audit::verify_receipt(receipt, &key).unwrap()
    }

    async fn channel(&self, identity: &Issued) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.pki.ca.cert_pem()))
            .identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem))
            .domain_name("localhost");
        Channel::from_shared(format!("https://{}", self.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn call(
        &self,
        identity: &Issued,
        call: proto::CallRequest,
    ) -> Result<proto::CallResponse, tonic::Status> {
        let mut client = ExchangeClient::new(self.channel(identity).await);
        client.call(call).await.map(tonic::Response::into_inner)
    }
}

fn penduduk(nik: &str) -> proto::CallRequest {
    proto::CallRequest {
        service: "dukcapil-penduduk".into(),
        operation: "get-penduduk".into(),
        path_params: HashMap::from([("nik".to_owned(), nik.to_owned())]),
        ..Default::default()
    }
}

fn problem(status: &tonic::Status) -> &str {
    status
        .metadata()
        .get("spl-problem")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

#[tokio::test]
async fn exchange_call_runs_the_pipeline_and_refusals_map_to_codes() {
    let f = start(None).await;
    let answer = f
        .call(
            &f.pki.dinkes,
            proto::CallRequest {
                query: "ket=uji".into(),
                ..penduduk("7201010101010001")
            },
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body["path"], "/penduduk/7201010101010001?ket=uji");
    assert!(!answer.exchange_id.is_empty());
    assert!(answer.headers.iter().any(|h| h.name == "content-type"));
    let seen = f.recorder.requests().pop().unwrap();
    assert_eq!(seen.headers["spl-consumer"], "dinkes");
    assert_eq!(seen.headers["spl-agreement"], "PKS-TEST-1");

    // Refusals, each with its code and problem slug; none reaches the upstream.
    let before = f.recorder.count();
    let cases: Vec<(&Issued, proto::CallRequest, Code, &str)> = vec![
        // Dukcapil holds no agreement for the terbatas service.
        (
            &f.pki.dukcapil,
            penduduk("7201010101010001"),
            Code::PermissionDenied,
            "no-agreement",
        ),
        (
            &f.pki.stranger,
            penduduk("7201010101010001"),
            Code::PermissionDenied,
            "unknown-agency",
        ),
        (
            &f.pki.dinkes,
            proto::CallRequest {
                service: "dukcapil-penduduk".into(),
                operation: "verifikasi".into(),
                body: br#"{"nik": "7208014001900001"}"#.to_vec(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "request-schema-violation",
        ),
        (
            &f.pki.dinkes,
            proto::CallRequest {
                service: "dukcapil-penduduk".into(),
                operation: "get-penduduk".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "invalid-parameter",
        ),
        (
            &f.pki.dinkes,
            penduduk("a/../../x"),
            Code::InvalidArgument,
            "malformed-path",
        ),
        (
            &f.pki.dinkes,
            proto::CallRequest {
                service: "tidak-ada".into(),
                operation: "x".into(),
                ..Default::default()
            },
            Code::NotFound,
            "no-route",
        ),
        (
            &f.pki.dinkes,
            proto::CallRequest {
                service: "dukcapil-penduduk".into(),
                operation: "tidak-ada".into(),
                ..Default::default()
            },
            Code::NotFound,
            "no-operation",
        ),
    ];
    for (who, call, code, slug) in cases {
        let what = format!("{}/{} {:?}", call.service, call.operation, call.path_params);
        let status = f.call(who, call).await.expect_err(&what);
        assert_eq!(
            (status.code(), problem(&status)),
            (code, slug),
            "{what}: {status:?}"
        );
        assert!(status.metadata().get("spl-exchange-id").is_some(), "{what}");
    }
    assert_eq!(
        f.recorder.count(),
        before,
        "a refused call reached the upstream"
    );

    // Every call, forwarded or refused, is in the audit log with its outcome.
    let mut outcomes = Vec::new();
    audit::walk(&f.pki.path().join("data/audit"), |r, _| {
        if r.kind == "exchange" {
            outcomes.push(r.outcome.clone());
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        outcomes,
        [
            "forwarded",
            "no-agreement",
            "unknown-agency",
            "request-schema-violation",
            "invalid-parameter",
            "malformed-path",
            "no-route",
            "no-operation"
        ]
    );
}

#[tokio::test]
async fn a_national_peer_calls_a_regency_service_under_its_agreement() {
    let peers = r#"
[[peers]]
id = "splp-nasional"
kind = "national"
clearance = "terbatas"
identities = ["splp.test"]

[[peers]]
id = "spl-sulteng"
kind = "provincial"
clearance = "terbatas"
identities = ["spl.sulteng.test"]

[[agreements]]
id = "PKS-NASIONAL-1"
consumer = "splp-nasional"
service = "dukcapil-penduduk"
operations = ["get-penduduk"]
purpose = "Integrasi SPLP nasional"
valid_from = 2020-01-01
valid_until = 2099-12-31
"#;
    let f = start_with(None, peers).await;
    let national = f.pki.ca.issue_client("splp.test", None).unwrap();
    let answer = f
        .call(&national, penduduk("7201010101010001"))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let seen = f.recorder.requests().pop().unwrap();
    assert_eq!(seen.headers["spl-consumer"], "splp-nasional");
    assert_eq!(seen.headers["spl-agreement"], "PKS-NASIONAL-1");
    // Its agreement covers one operation; the provincial peer holds none.
    let verify = proto::CallRequest {
        service: "dukcapil-penduduk".into(),
        operation: "verifikasi".into(),
        body: br#"{"nik": "7208014101900001", "nama": "WARGA"}"#.to_vec(),
        ..Default::default()
    };
    let status = f.call(&national, verify).await.unwrap_err();
    assert_eq!(
        (status.code(), problem(&status)),
        (Code::PermissionDenied, "operation-not-covered")
    );
    let provincial = f.pki.ca.issue_client("spl.sulteng.test", None).unwrap();
    let status = f
        .call(&provincial, penduduk("7201010101010001"))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), problem(&status)),
        (Code::PermissionDenied, "no-agreement")
    );
    // Terbuka services are open to peers as to agencies.
    let open = proto::CallRequest {
        service: "dinkes-faskes".into(),
        operation: "list-faskes".into(),
        ..Default::default()
    };
    assert_eq!(f.call(&provincial, open).await.unwrap().status, 200);
}

#[tokio::test]
async fn an_unreachable_upstream_is_unavailable() {
    let down = closed_port();
    let f = start(Some(&down.url)).await;
    let status = f
        .call(&f.pki.dinkes, penduduk("7201010101010001"))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), problem(&status)),
        (Code::Unavailable, "upstream-unavailable")
    );
}

#[tokio::test]
async fn the_catalog_shows_what_the_caller_may_see() {
    let f = start(None).await;
    let mut catalog = CatalogClient::new(f.channel(&f.pki.dinkes).await);
    let list = catalog
        .list_services(proto::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (list.gateway.as_str(), list.consumer.as_str()),
        ("spl.test", "dinkes")
    );
    let ids: Vec<&str> = list.services.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["dukcapil-penduduk", "dinkes-faskes"]);
    let penduduk = &list.services[0];
    assert_eq!(penduduk.classification, "terbatas");
    let get = &penduduk.operations[0];
    assert_eq!(get.path, "/dukcapil/penduduk/penduduk/{nik}");
    assert_eq!(get.agreements[0].id, "PKS-TEST-1");
    assert!(get.agreements[0].in_force);
    assert_eq!(
        penduduk.operations[1].request_schema,
        "dukcapil/verifikasi-request.v1.json"
    );

    let one = catalog
        .get_service(proto::GetServiceRequest {
            service: "dukcapil-penduduk".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let openapi: serde_json::Value = serde_json::from_slice(&one.openapi).unwrap();
    assert_eq!(openapi["openapi"], "3.1.0");
    let missing = catalog
        .get_service(proto::GetServiceRequest {
            service: "tidak-ada".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // An identity that names no agency sees nothing.
    let mut stranger = CatalogClient::new(f.channel(&f.pki.stranger).await);
    let refused = stranger
        .list_services(proto::ListServicesRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), problem(&refused)),
        (Code::PermissionDenied, "unknown-agency")
    );
}

/// Polls `Audit.GetReceipt` until a signed tree head covers the exchange.
async fn covered_receipt(client: &mut AuditClient<Channel>, exchange_id: &str) -> proto::Receipt {
    for _ in 0..100 {
        match receipt_of(client, exchange_id).await {
            Ok(r) => return r.into_inner(),
            Err(s) if s.code() == Code::FailedPrecondition => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    panic!("no tree head covered exchange {exchange_id}")
}

/// A long-lived HTTP/2 connection outlives reloads: the gRPC front must act as the caller the
/// configuration in force says it is, never as whoever holds its old agency index.
#[tokio::test]
async fn an_open_grpc_channel_follows_reloads_as_the_same_agency() {
    let f = start(None).await;
    let dinkes = f.channel(&f.pki.dinkes).await;
    let mut catalog = CatalogClient::new(dinkes.clone());
    let mut audit = AuditClient::new(dinkes.clone());
    let mut exchange = ExchangeClient::new(dinkes.clone());
    let consumer = |list: proto::ListServicesResponse| list.consumer;
    let before = catalog
        .list_services(proto::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(consumer(before), "dinkes");
    // Dinkes' own exchange, and one of Dukcapil's on Dukcapil's own service (refused, but
    // recorded with consumer and owner `dukcapil`): none of Dinkes' business.
    let own = exchange
        .call(penduduk("7201010101010001"))
        .await
        .unwrap()
        .into_inner();
    let theirs = f
        .call(&f.pki.dukcapil, penduduk("7201010101010002"))
        .await
        .unwrap_err();
    let theirs = theirs
        .metadata()
        .get("spl-exchange-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    covered_receipt(&mut audit, &own.exchange_id).await;

    // Reload with only the order of the agencies changed: Dinkes is still Dinkes.
    let dinkes_block = f.text.find("[[agencies]]\ncode = \"dinkes\"").unwrap();
    let dukcapil_block = f.text.find("[[agencies]]\ncode = \"dukcapil\"").unwrap();
    let services = f.text.find("[[services]]").unwrap();
    let reordered = format!(
        "{}{}{}{}",
        &f.text[..dinkes_block],
        &f.text[dukcapil_block..services],
        &f.text[dinkes_block..dukcapil_block],
        &f.text[services..]
    );
    std::fs::write(&f.file, &reordered).unwrap();
    f.gateway.reload("test").await.unwrap();
    assert_eq!(f.gateway.snapshot().agencies[0].code, "dukcapil");
    let after = catalog
        .list_services(proto::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(consumer(after), "dinkes");
    let receipt = covered_receipt(&mut audit, &own.exchange_id).await;
    let record: audit::Record = serde_json::from_str(&receipt.record).unwrap();
    assert_eq!(record.consumer.as_deref(), Some("dinkes"));
    for _ in 0..100 {
        match receipt_of(&mut audit, &theirs).await {
            Err(s) if s.code() == Code::FailedPrecondition => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => {
                assert_eq!(s.code(), Code::NotFound, "{s:?}");
                break;
            }
            Ok(r) => panic!("Dinkes was given Dukcapil's receipt: {:?}", r.into_inner()),
        }
    }
    let answer = exchange
        .call(penduduk("7201010101010001"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status, 200);
    assert_eq!(
        f.recorder.requests().pop().unwrap().headers["spl-consumer"],
        "dinkes"
    );

    // Reload with Dinkes gone (its agreement and service with it): the same channel is
    // refused everywhere, and nothing panics.
    let at = |needle: &str| reordered.find(needle).unwrap();
    let without = format!(
        "{}{}{}",
        &reordered[..at("[[agencies]]\ncode = \"dinkes\"")],
        &reordered[at("[[services]]")..at("[[services]]\nid = \"dinkes-faskes\"")],
        &reordered[at("\n[audit]")..]
    );
    std::fs::write(&f.file, &without).unwrap();
    f.gateway.reload("test").await.unwrap();
    assert_eq!(f.gateway.snapshot().agencies.len(), 1);
    let refused = catalog
        .list_services(proto::ListServicesRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), problem(&refused)),
        (Code::PermissionDenied, "unknown-agency")
    );
    let refused = receipt_of(&mut audit, &own.exchange_id).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = audit
        .get_tree_head(proto::GetTreeHeadRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = exchange
        .call(penduduk("7201010101010001"))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), problem(&refused)),
        (Code::PermissionDenied, "unknown-agency")
    );
}

async fn receipt_of(
    client: &mut AuditClient<Channel>,
    exchange_id: &str,
) -> Result<tonic::Response<proto::Receipt>, tonic::Status> {
    client
        .get_receipt(proto::GetReceiptRequest {
            exchange_id: exchange_id.into(),
        })
        .await
}

#[tokio::test]
async fn receipts_from_the_audit_service_verify_offline() {
    let f = start(None).await;
    let answer = f
        .call(&f.pki.dinkes, penduduk("7201010101010001"))
        .await
        .unwrap();
    let mut client = AuditClient::new(f.channel(&f.pki.dinkes).await);
    // A signed tree head covers the exchange within tree_head_interval (100 ms).
    let mut receipt = None;
    for _ in 0..100 {
        match receipt_of(&mut client, &answer.exchange_id).await {
            Ok(r) => {
                receipt = Some(r.into_inner());
                break;
            }
            Err(s) if s.code() == Code::FailedPrecondition => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    let receipt = receipt.expect("no tree head covered the exchange");
    let parsed: audit::Receipt = serde_json::from_str(&receipt.json).unwrap();
    let record = f.verify(&parsed);
    assert_eq!(
        record.exchange_id.as_deref(),
        Some(answer.exchange_id.as_str())
    );
    assert_eq!(receipt.record, parsed.record);

    // Dukcapil owns the service, so it may have the receipt; a stranger may not, and learns
    // nothing about the exchange.
    let mut owner = AuditClient::new(f.channel(&f.pki.dukcapil).await);
    assert!(receipt_of(&mut owner, &answer.exchange_id).await.is_ok());
    let mut stranger = AuditClient::new(f.channel(&f.pki.stranger).await);
    let refused = receipt_of(&mut stranger, &answer.exchange_id)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let unknown = receipt_of(&mut client, "01a20b7e-0000-7000-8000-000000000000")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let head = client
        .get_tree_head(proto::GetTreeHeadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(head.tree_size >= receipt.tree_size);
    assert_eq!(head.root.len(), 64);
    let proof = client
        .get_consistency_proof(proto::GetConsistencyProofRequest {
            old_size: receipt.tree_size,
            new_size: head.tree_size,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(proof.new_root, head.root);
    let bad = client
        .get_consistency_proof(proto::GetConsistencyProofRequest {
            old_size: head.tree_size,
            new_size: receipt.tree_size.saturating_sub(1),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn stock_clients_find_health_and_reflection() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let f = start(None).await;
    let channel = f.channel(&f.pki.dinkes).await;
    let mut health = HealthClient::new(channel.clone());
    for service in [
        "",
        "penghubung.v1.Exchange",
        "penghubung.v1.Catalog",
        "penghubung.v1.Audit",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.status, 1, "{service} is not SERVING");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream_once(request))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "penghubung.v1.Exchange",
        "penghubung.v1.Catalog",
        "penghubung.v1.Audit",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }
}

#[tokio::test]
async fn a_caller_without_a_certificate_gets_no_grpc_at_all() {
    let f = start(None).await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(f.pki.ca.cert_pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", f.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await;
    let refused = match channel {
        Err(_) => true,
        Ok(channel) => ExchangeClient::new(channel)
            .call(penduduk("7201010101010001"))
            .await
            .is_err(),
    };
    assert!(refused);
    assert_eq!(f.recorder.count(), 0);
}

/// A one-message request stream.
fn tokio_stream_once<T: Send + Unpin + 'static>(
    item: T,
) -> impl tonic::IntoStreamingRequest<Message = T> {
    futures_once::Once(Some(item))
}

mod futures_once {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct Once<T>(pub Option<T>);

    impl<T: Unpin> tonic::codegen::tokio_stream::Stream for Once<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
            Poll::Ready(self.0.take())
        }
    }
}

/// Runs `examples/grpc/call.py` (Python grpcio, stubs generated from proto/ by grpcio-tools)
/// against the front, as `identity`; returns its exit success and parsed output.
async fn python(f: &Front, identity: &Issued, args: &[&str]) -> (bool, serde_json::Value) {
    let dir = f.pki.path();
    std::fs::write(dir.join("py-ca.crt"), f.pki.ca.cert_pem()).unwrap();
    std::fs::write(dir.join("py.crt"), &identity.cert_pem).unwrap();
    std::fs::write(dir.join("py.key"), &identity.key_pem).unwrap();
    let mut command = std::process::Command::new("python3");
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grpc/call.py"))
        .args(["--addr", &f.addr.to_string(), "--ca"])
        .arg(dir.join("py-ca.crt"))
        .arg("--cert")
        .arg(dir.join("py.crt"))
        .arg("--key")
        .arg(dir.join("py.key"))
        .args(args);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "Python grpcio is needed: python3 -m pip install grpcio grpcio-tools\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: stdout {stdout}\nstderr {stderr}"));
    (out.status.success(), doc)
}

#[tokio::test]
async fn a_client_nobody_here_wrote_calls_exchange_catalog_and_audit() {
    let peers = r#"
[[peers]]
id = "splp-nasional"
kind = "national"
clearance = "terbatas"
identities = ["splp.test"]

[[agreements]]
id = "PKS-NASIONAL-1"
consumer = "splp-nasional"
service = "dukcapil-penduduk"
purpose = "Integrasi SPLP nasional"
valid_from = 2020-01-01
valid_until = 2099-12-31
"#;
    let f = start_with(None, peers).await;
    let national = f.pki.ca.issue_client("splp.test", None).unwrap();
    let (ok, answer) = python(
        &f,
        &national,
        &[
            "call",
            "dukcapil-penduduk",
            "get-penduduk",
            "--param",
            "nik=7201010101010001",
        ],
    )
    .await;
    assert!(ok, "{answer}");
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["body"]["path"], "/penduduk/7201010101010001");
    let id = answer["exchange_id"].as_str().unwrap().to_owned();

    let (ok, refused) = python(
        &f,
        &national,
        &[
            "call",
            "dukcapil-penduduk",
            "verifikasi",
            "--body",
            r#"{"nik": "1"}"#,
        ],
    )
    .await;
    assert!(!ok);
    assert_eq!(refused["code"], "INVALID_ARGUMENT", "{refused}");
    assert_eq!(refused["problem"], "request-schema-violation");

    let (ok, catalog) = python(&f, &national, &["catalog"]).await;
    assert!(ok, "{catalog}");
    assert_eq!(catalog["consumer"], "splp-nasional");
    assert_eq!(catalog["services"][0]["id"], "dukcapil-penduduk");

    let (ok, receipt) = python(&f, &national, &["receipt", &id]).await;
    assert!(ok, "{receipt}");
    let receipt: audit::Receipt = serde_json::from_value(receipt).unwrap();
    let record = f.verify(&receipt);
    assert_eq!(record.exchange_id.as_deref(), Some(id.as_str()));
    assert_eq!(record.consumer.as_deref(), Some("splp-nasional"));
}

/// An `Exchange.Call` record carries the gRPC status its caller got, as the audit format
/// promises: 0 for an answered call, the refusal's code otherwise — also for a call naming no
/// configured service.
#[tokio::test]
async fn exchange_call_records_carry_the_grpc_status() {
    let f = start(None).await;
    let ok = f
        .call(&f.pki.dinkes, penduduk("7201010101010001"))
        .await
        .unwrap();
    let denied = f
        .call(&f.pki.dukcapil, penduduk("7201010101010001"))
        .await
        .unwrap_err();
    let unknown = f
        .call(
            &f.pki.dinkes,
            proto::CallRequest {
                service: "tidak-ada".into(),
                operation: "x".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    let id = |s: &tonic::Status| {
        s.metadata()
            .get("spl-exchange-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let dir = f.pki.path().join("data/audit");
    let status_of = |exchange: &str| {
        for _ in 0..100 {
            let found = audit::select(&dir, |r| r.exchange_id.as_deref() == Some(exchange))
                .unwrap_or_default();
            if let Some(line) = found.first() {
                return serde_json::from_str::<audit::Record>(line)
                    .unwrap()
                    .grpc_status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("exchange {exchange} not recorded");
    };
    assert_eq!(status_of(&ok.exchange_id), Some(0));
    assert_eq!(status_of(&id(&denied)), Some(Code::PermissionDenied as u32));
    assert_eq!(status_of(&id(&unknown)), Some(Code::NotFound as u32));
}
