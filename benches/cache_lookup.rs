//! What does the cache add to a request? A hit — key, lookup among 10,000 entries, the response
//! with its `Age` — against the store that follows a miss (RFC 9111 verdict, body digest,
//! insert), for a 1 KB JSON body. The pipeline's own work around them (policy, audit) is the
//! same for both and measured by the load script.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, DATE};
use http::{HeaderMap, Response, StatusCode};
use penghubung::cache::{Cache, Directives, Fetched, Key, Lookup, Request, Sharing};
use penghubung::config::CacheSettings;
use penghubung::telemetry::CacheMetrics;

const ENTRIES: usize = 10_000;

fn target(i: usize) -> String {
    format!("/penduduk/72080141019{:05}", i % ENTRIES)
}

fn key(target: &str, headers: &HeaderMap) -> Key {
    Key::primary(&Request {
        service: "dukcapil-penduduk",
        operation: "get-penduduk",
        sharing: Sharing::Consumer {
            agency: "dinkes",
            agreement: Some("PKS-2025-014"),
        },
        target,
        query: None,
        headers,
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let cache = Cache::new(
        &CacheSettings {
            max_size: 256 << 20,
        },
        CacheMetrics::default(),
    );
    let mut request = HeaderMap::new();
    request.insert("accept", HeaderValue::from_static("application/json"));
    request.insert("spl-consumer", HeaderValue::from_static("dinkes"));
    let body = Bytes::from(vec![b'x'; 1024]);
    let (response, ()) = {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::OK;
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CONTENT_LENGTH, HeaderValue::from(1024));
        h.insert(
            DATE,
            HeaderValue::from_static("Tue, 24 Nov 2026 03:00:00 GMT"),
        );
        r.into_parts()
    };
    let wait = Duration::from_secs(5);
    let store = |directives: Directives, i: usize| {
        let (cache, request, response, body) = (&cache, &request, &response, &body);
        async move {
            let t = target(i);
            match cache
                .lookup(key(&t, request), request, directives, true, wait)
                .await
            {
                Lookup::Miss(fetch) => fetch
                    .finish(&Fetched {
                        request,
                        response,
                        body,
                        ceiling: Duration::from_secs(600),
                        origin: "01a20b7e-b94c-7139-b48c-bff4af8d39f1",
                    })
                    .unwrap(),
                _ => panic!("expected a miss"),
            }
        }
    };
    rt.block_on(async {
        for i in 0..ENTRIES {
            store(Directives::default(), i).await;
        }
    });

    let mut group = c.benchmark_group("cache");
    let mut i = 0;
    group.bench_function("key", |b| {
        let t = target(7);
        b.iter(|| black_box(key(black_box(&t), &request)))
    });
    group.bench_function("hit (key, lookup, response)", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let t = target(i);
            let (cache, request) = (&cache, &request);
            async move {
                match cache
                    .lookup(key(&t, request), request, Directives::default(), true, wait)
                    .await
                {
                    Lookup::Hit(hit) => black_box(hit.response(false)),
                    _ => panic!("expected a hit"),
                }
            }
        })
    });
    // `no-cache` skips the lookup's hit and stores again: the miss path's cache work.
    let refetch = Directives {
        no_cache: true,
        ..Directives::default()
    };
    group.bench_function("miss (key, lookup, verdict, store)", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            store(refetch, i)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
