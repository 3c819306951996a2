//! File shape → [`Snapshot`]: every check the contract makes, every error collected.
//!
//! Validation never stops at the first problem: an operator fixing a file wants the whole list,
//! each with its TOML path. A reference to something that is itself broken (a service whose
//! owner is misspelt) is reported once, at the broken reference, not again downstream.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Uri};

use super::error::{ConfigErrors, Errors};
use super::file::{
    AgencyEntry, AgreementEntry, AuditSection, FileConfig, OneOrMany, OperationEntry, ServiceEntry,
};
use super::snapshot::{
    Agency, Agreement, AuditSettings, CacheSettings, Classification, Date, Durability,
    GatewaySettings, HealthCheck, Operation, OtlpSettings, ParamIn, ParamSchema, Party, Protocol,
    SchemaMode, Service, Snapshot, TimeZone, Upstream,
};
use super::units::{parse_duration, parse_rate, parse_size};
use crate::keys::{Redactor, Signer};
use crate::route::{normalize, RouteTable, Template};
use crate::schema::{Registry, Schema};
use crate::tls::{self, CertInfo, IdentityField};

const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
const DEFAULT_MAX_REQUEST_BODY: u64 = 1 << 20;
const DEFAULT_CACHE_SIZE: u64 = 256 << 20;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_HEADER_SIZE: u32 = 32 << 10;
const MIN_HEADER_SIZE: u64 = 8 << 10;
const MIN_MAX_BUFFERED: u64 = 1 << 20;
const MAX_HEADER_SIZE: u64 = 1 << 20;
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_BUFFERED: u64 = 256 << 20;
const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);
const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

