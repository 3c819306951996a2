//! A fixed number of exchanges through the in-process pipeline (`Gateway::handle` to a loopback
//! mTLS upstream), for instruction counts that do not depend on how busy the machine is:
//!
//! ```text
//! cargo build --release --example exchanges
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/examples/exchanges plain 2000
//! ```
//!
//! Run it with N and 2N exchanges: the difference of the two totals over N is the instructions
//! of one exchange, without start-up (docs/performance.md). The operation is `plain` (no
//! schema) or `validated` (a 1 KB JSON request and response, each checked against its schema),
//! as in `benches/validate.rs`.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

#[path = "../benches/support/pipeline.rs"]
mod support;

use support::document;

fn main() {
    let mut args = std::env::args().skip(1);
    let operation = args.next().unwrap_or_else(|| "plain".to_owned());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let body = Bytes::from(serde_json::to_vec(&document()).unwrap());
    assert!(
        (900..1200).contains(&body.len()),
        "body is {} bytes",
        body.len()
    );

    let (gateway, caller) = rt.block_on(support::gateway(dir.path()));
    let path = format!("/s/{operation}");
    rt.block_on(async {
        for _ in 0..count {
            let request = Request::post(path.as_str())
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .unwrap();
            let response = gateway.handle(&caller, request).await;
            assert_eq!(response.status(), StatusCode::OK);
            let read = response.into_body().collect().await.unwrap().to_bytes();
            assert!(!read.is_empty());
        }
    });
}
