//! The validated, immutable configuration. Built only by [`super::validate`]; read once per
//! request and replaced whole, never edited in place.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Uri};

use super::units::Rate;
use crate::keys::{Redactor, Signer};
use crate::route::{RouteTable, Template};
use crate::schema::Schema;
use crate::tls::{CertInfo, IdentityField};

pub struct Snapshot {
    /// The file this snapshot was loaded from.
    pub source: PathBuf,
    /// SHA-256 of the configuration text, recorded in the audit log at start and reload.
    pub digest: String,
    /// The configuration text itself: archived, and diffed against the next generation.
    pub text: Arc<str>,
    pub gateway: GatewaySettings,
    /// The listener's rustls configuration (certificate, client CAs, CRLs, ALPN).
    pub server_tls: Arc<rustls::ServerConfig>,
    /// The verifier inside `server_tls`: connections opened under an earlier configuration
    /// are checked against it again (a CRL added, an issuer removed).
    pub client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    pub identity: IdentityField,
    pub audit: Option<AuditSettings>,
    pub cache: CacheSettings,
    /// `[telemetry] otlp_endpoint`: where exchange spans are exported; `None`: nowhere.
    pub otlp: Option<OtlpSettings>,
    /// `[governance]`: whose consent an agreement needs.
    pub governance: Governance,
    pub agencies: Vec<Agency>,
    pub services: Vec<Service>,
    pub agreements: Vec<Agreement>,
    pub routes: RouteTable,
    /// Every certificate the gateway depends on, for `check` and the inventory.
    pub certificates: Vec<CertInfo>,
    /// Identity value → index into `agencies`.
    pub(super) identities: HashMap<String, usize>,
    /// (consumer, service) → indexes into `agreements`: authorization never scans.
    pub(super) agreement_index: HashMap<(usize, usize), Vec<usize>, foldhash::fast::RandomState>,
    /// The OpenAPI 3.1 document of each service (same order as `services`), serialised.
    pub openapi: Vec<bytes::Bytes>,
    /// What the file asks for that the gateway will not do (e.g. `cache_ttl` on a `rahasia`
    /// service), each at its TOML path.
    pub warnings: Vec<super::ConfigError>,
}

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub id: String,
    pub listen: SocketAddr,
    pub grpc_listen: Option<SocketAddr>,
    pub admin_listen: SocketAddr,
    /// `[admin] identities`: empty, the admin API is plain HTTP on loopback; otherwise it is
    /// HTTPS and only a client certificate naming one of these may use it.
    pub admin_identities: Vec<String>,
    pub data_dir: PathBuf,
    pub schemas_dir: PathBuf,
    pub timezone: TimeZone,
    pub max_request_body: u64,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// Bytes of request headers accepted (HTTP/1.1 head, HTTP/2 header list).
    pub max_header_size: u32,
    pub max_connections: u32,
    pub shutdown_grace: Duration,
    /// The deadline of an exchange (services may override it: [`Service::request_timeout`]).
    pub request_timeout: Duration,
    /// Bytes of bodies held for validation, audit and the cache, all exchanges together.
    pub max_buffered: u64,
    /// Connections older than this are closed gracefully.
    pub max_connection_age: Duration,
}

/// The zones Indonesia uses, none of which observes daylight saving time, so a zone is a fixed
/// offset and no time-zone database is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone {
    pub name: &'static str,
    pub utc_offset_hours: i8,
}

#[derive(Clone)]
pub struct AuditSettings {
    pub durability: Durability,
    pub flush_interval: Duration,
    /// Loaded from `redaction_key`.
    pub redactor: Option<Arc<Redactor>>,
    /// A segment file is closed and the next begun past this size.
    pub segment_size: u64,
    /// Records that may wait for the writer before exchanges are refused.
    pub queue: usize,
    /// Loaded from `signing_key`: signs tree heads.
    pub signer: Option<Arc<Signer>>,
    pub tree_head_every: u64,
    pub tree_head_interval: Duration,
    /// Calls of the gRPC Audit service per agency (`rpc_rate`).
    pub rpc_rate: Rate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Sync,
    Interval,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    pub max_size: u64,
}

/// What a service's callers and upstream speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    /// gRPC pass-through: HTTP/2 both ways, the full method path forwarded as is, trailers kept.
    Grpc,
}

