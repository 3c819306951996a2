//! The audit log: one chained record per exchange (forwarded or refused), never a body, redacted
//! identifiers never in clear; fail closed when the writer fails; a torn tail recovered and
//! recorded; tampering detected at the line; and a crash loop of `kill -9` that loses no
//! acknowledged exchange.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use penghubung::audit::{self, sha256_hex, Record};
use penghubung::caller::Caller;
use penghubung::config::load_str;
use penghubung::runtime::Gateway;
use penghubung::tls::IdentityField;
use support::Edit;
use support::{recording_upstream, Client, TestPki};

const NIK: &str = "7208014101900001";

fn audited_config(pki: &TestPki, upstream: &str) -> String {
    support::audited_config(upstream, pki).edit_once(
        "  path = \"/penduduk/{nik}\"",
        "  path = \"/penduduk/{nik}\"\n  audit_redact = [\"nik\"]",
    )
}

/// A gateway over `text` (with its audit log under the PKI's directory), and Dinkes as caller.
fn start(pki: &TestPki, text: &str) -> (Gateway, Caller) {
    let snapshot =
        load_str(text, &pki.path().join("a.toml"), pki.path()).unwrap_or_else(|e| panic!("{e}"));
    let gateway = Gateway::new(Arc::new(snapshot)).unwrap();
    let dinkes = caller_for(&gateway, &pki.dinkes);
    (gateway, dinkes)
}

fn records(dir: &Path) -> Vec<Record> {
    let mut all = Vec::new();
    audit::walk(dir, |r, _| {
        all.push(r.clone());
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    all
}

/// A segment's lines, without the zero tail of the segment being written.
fn records_of(segment: &Path) -> String {
    String::from_utf8(audit::content(&std::fs::read(segment).unwrap()).to_vec()).unwrap()
}

fn audit_dir(pki: &TestPki) -> PathBuf {
    pki.path().join("data/audit")
}

async fn send(gateway: &Gateway, caller: &Caller, target: &str) -> (u16, String, Bytes) {
    let (status, id, body, _) = send_for_nonce(gateway, caller, target).await;
    (status, id, body)
}

/// As [`send`], with the exchange's `SPL-Commitment-Nonce`.
async fn send_for_nonce(
    gateway: &Gateway,
    caller: &Caller,
    target: &str,
) -> (u16, String, Bytes, audit::Nonce) {
    let response = gateway
        .handle(
            caller,
            Request::get(target).body(Full::new(Bytes::new())).unwrap(),
        )
        .await;
    let status = response.status().as_u16();
    let id = response.headers()["spl-exchange-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let nonce =
        audit::Nonce::parse(response.headers()["spl-commitment-nonce"].to_str().unwrap()).unwrap();
    (
        status,
        id,
        response.into_body().collect().await.unwrap().to_bytes(),
        nonce,
    )
}

fn caller_for(gateway: &Gateway, cert: &penghubung::pki::Issued) -> Caller {
    Caller::resolve(
        &gateway.snapshot(),
        "127.0.0.1:1".parse().unwrap(),
        IdentityField::SubjectCn.extract(&cert.cert),
    )
}

#[tokio::test]
async fn every_exchange_is_recorded_without_bodies_and_with_identifiers_redacted() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let (gateway, dinkes) = start(&pki, &audited_config(&pki, &upstream));
    let stranger = caller_for(&gateway, &pki.stranger);

    let ok = send_for_nonce(
        &gateway,
        &dinkes,
        &format!("/dukcapil/penduduk/penduduk/{NIK}?nik={NIK}&x=1"),
    )
    .await;
    assert_eq!(ok.0, 200);
    let missing = send(&gateway, &dinkes, "/dukcapil/penduduk/tidak-ada").await;
    assert_eq!(missing.0, 404);
    let refused = send(&gateway, &stranger, "/dinkes/faskes").await;
    assert_eq!(refused.0, 403);

    let log = records(&audit_dir(&pki));
    assert_eq!(log[0].kind, "admin");
    assert_eq!(log[0].outcome, "start");
    assert!(log[0].detail.as_deref().unwrap().contains("sha256:"));
    let exchanges: Vec<&Record> = log.iter().filter(|r| r.kind == "exchange").collect();
    assert_eq!(exchanges.len(), 3);

    let forwarded = exchanges[0];
    assert_eq!(forwarded.exchange_id.as_deref(), Some(ok.1.as_str()));
    assert_eq!(
        (forwarded.outcome.as_str(), forwarded.status),
        ("forwarded", Some(200))
    );
    assert_eq!(forwarded.consumer.as_deref(), Some("dinkes"));
    assert_eq!(forwarded.service.as_deref(), Some("dukcapil-penduduk"));
    assert_eq!(forwarded.owner.as_deref(), Some("dukcapil"));
    assert_eq!(forwarded.operation.as_deref(), Some("get-penduduk"));
    assert_eq!(forwarded.agreement.as_deref(), Some("PKS-TEST-1"));
    assert_eq!(forwarded.path_template.as_deref(), Some("/penduduk/{nik}"));
    assert_eq!(
        forwarded.cert_sha256.as_deref(),
        Some(
            IdentityField::SubjectCn
                .extract(&pki.dinkes.cert)
                .fingerprint
                .as_str()
        )
    );
    // The commitment is to exactly the body the caller received, under the nonce it got; no
    // plain digest of it is kept.
    let response = forwarded.response.as_ref().unwrap();
    assert_eq!(response, &audit::commit(&ok.3, false, &ok.2));
    assert_eq!(response.sha256, None);
    assert_eq!(response.length, ok.2.len() as u64);
    assert_eq!(forwarded.request.as_ref().unwrap().length, 0);
    // Hashed in the path and the query, with a keyed hash that the key holder can recompute;
    // the undeclared `x` keeps its name and loses its value.
    let key = std::fs::read(pki.path().join("redaction.key")).unwrap();
    let redactor = audit::Redactor::from_file_bytes(&key).unwrap();
    let hashed = redactor.redact(NIK);
    assert_eq!(
        forwarded.target.as_deref(),
        Some(format!("/dukcapil/penduduk/penduduk/{hashed}?nik={hashed}&x").as_str())
    );
    assert_eq!(forwarded.redaction_key.as_deref(), Some(redactor.key_id()));

    assert_eq!(
        (exchanges[1].outcome.as_str(), exchanges[1].status),
        ("no-operation", Some(404))
    );
    assert_eq!(
        exchanges[1].exchange_id.as_deref(),
        Some(missing.1.as_str())
    );
    assert_eq!(
        (
            exchanges[2].outcome.as_str(),
            exchanges[2].consumer.as_deref()
        ),
        ("unknown-agency", None)
    );

    // Nothing under data_dir holds the NIK in clear, nor any response body.
    let mut files = vec![];
    collect_files(&pki.path().join("data"), &mut files);
    // (Binary files too: the index beside the log.)
    let holds =
        |bytes: &[u8], needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !holds(&bytes, NIK),
            "{} holds the NIK in clear",
            file.display()
        );
        assert!(
            !holds(&bytes, "body_len"),
            "{} holds a response body",
            file.display()
        );
    }
}

