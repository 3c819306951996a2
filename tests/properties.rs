//! Properties over generated inputs, with bounded case counts so that CI runs them every time:
//! the in-place JSON reader agrees with `serde_json` (same verdict where it reads, same values),
//! path normalisation is idempotent and never yields a segment an upstream could read as a
//! step up or across, and the configuration loader answers any TOML with errors, never a panic.

use std::path::Path;

use jsonschema::json::Node;
use penghubung::route::normalize;
use penghubung::schema::ijson;
use penghubung::schema::tape::Document;
use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value, nested a few levels: numbers of every kind serde_json distinguishes, strings
/// with escapes, control characters and non-ASCII, objects of up to 20 members.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        "[\"\\\\/\u{0}-\u{1f}a-zé中😀]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 20, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z\"\\\\é]{0,4}", inner, 0..20)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A text both readers are held to: the contract of `tape` is that where it reads a document,
/// `serde_json` reads the same one; where `serde_json` (strictly, as I-JSON) refuses it, so
/// does the tape.
fn agree(text: &[u8]) -> Result<(), TestCaseError> {
    let strict = ijson::from_slice(text);
    match Document::parse(text) {
        Some(document) => {
            let value = document.root().to_value().into_owned();
            let read = strict.map_err(|e| {
                TestCaseError::fail(format!("the tape read what serde_json refuses: {e}"))
            })?;
            prop_assert_eq!(value, read);
        }
        None => {
            // The tape may hand a document to serde_json (deep nesting); never the reverse.
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_tape_reads_generated_documents_as_serde_json_does(value in json(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_vec_pretty(&value).unwrap()
        } else {
            serde_json::to_vec(&value).unwrap()
        };
        let document = Document::parse(&text);
        prop_assert!(document.is_some(), "a valid document was not read: {}", String::from_utf8_lossy(&text));
        agree(&text)?;
    }

    /// The same documents, one byte changed, inserted or cut: mostly malformed now, and the two
    /// readers must still not disagree.
    #[test]
    fn the_tape_and_serde_json_agree_on_damaged_documents(
        value in json(),
        at in any::<prop::sample::Index>(),
        byte in prop_oneof![Just(b'"'), Just(b','), Just(b'}'), Just(b']'), Just(b'\\'), Just(b'0'), Just(b'e'), Just(b'-'), Just(0xc3u8), Just(0xffu8), any::<u8>()],
        how in 0..3u8,
    ) {
        let mut text = serde_json::to_vec(&value).unwrap();
        let i = at.index(text.len() + 1);
        match how {
            0 if i < text.len() => text[i] = byte,
            1 => text.insert(i, byte),
            _ => text.truncate(i),
        }
        agree(&text)?;
    }

    /// Objects with a member named twice: both readers refuse them (RFC 7493 I-JSON).
    #[test]
    fn duplicate_members_are_refused_by_both_readers(
        names in prop::collection::vec("[a-c]{1,2}", 2..8),
        values in prop::collection::vec(json(), 8),
    ) {
        let mut text = String::from("{");
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&serde_json::to_string(name).unwrap());
            text.push(':');
            text.push_str(&serde_json::to_string(&values[i]).unwrap());
        }
        text.push('}');
        let unique = names.iter().collect::<std::collections::HashSet<_>>().len() == names.len();
        let read = ijson::from_slice(text.as_bytes());
        prop_assert_eq!(read.is_ok(), unique, "{}", text);
        if !unique {
            prop_assert!(Document::parse(text.as_bytes()).is_none(), "{}", text);
        }
        agree(text.as_bytes())?;
    }
}

