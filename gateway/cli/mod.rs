//! The subcommands of `penghubung` that are more than a call: serving, the audit tools, and
//! the configuration's reports.

pub mod admin;
pub mod agreement;
pub mod audit;
pub mod serve;

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use penghubung::{config, inventory, report};

/// `report`.
pub fn report_command(
    audit: &Path,
    since: &str,
    until: &str,
    format: &str,
    timezone: &str,
) -> anyhow::Result<ExitCode> {
    let window = (|| {
        let zone = config::TimeZone::parse(timezone)
            .ok_or_else(|| format!("--timezone: `{timezone}` is not a supported time zone"))?;
        let since = report::parse_date(since).map_err(|e| format!("--since: {e}"))?;
        let until = report::parse_date(until).map_err(|e| format!("--until: {e}"))?;
        if until < since {
            return Err("--until is before --since".to_owned());
        }
        if !["md", "csv", "json"].contains(&format) {
            return Err(format!("--format: `{format}`; use md, csv or json"));
        }
        Ok(report::Window { since, until, zone })
    })();
    let built = window.and_then(|w| report::build(audit, w));
    match built {
        Ok(r) => {
            match format {
                "csv" => print!("{}", r.csv()),
                "json" => println!("{}", serde_json::to_string_pretty(&r.json())?),
                _ => print!("{}", r.markdown()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("penghubung report: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `openapi`.
pub fn openapi(config: &Path, service: &str) -> anyhow::Result<ExitCode> {
    let Some(snapshot) = load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let Some(index) = snapshot.services.iter().position(|s| s.id == service) else {
        let known: Vec<&str> = snapshot.services.iter().map(|s| s.id.as_str()).collect();
        eprintln!(
            "penghubung: no service `{service}` in {} (known: {})",
            config.display(),
            known.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    };
    let mut stdout = std::io::stdout();
    stdout.write_all(&snapshot.openapi[index])?;
    stdout.write_all(b"\n")?;
    Ok(ExitCode::SUCCESS)
}

/// `check` and `certs`: print what `summarize` makes of the configuration.
pub fn inventory(
    config: &Path,
    summarize: impl Fn(&config::Snapshot) -> (String, inventory::Health),
) -> anyhow::Result<ExitCode> {
    let Some(snapshot) = load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let (text, health) = summarize(&snapshot);
    print!("{text}");
    Ok(exit_for(health))
}

/// Expired certificates fail the command; expiring ones only warn.
fn exit_for(health: inventory::Health) -> ExitCode {
    if health.expired > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Loads a configuration, printing every error; `None` when it is not valid.
pub fn load(path: &Path) -> Option<config::Snapshot> {
    match config::load(path) {
        Ok(snapshot) => {
            for w in &snapshot.warnings {
                eprintln!("warning: {}: {}: {}", path.display(), w.path, w.message);
            }
            Some(snapshot)
        }
        Err(errors) => {
            eprintln!("{errors}");
            None
        }
    }
}
