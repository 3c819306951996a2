//! The response cache: a handle the pipeline calls after every policy stage has passed, so a
//! stored response is only ever served to a request that was itself authorized, charged to its
//! quota and audited.
//!
//! - **What is stored** ([`freshness`]): responses to GET on operations with `cache_ttl`, of
//!   services below `rahasia`, that RFC 9111 lets a shared cache keep; never one that sets a
//!   cookie; for at most `cache_ttl`.
//! - **Who may see it** ([`key`]): the key holds the service, operation, canonical target and
//!   query, the only caller headers the upstream sees (`Accept`, `Accept-Language`), the values
//!   of the headers `Vary` names, and — except on `terbuka` services — the consumer agency and
//!   its agreement. Nothing outside the key reaches the upstream of a cacheable operation, so
//!   nothing outside the key can shape a stored response.
//! - **Coalescing**: concurrent misses for one key make one upstream request; the others wait
//!   for it (at most the service's timeout and a second), then read the entry it stored. If the
//!   upstream timed out they report the same timeout; if nothing was stored (not storable, an
//!   upstream error, a cancelled request) each goes upstream itself.
//! - **Time** is tokio's clock (so tests can pause it), anchored to the wall clock once for
//!   `Date`, `Expires` and `Age` arithmetic. Entries are never served stale.
//! - **Purge** (admin API) and **reload** drop entries by service or operation; a fetch that
//!   began before a purge does not store what it fetched.

mod freshness;
mod key;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AGE};
use http::{HeaderMap, Response, StatusCode};
use moka::notification::RemovalCause;
use tokio::sync::watch;
use tokio::time::Instant;

pub use freshness::{vary_names, verdict, Directives, Reason, Verdict};
pub use key::{Key, Request, Sharing, KEYED_HEADERS};

use crate::body::{full, Body};
use crate::config::{CacheSettings, Classification, Operation, Service, Snapshot};
use crate::telemetry::CacheMetrics;

/// No entry may take more than this share of `cache.max_size` (1/8): one response cannot
/// flush the cache.
const ENTRY_SHARE: u64 = 8;
/// Bytes an entry costs beyond its key, headers and body (maps, timestamps).
const ENTRY_OVERHEAD: usize = 256;
/// How long a waiter waits beyond the service's timeout for the request it joined.
const WAIT_GRACE: Duration = Duration::from_secs(1);

/// The cache handle.
pub struct Cache {
    store: moka::sync::Cache<Key, Arc<Entry>>,
    /// Keys with an upstream request under way, and how waiters learn how it ended.
    inflight: Mutex<HashMap<Key, watch::Receiver<Option<End>>>>,
    /// Bumped by every purge: a fetch that began before it does not store.
    generation: AtomicU64,
    epoch: Epoch,
    entry_limit: u64,
    metrics: CacheMetrics,
}

/// What the store holds under a key (always behind an `Arc`, so the variants' sizes differ
/// harmlessly).
#[allow(clippy::large_enum_variant)]
pub enum Entry {
    Response(Stored),
    /// The primary key's responses vary by these request headers: look under the variant key.
    Vary(Box<[HeaderName]>),
}

/// A stored response, as it was sent to the caller that fetched it (after header rewriting and
/// response validation), without the per-exchange headers.
pub struct Stored {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The exchange whose upstream response this is.
    pub origin: String,
    stored_at: Instant,
    /// `Age` when stored.
    age: Duration,
    fresh_for: Duration,
}

/// A fresh entry for a request.
pub struct Hit {
    pub stored: Arc<Entry>,
    /// Served after waiting for another request's upstream response.
    pub coalesced: bool,
    age: Duration,
}

/// The outcome of a lookup.
pub enum Lookup<'a> {
    Hit(Hit),
    /// Go upstream, then hand the response to [`Fetch::finish`].
    Miss(Fetch<'a>),
    /// The request this one waited on timed out upstream after this long.
    TimedOut(Duration),
}

/// A miss being fetched. Dropping it unfinished (a cancelled request) lets a waiter lead.
pub struct Fetch<'a> {
    cache: &'a Cache,
    key: Key,
    /// Held when this fetch leads a flight.
    flight: Option<watch::Sender<Option<End>>>,
    may_store: bool,
    generation: u64,
}

