//! The response cache, through the pipeline and a real mTLS upstream: isolation between
//! agencies, `Vary`, what is never stored, expiry on paused time, coalescing, policy before
//! every hit, poisoning attempts, audit of hits, purge and reload.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use penghubung::audit::{self, Nonce, Record};
use penghubung::caller::Caller;
use penghubung::clock::{midnight_millis, Clock};
use penghubung::config::{load_str, Date, Snapshot, TimeZone};
use penghubung::runtime::Gateway;
use penghubung::tls::IdentityField;
use serde_json::{json, Value};
use support::Edit;
use support::{config_text, upstream_tls, TestPki};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// An mTLS upstream whose answers the request's query scripts: `cc` → `Cache-Control`, `vary`
/// → `Vary`, `cookie` → `Set-Cookie`, `status`, `size` (a body of that many bytes). Its JSON
/// body numbers the request and reflects what the upstream saw of the caller. Optionally
/// gated: each answer waits for a permit the test adds.
#[derive(Clone)]
struct Origin {
    url: String,
    count: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(String, HeaderMap)>>>,
    gate: Option<Arc<Semaphore>>,
}

impl Origin {
    async fn start(pki: &TestPki, gated: bool) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = Origin {
            url: format!("https://{}", listener.local_addr().unwrap()),
            count: Arc::default(),
            seen: Arc::default(),
            gate: gated.then(|| Arc::new(Semaphore::new(0))),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(upstream_tls(pki));
        let me = origin.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (acceptor, me) = (acceptor.clone(), me.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<Incoming>| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.answer(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        origin
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        let target = request.uri().to_string();
        self.seen
            .lock()
            .unwrap()
            .push((target.clone(), request.headers().clone()));
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        let query = query(request.uri().query().unwrap_or(""));
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let mut doc = json!({
            "n": n,
            "target": target,
            "consumer": header("spl-consumer"),
            "accept_language": header("accept-language"),
            "x_evil": header("x-evil"),
            "forwarded": header("forwarded"),
            "authorization": header("authorization"),
        });
        if let Some(size) = query.get("size") {
            doc["padding"] = json!("x".repeat(size.parse().unwrap()));
        }
        let mut response = Response::new(Full::new(Bytes::from(doc.to_string())));
        *response.status_mut() =
            StatusCode::from_u16(query.get("status").map_or(200, |s| s.parse().unwrap())).unwrap();
        let headers = response.headers_mut();
        headers.insert("content-type", "application/json".parse().unwrap());
        for (param, name) in [
            ("cc", "cache-control"),
            ("vary", "vary"),
            ("cookie", "set-cookie"),
        ] {
            if let Some(value) = query.get(param) {
                headers.insert(name, value.parse().unwrap());
            }
        }
        response
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<(String, HeaderMap)> {
        self.seen.lock().unwrap().clone()
    }

    fn release(&self, n: usize) {
        self.gate.as_ref().unwrap().add_permits(n);
    }
}

fn query(text: &str) -> std::collections::HashMap<String, String> {
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            let v = v
                .replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%20", " ");
            (k.to_owned(), v)
        })
        .collect()
}

/// The test configuration with `cache_ttl = "60s"` on `get-penduduk` (terbatas) and
/// `list-faskes` (terbuka), an agreement for Dukcapil too, and `extra` appended.
fn cached_config(upstream: &str, timeout: &str, extra: &str) -> String {
    config_text(
        upstream,
        timeout,
        &format!(
            r#"
[[agreements]]
id = "PKS-TEST-2"
consumer = "dukcapil"
service = "dukcapil-penduduk"
purpose = "Pemutakhiran data"
valid_from = 2020-01-01
valid_until = 2099-12-31
{extra}"#
        ),
    )
    .edit_once(
        "  path = \"/penduduk/{nik}\"",
        "  path = \"/penduduk/{nik}\"\n  cache_ttl = \"60s\"\n\n  [[services.operations]]\n  id = \"get-keluarga\"\n  method = \"GET\"\n  path = \"/penduduk/{nik}/keluarga\"\n  cache_ttl = \"60s\"")
    .edit_once(
        "  path = \"/faskes\"",
        "  path = \"/faskes\"\n  cache_ttl = \"60s\"")
}

struct Harness {
    gateway: Gateway,
    origin: Origin,
    pki: TestPki,
}

/// What a caller got.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    /// The upstream's request number this answer carries.
    fn n(&self) -> u64 {
        self.json()["n"].as_u64().unwrap()
    }
    fn age(&self) -> Option<u64> {
        self.headers
            .get("age")
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }
}

