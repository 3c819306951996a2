//! `penghubung report`: the periodic SPL review the regulations ask for (Perbup Parigi Moutong
//! 52/2024 Ps. 22 (6)-(7)), computed from the audit log — not from metrics, so it covers every
//! exchange, survives restarts, and is as trustworthy as the log (whose chain is verified while
//! it is read: a broken log gives no report).
//!
//! For a window of whole days in a time zone: exchanges per consumer × service × outcome,
//! refusals by reason, and per service the latency percentiles of the exchanges it answered and
//! its availability — answered ÷ (answered + failed on the gateway's or upstream's side), where
//! an upstream 5xx, an upstream failure (`upstream-*`) and `audit-unavailable` count as failed
//! and a caller's refusal (4xx policy and validation answers) counts as neither.

use std::collections::BTreeMap;
use std::path::Path;

use crate::audit::{self, Record};
use crate::clock::midnight_millis;
use crate::config::{Date, TimeZone};
use crate::outcome::{Kind, Outcome};

mod governance;
mod render;

pub use governance::{AgreementTerms, Clearance, ConfigChange, InForce};

/// What the report covers: `[since, until]`, whole days in `zone`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub since: Date,
    pub until: Date,
    pub zone: TimeZone,
}

#[derive(Debug, Default)]
pub struct Report {
    pub window: Option<Window>,
    pub exchanges: u64,
    /// (consumer, service, outcome) → exchanges.
    pub by_outcome: BTreeMap<(String, String, String), u64>,
    /// Refusal reason (problem slug) → exchanges.
    pub refusals: BTreeMap<String, u64>,
    pub services: BTreeMap<String, ServiceFigures>,
    /// Use per agreement, and the purpose and legal basis it was used under.
    pub agreements: BTreeMap<AgreementKey, AgreementUse>,
    /// Administrative records in the window, in order: starts, reloads, purges, suspensions.
    pub acts: Vec<Act>,
    /// What the `start` and `reload` records in the window say changed.
    pub config_changes: Vec<ConfigChange>,
    /// The configuration in force at the window's end, as archived.
    pub in_force: InForce,
    /// Its SHA-256, while the log is read.
    in_force_sha256: Option<String>,
}

/// An administrative act, as its record says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Act {
    pub time: String,
    /// `start`, `reload`, `cache-purge`, `suspend`, `resume`, `recovered`.
    pub act: String,
    pub detail: String,
}

/// (agreement, basis, consumer, service, purpose): what an inspector asks an exchange was for.
pub type AgreementKey = (String, String, String, String, String);

#[derive(Debug, Default, Clone, Copy)]
pub struct AgreementUse {
    pub exchanges: u64,
    /// Exchanges the owner's service answered (forwarded or served from the cache).
    pub answered: u64,
}

/// The basis of exchanges on the Bupati's order rather than the owner's consent.
pub(crate) const ORDER: &str = "perintah_bupati";

#[derive(Debug, Default)]
pub struct ServiceFigures {
    pub answered: u64,
    pub failed: u64,
    pub refused: u64,
    latencies_us: Vec<u64>,
}

// === impl Window ===

impl Window {
    /// Milliseconds since the epoch: from the first day's midnight, to the day after the last.
    fn range(&self) -> (i64, i64) {
        let end = midnight_millis(self.until, self.zone) + 86_400_000;
        (midnight_millis(self.since, self.zone), end)
    }
}

/// `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<Date, String> {
    let bad = || format!("`{text}` is not a date (YYYY-MM-DD)");
    let mut parts = text.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (year, month, day) = (
        y.parse::<u16>().map_err(|_| bad())?,
        m.parse::<u8>().map_err(|_| bad())?,
        d.parse::<u8>().map_err(|_| bad())?,
    );
    if y.len() != 4 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    Ok(Date { year, month, day })
}

/// The report of the exchanges in `dir` (`<data_dir>/audit`) within `window`.
pub fn build(dir: &Path, window: Window) -> Result<Report, String> {
    let (from, to) = window.range();
    let mut report = Report {
        window: Some(window),
        ..Report::default()
    };
    audit::walk(dir, |record, _| {
        if record.kind != "exchange" && record.kind != "admin" {
            return Ok(());
        }
        let at = millis(&record.time).ok_or_else(|| format!("bad time `{}`", record.time))?;
        if record.kind == "admin" && at < to {
            governance::note(&mut report, record, at >= from);
        }
        if !(from..to).contains(&at) {
            return Ok(());
        }
        match record.kind.as_str() {
            "admin" => report.acts.push(Act {
                time: record.time.clone(),
                act: record.outcome.clone(),
                detail: record.detail.clone().unwrap_or_default(),
            }),
            _ => report.add(record),
        }
        Ok(())
    })
    .map_err(|e| format!("the audit log does not verify, so no report: {e}"))?;
    report.in_force = governance::in_force(dir, report.in_force_sha256.as_deref());
    for figures in report.services.values_mut() {
        figures.latencies_us.sort_unstable();
    }
    Ok(report)
}

