//! What does starting an exchange cost — a UUIDv7 exchange id from the `uuid` crate and a new
//! trace and span id, all from a CSPRNG — from one thread and from two at once (the shared
//! v7 counter is a lock)?

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use penghubung::exchange::Exchange;
use std::hint::black_box;

fn begin(c: &mut Criterion) {
    let headers = HeaderMap::new();
    c.bench_function("exchange_begin/one_thread", |b| {
        b.iter(|| black_box(Exchange::begin(black_box(&headers))))
    });
    c.bench_function("exchange_begin/two_threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iters {
                            black_box(Exchange::begin(&HeaderMap::new()));
                        }
                    });
                }
            });
            // Time per exchange begun, with both threads at it.
            start.elapsed() / 2
        })
    });
}

criterion_group!(benches, begin);
criterion_main!(benches);
