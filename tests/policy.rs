//! The access policy: classification × clearance × agreement × operation × date, the
//! `SPL-Agreement` choice, quotas, expiry at midnight, and certificate pinning. Driven through
//! the real pipeline (`Gateway::handle`) without a client socket, with a recording mTLS
//! upstream behind it and a clock the tests set.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use penghubung::caller::Caller;
use penghubung::clock::{midnight_millis, Clock};
use penghubung::config::{load_str, Date, TimeZone};
use penghubung::pki::Issued;
use penghubung::runtime::Gateway;
use penghubung::tls::IdentityField;
use support::Edit;
use support::{recording_upstream, Recorder, TestPki};

const FIRST: Date = Date {
    year: 2025,
    month: 3,
    day: 1,
};
const LAST: Date = Date {
    year: 2025,
    month: 3,
    day: 31,
};
const BEFORE: Date = Date {
    year: 2025,
    month: 2,
    day: 28,
};
const INSIDE: Date = Date {
    year: 2025,
    month: 3,
    day: 15,
};
const AFTER: Date = Date {
    year: 2025,
    month: 4,
    day: 1,
};

/// Four agencies of every clearance, four services of every classification, each with a `read`
/// and a `write` operation, and agreements valid through March 2025.
fn policy_config(upstream: &str, extra: &str) -> String {
    let mut text = String::from(
        r#"
[gateway]
id = "spl.policy"
listen = "127.0.0.1:0"

[tls]
cert = "gateway.crt"
key = "gateway.key"
client_ca = ["ca.crt"]
"#,
    );
    for (code, clearance) in [
        ("bappeda", "terbuka"),
        ("dinkes", "terbatas"),
        ("dukcapil", "rahasia"),
        ("bkpsdm", "sangat_rahasia"),
    ] {
        text += &format!(
            "\n[[agencies]]\ncode = \"{code}\"\nname = \"{code}\"\nclearance = \"{clearance}\"\nidentities = [\"{code}.test\"]\n"
        );
    }
    for (id, classification) in [
        ("open", "terbuka"),
        ("terbatas", "terbatas"),
        ("rahasia", "rahasia"),
        ("sangat", "sangat_rahasia"),
    ] {
        text += &format!(
            r#"
[[services]]
id = "{id}"
owner = "bkpsdm"
classification = "{classification}"
prefix = "/{id}"
upstreams = ["{upstream}"]
upstream_ca = "ca.crt"

  [[services.operations]]
  id = "read"
  method = "GET"
  path = "/data/{{id}}"

  [[services.operations]]
  id = "write"
  method = "POST"
  path = "/data"
"#
        );
    }
    for (id, consumer, service, operations) in [
        (
            "PKS-DINKES-TERBATAS",
            "dinkes",
            "terbatas",
            "operations = [\"read\"]",
        ),
        ("PKS-DINKES-RAHASIA", "dinkes", "rahasia", ""),
        (
            "PKS-DUKCAPIL-RAHASIA",
            "dukcapil",
            "rahasia",
            "operations = [\"read\", \"write\"]",
        ),
        (
            "PKS-BKPSDM-SANGAT",
            "bkpsdm",
            "sangat",
            "operations = [\"read\"]",
        ),
        ("PKS-BAPPEDA-TERBATAS", "bappeda", "terbatas", ""),
    ] {
        text += &format!(
            "\n[[agreements]]\nid = \"{id}\"\nconsumer = \"{consumer}\"\nservice = \"{service}\"\n{operations}\npurpose = \"Tujuan {id}\"\nvalid_from = 2025-03-01\nvalid_until = 2025-03-31\n"
        );
    }
    text + extra
}

struct Harness {
    gateway: Gateway,
    clock: Clock,
    recorder: Recorder,
    pki: TestPki,
}

