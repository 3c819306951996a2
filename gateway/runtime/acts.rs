//! The administrative acts: reload, cache purge, suspension and resumption. Each is recorded in
//! the audit log before it takes effect, and not done when it cannot be recorded.

use std::sync::Arc;

use crate::audit;
use crate::changes::{self, Archive, ArchiveError};
use crate::config::Snapshot;
use crate::suspension::{Scope, SuspendError, Suspension};

use super::{Active, Gateway};

/// Why a reload did not happen; the configuration in force stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(#[from] crate::config::ConfigErrors),
    #[error("the reload could not be recorded in the audit log, so it was not done: {0}")]
    Unrecorded(#[source] audit::AuditError),
    #[error("the configuration could not be archived, so it was not applied: {0}")]
    Unarchived(#[source] ArchiveError),
    #[error("the configuration could not be read: {0}")]
    Internal(#[source] tokio::task::JoinError),
}

/// What a reload changed.
#[derive(Debug)]
pub struct Reloaded {
    pub generation: u64,
    pub digest: String,
    /// Services whose cached responses were dropped (changed or gone).
    pub cache_dropped: Vec<String>,
    /// What the new configuration changed against the one before it.
    pub changes: Vec<changes::Change>,
    pub warnings: Vec<crate::config::ConfigError>,
}

impl Gateway {
    /// Reads, validates and compiles the configuration file again (schemas, TLS material,
    /// CRLs: everything, off the request path), records the act, then swaps it in whole. A
    /// request in flight finishes on the configuration it started with; listeners stay bound.
    /// An invalid file changes nothing. `[audit]` settings apply from the next start.
    pub async fn reload(&self, by: &str) -> Result<Reloaded, ReloadError> {
        let _one = self.reloading.lock().await;
        let current = self.active.load_full();
        let path = current.snapshot.source.clone();
        let loaded = tokio::task::spawn_blocking(move || crate::config::load(&path))
            .await
            .map_err(ReloadError::Internal);
        let snapshot = match loaded.and_then(|r| r.map_err(ReloadError::from)) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                self.telemetry.reload(false);
                tracing::error!(error = %e, "reload refused; the running configuration stays");
                return Err(e);
            }
        };
        let changes = match changes_from(Some(&current.snapshot.text), &snapshot) {
            Ok(changes) => changes,
            Err(e) => {
                self.telemetry.reload(false);
                return Err(ReloadError::Unarchived(e));
            }
        };
        if let Some(audit) = &self.audit {
            let archive = Archive::under(&snapshot.gateway.data_dir);
            let recorded = match configuration_record(&snapshot, Some(by), &changes, &archive) {
                Ok(record) => audit.append(record).await.map_err(ReloadError::Unrecorded),
                Err(e) => Err(ReloadError::Unarchived(e)),
            };
            if let Err(e) = recorded {
                self.telemetry.reload(false);
                tracing::error!(error = %e, "reload refused; the running configuration stays");
                return Err(e);
            }
            // Recorded, so applied; the pointer only tells the next start what it follows.
            if let Err(e) = archive.set_current(&snapshot.digest) {
                tracing::error!(error = %e, "the configuration in force could not be noted");
            }
        }
        let next = Arc::new(Active::replacing(
            Arc::new(snapshot),
            &current,
            &self.telemetry,
            &self.sla,
        ));
        let generation = next.generation;
        let cache_dropped = self
            .cache
            .retain_unchanged(&current.snapshot, &next.snapshot);
        let reloaded = Reloaded {
            generation,
            digest: next.snapshot.digest.clone(),
            cache_dropped,
            changes,
            warnings: next.snapshot.warnings.clone(),
        };
        self.budget.set_max(next.snapshot.gateway.max_buffered);
        self.active.store(next);
        // What the old pools' verifiers accepted, before their services are gone.
        self.take_upstream_certificates(&current);
        self.telemetry.forget_before(generation);
        self.telemetry.reload(true);
        tracing::info!(generation, digest = %reloaded.digest, by, "configuration reloaded");
        Ok(reloaded)
    }
}

/// What `snapshot` changes against `previous`, the text in force before it (`None`: nothing
/// was, a first start).
pub(super) fn changes_from(
    previous: Option<&str>,
    snapshot: &Snapshot,
) -> Result<Vec<changes::Change>, ArchiveError> {
    changes::between(previous, &snapshot.text).map_err(|source| ArchiveError::NotToml {
        digest: snapshot.digest.clone(),
        source,
    })
}

/// The `start` record (`by` absent) or `reload` record of `snapshot`, once its text is
/// archived: the file, its SHA-256, and its `changes`.
pub(super) fn configuration_record(
    snapshot: &Snapshot,
    by: Option<&str>,
    changes: &[changes::Change],
    archive: &Archive,
) -> Result<audit::Record, ArchiveError> {
    archive.keep(&snapshot.digest, &snapshot.text)?;
    let source = snapshot.source.display();
    let (act, detail) = match by {
        None => ("start", format!("{source} sha256:{}", snapshot.digest)),
        Some(by) => (
            "reload",
            format!("{source} sha256:{} by {by}", snapshot.digest),
        ),
    };
    let mut record = audit::admin(&snapshot.gateway.id, act, Some(detail));
    record.config_sha256 = Some(snapshot.digest.clone());
    record.changes = Some(changes.to_vec());
    Ok(record)
}

