//! `penghubung audit`: verify the log, receipts and consistency proofs; print, find and prove
//! records.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::io::Write as _;

use anyhow::Context;
use clap::Subcommand;
use penghubung::audit;

use super::load;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check every segment in DIR (`<data_dir>/audit`): segments numbered without a gap, the
    /// hash chain, known record kinds, every tree head's size and root, and its signature with
    /// --pubkey. Lists every problem with its segment and line, and exits 1 if there is one.
    Verify {
        dir: PathBuf,
        /// The gateway's audit public key, in a file: `ed25519:<hex>` as `audit pubkey` prints
        /// it, or a PEM public key as `openssl pkey -pubout` writes it.
        #[arg(long, required_unless_present = "no_signatures")]
        pubkey: Option<PathBuf>,
        /// Check the chain and the tree without checking signatures (anyone could have made
        /// such a log): only with this is --pubkey not required.
        #[arg(long, conflicts_with = "pubkey")]
        no_signatures: bool,
    },
    /// Print the receipt of an exchange: its record, the inclusion proof and the signed tree
    /// head that covers it, as one JSON document.
    Receipt { dir: PathBuf, exchange_id: String },
    /// Verify a receipt offline against the gateway's public key.
    VerifyReceipt {
        file: PathBuf,
        #[arg(long)]
        pubkey: PathBuf,
    },
    /// Say whether bodies are the ones a receipt's record commits to, given the exchange's
    /// SPL-Commitment-Nonce (which only the consumer and the owner's service received).
    /// Exits 0 when every file given is, 1 when one is not.
    Prove {
        /// A receipt, as `audit receipt` writes it (or the `json` field of Audit.GetReceipt).
        receipt: PathBuf,
        /// The SPL-Commitment-Nonce of the exchange (base64url; one in 64 starts with `-`).
        #[arg(long, allow_hyphen_values = true)]
        nonce: String,
        /// The request body as sent (gRPC: the messages' bytes, concatenated).
        #[arg(long)]
        request: Option<PathBuf>,
        /// The response body as received (gRPC: the messages' bytes, concatenated).
        #[arg(long)]
        response: Option<PathBuf>,
        /// Also verify the receipt against the gateway's public key.
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
    /// Print the record of an exchange.
    Show { dir: PathBuf, exchange_id: String },
    /// Print the last records; with --follow, go on printing each record as it is written,
    /// across segments (the segment being written is pre-allocated with zeros, which `tail -f`
    /// would print).
    Tail {
        dir: PathBuf,
        #[arg(short, default_value_t = 20)]
        n: usize,
        /// Keep printing records as they are written, until interrupted.
        #[arg(long, short)]
        follow: bool,
    },
    /// Find exchanges, e.g. who looked up a NIK: `--param nik=7208...` (needs the redaction key,
    /// read from the configuration), `--consumer`, `--service`.
    Find {
        #[arg(long, short, env = "PENGHUBUNG_CONFIG")]
        config: PathBuf,
        /// NAME=VALUE of a path or query parameter (hashed with every redaction key, or in
        /// clear where audit_clear names it).
        #[arg(long)]
        param: Option<String>,
        #[arg(long)]
        consumer: Option<String>,
        #[arg(long)]
        service: Option<String>,
    },
    /// Prove that the signed tree head of OLD records is a prefix of the one of NEW records:
    /// prints both signed tree heads and the proof, as one JSON document.
    Consistency { dir: PathBuf, old: u64, new: u64 },
    /// Verify a consistency proof (as `audit consistency` prints it) offline against the
    /// gateway's public key.
    VerifyConsistency {
        file: PathBuf,
        #[arg(long)]
        pubkey: PathBuf,
    },
    /// Print a configuration the gateway applied, as archived under `<data_dir>/config/` at
    /// its start or reload: by the SHA-256 the `start` and `reload` records name (or its first
    /// 8 or more hex digits), checked against it. Without SHA256, list the archived digests.
    Config {
        sha256: Option<String>,
        /// The gateway's data directory (`[gateway] data_dir`).
        #[arg(long, conflicts_with = "config")]
        data_dir: Option<PathBuf>,
        /// The configuration file whose `[gateway] data_dir` holds the archive.
        #[arg(long, short, env = "PENGHUBUNG_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the public key of `[audit] signing_key`, for auditors.
    Pubkey {
        #[arg(long, short, env = "PENGHUBUNG_CONFIG")]
        config: PathBuf,
    },
}

pub fn audit_command(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            dir,
            pubkey,
            no_signatures: _,
        } => verify(&dir, pubkey.as_deref()),
        AuditCommand::Receipt { dir, exchange_id } => match indexed_receipt(&dir, &exchange_id) {
            Ok(receipt) => {
                println!("{}", serde_json::to_string_pretty(&receipt)?);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("penghubung: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
        AuditCommand::VerifyReceipt { file, pubkey } => verify_receipt(&file, &pubkey),
        AuditCommand::Prove {
            receipt,
            nonce,
            request,
            response,
            pubkey,
        } => prove(&receipt, &nonce, request, response, pubkey),
        AuditCommand::VerifyConsistency { file, pubkey } => verify_consistency(&file, &pubkey),
        AuditCommand::Show { dir, exchange_id } => {
            let found = audit::select(&dir, |r| {
                r.exchange_id.as_deref() == Some(exchange_id.as_str())
            })
            .map_err(anyhow::Error::msg)?;
            for line in &found {
                println!("{line}");
            }
            Ok(if found.is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        AuditCommand::Tail { dir, n, follow } => tail(&dir, n, follow),
        AuditCommand::Find {
            config,
            param,
            consumer,
            service,
        } => find(
            &config,
            param.as_deref(),
            consumer.as_ref(),
            service.as_ref(),
        ),
        AuditCommand::Consistency { dir, old, new } => match indexed_consistency(&dir, old, new) {
            Ok(proof) => {
                println!("{}", serde_json::to_string_pretty(&proof)?);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("penghubung: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
        AuditCommand::Config {
            sha256,
            data_dir,
            config,
        } => archived_config(sha256.as_deref(), data_dir, config),
        AuditCommand::Pubkey { config } => pubkey(&config),
    }
}

/// `audit tail`: the last `n` records, then (with `follow`) each new one as it is written.
fn tail(dir: &Path, n: usize, follow: bool) -> anyhow::Result<ExitCode> {
    let mut last = std::collections::VecDeque::with_capacity(n + 1);
    let mut at = audit::Place {
        segment: 1,
        offset: 0,
    };
    audit::walk_at(dir, |_, line, place| {
        at = audit::Place {
            segment: place.segment,
            offset: place.offset + line.len() as u64 + 1,
        };
        last.push_back(String::from_utf8_lossy(line).into_owned());
        if last.len() > n {
            last.pop_front();
        }
        Ok(())
    })
    .map_err(|broken| anyhow::anyhow!("{broken}"))?;
    let mut out = std::io::stdout().lock();
    for line in &last {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        // Looked at before the read: once a later segment exists, this one is complete.
        let newer = audit::segments(dir)?
            .iter()
            .any(|(segment, _)| *segment > at.segment);
        let path = audit::segment_path(dir, at.segment);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let rest = bytes.get(at.offset as usize..).unwrap_or_default();
        // Whole lines only: a line being written, or the zeros after the records, wait.
        let mut printed = 0;
        while let Some(end) = rest[printed..]
            .iter()
            .position(|&b| b == b'\n')
            .filter(|_| rest.get(printed) != Some(&0))
        {
            out.write_all(&rest[printed..=printed + end])?;
            printed += end + 1;
        }
        out.flush()?;
        at.offset += printed as u64;
        if printed == 0 && newer {
            // The writer went on in the next segment after this one's last record.
            at = audit::Place {
                segment: at.segment + 1,
                offset: 0,
            };
            continue;
        }
        if printed == 0 {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

/// `audit config`.
fn archived_config(
    digest: Option<&str>,
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let data_dir = match (data_dir, config) {
        (Some(dir), _) => dir,
        (None, Some(file)) => match penghubung::config::data_dir(&file) {
            Ok(dir) => dir,
            Err(e) => {
                eprintln!("penghubung: {e}");
                return Ok(ExitCode::FAILURE);
            }
        },
        (None, None) => {
            eprintln!("penghubung audit config: give --data-dir DIR or --config FILE");
            return Ok(ExitCode::from(2));
        }
    };
    let archive = penghubung::changes::Archive::under(&data_dir);
    let shown = match digest {
        Some(digest) => archive.read(digest).map(|(_, text)| print!("{text}")),
        None => archive.list().map(|digests| {
            for digest in digests {
                println!("{digest}");
            }
        }),
    };
    match shown {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("penghubung audit config: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `audit verify`.
fn verify(dir: &Path, pubkey: Option<&Path>) -> anyhow::Result<ExitCode> {
    let key = match pubkey {
        Some(file) => Some(read_public_key(file)?),
        None => None,
    };
    let found = audit::verify_all(dir, key.as_deref());
    let report = &found.report;
    if found.problems.is_empty() {
        println!(
            "{}: {} records ({} exchanges, {} signed tree heads) verify; chain intact; {}",
            dir.display(),
            report.records,
            report.exchanges,
            report.tree_heads,
            if report.signatures_checked {
                "signatures checked"
            } else {
                "signatures NOT checked (--no-signatures)"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: does not verify: {} problem{} in {} records",
        dir.display(),
        found.problems.len(),
        if found.problems.len() == 1 { "" } else { "s" },
        report.records
    );
    for problem in &found.problems {
        println!("  {problem}");
    }
    Ok(ExitCode::FAILURE)
}

/// `audit verify-receipt`.
fn verify_receipt(file: &Path, pubkey: &Path) -> anyhow::Result<ExitCode> {
    let key = read_public_key(pubkey)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let receipt: audit::Receipt = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a receipt", file.display()))?;
    match audit::verify_receipt(&receipt, &key) {
        Ok(record) => {
            println!(
                    "receipt verifies: exchange {} ({} {} by {}, {}) is record {} of a {}-record log signed by this key",
                    record.exchange_id.as_deref().unwrap_or("-"),
                    record.method.as_deref().unwrap_or("-"),
                    record.target.as_deref().unwrap_or("-"),
                    record.consumer.as_deref().unwrap_or("-"),
                    record.outcome,
                    receipt.leaf_index,
                    receipt.tree_size
                );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("receipt does NOT verify: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `audit verify-consistency`.
fn verify_consistency(file: &Path, pubkey: &Path) -> anyhow::Result<ExitCode> {
    let key = read_public_key(pubkey)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let proof: audit::Consistency = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a consistency proof", file.display()))?;
    match audit::verify_consistency_proof(&proof, &key) {
        Ok((old, new)) => {
            println!(
                    "consistency proof verifies: the tree of {} records signed at {} is a prefix of the tree of {} records signed at {}, both by this key ({})",
                    proof.old_size, old.time, proof.new_size, new.time, new.gateway
                );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("consistency proof does NOT verify: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `audit find`.
fn find(
    config: &Path,
    param: Option<&str>,
    consumer: Option<&String>,
    service: Option<&String>,
) -> anyhow::Result<ExitCode> {
    let Some(snapshot) = load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let dir = snapshot.gateway.data_dir.join("audit");
    let needle = match param {
        None => None,
        Some(p) => {
            let (name, value) = p
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--param takes NAME=VALUE"))?;
            let redacted = snapshot
                .audit
                .as_ref()
                .and_then(|a| a.redactor.as_ref())
                .map(|r| r.candidates(value))
                .unwrap_or_default();
            Some((name.to_owned(), value.to_owned(), redacted))
        }
    };
    let found = audit::select(&dir, |r| {
        let target = r.target.as_deref().unwrap_or("");
        consumer
            .as_ref()
            .is_none_or(|c| r.consumer.as_ref() == Some(c))
            && service
                .as_ref()
                .is_none_or(|s| r.service.as_ref() == Some(s))
            && needle.as_ref().is_none_or(|(name, value, redacted)| {
                redacted.iter().any(|h| target.contains(h.as_str()))
                    || target.contains(&format!("{name}={value}"))
                    || target.split('/').any(|segment| segment == value)
            })
    })
    .map_err(anyhow::Error::msg)?;
    for line in &found {
        println!("{line}");
    }
    eprintln!("{} matching records", found.len());
    Ok(ExitCode::SUCCESS)
}

/// `audit pubkey`.
fn pubkey(config: &Path) -> anyhow::Result<ExitCode> {
    let Some(snapshot) = load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    match snapshot.audit.as_ref().and_then(|a| a.signer.as_ref()) {
        Some(signer) => {
            println!("ed25519:{}", signer.public_key_hex());
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "penghubung: {} has no [audit] signing_key",
                config.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn read_public_key(file: &Path) -> anyhow::Result<Vec<u8>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    audit::parse_public_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// A receipt from the log's index when it has one (a few reads), else by reading the log.
fn indexed_receipt(dir: &Path, exchange_id: &str) -> Result<audit::Receipt, String> {
    match audit::Lookup::open(dir) {
        Ok(Some(lookup)) => match lookup.receipt(exchange_id) {
            Ok(receipt) => Ok(receipt),
            Err(audit::LookupError::Inconsistent(_) | audit::LookupError::Io(_)) => {
                audit::receipt(dir, exchange_id)
            }
            Err(e) => Err(e.to_string()),
        },
        _ => audit::receipt(dir, exchange_id),
    }
}

/// A consistency proof from the log's index when it has one, else by reading the log.
fn indexed_consistency(dir: &Path, old: u64, new: u64) -> Result<audit::Consistency, String> {
    match audit::Lookup::open(dir) {
        Ok(Some(lookup)) => match lookup.consistency(old, new) {
            Ok(proof) => Ok(proof),
            Err(audit::LookupError::Inconsistent(_) | audit::LookupError::Io(_)) => {
                audit::consistency(dir, old, new)
            }
            Err(e) => Err(e.to_string()),
        },
        _ => audit::consistency(dir, old, new),
    }
}

/// `audit prove`: the receipt's record, the nonce, and each body file given.
fn prove(
    receipt: &Path,
    nonce: &str,
    request: Option<PathBuf>,
    response: Option<PathBuf>,
    pubkey: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if request.is_none() && response.is_none() {
        eprintln!("penghubung: audit prove needs --request FILE, --response FILE or both");
        return Ok(ExitCode::from(2));
    }
    let nonce = match audit::Nonce::parse(nonce) {
        Ok(nonce) => nonce,
        Err(e) => {
            eprintln!("penghubung: --nonce: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let text = std::fs::read_to_string(receipt)
        .with_context(|| format!("cannot read {}", receipt.display()))?;
    let parsed: audit::Receipt = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a receipt", receipt.display()))?;
    let record = match &pubkey {
        Some(file) => match audit::verify_receipt(&parsed, &read_public_key(file)?) {
            Ok(record) => record,
            Err(e) => {
                println!("receipt does NOT verify: {e}");
                return Ok(ExitCode::FAILURE);
            }
        },
        None => serde_json::from_str::<audit::Record>(&parsed.record)
            .with_context(|| format!("{}: the record is not a record", receipt.display()))?,
    };
    let mut all = true;
    for (part, file, recorded) in [
        ("request", request, record.request.as_ref()),
        ("response", response, record.response.as_ref()),
    ] {
        let Some(file) = file else { continue };
        let body =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        match audit::prove(recorded, &nonce, &body) {
            audit::Proven::Same(length) => println!(
                "{part}: {} is the body exchange {} committed to ({length} bytes)",
                file.display(),
                record.exchange_id.as_deref().unwrap_or("-")
            ),
            audit::Proven::Different => {
                all = false;
                println!(
                    "{part}: {} is NOT the body exchange {} committed to (or the nonce is not that exchange's)",
                    file.display(),
                    record.exchange_id.as_deref().unwrap_or("-")
                );
            }
            audit::Proven::NotRecorded => {
                all = false;
                println!("{part}: the record holds no {part} body to prove");
            }
        }
    }
    if pubkey.is_none() {
        println!("(the receipt itself was not checked: give --pubkey to verify it against the gateway's key)");
    }
    Ok(if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
