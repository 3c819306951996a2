//! The gateway at run time: the configuration in force (swapped whole on reload, each
//! generation with the handles built from it), the side systems the pipeline calls, the
//! background loops beside the listeners (health checks, metrics export), and the
//! administrative acts (`acts.rs`: reload, cache purge, suspension), each recorded before it
//! takes effect. The request
//! path itself is [`crate::pipeline`].

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::audit::{AuditLog, WriterOptions};
use crate::budget::Budget;
use crate::cache::Cache;
use crate::changes::Archive;
use crate::clock::Clock;
use crate::config::Snapshot;
use crate::otlp;
use crate::quota::Quotas;
use crate::seen::Sightings;
use crate::sla::{Rings, Sla};
use crate::suspension::Suspensions;
use crate::telemetry::Telemetry;
use crate::upstream::{self, Pool};

mod acts;
mod certificates;

pub use acts::{PurgeError, ReloadError, Reloaded};

/// The gateway as a value: a snapshot and the handles the pipeline calls. Tests drive it
/// without sockets where they can; the server drives it from connections.
pub struct Gateway {
    /// The configuration in force and the handles built from it, swapped whole on reload; a
    /// request keeps the one it started with.
    active: ArcSwap<Active>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    pub(crate) clock: Clock,
    pub(crate) audit: Option<AuditLog>,
    pub(crate) cache: Cache,
    pub(crate) telemetry: Telemetry,
    pub(crate) sla: Sla,
    /// `[gateway] max_buffered`: the bodies held by all exchanges.
    pub(crate) budget: Arc<Budget>,
    /// Agencies, agreements and services cut off by an administrator, kept under `data_dir`.
    pub(crate) suspensions: Suspensions,
    /// The client and upstream certificates seen, kept under `data_dir`.
    seen: Sightings,
    /// When the gateway started: the start of every cumulative metric.
    started: std::time::SystemTime,
}

/// One service's upstreams as `/readyz` and the metrics show them: (origin, health, requests
/// under way).
#[derive(Debug, Clone)]
pub struct ServiceHealth {
    pub service: String,
    pub upstreams: Vec<(String, upstream::UpstreamHealth, usize)>,
}

/// A snapshot and what is built from it: the upstream pools, the quotas, the span exporter and
/// the SLA rings.
pub struct Active {
    pub snapshot: Arc<Snapshot>,
    /// Counts reloads: a caller resolved against another generation is resolved again.
    pub generation: u64,
    pub(crate) upstreams: Pool,
    pub(crate) quotas: Quotas,
    /// `[telemetry] otlp_endpoint`: where exchange spans go.
    pub(crate) otlp: Option<Arc<otlp::Exporter>>,
    /// The live SLA rings of the services, by index.
    pub(crate) sla: Rings,
}

impl Active {
    fn new(snapshot: Arc<Snapshot>, generation: u64, telemetry: &Telemetry, sla: &Sla) -> Active {
        Active {
            sla: sla.rings(snapshot.services.len()),
            upstreams: Pool::new(&snapshot),
            quotas: Quotas::new(&snapshot),
            otlp: snapshot
                .otlp
                .clone()
                .map(|settings| Arc::new(otlp::Exporter::new(settings, telemetry.otlp_dropped()))),
            snapshot,
            generation,
        }
    }

    /// The configuration that replaces `previous`, with the quota spent so far carried over
    /// and the span exporter kept when its settings did not change.
    fn replacing(
        snapshot: Arc<Snapshot>,
        previous: &Active,
        telemetry: &Telemetry,
        sla: &Sla,
    ) -> Active {
        let otlp = match (&snapshot.otlp, &previous.otlp) {
            (Some(settings), Some(exporter)) if exporter.settings() == settings => {
                Some(exporter.clone())
            }
            (settings, _) => settings
                .clone()
                .map(|settings| Arc::new(otlp::Exporter::new(settings, telemetry.otlp_dropped()))),
        };
        Active {
            sla: sla.rings(snapshot.services.len()),
            upstreams: Pool::new(&snapshot),
            quotas: Quotas::carried(&snapshot, &previous.quotas, &previous.snapshot),
            otlp,
            snapshot,
            generation: previous.generation + 1,
        }
    }
}

