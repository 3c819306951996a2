//! The shape of a configuration file, exactly as an operator writes it (see `config/*.toml` and
//! `../shared/DESIGN.md`). Nothing here is trusted: values are strings and paths as written, and
//! [`super::validate`] turns this into a [`super::Snapshot`] or a list of every error.
//!
//! Unknown keys are collected (not silently dropped) by `serde_ignored` in [`super::load`], so
//! that an operator sees every misspelt key at once with its TOML path; `deny_unknown_fields`
//! would stop at the first.

use serde::Deserialize;
use toml::value::Datetime;

#[derive(Debug, Deserialize)]
pub struct FileConfig {
    pub gateway: GatewaySection,
    pub tls: TlsSection,
    #[serde(default)]
    pub identity: IdentitySection,
    pub audit: Option<AuditSection>,
    pub cache: Option<CacheSection>,
    pub admin: Option<AdminSection>,
    pub telemetry: Option<TelemetrySection>,
    pub governance: Option<GovernanceSection>,
    #[serde(default)]
    pub agencies: Vec<AgencyEntry>,
    #[serde(default)]
    pub peers: Vec<PeerEntry>,
    #[serde(default)]
    pub services: Vec<ServiceEntry>,
    #[serde(default)]
    pub agreements: Vec<AgreementEntry>,
}

