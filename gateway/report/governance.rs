//! What the report tells an inspector about governance beyond the exchanges: the changes of
//! configuration in the window (from the `start` and `reload` records), and from the
//! configuration in force at the window's end (archived under `<data_dir>/config/`) the
//! agreements never used and those about to end (Perbup Maluku Tengah 50/2020 Ps 14).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;

use super::{parse_date, Report};
use crate::audit::Record;
use crate::changes::{Action, Archive, Change};
use crate::clock::midnight_millis;
use crate::config::{Date, TimeZone};

/// One entry a `start` or `reload` record says changed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigChange {
    pub time: String,
    pub act: String,
    /// The configuration applied.
    pub sha256: String,
    pub change: Change,
}

/// What is known of the configuration in force at the window's end.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum InForce {
    /// No `start` or `reload` record up to the end names one.
    #[default]
    Unknown,
    /// Named, but not archived beside the log (`<data_dir>/config/`), or altered there.
    NotArchived { sha256: String, why: String },
    Archived {
        sha256: String,
        agreements: Vec<AgreementTerms>,
        clearances: Vec<Clearance>,
    },
}

/// An agency's or peer's clearance in the configuration in force, and the decision that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clearance {
    pub party: String,
    /// As written; `terbuka` when not set.
    pub clearance: String,
    pub basis: Option<String>,
}

/// An agreement of the configuration in force, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreementTerms {
    pub id: String,
    pub consumer: String,
    pub service: String,
    pub valid_from: Option<Date>,
    pub valid_until: Option<Date>,
}

/// An agreement ends within this many days of the window's last day: the two horizons.
const SOON: i64 = 30;
const LATER: i64 = 60;

/// Keeps what a `start` or `reload` record says: its changes if it falls in the window, and
/// the configuration it applied if it is the latest up to the window's end.
pub(super) fn note(report: &mut Report, record: &Record, in_window: bool) {
    let Some(sha256) = &record.config_sha256 else {
        return;
    };
    report.in_force_sha256 = Some(sha256.clone());
    if !in_window {
        return;
    }
    for change in record.changes.iter().flatten() {
        report.config_changes.push(ConfigChange {
            time: record.time.clone(),
            act: record.outcome.clone(),
            sha256: sha256.clone(),
            change: change.clone(),
        });
    }
}

/// Reads the configuration in force at the end from the archive beside the log (`dir` is
/// `<data_dir>/audit`).
pub(super) fn in_force(dir: &Path, sha256: Option<&str>) -> InForce {
    let Some(sha256) = sha256 else {
        return InForce::Unknown;
    };
    let data_dir = dir.parent().unwrap_or(Path::new("."));
    let not_archived = |why: String| InForce::NotArchived {
        sha256: sha256.to_owned(),
        why,
    };
    match Archive::under(data_dir).read(sha256) {
        Ok((_, text)) => match text.parse::<toml::Table>() {
            Ok(table) => InForce::Archived {
                sha256: sha256.to_owned(),
                agreements: agreements_in(&table),
                clearances: clearances_in(&table),
            },
            Err(e) => not_archived(e.to_string()),
        },
        Err(e) => not_archived(e.to_string()),
    }
}

/// The clearances of the agencies and peers of a configuration.
fn clearances_in(table: &toml::Table) -> Vec<Clearance> {
    let text =
        |v: &toml::Value, key: &str| v.get(key).and_then(toml::Value::as_str).map(str::to_owned);
    [("agencies", "code"), ("peers", "id")]
        .into_iter()
        .flat_map(|(list, key)| {
            let entries = table.get(list).and_then(toml::Value::as_array);
            entries.into_iter().flatten().map(move |e| Clearance {
                party: text(e, key).unwrap_or_default(),
                clearance: text(e, "clearance").unwrap_or_else(|| "terbuka".to_owned()),
                basis: text(e, "clearance_basis"),
            })
        })
        .collect()
}