/// Why a purge was not done.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("no service `{0}` is configured")]
    UnknownService(String),
    #[error("service `{service}` has no operation `{operation}`")]
    UnknownOperation { service: String, operation: String },
    #[error("an operation can only be named with its service")]
    OperationWithoutService,
    #[error("the purge could not be recorded in the audit log: {0}")]
    Unrecorded(#[source] audit::AuditError),
}

impl Gateway {
    /// Drops cached responses: all, a service's, or one operation's. With an audit log the act
    /// is recorded first (`cache-purge`, with the scope and `by`), and not done if it cannot be.
    pub async fn purge_cache(
        &self,
        service: Option<&str>,
        operation: Option<&str>,
        by: &str,
    ) -> Result<u64, PurgeError> {
        let s = &*self.snapshot();
        match (service, operation) {
            (None, Some(_)) => return Err(PurgeError::OperationWithoutService),
            (Some(id), op) => {
                let svc = s
                    .services
                    .iter()
                    .find(|svc| svc.id == id)
                    .ok_or_else(|| PurgeError::UnknownService(id.to_owned()))?;
                if let Some(op) = op.filter(|op| !svc.operations.iter().any(|o| o.id == *op)) {
                    return Err(PurgeError::UnknownOperation {
                        service: id.to_owned(),
                        operation: op.to_owned(),
                    });
                }
            }
            (None, None) => {}
        }
        if let Some(audit) = &self.audit {
            let scope = match (service, operation) {
                (Some(svc), Some(op)) => format!("service={svc} operation={op}"),
                (Some(svc), None) => format!("service={svc}"),
                _ => "all".to_owned(),
            };
            let record = audit::admin(
                &s.gateway.id,
                "cache-purge",
                Some(format!("{scope} by {by}")),
            );
            audit.append(record).await.map_err(PurgeError::Unrecorded)?;
        }
        let purged = self.cache.purge(service, operation);
        tracing::info!(
            service = service.unwrap_or("*"),
            operation = operation.unwrap_or("*"),
            purged,
            by,
            "cache purged"
        );
        Ok(purged)
    }
}

// === impl Gateway (suspension) ===

impl Gateway {
    /// Suspends an agency, agreement or service of the configuration in force: recorded in the
    /// audit log (`suspend`, with the scope, id, reason and `by`), then kept and applied.
    pub async fn suspend(
        &self,
        scope: Scope,
        id: &str,
        reason: &str,
        by: &str,
    ) -> Result<Suspension, SuspendError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(SuspendError::NoReason);
        }
        let suspensions = &self.suspensions;
        let _one = suspensions.acting().await;
        let snapshot = self.snapshot();
        let known = match scope {
            Scope::Agency => snapshot.agencies.iter().any(|a| a.code == id),
            Scope::Agreement => snapshot.agreements.iter().any(|a| a.id == id),
            Scope::Service => snapshot.services.iter().any(|s| s.id == id),
        };
        if !known {
            return Err(SuspendError::Unknown {
                scope,
                id: id.to_owned(),
            });
        }
        let current = suspensions.list();
        if current.iter().any(|s| s.scope == scope && s.id == id) {
            return Err(SuspendError::AlreadySuspended {
                scope,
                id: id.to_owned(),
            });
        }
        let detail = format!(
            "{}={id} reason={} by {by}",
            scope.as_str(),
            serde_json::Value::from(reason)
        );
        self.record_act(&snapshot.gateway.id, "suspend", detail)
            .await?;
        let suspension = Suspension {
            scope,
            id: id.to_owned(),
            reason: reason.to_owned(),
            since: crate::consent::rfc3339(self.clock.now_millis().div_euclid(1000)),
            by: by.to_owned(),
        };
        let mut next = (*current).clone();
        next.push(suspension.clone());
        suspensions.replace(next)?;
        tracing::warn!(scope = scope.as_str(), id, by, "suspended");
        Ok(suspension)
    }

    /// Lifts a suspension: recorded (`resume`), then dropped from the kept list.
    pub async fn resume(
        &self,
        scope: Scope,
        id: &str,
        by: &str,
    ) -> Result<Suspension, SuspendError> {
        let suspensions = &self.suspensions;
        let _one = suspensions.acting().await;
        let current = suspensions.list();
        let Some(lifted) = current
            .iter()
            .find(|s| s.scope == scope && s.id == id)
            .cloned()
        else {
            return Err(SuspendError::NotSuspended {
                scope,
                id: id.to_owned(),
            });
        };
        let gateway = self.snapshot().gateway.id.clone();
        let detail = format!("{}={id} by {by}", scope.as_str());
        self.record_act(&gateway, "resume", detail).await?;
        let next = current
            .iter()
            .filter(|s| !(s.scope == scope && s.id == id))
            .cloned()
            .collect();
        suspensions.replace(next)?;
        tracing::warn!(scope = scope.as_str(), id, by, "resumed");
        Ok(lifted)
    }

    async fn record_act(
        &self,
        gateway: &str,
        act: &str,
        detail: String,
    ) -> Result<(), SuspendError> {
        match &self.audit {
            Some(log) => log
                .append(audit::admin(gateway, act, Some(detail)))
                .await
                .map(|_| ())
                .map_err(SuspendError::Unrecorded),
            None => Ok(()),
        }
    }

    /// The suspensions in force.
    pub fn suspensions(&self) -> Arc<Vec<Suspension>> {
        self.suspensions.list()
    }
}
