//! Governance (issue #18): an agreement opens a `terbatas` service only when its data owner
//! signed its terms (Perbup Maluku Tengah 50/2020 Ps 14(3)), or when the Bupati ordered it in
//! writing (Ps 14(8)). Real keys (rcgen, ECDSA P-256 and Ed25519), real files, the real binary
//! for `agreement terms|sign`, and tools nobody here wrote to check the canonical form (Python's
//! `json`) and the signature (`openssl dgst`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use penghubung::config::{agreement_terms, load_str, Basis, ConfigErrors, Snapshot};
use penghubung::consent::{self, Role, SignatureFile};
use penghubung::pki::{Authority, Issued};
use support::{config_text, Edit, TestPki};

const BIN: &str = env!("CARGO_BIN_EXE_penghubung");
const UPSTREAM: &str = "https://127.0.0.1:9";
/// `printf test | sha256sum`: stands for the signed PKS document.
const DOC: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const OTHER_DOC: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

/// The test configuration under `owner_consent = "required"`: both agencies' clearances have a
/// basis, and agreement `PKS-TEST-1` (dinkes → dukcapil's `terbatas` service) carries
/// `agreement` lines besides its terms.
fn governed(agreement: &str) -> String {
    let extra = format!(
        "operations = [\"get-penduduk\"]\nrate = \"10/s\"\ndocument_sha256 = \"{DOC}\"\n{agreement}\n\n[governance]\nowner_consent = \"required\"\n"
    );
    with_clearance_basis(&config_text(UPSTREAM, "5s", &extra))
}

