//! The index beside the audit log: receipts and consistency proofs from it are exactly what a
//! full read of the log gives, across segments, after a restart (the index rebuilt) and for a
//! reader with no writer (the CLI); a half-written line at the end of the active segment is
//! never read; the gRPC Audit service answers from it, within a per-agency rate.

mod support;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use penghubung::audit::{self, AuditLog, Lookup, LookupError, Record, WriterOptions};
use penghubung::config::Durability;
use penghubung::grpc::proto;
use penghubung::grpc::proto::audit_client::AuditClient;
use penghubung::grpc::proto::exchange_client::ExchangeClient;
use penghubung::runtime::Gateway;
use support::{config_text, recording_upstream, TestPki};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

fn options(signer: Arc<audit::Signer>) -> WriterOptions {
    WriterOptions {
        durability: Durability::Interval,
        // About 20 records a segment: the log spans many.
        ..support::audit_options(signer, 4 << 10, 7)
    }
}

use support::audit_signer as signer;

fn exchange(i: usize) -> Record {
    Record {
        time: audit::timestamp(1_767_225_600_000 + i as i64),
        gateway: "spl.test".into(),
        kind: "exchange".into(),
        outcome: "forwarded".into(),
        exchange_id: Some(uuid_for(i)),
        consumer: Some("dinkes".into()),
        ..Record::default()
    }
}

fn uuid_for(i: usize) -> String {
    format!("01a20000-0000-7000-8000-{i:012x}")
}

