//! Live SLA figures for the admin API's `/v1/sla`: per service, availability and latency
//! percentiles over the last 5 minutes, hour and day, from every exchange the pipeline
//! concludes (the same classification as `penghubung report`, which computes the official
//! figures from the audit log).
//!
//! Each service keeps a ring of one-minute buckets (a day's worth) on tokio's clock; a bucket
//! counts answered and failed exchanges and a latency histogram with four buckets per power of
//! two (percentiles accurate to about 19%). The pipeline records into the ring of the exchange's
//! service, which the configuration in force holds by service index ([`Rings`]): a lock of
//! that minute's bucket and a few additions, no map look-up and no lock shared by services.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::outcome::Kind;

const MINUTES: usize = 24 * 60;
/// Histogram buckets: 4 per power of two of microseconds, up to 2^32 µs (~72 min).
const BINS: usize = 4 * 32;
/// The windows reported, in minutes.
pub const WINDOWS: [(&str, usize); 3] = [("5m", 5), ("1h", 60), ("24h", MINUTES)];

pub struct Sla {
    start: Instant,
    /// Every service seen since the start, by id: a service keeps its figures across reloads.
    services: RwLock<BTreeMap<String, Arc<Ring>>>,
}

/// One service's minutes.
pub struct Ring {
    start: Instant,
    buckets: Box<[Mutex<Bucket>]>,
}

/// The rings of one configuration's services, by service index, each taken from the [`Sla`]
/// the first time its service concludes an exchange.
pub struct Rings {
    rings: Box<[OnceLock<Arc<Ring>>]>,
}

#[derive(Clone)]
struct Bucket {
    /// Which minute since `start` this bucket holds (a stale one is reset on use).
    minute: u64,
    answered: u64,
    failed: u64,
    latency: Box<[u32; BINS]>,
}

// === impl Sla ===

impl Sla {
    pub fn new() -> Sla {
        Sla {
            start: Instant::now(),
            services: RwLock::new(BTreeMap::new()),
        }
    }

    /// The ring of `service`, made on first use.
    fn ring(&self, service: &str) -> Arc<Ring> {
        if let Some(ring) = self
            .services
            .read()
            .ok()
            .and_then(|s| s.get(service).cloned())
        {
            return ring;
        }
        let ring = || Arc::new(Ring::new(self.start));
        match self.services.write() {
            Ok(mut services) => services
                .entry(service.to_owned())
                .or_insert_with(ring)
                .clone(),
            Err(_) => ring(),
        }
    }

