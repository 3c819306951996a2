//! # Penghubung — the Sistem Penghubung Layanan of a regency
//!
//! One gateway through which agencies' (PD) applications call each other's services: mTLS
//! both ways, only declared operations reachable, every refusal a problem document.
//!
//! # Layout
//!
//! Three layers, each importing only from the ones below it (no module imports one that imports
//! it back):
//!
//! 1. **The runtime** ([`runtime`]): the [`runtime::Gateway`] — the configuration in force,
//!    swapped whole on reload with the handles built from it ([`runtime::Active`]: upstream
//!    pools, quotas, span exporter, SLA rings), the background loops, and the administrative
//!    acts (`runtime/acts.rs`: reload, cache purge, suspension and resumption).
//!    The listeners ([`server`], [`grpc`], [`admin`]) and the CLI drive it.
//! 2. **The pipeline** ([`pipeline`]): `handle → run → conclude`. `run` is the stage list; each
//!    stage is a function in a file of its own under `pipeline/`, returns to `run`, and calls no
//!    other stage:
//!
//! ```text
//!  identify ─▶ route ─▶ admit ─▶ parameters ─▶ read ─▶ prepare ─▶ lookup ─▶ forward ─▶ check ─▶ store ─▶ conclude
//!  caller      route    admit    validate      read    prepare    lookup    forward    check    store    conclude
//!              (catalog) (authorize, quota)    (body, commitment, schema)  (upstream) (schema) (cache)  (outcome, metrics,
//!                                                                                                        SLA, audit, span)
//! ```
//!
//! 3. **The engines** the stages call, each with one job and no knowledge of the pipeline:
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | the TOML file shape, its validation by section (`config/validate/`), the immutable [`config::Snapshot`], the OpenAPI documents built from it |
//! | [`consent`] | an agreement's terms as RFC 8785 JSON, the data owner's signature over them, and its verification (`[governance]`, `agreement sign`) |
//! | [`outcome`] | what became of an exchange ([`outcome::Outcome`], [`outcome::Problem`], [`outcome::CacheState`]): the wire names, in one place |
//! | [`reject`] | every failure, mapped in one place to its status, problem type and gRPC code; `reject/response.rs` renders it |
//! | [`caller`] | who is on a connection: certificate identity resolved to an agency, again after a reload |
//! | [`route`] | path normalisation, then service by longest prefix and operation by template and method |
//! | [`authorize`] | default deny: classification and clearance, agreements in force, the `SPL-Agreement` choice |
//! | [`quota`] | per-agreement rates (GCRA) on tokio's monotonic clock |
//! | [`clock`] | the calendar for agreement validity, in the gateway's time zone; settable in tests |
//! | [`body`] | the response body type, bounded reads of request and response bodies, deadlines on bodies |
//! | [`budget`] | the memory budget of held bodies (`[gateway] max_buffered`), one account per exchange |
//! | [`cache`] | the response cache: keys that keep agencies apart, RFC 9111 freshness, coalesced misses, purge |
//! | [`upstream`] | pooled mTLS clients per service, upstream selection and ejection, header rewriting both ways |
//! | [`schema`], [`validate`] | the schema registry, and validation of parameters, requests and responses (bodies read in place: `schema::tape`) |
//! | [`percent`] | percent-encoding: strict decoding (every `%` two hex digits) and the encode sets, one codec |
//! | [`exchange`] | the exchange id (`SPL-Exchange-Id`) and W3C trace context |
//! | [`keys`] | the key material the configuration names: the audit signing key, the redaction keys |
//! | [`audit`] | the hash-chained, signed audit log: the handle and recovery (`writer`), the writer thread (`batch`), Merkle tree heads, the index for look-ups, receipts, verification; commitments to bodies (`commit`) and keyed hashes of parameter values (`redact`) |
//! | [`telemetry`] | metrics (Prometheus text), a handle the pipeline calls |
//! | [`otlp`] | OTLP/gRPC export of every exchange as a span of the caller's trace (`[telemetry]`) |
//! | [`sla`] | live per-service availability and latency over 5 min, 1 h and 24 h (`/v1/sla`) |
//! | [`changes`] | change control: the policy diff between two configurations, the archive of every configuration applied |
//! | [`durable`] | files replaced whole or not at all (temporary file, sync, rename) |
//! | [`seen`] | the inventory of client and upstream certificates seen on the wire, kept under `data_dir` |
//! | [`suspension`] | the agencies, agreements and services an administrator suspended, kept under `data_dir` |
//! | [`tls`] | PEM loading, server and upstream rustls configurations, the identity field of a certificate |
//! | [`server`] | the listener: accept, TLS handshake with a required client certificate, HTTP/1.1 + HTTP/2, graceful drain |
//! | [`grpc`] | the gRPC front on `grpc_listen`: `Exchange.Call` through the pipeline, `Catalog`, `Audit`, health, reflection |
//! | [`admin`] | the admin listener: `/healthz`, `/readyz`, `/metrics`, `/v1/sla`, `POST /v1/reload`, `POST /v1/cache/purge`, `POST /v1/suspend`, `POST /v1/resume` |
//! | [`catalog`] | `/.well-known/spl/`: the catalog and OpenAPI documents for PD developers |
//! | [`report`] | `penghubung report`: the periodic review, computed from the audit log (`render.rs`: Markdown, CSV, JSON; `governance.rs`: configuration changes, agreements unused or ending) |
//! | [`inventory`] | what `check` and `certs` print: services, operations, agencies, certificates and CRLs |
//! | [`pki`] | a development PKI (rcgen) for `pki init`, the demo and the tests |
//! | [`demo`] | `penghubung demo`: two sample PD services behind the gateway |
//!
//! The `penghubung` binary is `main.rs` (the command line) and `cli/` (serving, the audit
//! tools, the reports).
//!
//! Policy, checked by CI: no `unsafe`; no `unwrap` or `expect` outside tests but a named
//! invariant allowed where it is made; no function over 150 lines (`clippy.toml`); no file
//! under `gateway/` over about 600 lines but the generated code and the JSON tape.

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
pub mod changes;
pub mod clock;
pub mod config;
pub mod consent;
pub mod demo;
pub mod durable;
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
pub mod seen;
pub mod server;
pub mod sla;
pub mod suspension;
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
