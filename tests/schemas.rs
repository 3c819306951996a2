//! The schema registry and the starter schemas: every starter schema against its valid and
//! invalid examples, `$ref` across files, and the refusals that make `check` fail.

mod support;

use std::path::{Path, PathBuf};

use penghubung::config::load_str;
use penghubung::schema::{violations, Registry};
use serde_json::{json, Value};
use support::TestPki;

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

#[test]
fn every_starter_schema_accepts_its_valid_examples_and_refuses_its_invalid_ones() {
    let mut registry = Registry::new(&schemas_dir()).unwrap();
    let examples = schemas_dir().join("examples/common");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let name = format!("common/{}", path.file_name().unwrap().to_string_lossy());
        let schema = registry.get(&name).unwrap_or_else(|e| panic!("{e}"));
        let cases: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for valid in cases["valid"].as_array().unwrap() {
            let found = violations(&schema, valid);
            assert!(
                found.is_empty(),
                "{name}: {valid} should be valid: {found:?}"
            );
        }
        let invalid = cases["invalid"].as_array().unwrap();
        assert!(!invalid.is_empty(), "{name} has no invalid example");
        for bad in invalid {
            assert!(
                !violations(&schema, bad).is_empty(),
                "{name}: {bad} should be invalid"
            );
        }
        checked += 1;
    }
    // Every schema in common/ has examples.
    let schemas = std::fs::read_dir(schemas_dir().join("common"))
        .unwrap()
        .count();
    assert_eq!(checked, schemas);
    assert!(checked >= 10);
}

#[test]
fn refs_across_files_report_the_pointer_in_the_instance() {
    let mut registry = Registry::new(&schemas_dir()).unwrap();
    let schema = registry.get("dukcapil/penduduk.v1.json").unwrap();
    let valid = json!({"nik": "7208014101900001", "nama": "A", "tanggal_lahir": "1990-01-01", "jenis_kelamin": "P"});
    assert!(violations(&schema, &valid).is_empty());
    let invalid = json!({"nik": "7208014001900001", "nama": "A", "tanggal_lahir": "1990-02-30", "jenis_kelamin": "X"});
    let found = violations(&schema, &invalid);
    let pointers: Vec<&str> = found.iter().map(|v| v.pointer.as_str()).collect();
    for expected in ["/nik", "/tanggal_lahir", "/jenis_kelamin"] {
        assert!(
            pointers.contains(&expected),
            "{expected} missing from {found:?}"
        );
    }
    let nik = found.iter().find(|v| v.pointer == "/nik").unwrap();
    assert_eq!(nik.keyword, "pattern");
}

/// A config with one operation whose response schema is `name` in `dir`.
fn config_with_schema(pki: &TestPki, dir: &Path, name: &str) -> String {
    support::config_text("https://127.0.0.1:9", "5s", "").replacen(
        "max_request_body = \"1KiB\"",
        &format!("max_request_body = \"1KiB\"\nschemas_dir = \"{}\"", dir.display()),
        1,
    ) + &format!(
        "\n[[services]]\nid = \"skema\"\nowner = \"dinkes\"\nclassification = \"terbuka\"\nprefix = \"/skema\"\nupstreams = [\"https://127.0.0.1:9\"]\nupstream_ca = \"{}\"\n  [[services.operations]]\n  id = \"x\"\n  method = \"GET\"\n  path = \"/x\"\n  response_schema = \"{name}\"\n",
        pki.path().join("ca.crt").display()
    )
}

fn check_error(files: &[(&str, &str)], name: &str) -> String {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in files {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let text = config_with_schema(&pki, dir.path(), name);
    match load_str(&text, &pki.path().join("c.toml"), pki.path()) {
        Ok(_) => panic!("accepted schema {name}"),
        Err(e) => {
            let at = "services[2].operations[0].response_schema";
            let error = e
                .errors
                .iter()
                .find(|e| e.path == at)
                .unwrap_or_else(|| panic!("no error at {at}: {e}"));
            error.message.clone()
        }
    }
}

#[test]
fn a_broken_schema_fails_check_with_its_file_and_pointer() {
    let message = check_error(
        &[(
            "rusak.json",
            r#"{"type": "object", "properties": {"a": {"minLength": -1}}}"#,
        )],
        "rusak.json",
    );
    assert!(message.contains("rusak.json"), "{message}");
    assert!(message.contains("/properties/a/minLength"), "{message}");

    let message = check_error(&[("bukan.json", "{ not json")], "bukan.json");
    assert!(
        message.contains("bukan.json") && message.contains("not JSON"),
        "{message}"
    );

    let message = check_error(&[], "tidak-ada.json");
    assert!(message.contains("tidak-ada.json"), "{message}");
}

#[test]
fn remote_and_escaping_refs_are_refused() {
    let message = check_error(
        &[(
            "jauh.json",
            r#"{"$ref": "https://example.org/schema.json"}"#,
        )],
        "jauh.json",
    );
    assert!(message.contains("remote $ref"), "{message}");
    let message = check_error(
        &[(
            "a/keluar.json",
            r#"{"$ref": "../../../../../../etc/hostname"}"#,
        )],
        "a/keluar.json",
    );
    assert!(
        message.contains("outside the schemas directory") || message.contains("No such file"),
        "{message}"
    );
    let message = check_error(&[], "../../etc/hostname");
    assert!(
        message.contains("outside the schemas directory") || message.contains("No such file"),
        "{message}"
    );
    // A $ref to a sibling file works.
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.json"), r#"{"$ref": "b.json"}"#).unwrap();
    std::fs::write(dir.path().join("b.json"), r#"{"type": "string"}"#).unwrap();
    let text = config_with_schema(&pki, dir.path(), "a.json");
    load_str(&text, &pki.path().join("c.toml"), pki.path()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn violations_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("list.json"),
        r#"{"type": "array", "items": {"type": "string"}}"#,
    )
    .unwrap();
    let mut registry = Registry::new(dir.path()).unwrap();
    let schema = registry.get("list.json").unwrap();
    let found = violations(&schema, &json!((0..40).collect::<Vec<i32>>()));
    assert_eq!(found.len(), penghubung::schema::MAX_VIOLATIONS);
    assert_eq!(found[0].pointer, "/0");
    assert_eq!(found[0].keyword, "type");
}
