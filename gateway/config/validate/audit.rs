//! `[audit]` and `[cache]`: parsed and checked here, enforced by the audit writer and the
//! cache.

use std::path::PathBuf;

use super::parse::opt;
use super::*;

pub(super) fn audit_settings(
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
        v.unwrap_or(super::super::units::Rate {
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
