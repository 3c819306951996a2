//! What RFC 9111 lets a shared cache store, and for how long, decided by http-cache-semantics
//! (shared-cache rules: `no-store`, `private`, `s-maxage` over `max-age` over `Expires`, `Age`,
//! `Vary: *`, understood statuses), bounded by the operation's `cache_ttl`; and the caller's own
//! request directives (`no-cache`, `no-store`, `max-age`, `min-fresh`).
//!
//! Where the gateway is stricter than the RFC: a response that sets a cookie is never stored;
//! a response is never served stale (so `must-revalidate` and `proxy-revalidate` hold by
//! construction); and a `200` without any freshness information is fresh for `cache_ttl`, the
//! data owner's word in the configuration (as nginx's `proxy_cache_valid`).

use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, EXPIRES, PRAGMA, SET_COOKIE, VARY};
use http::{HeaderMap, Method, StatusCode};
use http_cache_semantics::{CacheOptions, CachePolicy};

/// Why a response was not stored; the label of `penghubung_cache_stores_refused_total`.
pub type Reason = &'static str;

/// The verdict on an upstream response.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Store {
        /// How long the entry stays fresh from now.
        fresh_for: Duration,
        /// Its age now (the upstream's `Age`).
        age: Duration,
        /// The request headers `Vary` names, lowercased, in order.
        vary: Vec<HeaderName>,
    },
    Refuse(Reason),
}

/// A caller's request cache directives (RFC 9111 §5.2.1), those a cache that never serves stale
/// responses has to act on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Directives {
    /// `no-cache` (or `Pragma: no-cache`): go to the upstream, then store the answer.
    pub no_cache: bool,
    /// `no-store`: neither store the answer.
    pub no_store: bool,
    pub max_age: Option<u64>,
    pub min_fresh: Option<u64>,
}

impl Directives {
    pub fn of(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        let mut has_cache_control = false;
        for (name, value) in directives(headers.get_all(CACHE_CONTROL).iter()) {
            has_cache_control = true;
            let seconds = || value.and_then(|v| v.parse::<u64>().ok());
            match name.as_str() {
                "no-cache" => d.no_cache = true,
                "no-store" => d.no_store = true,
                // An unparseable value is treated as 0, the strictest reading.
                "max-age" => d.max_age = Some(seconds().unwrap_or(0)),
                "min-fresh" => d.min_fresh = Some(seconds().unwrap_or(0)),
                _ => {}
            }
        }
        if !has_cache_control
            && headers
                .get_all(PRAGMA)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
        {
            d.no_cache = true;
        }
        d
    }

    /// Whether an entry of this age, fresh for `left` more, satisfies the request.
    pub fn accept(&self, age: Duration, left: Duration) -> bool {
        !self.no_cache
            && self.max_age.is_none_or(|max| age.as_secs() <= max)
            && self.min_fresh.is_none_or(|min| left.as_secs() >= min)
    }
}

/// Decides whether to store a response to a GET, and for how long; `ceiling` is the
/// operation's `cache_ttl`, `now` the cache clock's wall time.
pub fn verdict(
    status: StatusCode,
    headers: &HeaderMap,
    ceiling: Duration,
    now: SystemTime,
) -> Verdict {
    if headers.contains_key(SET_COOKIE) {
        return Verdict::Refuse("set-cookie");
    }
    let vary = match vary_names(headers) {
        Some(names) => names,
        None => return Verdict::Refuse("vary-star"),
    };
    let response_cc: Vec<(String, Option<String>)> =
        directives(headers.get_all(CACHE_CONTROL).iter())
            .map(|(n, v)| (n, v.map(str::to_owned)))
            .collect();
    let has = |name: &str| response_cc.iter().any(|(n, _)| n == name);

    // HTTP/1.0's `Pragma: no-cache` counts when there is no `Cache-Control` (RFC 9111 §5.4).
    if response_cc.is_empty()
        && headers
            .get_all(PRAGMA)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
    {
        return Verdict::Refuse("no-cache");
    }
    // A 200 that says nothing about its freshness is fresh for `cache_ttl`.
    let explicit = has("max-age") || has("s-maxage") || headers.contains_key(EXPIRES);
    let mut seen = headers.clone();
    if status == StatusCode::OK && !explicit {
        let owner = format!("s-maxage={}", ceiling.as_secs().max(1));
        if let Ok(value) = HeaderValue::from_str(&owner) {
            seen.append(CACHE_CONTROL, value);
        }
    }
    // The request matters to the policy only through its method and its own directives, which
    // the cache applies itself (`Directives`); no `Authorization` reaches a cacheable upstream.
    let mut request = http::Request::new(());
    *request.method_mut() = Method::GET;
    let response = {
        let mut r = http::Response::new(());
        *r.status_mut() = status;
        *r.headers_mut() = seen;
        r
    };
    let policy = CachePolicy::new_options(
        &request,
        &response,
        now,
        CacheOptions {
            shared: true,
            ..CacheOptions::default()
        },
    );
    if !policy.is_storable() {
        return Verdict::Refuse(if has("no-store") {
            "no-store"
        } else if has("private") {
            "private"
        } else {
            "status"
        });
    }
    let fresh_for = policy.time_to_live(now).min(ceiling);
    if fresh_for.is_zero() {
        return Verdict::Refuse(if has("no-cache") || has("proxy-revalidate") {
            "no-cache"
        } else {
            "expired"
        });
    }
    Verdict::Store {
        fresh_for,
        age: policy.age(now),
        vary,
    }
}