/// The response is a 503 `audit-unavailable` problem document.
fn assert_audit_unavailable(status: u16, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("urn:penghubung:problem:audit-unavailable"),
        "{text}"
    );
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn a_failing_writer_refuses_exchanges_and_forwards_nothing_unrecorded() {
    let pki = TestPki::new();
    let (upstream, recorder) = recording_upstream(&pki).await;
    let (gateway, dinkes) = start(&pki, &audited_config(&pki, &upstream));
    assert_eq!(send(&gateway, &dinkes, "/dinkes/faskes").await.0, 200);

    gateway.audit().unwrap().inject_failure();
    // Forwarded before the failure showed: the record cannot be made durable, so the caller
    // gets 503 instead of the response.
    let (status, _, body) = send(&gateway, &dinkes, "/dinkes/faskes").await;
    assert_audit_unavailable(status, &body);
    assert!(!String::from_utf8_lossy(&body).contains("body_len"));
    let seen = recorder.count();
    // From now on, refused before any upstream contact.
    for _ in 0..3 {
        let (status, _, body) = send(&gateway, &dinkes, "/dukcapil/penduduk/penduduk/1").await;
        assert_audit_unavailable(status, &body);
    }
    assert_eq!(
        recorder.count(),
        seen,
        "the upstream saw a request the audit log could not record"
    );
}

#[tokio::test]
async fn a_torn_tail_is_truncated_at_start_and_the_truncation_recorded() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let text = audited_config(&pki, &upstream);
    {
        let (gateway, dinkes) = start(&pki, &text);
        assert_eq!(send(&gateway, &dinkes, "/dinkes/faskes").await.0, 200);
    }
    let (_, segment) = audit::segments(&audit_dir(&pki)).unwrap().pop().unwrap();
    let before = records(&audit_dir(&pki)).len();
    // A crash in the middle of a write, into the segment's pre-allocated zeros.
    let bytes = std::fs::read(&segment).unwrap();
    let end = audit::content(&bytes).len();
    assert!(bytes.len() > end + 19, "the segment is pre-allocated");
    let mut torn = bytes.clone();
    torn[end..end + 19].copy_from_slice(b"{\"seq\":2,\"prev\":\"ab");
    std::fs::write(&segment, &torn).unwrap();
    assert!(audit::walk(&audit_dir(&pki), |_, _| Ok(())).is_err());

    let (gateway, dinkes) = start(&pki, &text);
    assert_eq!(send(&gateway, &dinkes, "/dinkes/faskes").await.0, 200);
    let log = records(&audit_dir(&pki));
    assert_eq!(
        log.len(),
        before + 3,
        "recovery, start and the new exchange"
    );
    let recovery = &log[before];
    assert_eq!(
        (recovery.kind.as_str(), recovery.outcome.as_str()),
        ("admin", "recovered")
    );
    assert!(
        recovery
            .detail
            .as_deref()
            .unwrap()
            .contains("truncated 19 bytes"),
        "{recovery:?}"
    );
}

