//! `penghubung agreement`: the terms of an agreement as its parties sign them, and the signing.
//!
//! The data owner (wali data) signs with the key of its own agency certificate, on its own
//! machine: the operator never holds that key (docs/governance.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use penghubung::{config, consent};

#[derive(Subcommand)]
pub enum AgreementCommand {
    /// Print an agreement's terms as they are signed: RFC 8785 canonical JSON, one line.
    Terms {
        #[arg(long, short, env = "PENGHUBUNG_CONFIG")]
        config: PathBuf,
        /// The agreement id.
        #[arg(long)]
        id: String,
    },
    /// Sign an agreement's terms with a party's certificate and private key (PKCS#8 PEM, ECDSA
    /// P-256 or Ed25519) and print the signature file (JSON) to name as `owner_signature` or
    /// `consumer_signature`.
    Sign {
        #[arg(long, short, env = "PENGHUBUNG_CONFIG")]
        config: PathBuf,
        /// The agreement id.
        #[arg(long)]
        id: String,
        /// The signer's certificate (PEM; intermediates may follow it).
        #[arg(long)]
        cert: PathBuf,
        /// The signer's private key (PEM, PKCS#8).
        #[arg(long)]
        key: PathBuf,
        /// Which party signs.
        #[arg(long, value_enum, default_value_t = Party::Owner)]
        role: Party,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Party {
    /// The service's owner (wali data).
    Owner,
    /// The consumer agency.
    Consumer,
}

pub fn agreement_command(command: AgreementCommand) -> anyhow::Result<ExitCode> {
    match command {
        AgreementCommand::Terms { config, id } => {
            let Some(terms) = terms(&config, &id) else {
                return Ok(ExitCode::FAILURE);
            };
            println!("{}", String::from_utf8_lossy(&terms.canonical()));
            Ok(ExitCode::SUCCESS)
        }
        AgreementCommand::Sign {
            config,
            id,
            cert,
            key,
            role,
        } => sign(&config, &id, &cert, &key, role),
    }
}

fn sign(
    config: &Path,
    id: &str,
    cert_file: &Path,
    key_file: &Path,
    role: Party,
) -> anyhow::Result<ExitCode> {
    let Some(terms) = terms(config, id) else {
        return Ok(ExitCode::FAILURE);
    };
    let material = penghubung::tls::load_certs(cert_file)
        .and_then(|chain| penghubung::tls::load_key(key_file).map(|key| (chain, key)));
    let (chain, key) = match material {
        Ok(m) => m,
        Err(e) => {
            eprintln!("penghubung agreement sign: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let role = match role {
        Party::Owner => consent::Role::Owner,
        Party::Consumer => consent::Role::Consumer,
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match consent::sign(&terms, role, &chain, &key, now) {
        Ok(file) => {
            print!("{}", file.to_json());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "penghubung agreement sign: {} with {}: {e}",
                cert_file.display(),
                key_file.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn terms(config: &Path, id: &str) -> Option<consent::Terms> {
    match config::agreement_terms(config, id) {
        Ok(terms) => Some(terms),
        Err(errors) => {
            eprintln!("{errors}");
            None
        }
    }
}