// === impl Gateway ===

impl Gateway {
    /// Builds the gateway; with `[audit]` configured, opens (and if need be recovers) the audit
    /// log under `<data_dir>/audit` and records the start with the configuration's digest.
    pub fn new(snapshot: Arc<Snapshot>) -> std::io::Result<Gateway> {
        Gateway::with_clock(snapshot, Clock::system())
    }

    /// A gateway whose calendar (agreement validity) follows `clock`.
    pub fn with_clock(snapshot: Arc<Snapshot>, clock: Clock) -> std::io::Result<Gateway> {
        let suspensions = Suspensions::open(&snapshot.gateway.data_dir)?;
        let seen = Sightings::open(&snapshot.gateway.data_dir)?;
        let audit = match &snapshot.audit {
            None => None,
            Some(settings) => {
                let id = &snapshot.gateway.id;
                let (log, recovered) = AuditLog::open(
                    &snapshot.gateway.data_dir.join("audit"),
                    id,
                    WriterOptions {
                        durability: settings.durability,
                        flush_interval: settings.flush_interval,
                        segment_size: settings.segment_size,
                        queue: settings.queue,
                        signer: settings.signer.clone(),
                        gateway: id.clone(),
                        tree_head_every: settings.tree_head_every,
                        tree_head_interval: settings.tree_head_interval,
                    },
                )?;
                let archive = Archive::under(&snapshot.gateway.data_dir);
                let previous = archive.current().map_err(std::io::Error::other)?;
                let previous = previous.as_ref().map(|(_, text)| text.as_str());
                let changes =
                    acts::changes_from(previous, &snapshot).map_err(std::io::Error::other)?;
                let record = acts::configuration_record(&snapshot, None, &changes, &archive)
                    .map_err(std::io::Error::other)?;
                let first = recovered.into_iter().chain([record]).collect();
                log.record_start(first).map_err(std::io::Error::other)?;
                if let Err(e) = archive.set_current(&snapshot.digest) {
                    tracing::error!(error = %e, "the configuration in force could not be noted");
                }
                Some(log)
            }
        };
        let mut telemetry = Telemetry::new();
        let sla = Sla::new();
        if let Some(log) = &audit {
            telemetry.register_audit(log.fsync_seconds());
        }
        Ok(Gateway {
            cache: Cache::new(&snapshot.cache, telemetry.cache().clone()),
            budget: Budget::new(snapshot.gateway.max_buffered),
            suspensions,
            seen,
            active: ArcSwap::from_pointee(Active::new(snapshot, 0, &telemetry, &sla)),
            reloading: tokio::sync::Mutex::new(()),
            clock,
            audit,
            telemetry,
            sla,
            started: std::time::SystemTime::now(),
        })
    }

    /// The metrics the pipeline keeps.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Today's date in the gateway's time zone, on the gateway's calendar clock.
    pub fn today(&self) -> crate::config::Date {
        self.clock.today(self.snapshot().gateway.timezone)
    }

    /// The live SLA figures (`/v1/sla`).
    pub fn sla(&self) -> &Sla {
        &self.sla
    }

    /// The response cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The Prometheus exposition, with the gauges brought up to date.
    pub fn metrics_text(&self) -> String {
        self.refresh_metrics();
        self.telemetry.encode()
    }