fn with_clearance_basis(text: &str) -> String {
    text.edit_once(
        "clearance = \"terbatas\"\n",
        "clearance = \"terbatas\"\nclearance_basis = \"Keputusan Kepala Dinas Kominfo 7/2026\"\n",
    )
    .edit_once(
        "clearance = \"rahasia\"\n",
        "clearance = \"rahasia\"\nclearance_basis = \"Keputusan Kepala Dinas Kominfo 8/2026\"\n",
    )
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn load(pki: &TestPki, text: &str) -> Result<Snapshot, ConfigErrors> {
    load_str(text, &pki.path().join("penghubung.toml"), pki.path())
}

fn loads(pki: &TestPki, text: &str) -> Snapshot {
    load(pki, text).unwrap_or_else(|e| panic!("refused a valid configuration: {e}\n{text}"))
}

fn refused(pki: &TestPki, text: &str) -> ConfigErrors {
    match load(pki, text) {
        Ok(_) => panic!("accepted a configuration it must refuse:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts an error at `path` mentioning every needle.
fn assert_error(errors: &ConfigErrors, path: &str, needles: &[&str]) {
    assert!(
        errors
            .errors
            .iter()
            .any(|e| e.path == path && needles.iter().all(|n| e.message.contains(n))),
        "no error at `{path}` mentioning {needles:?} in:\n{errors}"
    );
}

/// Writes `text` as the configuration and signs agreement `PKS-TEST-1`'s terms as `role` with
/// `who`'s key, at `at`, into `name`.
fn sign_into(pki: &TestPki, text: &str, who: &Issued, role: Role, at: i64, name: &str) {
    let config = support::write_config(pki.path(), text);
    let terms = agreement_terms(&config, "PKS-TEST-1").unwrap();
    let file = consent::sign(&terms, role, std::slice::from_ref(&who.cert), &who.key, at).unwrap();
    std::fs::write(pki.path().join(name), file.to_json()).unwrap();
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run penghubung")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn an_agreement_signed_by_its_owner_loads_with_its_signer_recorded() {
    let pki = TestPki::new();
    let text = governed("owner_signature = \"pks.sig\"");
    sign_into(&pki, &text, &pki.dukcapil, Role::Owner, now(), "pks.sig");
    let snapshot = loads(&pki, &text);
    let agreement = &snapshot.agreements[0];
    let signed = agreement.owner_signature.as_ref().expect("owner signature");
    assert!(signed.subject.contains("dukcapil.test"), "{signed:?}");
    assert_eq!(signed.fingerprint.len(), 64);
    assert_eq!(agreement.basis, Basis::Kesepakatan);
    assert_eq!(agreement.document_sha256.as_deref(), Some(DOC));
    assert!(snapshot.warnings.is_empty(), "{:?}", snapshot.warnings);
}

#[test]
fn an_ed25519_owner_key_signs_as_well() {
    let pki = TestPki::new();
    let owner = pki.ca.issue_client_ed25519(support::DUKCAPIL).unwrap();
    let text = governed("owner_signature = \"pks.sig\"");
    sign_into(&pki, &text, &owner, Role::Owner, now(), "pks.sig");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pki.path().join("pks.sig")).unwrap())
            .unwrap();
    assert_eq!(file["algorithm"], "ed25519");
    loads(&pki, &text);
}

#[test]
fn an_unsigned_agreement_is_an_error_under_required_a_warning_under_warn_and_silent_in_old_files() {
    let pki = TestPki::new();
    let errors = refused(&pki, &governed(""));
    assert_error(
        &errors,
        "agreements[0].owner_signature",
        &[
            "PKS-TEST-1",
            "not signed by its owner `dukcapil`",
            "required",
        ],
    );

    let warn = governed("").edit_once("owner_consent = \"required\"", "owner_consent = \"warn\"");
    let snapshot = loads(&pki, &warn);
    assert!(
        snapshot
            .warnings
            .iter()
            .any(|w| w.path == "agreements[0].owner_signature" && w.message.contains("PKS-TEST-1")),
        "{:?}",
        snapshot.warnings
    );

    let old = config_text(UPSTREAM, "5s", "");
    assert!(loads(&pki, &old).warnings.is_empty());
}

#[test]
fn a_terbuka_service_needs_no_signature() {
    let pki = TestPki::new();
    let text = governed("").edit_once(
        "classification = \"terbatas\"",
        "classification = \"terbuka\"",
    );
    loads(&pki, &text);
}

#[test]
fn the_consumer_signing_as_owner_is_refused_and_as_consumer_is_recorded() {
    let pki = TestPki::new();
    let text = governed("owner_signature = \"pks.sig\"");
    sign_into(&pki, &text, &pki.dinkes, Role::Owner, now(), "pks.sig");
    assert_error(
        &refused(&pki, &text),
        "agreements[0].owner_signature",
        &[
            "signed by `dinkes`",
            "not by the service's owner `dukcapil`",
        ],
    );

    let text = governed("owner_signature = \"owner.sig\"\nconsumer_signature = \"consumer.sig\"");
    sign_into(&pki, &text, &pki.dukcapil, Role::Owner, now(), "owner.sig");
    sign_into(
        &pki,
        &text,
        &pki.dinkes,
        Role::Consumer,
        now(),
        "consumer.sig",
    );
    let snapshot = loads(&pki, &text);
    let consumer = snapshot.agreements[0].consumer_signature.as_ref().unwrap();
    assert!(consumer.subject.contains("dinkes.test"));

    // The owner's file offered as the consumer's: the role is signed, so it cannot be swapped.
    std::fs::copy(
        pki.path().join("owner.sig"),
        pki.path().join("consumer.sig"),
    )
    .unwrap();
    assert_error(
        &refused(&pki, &text),
        "agreements[0].consumer_signature",
        &["Owner", "Consumer"],
    );
}

#[test]
fn a_signer_from_a_foreign_ca_or_naming_no_agency_is_refused() {
    let pki = TestPki::new();
    let text = governed("owner_signature = \"pks.sig\"");
    let foreign = Authority::new("Some Other CA")
        .unwrap()
        .issue_client(support::DUKCAPIL, None)
        .unwrap();
    sign_into(&pki, &text, &foreign, Role::Owner, now(), "pks.sig");
    assert_error(
        &refused(&pki, &text),
        "agreements[0].owner_signature",
        &["not valid under a signer CA"],
    );

    sign_into(&pki, &text, &pki.stranger, Role::Owner, now(), "pks.sig");
    assert_error(
        &refused(&pki, &text),
        "agreements[0].owner_signature",
        &["names no agency", "`dukcapil` must sign"],
    );
}

#[test]
fn a_separate_signer_ca_replaces_the_client_cas_for_signatures() {
    let pki = TestPki::new();
    let signers = Authority::new("Regency Signing CA").unwrap();
    std::fs::write(pki.path().join("signer-ca.crt"), signers.cert_pem()).unwrap();
    let owner = signers.issue_client(support::DUKCAPIL, None).unwrap();
    let text = governed("owner_signature = \"pks.sig\"").edit_once(
        "owner_consent = \"required\"\n",
        "owner_consent = \"required\"\nsigner_ca = [\"signer-ca.crt\"]\n",
    );
    sign_into(&pki, &text, &owner, Role::Owner, now(), "pks.sig");
    loads(&pki, &text);

    // The client CA no longer vouches for signers.
    sign_into(&pki, &text, &pki.dukcapil, Role::Owner, now(), "pks.sig");
    assert_error(
        &refused(&pki, &text),
        "agreements[0].owner_signature",
        &["not valid under a signer CA"],
    );
}

#[test]
fn every_term_changed_after_signing_breaks_the_signature_and_is_named() {
    let pki = TestPki::new();
    let text = governed("owner_signature = \"pks.sig\"");
    sign_into(&pki, &text, &pki.dukcapil, Role::Owner, now(), "pks.sig");
    loads(&pki, &text);
    let changes: [(&str, &str, &str); 7] = [
        (
            "purpose",
            "purpose = \"Pengujian gateway\"",
            "purpose = \"Pemasaran\"",
        ),
        (
            "valid_until",
            "valid_until = 2099-12-31",
            "valid_until = 2100-12-31",
        ),
        (
            "valid_from",
            "valid_from = 2020-01-01",
            "valid_from = 2019-01-01",
        ),
        ("rate", "rate = \"10/s\"", "rate = \"20/s\""),
        (
            "operations",
            "operations = [\"get-penduduk\"]",
            "operations = [\"get-penduduk\", \"verifikasi\"]",
        ),
        (
            "document_sha256",
            &format!("document_sha256 = \"{DOC}\""),
            &format!("document_sha256 = \"{OTHER_DOC}\""),
        ),
        (
            "basis",
            "owner_signature = \"pks.sig\"",
            "owner_signature = \"pks.sig\"\nbasis = \"sop\"\nsop = \"SOP Dukcapil 3/2026\"",
        ),
    ];
    for (field, from, to) in changes {
        let changed = text.edit_once(from, to);
        assert_error(
            &refused(&pki, &changed),
            "agreements[0].owner_signature",
            &["signed terms differ", &format!("`{field}`")],
        );
    }
    // Removing the rate widens the agreement too.
    let unlimited = text.edit_once("rate = \"10/s\"\n", "");
    assert_error(
        &refused(&pki, &unlimited),
        "agreements[0].owner_signature",
        &["`rate` (signed: 10/s; configured: (none))"],
    );
}

#[test]
fn a_tampered_signature_file_is_refused() {
    let pki = TestPki::new();
    let text = governed("owner_signature = \"pks.sig\"");
    sign_into(&pki, &text, &pki.dukcapil, Role::Owner, now(), "pks.sig");
    let path = pki.path().join("pks.sig");
    let mut file = SignatureFile::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();

    // Widened terms carried in the file, with their digest recomputed: the signature breaks.
    let mut widened = file.clone();
    widened.terms.valid_until = "2100-12-31".to_owned();
    widened.terms_sha256 = widened.terms.sha256();
    std::fs::write(&path, widened.to_json()).unwrap();
    let changed = text.edit_once("valid_until = 2099-12-31", "valid_until = 2100-12-31");
    assert_error(
        &refused(&pki, &changed),
        "agreements[0].owner_signature",
        &["does not verify"],
    );

    // One bit of the signature flipped.
    let mut raw = base64::engine::general_purpose::STANDARD
        .decode(&file.signature)
        .unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    file.signature = base64::engine::general_purpose::STANDARD.encode(raw);
    std::fs::write(&path, file.to_json()).unwrap();
    assert_error(
        &refused(&pki, &text),
        "agreements[0].owner_signature",
        &["does not verify"],
    );

    std::fs::write(&path, "not json").unwrap();
    assert_error(
        &refused(&pki, &text),
        "agreements[0].owner_signature",
        &["is not a signature file"],
    );
    std::fs::remove_file(&path).unwrap();
    assert_error(
        &refused(&pki, &text),
        "agreements[0].owner_signature",
        &["cannot read"],
    );
}

/// A signature is judged at its signing time: one made while the certificate was valid still
/// holds after it expires, one made with an expired certificate never does.
#[test]
fn a_certificate_expired_at_signing_time_cannot_sign_and_its_signature_is_refused() {
    let pki = TestPki::new();
    let day = time::Duration::days(1);
    let t = time::OffsetDateTime::now_utc();
    let expired = pki
        .ca
        .issue_client_valid(support::DUKCAPIL, t - time::Duration::days(10), t - day)
        .unwrap();
    let text = governed("owner_signature = \"pks.sig\"");
    let config = support::write_config(pki.path(), &text);
    let terms = agreement_terms(&config, "PKS-TEST-1").unwrap();
    let refusal = consent::sign(
        &terms,
        Role::Owner,
        std::slice::from_ref(&expired.cert),
        &expired.key,
        now(),
    )
    .unwrap_err();
    assert!(refusal.to_string().contains("not at"), "{refusal}");

    // Made while it was valid: still good.
    let before = (t - time::Duration::days(5)).unix_timestamp();
    sign_into(&pki, &text, &expired, Role::Owner, before, "pks.sig");
    loads(&pki, &text);

    // Made (by hand, past `sign`'s check) with the expired certificate today: refused.
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        expired.key.secret_der(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let signed_at = consent::rfc3339(now());
    let statement = format!(
        "{{\"agreement\":\"PKS-TEST-1\",\"format\":\"{}\",\"role\":\"owner\",\"signed_at\":\"{signed_at}\",\"terms_sha256\":\"{}\"}}",
        consent::FORMAT,
        terms.sha256()
    );
    let signature = key
        .sign(&ring::rand::SystemRandom::new(), statement.as_bytes())
        .unwrap();
    let mut file =
        SignatureFile::parse(&std::fs::read_to_string(pki.path().join("pks.sig")).unwrap())
            .unwrap();
    file.signed_at = signed_at;
    file.signature = base64::engine::general_purpose::STANDARD.encode(signature.as_ref());
    std::fs::write(pki.path().join("pks.sig"), file.to_json()).unwrap();
    assert_error(
        &refused(&pki, &text),
        "agreements[0].owner_signature",
        &["not valid under a signer CA"],
    );
}

#[test]
fn an_order_of_the_bupati_opens_access_without_the_owner_for_a_bounded_time() {
    let pki = TestPki::new();
    let order = "basis = \"perintah_bupati\"\norder_number = \"100.3.3.2/45/2026\"\norder_date = 2026-11-30";
    let text = governed(order)
        .edit_once("valid_from = 2020-01-01", "valid_from = 2026-12-01")
        .edit_once("valid_until = 2099-12-31", "valid_until = 2026-12-30");
    let snapshot = loads(&pki, &text);
    match &snapshot.agreements[0].basis {
        Basis::PerintahBupati { order_number, .. } => assert_eq!(order_number, "100.3.3.2/45/2026"),
        other => panic!("basis {other:?}"),
    }

    // 31 days is one more than max_order_days' default of 30.
    let long = text.edit_once("valid_until = 2026-12-30", "valid_until = 2026-12-31");
    assert_error(
        &refused(&pki, &long),
        "agreements[0].valid_until",
        &["at most 30 days", "is 31"],
    );
    let allowed = long.edit_once(
        "owner_consent = \"required\"\n",
        "owner_consent = \"required\"\nmax_order_days = 31\n",
    );
    loads(&pki, &allowed);

    let undated = text.edit_once("order_date = 2026-11-30", "");
    assert_error(
        &refused(&pki, &undated),
        "agreements[0].order_date",
        &["date of the order"],
    );
    let late = text.edit_once("order_date = 2026-11-30", "order_date = 2026-12-02");
    assert_error(
        &refused(&pki, &late),
        "agreements[0].order_date",
        &["after valid_from"],
    );
    let unnumbered = text.edit_once("order_number = \"100.3.3.2/45/2026\"\n", "");
    assert_error(
        &refused(&pki, &unnumbered),
        "agreements[0].order_number",
        &["number"],
    );
    let undocumented = text.edit_once(&format!("document_sha256 = \"{DOC}\"\n"), "");
    assert_error(
        &refused(&pki, &undocumented),
        "agreements[0].document_sha256",
        &["order's document"],
    );
    let stray = governed("order_number = \"1/2026\"");
    assert_error(
        &refused(&pki, &stray),
        "agreements[0].order_number",
        &["perintah_bupati"],
    );
}

#[test]
fn clearance_above_terbuka_names_its_basis_under_required() {
    let pki = TestPki::new();
    let text =
        governed("basis = \"perintah_bupati\"\norder_number = \"1/2026\"\norder_date = 2026-11-30")
            .edit_once("valid_from = 2020-01-01", "valid_from = 2026-12-01")
            .edit_once("valid_until = 2099-12-31", "valid_until = 2026-12-10")
            .edit_once(
                "clearance_basis = \"Keputusan Kepala Dinas Kominfo 7/2026\"\n",
                "",
            );
    assert_error(
        &refused(&pki, &text),
        "agencies[0].clearance_basis",
        &["required for clearance `terbatas`"],
    );
}

#[test]
fn bad_governance_settings_are_named() {
    let pki = TestPki::new();
    let text = governed("").edit_once("owner_consent = \"required\"", "owner_consent = \"maybe\"");
    assert_error(
        &refused(&pki, &text),
        "governance.owner_consent",
        &["`maybe`"],
    );
    let text =
        governed("owner_signature = \"pks.sig\"").edit_once(&format!("\"{DOC}\""), "\"ABC\"");
    assert_error(
        &refused(&pki, &text),
        "agreements[0].document_sha256",
        &["64 lowercase hex"],
    );
    let text = governed("").edit_once(
        "owner_consent = \"required\"\n",
        "owner_consent = \"required\"\nsigner_ca = [\"missing.crt\"]\n",
    );
    assert_error(
        &refused(&pki, &text),
        "governance.signer_ca[0]",
        &["missing.crt"],
    );
}

/// The canonical terms `agreement terms` prints are what Python's `json` module writes for the
/// same object with sorted keys and no whitespace (RFC 8785 for strings, lists and null).
#[test]
fn agreement_terms_prints_rfc8785_canonical_json() {
    let pki = TestPki::new();
    let text = governed("").edit_once(
        "purpose = \"Pengujian gateway\"",
        "purpose = \"Verifikasi \\\"NIK\\\" — layanan kesehatan \\u00e9 \\t tab\"",
    );
    let config = support::write_config(pki.path(), &text);
    let out = run(&[
        "agreement",
        "terms",
        "--config",
        path_str(&config),
        "--id",
        "PKS-TEST-1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = stdout(&out);
    let printed = printed.strip_suffix('\n').unwrap();
    let python = Command::new("python3")
        .args([
            "-c",
            "import json,sys; s=sys.stdin.read(); print(json.dumps(json.loads(s), sort_keys=True, separators=(',',':'), ensure_ascii=False), end='')",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(printed.as_bytes())?;
            child.wait_with_output()
        })
        .expect("python3");
    assert_eq!(String::from_utf8(python.stdout).unwrap(), printed);
    let value: serde_json::Value = serde_json::from_str(printed).unwrap();
    assert_eq!(value["operations"], serde_json::json!(["get-penduduk"]));
    assert_eq!(value["document_sha256"], DOC);
    assert_eq!(value["basis"], "kesepakatan");
    assert!(value["purpose"]
        .as_str()
        .unwrap()
        .contains("\"NIK\" — layanan"));

    let unknown = run(&[
        "agreement",
        "terms",
        "--config",
        path_str(&config),
        "--id",
        "PKS-NOPE",
    ]);
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("no agreement `PKS-NOPE`") && stderr.contains("PKS-TEST-1"),
        "{stderr}"
    );
}

/// `agreement sign` with the owner's files; the file loads, and OpenSSL verifies its ECDSA
/// signature over the statement rebuilt by hand.
#[test]
fn agreement_sign_writes_a_file_the_gateway_loads_and_openssl_verifies() {
    let pki = TestPki::new();
    let text = governed("owner_signature = \"pks.sig\"");
    let config = support::write_config(pki.path(), &text);
    let cert = pki.path().join("dukcapil.crt");
    let key = pki.path().join("dukcapil.key");
    std::fs::write(&cert, &pki.dukcapil.cert_pem).unwrap();
    std::fs::write(&key, &pki.dukcapil.key_pem).unwrap();
    let out = run(&[
        "agreement",
        "sign",
        "--config",
        path_str(&config),
        "--id",
        "PKS-TEST-1",
        "--cert",
        path_str(&cert),
        "--key",
        path_str(&key),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sig = stdout(&out);
    std::fs::write(pki.path().join("pks.sig"), &sig).unwrap();
    loads(&pki, &text);

    let file: serde_json::Value = serde_json::from_str(&sig).unwrap();
    assert_eq!(file["algorithm"], "ecdsa-p256-sha256");
    assert_eq!(file["role"], "owner");
    let statement = format!(
        "{{\"agreement\":\"PKS-TEST-1\",\"format\":\"penghubung/agreement-signature/v1\",\"role\":\"owner\",\"signed_at\":{},\"terms_sha256\":{}}}",
        file["signed_at"], file["terms_sha256"]
    );
    let dir = pki.path();
    std::fs::write(dir.join("statement"), statement).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(file["signature"].as_str().unwrap())
        .unwrap();
    std::fs::write(dir.join("signature.der"), raw).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    openssl(&[
        "x509",
        "-in",
        "dukcapil.crt",
        "-pubkey",
        "-noout",
        "-out",
        "dukcapil.pub",
    ]);
    let verified = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        "dukcapil.pub",
        "-signature",
        "signature.der",
        "statement",
    ]);
    assert!(stdout(&verified).contains("Verified OK"));
    // terms_sha256 is the SHA-256 of what `agreement terms` prints.
    let terms = run(&[
        "agreement",
        "terms",
        "--config",
        path_str(&config),
        "--id",
        "PKS-TEST-1",
    ]);
    std::fs::write(dir.join("terms.json"), stdout(&terms).trim_end()).unwrap();
    let digest = openssl(&["dgst", "-sha256", "-r", "terms.json"]);
    assert!(stdout(&digest).starts_with(file["terms_sha256"].as_str().unwrap()));

    // The consumer's key signing as owner signs (the CLI does not know who is who)…
    let dinkes_cert = dir.join("dinkes.crt");
    let dinkes_key = dir.join("dinkes.key");
    std::fs::write(&dinkes_cert, &pki.dinkes.cert_pem).unwrap();
    std::fs::write(&dinkes_key, &pki.dinkes.key_pem).unwrap();
    // …but a key that does not belong to the certificate is refused.
    let mismatch = run(&[
        "agreement",
        "sign",
        "--config",
        path_str(&config),
        "--id",
        "PKS-TEST-1",
        "--cert",
        path_str(&cert),
        "--key",
        path_str(&dinkes_key),
    ]);
    assert!(!mismatch.status.success());
    assert!(String::from_utf8_lossy(&mismatch.stderr).contains("does not belong"));
}

#[test]
fn agreement_sign_refuses_an_expired_certificate() {
    let pki = TestPki::new();
    let day = time::Duration::days(1);
    let t = time::OffsetDateTime::now_utc();
    let expired = pki
        .ca
        .issue_client_valid(support::DUKCAPIL, t - time::Duration::days(10), t - day)
        .unwrap();
    let config = support::write_config(pki.path(), &governed(""));
    let (cert, key): (PathBuf, PathBuf) = (pki.path().join("old.crt"), pki.path().join("old.key"));
    std::fs::write(&cert, &expired.cert_pem).unwrap();
    std::fs::write(&key, &expired.key_pem).unwrap();
    let out = run(&[
        "agreement",
        "sign",
        "--config",
        path_str(&config),
        "--id",
        "PKS-TEST-1",
        "--cert",
        path_str(&cert),
        "--key",
        path_str(&key),
    ]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("old.crt") && stderr.contains("not at"),
        "{stderr}"
    );
}

/// An exchange under an agreement carries its basis to the owner (`SPL-Basis`), into its audit
/// record, the metrics and the report; the consumer's response carries its handling label.
#[tokio::test]
async fn the_basis_and_the_handling_label_travel_with_every_exchange() {
    use http::Version;
    let pki = TestPki::new();
    let (upstream, recorder) = support::recording_upstream(&pki).await;
    std::fs::write(
        pki.path().join("redaction.key"),
        penghubung::pki::redaction_key(),
    )
    .unwrap();
    let day = time::Duration::days(1);
    let today = time::OffsetDateTime::now_utc().date();
    let (from, until) = (today - day, today + time::Duration::days(20));
    let order = format!(
        "basis = \"perintah_bupati\"\norder_number = \"100.3.3.2/45/2026\"\norder_date = {from}"
    );
    let text = governed(&order)
        .edit_once(UPSTREAM, &upstream)
        .edit_once(UPSTREAM, &upstream)
        .edit_once("valid_from = 2020-01-01", &format!("valid_from = {from}"))
        .edit_once(
            "valid_until = 2099-12-31",
            &format!("valid_until = {until}"),
        )
        .edit_once(
            "\n[governance]",
            "\n[audit]\nredaction_key = \"redaction.key\"\ndurability = \"sync\"\n\n[governance]",
        );
    let running = support::Running::start(pki, &text).await;
    let pki = &running.pki;
    let dinkes = support::Client::new(running.addr, &pki.ca, Some(&pki.dinkes), Version::HTTP_2);

    let answer = dinkes
        .get("/dukcapil/penduduk/penduduk/7208014101900001")
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.headers["spl-classification"], "terbatas");
    assert_eq!(answer.headers["spl-agreement"], "PKS-TEST-1");
    let seen = recorder.requests().pop().unwrap();
    assert_eq!(seen.headers["spl-basis"], "perintah_bupati");
    assert_eq!(seen.headers["spl-agreement"], "PKS-TEST-1");

    // A caller cannot forge the basis the owner trusts.
    let forged = dinkes
        .send(
            http::Request::get("/dukcapil/penduduk/penduduk/7208014101900001")
                .header("spl-basis", "kesepakatan")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(forged.status, 200);
    let seen = recorder.requests().pop().unwrap();
    assert_eq!(
        seen.headers.get_all("spl-basis").iter().collect::<Vec<_>>(),
        ["perintah_bupati"]
    );

    // An open service: labelled, with no agreement.
    let open = dinkes.get("/dinkes/faskes").await.unwrap();
    assert_eq!(open.status, 200);
    assert_eq!(open.headers["spl-classification"], "terbuka");
    assert!(open.headers.get("spl-agreement").is_none());

    // The catalog states the duty and the basis.
    let catalog = dinkes.get("/.well-known/spl/catalog").await.unwrap().json();
    assert_eq!(
        catalog["clearance_basis"],
        "Keputusan Kepala Dinas Kominfo 7/2026"
    );
    let service = catalog["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "dukcapil-penduduk")
        .unwrap();
    assert_eq!(service["handling"]["classification"], "terbatas");
    assert!(service["handling"]["duty"]["id"]
        .as_str()
        .unwrap()
        .contains("kerahasiaan"));
    assert!(service["handling"]["duty"]["en"]
        .as_str()
        .unwrap()
        .contains("confidential"));
    let agreement = &service["operations"][0]["agreements"][0];
    assert_eq!(agreement["basis"], "perintah_bupati");
    assert_eq!(agreement["owner_signed"], false);

    let metrics = running.gateway.telemetry().encode();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("penghubung_agreement_exchanges_total{"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(
        line.contains("agreement=\"PKS-TEST-1\"")
            && line.contains("basis=\"perintah_bupati\"")
            && line.contains("consumer=\"dinkes\"")
            && line.contains("outcome=\"forwarded\"")
            && line.ends_with(" 2"),
        "{line}"
    );

    let dir = pki.path().join("data/audit");
    let mut bases = Vec::new();
    penghubung::audit::walk(&dir, |r, _| {
        if r.kind == "exchange" {
            bases.push((r.agreement.clone(), r.basis.clone()));
        }
        Ok(())
    })
    .unwrap();
    let ordered = (
        Some("PKS-TEST-1".to_owned()),
        Some("perintah_bupati".to_owned()),
    );
    assert_eq!(
        bases.iter().filter(|b| **b == ordered).count(),
        2,
        "{bases:?}"
    );
    assert!(bases.contains(&(None, None)), "{bases:?}");

    let window = |d: time::Date| penghubung::report::parse_date(&d.to_string()).unwrap();
    let report = penghubung::report::build(
        &dir,
        penghubung::report::Window {
            since: window(today - day),
            until: window(today + day),
            zone: penghubung::config::TimeZone::parse("UTC").unwrap(),
        },
    )
    .unwrap();
    let markdown = report.markdown();
    let section = markdown
        .split("## Exchanges on the Bupati's order (perintah_bupati)")
        .nth(1)
        .unwrap_or_else(|| panic!("{markdown}"));
    assert!(
        section.contains("| PKS-TEST-1 | dinkes | dukcapil-penduduk | 2 | 2 |"),
        "{markdown}"
    );
    assert!(markdown.contains(
        "| PKS-TEST-1 | perintah_bupati | dinkes | dukcapil-penduduk | Pengujian gateway | 2 | 2 |"
    ));
    assert_eq!(report.json()["agreements"][0]["basis"], "perintah_bupati");
}