/// Validates a parsed file. `base` is the directory relative paths resolve against; `unknown`
/// lists the TOML paths of keys the file shape does not know.
pub fn validate(
    file: FileConfig,
    text: &str,
    source: &Path,
    base: &Path,
    unknown: Vec<String>,
) -> Result<Snapshot, ConfigErrors> {
    let mut errors = Errors::default();
    for path in unknown {
        errors.push(path, "unknown key");
    }
    let mut certificates = Vec::new();
    let resolve = |p: &str| -> PathBuf { base.join(p) };

    // [gateway]
    let g = &file.gateway;
    if g.id.trim().is_empty() {
        errors.push(
            "gateway.id",
            "must name this gateway, e.g. \"spl.parigimoutongkab\"",
        );
    }
    let listen = errors.check("gateway.listen", parse_addr(&g.listen));
    let grpc_listen = match &g.grpc_listen {
        Some(a) => errors.check("gateway.grpc_listen", parse_addr(a)).map(Some),
        None => Some(None),
    };
    // [telemetry]
    let telemetry = file.telemetry.as_ref();
    let metrics_interval = telemetry
        .and_then(|t| t.metrics_interval.as_deref())
        .map_or(Some(Duration::from_secs(60)), |text| {
            errors.check(
                "telemetry.metrics_interval",
                parse_duration(text).and_then(|d| {
                    if d < Duration::from_secs(1) {
                        Err(format!("`{text}`: at least 1s"))
                    } else {
                        Ok(d)
                    }
                }),
            )
        });
    let otlp = match telemetry.and_then(|t| t.otlp_endpoint.as_ref()) {
        None => {
            if let Some(t) = telemetry {
                let set = [
                    ("service_name", t.service_name.is_some()),
                    ("metrics_interval", t.metrics_interval.is_some()),
                ];
                for (key, _) in set.into_iter().filter(|(_, set)| *set) {
                    errors.push(
                        format!("telemetry.{key}"),
                        "needs telemetry.otlp_endpoint (nothing is exported without one)",
                    );
                }
            }
            Some(None)
        }
        Some(text) => errors
            .check("telemetry.otlp_endpoint", parse_otlp_endpoint(text))
            .zip(metrics_interval)
            .map(|(endpoint, metrics_interval)| {
                Some(OtlpSettings {
                    endpoint,
                    service_name: telemetry
                        .and_then(|t| t.service_name.clone())
                        .unwrap_or_else(|| g.id.clone()),
                    metrics_interval,
                })
            }),
    };
    let admin_identities = file.admin.as_ref().map(|a| &a.identities);
    if let Some(ids) = admin_identities {
        let mut seen = HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            if id.trim().is_empty() {
                errors.push(format!("admin.identities[{i}]"), "must not be empty");
            } else if !seen.insert(id.as_str()) {
                errors.push(
                    format!("admin.identities[{i}]"),
                    format!("`{id}` is listed twice"),
                );
            }
        }
        if ids.is_empty() {
            errors.push(
                "admin.identities",
                "names no administrator; list the identity.field values of admin certificates, or leave [admin] out",
            );
        }
    }
    let admin_listen = errors.check(
        "gateway.admin_listen",
        parse_addr(g.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN)).and_then(|a| {
            if a.ip().is_loopback() || admin_identities.is_some_and(|ids| !ids.is_empty()) {
                Ok(a)
            } else {
                Err(format!("`{a}` is not a loopback address; off loopback the admin API requires admin client certificates: set [admin] identities"))
            }
        }),
    );
    let timezone = match &g.timezone {
        None => Some(TimeZone::JAKARTA),
        Some(tz) => errors.check(
            "gateway.timezone",
            TimeZone::parse(tz).ok_or_else(|| {
                format!("`{tz}` is not an Indonesian time zone; use Asia/Jakarta, Asia/Pontianak, Asia/Makassar, Asia/Jayapura or UTC")
            }),
        ),
    };
    let max_request_body = opt(
        &mut errors,
        "gateway.max_request_body",
        &g.max_request_body,
        parse_size,
    )
    .map(|v| v.unwrap_or(DEFAULT_MAX_REQUEST_BODY));
    let handshake_timeout = opt(
        &mut errors,
        "gateway.handshake_timeout",
        &g.handshake_timeout,
        parse_duration,
    )
    .map(|v| v.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT));
    let header_read_timeout = opt(
        &mut errors,
        "gateway.header_read_timeout",
        &g.header_read_timeout,
        parse_duration,
    )
    .map(|v| v.unwrap_or(Duration::from_secs(10)));
    let max_header_size = opt(
        &mut errors,
        "gateway.max_header_size",
        &g.max_header_size,
        |text| {
            let size = parse_size(text)?;
            // hyper's HTTP/1.1 read buffer cannot be smaller than 8 KiB.
            if !(MIN_HEADER_SIZE..=MAX_HEADER_SIZE).contains(&size) {
                return Err(format!("`{text}` is out of range; use 8KiB to 1MiB"));
            }
            Ok(size as u32)
        },
    )
    .map(|v| v.unwrap_or(DEFAULT_MAX_HEADER_SIZE));
    let max_connections = match g.max_connections {
        Some(0) => {
            errors.push("gateway.max_connections", "must be at least 1");
            None
        }
        other => Some(other.unwrap_or(10_000)),
    };
    let shutdown_grace = opt(
        &mut errors,
        "gateway.shutdown_grace",
        &g.shutdown_grace,
        parse_duration,
    )
    .map(|v| v.unwrap_or(DEFAULT_SHUTDOWN_GRACE));
    let request_timeout = opt(
        &mut errors,
        "gateway.request_timeout",
        &g.request_timeout,
        positive_duration,
    )
    .map(|v| v.unwrap_or(DEFAULT_REQUEST_TIMEOUT));
    let max_buffered = opt(
        &mut errors,
        "gateway.max_buffered",
        &g.max_buffered,
        |text| {
            let size = parse_size(text)?;
            if size < MIN_MAX_BUFFERED {
                return Err(format!(
                    "`{text}` is too small; at least 1MiB (a body being validated must fit)"
                ));
            }
            Ok(size)
        },
    )
    .map(|v| v.unwrap_or(DEFAULT_MAX_BUFFERED));
    let max_connection_age = opt(
        &mut errors,
        "gateway.max_connection_age",
        &g.max_connection_age,
        positive_duration,
    )
    .map(|v| v.unwrap_or(DEFAULT_MAX_CONNECTION_AGE));
    let schemas_dir = resolve(g.schemas_dir.as_deref().unwrap_or("schemas"));
    let data_dir = resolve(g.data_dir.as_deref().unwrap_or("data"));

    // [identity]
    let identity = match &file.identity.field {
        None => Some(IdentityField::SubjectCn),
        Some(f) => errors.check(
            "identity.field",
            IdentityField::parse(f).ok_or_else(|| {
                format!(
                    "`{f}` is not a certificate field; use one of {}",
                    IdentityField::NAMES.join(", ")
                )
            }),
        ),
    };

    // [tls]
    let t = &file.tls;
    let chain = errors.check("tls.cert", tls::load_certs(&resolve(&t.cert)));
    if let Some(chain) = &chain {
        certificates.extend(tls::cert_info("tls.cert", &resolve(&t.cert), &chain[0]));
    }
    let key = errors.check("tls.key", tls::load_key(&resolve(&t.key)));
    if t.client_ca.is_empty() {
        errors.push(
            "tls.client_ca",
            "must list at least one issuer of agency certificates",
        );
    }
    let mut client_roots = Some(Vec::new());
    for (i, ca) in t.client_ca.iter().enumerate() {
        let path = format!("tls.client_ca[{i}]");
        match errors.check(&path, tls::load_certs(&resolve(ca))) {
            Some(certs) => {
                certificates.extend(
                    certs
                        .iter()
                        .filter_map(|c| tls::cert_info(&path, &resolve(ca), c)),
                );
                if let Some(roots) = &mut client_roots {
                    roots.extend(certs);
                }
            }
            None => client_roots = None,
        }
    }
    let mut crls = Some(Vec::new());
    for (i, crl) in t.crl.iter().enumerate() {
        let path = format!("tls.crl[{i}]");
        match errors.check(&path, tls::load_crls(&resolve(crl))) {
            Some(list) => {
                certificates.extend(
                    list.iter()
                        .filter_map(|c| tls::crl_info(&path, &resolve(crl), c)),
                );
                if let Some(all) = &mut crls {
                    all.extend(list);
                }
            }
            None => crls = None,
        }
    }
    let client_verifier = match (client_roots, crls) {
        (Some(roots), Some(crls)) if !roots.is_empty() => {
            errors.check("tls", tls::client_verifier(roots, crls))
        }
        _ => None,
    };
    let server_tls = match (&chain, &key, &client_verifier) {
        (Some(chain), Some(key), Some(verifier)) => errors.check(
            "tls",
            tls::server_config_with(chain.clone(), key.clone_key(), verifier.clone()),
        ),
        _ => None,
    };

    // [audit], [cache]: parsed and checked now, enforced by the audit writer and the cache.
    let audit = file
        .audit
        .as_ref()
        .map(|a| audit_settings(&mut errors, a, &resolve));
    let cache_size = match file.cache.as_ref().and_then(|c| c.max_size.as_ref()) {
        Some(s) => errors.check("cache.max_size", parse_size(s)),
        None => Some(DEFAULT_CACHE_SIZE),
    };

    // [[agencies]]
    let mut agencies = Vec::new();
    let mut agency_index = Index::default();
    let mut identities: HashMap<String, usize> = HashMap::new();
    // [[peers]] join the agencies: consumers like them, under agreements like them.
    let peers = file.peers.iter().enumerate().map(|(i, p)| {
        let party = match p.kind.as_str() {
            "provincial" => Some(Party::Provincial),
            "national" => Some(Party::National),
            other => {
                errors.push(
                    format!("peers[{i}].kind"),
                    format!("`{other}` is not a peer kind; use \"provincial\" or \"national\""),
                );
                None
            }
        };
        let entry = AgencyEntry {
            code: p.id.clone(),
            name: p.name.clone().unwrap_or_else(|| p.id.clone()),
            clearance: p.clearance.clone(),
            identities: p.identities.clone(),
            pin_sha256: p.pin_sha256.clone(),
        };
        (format!("peers[{i}]"), "id", entry, party)
    });
    let peers: Vec<_> = peers.collect();
    let parties = file
        .agencies
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("agencies[{i}]"), "code", a, Some(Party::Agency)))
        .chain(
            peers
                .iter()
                .map(|(at, key, entry, party)| (at.clone(), *key, entry, *party)),
        );
    for (at, key, a, party) in parties {
        if !agency_index.declared.insert(a.code.as_str()) {
            let message = match party {
                Some(Party::Agency) => format!("duplicate agency code `{}`", a.code),
                _ => format!("`{}` already names an agency or a peer", a.code),
            };
            errors.push(format!("{at}.{key}"), message);
            continue;
        }
        let Some(party) = party else { continue };
        if let Some(mut agency) = agency(&mut errors, &at, key, a) {
            agency.party = party;
            for (j, name) in agency.identities.iter().enumerate() {
                match identities.get(name) {
                    Some(&other) => errors.push(
                        format!("{at}.identities[{j}]"),
                        format!(
                            "`{name}` already identifies agency `{}`",
                            agencies_code(&agencies, other)
                        ),
                    ),
                    None => {
                        identities.insert(name.clone(), agencies.len());
                    }
                }
            }
            agency_index.valid.insert(a.code.as_str(), agencies.len());
            agencies.push(agency);
        }
    }
    // An administrator's certificate is its own: an agency's application must not be able to
    // reload or purge the gateway.
    for (i, id) in admin_identities.into_iter().flatten().enumerate() {
        if let Some(&agency) = identities.get(id) {
            errors.push(
                format!("admin.identities[{i}]"),
                format!(
                    "`{id}` identifies agency `{}`; admin certificates must name no agency or peer",
                    agencies_code(&agencies, agency)
                ),
            );
        }
    }

    // [[services]]
    let mut schemas = Schemas {
        dir: &schemas_dir,
        registry: None,
    };
    let mut services = Vec::new();
    let mut service_index = Index::default();
    let mut routes = RouteTable::default();
    for (i, s) in file.services.iter().enumerate() {
        let at = format!("services[{i}]");
        if !service_index.declared.insert(s.id.as_str()) {
            errors.push(
                format!("{at}.id"),
                format!("duplicate service id `{}`", s.id),
            );
            continue;
        }
        let ctx = ServiceContext {
            agency_index: &agency_index,
            gateway_chain: chain.as_ref(),
            gateway_key: key.as_ref(),
            default_body: max_request_body.unwrap_or(DEFAULT_MAX_REQUEST_BODY),
            default_request_timeout: request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            max_buffered: max_buffered.unwrap_or(DEFAULT_MAX_BUFFERED),
            resolve: &resolve,
        };
        let index = services.len();
        if let Some(service) = service(&mut errors, &at, s, &ctx, &mut schemas, &mut certificates) {
            register_routes(&mut errors, &at, index, s, &service, &mut routes);
            service_index.valid.insert(s.id.as_str(), index);
            services.push(service);
        }
    }

    // [[agreements]]
    let mut agreements = Vec::new();
    let mut agreement_ids = HashSet::new();
    for (i, a) in file.agreements.iter().enumerate() {
        let at = format!("agreements[{i}]");
        if !agreement_ids.insert(a.id.as_str()) {
            errors.push(
                format!("{at}.id"),
                format!("duplicate agreement id `{}`", a.id),
            );
            continue;
        }
        if let Some(agreement) = agreement(
            &mut errors,
            &at,
            a,
            &agency_index,
            &service_index,
            &services,
        ) {
            agreements.push(agreement);
        }
    }

    let warnings = errors.into_result(source.to_path_buf())?;
    let mut agreement_index: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
    for (i, a) in agreements.iter().enumerate() {
        agreement_index
            .entry((a.consumer, a.service))
            .or_default()
            .push(i);
    }
    // Every `None` above recorded an error, so reaching here means every value is present.
    let missing = || {
        ConfigErrors::single(
            source.to_path_buf(),
            "",
            "internal: a value was missing after validation",
        )
    };
    Ok(Snapshot {
        source: source.to_path_buf(),
        digest: crate::keys::sha256_hex(text.as_bytes()),
        gateway: GatewaySettings {
            id: g.id.clone(),
            listen: listen.ok_or_else(missing)?,
            grpc_listen: grpc_listen.ok_or_else(missing)?,
            admin_listen: admin_listen.ok_or_else(missing)?,
            admin_identities: admin_identities.cloned().unwrap_or_default(),
            data_dir,
            schemas_dir,
            timezone: timezone.ok_or_else(missing)?,
            max_request_body: max_request_body.ok_or_else(missing)?,
            handshake_timeout: handshake_timeout.ok_or_else(missing)?,
            header_read_timeout: header_read_timeout.ok_or_else(missing)?,
            max_header_size: max_header_size.ok_or_else(missing)?,
            max_connections: max_connections.ok_or_else(missing)?,
            shutdown_grace: shutdown_grace.ok_or_else(missing)?,
            request_timeout: request_timeout.ok_or_else(missing)?,
            max_buffered: max_buffered.ok_or_else(missing)?,
            max_connection_age: max_connection_age.ok_or_else(missing)?,
        },
        server_tls: server_tls.ok_or_else(missing)?,
        client_verifier: client_verifier.ok_or_else(missing)?,
        identity: identity.ok_or_else(missing)?,
        audit: audit.flatten(),
        cache: CacheSettings {
            max_size: cache_size.ok_or_else(missing)?,
        },
        otlp: otlp.ok_or_else(missing)?,
        agencies,
        services,
        agreements,
        routes,
        certificates,
        identities,
        agreement_index,
        openapi: Vec::new(),
        warnings,
    })
}

