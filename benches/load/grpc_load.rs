//! A gRPC load client for the bench harness (benches/load/run.sh, scenario `grpc-mtls`):
//! `Exchange.Call` over mTLS with tonic, `--connections` HTTP/2 connections each carrying
//! `--streams` calls in flight, for `--duration` seconds. Prints one line the harness parses:
//! `rps p50_ms p99_ms errors requests`.
//!
//!     cargo run --release --example grpc_load -- --addr 127.0.0.1:28445 --ca ca.crt \
//!         --cert client.crt --key client.key --service bench --operation get-item

use std::time::{Duration, Instant};

use penghubung::grpc::proto::exchange_client::ExchangeClient;
use penghubung::grpc::proto::CallRequest;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Args {
    addr: String,
    ca: String,
    cert: String,
    key: String,
    service: String,
    operation: String,
    connections: usize,
    streams: usize,
    duration: Duration,
}

fn args() -> Args {
    let mut a = Args {
        addr: String::new(),
        ca: String::new(),
        cert: String::new(),
        key: String::new(),
        service: "bench".into(),
        operation: "get-item".into(),
        connections: 16,
        streams: 4,
        duration: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = value,
            "--ca" => a.ca = value,
            "--cert" => a.cert = value,
            "--key" => a.key = value,
            "--service" => a.service = value,
            "--operation" => a.operation = value,
            "--connections" => a.connections = value.parse().expect("a number"),
            "--streams" => a.streams = value.parse().expect("a number"),
            "--duration" => a.duration = Duration::from_secs(value.parse().expect("seconds")),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = args();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&a.ca)))
        .identity(Identity::from_pem(read(&a.cert), read(&a.key)))
        .domain_name("localhost");
    let mut channels = Vec::new();
    for _ in 0..a.connections {
        let channel = Channel::from_shared(format!("https://{}", a.addr))
            .expect("a valid address")
            .tls_config(tls.clone())
            .expect("TLS configuration")
            .connect()
            .await
            .expect("connects");
        channels.push(channel);
    }
    let deadline = Instant::now() + a.duration;
    let mut tasks = Vec::new();
    for channel in &channels {
        for _ in 0..a.streams {
            let mut client = ExchangeClient::new(channel.clone());
            let request = CallRequest {
                service: a.service.clone(),
                operation: a.operation.clone(),
                ..Default::default()
            };
            tasks.push(tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match client.call(request.clone()).await {
                        Ok(answer) if answer.get_ref().status == 200 => {
                            latencies.push(t.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            }));
        }
    }
    let started = Instant::now();
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, e) = task.await.expect("a load task");
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started
        .elapsed()
        .as_secs_f64()
        .max(a.duration.as_secs_f64());
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let done = all.len() as u64 + errors;
    println!(
        "{:.0} {:.3} {:.3} {} {}",
        all.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        errors,
        done
    );
}