impl Harness {
    async fn new(extra: &str) -> Harness {
        let pki = TestPki::new();
        let (upstream, recorder) = recording_upstream(&pki).await;
        let text = policy_config(&upstream, extra);
        let snapshot = load_str(&text, &pki.path().join("policy.toml"), pki.path())
            .unwrap_or_else(|e| panic!("{e}"));
        let clock = Clock::manual(midnight_millis(INSIDE, TimeZone::JAKARTA));
        let gateway = Gateway::with_clock(Arc::new(snapshot), clock.clone()).unwrap();
        Harness {
            gateway,
            clock,
            recorder,
            pki,
        }
    }

    fn on(&self, date: Date) {
        self.clock
            .set(midnight_millis(date, TimeZone::JAKARTA) + 12 * 3_600_000);
    }

    fn caller(&self, agency: &str) -> Caller {
        let cert = self
            .pki
            .ca
            .issue_client(&format!("{agency}.test"), None)
            .unwrap();
        self.caller_with(&cert)
    }

    fn caller_with(&self, cert: &Issued) -> Caller {
        let identity = IdentityField::SubjectCn.extract(&cert.cert);
        Caller::resolve(
            &self.gateway.snapshot(),
            "127.0.0.1:1".parse().unwrap(),
            identity,
        )
    }

