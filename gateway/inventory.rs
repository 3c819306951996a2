//! The summary `penghubung check` prints: what the configuration publishes to whom, and every
//! certificate it depends on with its expiry.

use std::fmt::Write as _;

use time::OffsetDateTime;

use crate::config::Snapshot;

/// Certificates expiring within this many days are flagged.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// A human-readable summary of a valid snapshot.
pub fn summary(snapshot: &Snapshot, now: OffsetDateTime) -> String {
    let mut out = String::new();
    let g = &snapshot.gateway;
    // Writing to a String cannot fail; results are ignored below for that reason.
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
    let _ = writeln!(out, "\nagencies:");
    for a in &snapshot.agencies {
        let _ = writeln!(
            out,
            "  {:<16} {:<32} clearance {:<15} identities: {}",
            a.code,
            a.name,
            a.clearance.as_str(),
            if a.identities.is_empty() {
                "(none: cannot call)".to_owned()
            } else {
                a.identities.join(", ")
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
            "  {:<16} {} → {} ({}), {} to {}: {}",
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
            a.purpose
        );
    }
    let _ = writeln!(out, "\ncertificates:");
    for c in &snapshot.certificates {
        let days = (c.not_after - now.unix_timestamp()).div_euclid(86_400);
        let expiry = OffsetDateTime::from_unix_timestamp(c.not_after)
            .map(|t| t.date().to_string())
            .unwrap_or_else(|_| c.not_after.to_string());
        let flag = if days < 0 {
            "  EXPIRED"
        } else if days < EXPIRY_WARNING_DAYS {
            "  WARNING: expires soon"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {:<28} {}\n  {:<28} expires {expiry} ({days} days){flag}  [{}]",
            c.used_as, c.subject, "", c.file
        );
    }
    out
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
