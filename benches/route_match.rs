//! What does routing one request cost — normalising its path and finding the service and
//! operation — in a table of 1,000 operations (50 services × 20 operations)?

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Method;
use penghubung::route::{normalize, RouteTable, Template};
use std::hint::black_box;

fn table() -> RouteTable {
    let mut table = RouteTable::default();
    for s in 0..50 {
        table
            .add_service(s, &normalize(&format!("/dinas{s}/layanan{s}")).unwrap())
            .unwrap();
        for o in 0..20 {
            let (method, path) = match o % 4 {
                0 => (Method::GET, format!("/data{o}/{{id}}")),
                1 => (Method::POST, format!("/data{o}")),
                2 => (Method::GET, format!("/data{o}/{{id}}/riwayat/{{tahun}}")),
                _ => (Method::GET, format!("/data{o}/ringkasan")),
            };
            table
                .add_operation(s, o, method, &Template::parse(&path).unwrap())
                .unwrap();
        }
    }
    table
}

fn route(c: &mut Criterion) {
    let table = table();
    let cases = [
        (
            "param",
            Method::GET,
            "/dinas37/layanan37/data12/7208014101900001",
        ),
        (
            "two-params",
            Method::GET,
            "/dinas49/layanan49/data18/42/riwayat/2025",
        ),
        ("literal", Method::GET, "/dinas3/layanan3/data19/ringkasan"),
        (
            "encoded-dots",
            Method::GET,
            "/dinas3/./layanan3//data12/%37%32/../72",
        ),
        ("no-operation", Method::GET, "/dinas20/layanan20/tidak/ada"),
        ("no-service", Method::GET, "/pajak/objek/1"),
    ];
    let mut group = c.benchmark_group("route_1000_operations");
    for (name, method, path) in cases {
        group.bench_with_input(
            BenchmarkId::from_parameter(name),
            &(method, path),
            |b, (m, p)| {
                b.iter(|| {
                    let normal = normalize(black_box(p)).unwrap();
                    let found = table.lookup(m, &normal).map(|hit| hit.operation);
                    black_box(found.is_ok())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