    async fn call(
        &self,
        caller: &Caller,
        service: &str,
        operation: &str,
        agreement: Option<&str>,
    ) -> Answer {
        let (method, path) = match operation {
            "read" => (Method::GET, format!("/{service}/data/7")),
            _ => (Method::POST, format!("/{service}/data")),
        };
        let mut request = Request::builder().method(method).uri(path);
        if let Some(id) = agreement {
            request = request.header("spl-agreement", id);
        }
        let response = self
            .gateway
            .handle(
                caller,
                request.body(Full::new(Bytes::from_static(b"{}"))).unwrap(),
            )
            .await;
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn problem(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    fn slug(&self) -> String {
        self.problem()["type"]
            .as_str()
            .map(|t| t.trim_start_matches("urn:penghubung:problem:").to_owned())
            .unwrap_or_default()
    }
}

const ALL_AGREEMENTS: [&str; 5] = [
    "PKS-DINKES-TERBATAS",
    "PKS-DINKES-RAHASIA",
    "PKS-DUKCAPIL-RAHASIA",
    "PKS-BKPSDM-SANGAT",
    "PKS-BAPPEDA-TERBATAS",
];

#[tokio::test]
async fn policy_matrix() {
    let h = Harness::new("").await;
    // agency, service (= classification), operation, date → status, problem type or the
    // agreement the upstream must be told.
    let rows: &[(&str, &str, &str, Date, u16, &str)] = &[
        // terbuka: every registered agency, every operation, any date, no agreement needed.
        ("bappeda", "open", "read", INSIDE, 200, ""),
        ("bappeda", "open", "write", AFTER, 200, ""),
        ("dinkes", "open", "read", BEFORE, 200, ""),
        ("bkpsdm", "open", "write", LAST, 200, ""),
        // terbatas: dinkes holds PKS-DINKES-TERBATAS for `read` in March.
        (
            "dinkes",
            "terbatas",
            "read",
            BEFORE,
            403,
            "agreement-not-yet-valid",
        ),
        (
            "dinkes",
            "terbatas",
            "read",
            FIRST,
            200,
            "PKS-DINKES-TERBATAS",
        ),
        (
            "dinkes",
            "terbatas",
            "read",
            INSIDE,
            200,
            "PKS-DINKES-TERBATAS",
        ),
        (
            "dinkes",
            "terbatas",
            "read",
            LAST,
            200,
            "PKS-DINKES-TERBATAS",
        ),
        (
            "dinkes",
            "terbatas",
            "read",
            AFTER,
            403,
            "agreement-expired",
        ),
        (
            "dinkes",
            "terbatas",
            "write",
            INSIDE,
            403,
            "operation-not-covered",
        ),
        ("dukcapil", "terbatas", "read", INSIDE, 403, "no-agreement"),
        ("bkpsdm", "terbatas", "write", INSIDE, 403, "no-agreement"),
        // bappeda has an agreement, but its clearance (terbuka) is below terbatas.
        (
            "bappeda",
            "terbatas",
            "read",
            INSIDE,
            403,
            "clearance-insufficient",
        ),
        // rahasia: dinkes' agreement cannot lift its terbatas clearance.
        (
            "dinkes",
            "rahasia",
            "read",
            INSIDE,
            403,
            "clearance-insufficient",
        ),
        (
            "dukcapil",
            "rahasia",
            "read",
            INSIDE,
            200,
            "PKS-DUKCAPIL-RAHASIA",
        ),
        (
            "dukcapil",
            "rahasia",
            "write",
            LAST,
            200,
            "PKS-DUKCAPIL-RAHASIA",
        ),
        (
            "dukcapil",
            "rahasia",
            "read",
            BEFORE,
            403,
            "agreement-not-yet-valid",
        ),
        (
            "dukcapil",
            "rahasia",
            "write",
            AFTER,
            403,
            "agreement-expired",
        ),
        ("bkpsdm", "rahasia", "read", INSIDE, 403, "no-agreement"),
        (
            "bappeda",
            "rahasia",
            "write",
            INSIDE,
            403,
            "clearance-insufficient",
        ),
        // sangat_rahasia: only bkpsdm's clearance reaches it.
        ("bkpsdm", "sangat", "read", FIRST, 200, "PKS-BKPSDM-SANGAT"),
        (
            "bkpsdm",
            "sangat",
            "write",
            INSIDE,
            403,
            "operation-not-covered",
        ),
        ("bkpsdm", "sangat", "read", AFTER, 403, "agreement-expired"),
        (
            "dukcapil",
            "sangat",
            "read",
            INSIDE,
            403,
            "clearance-insufficient",
        ),
        (
            "dinkes",
            "sangat",
            "read",
            BEFORE,
            403,
            "clearance-insufficient",
        ),
    ];
    for &(agency, service, operation, date, status, expect) in rows {
        h.on(date);
        let before = h.recorder.count();
        let answer = h.call(&h.caller(agency), service, operation, None).await;
        let row = format!("{agency} → {service}.{operation} on {date}");
        assert_eq!(
            answer.status.as_u16(),
            status,
            "{row}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert!(answer.headers.contains_key("spl-exchange-id"), "{row}");
        if status == 200 {
            assert_eq!(h.recorder.count(), before + 1, "{row}: not forwarded");
            let seen = h.recorder.requests().pop().unwrap();
            assert_eq!(seen.headers["spl-consumer"], agency, "{row}");
            match expect {
                "" => assert!(seen.headers.get("spl-agreement").is_none(), "{row}"),
                id => {
                    assert_eq!(seen.headers["spl-agreement"], id, "{row}");
                    assert_eq!(
                        seen.headers["spl-purpose"],
                        format!("Tujuan {id}").as_str(),
                        "{row}"
                    );
                }
            }
        } else {
            assert_eq!(
                h.recorder.count(),
                before,
                "{row}: a refused request reached the upstream"
            );
            assert_eq!(answer.slug(), expect, "{row}");
            // A refusal never names another agency's agreement.
            let detail = answer.problem()["detail"].as_str().unwrap().to_owned();
            let own = format!("PKS-{}-", agency.to_uppercase());
            for id in ALL_AGREEMENTS.iter().filter(|id| !id.starts_with(&own)) {
                assert!(!detail.contains(id), "{row}: detail reveals {id}: {detail}");
            }
        }
    }
}

#[tokio::test]
async fn unknown_agency_is_refused_before_anything_else() {
    let h = Harness::new("").await;
    let stranger = h.caller_with(&h.pki.stranger);
    let answer = h.call(&stranger, "open", "read", None).await;
    assert_eq!(
        (answer.status.as_u16(), answer.slug().as_str()),
        (403, "unknown-agency")
    );
    assert_eq!(h.recorder.count(), 0);
}

const CHOICE: &str = r#"
[[agreements]]
id = "PKS-DINKES-KEDUA"
consumer = "dinkes"
service = "terbatas"
purpose = "Tujuan kedua"
valid_from = 2025-03-10
valid_until = 2025-04-10

[[agreements]]
id = "PKS-DINKES-LAMA"
consumer = "dinkes"
service = "terbatas"
purpose = "Tujuan lama"
valid_from = 2024-01-01
valid_until = 2024-12-31
"#;

#[tokio::test]
async fn several_agreements_in_force_need_a_choice() {
    let h = Harness::new(CHOICE).await;
    let dinkes = h.caller("dinkes");

    // Only PKS-DINKES-TERBATAS is in force on 5 March: no choice needed.
    h.on(Date {
        year: 2025,
        month: 3,
        day: 5,
    });
    let answer = h.call(&dinkes, "terbatas", "read", None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        h.recorder.requests().pop().unwrap().headers["spl-agreement"],
        "PKS-DINKES-TERBATAS"
    );

    // From 10 March two are: a choice is required, and the candidates are the caller's own.
    h.on(INSIDE);
    let answer = h.call(&dinkes, "terbatas", "read", None).await;
    assert_eq!(
        (answer.status.as_u16(), answer.slug().as_str()),
        (400, "agreement-choice-required")
    );
    let detail = answer.problem()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("PKS-DINKES-TERBATAS") && detail.contains("PKS-DINKES-KEDUA"),
        "{detail}"
    );
    assert!(
        !detail.contains("PKS-DINKES-LAMA") && !detail.contains("BAPPEDA"),
        "{detail}"
    );

    // Its own choice is honoured and confirmed upstream with that agreement's purpose.
    let answer = h
        .call(&dinkes, "terbatas", "read", Some("PKS-DINKES-KEDUA"))
        .await;
    assert_eq!(answer.status, 200);
    let seen = h.recorder.requests().pop().unwrap();
    assert_eq!(seen.headers["spl-agreement"], "PKS-DINKES-KEDUA");
    assert_eq!(seen.headers["spl-purpose"], "Tujuan kedua");
    // A choice also picks the agreement when only it covers the operation.
    let answer = h
        .call(&dinkes, "terbatas", "write", Some("PKS-DINKES-KEDUA"))
        .await;
    assert_eq!(answer.status, 200);
    let answer = h
        .call(&dinkes, "terbatas", "write", Some("PKS-DINKES-TERBATAS"))
        .await;
    assert_eq!(answer.slug(), "operation-not-covered");

    let count = h.recorder.count();
    // Another agency's agreement, and one that does not exist, get the same refusal.
    let other = h
        .call(&dinkes, "terbatas", "read", Some("PKS-BAPPEDA-TERBATAS"))
        .await;
    let none = h
        .call(&dinkes, "terbatas", "read", Some("PKS-TIDAK-ADA"))
        .await;
    for answer in [&other, &none] {
        assert_eq!(
            (answer.status.as_u16(), answer.slug().as_str()),
            (403, "no-agreement")
        );
    }
    assert_eq!(other.problem()["title"], none.problem()["title"]);
    assert_eq!(
        other.problem()["detail"]
            .as_str()
            .unwrap()
            .edit("PKS-BAPPEDA-TERBATAS", "X"),
        none.problem()["detail"]
            .as_str()
            .unwrap()
            .edit("PKS-TIDAK-ADA", "X"),
    );
    // Its own agreement that is no longer in force.
    let old = h
        .call(&dinkes, "terbatas", "read", Some("PKS-DINKES-LAMA"))
        .await;
    assert_eq!(
        (old.status.as_u16(), old.slug().as_str()),
        (403, "agreement-expired")
    );
    // An agreement for another service is not one of its agreements for this one.
    let elsewhere = h
        .call(&dinkes, "terbatas", "read", Some("PKS-DINKES-RAHASIA"))
        .await;
    assert_eq!(elsewhere.slug(), "no-agreement");
    assert_eq!(
        h.recorder.count(),
        count,
        "refused choices reached the upstream"
    );
}

#[tokio::test]
async fn an_agreement_ends_at_midnight_without_a_reload() {
    let h = Harness::new("").await;
    let dinkes = h.caller("dinkes");
    let end = midnight_millis(AFTER, TimeZone::JAKARTA);
    h.clock.set(end - 1);
    assert_eq!(h.call(&dinkes, "terbatas", "read", None).await.status, 200);
    h.clock.advance(Duration::from_millis(1));
    assert_eq!(
        h.call(&dinkes, "terbatas", "read", None).await.slug(),
        "agreement-expired"
    );
    // And starts at midnight of valid_from, in the gateway's time zone (UTC+7).
    let start = midnight_millis(FIRST, TimeZone::JAKARTA);
    h.clock.set(start - 1);
    assert_eq!(
        h.call(&dinkes, "terbatas", "read", None).await.slug(),
        "agreement-not-yet-valid"
    );
    h.clock.set(start);
    assert_eq!(h.call(&dinkes, "terbatas", "read", None).await.status, 200);
}

const QUOTA: &str = r#"
[[agreements]]
id = "PKS-KUOTA"
consumer = "dukcapil"
service = "terbatas"
purpose = "Uji kuota"
valid_from = 2025-03-01
valid_until = 2025-03-31
rate = "3/s"
"#;

#[tokio::test(start_paused = true)]
async fn a_quota_is_enforced_and_recovers_after_its_window() {
    let h = Harness::new(QUOTA).await;
    let dukcapil = h.caller("dukcapil");
    for remaining in [2, 1, 0] {
        let answer = h.call(&dukcapil, "terbatas", "read", None).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.headers["ratelimit-policy"], "\"PKS-KUOTA\";q=3;w=1");
        assert_eq!(
            answer.headers["ratelimit"],
            format!("\"PKS-KUOTA\";r={remaining};t=1").as_str()
        );
    }
    let answer = h.call(&dukcapil, "terbatas", "read", None).await;
    assert_eq!(
        (answer.status.as_u16(), answer.slug().as_str()),
        (429, "quota-exceeded")
    );
    assert_eq!(answer.headers["retry-after"], "1");
    assert_eq!(answer.headers["ratelimit-policy"], "\"PKS-KUOTA\";q=3;w=1");
    assert_eq!(answer.headers["ratelimit"], "\"PKS-KUOTA\";r=0;t=1");
    assert_eq!(
        h.recorder.count(),
        3,
        "the refused request reached the upstream"
    );
    // Another agreement's quota is separate.
    assert_eq!(
        h.call(&h.caller("dinkes"), "terbatas", "read", None)
            .await
            .status,
        200
    );

    tokio::time::advance(Duration::from_secs(1)).await;
    let answer = h.call(&dukcapil, "terbatas", "read", None).await;
    assert_eq!(
        answer.status, 200,
        "the quota did not recover after its window"
    );
}

#[tokio::test]
async fn pinned_agencies_accept_only_their_certificates() {
    let pki = TestPki::new();
    let pinned = pki.ca.issue_client("dinkes.test", None).unwrap();
    let fingerprint = IdentityField::SubjectCn.extract(&pinned.cert).fingerprint;
    // Written as openssl prints it: upper case with colons.
    let openssl_style = fingerprint
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let (upstream, recorder) = recording_upstream(&pki).await;
    let text = policy_config(&upstream, "").edit(
        "identities = [\"dinkes.test\"]",
        &format!("identities = [\"dinkes.test\"]\npin_sha256 = [\"{openssl_style}\"]"),
    );
    let snapshot =
        load_str(&text, &pki.path().join("p.toml"), pki.path()).unwrap_or_else(|e| panic!("{e}"));
    let h = Harness {
        gateway: Gateway::with_clock(
            Arc::new(snapshot),
            Clock::manual(midnight_millis(INSIDE, TimeZone::JAKARTA)),
        )
        .unwrap(),
        clock: Clock::system(),
        recorder,
        pki,
    };
    let answer = h.call(&h.caller_with(&pinned), "open", "read", None).await;
    assert_eq!(answer.status, 200);
    // Same name, same trusted CA, different certificate.
    let answer = h.call(&h.caller("dinkes"), "open", "read", None).await;
    assert_eq!(
        (answer.status.as_u16(), answer.slug().as_str()),
        (403, "certificate-not-pinned")
    );
    assert_eq!(h.recorder.count(), 1);
}