/// Appends `n` exchange records, five at a time (small batches, so that segments rotate).
async fn fill(log: &AuditLog, from: usize, n: usize) {
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(5) {
        let mut tasks = Vec::new();
        for &i in chunk {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                log.append(exchange(i)).await.unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}

fn head_sizes(dir: &Path) -> Vec<u64> {
    audit::select(dir, |r| r.kind == "tree-head")
        .unwrap()
        .iter()
        .map(|l| {
            serde_json::from_str::<Record>(l)
                .unwrap()
                .tree_size
                .unwrap()
        })
        .collect()
}

/// Waits (bounded) until the index has published every record of the log (the writer
/// publishes at most every 50 ms while records come, and when it is idle).
async fn published(lookup: &Lookup, dir: &Path) {
    let records = audit::select(dir, |_| true).unwrap().len() as u64;
    for _ in 0..200 {
        if lookup.indexed() == records {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the index published {} of {records} records",
        lookup.indexed()
    );
}

/// Every receipt and consistency proof from `lookup` equals the full read's.
fn same_as_full_read(lookup: &Lookup, dir: &Path, exchanges: usize, key: &[u8]) {
    let mut covered = 0;
    // Every receipt from the index verifies; every fifth is compared with a full read.
    for i in 0..exchanges {
        let id = uuid_for(i);
        if i % 5 != 0 {
            if let Ok(indexed) = lookup.receipt(&id) {
                audit::verify_receipt(&indexed, key).unwrap();
            }
            continue;
        }
        match (lookup.receipt(&id), audit::receipt(dir, &id)) {
            (Ok(indexed), Ok(read)) => {
                assert_eq!(indexed, read, "exchange {i}");
                audit::verify_receipt(&indexed, key).unwrap();
                covered += 1;
            }
            (Err(LookupError::NotCovered(_)), Err(e)) => {
                assert!(e.contains("no signed tree head"), "{e}")
            }
            (indexed, read) => panic!("exchange {i}: {indexed:?} vs {read:?}"),
        }
    }
    assert!(covered > 0);
    let sizes = head_sizes(dir);
    assert!(sizes.len() > 3);
    for (a, old) in sizes.iter().enumerate().step_by(3) {
        for new in [
            sizes[a],
            sizes[(a + sizes.len()) / 2],
            sizes[sizes.len() - 1],
        ]
        .iter()
        {
            assert_eq!(
                lookup.consistency(*old, *new).unwrap(),
                audit::consistency(dir, *old, *new).unwrap(),
                "{old} → {new}"
            );
        }
    }
    assert!(matches!(
        lookup.consistency(sizes[1], sizes[0]),
        Err(LookupError::Backwards)
    ));
    assert!(matches!(
        lookup.consistency(1, sizes[0]),
        Err(LookupError::NoSuchHead(1))
    ));
    assert!(matches!(
        lookup.receipt("01a20000-0000-7000-8000-ffffffffffff"),
        Err(LookupError::NotFound(_))
    ));
    assert!(matches!(
        lookup.receipt("not-a-uuid"),
        Err(LookupError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_from_the_index_are_those_of_a_full_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let signer = signer(tmp.path());
    let key = audit::unhex(&signer.public_key_hex()).unwrap();
    let (log, _) = AuditLog::open(&dir, "spl.test", options(signer.clone())).unwrap();
    fill(&log, 0, 300).await;
    published(&log.lookup(), &dir).await;
    assert!(
        audit::segments(&dir).unwrap().len() > 5,
        "the log spans segments"
    );
    same_as_full_read(&log.lookup(), &dir, 300, &key);
    assert!(log.lookup().latest_head().is_some());

    // A reader with no writer (the CLI) reads the same index.
    let cli = Lookup::open(&dir).unwrap().expect("an index");
    same_as_full_read(&cli, &dir, 300, &key);
    assert_eq!(cli.latest_head(), log.lookup().latest_head());
    drop(log);

    // A restart rebuilds the index from the log, and goes on from there.
    let (log, _) = AuditLog::open(&dir, "spl.test", options(signer)).unwrap();
    fill(&log, 300, 100).await;
    published(&log.lookup(), &dir).await;
    same_as_full_read(&log.lookup(), &dir, 400, &key);
}

/// A line being written at the end of the active segment (here: half of one, as a reader
/// catching the writer mid-write would see) breaks a full read of the log; the index never
/// reads past what was published, so receipts and tree heads are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_line_is_never_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let signer = signer(tmp.path());
    let key = audit::unhex(&signer.public_key_hex()).unwrap();
    let (log, _) = AuditLog::open(&dir, "spl.test", options(signer)).unwrap();
    fill(&log, 0, 30).await;
    published(&log.lookup(), &dir).await;
    let (_, active) = audit::segments(&dir).unwrap().pop().unwrap();
    half_a_line(&active);
    assert!(
        audit::receipt(&dir, &uuid_for(3)).is_err(),
        "the full read trips on it"
    );
    let receipt = log.lookup().receipt(&uuid_for(3)).unwrap();
    audit::verify_receipt(&receipt, &key).unwrap();
    assert!(log.lookup().latest_head().is_some());
}

async fn grpc_channel(
    addr: std::net::SocketAddr,
    pki: &TestPki,
    who: &penghubung::pki::Issued,
) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.ca.cert_pem()))
        .identity(Identity::from_pem(&who.cert_pem, &who.key_pem))
        .domain_name("localhost");
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The gRPC Audit service answers from the index — also while the active segment ends in a
/// half-written line, which made it answer INTERNAL — and each agency gets `rpc_rate` calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_service_answers_from_the_index_within_its_rate() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    std::fs::write(
        pki.path().join("audit.key"),
        penghubung::pki::ed25519_key_pem().unwrap(),
    )
    .unwrap();
    let text = config_text(
        &upstream,
        "5s",
        "\n[audit]\nsigning_key = \"audit.key\"\ntree_head_interval = \"50ms\"\nrpc_rate = \"3/s\"\n",
    );
    let snapshot =
        penghubung::config::load_str(&text, &pki.path().join("g.toml"), pki.path()).unwrap();
    let gateway = Arc::new(Gateway::new(Arc::new(snapshot)).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(penghubung::server::serve_grpc(
        listener,
        gateway.clone(),
        std::future::pending(),
    ));
    let dinkes = grpc_channel(addr, &pki, &pki.dinkes).await;
    let answer = ExchangeClient::new(dinkes.clone())
        .call(proto::CallRequest {
            service: "dukcapil-penduduk".into(),
            operation: "get-penduduk".into(),
            path_params: [("nik".to_owned(), "7201010101010001".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Let a tree head cover it, then leave half a line at the end of the active segment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = pki.path().join("data/audit");
    let (_, active) = audit::segments(&dir).unwrap().pop().unwrap();
    half_a_line(&active);
    let mut audit_client = AuditClient::new(dinkes);
    let receipt = audit_client
        .get_receipt(proto::GetReceiptRequest {
            exchange_id: answer.exchange_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serde_json::from_str::<Record>(&receipt.record)
            .unwrap()
            .exchange_id
            .as_deref(),
        Some(answer.exchange_id.as_str())
    );
    let head = audit_client
        .get_tree_head(proto::GetTreeHeadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(head.tree_size >= receipt.tree_size);
    // Three calls a second: the fourth is refused, with when to retry; another agency is not.
    let refused = audit_client
        .get_tree_head(proto::GetTreeHeadRequest {})
        .await
        .and(
            audit_client
                .get_tree_head(proto::GetTreeHeadRequest {})
                .await,
        )
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.metadata().get("retry-after").is_some());
    let mut dukcapil = AuditClient::new(grpc_channel(addr, &pki, &pki.dukcapil).await);
    dukcapil
        .get_tree_head(proto::GetTreeHeadRequest {})
        .await
        .unwrap();
    // The quota comes back.
    tokio::time::sleep(Duration::from_millis(400)).await;
    audit_client
        .get_tree_head(proto::GetTreeHeadRequest {})
        .await
        .unwrap();
}

/// Half a line where the active segment's records end, in its pre-allocated zeros: what a
/// reader catching the writer mid-write sees.
fn half_a_line(active: &Path) {
    let bytes = std::fs::read(active).unwrap();
    let end = audit::content(&bytes).len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(active)
        .unwrap()
        .write_all_at(br#"{"seq":99,"prev":"ab"#, end as u64)
        .unwrap();
}