/// The agreements of a configuration.
fn agreements_in(table: &toml::Table) -> Vec<AgreementTerms> {
    let date = |v: Option<&toml::Value>| {
        let text = match v? {
            toml::Value::Datetime(d) => d.to_string(),
            toml::Value::String(s) => s.clone(),
            _ => return None,
        };
        parse_date(&text).ok()
    };
    let text = |v: Option<&toml::Value>| v.and_then(toml::Value::as_str).unwrap_or("").to_owned();
    let list = table.get("agreements").and_then(toml::Value::as_array);
    list.into_iter()
        .flatten()
        .map(|a| AgreementTerms {
            id: text(a.get("id")),
            consumer: text(a.get("consumer")),
            service: text(a.get("service")),
            valid_from: date(a.get("valid_from")),
            valid_until: date(a.get("valid_until")),
        })
        .collect()
}

/// Days from `a` to `b`.
fn days(a: Date, b: Date) -> i64 {
    let utc = TimeZone::parse("UTC").unwrap_or(TimeZone::JAKARTA);
    (midnight_millis(b, utc) - midnight_millis(a, utc)).div_euclid(86_400_000)
}

// === impl Report ===

impl Report {
    /// The agreements of the configuration in force that were in force for some of the window
    /// and carried no exchange in it.
    pub fn unused_agreements(&self) -> Vec<&AgreementTerms> {
        let (InForce::Archived { agreements, .. }, Some(w)) = (&self.in_force, self.window) else {
            return Vec::new();
        };
        let used: BTreeSet<&str> = self.agreements.keys().map(|k| k.0.as_str()).collect();
        agreements
            .iter()
            .filter(|a| a.valid_from.is_none_or(|from| from <= w.until))
            .filter(|a| a.valid_until.is_none_or(|until| until >= w.since))
            .filter(|a| !used.contains(a.id.as_str()))
            .collect()
    }

    /// The agreements that end within 60 days after the window's last day, with the days
    /// left, soonest first.
    pub fn ending_agreements(&self) -> Vec<(&AgreementTerms, i64)> {
        let (InForce::Archived { agreements, .. }, Some(w)) = (&self.in_force, self.window) else {
            return Vec::new();
        };
        let mut out: Vec<(&AgreementTerms, i64)> = agreements
            .iter()
            .filter_map(|a| Some((a, days(w.until, a.valid_until?))))
            .filter(|(_, left)| (0..=LATER).contains(left))
            .collect();
        out.sort_by_key(|(a, left)| (*left, a.id.clone()));
        out
    }