/// Names declared in the file, and which of them validated (with their index). A reference to
/// a declared but invalid entry is not reported again: its own error already was.
#[derive(Default)]
struct Index<'a> {
    declared: HashSet<&'a str>,
    valid: HashMap<&'a str, usize>,
}

impl Index<'_> {
    /// `Ok(Some(i))`: valid; `Ok(None)`: declared but invalid; `Err`: not declared at all.
    fn resolve(&self, what: &str, name: &str) -> Result<Option<usize>, String> {
        match self.valid.get(name) {
            Some(&i) => Ok(Some(i)),
            None if self.declared.contains(name) => Ok(None),
            None => Err(unknown(what, name, self.declared.iter())),
        }
    }
}

/// The schema registry, opened on first use so that a configuration without schemas needs no
/// schemas directory.
struct Schemas<'a> {
    dir: &'a Path,
    registry: Option<Result<Registry, String>>,
}

impl Schemas<'_> {
    fn get(&mut self, name: &str) -> Result<Arc<Schema>, String> {
        let dir = self.dir;
        match self.registry.get_or_insert_with(|| Registry::new(dir)) {
            Ok(registry) => registry.get(name),
            Err(e) => Err(e.clone()),
        }
    }
}

struct ServiceContext<'a> {
    agency_index: &'a Index<'a>,
    gateway_chain: Option<&'a Vec<rustls_pki_types::CertificateDer<'static>>>,
    gateway_key: Option<&'a rustls_pki_types::PrivateKeyDer<'static>>,
    default_body: u64,
    default_request_timeout: Duration,
    max_buffered: u64,
    resolve: &'a dyn Fn(&str) -> PathBuf,
}