impl Harness {
    async fn new(gated: bool, extra: &str) -> Harness {
        Harness::with(gated, "5s", extra, Clock::system()).await
    }

    async fn with(gated: bool, timeout: &str, extra: &str, clock: Clock) -> Harness {
        let pki = TestPki::new();
        let origin = Origin::start(&pki, gated).await;
        let text = cached_config(&origin.url, timeout, extra);
        let snapshot = load(&pki, &text);
        Harness {
            gateway: Gateway::with_clock(Arc::new(snapshot), clock).unwrap(),
            origin,
            pki,
        }
    }

    fn caller(&self, agency: &str) -> Caller {
        let cert = match agency {
            "dinkes" => &self.pki.dinkes,
            _ => &self.pki.dukcapil,
        };
        Caller::resolve(
            &self.gateway.snapshot(),
            "127.0.0.1:1".parse().unwrap(),
            IdentityField::SubjectCn.extract(&cert.cert),
        )
    }

    async fn get(&self, agency: &str, target: &str) -> Got {
        self.send(agency, Method::GET, target, &[]).await
    }

    async fn send(
        &self,
        agency: &str,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Got {
        let mut request = Request::builder().method(method).uri(target);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .gateway
            .handle(
                &self.caller(agency),
                request.body(Full::new(Bytes::new())).unwrap(),
            )
            .await;
        let (parts, body) = response.into_parts();
        Got {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    /// Waits (bounded, 10 s) until a metric reaches `value`.
    async fn metric_reaches(&self, line_start: &str, value: f64) {
        for _ in 0..1000 {
            if self.metric(line_start) >= value {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{line_start} never reached {value}");
    }

    fn metric(&self, line_start: &str) -> f64 {
        let text = self.gateway.metrics_text();
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    }
}

fn load(pki: &TestPki, text: &str) -> Snapshot {
    load_str(text, &pki.path().join("c.toml"), pki.path()).unwrap_or_else(|e| panic!("{e}"))
}

const PENDUDUK: &str = "/dukcapil/penduduk/penduduk/7201010101010001";

#[tokio::test]
async fn two_agencies_asking_the_same_url_never_see_each_others_entry() {
    let h = Harness::new(false, "").await;
    let first = h.get("dinkes", PENDUDUK).await;
    assert_eq!((first.status, first.age()), (200, None));
    assert_eq!(first.json()["consumer"], "dinkes");

    let other = h.get("dukcapil", PENDUDUK).await;
    assert_eq!(other.status, 200);
    assert_eq!(
        other.json()["consumer"],
        "dukcapil",
        "Dukcapil was served Dinkes's entry"
    );
    assert_eq!(h.origin.count(), 2);

    // Each agency now hits its own entry.
    for (agency, n) in [("dinkes", 1), ("dukcapil", 2)] {
        let hit = h.get(agency, PENDUDUK).await;
        assert_eq!((hit.status, hit.n(), hit.age()), (200, n, Some(0)));
        assert_eq!(hit.json()["consumer"], agency);
    }
    assert_eq!(h.origin.count(), 2);

    // A terbuka service's entries are shared by every agency.
    let stored = h.get("dinkes", "/dinkes/faskes").await;
    let shared = h.get("dukcapil", "/dinkes/faskes").await;
    assert_eq!(shared.n(), stored.n());
    assert_eq!(shared.age(), Some(0));
    assert_eq!(h.origin.count(), 3);
    assert_eq!(h.metric("penghubung_cache_hits_total"), 3.0);
    assert_eq!(h.metric("penghubung_cache_misses_total"), 3.0);
}

#[tokio::test]
async fn vary_selects_among_stored_variants() {
    let h = Harness::new(false, "").await;
    let target = "/dinkes/faskes?vary=accept-language";
    let get = |lang: &'static str| {
        let h = &h;
        async move {
            h.send("dinkes", Method::GET, target, &[("accept-language", lang)])
                .await
        }
    };
    let id = get("id").await;
    assert_eq!(id.json()["accept_language"], "id");
    let en = get("en").await;
    assert_eq!(
        en.json()["accept_language"],
        "en",
        "served the other language's variant"
    );
    assert_eq!(h.origin.count(), 2);
    let (id2, en2) = (get("id").await, get("en").await);
    assert_eq!((id2.n(), id2.age()), (id.n(), Some(0)));
    assert_eq!((en2.n(), en2.age()), (en.n(), Some(0)));
    assert_eq!(h.origin.count(), 2);

    // Vary is read against the request the upstream was sent: a caller header it never sees
    // (not keyed, so dropped) cannot have shaped the answer, and does not split the entry.
    let target = "/dinkes/faskes?vary=x-region";
    let a = h
        .send("dinkes", Method::GET, target, &[("x-region", "72")])
        .await;
    let b = h
        .send("dinkes", Method::GET, target, &[("x-region", "73")])
        .await;
    assert_eq!((b.n(), b.age()), (a.n(), Some(0)));

    // `Vary: *` matches nothing: never stored.
    let star = "/dinkes/faskes?vary=*";
    h.get("dinkes", star).await;
    assert_eq!(h.get("dinkes", star).await.age(), None);
}

#[tokio::test]
async fn what_may_not_be_stored_is_not() {
    let h = Harness::new(false, "").await;
    for (query, reason) in [
        ("cc=no-store", "no-store"),
        ("cc=private%2C%20max-age%3D60", "private"),
        ("cc=no-cache", "no-cache"),
        ("cc=public%2C%20max-age%3D60&cookie=sesi%3D1", "set-cookie"),
        ("cc=max-age%3D0", "expired"),
        ("status=500", "status"),
        ("status=503&cc=max-age%3D60", "status"),
    ] {
        let target = format!("{PENDUDUK}?{query}");
        let before = h.origin.count();
        let metric = format!("penghubung_cache_stores_refused_total{{reason=\"{reason}\"}}");
        let refused = h.metric(&metric);
        let first = h.get("dinkes", &target).await;
        let second = h.get("dinkes", &target).await;
        assert_eq!(second.age(), None, "{query}: served from the cache");
        assert_ne!(first.n(), second.n(), "{query}");
        assert_eq!(h.origin.count(), before + 2, "{query}");
        assert_eq!(h.metric(&metric), refused + 2.0, "{query}");
    }

    // The caller's own `no-store` keeps its answer out; its `no-cache` goes upstream and
    // refreshes the entry.
    h.send(
        "dinkes",
        Method::GET,
        PENDUDUK,
        &[("cache-control", "no-store")],
    )
    .await;
    assert_eq!(h.get("dinkes", PENDUDUK).await.age(), None);
    let stored = h.get("dinkes", PENDUDUK).await;
    assert_eq!(stored.age(), Some(0));
    let refreshed = h
        .send(
            "dinkes",
            Method::GET,
            PENDUDUK,
            &[("cache-control", "no-cache")],
        )
        .await;
    assert_eq!(refreshed.age(), None);
    assert!(refreshed.n() > stored.n());
    assert_eq!(h.get("dinkes", PENDUDUK).await.n(), refreshed.n());
}

#[tokio::test(start_paused = true)]
async fn entries_expire_on_the_gateways_clock() {
    let h = Harness::new(false, "").await;
    let short = format!("{PENDUDUK}?cc=max-age%3D10");
    let first = h.get("dinkes", &short).await;
    assert_eq!(h.get("dinkes", &short).await.age(), Some(0));
    tokio::time::advance(Duration::from_secs(4)).await;
    let hit = h.get("dinkes", &short).await;
    assert_eq!((hit.n(), hit.age()), (first.n(), Some(4)));
    // The caller may ask for younger answers.
    let younger = h
        .send(
            "dinkes",
            Method::GET,
            &short,
            &[("cache-control", "max-age=3")],
        )
        .await;
    assert_eq!(younger.age(), None);
    tokio::time::advance(Duration::from_secs(10)).await;
    let expired = h.get("dinkes", &short).await;
    assert_eq!(expired.age(), None, "served after max-age");
    assert_eq!(h.origin.count(), 3);

    // cache_ttl caps what the upstream allows; the upstream's Age counts.
    let long = format!("{PENDUDUK}?cc=max-age%3D600");
    h.get("dinkes", &long).await;
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(h.get("dinkes", &long).await.age(), Some(59));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        h.get("dinkes", &long).await.age(),
        None,
        "served past cache_ttl"
    );
}

#[tokio::test]
async fn a_hundred_concurrent_misses_make_one_upstream_request() {
    let h = Harness::new(true, "").await;
    let calls: Vec<_> = (0..100).map(|_| h.get("dinkes", PENDUDUK)).collect();
    let all = async { futures_join_all(calls).await };
    let release = async {
        // Once every other request waits on the one that reached the upstream, answer it.
        h.metric_reaches("penghubung_cache_coalesced_waits_total", 99.0)
            .await;
        h.origin.release(1);
    };
    let (answers, ()) = tokio::join!(all, release);
    assert_eq!(h.origin.count(), 1, "more than one upstream request");
    assert!(answers.iter().all(|a| a.status == 200 && a.n() == 1));
    assert_eq!(answers.iter().filter(|a| a.age().is_none()).count(), 1);
    assert_eq!(h.metric("penghubung_cache_coalesced_waits_total"), 99.0);

    // An upstream error is not stored, and waiters then go upstream themselves.
    let failing = format!("{PENDUDUK}?status=500");
    let calls: Vec<_> = (0..5).map(|_| h.get("dinkes", &failing)).collect();
    let release = async {
        h.metric_reaches("penghubung_cache_coalesced_waits_total", 103.0)
            .await;
        h.origin.release(5);
    };
    let (answers, ()) = tokio::join!(futures_join_all(calls), release);
    assert!(answers.iter().all(|a| a.status == 500));
    assert_eq!(h.origin.count(), 1 + 5);
}

#[tokio::test]
async fn waiters_share_the_leaders_timeout_rather_than_wait_again() {
    let h = Harness::with(true, "1s", "", Clock::system()).await;
    let calls: Vec<_> = (0..5).map(|_| h.get("dinkes", PENDUDUK)).collect();
    let answers = futures_join_all(calls).await;
    for a in &answers {
        assert_eq!(a.status, 504, "{}", String::from_utf8_lossy(&a.body));
    }
    assert_eq!(h.origin.count(), 1);
}

#[tokio::test]
async fn a_fresh_entry_is_not_served_once_the_agreement_has_ended() {
    let last_day = Date {
        year: 2099,
        month: 12,
        day: 31,
    };
    let clock = Clock::manual(midnight_millis(last_day, TimeZone::JAKARTA));
    let h = Harness::with(false, "5s", "", clock.clone()).await;
    assert_eq!(h.get("dinkes", PENDUDUK).await.status, 200);
    assert_eq!(h.get("dinkes", PENDUDUK).await.age(), Some(0));
    clock.advance(Duration::from_secs(24 * 3600));
    let refused = h.get("dinkes", PENDUDUK).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        serde_json::from_slice::<Value>(&refused.body).unwrap()["type"],
        "urn:penghubung:problem:agreement-expired"
    );
    assert_eq!(h.origin.count(), 1);
}

#[tokio::test]
async fn rahasia_services_are_never_stored_whatever_the_config_says() {
    let extra = r#"
[[services]]
id = "dukcapil-rahasia"
owner = "dukcapil"
classification = "rahasia"
prefix = "/rahasia"
upstreams = ["UPSTREAM"]
upstream_ca = "ca.crt"

  [[services.operations]]
  id = "get"
  method = "GET"
  path = "/data/{id}"
  cache_ttl = "60s"

[[agreements]]
id = "PKS-RAHASIA"
consumer = "dukcapil"
service = "dukcapil-rahasia"
purpose = "Pengujian"
valid_from = 2020-01-01
valid_until = 2099-12-31
"#;
    let pki = TestPki::new();
    let origin = Origin::start(&pki, false).await;
    let text = cached_config(&origin.url, "5s", &extra.edit("UPSTREAM", &origin.url));
    let snapshot = load(&pki, &text);
    let warning = snapshot
        .warnings
        .iter()
        .find(|w| w.path == "services[2].operations[0].cache_ttl")
        .expect("no warning for cache_ttl on a rahasia service");
    assert!(
        warning.message.contains("never cached"),
        "{}",
        warning.message
    );
    let h = Harness {
        gateway: Gateway::new(Arc::new(snapshot)).unwrap(),
        origin,
        pki,
    };
    for _ in 0..3 {
        let got = h
            .get("dukcapil", "/rahasia/data/1?cc=public%2C%20max-age%3D600")
            .await;
        assert_eq!((got.status, got.age()), (200, None));
    }
    assert_eq!(h.origin.count(), 3);
    assert_eq!(h.metric("penghubung_cache_misses_total"), 0.0);
}

#[tokio::test]
async fn spellings_of_one_target_share_its_entry_and_never_another_operations() {
    let h = Harness::new(false, "").await;
    let stored = h.get("dinkes", PENDUDUK).await;
    for spelling in [
        "/dukcapil/penduduk/penduduk/72010101010100%30%31",
        "/dukcapil/penduduk//penduduk/./7201010101010001",
        "/dukcapil/penduduk/x/../penduduk/7201010101010001",
        "/dukcapil/%70enduduk/penduduk/7201010101010001",
    ] {
        let hit = h.get("dinkes", spelling).await;
        assert_eq!(
            (hit.status, hit.n(), hit.age()),
            (200, stored.n(), Some(0)),
            "{spelling}"
        );
    }
    assert_eq!(h.origin.count(), 1);

    // Another operation under the same prefix, and tricks that would reach it: never the
    // stored entry of get-penduduk.
    let family = h.get("dinkes", &format!("{PENDUDUK}/keluarga")).await;
    assert_eq!((family.status, family.age()), (200, None));
    assert!(family.json()["target"]
        .as_str()
        .unwrap()
        .ends_with("/keluarga"));
    let encoded = h.get("dinkes", &format!("{PENDUDUK}%2Fkeluarga")).await;
    assert_eq!(encoded.status, 400);
    // A query makes another key, never the path's entry.
    let queried = h.get("dinkes", &format!("{PENDUDUK}?x=1")).await;
    assert_eq!(queried.age(), None);
    assert_eq!(h.origin.count(), 3);
}

#[tokio::test]
async fn unkeyed_headers_cannot_shape_a_stored_response() {
    let h = Harness::new(false, "").await;
    // Dukcapil tries to poison the shared terbuka entry with headers outside the key.
    let tricks = [
        ("x-evil", "<script>"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "host=evil.example"),
        ("authorization", "Bearer stolen"),
        ("host", "evil.example"),
        ("cookie", "sesi=1"),
    ];
    let poisoned = h
        .send("dukcapil", Method::GET, "/dinkes/faskes", &tricks)
        .await;
    let (_, seen) = h.origin.seen().pop().unwrap();
    for (name, _) in &tricks[..4] {
        let value = seen.get(*name).map(|v| v.to_str().unwrap().to_owned());
        assert!(
            !value.unwrap_or_default().contains("evil") && seen.get("x-evil").is_none(),
            "{name} reached the upstream of a cacheable operation"
        );
    }
    assert!(seen.get("authorization").is_none() && seen.get("cookie").is_none());
    assert!(!seen["forwarded"].to_str().unwrap().contains("host="));
    let doc = poisoned.json();
    assert_eq!(doc["x_evil"], Value::Null);
    assert_eq!(doc["authorization"], Value::Null);

    // Dinkes gets the same clean entry; a request with the tricks gets it too.
    let clean = h.get("dinkes", "/dinkes/faskes").await;
    assert_eq!((clean.n(), clean.age()), (1, Some(0)));
    let again = h
        .send("dukcapil", Method::GET, "/dinkes/faskes", &tricks)
        .await;
    assert_eq!((again.n(), again.age()), (1, Some(0)));
    // Accept is keyed: another value is another entry, not the stored one.
    let xml = h
        .send(
            "dinkes",
            Method::GET,
            "/dinkes/faskes",
            &[("accept", "application/xml")],
        )
        .await;
    assert_eq!(xml.age(), None);
    assert_eq!(h.origin.count(), 2);

    // Operations that are not cached forward the caller's headers as before.
    h.send(
        "dinkes",
        Method::POST,
        "/dukcapil/penduduk/verifikasi",
        &[("x-evil", "1")],
    )
    .await;
    let (_, seen) = h.origin.seen().pop().unwrap();
    assert_eq!(seen["x-evil"], "1");
}

#[tokio::test]
async fn head_is_answered_from_the_get_entry() {
    let h = Harness::new(false, "").await;
    let head = h.send("dinkes", Method::HEAD, PENDUDUK, &[]).await;
    assert_eq!((head.status, head.age()), (200, None));
    assert_eq!(
        h.get("dinkes", PENDUDUK).await.age(),
        None,
        "a HEAD answer was stored"
    );
    let hit = h.send("dinkes", Method::HEAD, PENDUDUK, &[]).await;
    assert_eq!((hit.status, hit.age()), (200, Some(0)));
    assert!(hit.body.is_empty());
    assert_eq!(h.origin.count(), 2);
}

#[tokio::test]
async fn a_response_over_the_entry_limit_is_streamed_whole_and_not_stored() {
    // 64 KiB of cache: entries up to 8 KiB.
    let h = Harness::new(false, "\n[cache]\nmax_size = \"64KiB\"\n").await;
    let big = format!("{PENDUDUK}?size=20000");
    let first = h.get("dinkes", &big).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["padding"].as_str().unwrap().len(), 20000);
    assert_eq!(h.get("dinkes", &big).await.age(), None);
    assert_eq!(
        h.metric("penghubung_cache_stores_refused_total{reason=\"too-large\"}"),
        2.0
    );
    // Many small entries: the budget holds, by eviction.
    for i in 0..40 {
        h.get("dinkes", &format!("{PENDUDUK}?size=4000&i={i}"))
            .await;
    }
    let (_, bytes) = h.gateway.cache().usage();
    assert!(
        bytes <= 64 * 1024,
        "{bytes} bytes held over a 64 KiB budget"
    );
    assert!(h.metric("penghubung_cache_evictions_total{cause=\"size\"}") > 0.0);
    assert!(h.metric("penghubung_cache_bytes") > 0.0);
}

#[tokio::test]
async fn hits_are_audited_with_a_fresh_commitment_to_the_body_served() {
    let h = Harness::new(false, "\n[audit]\n").await;
    let miss = h.get("dinkes", PENDUDUK).await;
    let hit = h.get("dinkes", PENDUDUK).await;
    assert_eq!(hit.age(), Some(0));
    let head = h.send("dinkes", Method::HEAD, PENDUDUK, &[]).await;
    assert_eq!(head.age(), Some(0));
    let mut records: Vec<Record> = Vec::new();
    audit::walk(&h.pki.path().join("data/audit"), |r, _| {
        records.push(r.clone());
        Ok(())
    })
    .unwrap();
    let exchanges: Vec<&Record> = records.iter().filter(|r| r.kind == "exchange").collect();
    assert_eq!(exchanges.len(), 3);
    let id = |got: &Got| got.headers["spl-exchange-id"].to_str().unwrap().to_owned();
    let (first, second, third) = (exchanges[0], exchanges[1], exchanges[2]);
    assert_eq!(first.exchange_id.as_deref(), Some(id(&miss).as_str()));
    assert_eq!(
        (first.outcome.as_str(), first.cache.as_deref()),
        ("forwarded", Some("stored"))
    );
    assert_eq!(second.exchange_id.as_deref(), Some(id(&hit).as_str()));
    assert_ne!(
        id(&hit),
        id(&miss),
        "a hit carried the stored exchange's id"
    );
    assert_eq!(
        (second.outcome.as_str(), second.cache.as_deref()),
        ("served-from-cache", Some("hit"))
    );
    // A hit commits afresh, under its own nonce, to the stored body it served.
    let nonce =
        |got: &Got| Nonce::parse(got.headers["spl-commitment-nonce"].to_str().unwrap()).unwrap();
    assert_eq!(
        second.response,
        Some(audit::commit(&nonce(&hit), false, &hit.body))
    );
    assert_ne!(second.response, first.response);
    assert_eq!(second.consumer.as_deref(), Some("dinkes"));
    assert_eq!(second.agreement.as_deref(), Some("PKS-TEST-1"));
    assert_eq!(
        second.detail.as_deref(),
        Some(format!("stored by exchange {}", id(&miss)).as_str())
    );
    // HEAD served no body, and its record says so.
    assert_eq!(
        third.response,
        Some(audit::commit(&nonce(&head), false, b""))
    );
}

const FAMILY: &str = "/dukcapil/penduduk/penduduk/7201010101010001/keluarga";

async fn warm(h: &Harness) {
    h.get("dinkes", PENDUDUK).await;
    h.get("dinkes", FAMILY).await;
    h.get("dinkes", "/dinkes/faskes").await;
}

/// Whether each of the three targets `warm` fills is served from the cache.
async fn cached(h: &Harness) -> [bool; 3] {
    [
        h.get("dinkes", PENDUDUK).await.age().is_some(),
        h.get("dinkes", FAMILY).await.age().is_some(),
        h.get("dinkes", "/dinkes/faskes").await.age().is_some(),
    ]
}

#[tokio::test]
async fn purge_and_reload_drop_entries_by_scope() {
    let h = Harness::new(false, "\n[audit]\n").await;
    warm(&h).await;
    assert_eq!(cached(&h).await, [true, true, true]);

    let purged = h
        .gateway
        .purge_cache(Some("dukcapil-penduduk"), Some("get-keluarga"), "test")
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(cached(&h).await, [true, false, true]);
    assert_eq!(
        h.gateway
            .purge_cache(Some("dukcapil-penduduk"), None, "test")
            .await
            .unwrap(),
        2
    );
    assert_eq!(cached(&h).await, [false, false, true]);
    warm(&h).await;
    assert_eq!(h.gateway.purge_cache(None, None, "test").await.unwrap(), 3);
    assert_eq!(cached(&h).await, [false, false, false]);
    for (service, operation) in [
        (Some("tidak-ada"), None),
        (Some("dinkes-faskes"), Some("x")),
        (None, Some("get")),
    ] {
        assert!(h
            .gateway
            .purge_cache(service, operation, "test")
            .await
            .is_err());
    }
    let mut acts = Vec::new();
    audit::walk(&h.pki.path().join("data/audit"), |r, _| {
        if r.outcome == "cache-purge" {
            acts.push(r.detail.clone().unwrap());
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        acts,
        [
            "service=dukcapil-penduduk operation=get-keluarga by test",
            "service=dukcapil-penduduk by test",
            "all by test"
        ]
    );

    // A reload that changes one service drops its entries and keeps the others'.
    warm(&h).await;
    let old = h.gateway.snapshot().clone();
    let same = load(&h.pki, &cached_config(&h.origin.url, "5s", "\n[audit]\n"));
    assert!(h.gateway.cache().retain_unchanged(&old, &same).is_empty());
    let changed = load(&h.pki, &cached_config(&h.origin.url, "7s", "\n[audit]\n"));
    assert_eq!(
        h.gateway.cache().retain_unchanged(&old, &changed),
        ["dukcapil-penduduk"]
    );
    assert_eq!(cached(&h).await, [false, false, true]);
}

/// `join_all` without the futures crate: every future polled concurrently on this task.
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut outputs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => outputs[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}
