//! The `penghubung` command: serve, check a configuration, make a development PKI, run the demo.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
// A function longer than a screen and a half (clippy.toml) is split.
#![deny(clippy::too_many_lines)]

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use penghubung::{inventory, pki};

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
    /// List every certificate and CRL the gateway depends on with days to expiry, then every
    /// client and upstream certificate seen on the wire (`<data_dir>/certificates.json`). Exits
    /// 1 when one of the gateway's own has expired (or a CRL is past its next update); a
    /// certificate seen only warns.
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
    /// An agreement's terms, and the signature of its data owner (or consumer) over them.
    Agreement {
        #[command(subcommand)]
        command: cli::agreement::AgreementCommand,
    },
    /// Suspend an agency, agreement or service during an incident, through the admin API:
    /// recorded in the audit log first, in force on the next request of every connection, kept
    /// across reloads and restarts. Callers get 403 `suspended`.
    Suspend {
        #[command(flatten)]
        target: cli::admin::SuspensionArgs,
        /// Why (recorded, and shown to administrators; never to the caller). Free text: it may
        /// start with `-`.
        #[arg(long, allow_hyphen_values = true)]
        reason: String,
    },
    /// Lift a suspension, through the admin API.
    Resume {
        #[command(flatten)]
        target: cli::admin::SuspensionArgs,
    },
    /// Read and check the audit log.
    Audit {
        #[command(subcommand)]
        command: cli::audit::AuditCommand,
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
    let now = time::OffsetDateTime::now_utc;
    match command {
        Command::Serve { config, watch } => cli::serve::serve_command(&config, watch).await,
        Command::Check { config, warn_days } => {
            cli::inventory(&config, |s| inventory::summary(s, now(), warn_days))
        }
        Command::Report {
            audit,
            since,
            until,
            format,
            timezone,
        } => cli::report_command(&audit, &since, &until, &format, &timezone),
        Command::Openapi { config, service } => cli::openapi(&config, &service),
        Command::Audit { command } => cli::audit::audit_command(command),
        Command::Agreement { command } => cli::agreement::agreement_command(command),
        Command::Suspend { target, reason } => {
            cli::admin::suspension_command(target, Some(reason)).await
        }
        Command::Resume { target } => cli::admin::suspension_command(target, None).await,
        Command::Certs { config, warn_days } => cli::inventory(&config, |s| {
            let (mut text, mut health) = inventory::certificates(s, now(), warn_days);
            match penghubung::seen::read(&s.gateway.data_dir) {
                Ok(seen) => {
                    let (more, seen_health) = inventory::seen_certificates(&seen, now(), warn_days);
                    text.push_str(&more);
                    health.expiring += seen_health.expiring;
                }
                Err(e) => text.push_str(&format!("\ncertificates seen: cannot be read: {e}\n")),
            }
            (text, health)
        }),
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
        Command::Demo { dir, listen } => cli::serve::demo_command(&dir, listen).await,
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