#[tokio::test]
async fn tampering_is_detected_at_the_place() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    {
        let (gateway, dinkes) = start(&pki, &audited_config(&pki, &upstream));
        for _ in 0..4 {
            assert_eq!(send(&gateway, &dinkes, "/dinkes/faskes").await.0, 200);
        }
    }
    let dir = audit_dir(&pki);
    let (_, segment) = audit::segments(&dir).unwrap().pop().unwrap();
    // The records, without the zero tail the segment being written has.
    let original = records_of(&segment);
    let lines: Vec<&str> = original.lines().collect();
    assert_eq!(lines.len(), 5);
    let verify = || {
        let out = Command::new(env!("CARGO_BIN_EXE_penghubung"))
            .args(["audit", "verify", "--no-signatures"])
            .arg(&dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(verify().0, "{}", verify().1);

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "one byte changed",
            original.edit_once("\"status\":200", "\"status\":201"),
            "line 3: chain broken",
        ),
        (
            "a record deleted",
            format!("{}\n{}\n{}\n{}\n", lines[0], lines[1], lines[3], lines[4]),
            "line 3: sequence 3 where 2 was due",
        ),
        (
            "two records swapped",
            format!(
                "{}\n{}\n{}\n{}\n{}\n",
                lines[0], lines[2], lines[1], lines[3], lines[4]
            ),
            "line 2: sequence 2 where 1 was due",
        ),
        (
            "truncated in the middle",
            original[..original.len() / 2].to_owned(),
            "torn",
        ),
    ];
    for (what, tampered, expected) in cases {
        std::fs::write(&segment, &tampered).unwrap();
        let (ok, out) = verify();
        assert!(!ok, "{what}: verify passed");
        assert!(
            out.contains(&segment.display().to_string()) && out.contains(expected),
            "{what}: {out}"
        );
    }
    std::fs::write(&segment, &original).unwrap();
    assert!(verify().0);
}

