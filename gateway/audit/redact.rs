//! Keyed hashing of the values in a request's target. Every path and query parameter value is
//! written to the audit log as a keyed hash unless its operation names it in `audit_clear`:
//! the log can answer "who looked up this NIK" for someone holding the key, and shows nobody
//! the NIK itself. Query parameters the operation does not declare keep their names and lose
//! their values, so a caller cannot push data of its choosing into the permanent log.

use crate::config::{Operation, ParamIn};
use crate::keys::Redactor;
use crate::route::{Part, Template};

/// The target as the audit log records it: the service prefix, the decoded path after it, and
/// the query. Every parameter value is replaced by its keyed hash (or by `redacted` when there
/// is no key, so that no value is ever written in clear), unless `operation.audit_clear` names
/// the parameter; a query parameter the operation does not declare (in `params`,
/// `audit_clear` or `audit_redact`) is written by name alone, or as the keyed hash of its name
/// when that does not read as a name.
pub fn audit_target(
    prefix: &str,
    operation: &Operation,
    rest: &[String],
    query: Option<&str>,
    redactor: Option<&Redactor>,
) -> String {
    let hide = |value: &str| match redactor {
        Some(r) => r.redact(value),
        None => "redacted".to_owned(),
    };
    let clear = |name: &str| operation.audit_clear.iter().any(|c| c == name);
    let template: &Template = &operation.template;
    let mut out = String::from(prefix);
    for (part, value) in template.parts().iter().zip(rest) {
        out.push('/');
        match part {
            Part::Param(name) if !clear(name) => out.push_str(&hide(value)),
            _ => out.push_str(value),
        }
    }
    if template.parts().is_empty() && rest.is_empty() && out.is_empty() {
        out.push('/');
    }
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        let declared = |name: &str| {
            clear(name)
                || operation.audit_redact.iter().any(|r| r == name)
                || operation
                    .params
                    .iter()
                    .any(|p| p.location == ParamIn::Query && p.name == name)
        };
        for (i, pair) in query.split('&').enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if clear(name) {
                out.push_str(name);
                out.push('=');
                out.push_str(value);
            } else if declared(name) {
                out.push_str(name);
                out.push('=');
                out.push_str(&hide(value));
            } else if looks_like_a_name(name) {
                out.push_str(name);
            } else {
                // A caller's "name" that could be a value (`?7208014101900001`) is one.
                out.push_str(&hide(name));
            }
        }
    }
    out
}

/// An undeclared query parameter's name is kept when it reads as a name: an ASCII letter or
/// `_`, then letters, digits, `_`, `-` or `.`, at most 64 bytes, with no run of five digits or
/// more (identifiers — NIK, KK, NIP, NPWP, telephone numbers — are long digit runs).
fn looks_like_a_name(name: &str) -> bool {
    let mut digits = 0;
    name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| {
            digits = if b.is_ascii_digit() { digits + 1 } else { 0 };
            digits < 5 && (b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::BadRedactionKey;

    #[test]
    fn only_names_that_read_as_names_are_kept() {
        for kept in ["nama", "page_size", "x", "v2.filter", "tahun2024"] {
            assert!(looks_like_a_name(kept), "{kept}");
        }
        for hashed in [
            "7208014101900001",
            "nik7208014101900001",
            "",
            "a b",
            "nama%20",
            "_12345",
        ] {
            assert!(!looks_like_a_name(hashed), "{hashed}");
        }
        assert!(!looks_like_a_name(&"a".repeat(65)));
    }

    #[test]
    fn key_ids_name_the_key_without_giving_it_away() {
        let a = Redactor::from_file_bytes(&[b'a'; 64]).unwrap();
        let b = Redactor::joined(vec![
            Redactor::from_file_bytes(&[b'b'; 64]).unwrap(),
            Redactor::from_file_bytes(&[b'a'; 64]).unwrap(),
        ])
        .unwrap();
        assert_eq!(a.key_id().len(), 16);
        assert_ne!(a.key_id(), b.key_id());
        assert_eq!(b.key_ids().nth(1), Some(a.key_id()));
        assert_eq!(b.candidates("7208")[1], a.redact("7208"));
        assert_ne!(b.redact("7208"), a.redact("7208"));
        assert!(matches!(
            Redactor::from_file_bytes(b"short"),
            Err(BadRedactionKey)
        ));
        assert!(Redactor::joined(Vec::new()).is_none());
    }
}
