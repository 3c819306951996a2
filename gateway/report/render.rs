//! The report written out: Markdown for the review document, CSV, JSON.

use std::fmt::Write as _;

use serde_json::json;

use super::{Act, Report, ORDER};

// === impl Report ===

impl Report {
    /// Markdown, for the review document.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# SPL review: {}\n", self.title());
        let _ = writeln!(out, "Exchanges in the window: {}.\n", self.exchanges);
        let _ = writeln!(out, "## Services\n");
        let _ = writeln!(
            out,
            "| service | answered | failed | refused | availability | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|---|---|---|"
        );
        for (service, f) in &self.services {
            let _ = writeln!(
                out,
                "| {service} | {} | {} | {} | {} | {} | {} | {} |",
                f.answered,
                f.failed,
                f.refused,
                f.availability()
                    .map_or("—".into(), |a| format!("{:.2}%", a * 100.0)),
                ms(f.percentile(0.50)),
                ms(f.percentile(0.95)),
                ms(f.percentile(0.99)),
            );
        }
        let _ = writeln!(out, "\n## Exchanges by consumer, service and outcome\n");
        let _ = writeln!(
            out,
            "| consumer | service | outcome | exchanges |\n|---|---|---|---|"
        );
        for ((consumer, service, outcome), n) in &self.by_outcome {
            let _ = writeln!(out, "| {consumer} | {service} | {outcome} | {n} |");
        }
        let _ = writeln!(out, "\n## Refusals and failures by reason\n");
        let _ = writeln!(out, "| reason | exchanges |\n|---|---|");
        for (reason, n) in &self.refusals {
            let _ = writeln!(out, "| {reason} | {n} |");
        }
        self.markdown_agreements(&mut out);
        self.markdown_acts(&mut out);
        self.markdown_governance(&mut out);
        out
    }

    /// Suspensions on their own, then every administrative act (Perbup Maluku Tengah 50/2020
    /// Ps 14: who cut off whom, when, and who changed the configuration).
    fn markdown_acts(&self, out: &mut String) {
        let row = |out: &mut String, a: &Act| {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                a.time,
                a.act,
                a.detail.replace('|', "\\|")
            );
        };
        let _ = writeln!(out, "\n## Suspensions\n");
        let suspensions: Vec<&Act> = self
            .acts
            .iter()
            .filter(|a| a.act == "suspend" || a.act == "resume")
            .collect();
        if suspensions.is_empty() {
            let _ = writeln!(out, "None in the window.");
        } else {
            let _ = writeln!(out, "| time (UTC) | act | detail |\n|---|---|---|");
            for a in suspensions {
                row(out, a);
            }
        }
        let _ = writeln!(out, "\n## Administrative acts\n");
        if self.acts.is_empty() {
            let _ = writeln!(out, "None in the window.");
            return;
        }
        let _ = writeln!(out, "| time (UTC) | act | detail |\n|---|---|---|");
        for a in &self.acts {
            row(out, a);
        }
    }

    /// Use per agreement and purpose, then the exchanges on the Bupati's order on their own
    /// (Perbup Maluku Tengah 50/2020 Ps 14(8)).
    fn markdown_agreements(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Use per agreement and purpose\n");
        let _ = writeln!(
            out,
            "| agreement | basis | consumer | service | purpose | exchanges | answered |\n|---|---|---|---|---|---|---|"
        );
        for ((agreement, basis, consumer, service, purpose), used) in &self.agreements {
            let _ = writeln!(
                out,
                "| {agreement} | {basis} | {consumer} | {service} | {} | {} | {} |",
                purpose.replace('|', "\\|"),
                used.exchanges,
                used.answered
            );
        }
        let _ = writeln!(
            out,
            "\n## Exchanges on the Bupati's order (perintah_bupati)\n"
        );
        let ordered: Vec<_> = self
            .agreements
            .iter()
            .filter(|((_, basis, ..), _)| basis == ORDER)
            .collect();
        if ordered.is_empty() {
            let _ = writeln!(out, "None in the window.");
            return;
        }
        let _ = writeln!(
            out,
            "| agreement | consumer | service | exchanges | answered |\n|---|---|---|---|---|"
        );
        for ((agreement, _, consumer, service, _), used) in ordered {
            let _ = writeln!(
                out,
                "| {agreement} | {consumer} | {service} | {} | {} |",
                used.exchanges, used.answered
            );
        }
    }

    /// CSV: one table, `section` naming which.
    pub fn csv(&self) -> String {
        let mut out = String::from("section,consumer,service,outcome,count,answered,failed,refused,availability,p50_ms,p95_ms,p99_ms\n");
        for (service, f) in &self.services {
            let _ = writeln!(
                out,
                "service,,{},,,{},{},{},{},{},{},{}",
                csv_field(service),
                f.answered,
                f.failed,
                f.refused,
                f.availability()
                    .map_or(String::new(), |a| format!("{a:.4}")),
                ms(f.percentile(0.50)),
                ms(f.percentile(0.95)),
                ms(f.percentile(0.99)),
            );
        }
        for ((consumer, service, outcome), n) in &self.by_outcome {
            let _ = writeln!(
                out,
                "exchanges,{},{},{},{n},,,,,,,",
                csv_field(consumer),
                csv_field(service),
                csv_field(outcome)
            );
        }
        for (reason, n) in &self.refusals {
            let _ = writeln!(out, "refusals,,,{},{n},,,,,,,", csv_field(reason));
        }
        for a in &self.acts {
            // The act, its time and detail in `outcome`.
            let text = format!("{} {} {}", a.time, a.act, a.detail);
            let _ = writeln!(out, "act,,,{},,,,,,,,", csv_field(&text));
        }
        // A configuration change: the entry in `service`, the act, change and fields in
        // `outcome`.
        for c in &self.config_changes {
            let entry = format!("{} {}", super::governance::kind(&c.change), c.change.id);
            let text = format!(
                "{} {} {} {} {}",
                c.time,
                c.act,
                &c.sha256,
                super::governance::action(c.change.change),
                super::governance::fields(&c.change)
            );
            let _ = writeln!(
                out,
                "config-change,,{},{},,,,,,,,",
                csv_field(&entry),
                csv_field(text.trim_end())
            );
        }
        for a in self.unused_agreements() {
            let _ = writeln!(
                out,
                "agreement-unused,{},{},{},0,,,,,,,",
                csv_field(&a.consumer),
                csv_field(&a.service),
                csv_field(&a.id)
            );
        }
        // The days left in `count`.
        for (a, left) in self.ending_agreements() {
            let _ = writeln!(
                out,
                "agreement-ending,{},{},{},{left},,,,,,,",
                csv_field(&a.consumer),
                csv_field(&a.service),
                csv_field(&a.id)
            );
        }
        // The agreement and its basis in `outcome`, the answered ones in `answered`.
        for ((agreement, basis, consumer, service, _), used) in &self.agreements {
            let _ = writeln!(
                out,
                "agreement,{},{},{},{},{},,,,,,",
                csv_field(consumer),
                csv_field(service),
                csv_field(&format!("{agreement} ({basis})")),
                used.exchanges,
                used.answered
            );
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let mut doc = json!({
            "window": self.window.map(|w| json!({
                "since": w.since.to_string(),
                "until": w.until.to_string(),
                "timezone": w.zone.name,
            })),
            "exchanges": self.exchanges,
            "services": self.services.iter().map(|(id, f)| json!({
                "service": id,
                "answered": f.answered,
                "failed": f.failed,
                "refused": f.refused,
                "availability": f.availability(),
                "latency_ms": {
                    "p50": f.percentile(0.50).map(|u| u as f64 / 1000.0),
                    "p95": f.percentile(0.95).map(|u| u as f64 / 1000.0),
                    "p99": f.percentile(0.99).map(|u| u as f64 / 1000.0),
                },
            })).collect::<Vec<_>>(),
            "exchanges_by_outcome": self.by_outcome.iter().map(|((c, s, o), n)| json!({
                "consumer": c, "service": s, "outcome": o, "exchanges": n,
            })).collect::<Vec<_>>(),
            "refusals": self.refusals,
            "agreements": self.agreements.iter().map(|((a, b, c, s, p), used)| json!({
                "agreement": a, "basis": b, "consumer": c, "service": s, "purpose": p,
                "exchanges": used.exchanges, "answered": used.answered,
            })).collect::<Vec<_>>(),
            "acts": self.acts.iter().map(|a| json!({
                "time": a.time, "act": a.act, "detail": a.detail,
            })).collect::<Vec<_>>(),
        });
        if let (Some(doc), serde_json::Value::Object(more)) =
            (doc.as_object_mut(), self.json_governance())
        {
            doc.extend(more);
        }
        doc
    }

    fn title(&self) -> String {
        self.window.map_or_else(String::new, |w| {
            format!("{} to {} ({})", w.since, w.until, w.zone.name)
        })
    }
}

fn ms(us: Option<u64>) -> String {
    us.map_or_else(|| "—".into(), |u| format!("{:.2}", u as f64 / 1000.0))
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}