/// An upstream response, read whole, offered to the cache.
pub struct Fetched<'a> {
    /// The headers the upstream was sent.
    pub request: &'a HeaderMap,
    pub response: &'a http::response::Parts,
    pub body: &'a Bytes,
    /// The operation's `cache_ttl`.
    pub ceiling: Duration,
    /// The exchange id of the request that fetched it.
    pub origin: &'a str,
}

/// How the response of a fetch ended, for the requests waiting on it.
#[derive(Debug, Clone, Copy)]
pub enum End {
    Stored,
    NotStored,
    TimedOut(Duration),
}

/// The wall time at one tokio instant, so that cache time follows tokio's (pausable) clock.
struct Epoch {
    wall: SystemTime,
    instant: Instant,
}

// === impl Cache ===

impl Cache {
    pub fn new(settings: &CacheSettings, metrics: CacheMetrics) -> Cache {
        let evictions = metrics.clone();
        let store = moka::sync::Cache::builder()
            .max_capacity(settings.max_size)
            .weigher(|key: &Key, entry: &Arc<Entry>| weight(key, entry))
            .expire_after(Lifetime)
            .eviction_listener(move |_key, _entry, cause| match cause {
                RemovalCause::Size => evictions.evicted("size"),
                RemovalCause::Expired => evictions.evicted("expired"),
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        Cache {
            store,
            inflight: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            epoch: Epoch {
                wall: SystemTime::now(),
                instant: Instant::now(),
            },
            entry_limit: (settings.max_size / ENTRY_SHARE).min(u64::from(u32::MAX)),
            metrics,
        }
    }

    /// The `cache_ttl` under which this operation's responses may be stored: never for a
    /// service at `rahasia` or above, whatever the configuration says.
    pub fn ceiling(service: &Service, operation: &Operation) -> Option<Duration> {
        if service.classification >= Classification::Rahasia {
            return None;
        }
        operation.cache_ttl
    }

    /// Looks `key` up for a request whose upstream-bound headers are `headers` (what `Vary`
    /// selects on) and whose caller sent `directives`. A miss may lead a fetch (`lead`; GET
    /// only), or wait for the one under way for the key, at most `wait` and a second.
    pub async fn lookup(
        &self,
        key: Key,
        headers: &HeaderMap,
        directives: Directives,
        lead: bool,
        wait: Duration,
    ) -> Lookup<'_> {
        let mut waited = false;
        // Waiting ends in a stored entry (look again: the entry may be another variant's), in a
        // response that was not storable (go alone), or in a timeout. Three rounds bound it.
        for _ in 0..3 {
            if let Some(hit) = self.fresh(&key, headers, &directives, waited) {
                return Lookup::Hit(hit);
            }
            if !lead || directives.no_cache {
                break;
            }
            let joined = {
                let Ok(mut inflight) = self.inflight.lock() else {
                    break;
                };
                match inflight.get(&key) {
                    Some(rx) => rx.clone(),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        inflight.insert(key.clone(), rx);
                        drop(inflight);
                        // A flight that ended between the lookup above and the lock stored
                        // its entry before it left the map: look once more.
                        let fetch = self.fetch(key.clone(), Some(tx), &directives);
                        if let Some(hit) = self.fresh(&key, headers, &directives, waited) {
                            fetch.end(End::Stored);
                            return Lookup::Hit(hit);
                        }
                        self.metrics.miss();
                        return Lookup::Miss(fetch);
                    }
                }
            };
            waited = true;
            self.metrics.coalesced_wait();
            let mut rx = joined;
            let end = tokio::time::timeout(wait + WAIT_GRACE, rx.wait_for(Option::is_some)).await;
            match end.as_ref().map(|r| r.as_ref().map(|end| **end)) {
                Ok(Ok(Some(End::Stored))) => continue,
                Ok(Ok(Some(End::TimedOut(after)))) => return Lookup::TimedOut(after),
                Ok(Ok(Some(End::NotStored) | None)) | Ok(Err(_)) | Err(_) => break,
            }
        }
        self.metrics.miss();
        let mut fetch = self.fetch(key, None, &directives);
        fetch.may_store &= lead;
        Lookup::Miss(fetch)
    }