/// Who a consumer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Agency,
    Provincial,
    National,
}

impl Party {
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Agency => "agency",
            Party::Provincial => "provincial",
            Party::National => "national",
        }
    }
}

/// Security classification of a service and clearance of an agency, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Classification {
    Terbuka,
    Terbatas,
    Rahasia,
    SangatRahasia,
}

#[derive(Debug, Clone)]
pub struct Agency {
    /// The agency code, or the peer id.
    pub code: String,
    /// A regency agency, or a provincial / national SPL peer (`[[peers]]`).
    pub party: Party,
    pub name: String,
    pub clearance: Classification,
    pub identities: Vec<String>,
    /// Lowercase hex SHA-256 fingerprints of the certificates accepted for this agency; empty
    /// means any certificate from a trusted CA that names it.
    pub pins: Vec<String>,
    /// The decision that set the clearance (`clearance_basis`).
    pub clearance_basis: Option<String>,
}

/// `[governance]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Governance {
    pub owner_consent: OwnerConsent,
    /// The longest validity of an agreement of basis `perintah_bupati`, in days.
    pub max_order_days: u32,
}

/// `[governance] owner_consent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerConsent {
    /// An agreement for a service above `terbuka` needs its owner's signature.
    Required,
    /// It loads without one, with a warning.
    Warn,
}

/// The legal basis of an agreement (Perbup Maluku Tengah 50/2020 Ps 14(3): "berdasarkan
/// kesepakatan para pihak, sesuai dengan SOP dan/atau atas perintah Bupati").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// The parties' agreement (PKS), signed by the data owner.
    Kesepakatan,
    /// An SOP, named; signed by the data owner.
    Sop { name: String },
    /// The Bupati's written order: no owner signature, a bounded validity, flagged everywhere.
    PerintahBupati {
        order_number: String,
        order_date: Date,
    },
}

/// A signature over an agreement's terms that verified at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBy {
    /// The signer certificate's subject.
    pub subject: String,
    /// SHA-256 of the signer's certificate, lowercase hex.
    pub fingerprint: String,
    /// RFC 3339 UTC.
    pub signed_at: String,
}

pub struct Service {
    pub id: String,
    /// SHA-256 of the service's entry and its schemas: equal across two snapshots when nothing
    /// a cached response depends on changed.
    pub fingerprint: String,
    /// Index into `Snapshot::agencies`.
    pub owner: usize,
    pub classification: Classification,
    pub prefix: String,
    pub protocol: Protocol,
    pub upstreams: Vec<Upstream>,
    /// Client configuration for `https` upstreams (upstream CA + the gateway's certificate).
    pub upstream_tls: Option<rustls::ClientConfig>,
    /// The upstream certificates `upstream_tls` accepted, until the runtime's inventory takes
    /// them.
    pub upstream_certs: Arc<crate::tls::ServerCerts>,
    /// Credentials for the upstream beyond the client certificate (`upstream_auth`).
    pub upstream_auth: Option<super::UpstreamAuth>,
    pub timeout: Duration,
    /// From the request head to the last byte of the response: a caller's body not arrived
    /// by then is 408, an upstream's answer not finished 504 (or a reset stream).
    pub request_timeout: Duration,
    pub max_request_body: u64,
    /// Requests in flight to the upstream at most (`max_in_flight`); `None`: no limit.
    pub max_in_flight: Option<u32>,
    /// Active health checks (`health_path`, `health_interval`); `None`: passive only.
    pub health: Option<HealthCheck>,
    pub operations: Vec<Operation>,
}

/// An OTLP/gRPC collector (plain HTTP/2: a collector or agent beside the gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    pub endpoint: http::Uri,
    /// `service.name` of the exported spans and metrics; the gateway id unless set.
    pub service_name: String,
    /// How often the metrics are sent (60 s unless set).
    pub metrics_interval: std::time::Duration,
}

/// `GET path` on every upstream of a service each `interval`; a 2xx or 3xx answer within the
/// interval (and the service's timeout) passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// Scheme and authority, e.g. `https://10.0.1.5:9001`.
    pub origin: Uri,
    /// A base path the operation path is appended to, without a trailing `/` (often empty).
    pub base_path: String,
}