/// Start the binary, load it, `kill -9` it mid-load, restart; several times. The log verifies
/// after every restart and holds every exchange a client got an answer for. Segments are small,
/// so the kills land in pre-allocation, preparation and rotation too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_loses_no_acknowledged_exchange() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let text =
        audited_config(&pki, &upstream).edit("[audit]\n", "[audit]\nsegment_size = \"8KiB\"\n");
    let serve = support::quiet_serve;
    let mut acknowledged = Vec::new();
    for round in 0..4 {
        // Each round on ports free at its start: the log is the same whatever the port.
        let mut served = support::Served::start(pki.path(), &text, serve).await;
        let client = Client::new(served.addr(), &pki.ca, Some(&pki.dinkes), Version::HTTP_11);
        let mut up = false;
        for _ in 0..1200 {
            if client
                .get("/dinkes/faskes")
                .await
                .is_ok_and(|a| a.status == 200)
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(up, "round {round}: the gateway did not come up");
        // Eight clients keep requests in flight; the process is killed while they do.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut load = Vec::new();
        for _ in 0..8 {
            let (client, tx) = (client.clone(), tx.clone());
            load.push(tokio::spawn(async move {
                for _ in 0..200 {
                    match client.get("/dinkes/faskes").await {
                        Ok(a) if a.status == 200 => {
                            let _ =
                                tx.send(a.headers["spl-exchange-id"].to_str().unwrap().to_owned());
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }));
        }
        drop(tx);
        let mut got = 0;
        while got < 40 {
            match rx.recv().await {
                Some(id) => {
                    acknowledged.push(id);
                    got += 1;
                }
                None => break,
            }
        }
        served.child.kill().unwrap(); // SIGKILL
        served.child.wait().unwrap();
        for task in load {
            let _ = task.await;
        }
        while let Ok(id) = rx.try_recv() {
            acknowledged.push(id);
        }
        assert!(
            got >= 40,
            "round {round}: only {got} answers before the kill"
        );
    }
    // One more start recovers whatever the last kill tore, then the log must verify whole.
    let served = support::Served::start(pki.path(), &text, serve).await;
    let client = Client::new(served.addr(), &pki.ca, Some(&pki.dinkes), Version::HTTP_11);
    for _ in 0..1200 {
        if client.get("/dinkes/faskes").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    drop(served);
    let log = records(&audit_dir(&pki));
    let recorded: std::collections::HashSet<&str> = log
        .iter()
        .filter_map(|r| r.exchange_id.as_deref())
        .collect();
    for id in &acknowledged {
        assert!(
            recorded.contains(id.as_str()),
            "acknowledged exchange {id} is not in the log"
        );
    }
    assert!(acknowledged.len() >= 160);
    assert!(
        audit::segments(&audit_dir(&pki)).unwrap().len() > 8,
        "the log rotated under the kills"
    );
}

fn signed_config(pki: &TestPki, upstream: &str) -> String {
    std::fs::write(
        pki.path().join("audit.key"),
        penghubung::pki::ed25519_key_pem().unwrap(),
    )
    .unwrap();
    audited_config(pki, upstream).edit(
        "[audit]\n",
        "[audit]\nsigning_key = \"audit.key\"\ntree_head_every = 3\ntree_head_interval = \"1h\"\n",
    )
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_penghubung"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn tree_heads_are_signed_and_receipts_verify_offline() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let text = signed_config(&pki, &upstream);
    let config = support::write_config(pki.path(), &text);
    let snapshot = load_str(&text, &config, pki.path()).unwrap();
    let gateway = Gateway::new(Arc::new(snapshot)).unwrap();
    let dinkes = caller_for(&gateway, &pki.dinkes);
    let mut ids = Vec::new();
    for _ in 0..7 {
        let (status, id, _) = send(
            &gateway,
            &dinkes,
            &format!("/dukcapil/penduduk/penduduk/{NIK}"),
        )
        .await;
        assert_eq!(status, 200);
        ids.push(id);
    }
    drop(gateway);

    let dir = audit_dir(&pki);
    let (ok, out) = cli(&["audit", "pubkey", "--config", config.to_str().unwrap()]);
    // The key is stdout's one line; stderr may follow with the configuration's warnings.
    let pubkey = out.lines().next().unwrap_or_default();
    assert!(ok && pubkey.starts_with("ed25519:"), "{out}");
    let pubkey_file = pki.path().join("audit.pub");
    std::fs::write(&pubkey_file, pubkey).unwrap();
    let (ok, out) = cli(&[
        "audit",
        "verify",
        dir.to_str().unwrap(),
        "--pubkey",
        pubkey_file.to_str().unwrap(),
    ]);
    assert!(
        ok && out.contains("signatures checked") && out.contains("7 exchanges"),
        "{out}"
    );
    let heads = records(&dir)
        .iter()
        .filter(|r| r.kind == "tree-head")
        .count();
    assert!(heads >= 2, "{heads} tree heads");

    // A receipt for an exchange verifies offline with the public key alone...
    let (ok, receipt) = cli(&["audit", "receipt", dir.to_str().unwrap(), &ids[4]]);
    assert!(ok, "{receipt}");
    let receipt_file = pki.path().join("receipt.json");
    std::fs::write(&receipt_file, &receipt).unwrap();
    let (ok, out) = cli(&[
        "audit",
        "verify-receipt",
        receipt_file.to_str().unwrap(),
        "--pubkey",
        pubkey_file.to_str().unwrap(),
    ]);
    assert!(ok && out.contains(&ids[4]), "{out}");
    // ...and fails when its record is altered, or checked against another key.
    let mut altered: audit::Receipt = serde_json::from_str(&receipt).unwrap();
    altered.record = altered.record.edit_once("\"status\":200", "\"status\":201");
    std::fs::write(&receipt_file, serde_json::to_string(&altered).unwrap()).unwrap();
    let (ok, out) = cli(&[
        "audit",
        "verify-receipt",
        receipt_file.to_str().unwrap(),
        "--pubkey",
        pubkey_file.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("inclusion proof"), "{out}");
    std::fs::write(&receipt_file, &receipt).unwrap();
    let other = penghubung::pki::ed25519_key_pem().unwrap();
    std::fs::write(pki.path().join("other.key"), &other).unwrap();
    let other_signer = audit::Signer::from_pem_file(&pki.path().join("other.key")).unwrap();
    let other_pub = pki.path().join("other.pub");
    std::fs::write(&other_pub, other_signer.public_key_hex()).unwrap();
    let (ok, out) = cli(&[
        "audit",
        "verify-receipt",
        receipt_file.to_str().unwrap(),
        "--pubkey",
        other_pub.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("signature"), "{out}");

    // Who looked up this NIK: answerable with the key in the configuration, and only with it.
    let config_arg = config.to_str().unwrap();
    let (ok, out) = cli(&[
        "audit",
        "find",
        "--config",
        config_arg,
        "--param",
        &format!("nik={NIK}"),
    ]);
    assert!(
        ok && out.contains("7 matching records") && out.contains("\"consumer\":\"dinkes\""),
        "{out}"
    );
    let (_, out) = cli(&[
        "audit",
        "find",
        "--config",
        config_arg,
        "--param",
        "nik=7208014101900002",
    ]);
    assert!(out.contains("0 matching records"), "{out}");
    let (_, out) = cli(&[
        "audit",
        "find",
        "--config",
        config_arg,
        "--consumer",
        "dukcapil",
    ]);
    assert!(out.contains("0 matching records"), "{out}");
    let (ok, out) = cli(&["audit", "show", dir.to_str().unwrap(), &ids[0]]);
    assert!(ok && out.contains(&ids[0]) && !out.contains(NIK), "{out}");
    let (ok, out) = cli(&["audit", "tail", dir.to_str().unwrap(), "-n", "2"]);
    assert!(ok && out.lines().count() == 2, "{out}");
    // Consistency between two signed tree heads.
    let sizes: Vec<u64> = records(&dir).iter().filter_map(|r| r.tree_size).collect();
    let (old, new) = (sizes[0].to_string(), sizes[sizes.len() - 1].to_string());
    let (ok, out) = cli(&["audit", "consistency", dir.to_str().unwrap(), &old, &new]);
    assert!(ok && out.contains("\"proof\""), "{out}");
    let (ok, _) = cli(&["audit", "consistency", dir.to_str().unwrap(), &old, "999"]);
    assert!(!ok);
    // The proof carries both signed tree heads, and checks offline with the public key alone;
    // a changed root, proof hash or signature does not.
    let proof: audit::Consistency = serde_json::from_str(&out).unwrap_or_else(|_| {
        let (_, out) = cli(&["audit", "consistency", dir.to_str().unwrap(), &old, &new]);
        serde_json::from_str(&out).unwrap()
    });
    let proof_file = pki.path().join("consistency.json");
    let check = |proof: &audit::Consistency, key: &Path| {
        std::fs::write(&proof_file, serde_json::to_string(proof).unwrap()).unwrap();
        cli(&[
            "audit",
            "verify-consistency",
            proof_file.to_str().unwrap(),
            "--pubkey",
            key.to_str().unwrap(),
        ])
    };
    let (ok, out) = check(&proof, &pubkey_file);
    assert!(ok && out.contains("consistency proof verifies"), "{out}");
    let mut altered = proof.clone();
    altered.new_root = "00".repeat(32);
    assert!(!check(&altered, &pubkey_file).0);
    let mut altered = proof.clone();
    if let Some(first) = altered.proof.first_mut() {
        *first = "11".repeat(32);
        assert!(!check(&altered, &pubkey_file).0);
    }
    let mut altered = proof.clone();
    altered.new_tree_head = altered
        .new_tree_head
        .edit_once("\"signature\":\"", "\"signature\":\"00");
    assert!(!check(&altered, &pubkey_file).0);
    let (ok, out) = check(&proof, &other_pub);
    assert!(!ok && out.contains("signature"), "{out}");

    // A log re-signed with another key after rewriting a record fails verification with the
    // gateway's key, at the first re-signed tree head.
    let (_, segment) = audit::segments(&dir).unwrap().pop().unwrap();
    let original = records_of(&segment);
    let mut forged = Vec::new();
    let mut prev = audit::GENESIS.to_owned();
    let mut range = audit::CompactRange::default();
    for line in original.lines() {
        let mut r: Record = serde_json::from_str(line).unwrap();
        r.prev = prev.clone();
        if r.seq == 2 {
            r.consumer = Some("dukcapil".into());
        }
        if r.kind == "tree-head" {
            let root = data_encoding::HEXLOWER.encode(&range.root());
            let message = audit::tree_head_message(&r.gateway, range.size(), &root, &r.time);
            r.root = Some(root);
            r.signature = Some(other_signer.sign(&message));
        }
        let line = serde_json::to_string(&r).unwrap();
        prev = sha256_hex(line.as_bytes());
        range.push(audit::leaf_hash(line.as_bytes()));
        forged.push(line);
    }
    std::fs::write(&segment, forged.join("\n") + "\n").unwrap();
    let (ok, out) = cli(&[
        "audit",
        "verify",
        dir.to_str().unwrap(),
        "--pubkey",
        pubkey_file.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("signature does not verify"), "{out}");
    // Without the key the forgery is internally consistent: the key is what an auditor trusts.
    let (ok, _) = cli(&[
        "audit",
        "verify",
        dir.to_str().unwrap(),
        "--pubkey",
        other_pub.to_str().unwrap(),
    ]);
    assert!(ok);
}

#[tokio::test]
async fn segments_rotate_and_a_replaced_segment_is_detected() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let text =
        audited_config(&pki, &upstream).edit("[audit]\n", "[audit]\nsegment_size = \"1KiB\"\n");
    let (gateway, dinkes) = start(&pki, &text);
    for _ in 0..12 {
        assert_eq!(send(&gateway, &dinkes, "/dinkes/faskes").await.0, 200);
    }
    drop(gateway);
    let dir = audit_dir(&pki);
    let segments = audit::segments(&dir).unwrap();
    assert!(segments.len() >= 3, "{} segments", segments.len());
    assert_eq!(records(&dir).len(), 13);
    let (ok, out) = cli(&["audit", "verify", "--no-signatures", dir.to_str().unwrap()]);
    assert!(ok, "{out}");
    // Replace the second segment with a copy of the third.
    std::fs::copy(&segments[2].1, &segments[1].1).unwrap();
    let (ok, out) = cli(&["audit", "verify", "--no-signatures", dir.to_str().unwrap()]);
    assert!(
        !ok && out.contains(&segments[1].1.display().to_string()) && out.contains("line 1"),
        "{out}"
    );
}

/// The worked examples in docs/ — record format 2, and format 1 as older gateways wrote it —
/// stay logs that verify, with receipts that stay valid; the format-2 example's response is
/// proven with its nonce by `audit prove` and by the independent Python verifier, and the
/// format-1 example's by its SHA-256; `report` reads both.
#[test]
fn the_documented_examples_verify_in_both_formats() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/audit-example");
    let nonce = std::fs::read_to_string(docs.join("nonce.txt")).unwrap();
    for (example, prove) in [(docs.clone(), true), (docs.join("format-1"), false)] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            example.join("segment-000001.jsonl"),
            dir.path().join("segment-000001.jsonl"),
        )
        .unwrap();
        let pubkey = example.join("audit.pub");
        let (ok, out) = cli(&[
            "audit",
            "verify",
            dir.path().to_str().unwrap(),
            "--pubkey",
            pubkey.to_str().unwrap(),
        ]);
        assert!(ok && out.contains("2 signed tree heads"), "{out}");
        let receipt = example.join("receipt.json");
        let (ok, out) = cli(&[
            "audit",
            "verify-receipt",
            receipt.to_str().unwrap(),
            "--pubkey",
            pubkey.to_str().unwrap(),
        ]);
        assert!(ok, "{out}");
        let (ok, out) = cli(&[
            "report",
            "--audit",
            dir.path().to_str().unwrap(),
            "--since",
            "2026-11-01",
            "--until",
            "2026-12-31",
            "--format",
            "json",
        ]);
        assert!(ok && out.contains("dukcapil-penduduk"), "{out}");
        if prove {
            let response = example.join("response.json");
            let (ok, out) = cli(&[
                "audit",
                "prove",
                receipt.to_str().unwrap(),
                "--nonce",
                &nonce,
                "--response",
                response.to_str().unwrap(),
                "--pubkey",
                pubkey.to_str().unwrap(),
            ]);
            assert!(ok && out.contains("(190 bytes)"), "{out}");
            let record: Record = serde_json::from_str(
                std::fs::read_to_string(&receipt)
                    .unwrap()
                    .parse::<serde_json::Value>()
                    .unwrap()["record"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            let id = record.exchange_id.unwrap();
            let python = Command::new("python3")
                .arg(docs.join("verify.py"))
                .arg(example.join("segment-000001.jsonl"))
                .args(["--pubkey", pubkey.to_str().unwrap(), "--prove", &id])
                .args(["--nonce", &nonce, "--response", response.to_str().unwrap()])
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&python.stdout);
            assert!(
                python.status.success() && said.contains("committed to"),
                "{said}{}",
                String::from_utf8_lossy(&python.stderr)
            );
            // Another nonce proves nothing.
            let (ok, out) = cli(&[
                "audit",
                "prove",
                receipt.to_str().unwrap(),
                "--nonce",
                &audit::Nonce::fresh().encoded(),
                "--response",
                response.to_str().unwrap(),
            ]);
            assert!(!ok && out.contains("NOT"), "{out}");
        }
    }
}

#[tokio::test]
async fn a_response_too_large_to_record_is_refused_not_streamed_unrecorded() {
    let pki = TestPki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("https://{}", listener.local_addr().unwrap());
    let huge = Bytes::from(vec![b'x'; penghubung::pipeline::MAX_AUDITED_RESPONSE + 1]);
    let handler: penghubung::demo::Handler =
        Arc::new(move |_| http::Response::new(penghubung::body::full(huge.clone())));
    tokio::spawn(penghubung::demo::serve_sample(
        listener,
        support::upstream_tls(&pki),
        handler,
    ));
    let (gateway, dinkes) = start(&pki, &audited_config(&pki, &upstream));
    let (status, id, body) = send(&gateway, &dinkes, "/dinkes/faskes").await;
    assert_eq!(status, 502);
    assert!(String::from_utf8_lossy(&body).contains("upstream-response-too-large"));
    // The refusal itself is recorded.
    let log = records(&audit_dir(&pki));
    let record = log
        .iter()
        .find(|r| r.exchange_id.as_deref() == Some(id.as_str()))
        .unwrap();
    assert_eq!(record.outcome, "upstream-response-too-large");
}

/// A writer that falls behind (its queue at the bound) refuses new exchanges before any upstream
/// contact, and recovers once it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_queue_refuses_exchanges_before_upstream_contact() {
    let pki = TestPki::new();
    let (upstream, recorder) = recording_upstream(&pki).await;
    let text = audited_config(&pki, &upstream).edit("[audit]\n", "[audit]\nqueue = 2\n");
    let (gateway, dinkes) = start(&pki, &text);
    let gateway = Arc::new(gateway);
    let dinkes = Arc::new(dinkes);
    // Let the start record through, then stall the writer.
    assert_eq!(send(&gateway, &dinkes, "/dinkes/faskes").await.0, 200);
    gateway.audit().unwrap().stall(true);
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let (g, d) = (gateway.clone(), dinkes.clone());
        waiting.push(tokio::spawn(async move {
            send(&g, &d, "/dinkes/faskes").await.0
        }));
    }
    // Both are forwarded and wait for their records; the queue is now at its bound.
    let mut full = false;
    for _ in 0..2000 {
        if !gateway.audit().unwrap().healthy() {
            full = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(full, "the queue never reached its bound");
    let seen = recorder.count();
    let (status, _, body) = send(&gateway, &dinkes, "/dinkes/faskes").await;
    assert_audit_unavailable(status, &body);
    assert_eq!(
        recorder.count(),
        seen,
        "a request went upstream while the audit queue was full"
    );
    // The writer catches up: the waiting exchanges complete, and new ones are served again.
    gateway.audit().unwrap().stall(false);
    for task in waiting {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(send(&gateway, &dinkes, "/dinkes/faskes").await.0, 200);
}

/// The key `pki init` writes is one OpenSSL reads, and the public key OpenSSL derives from it
/// is one `audit verify` and `verify-receipt` accept; the gateway reads both PKCS#8 versions.
#[tokio::test]
async fn openssl_reads_the_audit_key_and_its_public_key_verifies() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let init = pki.path().join("init");
    let (ok, out) = cli(&[
        "pki",
        "init",
        init.to_str().unwrap(),
        "--agency",
        "dinkes=dinkes.test",
    ]);
    assert!(ok, "{out}");
    let pem = pki.path().join("openssl.pub");
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(init.join("audit.key"))
        .arg("-out")
        .arg(&pem)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl could not read the audit key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read_to_string(&pem)
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));

    // A log signed with that key verifies with OpenSSL's rendering of its public key.
    std::fs::copy(init.join("audit.key"), pki.path().join("audit.key")).unwrap();
    let text = audited_config(&pki, &upstream).edit(
        "[audit]\n",
        "[audit]\nsigning_key = \"audit.key\"\ntree_head_every = 1\n",
    );
    let (gateway, dinkes) = start(&pki, &text);
    let (_, id, _) = send(&gateway, &dinkes, "/dinkes/faskes").await;
    let (_, _, _) = send(&gateway, &dinkes, "/dinkes/faskes").await;
    drop(gateway);
    let dir = audit_dir(&pki);
    let (ok, out) = cli(&[
        "audit",
        "verify",
        dir.to_str().unwrap(),
        "--pubkey",
        pem.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("signatures checked"), "{out}");
    let (ok, receipt) = cli(&["audit", "receipt", dir.to_str().unwrap(), &id]);
    assert!(ok, "{receipt}");
    let receipt_file = pki.path().join("r.json");
    std::fs::write(&receipt_file, receipt).unwrap();
    let (ok, out) = cli(&[
        "audit",
        "verify-receipt",
        receipt_file.to_str().unwrap(),
        "--pubkey",
        pem.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    // The same key as `audit pubkey` prints it.
    let signer = audit::Signer::from_pem_file(&init.join("audit.key")).unwrap();
    assert_eq!(
        audit::parse_public_key(&std::fs::read_to_string(&pem).unwrap()).unwrap(),
        audit::unhex(&signer.public_key_hex()).unwrap()
    );
    // A PKCS#8 v2 key (with its public key, as ring and rcgen write it) is read too.
    let v2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .unwrap()
        .serialize_pem();
    std::fs::write(pki.path().join("v2.key"), v2).unwrap();
    assert!(audit::Signer::from_pem_file(&pki.path().join("v2.key")).is_ok());
    // Not an Ed25519 public key: refused, saying what is accepted.
    let ec = rcgen::KeyPair::generate().unwrap().public_key_pem();
    let e = audit::parse_public_key(&ec).unwrap_err();
    assert!(e.contains("Ed25519"), "{e}");
}

/// `audit verify` wants the key (or an explicit `--no-signatures`), and lists every problem of
/// a log — a missing segment, a changed record, an unknown record kind — not only the first.
#[tokio::test]
async fn the_verifier_requires_a_key_and_lists_every_problem() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let text =
        signed_config(&pki, &upstream).edit("[audit]\n", "[audit]\nsegment_size = \"1KiB\"\n");
    let config = support::write_config(pki.path(), &text);
    let (gateway, dinkes) = start(&pki, &text);
    for _ in 0..12 {
        assert_eq!(send(&gateway, &dinkes, "/dinkes/faskes").await.0, 200);
    }
    drop(gateway);
    let dir = audit_dir(&pki);
    let d = dir.to_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_penghubung"))
        .args(["audit", "verify", d])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pubkey"));
    let (ok, out) = cli(&["audit", "verify", "--no-signatures", d]);
    assert!(ok && out.contains("signatures NOT checked"), "{out}");
    let (_, out) = cli(&["audit", "pubkey", "--config", config.to_str().unwrap()]);
    let pubkey_file = pki.path().join("audit.pub");
    std::fs::write(&pubkey_file, out.lines().next().unwrap_or_default()).unwrap();
    let verify = || {
        cli(&[
            "audit",
            "verify",
            d,
            "--pubkey",
            pubkey_file.to_str().unwrap(),
        ])
    };
    assert!(verify().0, "{}", verify().1);

    // A record of a kind the format does not define, in a log otherwise re-chained and
    // re-signed with the gateway's own key: only that is wrong, and it is reported.
    let signer = audit::Signer::from_pem_file(&pki.path().join("audit.key")).unwrap();
    let segments = audit::segments(&dir).unwrap();
    let originals: Vec<String> = segments.iter().map(|(_, p)| records_of(p)).collect();
    let mut prev = audit::GENESIS.to_owned();
    let mut range = audit::CompactRange::default();
    for ((_, path), text) in segments.iter().zip(&originals) {
        let mut out = String::new();
        for line in text.lines() {
            let mut r: Record = serde_json::from_str(line).unwrap();
            r.prev = prev.clone();
            if r.seq == 3 {
                r.kind = "mystery".into();
            }
            if r.kind == "tree-head" {
                let root = data_encoding::HEXLOWER.encode(&range.root());
                let message = audit::tree_head_message(&r.gateway, range.size(), &root, &r.time);
                r.root = Some(root);
                r.signature = Some(signer.sign(&message));
            }
            let line = serde_json::to_string(&r).unwrap();
            prev = sha256_hex(line.as_bytes());
            range.push(audit::leaf_hash(line.as_bytes()));
            out.push_str(&line);
            out.push('\n');
        }
        std::fs::write(path, out).unwrap();
    }
    let (ok, out) = verify();
    assert!(
        !ok && out.contains("unknown record kind `mystery`") && out.contains("1 problem"),
        "{out}"
    );
    for ((_, path), text) in segments.iter().zip(&originals) {
        std::fs::write(path, text).unwrap();
    }
    assert!(verify().0);

    // Three problems at once: a byte changed in the first segment (the chain breaks at the
    // next line, the first of the second segment), the third segment gone, and the last line
    // of the last segment torn.
    assert!(segments.len() >= 5, "{} segments", segments.len());
    let changed = originals[0].edit_once("\"outcome\":\"start\"", "\"outcome\":\"stop\"");
    assert_ne!(changed, originals[0]);
    std::fs::write(&segments[0].1, changed).unwrap();
    std::fs::remove_file(&segments[2].1).unwrap();
    let last = &segments[segments.len() - 1].1;
    let text = &originals[originals.len() - 1];
    std::fs::write(last, &text[..text.len() - 5]).unwrap();
    let (ok, out) = verify();
    assert!(!ok, "{out}");
    for expected in [
        format!("{}, line 1: chain broken", segments[1].1.display()),
        "segment 3 is missing".to_owned(),
        "torn".to_owned(),
    ] {
        assert!(out.contains(&expected), "`{expected}` not in:\n{out}");
    }
}
