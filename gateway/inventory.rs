//! What `penghubung check` and `penghubung certs` print: what the configuration publishes to
//! whom, and every certificate and CRL the gateway depends on with the days it has left.

use std::fmt::Write as _;

use time::OffsetDateTime;

use crate::config::Snapshot;
use crate::seen::{Role, Sighting, RECENT_SECONDS};
use crate::tls::{CertInfo, CertKind};

/// Certificates expiring within this many days are flagged unless told otherwise.
pub const DEFAULT_WARN_DAYS: i64 = 30;

/// How the certificates stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    /// Certificates past notAfter and CRLs past nextUpdate.
    pub expired: usize,
    /// Within the warning threshold.
    pub expiring: usize,
}

/// The certificate inventory as a table, and how it stands at `now`.
pub fn certificates(snapshot: &Snapshot, now: OffsetDateTime, warn_days: i64) -> (String, Health) {
    let mut out = String::new();
    let mut health = Health::default();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(out, "certificates (warning under {warn_days} days):");
    for c in &snapshot.certificates {
        let (line, state) = describe(c, now, warn_days);
        match state {
            State::Expired => health.expired += 1,
            State::Expiring => health.expiring += 1,
            State::Fine => {}
        }
        let _ = writeln!(
            out,
            "  {:<28} {}\n  {:<28} {line}  [{}]",
            c.used_as, c.subject, "", c.file
        );
    }
    let _ = writeln!(
        out,
        "{} checked: {} expired, {} expiring within {warn_days} days",
        snapshot.certificates.len(),
        health.expired,
        health.expiring
    );
    (out, health)
}

/// The certificates seen on the wire (`seen.rs`), each flagged as the configured ones are;
/// those last seen more than 30 days before `now` are history, listed without a flag. They
/// warn (`Health::expiring`) but never fail `certs`: the gateway does not present them.
pub fn seen_certificates(
    seen: &[Sighting],
    now: OffsetDateTime,
    warn_days: i64,
) -> (String, Health) {
    let mut out = String::new();
    let mut health = Health::default();
    let _ = writeln!(
        out,
        "\ncertificates seen on the wire (client: an agency's or peer's application; upstream: a service's):"
    );
    for s in seen {
        let (line, state) = describe(&seen_info(s), now, warn_days);
        let recent = now.unix_timestamp() - s.last_seen <= RECENT_SECONDS;
        let line = if recent {
            if !matches!(state, State::Fine) {
                health.expiring += 1;
            }
            line
        } else {
            format!("{line}  (history: not seen for over 30 days)")
        };
        let role = match s.role {
            Role::Client => "client",
            Role::Upstream => "upstream",
        };
        let _ = writeln!(
            out,
            "  {:<28} {}\n  {:<28} {line}\n  {:<28} serial {} sha256 {} first seen {} last seen {}",
            format!("{role} {}", s.party),
            s.subject,
            "",
            "",
            s.serial,
            s.sha256,
            rfc3339(s.first_seen),
            rfc3339(s.last_seen),
        );
    }
    let _ = writeln!(
        out,
        "{} seen: {} in use within 30 days expiring or expired",
        seen.len(),
        health.expiring
    );
    (out, health)
}

/// The certificates seen, as `/v1/certificates` lists them beside the configured ones.
pub fn seen_json(seen: &[Sighting], now: OffsetDateTime, warn_days: i64) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = seen
        .iter()
        .map(|s| {
            let (_, state) = describe(&seen_info(s), now, warn_days);
            serde_json::json!({
                "role": s.role,
                "party": s.party,
                "server_name": s.server_name,
                "subject": s.subject,
                "issuer": s.issuer,
                "serial": s.serial,
                "sha256": s.sha256,
                "not_after": rfc3339(s.not_after),
                "days_left": (s.not_after - now.unix_timestamp()).div_euclid(86_400),
                "state": state.as_str(),
                "first_seen": rfc3339(s.first_seen),
                "last_seen": rfc3339(s.last_seen),
                "recent": now.unix_timestamp() - s.last_seen <= RECENT_SECONDS,
            })
        })
        .collect();
    serde_json::Value::Array(entries)
}

fn seen_info(s: &Sighting) -> CertInfo {
    CertInfo {
        kind: CertKind::Certificate,
        used_as: s.party.clone(),
        file: String::new(),
        subject: s.subject.clone(),
        issuer: s.issuer.clone(),
        not_after: Some(s.not_after),
    }
}

