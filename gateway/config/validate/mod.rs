//! File shape → [`Snapshot`]: every check the contract makes, every error collected.
//!
//! Validation never stops at the first problem: an operator fixing a file wants the whole list,
//! each with its TOML path. A reference to something that is itself broken (a service whose
//! owner is misspelt) is reported once, at the broken reference, not again downstream.

mod agencies;
mod agreements;
mod audit;
mod gateway;
mod governance;
mod operations;
mod parse;
mod services;
mod tls;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::error::{ConfigErrors, Errors};
use super::file::{
    AgencyEntry, AgreementEntry, AuditSection, FileConfig, OneOrMany, OperationEntry, ServiceEntry,
};
use super::snapshot::{
    Agency, Agreement, AuditSettings, CacheSettings, Classification, Date, Durability,
    GatewaySettings, Governance, HealthCheck, Operation, OtlpSettings, ParamIn, ParamSchema, Party,
    Protocol, SchemaMode, Service, Snapshot, TimeZone, Upstream,
};
use super::units::{parse_duration, parse_rate, parse_size};
use crate::keys::{Redactor, Signer};
use crate::route::{normalize, RouteTable, Template};
use crate::schema::{Registry, Schema};
use crate::tls::{CertInfo, IdentityField};

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
const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

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
    let errors = &mut errors;

    let gateway = gateway::gateway(errors, &file, &resolve);
    let otlp = gateway::otlp(errors, &file);
    let tls = tls::tls(errors, &file, &resolve, &mut certificates);
    let audit = file
        .audit
        .as_ref()
        .map(|a| audit::audit_settings(errors, a, &resolve));
    let cache_size = match file.cache.as_ref().and_then(|c| c.max_size.as_ref()) {
        Some(s) => errors.check("cache.max_size", parse_size(s)),
        None => Some(DEFAULT_CACHE_SIZE),
    };
    let governance = governance::governance(
        errors,
        &file,
        &resolve,
        tls.client_verifier.as_ref(),
        &mut certificates,
    );
    let parties = agencies::parties(errors, &file, governance.settings.as_ref());
    let mut schemas = Schemas {
        dir: &gateway.schemas_dir,
        registry: None,
    };
    let ctx = services::ServiceContext {
        agency_index: &parties.index,
        gateway_chain: tls.chain.as_ref(),
        gateway_key: tls.key.as_ref(),
        default_body: gateway.max_request_body,
        default_request_timeout: gateway.request_timeout,
        max_buffered: gateway.max_buffered,
        resolve: &resolve,
    };
    let services = services::services(errors, &file, &ctx, &mut schemas, &mut certificates);
    let signers = governance::Signers {
        file: &file,
        governance: governance.settings.as_ref(),
        implicit: governance.implicit,
        verifier: governance.verifier.as_ref(),
        identity: tls.identity,
        identities: &parties.identities,
        agencies: &parties.agencies,
        resolve: &resolve,
        now: unix_now(),
    };
    let agreements = agreements::agreements(
        errors,
        &file,
        &parties.index,
        &services.index,
        &services.services,
        &signers,
    );

    let warnings = std::mem::take(errors).into_result(source.to_path_buf())?;
    let mut agreement_index: HashMap<(usize, usize), Vec<usize>, foldhash::fast::RandomState> =
        HashMap::default();
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
        text: text.into(),
        gateway: gateway.settings.ok_or_else(missing)?,
        server_tls: tls.server_tls.ok_or_else(missing)?,
        client_verifier: tls.client_verifier.ok_or_else(missing)?,
        identity: tls.identity.ok_or_else(missing)?,
        audit: audit.flatten(),
        cache: CacheSettings {
            max_size: cache_size.ok_or_else(missing)?,
        },
        otlp: otlp.ok_or_else(missing)?,
        governance: governance.settings.ok_or_else(missing)?,
        agencies: parties.agencies,
        services: services.services,
        agreements,
        routes: services.routes,
        certificates,
        identities: parties.identities,
        agreement_index,
        openapi: Vec::new(),
        warnings,
    })
}

pub use governance::terms;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Names declared in the file, and which of them validated (with their index). A reference to
/// a declared but invalid entry is not reported again: its own error already was.
#[derive(Default)]
struct Index {
    declared: HashSet<String>,
    valid: HashMap<String, usize>,
}

impl Index {
    /// `Ok(Some(i))`: valid; `Ok(None)`: declared but invalid; `Err`: not declared at all.
    fn resolve(&self, what: &str, name: &str) -> Result<Option<usize>, String> {
        match self.valid.get(name) {
            Some(&i) => Ok(Some(i)),
            None if self.declared.contains(name) => Ok(None),
            None => Err(parse::unknown(what, name, self.declared.iter())),
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