    fn fetch(
        &self,
        key: Key,
        flight: Option<watch::Sender<Option<End>>>,
        directives: &Directives,
    ) -> Fetch<'_> {
        Fetch {
            cache: self,
            key,
            flight,
            may_store: !directives.no_store,
            generation: self.generation.load(Ordering::Acquire),
        }
    }

    /// A fresh entry for the request, following a `Vary` marker to its variant.
    fn fresh(
        &self,
        key: &Key,
        headers: &HeaderMap,
        directives: &Directives,
        coalesced: bool,
    ) -> Option<Hit> {
        let mut entry = self.store.get(key)?;
        if let Entry::Vary(names) = &*entry {
            entry = self.store.get(&key.variant(names, headers))?;
        }
        let Entry::Response(stored) = &*entry else {
            return None;
        };
        let now = Instant::now();
        let resident = now.saturating_duration_since(stored.stored_at);
        let left = stored.fresh_for.checked_sub(resident)?;
        if left.is_zero() {
            return None;
        }
        let age = stored.age + resident;
        if !directives.accept(age, left) {
            return None;
        }
        self.metrics.hit();
        Some(Hit {
            stored: entry.clone(),
            coalesced,
            age,
        })
    }

    /// Drops every entry, or a service's, or one operation's; returns how many responses
    /// were dropped. Fetches under way when it is called do not store.
    pub fn purge(&self, service: Option<&str>, operation: Option<&str>) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut dropped = 0;
        for (key, entry) in self.store.iter() {
            let (s, o) = key.scope();
            let selected = service.is_none_or(|id| s == id.as_bytes())
                && operation.is_none_or(|id| o == id.as_bytes());
            if selected {
                if matches!(*entry, Entry::Response(_)) {
                    dropped += 1;
                }
                self.store.invalidate(&*key);
            }
        }
        self.store.run_pending_tasks();
        dropped
    }

    /// After a reload from `old` to `new`: drops the entries of every service that is gone or
    /// whose definition or schemas changed. Returns the services dropped.
    pub fn retain_unchanged(&self, old: &Snapshot, new: &Snapshot) -> Vec<String> {
        let changed: Vec<String> = old
            .services
            .iter()
            .filter(|s| {
                !new.services
                    .iter()
                    .any(|n| n.id == s.id && n.fingerprint == s.fingerprint)
            })
            .map(|s| s.id.clone())
            .collect();
        for id in &changed {
            self.purge(Some(id), None);
        }
        changed
    }

    /// Entries and bytes held, for the metrics.
    pub fn usage(&self) -> (u64, u64) {
        self.store.run_pending_tasks();
        (self.store.entry_count(), self.store.weighted_size())
    }

    /// The cache's wall clock: tokio's clock anchored to the wall time at start.
    fn wall_now(&self) -> SystemTime {
        self.epoch.wall + Instant::now().saturating_duration_since(self.epoch.instant)
    }
}

// === impl Fetch ===