fn rfc3339(unix_seconds: i64) -> String {
    crate::consent::rfc3339(unix_seconds)
}

enum State {
    Fine,
    Expiring,
    Expired,
}

impl State {
    fn as_str(&self) -> &'static str {
        match self {
            State::Fine => "ok",
            State::Expiring => "expiring",
            State::Expired => "expired",
        }
    }
}

fn describe(c: &CertInfo, now: OffsetDateTime, warn_days: i64) -> (String, State) {
    let what = match c.kind {
        CertKind::Certificate => "expires",
        CertKind::Crl => "next update due",
    };
    let Some(not_after) = c.not_after else {
        return (
            "no nextUpdate: the CRL never goes stale".to_owned(),
            State::Fine,
        );
    };
    let seconds = not_after - now.unix_timestamp();
    let days = seconds.div_euclid(86_400);
    let date = OffsetDateTime::from_unix_timestamp(not_after)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| not_after.to_string());
    if seconds < 0 {
        let stale = match c.kind {
            CertKind::Certificate => "EXPIRED",
            CertKind::Crl => "STALE: publish a new CRL",
        };
        (
            format!("{what} {date} ({} days ago)  {stale}", -days),
            State::Expired,
        )
    } else if days < warn_days {
        let act = match c.kind {
            CertKind::Certificate => "renew soon",
            CertKind::Crl => "publish a new CRL soon",
        };
        (
            format!("{what} {date} ({days} days)  WARNING: {act}"),
            State::Expiring,
        )
    } else {
        (format!("{what} {date} ({days} days)"), State::Fine)
    }
}