/// An `[[agencies]]` entry, or a `[[peers]]` entry in its shape (`key` names its id key).
fn agency(errors: &mut Errors, at: &str, key: &str, a: &AgencyEntry) -> Option<Agency> {
    let code_ok = errors
        .check(format!("{at}.{key}"), check_id(&a.code))
        .is_some();
    if a.name.trim().is_empty() {
        errors.push(format!("{at}.name"), "must not be empty");
    }
    let clearance = match &a.clearance {
        None => Some(Classification::Terbuka),
        Some(c) => errors.check(format!("{at}.clearance"), classification(c)),
    };
    for (j, name) in a.identities.iter().enumerate() {
        if name.trim().is_empty() {
            errors.push(format!("{at}.identities[{j}]"), "must not be empty");
        }
    }
    let mut pins = Vec::new();
    for (j, pin) in a.pin_sha256.iter().enumerate() {
        pins.extend(errors.check(format!("{at}.pin_sha256[{j}]"), parse_pin(pin)));
    }
    Some(Agency {
        code: a.code.clone(),
        party: Party::Agency,
        name: a.name.clone(),
        clearance: clearance?,
        identities: a.identities.clone(),
        pins,
    })
    .filter(|_| code_ok)
}

fn service(
    errors: &mut Errors,
    at: &str,
    s: &ServiceEntry,
    ctx: &ServiceContext<'_>,
    schemas: &mut Schemas<'_>,
    certificates: &mut Vec<CertInfo>,
) -> Option<Service> {
    let id_ok = errors.check(format!("{at}.id"), check_id(&s.id)).is_some();
    let owner = errors
        .check(
            format!("{at}.owner"),
            ctx.agency_index.resolve("agency", &s.owner),
        )
        .flatten();
    let classification = errors.check(
        format!("{at}.classification"),
        classification(&s.classification),
    );
    let prefix = errors.check(format!("{at}.prefix"), check_prefix(&s.prefix));
    let protocol = match s.protocol.as_deref() {
        None | Some("http") => Some(Protocol::Http),
        Some("grpc") => {
            // The prefix is the gRPC service's full name: `/pkg.Service`.
            if !(s.prefix.len() > 1 && s.prefix[1..].contains('.') && !s.prefix[1..].contains('/'))
            {
                errors.push(
                    format!("{at}.prefix"),
                    format!("`{}`: a grpc service's prefix is its full gRPC service name, e.g. \"/kependudukan.v1.Penduduk\"", s.prefix),
                );
            }
            Some(Protocol::Grpc)
        }
        Some(other) => {
            errors.push(
                format!("{at}.protocol"),
                format!("`{other}` is not a protocol; use \"http\" or \"grpc\""),
            );
            None
        }
    };
    let timeout = opt(errors, &format!("{at}.timeout"), &s.timeout, parse_duration)
        .map(|t| t.unwrap_or(DEFAULT_TIMEOUT));
    let max_body = opt(
        errors,
        &format!("{at}.max_request_body"),
        &s.max_request_body,
        parse_size,
    )
    .map(|t| t.unwrap_or(ctx.default_body))
    .and_then(|body| {
        if body > ctx.max_buffered {
            errors.push(
                format!("{at}.max_request_body"),
                format!(
                    "{body} bytes is more than [gateway] max_buffered ({} bytes), so a body of that size could never be admitted",
                    ctx.max_buffered
                ),
            );
            return None;
        }
        Some(body)
    });
    let request_timeout = opt(
        errors,
        &format!("{at}.request_timeout"),
        &s.request_timeout,
        positive_duration,
    )
    .and_then(|explicit| {
        let deadline = explicit.unwrap_or(ctx.default_request_timeout);
        match timeout {
            Some(timeout) if deadline < timeout => {
                let (path, whose) = match explicit {
                    Some(_) => (format!("{at}.request_timeout"), "its `request_timeout`"),
                    None => (
                        format!("{at}.timeout"),
                        "[gateway] request_timeout (set the service's own `request_timeout`)",
                    ),
                };
                errors.push(
                    path,
                    format!(
                        "the upstream timeout ({timeout:?}) is longer than {whose} ({deadline:?}), so the exchange would end before the upstream's time is up"
                    ),
                );
                None
            }
            _ => Some(deadline),
        }
    });

    if s.upstreams.is_empty() {
        errors.push(
            format!("{at}.upstreams"),
            "must list at least one upstream URL",
        );
    }
    let mut upstreams = Vec::new();
    let mut needs_tls = false;
    for (j, u) in s.upstreams.iter().enumerate() {
        if let Some(up) = errors.check(
            format!("{at}.upstreams[{j}]"),
            parse_upstream(u, s.allow_plaintext),
        ) {
            needs_tls |= up.origin.scheme_str() == Some("https");
            upstreams.push(up);
        }
    }
    let upstream_tls = match (&s.upstream_ca, needs_tls) {
        (None, true) => {
            errors.push(
                format!("{at}.upstream_ca"),
                "is required for https upstreams: the CA that issued the upstream's certificate",
            );
            None
        }
        (None, false) => Some(None),
        (Some(ca), _) => {
            let path = format!("{at}.upstream_ca");
            let file = (ctx.resolve)(ca);
            errors
                .check(&path, tls::load_certs(&file))
                .and_then(|roots| {
                    certificates
                        .extend(roots.iter().filter_map(|c| tls::cert_info(&path, &file, c)));
                    let (chain, key) = (ctx.gateway_chain?, ctx.gateway_key?);
                    errors
                        .check(
                            &path,
                            tls::upstream_config(roots, chain.clone(), key.clone_key()),
                        )
                        .map(Some)
                })
        }
    };

    let upstream_auth = match &s.upstream_auth {
        None => Some(None),
        Some(entry) => super::credentials::upstream_auth(
            errors,
            &format!("{at}.upstream_auth"),
            entry,
            s.allow_plaintext,
            ctx.resolve,
        )
        .map(Some),
    };

    let health = health_check(errors, at, s, protocol);

    let mut operations = Vec::new();
    let mut op_ids = HashSet::new();
    for (j, o) in s.operations.iter().enumerate() {
        let at = format!("{at}.operations[{j}]");
        if !op_ids.insert(o.id.as_str()) {
            errors.push(
                format!("{at}.id"),
                format!("duplicate operation id `{}` in service `{}`", o.id, s.id),
            );
            continue;
        }
        let grpc = (protocol == Some(Protocol::Grpc)).then_some(s.prefix.as_str());
        operations.extend(operation(errors, &at, o, schemas, grpc));
    }
    if s.operations.is_empty() {
        errors.push(
            format!("{at}.operations"),
            "a service must declare at least one operation; only declared operations are reachable",
        );
    }

    // Secret services are never cached, whatever an operation says.
    if classification.is_some_and(|c| c >= Classification::Rahasia) {
        for (j, op) in operations.iter_mut().enumerate() {
            if op.cache_ttl.take().is_some() {
                errors.warn(
                    format!("{at}.operations[{j}].cache_ttl"),
                    format!(
                        "ignored: `{}` is {}, and responses of rahasia and sangat_rahasia services are never cached",
                        s.id, s.classification
                    ),
                );
            }
        }
    }

    Some(Service {
        fingerprint: fingerprint(s, &operations),
        id: s.id.clone(),
        owner: owner?,
        classification: classification?,
        prefix: prefix?,
        protocol: protocol?,
        upstreams,
        upstream_tls: upstream_tls?,
        upstream_auth: upstream_auth?,
        timeout: timeout?,
        request_timeout: request_timeout?,
        max_request_body: max_body?,
        max_in_flight: match s.max_in_flight {
            Some(0) => {
                errors.push(
                    format!("{at}.max_in_flight"),
                    "must be at least 1 (leave it out for no limit)",
                );
                return None;
            }
            other => other,
        },
        health: health?,
        operations,
    })
    .filter(|_| id_ok)
}

