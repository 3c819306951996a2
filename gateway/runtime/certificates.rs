//! The inventory of certificates seen on the wire (`seen.rs`), as the runtime keeps it: client
//! certificates noted at each handshake, upstream certificates taken from each service's
//! verifier, the list written under `data_dir` every few seconds and at shutdown.

use std::time::Duration;

use crate::seen::{Role, Sighting, RECENT_SECONDS};

use super::{Active, Gateway};

/// Sightings are facts of the wall clock, as the expiry they are compared with (the gateway's
/// settable clock is its calendar for agreements).
fn wall_seconds() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// How often the inventory is written when it changed.
const KEEP_EVERY: Duration = Duration::from_secs(5);

impl Gateway {
    /// Notes the client certificate of a handshake that named `party`.
    pub(crate) fn saw_client(&self, party: &str, fingerprint: &str, der: &[u8]) {
        let now = wall_seconds();
        self.seen
            .saw(Role::Client, party, fingerprint, der, None, now);
    }

    /// Takes the upstream certificates the services' verifiers accepted since last asked.
    pub(super) fn take_upstream_certificates(&self, active: &Active) {
        let now = wall_seconds();
        for service in &active.snapshot.services {
            for (cert, name) in service.upstream_certs.take() {
                let sha256 = crate::keys::sha256_hex(&cert);
                self.seen.saw(
                    Role::Upstream,
                    &service.id,
                    &sha256,
                    &cert,
                    Some(&name),
                    now,
                );
            }
        }
    }

    /// Every certificate seen, first and last sightings included.
    pub fn certificates_seen(&self) -> Vec<Sighting> {
        self.take_upstream_certificates(&self.active());
        self.seen.list()
    }

    /// The certificates seen within the 30 days before `now` (Unix seconds): what the expiry
    /// metrics show.
    pub(super) fn recent_certificates(&self, now: i64) -> Vec<Sighting> {
        self.certificates_seen()
            .into_iter()
            .filter(|s| now - s.last_seen <= RECENT_SECONDS)
            .collect()
    }

    /// Writes the inventory under `data_dir` when it changed, every few seconds, never
    /// returning: spawn it beside the listeners.
    pub async fn keep_certificates(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(KEEP_EVERY).await;
            self.keep_certificates_now();
        }
    }

    /// Writes the inventory now if it changed (at shutdown); a failure is logged, and the
    /// next write tries again.
    pub fn keep_certificates_now(&self) {
        self.take_upstream_certificates(&self.active());
        if let Err(e) = self.seen.keep() {
            tracing::warn!(error = %e, "the certificate inventory could not be written");
        }
    }
}