/// A human-readable summary of a valid snapshot, the certificate inventory included.
pub fn summary(snapshot: &Snapshot, now: OffsetDateTime, warn_days: i64) -> (String, Health) {
    let mut out = String::new();
    let g = &snapshot.gateway;
    let _ = writeln!(out, "{}: valid", snapshot.source.display());
    let _ = writeln!(
        out,
        "gateway {} listening on {} (admin {}), time zone {}",
        g.id, g.listen, g.admin_listen, g.timezone.name
    );
    let _ = writeln!(
        out,
        "\n{}, {}, {}, {}",
        count(snapshot.agencies.len(), "agency", "agencies"),
        count(snapshot.services.len(), "service", "services"),
        count(snapshot.operation_count(), "operation", "operations"),
        count(snapshot.agreements.len(), "agreement", "agreements"),
    );
    if snapshot.audit.is_none() {
        let _ = writeln!(
            out,
            "\nWARNING: no [audit] section: exchanges are not recorded. Fine for a test bench, not for a regency."
        );
    } else if snapshot.audit.as_ref().is_some_and(|a| a.signer.is_none()) {
        let _ = writeln!(
            out,
            "\nWARNING: [audit] has no signing_key: the log is chained but no tree head is signed, so no receipt can be issued."
        );
    }
    let _ = writeln!(out, "\nagencies:");
    for a in &snapshot.agencies {
        let _ = writeln!(
            out,
            "  {:<16} {:<32} clearance {:<15} identities: {}{}",
            a.code,
            a.name,
            a.clearance.as_str(),
            if a.identities.is_empty() {
                "(none: cannot call)".to_owned()
            } else {
                a.identities.join(", ")
            },
            if a.pins.is_empty() {
                String::new()
            } else {
                format!(" ({} pinned)", a.pins.len())
            }
        );
    }
    let _ = writeln!(out, "\nservices:");
    for s in &snapshot.services {
        let _ = writeln!(
            out,
            "  {} ({}, owner {}) at {} → {} upstream(s), timeout {:?}",
            s.id,
            s.classification.as_str(),
            snapshot.agencies[s.owner].code,
            s.prefix,
            s.upstreams.len(),
            s.timeout
        );
        for o in &s.operations {
            let _ = writeln!(
                out,
                "    {:<7} {}{:<40} {}",
                o.method.as_str(),
                s.prefix,
                o.path,
                o.id
            );
        }
    }
    let _ = writeln!(out, "\nagreements:");
    for a in &snapshot.agreements {
        let service = &snapshot.services[a.service];
        let _ = writeln!(
            out,
            "  {:<16} {} → {} ({}), {} to {}{}: {}",
            a.id,
            snapshot.agencies[a.consumer].code,
            service.id,
            match &a.operations {
                None => "all operations".to_owned(),
                Some(ops) => ops
                    .iter()
                    .map(|&i| service.operations[i].id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            a.valid_from,
            a.valid_until,
            a.rate
                .map_or(String::new(), |r| format!(", {} per {:?}", r.count, r.per)),
            a.purpose
        );
    }
    let (certs, health) = certificates(snapshot, now, warn_days);
    let _ = write!(out, "\n{certs}");
    (out, health)
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The certificate inventory as JSON (the admin API's `/v1/certificates`): each certificate and
/// CRL with what uses it, when it stops being usable, the days left and its state.
pub fn certificates_json(
    snapshot: &Snapshot,
    now: OffsetDateTime,
    warn_days: i64,
) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = snapshot
        .certificates
        .iter()
        .map(|c| {
            let (_, state) = describe(c, now, warn_days);
            let days = c
                .not_after
                .map(|t| (t - now.unix_timestamp()).div_euclid(86_400));
            serde_json::json!({
                "used_as": c.used_as,
                "kind": match c.kind { CertKind::Certificate => "certificate", CertKind::Crl => "crl" },
                "file": c.file,
                "subject": c.subject,
                "issuer": c.issuer,
                "not_after": c.not_after.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()).map(|t| t.date().to_string()),
                "days_left": days,
                "state": state.as_str(),
            })
        })
        .collect();
    serde_json::json!({ "warn_days": warn_days, "certificates": entries })
}

/// Everything the configuration publishes, for operators (the admin API's `/v1/catalog`):
/// every service and operation, every agency and peer, every agreement and whether it is in
/// force `today`.
pub fn catalog_json(
    snapshot: &Snapshot,
    today: crate::config::Date,
    suspensions: &[crate::suspension::Suspension],
) -> serde_json::Value {
    let services: Vec<serde_json::Value> = snapshot
        .services
        .iter()
        .map(|svc| {
            serde_json::json!({
                "id": svc.id,
                "owner": snapshot.agencies[svc.owner].code,
                "classification": svc.classification.as_str(),
                "protocol": match svc.protocol { crate::config::Protocol::Http => "http", crate::config::Protocol::Grpc => "grpc" },
                "prefix": svc.prefix,
                "operations": svc.operations.iter().map(|op| serde_json::json!({
                    "id": op.id,
                    "method": op.method.as_str(),
                    "path": format!("{}{}", svc.prefix, op.path),
                    "cache_ttl_seconds": op.cache_ttl.map(|t| t.as_secs()),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let consumers: Vec<serde_json::Value> = snapshot
        .agencies
        .iter()
        .map(|a| serde_json::json!({
            "code": a.code, "name": a.name, "kind": a.party.as_str(), "clearance": a.clearance.as_str(),
            "clearance_basis": a.clearance_basis,
        }))
        .collect();
    let agreements: Vec<serde_json::Value> = snapshot
        .agreements
        .iter()
        .map(|a| {
            let service = &snapshot.services[a.service];
            serde_json::json!({
                "id": a.id,
                "consumer": snapshot.agencies[a.consumer].code,
                "service": service.id,
                "operations": a.operations.as_ref().map(|ops| ops.iter().map(|&j| service.operations[j].id.clone()).collect::<Vec<_>>()),
                "purpose": a.purpose,
                "valid_from": a.valid_from.to_string(),
                "valid_until": a.valid_until.to_string(),
                "in_force": a.valid_from <= today && today <= a.valid_until,
                "rate": a.rate.map(|r| format!("{}/{}s", r.count, r.per.as_secs())),
                "basis": a.basis.as_str(),
                "document_sha256": a.document_sha256,
                "owner_signature": a.owner_signature.as_ref().map(signed_json),
                "consumer_signature": a.consumer_signature.as_ref().map(signed_json),
            })
        })
        .collect();
    serde_json::json!({
        "gateway": snapshot.gateway.id,
        "sha256": snapshot.digest,
        "services": services,
        "consumers": consumers,
        "agreements": agreements,
        "suspensions": suspensions,
    })
}

fn signed_json(signed: &crate::config::SignedBy) -> serde_json::Value {
    serde_json::json!({
        "subject": signed.subject,
        "fingerprint": signed.fingerprint,
        "signed_at": signed.signed_at,
    })
}
