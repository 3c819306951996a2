//! Suspension during an incident: an agency, an agreement or a service cut off at once by an
//! administrator (`POST /v1/suspend`, `penghubung suspend`), and restored (`/v1/resume`). The
//! acts themselves are the runtime's (`runtime/acts.rs`); this is the state they change.
//!
//! An act is recorded in the audit log before it takes effect, then kept in
//! `<data_dir>/suspensions.json` (written whole to a temporary file, synced, renamed), so it
//! survives a reload and a restart. Suspensions are kept by id, not by configuration index:
//! they outlive the configuration generation that was in force when they were made. The
//! pipeline asks on every request of every connection, open ones included; with nothing
//! suspended the answer costs one atomic load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::audit;

/// The file under `data_dir`.
pub const FILE: &str = "suspensions.json";

/// What a suspension covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every exchange of an agency or peer, as consumer.
    Agency,
    /// Every exchange under an agreement.
    Agreement,
    /// Every exchange with a service, whoever calls.
    Service,
}

/// One suspension in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    pub scope: Scope,
    pub id: String,
    /// Why, for the administrators and the record; never told to the caller.
    pub reason: String,
    /// RFC 3339 UTC, seconds.
    pub since: String,
    /// Who suspended it, as the audit record says it.
    pub by: String,
}

/// The suspensions in force, and where they are kept.
pub struct Suspensions {
    file: PathBuf,
    current: ArcSwap<Vec<Suspension>>,
    /// One act at a time: record, persist, apply.
    acting: tokio::sync::Mutex<()>,
}

/// Why an act was not done.
#[derive(Debug, thiserror::Error)]
pub enum SuspendError {
    #[error("no {} `{id}` is configured", scope.as_str())]
    Unknown { scope: Scope, id: String },
    #[error("{} `{id}` is already suspended", scope.as_str())]
    AlreadySuspended { scope: Scope, id: String },
    #[error("{} `{id}` is not suspended", scope.as_str())]
    NotSuspended { scope: Scope, id: String },
    #[error("a suspension needs a reason")]
    NoReason,
    #[error("the act could not be recorded in the audit log, so it was not done: {0}")]
    Unrecorded(#[source] audit::AuditError),
    #[error("the act was recorded and is in force, but {} could not be written, so it will not survive a restart: {source}", file.display())]
    NotPersisted {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

// === impl Scope ===

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Agency => "agency",
            Scope::Agreement => "agreement",
            Scope::Service => "service",
        }
    }
}

// === impl Suspensions ===

impl Suspensions {
    /// The suspensions kept under `data_dir`; none when the file does not exist. A file that
    /// cannot be read is an error: starting without the suspensions it holds would reopen
    /// what an administrator closed.
    pub fn open(data_dir: &Path) -> std::io::Result<Suspensions> {
        let file = data_dir.join(FILE);
        let list = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::other(format!("{} is not a suspension list: {e}", file.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Suspensions {
            file,
            current: ArcSwap::from_pointee(list),
            acting: tokio::sync::Mutex::new(()),
        })
    }

    /// The suspensions in force.
    pub fn list(&self) -> Arc<Vec<Suspension>> {
        self.current.load_full()
    }

    /// Whether an agency, agreement or service is suspended: asked on every exchange.
    pub fn holds(&self, scope: Scope, id: &str) -> bool {
        let list = self.current.load();
        !list.is_empty() && list.iter().any(|s| s.scope == scope && s.id == id)
    }

    /// One act at a time: held from the check to the swap.
    pub(crate) async fn acting(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.acting.lock().await
    }

    /// Applies `next` at once (an incident does not wait for a disk), then keeps it.
    pub(crate) fn replace(&self, next: Vec<Suspension>) -> Result<(), SuspendError> {
        let persisted = self.persist(&next);
        self.current.store(Arc::new(next));
        persisted.map_err(|source| SuspendError::NotPersisted {
            file: self.file.clone(),
            source,
        })
    }

    fn persist(&self, list: &[Suspension]) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(list).map_err(std::io::Error::other)?;
        crate::durable::replace(&self.file, &bytes)
    }
}