    /// Brings the gauges that mirror state (cache, upstreams, certificates, audit queue) up to
    /// date.
    fn refresh_metrics(&self) {
        let (entries, bytes) = self.cache.usage();
        self.telemetry.cache().usage(entries, bytes);
        let health = self.upstream_health();
        let snapshot = self.snapshot();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let seen = self.recent_certificates(now);
        self.telemetry.refresh(crate::telemetry::Scrape {
            seen: seen
                .iter()
                .map(|s| {
                    (
                        s.role,
                        s.party.as_str(),
                        s.sha256.as_str(),
                        s.not_after - now,
                    )
                })
                .collect(),
            upstreams: health
                .iter()
                .flat_map(|s| {
                    s.upstreams.iter().map(|(origin, state, _)| {
                        (
                            s.service.as_str(),
                            origin.clone(),
                            *state == upstream::UpstreamHealth::Up,
                        )
                    })
                })
                .collect(),
            certificates: snapshot
                .certificates
                .iter()
                .filter_map(|c| Some((c.used_as.as_str(), c.file.as_str(), c.not_after? - now)))
                .collect(),
            audit_queue: self.audit.as_ref().map(AuditLog::queued),
            buffered: (self.budget.used(), self.budget.max()),
        });
    }

    /// Sends the metrics to the OTLP collector of the configuration in force every
    /// `metrics_interval`, never returning: spawn it beside the listeners. Follows reloads
    /// (checks at least every second); a failed export is logged and counted, and the next
    /// sends the cumulative values again.
    pub async fn export_metrics(self: Arc<Self>) {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let active = self.active();
            let Some(exporter) = &active.otlp else {
                continue;
            };
            if last.elapsed() < exporter.settings().metrics_interval {
                continue;
            }
            last = tokio::time::Instant::now();
            self.send_metrics(exporter).await;
        }
    }

    /// At shutdown, after the drain: the spans still queued and the metrics as they end go to
    /// the OTLP collector, within `limit`.
    pub async fn flush_telemetry(&self, limit: std::time::Duration) {
        let active = self.active();
        let Some(exporter) = &active.otlp else {
            return;
        };
        let flushed = tokio::time::timeout(limit, async {
            exporter.flush().await;
            self.send_metrics(exporter).await;
        })
        .await;
        if flushed.is_err() {
            tracing::warn!(limit = ?limit, "OTLP flush at shutdown did not finish in time");
        }
    }

    async fn send_metrics(&self, exporter: &otlp::Exporter) {
        self.refresh_metrics();
        if let Err(status) = exporter
            .export_metrics(self.telemetry.families(), self.started)
            .await
        {
            self.telemetry.otlp_metrics_failed();
            tracing::warn!(error = %status.message(), "OTLP metrics export failed");
        }
    }

    /// The audit log, when one is configured.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// Runs the active health checks (`health_path`) of the configuration in force, never
    /// returning: spawn it beside the listeners. A reload's new services are checked within a
    /// second; each check runs on its own task, bounded by its interval.
    pub async fn check_upstreams(self: Arc<Self>) {
        loop {
            let active = self.active();
            let (due, wait) = active
                .upstreams
                .checks_due(&active.snapshot, std::time::Duration::from_secs(1));
            for (service, upstream) in due {
                let active = active.clone();
                tokio::spawn(async move {
                    let config = &active.snapshot.services[service];
                    active.upstreams.check(service, config, upstream).await;
                });
            }
            drop(active);
            tokio::time::sleep(wait).await;
        }
    }

    /// Each service's upstreams and how they stand, in the configuration in force.
    pub fn upstream_health(&self) -> Vec<ServiceHealth> {
        let active = self.active.load();
        active
            .snapshot
            .services
            .iter()
            .enumerate()
            .map(|(i, service)| ServiceHealth {
                service: service.id.clone(),
                upstreams: service
                    .upstreams
                    .iter()
                    .zip(active.upstreams.health(i))
                    .map(|(u, (health, in_flight))| (u.origin.to_string(), health, in_flight))
                    .collect(),
            })
            .collect()
    }

    /// The configuration in force now, with its generation and handles.
    pub fn active(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// The configuration in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.active.load().snapshot.clone()
    }
}
