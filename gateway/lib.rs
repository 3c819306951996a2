//! # Penghubung — the Sistem Penghubung Layanan of a regency
//!
//! One gateway through which agencies' (PD) applications call each other's services: mTLS
//! both ways, only declared operations reachable, every refusal a problem document.
//!
//! # Layout
//!
//! A request is one straight pipeline; each stage is a module with one entry point:
//!
//! ```text
//!  accept ─▶ TLS + identity ─▶ route ─▶ authorize ─▶ validate ─▶ cache ─▶ upstream ─▶ validate ─▶ audit ─▶ respond
//!  server     tls, caller      route    authorize,  validate   cache     upstream   validate    audit,     pipeline
//!                              catalog  quota       (params,                        (response)  telemetry
//!                                                   request)
//! ```
//!
//! [`runtime::Gateway::handle`] runs the stages in that order (`run`), then counts the exchange
//! and, with an audit log, records it before the response is released.
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | the TOML file shape, its validation (every error, with its TOML path), the immutable [`config::Snapshot`] |
//! | [`server`] | the listener: accept, TLS handshake with a required client certificate, HTTP/1.1 + HTTP/2, graceful drain |
//! | [`tls`] | PEM loading, server and upstream rustls configurations, the identity field of a certificate |
//! | [`caller`] | who is on a connection: certificate identity resolved to an agency once per connection |
//! | [`pipeline`] | [`runtime::Gateway`], the service as a value, and the request path top to bottom |
//! | [`route`] | path normalisation, then service by longest prefix and operation by template and method |
//! | [`authorize`] | default deny: classification and clearance, agreements in force, the `SPL-Agreement` choice |
//! | [`quota`] | per-agreement rates (GCRA) on tokio's monotonic clock |
//! | [`clock`] | the calendar for agreement validity, in the gateway's time zone; settable in tests |
//! | [`body`] | the response body type, the bounded request-body read, and reading a response for the cache |
//! | [`budget`] | the memory budget of held bodies (`[gateway] max_buffered`), one account per exchange |
//! | [`cache`] | the response cache: keys that keep agencies apart, RFC 9111 freshness, coalesced misses, purge |
//! | [`upstream`] | pooled mTLS clients per service and header rewriting both ways |
//! | [`percent`] | percent-encoding: strict decoding (every `%` two hex digits) and the encode sets, one codec |
//! | [`exchange`] | the exchange id (`SPL-Exchange-Id`) and W3C trace context |
//! | [`reject`] | every failure, mapped in one place to its status and problem+json document |
//! | [`audit`] | the hash-chained, signed audit log: writer (group commit), Merkle tree heads, the index for look-ups, receipts, verification; commitments to bodies (`commit`) and keyed hashes of parameter values (`redact`) |
//! | [`telemetry`] | metrics (Prometheus text), a handle the pipeline calls |
//! | [`otlp`] | OTLP/gRPC export of every exchange as a span of the caller's trace (`[telemetry]`) |
//! | [`grpc`] | the gRPC front on `grpc_listen`: `Exchange.Call` through the pipeline, `Catalog`, `Audit`, health, reflection |
//! | [`admin`] | the admin listener: `/healthz`, `/readyz`, `/metrics`, `POST /v1/cache/purge` |
//! | [`catalog`] | `/.well-known/spl/`: the catalog and OpenAPI documents for PD developers |
//! | [`schema`], [`validate`] | the schema registry, and validation of parameters, requests and responses (bodies read in place: `schema::tape`) |
//! | [`pki`] | a development PKI (rcgen) for `pki init`, the demo and the tests |
//! | [`demo`] | `penghubung demo`: two sample PD services behind the gateway |
//! | [`sla`] | live per-service availability and latency over 5 min, 1 h and 24 h (`/v1/sla`) |
//! | [`report`] | `penghubung report`: the periodic review, computed from the audit log |
//! | [`inventory`] | what `check` and `certs` print: services, operations, agencies, certificates and CRLs |
//!
//! Side systems (upstream pool, quotas, audit writer, cache, telemetry) are handles the
//! pipeline calls; the CLI, the admin API and the gRPC front use the same handles.

#![forbid(unsafe_code)]
// Outside tests a panic is a decision: `expect` with the invariant that makes it impossible,
// allowed where it is made, or an error handled.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
// A function longer than a screen and a half (clippy.toml) is split.
#![deny(clippy::too_many_lines)]

pub mod admin;
pub mod audit;
pub mod authorize;
pub mod body;
pub mod budget;
pub mod cache;
pub mod caller;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod demo;
pub mod exchange;
pub mod grpc;
pub mod inventory;
pub mod keys;
pub mod otlp;
pub mod outcome;
pub mod percent;
pub mod pipeline;
pub mod pki;
pub mod quota;
pub mod reject;
pub mod report;
pub mod route;
pub mod runtime;
pub mod schema;
pub mod server;
pub mod sla;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod validate;

/// The version string: crate version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PENGHUBUNG_COMMIT"),
    ")"
);