/// `health_path` and `health_interval` (default 10 s, at least 1 s; only with a path).
fn health_check(
    errors: &mut Errors,
    at: &str,
    s: &ServiceEntry,
    protocol: Option<Protocol>,
) -> Option<Option<HealthCheck>> {
    let interval = opt(
        errors,
        &format!("{at}.health_interval"),
        &s.health_interval,
        |text| {
            let d = parse_duration(text)?;
            if d < Duration::from_secs(1) {
                return Err(format!("`{text}` is too short; at least 1s"));
            }
            Ok(d)
        },
    )?;
    let Some(path) = &s.health_path else {
        if interval.is_some() {
            errors.push(
                format!("{at}.health_interval"),
                "needs a health_path to check",
            );
            return None;
        }
        return Some(None);
    };
    if protocol == Some(Protocol::Grpc) {
        errors.push(
            format!("{at}.health_path"),
            "active checks are HTTP GETs; a gRPC service is watched passively (ejection on failures)",
        );
        return None;
    }
    let valid = path.starts_with('/')
        && path.parse::<http::uri::PathAndQuery>().is_ok()
        && !path.contains('#');
    if !valid {
        errors.push(
            format!("{at}.health_path"),
            format!("`{path}` is not an absolute path (e.g. \"/healthz\")"),
        );
        return None;
    }
    Some(Some(HealthCheck {
        path: path.clone(),
        interval: interval.unwrap_or(DEFAULT_HEALTH_INTERVAL),
    }))
}

