//! Configuration: the TOML file shape, its validation, and the immutable [`Snapshot`].
//!
//! `config.toml -> FileConfig -> validate -> Snapshot`: the file shape is untrusted text, the
//! snapshot is what the pipeline reads. A file that fails validation never becomes a snapshot.

mod credentials;
mod error;
mod file;
pub mod openapi;
mod snapshot;
mod units;
mod validate;

use std::path::{Path, PathBuf};

pub use credentials::{Secret, UpstreamAuth};
pub use error::{ConfigError, ConfigErrors};
pub use file::FileConfig;
pub use snapshot::{
    Agency, Agreement, AuditSettings, Basis, CacheSettings, Classification, Date, Durability,
    GatewaySettings, Governance, HealthCheck, Operation, OtlpSettings, OwnerConsent, ParamIn,
    ParamSchema, Party, Protocol, SchemaMode, Service, SignedBy, Snapshot, TimeZone, Upstream,
};
pub use units::{parse_duration, parse_rate, parse_size, Rate};

/// Reads, parses and validates a configuration file. Relative paths in it resolve against the
/// file's directory.
pub fn load(path: &Path) -> Result<Snapshot, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(path.to_path_buf(), "", format!("cannot read the file: {e}"))
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    load_str(&text, path, &base)
}

/// Parses and validates configuration text as if read from `source`.
pub fn load_str(text: &str, source: &Path, base: &Path) -> Result<Snapshot, ConfigErrors> {
    let (file, unknown) = parse(text).map_err(|(toml_path, message)| {
        ConfigErrors::single(source.to_path_buf(), &toml_path, message)
    })?;
    let mut snapshot = validate::validate(file, text, source, base, unknown)?;
    snapshot.openapi = openapi::documents(&snapshot)?;
    Ok(snapshot)
}

/// The terms of agreement `id` in the file at `path`, as its parties sign them (`penghubung
/// agreement terms` and `sign`). Only the file's shape is read: a file whose signatures are
/// still missing, or whose certificates are elsewhere, gives its terms all the same.
pub fn agreement_terms(path: &Path, id: &str) -> Result<crate::consent::Terms, ConfigErrors> {
    let single = |toml_path: &str, message: String| {
        ConfigErrors::single(path.to_path_buf(), toml_path, message)
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| single("", format!("cannot read the file: {e}")))?;
    let (file, _) = parse(&text).map_err(|(toml_path, message)| single(&toml_path, message))?;
    let entry = file.agreements.iter().find(|a| a.id == id).ok_or_else(|| {
        let mut known: Vec<&str> = file.agreements.iter().map(|a| a.id.as_str()).collect();
        known.sort_unstable();
        single(
            "agreements",
            format!("no agreement `{id}` (known: {})", known.join(", ")),
        )
    })?;
    Ok(validate::terms(entry, &file))
}

/// `[gateway] data_dir` of the file at `path`, resolved against the file's directory as the
/// gateway resolves it. Only the file's shape is read.
pub fn data_dir(path: &Path) -> Result<PathBuf, ConfigErrors> {
    let single = |toml_path: &str, message: String| {
        ConfigErrors::single(path.to_path_buf(), toml_path, message)
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| single("", format!("cannot read the file: {e}")))?;
    let (file, _) = parse(&text).map_err(|(toml_path, message)| single(&toml_path, message))?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(base.join(file.gateway.data_dir.as_deref().unwrap_or("data")))
}

/// TOML → file shape. Unknown keys are collected with their paths rather than failing, so that
/// validation can report them all; a syntax or type error stops here, with the path of the
/// value at fault.
fn parse(text: &str) -> Result<(FileConfig, Vec<String>), (String, String)> {
    let de = toml::Deserializer::parse(text).map_err(|e| (String::new(), toml_message(&e)))?;
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(de, &mut track);
    let result = serde_ignored::deserialize(de, |path| unknown.push(toml_path(&path)));
    match result {
        Ok(file) => Ok((file, unknown)),
        Err(e) => {
            let path = track.path().to_string();
            let path = if path == "." { String::new() } else { path };
            Err((path, toml_message(&e)))
        }
    }
}

/// The message of a toml error with its line/column and source excerpt, on one line.
fn toml_message(e: &toml::de::Error) -> String {
    let message = e.message().trim().to_owned();
    match e.span() {
        Some(_) => {
            let located = e.to_string();
            let first = located.lines().next().unwrap_or_default();
            let at = first.strip_prefix("TOML parse error at ").unwrap_or(first);
            format!("{message} ({at})")
        }
        None => message,
    }
}

/// `services.0.operations.1.foo` (serde_ignored) → `services[0].operations[1].foo`.
fn toml_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", toml_path(parent)),
        P::Map { parent, key } => {
            let head = toml_path(parent);
            if head.is_empty() {
                key.clone()
            } else {
                format!("{head}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            toml_path(parent)
        }
    }
}
