//! Configuration errors: every class is reported with the TOML path that caused it, all of a
//! file's errors at once; and every example in `config/` is accepted.

mod support;

use std::path::Path;
use std::process::Command;

use penghubung::config::{load_str, ConfigErrors};
use support::Edit;
use support::{config_text, TestPki};

const UPSTREAM: &str = "https://127.0.0.1:9";

fn base() -> String {
    config_text(UPSTREAM, "5s", "")
}

fn errors_of(pki: &TestPki, text: &str) -> ConfigErrors {
    match load_str(text, &pki.path().join("bad.toml"), pki.path()) {
        Ok(_) => panic!("accepted an invalid configuration:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts that an error at `path` mentions `needle`.
fn assert_error(errors: &ConfigErrors, path: &str, needle: &str) {
    assert!(
        errors
            .errors
            .iter()
            .any(|e| e.path == path && e.message.contains(needle)),
        "no error at `{path}` mentioning `{needle}` in:\n{errors}"
    );
    assert!(errors.to_string().contains(&format!("{path}: ")));
}

fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "fixture does not contain {from:?}");
    text.edit_once(from, to)
}

#[test]
fn the_base_fixture_is_valid() {
    let pki = TestPki::new();
    let snapshot = load_str(&base(), &pki.path().join("ok.toml"), pki.path()).unwrap();
    assert_eq!(snapshot.services.len(), 2);
    assert_eq!(snapshot.operation_count(), 3);
    assert_eq!(snapshot.gateway.max_request_body, 1024);
}

#[test]
fn unknown_keys_are_all_reported_with_their_paths() {
    let pki = TestPki::new();
    let text = replace(
        &base(),
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nlisten_port = 8443",
    );
    let text = replace(
        &text,
        "  method = \"POST\"",
        "  method = \"POST\"\n  metod = \"GET\"",
    );
    let text = replace(
        &text,
        "[[agencies]]\ncode = \"dukcapil\"",
        "[[agencies]]\ncode = \"dukcapil\"\nclearence = \"rahasia\"",
    );
    let text = format!("{text}\n[telemetri]\nendpoint = \"x\"\n");
    let e = errors_of(&pki, &text);
    assert_error(&e, "gateway.listen_port", "unknown key");
    assert_error(&e, "services[0].operations[1].metod", "unknown key");
    assert_error(&e, "agencies[1].clearence", "unknown key");
    assert_error(&e, "telemetri", "unknown key");
}

#[test]
fn missing_and_unusable_files() {
    let pki = TestPki::new();
    let text = replace(
        &base(),
        "cert = \"gateway.crt\"",
        "cert = \"nope/gateway.crt\"",
    );
    let text = replace(
        &text,
        "crl = [\"crl.pem\"]",
        "crl = [\"crl.pem\", \"missing.crl\"]",
    );
    std::fs::write(pki.path().join("empty.crt"), "not a certificate\n").unwrap();
    let text = replace(
        &text,
        "upstream_ca = \"ca.crt\"",
        "upstream_ca = \"empty.crt\"",
    );
    let e = errors_of(&pki, &text);
    assert_error(&e, "tls.cert", "nope/gateway.crt");
    assert_error(&e, "tls.crl[1]", "missing.crl");
    assert_error(&e, "services[0].upstream_ca", "no PEM certificate");
}

#[test]
fn bad_durations_sizes_and_rates() {
    let pki = TestPki::new();
    let text = replace(&base(), "timeout = \"5s\"", "timeout = \"5\"");
    let text = replace(
        &text,
        "max_request_body = \"1KiB\"",
        "max_request_body = \"1 lorry\"",
    );
    let text = format!(
        "{text}\n[cache]\nmax_size = \"lots\"\n\n[[agreements]]\nid = \"PKS-1\"\nconsumer = \"dinkes\"\nservice = \"dukcapil-penduduk\"\npurpose = \"x\"\nvalid_from = 2025-01-01\nvalid_until = 2025-12-31\nrate = \"20/fortnight\"\n"
    );
    let e = errors_of(&pki, &text);
    assert_error(&e, "services[0].timeout", "no unit");
    assert_error(&e, "gateway.max_request_body", "unknown unit");
    assert_error(&e, "cache.max_size", "not a size");
    assert_error(&e, "agreements[1].rate", "fortnight");
}

#[test]
fn duplicate_ids() {
    let pki = TestPki::new();
    let text = replace(&base(), "code = \"dukcapil\"", "code = \"dinkes\"");
    let text = replace(
        &text,
        "id = \"dinkes-faskes\"",
        "id = \"dukcapil-penduduk\"",
    );
    let text = replace(&text, "id = \"verifikasi\"", "id = \"get-penduduk\"");
    let text = format!(
        "{text}\n[[agreements]]\nid = \"PKS-1\"\nconsumer = \"dinkes\"\nservice = \"dukcapil-penduduk\"\npurpose = \"x\"\nvalid_from = 2025-01-01\nvalid_until = 2025-12-31\n\n[[agreements]]\nid = \"PKS-1\"\nconsumer = \"dinkes\"\nservice = \"dukcapil-penduduk\"\npurpose = \"y\"\nvalid_from = 2025-01-01\nvalid_until = 2025-12-31\n"
    );
    let e = errors_of(&pki, &text);
    assert_error(&e, "agencies[1].code", "duplicate agency code `dinkes`");
    assert_error(&e, "services[1].id", "duplicate service id");
    assert_error(
        &e,
        "services[0].operations[1].id",
        "duplicate operation id `get-penduduk`",
    );
    assert_error(&e, "agreements[2].id", "duplicate agreement id `PKS-1`");
}

#[test]
fn malformed_path_templates_and_prefixes() {
    let pki = TestPki::new();
    let text = replace(
        &base(),
        "path = \"/penduduk/{nik}\"",
        "path = \"/penduduk/{nik\"",
    );
    let text = replace(&text, "path = \"/verifikasi\"", "path = \"verifikasi\"");
    let text = replace(&text, "prefix = \"/dinkes\"", "prefix = \"/dinkes/../x\"");
    let e = errors_of(&pki, &text);
    assert_error(&e, "services[0].operations[0].path", "without closing");
    assert_error(&e, "services[0].operations[1].path", "must start with `/`");
    assert_error(&e, "services[1].prefix", "canonical");
}

#[test]
fn ambiguous_operations_are_refused() {
    let pki = TestPki::new();
    let text = replace(
        &base(),
        "  id = \"verifikasi\"\n  method = \"POST\"\n  path = \"/verifikasi\"",
        "  id = \"by-id\"\n  method = \"GET\"\n  path = \"/penduduk/{id}\"",
    );
    let e = errors_of(&pki, &text);
    assert_error(
        &e,
        "services[0].operations[1].path",
        "same requests as operation `get-penduduk`",
    );
}

#[test]
fn references_to_unknown_agencies_services_and_operations() {
    let pki = TestPki::new();
    let text = replace(&base(), "owner = \"dukcapil\"", "owner = \"disdukcapil\"");
    let text = format!(
        "{text}\n[[agreements]]\nid = \"PKS-1\"\nconsumer = \"dinsos\"\nservice = \"dinkes-faskes\"\noperations = [\"list-faskes\", \"hapus-faskes\"]\npurpose = \"x\"\nvalid_from = 2025-01-01\nvalid_until = 2025-12-31\n\n[[agreements]]\nid = \"PKS-2\"\nconsumer = \"dinkes\"\nservice = \"pajak\"\npurpose = \"x\"\nvalid_from = 2026-01-01\nvalid_until = 2025-12-31\n"
    );
    let e = errors_of(&pki, &text);
    assert_error(
        &e,
        "services[0].owner",
        "`disdukcapil` is not a known agency (known: dinkes, dukcapil)",
    );
    assert_error(
        &e,
        "agreements[1].consumer",
        "`dinsos` is not a known agency",
    );
    assert_error(
        &e,
        "agreements[1].operations[1]",
        "`hapus-faskes` is not a known operation of service `dinkes-faskes`",
    );
    assert_error(
        &e,
        "agreements[2].service",
        "`pajak` is not a known service",
    );
    assert_error(&e, "agreements[2].valid_until", "before valid_from");
}

#[test]
fn wrong_types_and_syntax_errors_name_their_place() {
    let pki = TestPki::new();
    let text = replace(&base(), "timeout = \"5s\"", "timeout = 5");
    let e = errors_of(&pki, &text);
    assert_error(&e, "services[0].timeout", "invalid type");

    let text = replace(&base(), "[[agencies]]", "[[agencies]");
    let e = errors_of(&pki, &text);
    assert_eq!(e.errors.len(), 1);
    assert!(e.errors[0].message.contains("line"), "{e}");

    let text = replace(&base(), "id = \"spl.test\"\n", "");
    let e = errors_of(&pki, &text);
    assert_error(&e, "gateway", "missing field `id`");
}

#[test]
fn every_error_in_a_file_is_reported_at_once() {
    let pki = TestPki::new();
    let text = replace(
        &base(),
        "listen = \"127.0.0.1:0\"",
        "listen = \"everywhere\"\ncolour = \"red\"",
    );
    let text = replace(
        &text,
        "clearance = \"terbatas\"",
        "clearance = \"top-secret\"",
    );
    let text = replace(
        &text,
        "classification = \"terbuka\"",
        "classification = \"public\"",
    );
    let text = replace(
        &text,
        "upstreams = [\"https://127.0.0.1:9\"]",
        "upstreams = [\"http://127.0.0.1:9\"]",
    );
    let text = replace(&text, "method = \"GET\"", "method = \"get\"");
    let e = errors_of(&pki, &text);
    assert_error(&e, "gateway.listen", "not an address");
    assert_error(&e, "gateway.colour", "unknown key");
    assert_error(&e, "agencies[0].clearance", "top-secret");
    assert_error(&e, "services[1].classification", "public");
    assert_error(&e, "services[0].upstreams[0]", "allow_plaintext");
    assert_error(&e, "services[0].operations[0].method", "upper case");
    assert!(e.errors.len() >= 6, "{e}");
}

#[test]
fn the_admin_api_stays_on_loopback() {
    let pki = TestPki::new();
    let text = replace(
        &base(),
        "admin_listen = \"127.0.0.1:0\"",
        "admin_listen = \"0.0.0.0:9090\"",
    );
    let e = errors_of(&pki, &text);
    assert_error(&e, "gateway.admin_listen", "not a loopback address");
}

#[test]
fn plaintext_upstream_only_when_allowed() {
    let pki = TestPki::new();
    let text = replace(
        &base(),
        "upstreams = [\"https://127.0.0.1:9\"]\nupstream_ca = \"ca.crt\"\ntimeout",
        "upstreams = [\"http://127.0.0.1:9\"]\nallow_plaintext = true\ntimeout",
    );
    load_str(&text, &pki.path().join("ok.toml"), pki.path()).unwrap();
}

/// Every example in `config/` passes `check` once the PKI it names exists.
#[test]
fn every_example_in_config_is_accepted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let work = tempfile::tempdir().unwrap();
        let config_dir = work.path().join("config");
        std::fs::create_dir_all(&config_dir).unwrap();
        copy_dir(&root.join("schemas"), &work.path().join("schemas"));
        let file = config_dir.join(path.file_name().unwrap());
        std::fs::copy(&path, &file).unwrap();
        let agencies = [
            ("dinkes", "dinkes.parigimoutongkab.go.id"),
            ("dukcapil", "dukcapil.parigimoutongkab.go.id"),
        ];
        penghubung::pki::init(&config_dir.join("pki"), &["localhost"], &agencies).unwrap();
        support::sign_example(&file);
        let out = check(&file);
        assert!(
            out.status.success(),
            "{} failed check:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(
            summary.contains("valid") && summary.contains("certificates (warning under"),
            "{summary}"
        );
        checked += 1;
    }
    assert!(checked >= 1, "config/ holds no example");
}