/// The header names `Vary` nominates, lowercased; `None` for `Vary: *`, which matches no
/// later request.
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(VARY) {
        let text = value.to_str().ok()?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            // A name that is not a header name cannot be matched: treat it as `*`.
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// `Cache-Control` directives: lowercased names, values unquoted.
fn directives<'a>(
    values: impl Iterator<Item = &'a HeaderValue>,
) -> impl Iterator<Item = (String, Option<&'a str>)> {
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| {
            let part = part.trim();
            if part.is_empty() {
                return None;
            }
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (part, None),
            };
            Some((name.to_ascii_lowercase(), value))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn decide(status: u16, headers: &[(&str, &str)]) -> Verdict {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        verdict(
            StatusCode::from_u16(status).unwrap(),
            &map,
            MINUTE,
            SystemTime::now(),
        )
    }

    fn fresh_for(v: &Verdict) -> Option<u64> {
        match v {
            Verdict::Store { fresh_for, .. } => Some(fresh_for.as_secs()),
            Verdict::Refuse(_) => None,
        }
    }

    #[test]
    fn the_upstream_shortens_and_cache_ttl_caps() {
        assert_eq!(fresh_for(&decide(200, &[])), Some(60));
        assert_eq!(
            fresh_for(&decide(200, &[("cache-control", "max-age=10")])),
            Some(10)
        );
        assert_eq!(
            fresh_for(&decide(200, &[("cache-control", "max-age=600")])),
            Some(60)
        );
        // s-maxage is the shared cache's, over max-age.
        assert_eq!(
            fresh_for(&decide(200, &[("cache-control", "max-age=5, s-maxage=20")])),
            Some(20)
        );
        // Age counts against the lifetime.
        assert_eq!(
            fresh_for(&decide(
                200,
                &[("cache-control", "max-age=30"), ("age", "25")]
            )),
            Some(5)
        );
    }

    #[test]
    fn what_a_shared_cache_must_not_keep() {
        let refused = |status, headers: &[(&str, &str)]| match decide(status, headers) {
            Verdict::Refuse(reason) => reason,
            v => panic!("stored: {v:?}"),
        };
        assert_eq!(refused(200, &[("cache-control", "no-store")]), "no-store");
        assert_eq!(
            refused(200, &[("cache-control", "private, max-age=60")]),
            "private"
        );
        assert_eq!(refused(200, &[("cache-control", "no-cache")]), "no-cache");
        assert_eq!(refused(200, &[("pragma", "no-cache")]), "no-cache");
        assert_eq!(
            refused(
                200,
                &[
                    ("cache-control", "public, max-age=60"),
                    ("set-cookie", "a=b")
                ]
            ),
            "set-cookie"
        );
        assert_eq!(refused(200, &[("vary", "accept, *")]), "vary-star");
        assert_eq!(refused(200, &[("cache-control", "max-age=0")]), "expired");
        assert_eq!(
            refused(200, &[("expires", "Thu, 01 Jan 1970 00:00:00 GMT")]),
            "expired"
        );
        assert_eq!(refused(200, &[("expires", "0")]), "expired");
        // Not a 200 and no freshness: the configured ttl does not apply.
        assert_eq!(refused(404, &[]), "expired");
        assert_eq!(refused(500, &[("cache-control", "max-age=60")]), "status");
        assert_eq!(refused(206, &[("cache-control", "max-age=60")]), "status");
    }

    #[test]
    fn explicit_freshness_makes_other_statuses_storable() {
        assert_eq!(
            fresh_for(&decide(404, &[("cache-control", "max-age=30")])),
            Some(30)
        );
    }

    #[test]
    fn vary_names_are_collected_in_order() {
        match decide(
            200,
            &[("vary", "Accept-Language"), ("vary", "X-Region, accept")],
        ) {
            Verdict::Store { vary, .. } => assert_eq!(
                vary.iter().map(HeaderName::as_str).collect::<Vec<_>>(),
                ["accept-language", "x-region", "accept"]
            ),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn request_directives() {
        let of = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
            Directives::of(&h)
        };
        assert!(of("no-cache").no_cache);
        assert!(of("No-Store").no_store);
        assert_eq!(of("max-age=5, min-fresh=\"3\"").max_age, Some(5));
        assert_eq!(of("max-age=5, min-fresh=\"3\"").min_fresh, Some(3));
        assert_eq!(of("max-age=x").max_age, Some(0));
        let mut pragma = HeaderMap::new();
        pragma.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(Directives::of(&pragma).no_cache);

        let d = of("max-age=10, min-fresh=5");
        let s = Duration::from_secs;
        assert!(d.accept(s(10), s(5)));
        assert!(!d.accept(s(11), s(5)));
        assert!(!d.accept(s(1), s(4)));
        assert!(Directives::default().accept(s(1000), s(0)));
    }
}