#[derive(Clone)]
pub struct Operation {
    pub id: String,
    pub method: Method,
    /// The template as written, e.g. `/penduduk/{nik}`; audit records name it.
    pub path: String,
    pub template: Template,
    pub request_schema: Option<Arc<Schema>>,
    pub response_schema: Option<Arc<Schema>>,
    /// Schemas for path and query parameters, validated before any upstream contact.
    pub params: Vec<ParamSchema>,
    pub schema_mode: SchemaMode,
    pub cache_ttl: Option<Duration>,
    /// Parameters listed in the file's `audit_redact` (now the default): declared, hashed.
    pub audit_redact: Vec<String>,
    /// Parameters whose values the audit target writes in clear.
    pub audit_clear: Vec<String>,
}

#[derive(Clone)]
pub struct ParamSchema {
    pub name: String,
    pub location: ParamIn,
    pub schema: Arc<Schema>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamIn {
    Path,
    Query,
}

/// What happens to a response that breaks its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaMode {
    /// The caller gets 502 `upstream-schema-violation` instead.
    Enforce,
    /// It is forwarded, and logged.
    Monitor,
}

#[derive(Debug, Clone)]
pub struct Agreement {
    pub id: String,
    /// Index into `Snapshot::agencies`.
    pub consumer: usize,
    /// Index into `Snapshot::services`.
    pub service: usize,
    /// Indexes into the service's operations; `None` covers them all.
    pub operations: Option<Vec<usize>>,
    pub purpose: String,
    pub valid_from: Date,
    pub valid_until: Date,
    pub rate: Option<Rate>,
    pub basis: Basis,
    /// SHA-256 of the signed document (the PKS, the order), lowercase hex.
    pub document_sha256: Option<String>,
    /// The data owner's verified signature over the terms, if any.
    pub owner_signature: Option<SignedBy>,
    /// The consumer's, if any.
    pub consumer_signature: Option<SignedBy>,
}

/// A calendar date in the gateway's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

// === impl Basis ===

impl Basis {
    /// The name the configuration, the audit record and `SPL-Basis` use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Basis::Kesepakatan => "kesepakatan",
            Basis::Sop { .. } => "sop",
            Basis::PerintahBupati { .. } => "perintah_bupati",
        }
    }
}

// === impl Snapshot ===

impl Snapshot {
    /// The agency named by a certificate, if exactly one is. Several values naming different
    /// agencies is ambiguous and names none: a certificate must not speak for two agencies.
    pub fn agency_for(&self, names: &[String]) -> Option<usize> {
        let mut found = None;
        for name in names {
            if let Some(&agency) = self.identities.get(name) {
                match found {
                    Some(other) if other != agency => return None,
                    _ => found = Some(agency),
                }
            }
        }
        found
    }

    /// The agreements a consumer holds for a service, in file order.
    pub fn agreements_for(&self, consumer: usize, service: usize) -> &[usize] {
        self.agreement_index
            .get(&(consumer, service))
            .map_or(&[], Vec::as_slice)
    }

    pub fn operation_count(&self) -> usize {
        self.services.iter().map(|s| s.operations.len()).sum()
    }
}

// === impl Classification ===

impl Classification {
    pub const NAMES: [&'static str; 4] = ["terbuka", "terbatas", "rahasia", "sangat_rahasia"];

    pub fn parse(text: &str) -> Option<Classification> {
        Some(match text {
            "terbuka" => Classification::Terbuka,
            "terbatas" => Classification::Terbatas,
            "rahasia" => Classification::Rahasia,
            "sangat_rahasia" => Classification::SangatRahasia,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

// === impl TimeZone ===

impl TimeZone {
    pub const JAKARTA: TimeZone = TimeZone {
        name: "Asia/Jakarta",
        utc_offset_hours: 7,
    };

    pub fn parse(text: &str) -> Option<TimeZone> {
        let (name, utc_offset_hours) = match text {
            "Asia/Jakarta" | "WIB" => ("Asia/Jakarta", 7),
            "Asia/Pontianak" => ("Asia/Pontianak", 7),
            "Asia/Makassar" | "WITA" => ("Asia/Makassar", 8),
            "Asia/Jayapura" | "WIT" => ("Asia/Jayapura", 9),
            "UTC" => ("UTC", 0),
            _ => return None,
        };
        Some(TimeZone {
            name,
            utc_offset_hours,
        })
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}
