//! The schema registry and the starter schemas: every starter schema against its valid and
//! invalid examples, `$ref` across files, and the refusals that make `check` fail.

mod support;

use std::path::{Path, PathBuf};

use penghubung::config::load_str;
use penghubung::schema::tape::Document;
use penghubung::schema::{body_violations, violations, Registry, Schema};
use serde_json::{json, Value};
use support::Edit;
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
            assert_same_verdict(&schema, valid);
        }
        let invalid = cases["invalid"].as_array().unwrap();
        assert!(!invalid.is_empty(), "{name} has no invalid example");
        for bad in invalid {
            assert!(
                !violations(&schema, bad).is_empty(),
                "{name}: {bad} should be invalid"
            );
            assert_same_verdict(&schema, bad);
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

/// The body path (read in place) and the `serde_json::Value` path agree on `value`, written
/// compactly and spread out with escapes.
fn assert_same_verdict(schema: &Schema, value: &Value) {
    let expected = schema.validator.is_valid(value);
    let compact = value.to_string();
    // Escapes only where strings are: `é` and the key `name`.
    let pretty = serde_json::to_string_pretty(value)
        .unwrap()
        .replace('é', "\\u00e9")
        .replace("\"name\"", "\"n\\u0061me\"");
    for text in [compact, pretty] {
        let document = Document::parse(text.as_bytes())
            .unwrap_or_else(|| panic!("the tape did not read {text}"));
        assert_eq!(
            schema.fast.is_valid(document.root()),
            expected,
            "{}: {text}",
            schema.name
        );
        assert_eq!(
            body_violations(schema, text.as_bytes()).unwrap().is_empty(),
            expected,
            "{}: {text}",
            schema.name
        );
    }
}

#[test]
fn bodies_read_in_place_get_the_verdict_of_the_value_path() {
    let dir = tempfile::tempdir().unwrap();
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["id", "name"],
        "additionalProperties": false,
        "minProperties": 2,
        "properties": {
            "id": {"type": "integer", "minimum": 1, "maximum": 1000000, "multipleOf": 1},
            "name": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-zé]+$"},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "tags": {"type": "array", "uniqueItems": true, "maxItems": 3, "items": {"type": "string"}},
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "boolean"}], "items": false},
            "kind": {"enum": ["a", 1, null, {"x": [1.0]}]},
            "fixed": {"const": {"k": [1, "2"]}},
            "date": {"type": "string", "format": "date"},
            "either": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 10}]},
            "any": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/positive"}]},
            "not": {"not": {"type": "string"}},
            "bag": {
                "type": "object",
                "propertyNames": {"pattern": "^[a-z]+$"},
                "patternProperties": {"^n": {"type": "number"}},
                "dependentRequired": {"a": ["b"]},
                "contains": {"type": "string"}
            },
            "list": {"type": "array", "contains": {"const": 5}, "minContains": 2},
            "wide": {
                "type": "object",
                "required": ["a5"],
                "properties": {"a0": {"type": "integer"}, "a19": {"type": "string"}}
            }
        },
        "$defs": {"positive": {"type": "number", "exclusiveMinimum": 0}}
    });
    std::fs::write(dir.path().join("rich.json"), schema.to_string()).unwrap();
    let mut registry = Registry::new(dir.path()).unwrap();
    let schema = registry.get("rich.json").unwrap();
    let base = json!({"id": 7, "name": "abé"});
    let mut cases = vec![base.clone()];
    for (key, values) in [
        (
            "id",
            vec![
                json!(0),
                json!(1),
                json!(1.0),
                json!(1.5),
                json!(2000000),
                json!("7"),
                json!(-0.0),
            ],
        ),
        (
            "name",
            vec![
                json!("a"),
                json!("abcde"),
                json!("abcdef"),
                json!("éé"),
                json!("AB"),
                json!(null),
            ],
        ),
        (
            "ratio",
            vec![json!(0), json!(0.5), json!(1), json!(1e-300), json!(-0.5)],
        ),
        (
            "tags",
            vec![
                json!([]),
                json!(["a", "b"]),
                json!(["a", "a"]),
                json!(["a", 1]),
                json!(["a", "b", "c", "d"]),
            ],
        ),
        (
            "pair",
            vec![
                json!([1, true]),
                json!([1, false]),
                json!([1]),
                json!([true, 1]),
                json!([1, true, 3]),
            ],
        ),
        (
            "kind",
            vec![
                json!("a"),
                json!(1),
                json!(1.0),
                json!(null),
                json!({"x": [1]}),
                json!({"x": [2]}),
                json!("b"),
            ],
        ),
        (
            "fixed",
            vec![
                json!({"k": [1, "2"]}),
                json!({"k": [1.0, "2"]}),
                json!({"k": [1, 2]}),
            ],
        ),
        (
            "date",
            vec![
                json!("2026-11-24"),
                json!("2026-13-01"),
                json!("24/11/2026"),
            ],
        ),
        ("either", vec![json!("x"), json!(12), json!(3), json!(true)]),
        ("any", vec![json!(null), json!(3), json!(-3), json!("x")]),
        ("not", vec![json!(1), json!("s")]),
        (
            "bag",
            vec![
                json!({}),
                json!({"n1": 1, "x": "s"}),
                json!({"n1": "x"}),
                json!({"A": 1}),
                json!({"a": 1}),
                json!({"a": 1, "b": "s"}),
            ],
        ),
        ("list", vec![json!([5, 5]), json!([5]), json!([5, 1, 5.0])]),
        ("extra", vec![json!(1)]),
        ("wide", {
            // Larger than the tape scans: its members are looked up through an index.
            let wide = |f: &dyn Fn(usize) -> Value| {
                Value::Object((0..20).map(|i| (format!("a{i}"), f(i))).collect())
            };
            vec![
                wide(&|i| if i == 19 { json!("s") } else { json!(i) }),
                wide(&|i| json!(i)),
                wide(&|i| if i == 0 { json!("s") } else { json!("t") }),
                Value::Object((6..30).map(|i| (format!("a{i}"), json!(i))).collect()),
            ]
        }),
    ] {
        for value in values {
            let mut case = base.clone();
            case[key] = value;
            cases.push(case);
        }
    }
    cases.push(json!({"id": 7}));
    cases.push(json!([]));
    cases.push(json!("string"));
    let (mut valid, mut invalid) = (0, 0);
    for case in &cases {
        assert_same_verdict(&schema, case);
        if schema.validator.is_valid(case) {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    assert!(
        valid >= 20 && invalid >= 20,
        "{valid} valid, {invalid} invalid"
    );
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
    support::config_text("https://127.0.0.1:9", "5s", "").edit_once(
        "max_request_body = \"1KiB\"",
        &format!("max_request_body = \"1KiB\"\nschemas_dir = \"{}\"", dir.display())) + &format!(
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
