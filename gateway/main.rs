//! The `penghubung` command: serve, check a configuration, make a development PKI, run the demo.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use penghubung::runtime::Gateway;
use penghubung::{audit, config, demo, inventory, pki, report, server};
use tokio::net::TcpListener;

/// mimalloc instead of glibc's malloc: the full policy path allocates per request (parsed JSON
/// bodies, the audit record), and glibc's allocator was ~12% of the proxy's CPU there
/// (docs/performance.md, issue #9).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "penghubung", version = penghubung::VERSION, about = "Sistem Penghubung Layanan: the regency's mTLS service gateway")]
struct Cli {
    /// Log lines for people (`human`) or one JSON object per line for a log pipeline (`json`),
    /// each with the exchange's span (id, trace id, consumer, service, operation, outcome).
    /// Levels and targets come from RUST_LOG (default `info`).
    #[arg(long, global = true, env = "PENGHUBUNG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a configuration file until SIGTERM or SIGINT.
    Serve {
        #[arg(long, short, env = "PENGHUBUNG_CONFIG")]
        config: PathBuf,
        /// Reload when the configuration file changes (checked every second), as on SIGHUP.
        #[arg(long)]
        watch: bool,
    },
    /// Validate a configuration file without serving and print what it publishes and its
    /// certificates. Exits 1 when the file is invalid or a certificate has expired.
    Check {
        #[arg(long, short, env = "PENGHUBUNG_CONFIG")]
        config: PathBuf,
        /// Flag certificates expiring within this many days.
        #[arg(long, default_value_t = inventory::DEFAULT_WARN_DAYS)]
        warn_days: i64,
    },
    /// List every certificate and CRL the gateway depends on with days to expiry. Exits 1 when
    /// one has expired (or a CRL is past its next update).
    Certs {
        #[arg(long, short, env = "PENGHUBUNG_CONFIG")]
        config: PathBuf,
        /// Flag certificates expiring within this many days.
        #[arg(long, default_value_t = inventory::DEFAULT_WARN_DAYS)]
        warn_days: i64,
    },
    /// Print the OpenAPI 3.1 document of a service, as `/.well-known/spl/openapi/<id>.json`
    /// serves it.
    Openapi {
        #[arg(long, short, env = "PENGHUBUNG_CONFIG")]
        config: PathBuf,
        /// The service id.
        #[arg(long)]
        service: String,
    },
    /// Read and check the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The periodic SPL review, from the audit log: exchanges per consumer, service and
    /// outcome, refusals by reason, and per service latency percentiles and availability.
    Report {
        /// The audit directory (`<data_dir>/audit`); its chain is verified while it is read.
        #[arg(long)]
        audit: PathBuf,
        /// First day, YYYY-MM-DD.
        #[arg(long)]
        since: String,
        /// Last day (inclusive), YYYY-MM-DD.
        #[arg(long)]
        until: String,
        /// md, csv or json.
        #[arg(long, default_value = "md")]
        format: String,
        /// The time zone the days are in: Asia/Jakarta (WIB), Asia/Makassar (WITA),
        /// Asia/Jayapura (WIT), Asia/Pontianak or UTC.
        #[arg(long, default_value = "Asia/Jakarta")]
        timezone: String,
    },
    /// Development PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Run two sample PD services behind the gateway and print curl commands to try.
    Demo {
        /// Where to write the demo's PKI and configuration.
        #[arg(long, default_value = "demo")]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
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
        /// The SPL-Commitment-Nonce of the exchange (base64url).
        #[arg(long)]
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
    /// Print the last records.
    Tail {
        dir: PathBuf,
        #[arg(short, default_value_t = 20)]
        n: usize,
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
    /// Print the public key of `[audit] signing_key`, for auditors.
    Pubkey {
        #[arg(long, short, env = "PENGHUBUNG_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Write a CA, a gateway certificate, agency client certificates and audit keys into DIR.
    Init {
        dir: PathBuf,
        /// DNS names and IP addresses for the gateway certificate.
        #[arg(long = "host", default_values = ["localhost", "127.0.0.1"])]
        hosts: Vec<String>,
        /// An agency client certificate, as CODE=IDENTITY (e.g. dinkes=dinkes.parigimoutongkab.go.id).
        #[arg(long = "agency", value_parser = parse_agency)]
        agencies: Vec<(String, String)>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("penghubung: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("penghubung: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config, watch } => {
            let Some(snapshot) = load(&config) else {
                return Ok(ExitCode::FAILURE);
            };
            let listen = snapshot.gateway.listen;
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let grpc = match snapshot.gateway.grpc_listen {
                Some(addr) => Some(
                    TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("cannot listen on {addr} (gRPC)"))?,
                ),
                None => None,
            };
            serve(snapshot, listener, grpc, watch).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config, warn_days } => {
            let Some(snapshot) = load(&config) else {
                return Ok(ExitCode::FAILURE);
            };
            let (text, health) =
                inventory::summary(&snapshot, time::OffsetDateTime::now_utc(), warn_days);
            print!("{text}");
            Ok(exit_for(health))
        }
        Command::Report {
            audit,
            since,
            until,
            format,
            timezone,
        } => {
            let window = (|| {
                let zone = config::TimeZone::parse(&timezone).ok_or_else(|| {
                    format!("--timezone: `{timezone}` is not a supported time zone")
                })?;
                let since = report::parse_date(&since).map_err(|e| format!("--since: {e}"))?;
                let until = report::parse_date(&until).map_err(|e| format!("--until: {e}"))?;
                if until < since {
                    return Err("--until is before --since".to_owned());
                }
                if !["md", "csv", "json"].contains(&format.as_str()) {
                    return Err(format!("--format: `{format}`; use md, csv or json"));
                }
                Ok(report::Window { since, until, zone })
            })();
            let built = window.and_then(|w| report::build(&audit, w));
            match built {
                Ok(r) => {
                    match format.as_str() {
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
        Command::Openapi { config, service } => {
            let Some(snapshot) = load(&config) else {
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
        Command::Audit { command } => audit_command(command),
        Command::Certs { config, warn_days } => {
            let Some(snapshot) = load(&config) else {
                return Ok(ExitCode::FAILURE);
            };
            let (text, health) =
                inventory::certificates(&snapshot, time::OffsetDateTime::now_utc(), warn_days);
            print!("{text}");
            Ok(exit_for(health))
        }
        Command::Pki {
            command:
                PkiCommand::Init {
                    dir,
                    hosts,
                    agencies,
                },
        } => {
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let agencies: Vec<(&str, &str)> = agencies
                .iter()
                .map(|(c, i)| (c.as_str(), i.as_str()))
                .collect();
            let (_, written) = pki::init(&dir, &hosts, &agencies)
                .with_context(|| format!("cannot write the PKI into {}", dir.display()))?;
            for file in written {
                println!("wrote {}", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir, listen } => {
            // Bound first, so that `--listen 127.0.0.1:0` works and the printed commands name
            // the real port.
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let chosen_freely = listen.port() == 0;
            let listen = listener.local_addr()?;
            // gRPC on the next port (any free port when the main one was chosen freely: the
            // next one may well be taken).
            let grpc_port = if chosen_freely || listen.port() == u16::MAX {
                0
            } else {
                listen.port() + 1
            };
            let grpc = TcpListener::bind((listen.ip(), grpc_port))
                .await
                .with_context(|| format!("cannot listen on {}:{grpc_port} (gRPC)", listen.ip()))?;
            let grpc_listen = grpc.local_addr()?;
            let (prepared, services) = demo::prepare(&dir, listen, grpc_listen).await?;
            let Some(snapshot) = load(&prepared.config) else {
                return Ok(ExitCode::FAILURE);
            };
            tokio::spawn(services);
            let banner = format!(
                "Penghubung demo: gateway on https://{listen}, sample services on loopback.\n\
                 Configuration: {}   (Ctrl-C stops)\n\n{}\n",
                prepared.config.display(),
                demo::curl_commands(&prepared)
            );
            // A closed stdout (the demo piped into `head`) must not stop the gateway.
            let mut stdout = std::io::stdout();
            let _ = stdout
                .write_all(banner.as_bytes())
                .and_then(|()| stdout.flush());
            serve(snapshot, listener, Some(grpc), false).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn audit_command(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            dir,
            pubkey,
            no_signatures: _,
        } => {
            let key = match &pubkey {
                Some(file) => Some(read_public_key(file)?),
                None => None,
            };
            let found = audit::verify_all(&dir, key.as_deref());
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
        AuditCommand::VerifyReceipt { file, pubkey } => {
            let key = read_public_key(&pubkey)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
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
        AuditCommand::Prove {
            receipt,
            nonce,
            request,
            response,
            pubkey,
        } => prove(&receipt, &nonce, request, response, pubkey),
        AuditCommand::VerifyConsistency { file, pubkey } => {
            let key = read_public_key(&pubkey)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
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
        AuditCommand::Tail { dir, n } => {
            let all = audit::select(&dir, |_| true).map_err(anyhow::Error::msg)?;
            for line in &all[all.len().saturating_sub(n)..] {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Find {
            config,
            param,
            consumer,
            service,
        } => {
            let Some(snapshot) = load(&config) else {
                return Ok(ExitCode::FAILURE);
            };
            let dir = snapshot.gateway.data_dir.join("audit");
            let needle = match &param {
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
        AuditCommand::Pubkey { config } => {
            let Some(snapshot) = load(&config) else {
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
    }
}

fn read_public_key(file: &Path) -> anyhow::Result<Vec<u8>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    audit::parse_public_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
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
fn load(path: &Path) -> Option<config::Snapshot> {
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

async fn serve(
    snapshot: config::Snapshot,
    listener: TcpListener,
    grpc: Option<TcpListener>,
    watch: bool,
) -> anyhow::Result<()> {
    let listen = listener.local_addr()?;
    let admin_listen = snapshot.gateway.admin_listen;
    let admin = TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("cannot listen on {admin_listen} (admin)"))?;
    let admin_listen = admin.local_addr()?;
    let grpc_listen = grpc.as_ref().and_then(|l| l.local_addr().ok());
    tracing::info!(%listen, admin = %admin_listen, grpc = ?grpc_listen, gateway = %snapshot.gateway.id, services = snapshot.services.len(), "serving");
    let gateway = Arc::new(Gateway::new(Arc::new(snapshot)).context("cannot open the audit log")?);
    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Reload on SIGHUP, and with --watch when the file changes.
    tokio::spawn(reload_on_sighup(gateway.clone()));
    if watch {
        tokio::spawn(reload_on_change(gateway.clone()));
    }
    let admin_task = tokio::spawn(penghubung::admin::serve_admin(
        admin,
        gateway.clone(),
        wait(stopped.clone()),
    ));
    let grpc_task = grpc.map(|grpc| {
        tokio::spawn(server::serve_grpc(
            grpc,
            gateway.clone(),
            wait(stopped.clone()),
        ))
    });
    server::serve(listener, gateway, wait(stopped)).await?;
    if let Some(task) = grpc_task {
        // The gRPC listener drains within the same grace.
        let _ = task.await;
    }
    admin_task.abort();
    Ok(())
}

async fn reload_on_sighup(gateway: Arc<Gateway>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading");
            let _ = gateway.reload("SIGHUP").await;
        }
    }
}

/// Polls the configuration file's modification time; a change reloads.
async fn reload_on_change(gateway: Arc<Gateway>) {
    let path = gateway.snapshot().source.clone();
    let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = stamp(&path);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = stamp(&path);
        if now != seen {
            seen = now;
            tracing::info!(file = %path.display(), "configuration file changed: reloading");
            let _ = gateway.reload("watch").await;
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

fn parse_agency(text: &str) -> Result<(String, String), String> {
    let (code, identity) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not CODE=IDENTITY"))?;
    Ok((code.to_owned(), identity.to_owned()))
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
