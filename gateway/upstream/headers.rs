//! What crosses the gateway in headers, both ways.
//!
//! Towards the upstream: hop-by-hop headers are connection-scoped and never forwarded; every
//! client-sent `SPL-*` header is removed, because upstreams trust them as the gateway's word
//! (who the consumer is, under which agreement), so a caller must never be able to set one;
//! client-sent `Forwarded` is replaced, and every header through which a proxy tells a client's
//! address ([`CLIENT_ADDRESS_HEADERS`], `X-Forwarded-*`) is removed, for the same reason: owners
//! behind nginx-style setups log or trust them. Towards the
//! caller: hop-by-hop headers and any `SPL-*` header the upstream set are removed, so that the
//! exchange id a caller sees is always the gateway's.

use std::net::SocketAddr;

use http::header::{HeaderName, HeaderValue, CONNECTION};
use http::HeaderMap;

use crate::exchange::Exchange;

pub const SPL_CONSUMER: HeaderName = HeaderName::from_static("spl-consumer");
pub const SPL_AGREEMENT: HeaderName = HeaderName::from_static("spl-agreement");
pub const SPL_PURPOSE: HeaderName = HeaderName::from_static("spl-purpose");
pub const SPL_EXCHANGE_ID: HeaderName = HeaderName::from_static("spl-exchange-id");
/// The legal basis of the agreement, to the owner's service: `kesepakatan`, `sop` or
/// `perintah_bupati` (Perbup Maluku Tengah 50/2020 Ps 14(3)).
pub const SPL_BASIS: HeaderName = HeaderName::from_static("spl-basis");
/// The service's classification, on the response: the consumer's handling label.
pub const SPL_CLASSIFICATION: HeaderName = HeaderName::from_static("spl-classification");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Headers that proxies, CDNs and load balancers use to pass on a client's address, besides
/// `Forwarded` and the `X-Forwarded-*` family. A caller could set any of them to make an owner
/// log, rate-limit or trust an address of its choosing; the gateway's own `Forwarded` is the
/// only client address an upstream receives.
pub const CLIENT_ADDRESS_HEADERS: [&str; 9] = [
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "x-original-forwarded-for",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-originating-ip",
];

/// Who and what the upstream is told about the exchange.
pub struct Forwarding<'a> {
    pub consumer: &'a str,
    /// The agreement the request is forwarded under, if any: (id, purpose, basis).
    pub agreement: Option<(&'a str, &'a str, &'static str)>,
    pub exchange: &'a Exchange,
    pub client: SocketAddr,
    /// The host the caller addressed (`Host` or `:authority`).
    pub host: Option<&'a str>,
}

/// Rewrites a caller's request headers, in place, into the upstream request's.
pub fn to_upstream(headers: &mut HeaderMap, fwd: &Forwarding<'_>) {
    // One pass over what the caller sent; only names present are removed.
    remove_hop_by_hop_and(headers, |name| {
        // Host is the upstream's, set by the client from the upstream URI; the body is
        // re-framed; the trace context is the gateway's; the body is already read whole, so
        // the upstream has nothing to continue (`Expect`).
        matches!(
            name,
            "host" | "content-length" | "traceparent" | "tracestate" | "expect" | "forwarded"
        ) || name.starts_with("spl-")
            || name.starts_with("x-forwarded-")
            || CLIENT_ADDRESS_HEADERS.contains(&name)
    });

    insert(headers, SPL_CONSUMER, fwd.consumer);
    if let Some((id, purpose, basis)) = fwd.agreement {
        insert(headers, SPL_AGREEMENT, id);
        insert(headers, SPL_PURPOSE, &crate::percent::encode_text(purpose));
        headers.insert(SPL_BASIS, HeaderValue::from_static(basis));
    }
    insert(headers, SPL_EXCHANGE_ID, &fwd.exchange.id);
    let mut forwarded = format!("for=\"{}\";proto=https", fwd.client);
    if let Some(host) = fwd
        .host
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
    {
        forwarded.push_str(";host=\"");
        forwarded.push_str(host);
        forwarded.push('"');
    }
    insert(headers, FORWARDED, &forwarded);
    insert(headers, TRACEPARENT, &fwd.exchange.trace.traceparent());
    if let Some(state) = &fwd.exchange.trace.state {
        insert(headers, TRACESTATE, state);
    }
}

/// Removes every caller header but `keep`: the upstream of a cacheable operation sees only
/// what the cache key holds, so no other header can shape a response others are served.
pub fn keep_only(headers: &mut HeaderMap, keep: &[HeaderName]) {
    remove_where(headers, |name| !keep.iter().any(|k| k.as_str() == name));
}

/// Rewrites an upstream's response headers, in place, into the caller's response headers.
pub fn to_caller(headers: &mut HeaderMap) {
    remove_hop_by_hop_and(headers, |name| name.starts_with("spl-"));
}

/// RFC 9110 §7.6.1 connection-scoped headers.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Removes the connection-scoped headers, any the `Connection` header names, and those
/// `also` names, in one pass over the names present.
fn remove_hop_by_hop_and(headers: &mut HeaderMap, also: impl Fn(&str) -> bool) {
    let named: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    remove_where(headers, |name| {
        HOP_BY_HOP.contains(&name) || named.iter().any(|n| n == name) || also(name)
    });
}

fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&str) -> bool) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| doomed(name.as_str()))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    // Every value inserted here is built from validated config, a socket address, or hex.
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_spoofable_and_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("spl-consumer", "dukcapil"),
            ("SPL-Agreement", "PKS-1"),
            ("spl-exchange-id", "forged"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "1.2.3.4"),
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("host", "gateway"),
            ("content-length", "3"),
            ("accept", "application/json"),
        ] {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let exchange = Exchange::begin(&HeaderMap::new());
        to_upstream(
            &mut h,
            &Forwarding {
                consumer: "dinkes",
                agreement: Some((
                    "PKS-2025-014",
                    "Verifikasi peserta JKN — 100%",
                    "kesepakatan",
                )),
                exchange: &exchange,
                client: "127.0.0.1:5000".parse().unwrap(),
                host: Some("spl.example"),
            },
        );
        assert_eq!(h["spl-consumer"], "dinkes");
        assert_eq!(h["spl-exchange-id"], exchange.id.as_str());
        assert_eq!(
            h.get_all("spl-agreement").iter().collect::<Vec<_>>(),
            ["PKS-2025-014"]
        );
        assert_eq!(h["spl-purpose"], "Verifikasi peserta JKN %E2%80%94 100%25");
        assert_eq!(h["spl-basis"], "kesepakatan");
        assert!(h.get("x-forwarded-for").is_none());
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("te").is_none());
        assert!(h.get("host").is_none());
        assert!(h.get("content-length").is_none());
        assert_eq!(h["accept"], "application/json");
        assert_eq!(h.get_all("forwarded").iter().count(), 1);
        assert_eq!(
            h["forwarded"],
            "for=\"127.0.0.1:5000\";proto=https;host=\"spl.example\""
        );
        assert!(h["traceparent"]
            .to_str()
            .unwrap()
            .contains(&exchange.trace.trace_id));
    }

    #[test]
    fn upstream_cannot_set_spl_headers() {
        let mut h = HeaderMap::new();
        h.insert("spl-exchange-id", "forged".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        to_caller(&mut h);
        assert!(h.get("spl-exchange-id").is_none());
        assert!(h.get("transfer-encoding").is_none());
        assert_eq!(h["content-type"], "application/json");
    }
}
