//! Privacy against the operator (issue #16): nothing the gateway keeps — its log lines, its
//! audit files — can be turned back into a citizen's data, and the two parties of an exchange
//! can still prove what they exchanged.
//!
//! Perbup Maluku Tengah 50/2020 Ps 14(8): no agency, the IT office included, reads a data
//! owner's data without the owner's permission.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Version};
use http_body_util::Full;
use penghubung::audit::{self, Nonce, Record};
use penghubung::caller::Caller;
use penghubung::config::load_str;
use penghubung::runtime::Gateway;
use penghubung::tls::IdentityField;
use support::{config_text, recording_upstream, Answer, Client, Edit, TestPki};

/// A valid NIK (Kabupaten Parigi Moutong, a woman born 1 January 1990), seen nowhere else.
const NIK: &str = "7208014101900077";
/// Its last twelve digits: what a log line that cut the NIK short would still give away.
const NIK_TAIL: &str = "014101900077";
const NAME: &str = "Siti Rahmawati Lamasi";

/// The test configuration: the shared fixture's services, a `terbuka` service whose operations
/// validate a NIK parameter and a verification body, one whose upstream never answers and one
/// whose upstream is not there; audit with a signing key and a redaction key.
fn config(pki: &TestPki, upstream: &str, silent: &str, closed: &str) -> String {
    std::fs::write(
        pki.path().join("redaction.key"),
        penghubung::pki::redaction_key(),
    )
    .unwrap();
    std::fs::write(
        pki.path().join("audit.key"),
        penghubung::pki::ed25519_key_pem().unwrap(),
    )
    .unwrap();
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let extra = format!(
        r#"
[[services]]
id = "kependudukan"
owner = "dukcapil"
classification = "terbuka"
prefix = "/kependudukan"
upstreams = ["{upstream}"]
upstream_ca = "ca.crt"

  [[services.operations]]
  id = "get-penduduk"
  method = "GET"
  path = "/penduduk/{{nik}}"
  audit_clear = ["kode_wilayah"]
  [services.operations.params]
  nik = "common/nik.v1.json"
  kode_wilayah = "common/kode-wilayah.v1.json"

  [[services.operations]]
  id = "verifikasi"
  method = "POST"
  path = "/verifikasi"
  request_schema = "dukcapil/verifikasi-request.v1.json"

[[services]]
id = "lambat"
owner = "dukcapil"
classification = "terbuka"
prefix = "/lambat"
upstreams = ["{silent}"]
upstream_ca = "ca.crt"
timeout = "300ms"

  [[services.operations]]
  id = "get-penduduk"
  method = "GET"
  path = "/penduduk/{{nik}}"

[[services]]
id = "mati"
owner = "dukcapil"
classification = "terbuka"
prefix = "/mati"
upstreams = ["{closed}"]
upstream_ca = "ca.crt"

  [[services.operations]]
  id = "get-penduduk"
  method = "GET"
  path = "/penduduk/{{nik}}"

[audit]
signing_key = "audit.key"
redaction_key = "redaction.key"
tree_head_interval = "50ms"
"#
    );
    config_text(upstream, "5s", &extra).edit_once(
        "max_request_body = \"1KiB\"",
        &format!(
            "max_request_body = \"1KiB\"\nschemas_dir = \"{}\"\ndata_dir = \"data\"",
            schemas.display()
        ),
    )
}

fn post(target: &str, content_type: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(target)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap()
}