fn operation(
    errors: &mut Errors,
    at: &str,
    o: &OperationEntry,
    schemas: &mut Schemas<'_>,
    grpc: Option<&str>,
) -> Option<Operation> {
    let id_ok = errors.check(format!("{at}.id"), check_id(&o.id)).is_some();
    let (method, path) = match grpc {
        None => (
            match &o.method {
                Some(m) => errors.check(format!("{at}.method"), parse_method(m)),
                None => {
                    errors.push(
                        format!("{at}.method"),
                        "is required: GET, POST, PUT, PATCH or DELETE",
                    );
                    None
                }
            },
            Some(o.path.clone()),
        ),
        Some(prefix) => {
            let method = match o.method.as_deref() {
                None | Some("POST") => Some(Method::POST),
                Some(other) => {
                    errors.push(
                        format!("{at}.method"),
                        format!("gRPC methods are called with POST, not {other}"),
                    );
                    None
                }
            };
            // `/pkg.Service/Method`, matched after the prefix (the service name).
            let rest = o.path.strip_prefix(prefix).filter(|rest| {
                rest.len() > 1 && rest.starts_with('/') && !rest[1..].contains(['/', '{', '}'])
            });
            if rest.is_none() {
                errors.push(
                    format!("{at}.path"),
                    format!(
                        "`{}`: a gRPC operation names its full method, `{prefix}/<Method>`",
                        o.path
                    ),
                );
            }
            for (key, set) in [
                ("request_schema", o.request_schema.is_some()),
                ("response_schema", o.response_schema.is_some()),
                ("cache_ttl", o.cache_ttl.is_some()),
                ("params", !o.params.is_empty()),
            ] {
                if set {
                    errors.push(
                        format!("{at}.{key}"),
                        "does not apply to gRPC operations (protobuf bodies are passed through)",
                    );
                }
            }
            (method, rest.map(str::to_owned))
        }
    };
    let path = path?;
    let template = errors.check(format!("{at}.path"), Template::parse(&path));
    let mut schema = |errors: &mut Errors, key: &str, name: &Option<String>| {
        let Some(name) = name else { return Some(None) };
        errors
            .check(format!("{at}.{key}"), schemas.get(name))
            .map(Some)
    };
    let request_schema = schema(errors, "request_schema", &o.request_schema);
    let response_schema = schema(errors, "response_schema", &o.response_schema);
    let mut params = Some(Vec::new());
    for (name, schema_name) in &o.params {
        let compiled = schema(
            errors,
            &format!("params.{name}"),
            &Some(schema_name.clone()),
        )
        .flatten();
        let location = match &template {
            Some(t) if t.params().any(|p| p == name) => ParamIn::Path,
            _ => ParamIn::Query,
        };
        match (compiled, &mut params) {
            (Some(s), Some(list)) => list.push(ParamSchema {
                name: name.clone(),
                location,
                schema: s,
            }),
            _ => params = None,
        }
    }
    let schema_mode = match o.schema_mode.as_deref() {
        None | Some("enforce") => Some(SchemaMode::Enforce),
        Some("monitor") => Some(SchemaMode::Monitor),
        Some(other) => {
            errors.push(
                format!("{at}.schema_mode"),
                format!("`{other}` is not a schema mode; use \"enforce\" or \"monitor\""),
            );
            None
        }
    };
    let cache_ttl = opt(
        errors,
        &format!("{at}.cache_ttl"),
        &o.cache_ttl,
        parse_duration,
    )
    .and_then(|ttl| match (ttl, &method) {
        (Some(ttl), _) if ttl.is_zero() => {
            errors.push(
                format!("{at}.cache_ttl"),
                "must be more than 0s; leave it out to not cache",
            );
            None
        }
        (Some(_), Some(m)) if m != Method::GET => {
            errors.push(
                format!("{at}.cache_ttl"),
                format!(
                    "only GET operations are cached (HEAD is answered from GET's entries), not {m}"
                ),
            );
            None
        }
        _ => Some(ttl),
    });
    for (k, name) in o.audit_redact.iter().enumerate() {
        if name.trim().is_empty() {
            errors.push(
                format!("{at}.audit_redact[{k}]"),
                "must name a path or query parameter",
            );
        } else if o.audit_clear.contains(name) {
            errors.push(
                format!("{at}.audit_redact[{k}]"),
                format!("`{name}` is also in audit_clear: a value is either hashed or in clear"),
            );
        } else {
            errors.warn(
                format!("{at}.audit_redact[{k}]"),
                format!("`{name}` is hashed in the audit log anyway: every parameter value is, unless audit_clear names it; audit_redact can go"),
            );
        }
    }
    for (k, name) in o.audit_clear.iter().enumerate() {
        if name.trim().is_empty() || name.contains(['&', '=', '/', '?', '#']) {
            errors.push(
                format!("{at}.audit_clear[{k}]"),
                "must name a path or query parameter",
            );
        }
    }
    let op = Operation {
        id: o.id.clone(),
        method: method?,
        path,
        template: template?,
        request_schema: request_schema?,
        response_schema: response_schema?,
        params: params?,
        schema_mode: schema_mode?,
        cache_ttl: cache_ttl?,
        audit_redact: o.audit_redact.clone(),
        audit_clear: o.audit_clear.clone(),
    };
    id_ok.then_some(op)
}

/// What a stored response of the service depends on: its entry in the file and the schemas its
/// operations validate against. A reload that changes it drops the service's cache entries.
fn fingerprint(entry: &ServiceEntry, operations: &[Operation]) -> String {
    let mut text = format!("{entry:?}").into_bytes();
    let schemas = operations
        .iter()
        .flat_map(|op| op.request_schema.iter().chain(&op.response_schema));
    for schema in schemas {
        text.extend_from_slice(schema.name.as_bytes());
        text.extend(std::fs::read(&schema.file).unwrap_or_default());
    }
    crate::keys::sha256_hex(&text)
}

fn register_routes(
    errors: &mut Errors,
    at: &str,
    index: usize,
    entry: &ServiceEntry,
    service: &Service,
    routes: &mut RouteTable,
) {
    let Ok(prefix) = normalize(&service.prefix) else {
        return;
    };
    if let Err(_existing) = routes.add_service(index, &prefix) {
        errors.push(
            format!("{at}.prefix"),
            format!(
                "prefix `{}` is already used by another service",
                service.prefix
            ),
        );
        return;
    }
    for (j, op) in service.operations.iter().enumerate() {
        if let Err(conflict) = routes.add_operation(index, j, op.method.clone(), &op.template) {
            let other = &service.operations[conflict.existing_operation];
            let k = entry
                .operations
                .iter()
                .position(|o| o.id == op.id)
                .unwrap_or(j);
            errors.push(
                format!("{at}.operations[{k}].path"),
                format!(
                    "{} {} matches the same requests as operation `{}` ({} {})",
                    op.method, op.path, other.id, other.method, other.path
                ),
            );
        }
    }
}

