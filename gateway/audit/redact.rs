//! Keyed hashing of identifiers listed in an operation's `audit_redact`: the log can answer
//! "who looked up this NIK" for someone holding the key, and shows nobody the NIK itself.

use ring::hmac;

use crate::route::{Part, Template};
use data_encoding::HEXLOWER;

pub struct Redactor {
    key: hmac::Key,
}

// === impl Redactor ===

impl Redactor {
    /// A key file holds 64 hex digits (as `pki init` writes it) or at least 32 raw bytes.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Redactor, String> {
        let text = String::from_utf8_lossy(bytes);
        let trimmed = text.trim();
        let hex = (trimmed.len() == 64)
            .then(|| {
                data_encoding::HEXLOWER_PERMISSIVE
                    .decode(trimmed.as_bytes())
                    .ok()
            })
            .flatten();
        let key = if let Some(key) = hex {
            key
        } else if bytes.len() >= 32 {
            bytes.to_vec()
        } else {
            return Err("a redaction key must be 64 hex digits or at least 32 bytes".to_owned());
        };
        Ok(Redactor {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        })
    }

    /// `hmac-sha256:<hex>` of a value.
    pub fn redact(&self, value: &str) -> String {
        format!(
            "hmac-sha256:{}",
            HEXLOWER.encode(hmac::sign(&self.key, value.as_bytes()).as_ref())
        )
    }
}

/// The target as the audit log records it: the service prefix, the decoded path after it, and
/// the query, with the values of parameters named in `redact` replaced by keyed hashes (or by
/// `redacted` when there is no key, so that nothing listed is ever written in clear).
pub fn audit_target(
    prefix: &str,
    template: &Template,
    rest: &[String],
    query: Option<&str>,
    redact: &[String],
    redactor: Option<&Redactor>,
) -> String {
    let hide = |value: &str| match redactor {
        Some(r) => r.redact(value),
        None => "redacted".to_owned(),
    };
    let mut out = String::from(prefix);
    for (part, value) in template.parts().iter().zip(rest) {
        out.push('/');
        match part {
            Part::Param(name) if redact.contains(name) => out.push_str(&hide(value)),
            _ => out.push_str(value),
        }
    }
    if template.parts().is_empty() && rest.is_empty() && out.is_empty() {
        out.push('/');
    }
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                if redact.iter().any(|r| r == key) {
                    format!("{key}={}", hide(value))
                } else {
                    pair.to_owned()
                }
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}