impl Fetch<'_> {
    /// The largest body this fetch would store.
    pub fn entry_limit(&self) -> u64 {
        self.cache.entry_limit
    }

    /// Stores the response if RFC 9111 and the operation allow it, and tells the waiters.
    /// `request` holds the headers the upstream was sent (`Vary` is about those).
    pub fn finish(self, fetched: &Fetched<'_>) -> Result<(), Reason> {
        let decided = self.store(fetched);
        match decided {
            Ok(()) => self.end(End::Stored),
            Err(reason) => {
                self.cache.metrics.refused(reason);
                self.end(End::NotStored);
            }
        }
        decided
    }

    fn store(&self, fetched: &Fetched<'_>) -> Result<(), Reason> {
        let cache = self.cache;
        if !self.may_store {
            return Err("request-no-store");
        }
        if fetched.body.len() as u64 > cache.entry_limit {
            return Err("too-large");
        }
        let response = fetched.response;
        let now = cache.wall_now();
        let (fresh_for, age, vary) =
            match verdict(response.status, &response.headers, fetched.ceiling, now) {
                Verdict::Store {
                    fresh_for,
                    age,
                    vary,
                } => (fresh_for, age, vary),
                Verdict::Refuse(reason) => return Err(reason),
            };
        if cache.generation.load(Ordering::Acquire) != self.generation {
            return Err("purged");
        }
        let mut headers = response.headers.clone();
        headers.remove(AGE);
        let stored = Arc::new(Entry::Response(Stored {
            status: response.status,
            headers,
            body: fetched.body.clone(),
            origin: fetched.origin.to_owned(),
            stored_at: Instant::now(),
            age,
            fresh_for,
        }));
        if vary.is_empty() {
            cache.store.insert(self.key.clone(), stored);
        } else {
            let variant = self.key.variant(&vary, fetched.request);
            cache.store.insert(variant, stored);
            cache
                .store
                .insert(self.key.clone(), Arc::new(Entry::Vary(vary.into())));
        }
        Ok(())
    }

    /// Tells the waiters how the fetch ended.
    pub fn end(mut self, end: End) {
        self.release(end);
    }

    /// The upstream did not answer in time: waiters report the same.
    pub fn timed_out(mut self, after: Duration) {
        self.release(End::TimedOut(after));
    }

    /// Not offered to the cache (a schema violation forwarded under `monitor`, a body over the
    /// entry limit, trailers): counted, and waiters go upstream themselves.
    pub fn refuse(self, reason: Reason) {
        self.cache.metrics.refused(reason);
        self.end(End::NotStored);
    }

    fn release(&mut self, end: End) {
        let Some(tx) = self.flight.take() else {
            return;
        };
        if let Ok(mut inflight) = self.cache.inflight.lock() {
            inflight.remove(&self.key);
        }
        let _ = tx.send(Some(end));
    }
}

impl Drop for Fetch<'_> {
    /// Unfinished (an upstream failure, a refusal, a cancelled request): nothing was stored,
    /// and each waiter goes upstream itself.
    fn drop(&mut self) {
        self.release(End::NotStored);
    }
}

// === impl Hit ===

impl Hit {
    /// The response to serve: the stored one with its current `Age`; no body for HEAD.
    pub fn response(&self, head: bool) -> Response<Body> {
        let Entry::Response(stored) = &*self.stored else {
            unreachable!("hits are responses")
        };
        let mut response = Response::new(full(if head {
            Bytes::new()
        } else {
            stored.body.clone()
        }));
        *response.status_mut() = stored.status;
        *response.headers_mut() = stored.headers.clone();
        response
            .headers_mut()
            .insert(AGE, HeaderValue::from(self.age.as_secs()));
        response
    }

    pub fn stored(&self) -> &Stored {
        match &*self.stored {
            Entry::Response(stored) => stored,
            Entry::Vary(_) => unreachable!("hits are responses"),
        }
    }
}

/// What an entry costs against `cache.max_size`.
fn weight(key: &Key, entry: &Arc<Entry>) -> u32 {
    let size = key.len()
        + ENTRY_OVERHEAD
        + match &**entry {
            Entry::Response(stored) => {
                stored.body.len()
                    + stored
                        .headers
                        .iter()
                        .map(|(n, v)| n.as_str().len() + v.len() + 32)
                        .sum::<usize>()
            }
            Entry::Vary(names) => names.iter().map(|n| n.as_str().len() + 32).sum(),
        };
    u32::try_from(size).unwrap_or(u32::MAX)
}

/// Entries leave the store when they stop being fresh (on the wall clock moka keeps; freshness
/// itself is always checked on tokio's clock before serving).
struct Lifetime;

impl moka::Expiry<Key, Arc<Entry>> for Lifetime {
    fn expire_after_create(
        &self,
        _key: &Key,
        entry: &Arc<Entry>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        match &**entry {
            Entry::Response(stored) => Some(stored.fresh_for),
            Entry::Vary(_) => Some(Duration::from_secs(24 * 3600)),
        }
    }
}