#[derive(Debug, Deserialize)]
pub struct GatewaySection {
    pub id: String,
    pub listen: String,
    pub grpc_listen: Option<String>,
    pub admin_listen: Option<String>,
    pub data_dir: Option<String>,
    pub schemas_dir: Option<String>,
    pub timezone: Option<String>,
    /// Largest request body accepted before any upstream contact; services may lower or raise it.
    pub max_request_body: Option<String>,
    /// How long a TLS handshake may take before the connection is dropped.
    pub handshake_timeout: Option<String>,
    /// HTTP/1.1 request headers must arrive within this (slow-header clients are cut off).
    pub header_read_timeout: Option<String>,
    /// Request headers larger than this are answered 431 (HTTP/1.1 head, HTTP/2 header list).
    pub max_header_size: Option<String>,
    /// Open connections at most, per listener; more wait in the kernel's backlog.
    pub max_connections: Option<u32>,
    /// How long in-flight requests may run after SIGTERM / SIGINT.
    pub shutdown_grace: Option<String>,
    /// The deadline of a whole exchange, request head to the last byte of the response;
    /// services may set their own.
    pub request_timeout: Option<String>,
    /// Bytes held at once for bodies being validated, audited or cached, all exchanges together.
    pub max_buffered: Option<String>,
    /// A connection older than this is closed gracefully (its requests in flight finish).
    pub max_connection_age: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TlsSection {
    pub cert: String,
    pub key: String,
    pub client_ca: Vec<String>,
    #[serde(default)]
    pub crl: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct IdentitySection {
    pub field: Option<String>,
}

/// A key that takes one file name or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

// === impl OneOrMany ===

impl OneOrMany {
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct AuditSection {
    pub signing_key: Option<String>,
    pub durability: Option<String>,
    pub flush_interval: Option<String>,
    /// One key file, or several: the first writes, all are tried by `audit find`.
    pub redaction_key: Option<OneOrMany>,
    pub segment_size: Option<String>,
    /// Records that may wait for the writer; beyond, exchanges are refused (default 4096).
    pub queue: Option<usize>,
    /// A signed tree head after this many records...
    pub tree_head_every: Option<u64>,
    /// ...or this long after the first record it does not cover yet.
    pub tree_head_interval: Option<String>,
    /// Calls of the gRPC Audit service each agency may make (default "10/s").
    pub rpc_rate: Option<String>,
}

/// OTLP export of every exchange as a trace span (off without an endpoint).
#[derive(Debug, Deserialize)]
pub struct TelemetrySection {
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
    pub metrics_interval: Option<String>,
}

/// Who may use the admin API: values of `identity.field` in client certificates issued by
/// `tls.client_ca`. Set, the admin listener speaks HTTPS and requires such a certificate.
#[derive(Debug, Deserialize)]
pub struct AdminSection {
    #[serde(default)]
    pub identities: Vec<String>,
}

/// Who decides what is shared: the data owners' signatures over agreements, and the limits of
/// the Bupati's order as a basis.
#[derive(Debug, Deserialize)]
pub struct GovernanceSection {
    /// `"required"`: an agreement for a service above `terbuka` loads only with its owner's
    /// signature; `"warn"` (default): it loads, with a warning.
    pub owner_consent: Option<String>,
    /// Issuers of the certificates that sign agreements (default: `[tls] client_ca`).
    #[serde(default)]
    pub signer_ca: Vec<String>,
    /// The longest validity, in days, of an agreement of basis `perintah_bupati` (default 30).
    pub max_order_days: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct CacheSection {
    pub max_size: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct AgencyEntry {
    pub code: String,
    pub name: String,
    pub clearance: Option<String>,
    #[serde(default)]
    pub identities: Vec<String>,
    /// SHA-256 fingerprints of the only certificates accepted for this agency.
    #[serde(default)]
    pub pin_sha256: Vec<String>,
    /// The decision that set the clearance (e.g. a Keputusan Kepala Dinas number).
    pub clearance_basis: Option<String>,
}

/// A provincial or national SPL that calls this gateway (over gRPC or HTTPS): authorized like
/// an agency, under agreements that name its `id` as consumer.
#[derive(Debug, Deserialize)]
pub struct PeerEntry {
    pub id: String,
    pub kind: String,
    pub name: Option<String>,
    pub clearance: Option<String>,
    #[serde(default)]
    pub identities: Vec<String>,
    #[serde(default)]
    pub pin_sha256: Vec<String>,
    pub clearance_basis: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ServiceEntry {
    pub id: String,
    pub owner: String,
    pub classification: String,
    pub prefix: String,
    /// `http` (the default) or `grpc`: gRPC pass-through over HTTP/2.
    pub protocol: Option<String>,
    pub upstreams: Vec<String>,
    pub upstream_ca: Option<String>,
    pub timeout: Option<String>,
    /// The deadline of a whole exchange with this service (`[gateway] request_timeout` unless set).
    pub request_timeout: Option<String>,
    #[serde(default)]
    pub allow_plaintext: bool,
    pub max_request_body: Option<String>,
    /// Requests in flight to the upstream at most; more are shed with 503 and Retry-After.
    pub max_in_flight: Option<u32>,
    /// Active health checks: `GET` this path on every upstream each `health_interval`.
    pub health_path: Option<String>,
    pub health_interval: Option<String>,
    pub upstream_auth: Option<UpstreamAuthEntry>,
    #[serde(default)]
    pub operations: Vec<OperationEntry>,
}

/// How the gateway authenticates to a service's upstream beyond its client certificate (e.g.
/// the national SPLP's REST API). Secret values are named by file or environment variable;
/// `client_secret` and `secret` exist only to refuse a secret written into the TOML.
#[derive(Debug, Deserialize)]
pub struct UpstreamAuthEntry {
    pub kind: String,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    pub scope: Option<String>,
    pub header: Option<String>,
    pub secret_file: Option<String>,
    pub secret_env: Option<String>,
    pub client_secret: Option<toml::Value>,
    pub secret: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
pub struct OperationEntry {
    pub id: String,
    /// Required for HTTP services; gRPC methods are POST.
    pub method: Option<String>,
    pub path: String,
    pub request_schema: Option<String>,
    pub response_schema: Option<String>,
    pub cache_ttl: Option<String>,
    /// Accepted for old files: redaction is now the default.
    #[serde(default)]
    pub audit_redact: Vec<String>,
    /// Parameters whose values the audit log writes in clear (all others: keyed hashes).
    #[serde(default)]
    pub audit_clear: Vec<String>,
    /// Path or query parameter → schema name (`[services.operations.params] nik = "..."`).
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// `"enforce"` (default): a response that breaks `response_schema` becomes a 502;
    /// `"monitor"`: it is forwarded and logged.
    pub schema_mode: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct AgreementEntry {
    pub id: String,
    pub consumer: String,
    pub service: String,
    pub operations: Option<Vec<String>>,
    pub purpose: String,
    pub valid_from: Datetime,
    pub valid_until: Datetime,
    pub rate: Option<String>,
    /// The legal basis: `kesepakatan` (default), `sop` or `perintah_bupati`.
    pub basis: Option<String>,
    /// The SOP followed (basis `sop`).
    pub sop: Option<String>,
    /// SHA-256 of the signed agreement document (the PKS, or the Bupati's order).
    pub document_sha256: Option<String>,
    /// The data owner's signature file over the terms (`penghubung agreement sign`).
    pub owner_signature: Option<String>,
    /// The consumer's, if it signs too.
    pub consumer_signature: Option<String>,
    /// Basis `perintah_bupati`: the order's number and date.
    pub order_number: Option<String>,
    pub order_date: Option<Datetime>,
}