/// Every class of refusal, an upstream failure, a timeout and successes, each with the NIK in
/// the path, the query, a header or the body; each request's expected status and problem.
async fn every_kind_of_exchange(addr: std::net::SocketAddr, pki: &TestPki) -> Vec<Answer> {
    let dinkes = Client::new(addr, &pki.ca, Some(&pki.dinkes), Version::HTTP_11);
    let dinkes_h2 = Client::new(addr, &pki.ca, Some(&pki.dinkes), Version::HTTP_2);
    let dukcapil = Client::new(addr, &pki.ca, Some(&pki.dukcapil), Version::HTTP_11);
    let stranger = Client::new(addr, &pki.ca, Some(&pki.stranger), Version::HTTP_11);
    let verification = format!(r#"{{"nik":"{NIK}","nama":"{NAME}"}}"#);
    let get = |target: String| Request::get(target).body(Full::new(Bytes::new())).unwrap();
    let mut with_header = get(format!("/dukcapil/penduduk/penduduk/{NIK}"));
    with_header
        .headers_mut()
        .insert("spl-agreement", NIK.parse().unwrap());
    let mut extension = get(format!("/kependudukan/penduduk/{NIK}"));
    *extension.method_mut() = Method::from_bytes(NIK.as_bytes()).unwrap();
    let cases: Vec<(&Client, Request<Full<Bytes>>, u16, &str)> = vec![
        // Forwarded: the NIK in the path and the query, undeclared parameters too.
        (
            &dinkes,
            get(format!(
                "/dukcapil/penduduk/penduduk/{NIK}?nik={NIK}&nama={NIK}"
            )),
            200,
            "",
        ),
        (
            &dinkes,
            get(format!(
                "/kependudukan/penduduk/{NIK}?kode_wilayah=7208&{NIK}=1"
            )),
            200,
            "",
        ),
        (
            &dinkes_h2,
            post(
                "/kependudukan/verifikasi",
                "application/json",
                verification.clone(),
            ),
            200,
            "",
        ),
        // Refused by the caller's own input.
        (
            &dinkes,
            get(format!("/kependudukan/penduduk/{NIK}0")),
            422,
            "invalid-parameter",
        ),
        (
            &dinkes,
            post(
                "/kependudukan/verifikasi",
                "application/json",
                format!(r#"{{"nik":"{NIK}x","nama":"{NAME}"}}"#),
            ),
            422,
            "request-schema-violation",
        ),
        (
            &dinkes,
            post(
                "/kependudukan/verifikasi",
                "application/json",
                format!(r#"{{"nik":"{NIK}","#),
            ),
            400,
            "malformed-json",
        ),
        (
            &dinkes,
            post(
                "/kependudukan/verifikasi",
                &format!("text/x-{NIK}"),
                verification.clone(),
            ),
            415,
            "unsupported-media-type",
        ),
        (
            &dinkes,
            post(
                "/kependudukan/verifikasi",
                "application/json",
                format!(r#"{{"nik":"{NIK}","nama":"{}"}}"#, "x".repeat(2048)),
            ),
            413,
            "body-too-large",
        ),
        (
            &dinkes,
            get(format!("/kependudukan/tidak-ada/{NIK}")),
            404,
            "no-operation",
        ),
        (&dinkes, get(format!("/tidak-ada/{NIK}")), 404, "no-route"),
        (
            &dinkes,
            get(format!("/kependudukan/penduduk/{NIK}%zz")),
            400,
            "malformed-path",
        ),
        (
            &dinkes,
            Request::delete(format!("/kependudukan/penduduk/{NIK}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
            405,
            "method-not-allowed",
        ),
        (&dinkes, extension, 405, "method-not-allowed"),
        (&dinkes, with_header, 403, "no-agreement"),
        // Refused for who the caller is.
        (
            &dukcapil,
            get(format!("/dukcapil/penduduk/penduduk/{NIK}")),
            403,
            "no-agreement",
        ),
        (
            &stranger,
            get(format!("/dukcapil/penduduk/penduduk/{NIK}")),
            403,
            "unknown-agency",
        ),
        // The upstream's failures.
        (
            &dinkes,
            get(format!("/mati/penduduk/{NIK}?nik={NIK}")),
            503,
            "upstream-unavailable",
        ),
        (
            &dinkes,
            get(format!("/lambat/penduduk/{NIK}?nik={NIK}")),
            504,
            "upstream-timeout",
        ),
    ];
    let mut answers = Vec::new();
    for (client, request, status, problem) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let answer = client
            .send(request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if problem.is_empty() {
            assert_eq!(answer.status.as_u16(), status, "{what}: {answer:?}");
        } else {
            answer.problem(status, problem);
        }
        answers.push(answer);
    }
    answers
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `openssl dgst -<algorithm>` of `bytes`: the digest as a program nobody here wrote computes it.
fn openssl_digest(algorithm: &str, bytes: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", &format!("-{algorithm}"), "-r"])
        .arg(file.path())
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()[..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// The binary at `RUST_LOG=trace`, in human and in JSON lines: every refusal class, an upstream
/// failure, a timeout and successes with a NIK in the path, the query, a header and the body
/// leave the NIK nowhere in stderr — and the lines about them are there (naming their
/// exchange ids and problem types), so the check is not passing on an empty log. Then the
/// audit files: no SHA-256, SHA-1 or MD5 of a body (hex or raw), and the NIK nowhere in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_and_no_audit_file_gives_a_nik_away() {
    for format in ["human", "json"] {
        let pki = TestPki::new();
        let (upstream, recorder) = recording_upstream(&pki).await;
        let silent = support::silent_upstream(&pki).await;
        let closed = support::closed_port();
        let text = config(&pki, &upstream, &silent, &closed.url);
        let stderr_path = pki.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let served = support::Served::start(pki.path(), &text, |file| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_penghubung"));
            command
                .args(["--log-format", format, "serve", "--config"])
                .arg(file)
                .env("RUST_LOG", "trace")
                .stdout(Stdio::null())
                .stderr(stderr.try_clone().unwrap());
            command
        })
        .await;
        let answers = every_kind_of_exchange(served.addr(), &pki).await;
        // The upstream got the NIK: the gateway forwards what it must.
        assert!(recorder
            .requests()
            .iter()
            .any(|seen| seen.path_and_query.contains(NIK)));
        drop(served);
        drop(closed);

        let log = std::fs::read_to_string(&stderr_path).unwrap();
        for (i, line) in log.lines().enumerate() {
            assert!(
                !line.contains(NIK_TAIL) && !line.contains(NAME),
                "{format} log line {i} gives the NIK away:\n{line}"
            );
        }
        // The lines are there: each refusal's exchange id, and trace-level lines at all.
        for answer in answers.iter().filter(|a| a.status.as_u16() >= 400) {
            let id = answer.headers["spl-exchange-id"].to_str().unwrap();
            let problem = answer.json()["type"].as_str().unwrap().to_owned();
            let slug = problem.rsplit(':').next().unwrap();
            assert!(
                log.lines().any(|l| l.contains(id) && l.contains(slug)),
                "no {format} log line names exchange {id} ({slug}):\n{log}"
            );
        }
        assert!(log.contains("TRACE"), "RUST_LOG=trace logged no trace line");

        // The audit files.
        let data = pki.path().join("data");
        let mut bodies: Vec<Vec<u8>> =
            vec![format!(r#"{{"nik":"{NIK}","nama":"{NAME}"}}"#).into_bytes()];
        bodies.extend(answers.iter().map(|a| a.body.to_vec()));
        let mut needles: Vec<Vec<u8>> =
            vec![NIK_TAIL.as_bytes().to_vec(), NAME.as_bytes().to_vec()];
        for body in bodies.iter().filter(|b| !b.is_empty()) {
            for algorithm in ["sha256", "sha1", "md5"] {
                let hex = openssl_digest(algorithm, body);
                needles.push(data_encoding::HEXLOWER.decode(hex.as_bytes()).unwrap());
                needles.push(hex.to_uppercase().into_bytes());
                needles.push(hex.into_bytes());
            }
        }
        let stored = files(&data);
        assert!(
            stored
                .iter()
                .any(|f| f.to_string_lossy().contains("segment-")),
            "no audit segment under {}",
            data.display()
        );
        for file in stored {
            let bytes = std::fs::read(&file).unwrap();
            for needle in &needles {
                assert!(
                    !contains(&bytes, needle),
                    "{} holds {:?}",
                    file.display(),
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }
}

fn start(pki: &TestPki, text: &str) -> Gateway {
    let snapshot =
        load_str(text, &pki.path().join("p.toml"), pki.path()).unwrap_or_else(|e| panic!("{e}"));
    Gateway::new(Arc::new(snapshot)).unwrap()
}

fn caller(gateway: &Gateway, pki: &TestPki) -> Caller {
    Caller::resolve(
        &gateway.snapshot(),
        "127.0.0.1:1".parse().unwrap(),
        IdentityField::SubjectCn.extract(&pki.dinkes.cert),
    )
}

async fn call(
    gateway: &Gateway,
    caller: &Caller,
    request: Request<Full<Bytes>>,
) -> (u16, http::HeaderMap, Bytes) {
    use http_body_util::BodyExt;
    let response = gateway.handle(caller, request).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

fn records(pki: &TestPki) -> Vec<Record> {
    let mut all = Vec::new();
    audit::walk(&pki.path().join("data/audit"), |r, _| {
        all.push(r.clone());
        Ok(())
    })
    .unwrap();
    all.into_iter().filter(|r| r.kind == "exchange").collect()
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_penghubung"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The caller gets the nonce, the owner's service gets the same one, the record commits to
/// both bodies under it (as `openssl dgst -hmac` computes it), and `audit prove` accepts the
/// bodies with that nonce and refuses a changed body or another nonce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parties_prove_what_they_exchanged_and_nobody_else_can() {
    let pki = TestPki::new();
    let (upstream, recorder) = recording_upstream(&pki).await;
    let text = config(
        &pki,
        &upstream,
        "https://127.0.0.1:9",
        "https://127.0.0.1:9",
    );
    let gateway = start(&pki, &text);
    let dinkes = caller(&gateway, &pki);
    let body = format!(r#"{{"nik":"{NIK}","nama":"{NAME}"}}"#);
    let (status, headers, answer) = call(
        &gateway,
        &dinkes,
        post("/kependudukan/verifikasi", "application/json", body.clone()),
    )
    .await;
    assert_eq!(status, 200);
    let id = headers["spl-exchange-id"].to_str().unwrap().to_owned();
    let nonce_text = headers["spl-commitment-nonce"].to_str().unwrap().to_owned();
    let nonce = Nonce::parse(&nonce_text).unwrap();
    // The owner's service got the same nonce, and a forged one from the caller is replaced.
    let seen = recorder.requests();
    assert_eq!(seen[0].headers["spl-commitment-nonce"], nonce_text.as_str());
    let mut forged = post("/kependudukan/verifikasi", "application/json", body.clone());
    forged
        .headers_mut()
        .insert("spl-commitment-nonce", nonce_text.parse().unwrap());
    let (_, again, _) = call(&gateway, &dinkes, forged).await;
    let fresh = again["spl-commitment-nonce"].to_str().unwrap();
    assert_ne!(fresh, nonce_text, "a nonce was reused");
    assert_eq!(
        recorder.requests()[1].headers["spl-commitment-nonce"],
        fresh
    );

    // The record's commitments, as OpenSSL computes an HMAC keyed with the nonce.
    let record = records(&pki)
        .into_iter()
        .find(|r| r.exchange_id.as_deref() == Some(id.as_str()))
        .unwrap();
    let hmac = |bytes: &[u8]| {
        let key = data_encoding::HEXLOWER.encode(
            &data_encoding::BASE64URL_NOPAD
                .decode(nonce_text.as_bytes())
                .unwrap(),
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        let out = Command::new("openssl")
            .args(["dgst", "-sha256", "-mac", "HMAC", "-macopt"])
            .arg(format!("hexkey:{key}"))
            .arg("-r")
            .arg(file.path())
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()[..64].to_owned()
    };
    let request = record.request.as_ref().unwrap();
    assert_eq!(
        request.commitment.as_deref(),
        Some(hmac(body.as_bytes()).as_str())
    );
    assert_eq!(request.length, body.len() as u64);
    assert_eq!(request.sha256, None);
    assert_eq!(
        record.response.as_ref().unwrap().commitment.as_deref(),
        Some(hmac(&answer).as_str())
    );
    assert_eq!(record.response, Some(audit::commit(&nonce, false, &answer)));

    // A receipt (once a signed tree head covers the exchange), then the proof.
    let dir = pki.path().join("data/audit");
    let mut receipt = String::new();
    for _ in 0..100 {
        let (code, out) = cli(&["audit", "receipt", dir.to_str().unwrap(), &id]);
        if code == 0 {
            receipt = out;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!receipt.is_empty(), "no receipt for {id}");
    drop(gateway);
    let file = |name: &str, bytes: &[u8]| {
        let path = pki.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let receipt_file = file("receipt.json", receipt.as_bytes());
    let (_, pubkey) = cli(&[
        "audit",
        "pubkey",
        "--config",
        &file("p.toml", text.as_bytes()),
    ]);
    let pubkey_file = file("audit.pub", pubkey.lines().next().unwrap().as_bytes());
    let request_file = file("request.json", body.as_bytes());
    let response_file = file("response.json", &answer);
    let prove = |nonce: &str, request: &str, response: &str| {
        cli(&[
            "audit",
            "prove",
            &receipt_file,
            "--nonce",
            nonce,
            "--request",
            request,
            "--response",
            response,
            "--pubkey",
            &pubkey_file,
        ])
    };
    let (code, out) = prove(&nonce_text, &request_file, &response_file);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("request:") && out.contains("response:"),
        "{out}"
    );

    let changed = file(
        "changed.json",
        format!(r#"{{"nik":"7208014101900078","nama":"{NAME}"}}"#).as_bytes(),
    );
    let (code, out) = prove(&nonce_text, &changed, &response_file);
    assert_eq!(code, 1, "a changed body was accepted: {out}");
    assert!(out.contains("request: ") && out.contains("NOT"), "{out}");
    let (code, out) = prove(&Nonce::fresh().encoded(), &request_file, &response_file);
    assert_eq!(code, 1, "another nonce was accepted: {out}");
    // A nonce is base64url: one in 64 starts with `-`, and is a value, not an option.
    // (Another nonce than the exchange's: its second character differs too.)
    let second = if &nonce_text[1..2] == "A" { "B" } else { "A" };
    let hyphen = format!("-{second}{}", &nonce_text[2..]);
    let (code, out) = prove(&hyphen, &request_file, &response_file);
    assert_eq!(
        code, 1,
        "a nonce starting with `-` was not read as one: {out}"
    );
    let (code, out) = prove("not-a-nonce", &request_file, &response_file);
    assert_eq!(code, 2, "{out}");
    // Without --pubkey the commitment is still checked, and it says the receipt was not.
    let (code, out) = cli(&[
        "audit",
        "prove",
        &receipt_file,
        "--nonce",
        &nonce_text,
        "--response",
        &response_file,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("--pubkey"), "{out}");
}

/// Every parameter value is a keyed hash unless `audit_clear` names it; undeclared query
/// parameters keep only their names; with two keys the first writes, records name it, and
/// `audit find` finds records written under either.
#[tokio::test]
async fn values_are_hashed_by_default_and_found_under_every_key() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let text = config(
        &pki,
        &upstream,
        "https://127.0.0.1:9",
        "https://127.0.0.1:9",
    );
    let old_key = std::fs::read(pki.path().join("redaction.key")).unwrap();
    let gateway = start(&pki, &text);
    let dinkes = caller(&gateway, &pki);
    let get = |target: String| Request::get(target).body(Full::new(Bytes::new())).unwrap();
    let (status, _, _) = call(
        &gateway,
        &dinkes,
        get(format!(
            "/kependudukan/penduduk/{NIK}?kode_wilayah=7208&nama=Siti&{NIK}"
        )),
    )
    .await;
    assert_eq!(status, 200);
    drop(gateway);

    // A new key in front of the old one.
    std::fs::write(
        pki.path().join("redaction-new.key"),
        penghubung::pki::redaction_key(),
    )
    .unwrap();
    let rotated = text.edit_once(
        "redaction_key = \"redaction.key\"",
        "redaction_key = [\"redaction-new.key\", \"redaction.key\"]",
    );
    let gateway = start(&pki, &rotated);
    let (status, _, _) = call(
        &gateway,
        &dinkes,
        get(format!("/dukcapil/penduduk/penduduk/{NIK}?nik={NIK}")),
    )
    .await;
    assert_eq!(status, 200);
    drop(gateway);

    let old = audit::Redactor::from_file_bytes(&old_key).unwrap();
    let new = audit::Redactor::from_file_bytes(
        &std::fs::read(pki.path().join("redaction-new.key")).unwrap(),
    )
    .unwrap();
    let log = records(&pki);
    // The NIK is hashed as a path value, and as the "name" of an undeclared parameter; the
    // undeclared `nama` loses its value; `kode_wilayah` is in clear, as declared.
    assert_eq!(
        log[0].target.as_deref(),
        Some(
            format!(
                "/kependudukan/penduduk/{h}?kode_wilayah=7208&nama&{h}",
                h = old.redact(NIK)
            )
            .as_str()
        )
    );
    assert_eq!(log[0].redaction_key.as_deref(), Some(old.key_id()));
    assert_eq!(
        log[1].target.as_deref(),
        Some(format!("/dukcapil/penduduk/penduduk/{}?nik", new.redact(NIK)).as_str())
    );
    assert_eq!(log[1].redaction_key.as_deref(), Some(new.key_id()));

    let config_file = pki.path().join("rotated.toml");
    std::fs::write(&config_file, &rotated).unwrap();
    let (code, out) = cli(&[
        "audit",
        "find",
        "--config",
        config_file.to_str().unwrap(),
        "--param",
        &format!("nik={NIK}"),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 matching records"), "{out}");
    // A value written in clear is found as it is.
    let (_, out) = cli(&[
        "audit",
        "find",
        "--config",
        config_file.to_str().unwrap(),
        "--param",
        "kode_wilayah=7208",
    ]);
    assert!(out.contains("1 matching records"), "{out}");
}

/// `audit_redact` is still accepted, and `check` says it is the default now; a parameter both
/// hashed and in clear, an empty `audit_clear` name or an empty key list are errors naming
/// their TOML path.
#[test]
fn the_configuration_says_what_is_hashed_and_refuses_contradictions() {
    let pki = TestPki::new();
    let text = config(
        &pki,
        "https://127.0.0.1:9",
        "https://127.0.0.1:9",
        "https://127.0.0.1:9",
    );
    let load = |text: &str| load_str(text, &pki.path().join("c.toml"), pki.path());
    let redact = text.edit_once(
        "  audit_clear = [\"kode_wilayah\"]",
        "  audit_clear = [\"kode_wilayah\"]\n  audit_redact = [\"nik\"]",
    );
    let snapshot = load(&redact).unwrap_or_else(|e| panic!("{e}"));
    let warning = snapshot
        .warnings
        .iter()
        .find(|w| w.path == "services[2].operations[0].audit_redact[0]")
        .unwrap_or_else(|| panic!("no warning about audit_redact: {:?}", snapshot.warnings));
    assert!(
        warning.message.contains("audit_clear"),
        "{}",
        warning.message
    );

    let both = text.edit_once(
        "  audit_clear = [\"kode_wilayah\"]",
        "  audit_clear = [\"kode_wilayah\"]\n  audit_redact = [\"kode_wilayah\"]",
    );
    let errors = load(&both)
        .err()
        .expect("hashed and in clear at once")
        .to_string();
    assert!(
        errors.contains("services[2].operations[0].audit_redact[0]"),
        "{errors}"
    );
    let empty = text.edit_once("audit_clear = [\"kode_wilayah\"]", "audit_clear = [\"\"]");
    let errors = load(&empty).err().expect("an empty name").to_string();
    assert!(
        errors.contains("services[2].operations[0].audit_clear[0]"),
        "{errors}"
    );
    let none = text.edit_once("redaction_key = \"redaction.key\"", "redaction_key = []");
    let errors = load(&none).err().expect("no key file").to_string();
    assert!(errors.contains("audit.redaction_key"), "{errors}");
    let unreadable = text.edit_once(
        "redaction_key = \"redaction.key\"",
        "redaction_key = [\"redaction.key\", \"missing.key\"]",
    );
    let errors = load(&unreadable)
        .err()
        .expect("a missing key file")
        .to_string();
    assert!(errors.contains("audit.redaction_key[1]"), "{errors}");
}
