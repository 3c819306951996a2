//! Every certificate the gateway relies on is watched (issue #18): each client certificate an
//! agency presents at a handshake and each upstream server certificate is inventoried — subject,
//! issuer, serial, fingerprint, expiry, first and last seen — kept under `data_dir` across a
//! restart, and shown by `/v1/certificates`, `penghubung certs` and the expiry metrics, with
//! the same warning threshold as the gateway's own certificates. The real binary throughout.

mod support;

use std::process::Command;

use http::Version;
use support::{config_text, quiet_serve, recording_upstream, Client, Served, TestPki, DINKES};
use time::{Duration, OffsetDateTime};

const BIN: &str = env!("CARGO_BIN_EXE_penghubung");

fn get(port: u16, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}{path}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "GET {path}");
    String::from_utf8(out.stdout).unwrap()
}

fn seen(admin: u16) -> Vec<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_str(&get(admin, "/v1/certificates")).unwrap();
    doc["seen"].as_array().unwrap().clone()
}

fn terminate(served: &Served) {
    let status = Command::new("kill")
        .arg(served.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn client_and_upstream_certificates_are_inventoried_and_kept_across_a_restart() {
    let pki = TestPki::new();
    let (upstream, _recorder) = recording_upstream(&pki).await;
    let text = config_text(&upstream, "5s", "");
    let mut served = Served::start(pki.path(), &text, quiet_serve).await;
    assert!(
        seen(served.admin).is_empty(),
        "nothing seen before a handshake"
    );

    // dinkes' usual certificate, then a second one that expires in ten days.
    let now = OffsetDateTime::now_utc();
    let short = pki
        .ca
        .issue_client_valid(DINKES, now - Duration::days(1), now + Duration::days(10))
        .unwrap();
    let short_sha = penghubung::keys::sha256_hex(&short.cert);
    let usual_sha = penghubung::keys::sha256_hex(&pki.dinkes.cert);
    let dinkes = Client::new(served.addr(), &pki.ca, Some(&pki.dinkes), Version::HTTP_11);
    assert_eq!(dinkes.get("/dinkes/faskes").await.unwrap().status, 200);
    let soon = dinkes.with_identity(Some(&short));
    assert_eq!(soon.get("/dinkes/faskes").await.unwrap().status, 200);
    // A certificate that names no agency is nobody's: not inventoried.
    let stranger = dinkes.with_identity(Some(&pki.stranger));
    let _ = stranger.get("/dinkes/faskes").await;

    let list = seen(served.admin);
    let clients: Vec<&serde_json::Value> = list.iter().filter(|s| s["role"] == "client").collect();
    assert_eq!(clients.len(), 2, "{list:?}");
    let find = |sha: &str| {
        clients
            .iter()
            .find(|s| s["sha256"] == sha)
            .unwrap_or_else(|| panic!("{sha} not in {clients:?}"))
    };
    let (usual, expiring) = (find(&usual_sha), find(&short_sha));
    assert_eq!(usual["party"], "dinkes");
    assert_eq!(usual["state"], "ok");
    assert!(usual["subject"].as_str().unwrap().contains(DINKES));
    assert!(usual["issuer"]
        .as_str()
        .unwrap()
        .contains("Test Regency CA"));
    assert!(!usual["serial"].as_str().unwrap().is_empty());
    assert_eq!(expiring["state"], "expiring");
    assert!(
        (9..=10).contains(&expiring["days_left"].as_i64().unwrap()),
        "{expiring}"
    );
    let first_seen = usual["first_seen"].clone();
    // The upstream's server certificate, seen when the gateway connected.
    let upstreams: Vec<&serde_json::Value> =
        list.iter().filter(|s| s["role"] == "upstream").collect();
    assert_eq!(upstreams.len(), 1, "{list:?}");
    assert_eq!(upstreams[0]["party"], "dinkes-faskes");
    assert_eq!(upstreams[0]["server_name"], "127.0.0.1");
    assert_eq!(
        upstreams[0]["sha256"],
        penghubung::keys::sha256_hex(&pki.upstream.cert)
    );

    // The metrics: one series per certificate, the short one under the 30-day threshold.
    let metrics = get(served.admin, "/metrics");
    let value = |name: &str, labels: &str| -> i64 {
        let prefix = format!("{name}{{{labels}}} ");
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{prefix} not in the metrics"));
        line[prefix.len()..].trim().parse().unwrap()
    };
    let left = value(
        "penghubung_client_certificate_expiry_seconds",
        &format!("consumer=\"dinkes\",sha256=\"{short_sha}\""),
    );
    assert!((9 * 86_400..=10 * 86_400).contains(&left), "{left} seconds");
    let usual_left = value(
        "penghubung_client_certificate_expiry_seconds",
        &format!("consumer=\"dinkes\",sha256=\"{usual_sha}\""),
    );
    assert!(usual_left > 300 * 86_400);
    let upstream_left = value(
        "penghubung_upstream_certificate_expiry_seconds",
        &format!(
            "service=\"dinkes-faskes\",sha256=\"{}\"",
            penghubung::keys::sha256_hex(&pki.upstream.cert)
        ),
    );
    assert!(upstream_left > 300 * 86_400);

    // Stopped, the inventory is on disk; `penghubung certs` shows it with the warning.
    terminate(&served);
    assert!(served.child.wait().unwrap().success());
    let kept = pki.path().join("data/certificates.json");
    assert!(kept.exists());
    let out = Command::new(BIN)
        .args(["certs", "--config"])
        .arg(&served.file)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("client dinkes"), "{printed}");
    assert!(printed.contains("upstream dinkes-faskes"), "{printed}");
    let warned = printed
        .lines()
        .skip_while(|l| !l.contains("certificates seen on the wire"))
        .filter(|l| l.contains("WARNING: renew soon"))
        .count();
    assert_eq!(warned, 1, "{printed}");
    assert!(printed.contains(&short_sha), "{printed}");

    // After a restart the history is still there, first sightings unchanged.
    drop(served);
    let served = Served::start(pki.path(), &text, quiet_serve).await;
    let again = seen(served.admin);
    assert_eq!(again.len(), 3, "{again:?}");
    let usual = again.iter().find(|s| s["sha256"] == usual_sha).unwrap();
    assert_eq!(usual["first_seen"], first_seen);
    drop(served);

    // An inventory that cannot be read stops the start instead of being lost.
    std::fs::write(&kept, "[{\"role\":").unwrap();
    let err = support::serve_refused(&pki.path().join("penghubung.toml"));
    assert!(err.contains("is not a certificate inventory"), "{err}");
}