// === impl Report ===

impl Report {
    fn add(&mut self, r: &Record) {
        self.exchanges += 1;
        let consumer = consumer_of(r);
        let service = r.service.clone().unwrap_or_else(|| "(no service)".into());
        *self
            .by_outcome
            .entry((consumer, service.clone(), r.outcome.clone()))
            .or_default() += 1;
        let outcome = Outcome::parse(&r.outcome);
        // An outcome this gateway does not know counts as a refusal, as it did when written.
        let kind = outcome.map_or(Kind::Refused, |o| o.kind(r.status, r.grpc_status));
        if !outcome.is_some_and(Outcome::answered) {
            *self.refusals.entry(r.outcome.clone()).or_default() += 1;
        }
        if let Some(agreement) = &r.agreement {
            let key = (
                agreement.clone(),
                // Records written before the basis was recorded rest on the parties' agreement.
                r.basis.clone().unwrap_or_else(|| "kesepakatan".into()),
                consumer_of(r),
                service.clone(),
                r.purpose.clone().unwrap_or_default(),
            );
            let used = self.agreements.entry(key).or_default();
            used.exchanges += 1;
            used.answered += u64::from(outcome.is_some_and(Outcome::answered));
        }
        if r.service.is_none() {
            return;
        }
        let figures = self.services.entry(service).or_default();
        match kind {
            Kind::Answered => {
                figures.answered += 1;
                figures.latencies_us.extend(r.latency_us);
            }
            Kind::Failed => figures.failed += 1,
            Kind::Refused => figures.refused += 1,
        }
    }
}

// === impl ServiceFigures ===

impl ServiceFigures {
    pub fn availability(&self) -> Option<f64> {
        let total = self.answered + self.failed;
        (total > 0).then(|| self.answered as f64 / total as f64)
    }

    /// The nearest-rank percentile of the answered exchanges' latency, in µs.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let rank = (p * self.latencies_us.len() as f64).ceil() as usize;
        Some(self.latencies_us[rank.clamp(1, self.latencies_us.len()) - 1])
    }
}

fn consumer_of(r: &Record) -> String {
    r.consumer
        .clone()
        .unwrap_or_else(|| "(unidentified)".into())
}

/// `2026-11-24T03:59:44.123Z` (the audit log's own format) → milliseconds since the epoch.
fn millis(time: &str) -> Option<i64> {
    let b = time.as_bytes();
    if b.len() != 24 || b[10] != b'T' || b[23] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| time.get(range)?.parse::<i64>().ok();
    let date = Date {
        year: u16::try_from(num(0..4)?).ok()?,
        month: u8::try_from(num(5..7)?).ok()?,
        day: u8::try_from(num(8..10)?).ok()?,
    };
    let utc = TimeZone::parse("UTC")?;
    Some(
        midnight_millis(date, utc)
            + num(11..13)? * 3_600_000
            + num(14..16)? * 60_000
            + num(17..19)? * 1000
            + num(20..23)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_times_parse() {
        assert_eq!(millis("1970-01-01T00:00:01.002Z"), Some(1002));
        assert_eq!(
            millis(&audit::timestamp(1_735_689_600_123)),
            Some(1_735_689_600_123)
        );
        assert_eq!(millis("2026-11-24 03:59:44Z"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let f = ServiceFigures {
            answered: 4,
            latencies_us: vec![10, 20, 30, 40],
            ..ServiceFigures::default()
        };
        assert_eq!(f.percentile(0.5), Some(20));
        assert_eq!(f.percentile(0.99), Some(40));
        assert_eq!(f.percentile(0.01), Some(10));
        assert_eq!(ServiceFigures::default().percentile(0.5), None);
    }

    #[test]
    fn dates_parse_strictly() {
        assert_eq!(
            parse_date("2026-11-01"),
            Ok(Date {
                year: 2026,
                month: 11,
                day: 1
            })
        );
        for bad in ["2026-13-01", "26-11-01", "2026/11/01", "2026-11-01-x", ""] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }
}