    /// The Markdown sections: configuration changes, then the agreements' lifecycle.
    pub(super) fn markdown_governance(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Configuration changes\n");
        if self.config_changes.is_empty() {
            let _ = writeln!(out, "None in the window.");
        } else {
            let _ = writeln!(
                out,
                "| time (UTC) | act | configuration | entry | change | fields |\n|---|---|---|---|---|---|"
            );
            for c in &self.config_changes {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} `{}` | {} | {} |",
                    c.time,
                    c.act,
                    &c.sha256[..c.sha256.len().min(12)],
                    kind(&c.change),
                    c.change.id,
                    action(c.change.change),
                    fields(&c.change).replace('|', "\\|"),
                );
            }
        }
        let missing = match &self.in_force {
            InForce::Archived { .. } => None,
            InForce::Unknown => Some("no start or reload record up to the window's end names a configuration".to_owned()),
            InForce::NotArchived { sha256, why } => Some(format!(
                "the configuration in force at the window's end (sha256:{sha256}) cannot be read: {why}"
            )),
        };
        let _ = writeln!(out, "\n## Clearances and their basis\n");
        match &self.in_force {
            InForce::Archived { clearances, .. } => {
                let _ = writeln!(out, "| agency or peer | clearance | basis |\n|---|---|---|");
                for c in clearances {
                    let basis = c.basis.as_deref().unwrap_or("—").replace('|', "\\|");
                    let _ = writeln!(out, "| {} | {} | {basis} |", c.party, c.clearance);
                }
            }
            _ => {
                let _ = writeln!(out, "Not known: {}.", missing.as_deref().unwrap_or(""));
            }
        }
        let _ = writeln!(out, "\n## Agreements never used in the window\n");
        if let Some(missing) = &missing {
            let _ = writeln!(out, "Not known: {missing}.");
        } else if self.unused_agreements().is_empty() {
            let _ = writeln!(out, "None: every agreement in force was used.");
        } else {
            let _ = writeln!(
                out,
                "| agreement | consumer | service | valid until |\n|---|---|---|---|"
            );
            for a in self.unused_agreements() {
                let until = a.valid_until.map_or("—".into(), |d| d.to_string());
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {until} |",
                    a.id, a.consumer, a.service
                );
            }
        }
        let ending = self.ending_agreements();
        for (title, range) in [
            (format!("within {SOON} days"), 0..=SOON),
            (
                format!("within {} to {LATER} days", SOON + 1),
                SOON + 1..=LATER,
            ),
        ] {
            let _ = writeln!(out, "\n## Agreements ending {title}\n");
            let these: Vec<_> = ending.iter().filter(|(_, d)| range.contains(d)).collect();
            if let Some(missing) = &missing {
                let _ = writeln!(out, "Not known: {missing}.");
                continue;
            }
            if these.is_empty() {
                let _ = writeln!(out, "None.");
                continue;
            }
            let _ = writeln!(
                out,
                "| agreement | consumer | service | valid until | days left |\n|---|---|---|---|---|"
            );
            for (a, left) in these {
                let until = a.valid_until.map_or("—".into(), |d| d.to_string());
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {until} | {left} |",
                    a.id, a.consumer, a.service
                );
            }
        }
    }

    /// The JSON members.
    pub(super) fn json_governance(&self) -> serde_json::Value {
        let terms = |a: &AgreementTerms| {
            json!({
                "agreement": a.id, "consumer": a.consumer, "service": a.service,
                "valid_until": a.valid_until.map(|d| d.to_string()),
            })
        };
        json!({
            "configuration_changes": self.config_changes.iter().map(|c| json!({
                "time": c.time, "act": c.act, "sha256": c.sha256, "change": c.change,
            })).collect::<Vec<_>>(),
            "configuration_in_force": match &self.in_force {
                InForce::Unknown => serde_json::Value::Null,
                InForce::NotArchived { sha256, why } => json!({"sha256": sha256, "archived": false, "why": why}),
                InForce::Archived { sha256, clearances, .. } => json!({
                    "sha256": sha256,
                    "archived": true,
                    "clearances": clearances.iter().map(|c| json!({
                        "party": c.party, "clearance": c.clearance, "basis": c.basis,
                    })).collect::<Vec<_>>(),
                }),
            },
            "agreements_unused": self.unused_agreements().into_iter().map(terms).collect::<Vec<_>>(),
            "agreements_ending": self.ending_agreements().into_iter().map(|(a, left)| {
                let mut doc = terms(a);
                doc["days_left"] = json!(left);
                doc
            }).collect::<Vec<_>>(),
        })
    }
}

pub(super) fn kind(change: &Change) -> &'static str {
    use crate::changes::Kind;
    match change.kind {
        Kind::Section => "section",
        Kind::Agency => "agency",
        Kind::Peer => "peer",
        Kind::Service => "service",
        Kind::Operation => "operation",
        Kind::Agreement => "agreement",
    }
}

pub(super) fn action(action: Action) -> &'static str {
    match action {
        Action::Added => "added",
        Action::Removed => "removed",
        Action::Changed => "changed",
    }
}

/// `field: old → new; ...`, values as JSON (`—`: not set).
pub(super) fn fields(change: &Change) -> String {
    let value = |v: &Option<serde_json::Value>| v.as_ref().map_or("—".into(), |v| v.to_string());
    change
        .fields
        .iter()
        .map(|f| format!("{}: {} → {}", f.field, value(&f.old), value(&f.new)))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_dates_are_read_as_toml_dates_or_strings() {
        let table = "[[agreements]]\nid = \"A\"\nconsumer = \"c\"\nservice = \"s\"\nvalid_until = 2027-01-31\n\
             [[agreements]]\nid = \"B\"\nvalid_from = \"2026-01-01\"\n"
            .parse()
            .unwrap();
        let found = agreements_in(&table);
        assert_eq!(found[0].valid_until, parse_date("2027-01-31").ok());
        assert_eq!(found[1].valid_from, parse_date("2026-01-01").ok());
        assert_eq!(found[1].valid_until, None);
        let (a, b) = (
            parse_date("2026-12-31").unwrap(),
            parse_date("2027-03-01").unwrap(),
        );
        assert_eq!(days(a, b), 60);
        assert_eq!(days(b, a), -60);
    }
}