#[test]
fn check_exits_non_zero_and_lists_every_error() {
    let pki = TestPki::new();
    let text = replace(&base(), "timeout = \"5s\"", "timeout = \"soon\"");
    let text = replace(&text, "owner = \"dinkes\"", "owner = \"nobody\"");
    let file = support::write_config(pki.path(), &text);
    let out = check(&file);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains("2 errors"), "{stderr}");
    assert!(stderr.contains("services[0].timeout"), "{stderr}");
    assert!(stderr.contains("services[1].owner"), "{stderr}");
}

/// `penghubung check --config FILE`, as an operator runs it.
fn check(file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_penghubung"))
        .args(["check", "--config"])
        .arg(file)
        .output()
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_broken_entry_is_reported_once_not_again_where_it_is_referenced() {
    let pki = TestPki::new();
    let text = replace(&base(), "timeout = \"5s\"", "timeout = \"5\"");
    let text = replace(&text, "clearance = \"terbatas\"", "clearance = \"???\"");
    let text = format!(
        "{text}\n[[agreements]]\nid = \"PKS-1\"\nconsumer = \"dinkes\"\nservice = \"dukcapil-penduduk\"\npurpose = \"x\"\nvalid_from = 2025-01-01\nvalid_until = 2025-12-31\n"
    );
    let e = errors_of(&pki, &text);
    assert_error(&e, "services[0].timeout", "no unit");
    assert_error(&e, "agencies[0].clearance", "???");
    assert_eq!(e.errors.len(), 2, "cascading errors:\n{e}");
}

#[test]
fn one_identity_cannot_name_two_agencies() {
    let pki = TestPki::new();
    let text = replace(
        &base(),
        "identities = [\"dukcapil.test\"]",
        "identities = [\"dukcapil.test\", \"dinkes.test\"]",
    );
    let e = errors_of(&pki, &text);
    assert_error(
        &e,
        "agencies[1].identities[1]",
        "`dinkes.test` already identifies agency `dinkes`",
    );
}

#[test]
fn cache_ttl_is_for_get_operations_and_ignored_with_a_warning_on_secret_services() {
    let pki = TestPki::new();
    let text = replace(
        &base(),
        "  path = \"/verifikasi\"",
        "  path = \"/verifikasi\"\n  cache_ttl = \"30s\"",
    );
    let text = replace(
        &text,
        "  path = \"/faskes\"",
        "  path = \"/faskes\"\n  cache_ttl = \"0s\"",
    );
    let errors = errors_of(&pki, &text);
    assert_error(
        &errors,
        "services[0].operations[1].cache_ttl",
        "only GET operations",
    );
    assert_error(
        &errors,
        "services[1].operations[0].cache_ttl",
        "more than 0s",
    );

    // On a rahasia service: accepted, ignored, and `check` says so with file and path.
    let text = replace(
        &base(),
        "classification = \"terbatas\"",
        "classification = \"rahasia\"",
    );
    let text = replace(
        &text,
        "  path = \"/penduduk/{nik}\"",
        "  path = \"/penduduk/{nik}\"\n  cache_ttl = \"60s\"",
    );
    let snapshot = load_str(&text, &pki.path().join("w.toml"), pki.path()).unwrap();
    assert_eq!(snapshot.services[0].operations[0].cache_ttl, None);
    assert_eq!(snapshot.warnings.len(), 1);
    let file = support::write_config(pki.path(), &text);
    let out = check(&file);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: {}: services[0].operations[0].cache_ttl: ignored: `dukcapil-penduduk` is rahasia",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn peers_are_checked_like_agencies() {
    let pki = TestPki::new();
    let text = format!(
        "{}{}",
        base(),
        r#"
[[peers]]
id = "splp"
kind = "nasional"
identities = ["splp.test"]

[[peers]]
id = "dinkes"
kind = "provincial"
identities = ["dinkes.test"]

[[agreements]]
id = "PKS-PEER"
consumer = "splp"
service = "dukcapil-penduduk"
purpose = "p"
valid_from = 2020-01-01
valid_until = 2099-12-31
"#
    );
    let errors = errors_of(&pki, &text);
    assert_error(&errors, "peers[0].kind", "\"provincial\" or \"national\"");
    assert_error(&errors, "peers[1].id", "already names an agency or a peer");

    let text = text
        .edit("kind = \"nasional\"", "kind = \"national\"")
        .edit("id = \"dinkes\"\nkind", "id = \"spl-sulteng\"\nkind")
        .edit(
            "identities = [\"dinkes.test\"]\n\n[[agreements]]",
            "identities = [\"spl.sulteng.test\"]\n\n[[agreements]]",
        );
    let snapshot =
        load_str(&text, &pki.path().join("p.toml"), pki.path()).unwrap_or_else(|e| panic!("{e}"));
    let splp = snapshot.agencies.iter().find(|a| a.code == "splp").unwrap();
    assert_eq!(splp.party, penghubung::config::Party::National);
    assert!(snapshot.agreements.iter().any(|a| a.id == "PKS-PEER"));
}

#[test]
fn grpc_services_are_checked() {
    let pki = TestPki::new();
    let grpc = r#"
[[services]]
id = "grpc-a"
owner = "dinkes"
classification = "terbatas"
protocol = "grpc"
prefix = "/not-a-service-name"
upstreams = ["https://127.0.0.1:9"]
upstream_ca = "ca.crt"

  [[services.operations]]
  id = "get"
  method = "GET"
  path = "/other.v1.Service/Get"
  response_schema = "x.json"
  cache_ttl = "10s"

[[services]]
id = "grpc-b"
owner = "dinkes"
classification = "terbatas"
protocol = "soap"
prefix = "/b"
upstreams = ["https://127.0.0.1:9"]
upstream_ca = "ca.crt"

  [[services.operations]]
  id = "get"
  path = "/x"
"#;
    let errors = errors_of(&pki, &format!("{}{grpc}", base()));
    assert_error(&errors, "services[2].prefix", "full gRPC service name");
    assert_error(
        &errors,
        "services[2].operations[0].method",
        "called with POST, not GET",
    );
    assert_error(
        &errors,
        "services[2].operations[0].path",
        "names its full method",
    );
    assert_error(
        &errors,
        "services[2].operations[0].response_schema",
        "does not apply to gRPC",
    );
    assert_error(
        &errors,
        "services[2].operations[0].cache_ttl",
        "does not apply to gRPC",
    );
    assert_error(&errors, "services[3].protocol", "`soap` is not a protocol");
    assert_error(&errors, "services[3].operations[0].method", "is required");

    let good = grpc
        .edit("/not-a-service-name", "/kependudukan.v1.Penduduk")
        .edit("  method = \"GET\"\n  path = \"/other.v1.Service/Get\"\n  response_schema = \"x.json\"\n  cache_ttl = \"10s\"", "  path = \"/kependudukan.v1.Penduduk/Get\"")
        .edit("protocol = \"soap\"", "protocol = \"http\"")
        .edit("  id = \"get\"\n  path = \"/x\"", "  id = \"get\"\n  method = \"GET\"\n  path = \"/x\"");
    let snapshot = load_str(
        &format!("{}{good}", base()),
        &pki.path().join("g.toml"),
        pki.path(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        snapshot.services[2].protocol,
        penghubung::config::Protocol::Grpc
    );
    assert_eq!(snapshot.services[2].operations[0].path, "/Get");
}

#[test]
fn header_limits_and_health_checks_are_checked() {
    let pki = TestPki::new();
    let text = replace(
        &base(),
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nmax_header_size = \"4KiB\"",
    );
    let text = replace(
        &text,
        "timeout = \"5s\"",
        "timeout = \"5s\"\nhealth_path = \"healthz\"\nhealth_interval = \"100ms\"",
    );
    let text = replace(
        &text,
        "prefix = \"/dinkes\"",
        "prefix = \"/dinkes\"\nhealth_interval = \"5s\"",
    );
    let errors = errors_of(&pki, &text);
    assert_error(&errors, "gateway.max_header_size", "8KiB to 1MiB");
    assert_error(&errors, "services[0].health_interval", "at least 1s");
    assert_error(
        &errors,
        "services[1].health_interval",
        "needs a health_path",
    );

    let text = replace(
        &base(),
        "timeout = \"5s\"",
        "timeout = \"5s\"\nhealth_path = \"healthz\"",
    );
    assert_error(
        &errors_of(&pki, &text),
        "services[0].health_path",
        "not an absolute path",
    );

    let text = replace(
        &base(),
        "timeout = \"5s\"",
        "timeout = \"5s\"\nhealth_path = \"/healthz\"",
    );
    let snapshot = load_str(&text, &pki.path().join("ok.toml"), pki.path()).unwrap();
    let check = snapshot.services[0].health.as_ref().unwrap();
    assert_eq!(
        (check.path.as_str(), check.interval),
        ("/healthz", std::time::Duration::from_secs(10))
    );
    assert_eq!(snapshot.services[1].health, None);
    assert_eq!(snapshot.gateway.max_header_size, 32 * 1024);
}

#[test]
fn the_otlp_endpoint_is_a_collector_address() {
    let pki = TestPki::new();
    for (endpoint, message) in [
        ("collector:4317", "http://host:port"),
        (
            "https://collector:4317",
            "TLS to a collector is not supported",
        ),
        ("http://collector:4317/v1/traces", "without a path"),
        ("http://", "not a URL"),
    ] {
        let text = format!("{}\n[telemetry]\notlp_endpoint = \"{endpoint}\"\n", base());
        assert_error(&errors_of(&pki, &text), "telemetry.otlp_endpoint", message);
    }

    let text = format!(
        "{}\n[telemetry]\notlp_endpoint = \"http://collector:4317\"\nmetrics_interval = \"500ms\"\n",
        base()
    );
    assert_error(
        &errors_of(&pki, &text),
        "telemetry.metrics_interval",
        "at least 1s",
    );
    let text = format!("{}\n[telemetry]\nservice_name = \"spl-kab\"\n", base());
    assert_error(
        &errors_of(&pki, &text),
        "telemetry.service_name",
        "needs telemetry.otlp_endpoint",
    );

    let text = format!(
        "{}\n[telemetry]\notlp_endpoint = \"http://collector:4317\"\n",
        base()
    );
    let snapshot = load_str(&text, &pki.path().join("ok.toml"), pki.path()).unwrap();
    let otlp = snapshot.otlp.unwrap();
    assert_eq!(otlp.metrics_interval, std::time::Duration::from_secs(60));
    assert_eq!(otlp.endpoint.to_string(), "http://collector:4317/");
    assert_eq!(otlp.service_name, snapshot.gateway.id);
    let text = format!("{text}service_name = \"spl-kab\"\n");
    let snapshot = load_str(&text, &pki.path().join("ok.toml"), pki.path()).unwrap();
    assert_eq!(snapshot.otlp.unwrap().service_name, "spl-kab");
    assert_eq!(
        load_str(&base(), &pki.path().join("ok.toml"), pki.path())
            .unwrap()
            .otlp,
        None
    );
}

#[test]
fn off_loopback_the_admin_api_needs_administrators_of_its_own() {
    let pki = TestPki::new();
    let public = replace(
        &base(),
        "admin_listen = \"127.0.0.1:0\"",
        "admin_listen = \"0.0.0.0:9090\"",
    );
    assert_error(
        &errors_of(&pki, &public),
        "gateway.admin_listen",
        "set [admin] identities",
    );
    let errors = errors_of(
        &pki,
        &format!(
            "{public}\n[admin]\nidentities = [\"dinkes.test\", \"ops.test\", \"ops.test\", \"\"]\n"
        ),
    );
    assert_error(&errors, "admin.identities[0]", "identifies agency `dinkes`");
    assert_error(&errors, "admin.identities[2]", "listed twice");
    assert_error(&errors, "admin.identities[3]", "must not be empty");
    assert!(!errors
        .errors
        .iter()
        .any(|e| e.path == "gateway.admin_listen"));
    assert_error(
        &errors_of(&pki, &format!("{public}\n[admin]\nidentities = []\n")),
        "admin.identities",
        "names no administrator",
    );
    let snapshot = load_str(
        &format!("{public}\n[admin]\nidentities = [\"ops.test\"]\n"),
        &pki.path().join("ok.toml"),
        pki.path(),
    )
    .unwrap();
    assert_eq!(snapshot.gateway.admin_identities, ["ops.test"]);
}

#[test]
fn deadlines_and_the_buffer_budget_are_checked() {
    let pki = TestPki::new();
    let gateway_keys = |keys: &str| {
        replace(
            &base(),
            "shutdown_grace = \"5s\"",
            &format!("shutdown_grace = \"5s\"\n{keys}"),
        )
    };
    // Valid, and in the snapshot: the service inherits the gateway's deadline unless it sets
    // its own.
    let text = replace(
        &gateway_keys(
            "request_timeout = \"90s\"\nmax_buffered = \"64MiB\"\nmax_connection_age = \"10m\"",
        ),
        "[[services]]\nid = \"dinkes-faskes\"",
        "[[services]]\nid = \"dinkes-faskes\"\nrequest_timeout = \"2m\"",
    );
    let s = load_str(&text, &pki.path().join("ok.toml"), pki.path()).unwrap();
    assert_eq!(s.gateway.request_timeout.as_secs(), 90);
    assert_eq!(s.gateway.max_buffered, 64 << 20);
    assert_eq!(s.gateway.max_connection_age.as_secs(), 600);
    assert_eq!(s.services[0].request_timeout.as_secs(), 90);
    assert_eq!(s.services[1].request_timeout.as_secs(), 120);
    // Defaults.
    let s = load_str(&base(), &pki.path().join("ok.toml"), pki.path()).unwrap();
    assert_eq!(s.gateway.request_timeout.as_secs(), 60);
    assert_eq!(s.gateway.max_buffered, 256 << 20);
    assert_eq!(s.gateway.max_connection_age.as_secs(), 3600);

    let e = errors_of(
        &pki,
        &gateway_keys(
            "request_timeout = \"0s\"\nmax_buffered = \"512KiB\"\nmax_connection_age = \"0s\"",
        ),
    );
    assert_error(&e, "gateway.request_timeout", "more than zero");
    assert_error(&e, "gateway.max_buffered", "at least 1MiB");
    assert_error(&e, "gateway.max_connection_age", "more than zero");

    // A deadline shorter than the upstream timeout: on the service's own key, or on its
    // timeout when the deadline is the gateway's.
    let text = replace(
        &base(),
        "timeout = \"5s\"",
        "timeout = \"5s\"\nrequest_timeout = \"2s\"",
    );
    assert_error(
        &errors_of(&pki, &text),
        "services[0].request_timeout",
        "longer than",
    );
    let text = gateway_keys("request_timeout = \"3s\"");
    assert_error(
        &errors_of(&pki, &text),
        "services[0].timeout",
        "[gateway] request_timeout",
    );

    // A request body limit above the budget could never be admitted.
    let text = replace(
        &gateway_keys("max_buffered = \"1MiB\""),
        "[[services]]\nid = \"dinkes-faskes\"",
        "[[services]]\nid = \"dinkes-faskes\"\nmax_request_body = \"2MiB\"",
    );
    assert_error(
        &errors_of(&pki, &text),
        "services[1].max_request_body",
        "max_buffered",
    );
}

#[test]
fn the_audit_rpc_rate_is_a_rate() {
    let pki = TestPki::new();
    let text = format!("{}\n[audit]\nrpc_rate = \"5/s\"\n", base());
    let s = load_str(&text, &pki.path().join("ok.toml"), pki.path()).unwrap();
    assert_eq!(s.audit.unwrap().rpc_rate.count, 5);
    let s = load_str(
        &format!("{}\n[audit]\n", base()),
        &pki.path().join("ok.toml"),
        pki.path(),
    )
    .unwrap();
    assert_eq!(s.audit.unwrap().rpc_rate.count, 10);
    let e = errors_of(&pki, &format!("{}\n[audit]\nrpc_rate = \"fast\"\n", base()));
    assert_error(&e, "audit.rpc_rate", "fast");
}

/// docs/security.md names, for each threat, the test that shows its control (`file::test`);
/// a renamed or removed test must not leave the page pointing at nothing.
#[test]
fn docs_security_names_tests_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let mut named = 0;
    for span in page.split('`').skip(1).step_by(2) {
        let parts: Vec<&str> = span.split("::").collect();
        let well_formed = parts.len() >= 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if !well_formed {
            continue;
        }
        let (file, test) = (parts[0], parts[parts.len() - 1]);
        let source = [
            root.join(format!("tests/{file}.rs")),
            root.join(format!("gateway/{file}.rs")),
        ]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("docs/security.md names `{span}`: no tests/{file}.rs or gateway/{file}.rs")
        });
        let text = std::fs::read_to_string(&source).unwrap();
        assert!(
            text.contains(&format!("fn {test}(")),
            "docs/security.md names `{span}`, which {} does not define",
            source.display()
        );
        named += 1;
    }
    assert!(named > 50, "only {named} tests named");
}
