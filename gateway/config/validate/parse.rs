//! The small parsers and checks the sections share: addresses, ids, prefixes, methods,
//! upstream URLs, dates, pins, and the "did you mean" of an unknown name.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Uri};

use super::*;

/// An OTLP/gRPC endpoint: `http://host:port` (a collector beside the gateway; the export is
/// not encrypted, so it stays on the host or a trusted segment).
pub(super) fn parse_otlp_endpoint(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|_| format!("`{text}` is not a URL; e.g. \"http://127.0.0.1:4317\""))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!(
            "`{text}`: use http://host:port of an OTLP/gRPC collector beside the gateway (TLS to a collector is not supported)"
        ));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!(
            "`{text}`: give the collector's address without a path"
        ));
    }
    Ok(uri)
}

/// Parses an optional value; `None` in the result means the value was present and bad.
/// A duration that is more than zero.
pub(super) fn positive_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(format!("`{text}` must be more than zero"));
    }
    Ok(d)
}

pub(super) fn opt<T>(
    errors: &mut Errors,
    path: &str,
    value: &Option<String>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(v) => errors.check(path, parse(v)).map(Some),
    }
}

/// A certificate fingerprint as `openssl x509 -noout -fingerprint -sha256` prints it (colons,
/// upper case) or as plain hex; stored as lowercase hex without colons.
pub(super) fn parse_pin(text: &str) -> Result<String, String> {
    let hex: String = text
        .chars()
        .filter(|&c| c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(format!(
            "`{text}` is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        ))
    }
}

pub(super) fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an address:port such as \"0.0.0.0:8443\""))
}

pub(super) fn classification(text: &str) -> Result<Classification, String> {
    Classification::parse(text).ok_or_else(|| {
        format!(
            "`{text}` is not a classification; use one of {}",
            Classification::NAMES.join(", ")
        )
    })
}

/// Agency, service and operation ids appear in URLs, headers and audit records.
pub(super) fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!("`{id}` is not a valid id: use 1-64 lowercase letters, digits, `-` and `_`, starting with a letter or digit"))
    }
}

/// Agreement ids are document numbers (`PKS-2025-014`, `PKS/014/2025`): printable, no spaces.
pub(super) fn check_agreement_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b',' | b'"' | b'\\'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a valid agreement id: printable ASCII without spaces, commas, quotes or backslashes"
        ))
    }
}

pub(super) fn check_prefix(prefix: &str) -> Result<String, String> {
    let normal = normalize(prefix).map_err(|e| format!("`{prefix}`: {e}"))?;
    if normal.segments().is_empty() {
        return Err(format!(
            "`{prefix}` must name at least one segment, e.g. \"/dukcapil/penduduk\""
        ));
    }
    let canonical = normal.encoded_from(0);
    if canonical != prefix {
        return Err(format!(
            "`{prefix}` is not in canonical form; write `{canonical}`"
        ));
    }
    if normal.segments()[0] == ".well-known" {
        return Err(format!(
            "`{prefix}`: /.well-known/ is reserved for the gateway's own documents"
        ));
    }
    if prefix.contains(['{', '}']) {
        return Err(format!("`{prefix}`: a prefix cannot hold parameters"));
    }
    Ok(canonical)
}

pub(super) fn parse_method(text: &str) -> Result<Method, String> {
    match text {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => {
            Method::from_bytes(text.as_bytes()).map_err(|e| e.to_string())
        }
        _ => Err(format!("`{text}` is not a method an operation can declare; use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS (upper case)")),
    }
}

pub(super) fn parse_upstream(text: &str, allow_plaintext: bool) -> Result<Upstream, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_plaintext => {}
        Some("http") => return Err(format!("`{text}` is plain http; use https, or set allow_plaintext = true on the service to accept an unencrypted upstream")),
        _ => return Err(format!("`{text}` must start with https://")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{text}` has no host"))?
        .clone();
    if authority.as_str().contains('@') {
        return Err(format!(
            "`{text}`: credentials in an upstream URL are not allowed"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("`{text}`: an upstream URL cannot have a query"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    let origin = Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("https"))
        .authority(authority)
        .path_and_query("/")
        .build()
        .map_err(|e| format!("`{text}`: {e}"))?;
    Ok(Upstream { origin, base_path })
}

pub(super) fn date(value: &toml::value::Datetime) -> Result<Date, String> {
    match (value.date, value.time, value.offset) {
        (Some(d), None, None) => Ok(Date { year: d.year, month: d.month, day: d.day }),
        _ => Err(format!("`{value}` must be a date without a time, e.g. 2025-01-01 (days are inclusive, in the gateway's time zone)")),
    }
}

pub(super) fn unknown<'a, S: AsRef<str> + 'a>(
    what: &str,
    name: &str,
    known: impl Iterator<Item = &'a S>,
) -> String {
    let mut names: Vec<&str> = known.map(AsRef::as_ref).collect();
    names.sort_unstable();
    if names.is_empty() {
        format!("`{name}` is not a known {what}; none is declared")
    } else {
        format!(
            "`{name}` is not a known {what} (known: {})",
            names.join(", ")
        )
    }
}

pub(super) fn agencies_code(agencies: &[Agency], i: usize) -> &str {
    agencies.get(i).map(|a| a.code.as_str()).unwrap_or("?")
}