fn agreement(
    errors: &mut Errors,
    at: &str,
    a: &AgreementEntry,
    agency_index: &Index<'_>,
    service_index: &Index<'_>,
    services: &[Service],
) -> Option<Agreement> {
    let id_ok = errors
        .check(format!("{at}.id"), check_agreement_id(&a.id))
        .is_some();
    let consumer = errors
        .check(
            format!("{at}.consumer"),
            agency_index.resolve("agency", &a.consumer),
        )
        .flatten();
    let service = errors
        .check(
            format!("{at}.service"),
            service_index.resolve("service", &a.service),
        )
        .flatten();
    let operations = match (&a.operations, service) {
        (None, _) => Some(None),
        (Some(list), _) if list.is_empty() => {
            errors.push(
                format!("{at}.operations"),
                "is empty; omit the key to cover every operation of the service",
            );
            None
        }
        (Some(list), Some(s)) => {
            let ops = &services[s].operations;
            let mut found = Some(Vec::new());
            for (k, name) in list.iter().enumerate() {
                let hit = ops.iter().position(|o| &o.id == name).ok_or_else(|| {
                    unknown(
                        &format!("operation of service `{}`", a.service),
                        name,
                        ops.iter().map(|o| &o.id),
                    )
                });
                match (
                    errors.check(format!("{at}.operations[{k}]"), hit),
                    &mut found,
                ) {
                    (Some(i), Some(v)) => v.push(i),
                    _ => found = None,
                }
            }
            found.map(Some)
        }
        (Some(_), None) => None,
    };
    if a.purpose.trim().is_empty() {
        errors.push(
            format!("{at}.purpose"),
            "must state the purpose of the data sharing",
        );
    }
    let from = errors.check(format!("{at}.valid_from"), date(&a.valid_from));
    let until = errors.check(format!("{at}.valid_until"), date(&a.valid_until));
    if let (Some(f), Some(u)) = (from, until) {
        if u < f {
            errors.push(
                format!("{at}.valid_until"),
                format!("{u} is before valid_from {f}"),
            );
        }
    }
    let rate = opt(errors, &format!("{at}.rate"), &a.rate, parse_rate);
    let agreement = Agreement {
        id: a.id.clone(),
        consumer: consumer?,
        service: service?,
        operations: operations?,
        purpose: a.purpose.clone(),
        valid_from: from?,
        valid_until: until?,
        rate: rate?,
    };
    id_ok.then_some(agreement)
}

fn audit_settings(
    errors: &mut Errors,
    a: &AuditSection,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Option<AuditSettings> {
    let durability = match a.durability.as_deref() {
        None | Some("sync") => Some(Durability::Sync),
        Some("interval") => Some(Durability::Interval),
        Some(other) => {
            errors.push(
                "audit.durability",
                format!("`{other}` is not a durability; use \"sync\" or \"interval\""),
            );
            None
        }
    };
    let flush_interval = opt(
        errors,
        "audit.flush_interval",
        &a.flush_interval,
        parse_duration,
    )
    .map(|v| v.unwrap_or(DEFAULT_FLUSH_INTERVAL));
    let mut key = |name: &str, value: &Option<String>| -> Option<Option<PathBuf>> {
        let Some(v) = value else { return Some(None) };
        let file = resolve(v);
        let readable = std::fs::File::open(&file)
            .map(|_| Some(file.clone()))
            .map_err(|e| format!("cannot read {}: {e}", file.display()));
        errors.check(format!("audit.{name}"), readable)
    };
    let signing_key = key("signing_key", &a.signing_key);
    let redactor = match &a.redaction_key {
        None => Some(None),
        Some(files) if files.as_slice().is_empty() => {
            errors.push(
                "audit.redaction_key",
                "names no key file; leave it out, or name one",
            );
            None
        }
        Some(files) => {
            let many = matches!(files, OneOrMany::Many(_));
            let read: Vec<Option<Redactor>> = files
                .as_slice()
                .iter()
                .enumerate()
                .map(|(k, name)| {
                    let at = if many {
                        format!("audit.redaction_key[{k}]")
                    } else {
                        "audit.redaction_key".to_owned()
                    };
                    let file = resolve(name);
                    let key = std::fs::read(&file)
                        .map_err(|e| format!("cannot read {}: {e}", file.display()))
                        .and_then(|bytes| {
                            Redactor::from_file_bytes(&bytes)
                                .map_err(|e| format!("{}: {e}", file.display()))
                        });
                    errors.check(at, key)
                })
                .collect();
            let keys: Option<Vec<Redactor>> = read.into_iter().collect();
            keys.and_then(Redactor::joined).map(|r| Some(Arc::new(r)))
        }
    };
    if a.redaction_key.is_none() {
        errors.warn(
            "audit.redaction_key",
            "not set: parameter values are written as `redacted`, and `audit find --param` cannot find them",
        );
    }
    let signer = match signing_key.clone().flatten() {
        None => Some(None),
        Some(file) => errors.check(
            "audit.signing_key",
            Signer::from_pem_file(&file).map(|s| Some(Arc::new(s))),
        ),
    };
    let tree_head_every = match a.tree_head_every {
        Some(0) => {
            errors.push("audit.tree_head_every", "must be at least 1");
            None
        }
        n => Some(n.unwrap_or(1000)),
    };
    let tree_head_interval = opt(
        errors,
        "audit.tree_head_interval",
        &a.tree_head_interval,
        parse_duration,
    )
    .map(|v| v.unwrap_or(Duration::from_secs(1)));
    let queue = match a.queue {
        Some(0) => {
            errors.push("audit.queue", "must be at least 1");
            None
        }
        q => Some(q.unwrap_or(4096)),
    };
    let segment_size = opt(errors, "audit.segment_size", &a.segment_size, parse_size)
        .map(|v| v.unwrap_or(DEFAULT_SEGMENT_SIZE));
    let rpc_rate = opt(errors, "audit.rpc_rate", &a.rpc_rate, parse_rate).map(|v| {
        v.unwrap_or(super::units::Rate {
            count: 10,
            per: Duration::from_secs(1),
        })
    });
    Some(AuditSettings {
        rpc_rate: rpc_rate?,
        durability: durability?,
        flush_interval: flush_interval?,
        redactor: redactor?,
        segment_size: segment_size?,
        queue: queue?,
        signer: signer?,
        tree_head_every: tree_head_every?,
        tree_head_interval: tree_head_interval?,
    })
}

/// An OTLP/gRPC endpoint: `http://host:port` (a collector beside the gateway; the export is
/// not encrypted, so it stays on the host or a trusted segment).
fn parse_otlp_endpoint(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|_| format!("`{text}` is not a URL; e.g. \"http://127.0.0.1:4317\""))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!(
            "`{text}`: use http://host:port of an OTLP/gRPC collector beside the gateway (TLS to a collector is not supported)"
        ));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!(
            "`{text}`: give the collector's address without a path"
        ));
    }
    Ok(uri)
}

