//! Cache keys. A key is a sequence of fields, each written as its length in decimal, `:`, and
//! its bytes, so two different sequences never encode to the same key whatever bytes a field
//! holds (a `/` in a target, a `:` in a header value).
//!
//! A primary key holds, in order: service id, operation id, who may share the entry (`*` for a
//! `terbuka` service; otherwise the consumer agency and the agreement the request was
//! authorized under), the canonical target forwarded upstream, its query (or none), and the
//! caller's `Accept` and `Accept-Language`, the only caller headers a cacheable operation's
//! upstream ever sees. A variant key is a primary key followed by the names and values of the
//! headers an entry's `Vary` nominates.

use http::header::{HeaderName, ACCEPT, ACCEPT_LANGUAGE};
use http::HeaderMap;

/// The caller headers that reach the upstream of a cacheable operation, and so are keyed.
pub const KEYED_HEADERS: [HeaderName; 2] = [ACCEPT, ACCEPT_LANGUAGE];

/// A cache key (see the module documentation for its layout).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key(Box<[u8]>);

/// Who may be served an entry.
#[derive(Clone, Copy, Debug)]
pub enum Sharing<'a> {
    /// Every agency (`terbuka` services).
    Everyone,
    /// Only this agency, under this agreement.
    Consumer {
        agency: &'a str,
        agreement: Option<&'a str>,
    },
}

/// What a request asks for, as the key sees it.
pub struct Request<'a> {
    pub service: &'a str,
    pub operation: &'a str,
    pub sharing: Sharing<'a>,
    /// The canonical path sent upstream, after the service prefix.
    pub target: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

// === impl Key ===

impl Key {
    pub fn primary(request: &Request<'_>) -> Key {
        let mut out = Vec::with_capacity(64 + request.target.len());
        field(&mut out, request.service.as_bytes());
        field(&mut out, request.operation.as_bytes());
        match request.sharing {
            Sharing::Everyone => {
                field(&mut out, b"*");
                field(&mut out, b"");
                field(&mut out, b"");
            }
            Sharing::Consumer { agency, agreement } => {
                field(&mut out, b"consumer");
                field(&mut out, agency.as_bytes());
                field(&mut out, agreement.unwrap_or("").as_bytes());
            }
        }
        field(&mut out, request.target.as_bytes());
        match request.query {
            None => field(&mut out, b""),
            Some(q) => {
                out.extend_from_slice(format!("{}:?", q.len() + 1).as_bytes());
                out.extend_from_slice(q.as_bytes());
            }
        }
        for name in &KEYED_HEADERS {
            header(&mut out, request.headers, name);
        }
        Key(out.into_boxed_slice())
    }

    /// This primary key refined by the request's values of the headers `Vary` names.
    pub fn variant(&self, names: &[HeaderName], headers: &HeaderMap) -> Key {
        let mut out = self.0.to_vec();
        for name in names {
            field(&mut out, name.as_str().as_bytes());
            header(&mut out, headers, name);
        }
        Key(out.into_boxed_slice())
    }

    /// The service id and operation id the key belongs to.
    pub fn scope(&self) -> (&[u8], &[u8]) {
        let (service, rest) = split(&self.0);
        let (operation, _) = split(rest);
        (service, operation)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// A header as a count of values followed by each value, in order.
fn header(out: &mut Vec<u8>, headers: &HeaderMap, name: &HeaderName) {
    let values = headers.get_all(name);
    field(out, values.iter().count().to_string().as_bytes());
    for value in values {
        field(out, value.as_bytes());
    }
}

/// The first field of `bytes` and the rest; empty on a malformed key (never built here).
fn split(bytes: &[u8]) -> (&[u8], &[u8]) {
    let Some(colon) = bytes.iter().position(|&b| b == b':') else {
        return (&[], &[]);
    };
    let len = std::str::from_utf8(&bytes[..colon])
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let start = colon + 1;
    let end = (start + len).min(bytes.len());
    (&bytes[start..end], &bytes[end..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn key(sharing: Sharing<'_>, target: &str, query: Option<&str>, headers: &HeaderMap) -> Key {
        Key::primary(&Request {
            service: "svc",
            operation: "op",
            sharing,
            target,
            query,
            headers,
        })
    }

    #[test]
    fn every_field_separates_keys() {
        let none = HeaderMap::new();
        let dinkes = Sharing::Consumer {
            agency: "dinkes",
            agreement: Some("PKS-1"),
        };
        let base = key(dinkes, "/a/b", None, &none);
        assert_eq!(base, key(dinkes, "/a/b", None, &none));
        let mut json = HeaderMap::new();
        json.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let mut two = HeaderMap::new();
        two.append(ACCEPT, HeaderValue::from_static("a"));
        two.append(ACCEPT, HeaderValue::from_static("b"));
        let mut joined = HeaderMap::new();
        joined.insert(ACCEPT, HeaderValue::from_static("a, b"));
        let others = [
            key(Sharing::Everyone, "/a/b", None, &none),
            key(
                Sharing::Consumer {
                    agency: "dukcapil",
                    agreement: Some("PKS-1"),
                },
                "/a/b",
                None,
                &none,
            ),
            key(
                Sharing::Consumer {
                    agency: "dinkes",
                    agreement: Some("PKS-2"),
                },
                "/a/b",
                None,
                &none,
            ),
            key(dinkes, "/a/c", None, &none),
            key(dinkes, "/a/b", Some(""), &none),
            key(dinkes, "/a/b", Some("x=1"), &none),
            key(dinkes, "/a/b", None, &json),
            key(dinkes, "/a/b", None, &two),
            key(dinkes, "/a/b", None, &joined),
        ];
        for (i, other) in others.iter().enumerate() {
            assert_ne!(&base, other, "variation {i} did not change the key");
            for (j, third) in others.iter().enumerate().skip(i + 1) {
                assert_ne!(other, third, "variations {i} and {j} collide");
            }
        }
    }

    #[test]
    fn bytes_that_look_like_separators_cannot_forge_a_field() {
        let none = HeaderMap::new();
        // A consumer named like the boundary of another's fields must not meet its key.
        let a = key(
            Sharing::Consumer {
                agency: "a",
                agreement: Some("1:b"),
            },
            "/x",
            None,
            &none,
        );
        let b = key(
            Sharing::Consumer {
                agency: "a1:",
                agreement: Some("b"),
            },
            "/x",
            None,
            &none,
        );
        assert_ne!(a, b);
    }

    #[test]
    fn variants_extend_the_primary_key_and_keep_its_scope() {
        let mut headers = HeaderMap::new();
        headers.insert("x-region", HeaderValue::from_static("72"));
        let primary = key(Sharing::Everyone, "/a", None, &headers);
        let names = [HeaderName::from_static("x-region")];
        let variant = primary.variant(&names, &headers);
        assert_ne!(primary, variant);
        assert_eq!(variant.scope(), (&b"svc"[..], &b"op"[..]));
        let mut other = HeaderMap::new();
        other.insert("x-region", HeaderValue::from_static("73"));
        assert_ne!(variant, primary.variant(&names, &other));
        assert_ne!(variant, primary.variant(&names, &HeaderMap::new()));
    }
}