/// Request targets built from the characters that matter: separators, dots, percent escapes
/// (valid, invalid, encoded slashes and dots), backslashes, controls and non-ASCII.
fn target() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E%2e".to_owned()),
        Just("%2f".to_owned()),
        Just("%5c".to_owned()),
        Just("%00".to_owned()),
        Just("%+5".to_owned()),
        Just("% 5".to_owned()),
        Just("%".to_owned()),
        Just("\\".to_owned()),
        "%[0-9a-fA-F]{2}",
        "[a-z0-9_~-]{1,4}",
        "[é中\u{7f}\t ]",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| format!("/{}", pieces.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn normalisation_is_idempotent_and_stays_within_the_root(raw in target(), prefix_len in 0..3usize) {
        let Ok(path) = normalize(&raw) else {
            return Ok(());
        };
        for segment in path.segments() {
            prop_assert!(
                !segment.is_empty() && segment != "." && segment != ".."
                    && !segment.contains('/') && !segment.contains('\\')
                    && !segment.chars().any(char::is_control),
                "{:?} → segment {:?}", raw, segment
            );
        }
        // What an upstream receives is canonical: normalising it again changes nothing, and
        // what follows a prefix is exactly the rest of the routed path.
        let encoded = path.encoded_from(0);
        let again = normalize(&encoded);
        prop_assert_eq!(again.as_ref(), Ok(&path), "{:?} → {:?}", raw, encoded);
        let k = prefix_len.min(path.segments().len());
        let rest = path.encoded_from(k);
        let rest = normalize(&rest).unwrap();
        prop_assert_eq!(rest.segments(), &path.segments()[k..]);
    }

    /// A path under a service prefix that climbs with dot segments leaves the prefix only to be
    /// routed as the path it lands on; the part forwarded after a prefix never climbs.
    #[test]
    fn no_spelling_forwards_a_step_up(rest in target()) {
        let raw = format!("/dukcapil/penduduk{rest}");
        if let Ok(path) = normalize(&raw) {
            let forwarded = path.encoded_from(2.min(path.segments().len()));
            prop_assert!(!forwarded.split('/').any(|s| s == ".." || s == "." || s.eq_ignore_ascii_case("%2e%2e")), "{}", forwarded);
        }
    }
}

/// TOML from the configuration's own vocabulary, with values of every type: most of it is
/// wrong, and the loader must say so, never panic.
fn toml_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("id"),
        Just("listen"),
        Just("admin_listen"),
        Just("grpc_listen"),
        Just("timeout"),
        Just("request_timeout"),
        Just("max_buffered"),
        Just("max_request_body"),
        Just("cert"),
        Just("key"),
        Just("client_ca"),
        Just("crl"),
        Just("field"),
        Just("code"),
        Just("name"),
        Just("clearance"),
        Just("identities"),
        Just("owner"),
        Just("classification"),
        Just("prefix"),
        Just("upstreams"),
        Just("method"),
        Just("path"),
        Just("consumer"),
        Just("service"),
        Just("operations"),
        Just("valid_from"),
        Just("valid_until"),
        Just("rate"),
        Just("cache_ttl"),
        Just("durability"),
        Just("rpc_rate"),
        Just("max_connection_age"),
        Just("timezone"),
        Just("pin_sha256"),
        Just("schema_mode"),
        Just("protocol"),
    ];
    let value = prop_oneof![
        "\"[a-z0-9./:{}_ -]{0,12}\"",
        "\"[0-9]{1,3}(ms|s|m|h|d|KiB|MiB|/s|/day|x)?\"",
        "-?[0-9]{1,20}",
        Just("true".to_owned()),
        Just("2025-01-01".to_owned()),
        Just("[]".to_owned()),
        Just("[\"a\", \"b\"]".to_owned()),
        Just("{}".to_owned()),
        Just("1.5".to_owned()),
    ];
    let line = (key, value).prop_map(|(k, v)| format!("{k} = {v}\n"));
    let header = prop_oneof![
        Just("[gateway]\n"),
        Just("[tls]\n"),
        Just("[identity]\n"),
        Just("[audit]\n"),
        Just("[cache]\n"),
        Just("[admin]\n"),
        Just("[telemetry]\n"),
        Just("[[agencies]]\n"),
        Just("[[peers]]\n"),
        Just("[[services]]\n"),
        Just("[[services.operations]]\n"),
        Just("[[agreements]]\n"),
        Just("[services.operations.params]\n"),
        Just("[bogus]\n"),
    ];
    let block = (header, prop::collection::vec(line, 0..8))
        .prop_map(|(h, lines)| format!("{h}{}", lines.concat()));
    prop_oneof![
        prop::collection::vec(block, 0..10).prop_map(|b| b.concat()),
        ".{0,200}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_loader_answers_any_toml_without_panicking(text in toml_text()) {
        let dir = std::env::temp_dir();
        let result = std::panic::catch_unwind(|| {
            penghubung::config::load_str(&text, &dir.join("generated.toml"), Path::new(&dir))
                .map(|_| ())
                .map_err(|e| e.errors.len())
        });
        prop_assert!(result.is_ok(), "the loader panicked on:\n{}", text);
        if let Ok(Err(count)) = result {
            prop_assert!(count > 0);
        }
    }
}