/// Parses an optional value; `None` in the result means the value was present and bad.
/// A duration that is more than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(format!("`{text}` must be more than zero"));
    }
    Ok(d)
}

fn opt<T>(
    errors: &mut Errors,
    path: &str,
    value: &Option<String>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(v) => errors.check(path, parse(v)).map(Some),
    }
}

/// A certificate fingerprint as `openssl x509 -noout -fingerprint -sha256` prints it (colons,
/// upper case) or as plain hex; stored as lowercase hex without colons.
fn parse_pin(text: &str) -> Result<String, String> {
    let hex: String = text
        .chars()
        .filter(|&c| c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(format!(
            "`{text}` is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        ))
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an address:port such as \"0.0.0.0:8443\""))
}

fn classification(text: &str) -> Result<Classification, String> {
    Classification::parse(text).ok_or_else(|| {
        format!(
            "`{text}` is not a classification; use one of {}",
            Classification::NAMES.join(", ")
        )
    })
}

/// Agency, service and operation ids appear in URLs, headers and audit records.
fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!("`{id}` is not a valid id: use 1-64 lowercase letters, digits, `-` and `_`, starting with a letter or digit"))
    }
}

/// Agreement ids are document numbers (`PKS-2025-014`, `PKS/014/2025`): printable, no spaces.
fn check_agreement_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b',' | b'"' | b'\\'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a valid agreement id: printable ASCII without spaces, commas, quotes or backslashes"
        ))
    }
}

fn check_prefix(prefix: &str) -> Result<String, String> {
    let normal = normalize(prefix).map_err(|e| format!("`{prefix}`: {e}"))?;
    if normal.segments().is_empty() {
        return Err(format!(
            "`{prefix}` must name at least one segment, e.g. \"/dukcapil/penduduk\""
        ));
    }
    let canonical = normal.encoded_from(0);
    if canonical != prefix {
        return Err(format!(
            "`{prefix}` is not in canonical form; write `{canonical}`"
        ));
    }
    if normal.segments()[0] == ".well-known" {
        return Err(format!(
            "`{prefix}`: /.well-known/ is reserved for the gateway's own documents"
        ));
    }
    if prefix.contains(['{', '}']) {
        return Err(format!("`{prefix}`: a prefix cannot hold parameters"));
    }
    Ok(canonical)
}

fn parse_method(text: &str) -> Result<Method, String> {
    match text {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => {
            Method::from_bytes(text.as_bytes()).map_err(|e| e.to_string())
        }
        _ => Err(format!("`{text}` is not a method an operation can declare; use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS (upper case)")),
    }
}

fn parse_upstream(text: &str, allow_plaintext: bool) -> Result<Upstream, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_plaintext => {}
        Some("http") => return Err(format!("`{text}` is plain http; use https, or set allow_plaintext = true on the service to accept an unencrypted upstream")),
        _ => return Err(format!("`{text}` must start with https://")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{text}` has no host"))?
        .clone();
    if authority.as_str().contains('@') {
        return Err(format!(
            "`{text}`: credentials in an upstream URL are not allowed"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("`{text}`: an upstream URL cannot have a query"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    let origin = Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("https"))
        .authority(authority)
        .path_and_query("/")
        .build()
        .map_err(|e| format!("`{text}`: {e}"))?;
    Ok(Upstream { origin, base_path })
}

fn date(value: &toml::value::Datetime) -> Result<Date, String> {
    match (value.date, value.time, value.offset) {
        (Some(d), None, None) => Ok(Date { year: d.year, month: d.month, day: d.day }),
        _ => Err(format!("`{value}` must be a date without a time, e.g. 2025-01-01 (days are inclusive, in the gateway's time zone)")),
    }
}

fn unknown<'a, S: AsRef<str> + 'a>(
    what: &str,
    name: &str,
    known: impl Iterator<Item = &'a S>,
) -> String {
    let mut names: Vec<&str> = known.map(AsRef::as_ref).collect();
    names.sort_unstable();
    if names.is_empty() {
        format!("`{name}` is not a known {what}; none is declared")
    } else {
        format!(
            "`{name}` is not a known {what} (known: {})",
            names.join(", ")
        )
    }
}

fn agencies_code(agencies: &[Agency], i: usize) -> &str {
    agencies.get(i).map(|a| a.code.as_str()).unwrap_or("?")
}
