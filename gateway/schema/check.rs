//! Validating a value against a compiled schema, as the problem documents report it.

use serde::Serialize;
use serde_json::Value;

use super::ijson::NotJson;
use super::registry::Schema;
use super::tape::Document;

/// At most this many violations are reported; the rest are counted.
pub const MAX_VIOLATIONS: usize = 20;

/// One way a value broke its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON pointer to the offending value (`""` for the whole value).
    pub pointer: String,
    /// The schema keyword that failed (`pattern`, `required`, ...).
    pub keyword: String,
    pub message: String,
}

/// The first [`MAX_VIOLATIONS`] violations of the JSON document `body`; empty when it is valid,
/// an error when it is not I-JSON (RFC 7493: no duplicate member names). A valid body is read once, in place ([`super::tape`]); any
/// other — or one the tape hands back — is parsed into a `serde_json::Value`, which words the
/// violations and parse errors.
pub fn body_violations(schema: &Schema, body: &[u8]) -> Result<Vec<Violation>, NotJson> {
    if let Some(document) = Document::parse(body) {
        if schema.fast.is_valid(document.root()) {
            return Ok(Vec::new());
        }
    }
    let value = super::ijson::from_slice(body)?;
    Ok(violations(schema, &value))
}

/// The first [`MAX_VIOLATIONS`] violations of `value`; empty when it is valid.
pub fn violations(schema: &Schema, value: &Value) -> Vec<Violation> {
    if schema.validator.is_valid(value) {
        return Vec::new();
    }
    schema
        .validator
        .iter_errors(value)
        .take(MAX_VIOLATIONS)
        .map(|e| Violation {
            pointer: e.instance_path().as_str().to_owned(),
            keyword: e.kind().keyword().to_owned(),
            message: e.to_string(),
        })
        .collect()
}