    /// Empty slots for the `services` of a configuration, filled on first use.
    pub fn rings(&self, services: usize) -> Rings {
        Rings {
            rings: (0..services).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one concluded exchange of the service with index `index` and id `id` in
    /// `rings` (refusals, the caller's doing, are not counted).
    pub fn record_in(&self, rings: &Rings, index: usize, id: &str, kind: Kind, latency: Duration) {
        if kind == Kind::Refused {
            return;
        }
        if let Some(slot) = rings.rings.get(index) {
            slot.get_or_init(|| self.ring(id)).record(kind, latency);
        }
    }

    /// Counts one concluded exchange of `service`, by id.
    pub fn record(&self, service: &str, kind: Kind, latency: Duration) {
        if kind != Kind::Refused {
            self.ring(service).record(kind, latency);
        }
    }

    /// Every service's figures over each window, as JSON.
    pub fn report(&self) -> serde_json::Value {
        let now = minute_since(self.start);
        let Ok(services) = self.services.read() else {
            return json!({"services": []});
        };
        let list: Vec<serde_json::Value> = services
            .iter()
            .map(|(id, ring)| {
                let windows: serde_json::Map<String, serde_json::Value> = WINDOWS
                    .iter()
                    .map(|(name, minutes)| ((*name).to_owned(), ring.window(now, *minutes)))
                    .collect();
                json!({"service": id, "windows": windows})
            })
            .collect();
        json!({"services": list})
    }
}

/// Whole minutes since `start`, on tokio's clock.
fn minute_since(start: Instant) -> u64 {
    Instant::now().saturating_duration_since(start).as_secs() / 60
}

impl Default for Sla {
    fn default() -> Sla {
        Sla::new()
    }
}

// === impl Ring ===

impl Ring {
    fn new(start: Instant) -> Ring {
        Ring {
            start,
            buckets: (0..MINUTES)
                .map(|_| Mutex::new(Bucket::empty(u64::MAX)))
                .collect(),
        }
    }

    fn record(&self, kind: Kind, latency: Duration) {
        let minute = minute_since(self.start);
        let Ok(mut bucket) = self.buckets[(minute % MINUTES as u64) as usize].lock() else {
            return;
        };
        if bucket.minute != minute {
            *bucket = Bucket::empty(minute);
        }
        match kind {
            Kind::Answered => {
                bucket.answered += 1;
                bucket.latency[bin(latency)] += 1;
            }
            Kind::Failed => bucket.failed += 1,
            Kind::Refused => {}
        }
    }

    /// The figures of the last `minutes` minutes, this one included.
    fn window(&self, now: u64, minutes: usize) -> serde_json::Value {
        let (mut answered, mut failed) = (0u64, 0u64);
        let mut latency = [0u64; BINS];
        for back in 0..minutes as u64 {
            let Some(minute) = now.checked_sub(back) else {
                break;
            };
            let Ok(bucket) = self.buckets[(minute % MINUTES as u64) as usize].lock() else {
                continue;
            };
            if bucket.minute != minute {
                continue;
            }
            answered += bucket.answered;
            failed += bucket.failed;
            for (sum, n) in latency.iter_mut().zip(bucket.latency.iter()) {
                *sum += u64::from(*n);
            }
        }
        let total = answered + failed;
        let percentile = |p: f64| -> Option<f64> {
            let rank = (p * answered as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in latency.iter().enumerate() {
                seen += n;
                if seen >= rank && answered > 0 {
                    return Some(upper_us(i) as f64 / 1000.0);
                }
            }
            None
        };
        json!({
            "answered": answered,
            "failed": failed,
            "availability": (total > 0).then(|| answered as f64 / total as f64),
            "p50_ms": percentile(0.50),
            "p95_ms": percentile(0.95),
            "p99_ms": percentile(0.99),
        })
    }
}

impl Bucket {
    fn empty(minute: u64) -> Bucket {
        Bucket {
            minute,
            answered: 0,
            failed: 0,
            latency: Box::new([0; BINS]),
        }
    }
}

/// The histogram bucket of a latency: 4 per power of two of microseconds.
fn bin(latency: Duration) -> usize {
    let us = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, 1 << 40);
    let log2 = 63 - us.leading_zeros() as usize;
    // The two bits below the leading one pick the quarter.
    let quarter = (((us << 2) >> log2) & 3) as usize;
    (log2 * 4 + quarter).min(BINS - 1)
}

/// The upper bound, in µs, of bucket `i` (what percentiles report: never an underestimate).
fn upper_us(i: usize) -> u64 {
    let (log2, quarter) = (i / 4, (i % 4) as u64);
    let base = 1u64 << log2;
    base + (base * (quarter + 1)) / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_bound_latencies_from_above_within_a_quarter() {
        for us in [1u64, 3, 10, 100, 999, 1000, 1500, 20_000, 3_000_000] {
            let upper = upper_us(bin(Duration::from_micros(us)));
            assert!(upper >= us, "{us} µs reported as {upper}");
            assert!(
                upper as f64 <= us as f64 * 1.25 + 1.0,
                "{us} µs reported as {upper}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn windows_slide_on_tokio_time() {
        let sla = Sla::new();
        for _ in 0..9 {
            sla.record("s", Kind::Answered, Duration::from_millis(2));
        }
        sla.record("s", Kind::Failed, Duration::ZERO);
        sla.record("s", Kind::Refused, Duration::ZERO);
        let now = sla.report();
        let five = &now["services"][0]["windows"]["5m"];
        assert_eq!(
            (five["answered"].as_u64(), five["failed"].as_u64()),
            (Some(9), Some(1))
        );
        assert_eq!(five["availability"], 0.9);
        let p50 = five["p50_ms"].as_f64().unwrap();
        assert!((2.0..=2.5).contains(&p50), "{p50}");

        tokio::time::advance(Duration::from_secs(6 * 60)).await;
        let later = sla.report();
        let windows = &later["services"][0]["windows"];
        assert_eq!(windows["5m"]["answered"], 0);
        assert_eq!(windows["5m"]["availability"], serde_json::Value::Null);
        assert_eq!(windows["1h"]["answered"], 9);
        tokio::time::advance(Duration::from_secs(24 * 3600)).await;
        assert_eq!(sla.report()["services"][0]["windows"]["24h"]["answered"], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_keeps_its_figures_when_a_reload_moves_it() {
        let sla = Sla::new();
        let before = sla.rings(2);
        sla.record_in(&before, 1, "b", Kind::Answered, Duration::from_millis(1));
        // The reload listed `b` first.
        let after = sla.rings(2);
        sla.record_in(&after, 0, "b", Kind::Failed, Duration::ZERO);
        sla.record_in(&after, 1, "a", Kind::Answered, Duration::from_millis(1));
        sla.record_in(&after, 1, "a", Kind::Refused, Duration::ZERO);
        let report = sla.report();
        let five = |id: &str| {
            let services = report["services"].as_array().unwrap();
            let service = services.iter().find(|s| s["service"] == id).unwrap();
            let w = &service["windows"]["5m"];
            (
                w["answered"].as_u64().unwrap(),
                w["failed"].as_u64().unwrap(),
            )
        };
        assert_eq!(five("b"), (1, 1));
        assert_eq!(five("a"), (1, 0));
    }
}
