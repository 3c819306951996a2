//! Quotas per agreement (`rate = "20/s"`, `"5000/day"`): the generic cell rate algorithm
//! (GCRA), one lock-free cell per agreement with a rate. Uses tokio's monotonic clock, so tests
//! can exhaust a quota and see it recover with paused time.
//!
//! A rate of `count` per `window` admits a burst of `count` and then one request every
//! `window / count`: the same promise a fixed window makes, without its double burst at the
//! window edge.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Rate, Snapshot};

/// The quota cells of a snapshot's agreements (a handle: the pipeline calls it).
pub struct Quotas {
    cells: Vec<Option<Cell>>,
}

/// What a quota said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted; `remaining` more would be admitted now, and the full quota is back after `reset`.
    Admitted { remaining: u32, reset: Duration },
    /// Refused; a request is admitted again after `retry_after`.
    Limited { retry_after: Duration },
}

struct Cell {
    rate: Rate,
    /// Nanoseconds between admissions at the sustained rate.
    interval: u64,
    /// How far ahead of now the theoretical arrival time may run: the burst.
    tolerance: u64,
    /// Theoretical arrival time, in nanoseconds since `base`.
    tat: AtomicU64,
    base: Instant,
}

/// A rate per caller, for calls outside the exchange path (the gRPC Audit service): each agency
/// gets its own cell, made at its first call.
pub struct PerCaller {
    rate: Rate,
    base: Instant,
    cells: std::sync::Mutex<std::collections::HashMap<String, Cell>>,
}

// === impl PerCaller ===

impl PerCaller {
    pub fn new(rate: Rate) -> PerCaller {
        PerCaller {
            rate,
            base: Instant::now(),
            cells: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Charges one call to `caller`'s cell.
    pub fn check(&self, caller: &str) -> Decision {
        let now = Instant::now();
        let Ok(mut cells) = self.cells.lock() else {
            return Decision::Limited {
                retry_after: Duration::from_secs(1),
            };
        };
        cells
            .entry(caller.to_owned())
            .or_insert_with(|| Cell::new(self.rate, self.base))
            .check(now)
    }
}

// === impl Quotas ===

impl Quotas {
    pub fn new(snapshot: &Snapshot) -> Quotas {
        let base = Instant::now();
        let cells = snapshot
            .agreements
            .iter()
            .map(|a| a.rate.map(|rate| Cell::new(rate, base)))
            .collect();
        Quotas { cells }
    }

    /// The quotas of `snapshot`, carrying over what `previous` (the configuration it replaces)
    /// had used of each agreement that kept its id, parties and rate: a reload neither refills
    /// a spent quota nor spends a fresh one.
    pub fn carried(snapshot: &Snapshot, previous: &Quotas, old: &Snapshot) -> Quotas {
        let fresh = Quotas::new(snapshot);
        let cells = snapshot
            .agreements
            .iter()
            .zip(fresh.cells)
            .map(|(a, cell)| {
                let kept = old.agreements.iter().position(|o| {
                    o.id == a.id
                        && o.rate == a.rate
                        && old.agencies[o.consumer].code == snapshot.agencies[a.consumer].code
                        && old.services[o.service].id == snapshot.services[a.service].id
                });
                match kept
                    .and_then(|i| previous.cells.get(i))
                    .and_then(Option::as_ref)
                {
                    Some(before) => Some(Cell {
                        rate: before.rate,
                        interval: before.interval,
                        tolerance: before.tolerance,
                        tat: AtomicU64::new(before.tat.load(Ordering::Acquire)),
                        base: before.base,
                    }),
                    None => cell,
                }
            })
            .collect();
        Quotas { cells }
    }

    /// Charges one request to an agreement's quota; agreements without a rate always admit.
    pub fn check(&self, agreement: usize) -> Option<(Rate, Decision)> {
        let cell = self.cells.get(agreement)?.as_ref()?;
        Some((cell.rate, cell.check(Instant::now())))
    }
}

// === impl Cell ===

impl Cell {
    fn new(rate: Rate, base: Instant) -> Cell {
        let window = u64::try_from(rate.per.as_nanos()).unwrap_or(u64::MAX);
        let interval = (window / u64::from(rate.count)).max(1);
        Cell {
            rate,
            interval,
            tolerance: interval * u64::from(rate.count - 1),
            tat: AtomicU64::new(0),
            base,
        }
    }

    fn check(&self, now: Instant) -> Decision {
        let t =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let earliest = tat.saturating_sub(self.tolerance);
            if t < earliest {
                return Decision::Limited {
                    retry_after: Duration::from_nanos(earliest - t),
                };
            }
            let next = tat.max(t) + self.interval;
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    let window = self.tolerance + self.interval;
                    let remaining = (t + window).saturating_sub(next) / self.interval;
                    return Decision::Admitted {
                        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                        reset: Duration::from_nanos(next - t),
                    };
                }
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(count: u32, per: Duration) -> Cell {
        Cell::new(Rate { count, per }, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn admits_a_burst_then_one_per_interval() {
        let c = cell(5, Duration::from_secs(1));
        for expected_remaining in (0..5).rev() {
            match c.check(Instant::now()) {
                Decision::Admitted { remaining, .. } => assert_eq!(remaining, expected_remaining),
                other => panic!("{other:?}"),
            }
        }
        let Decision::Limited { retry_after } = c.check(Instant::now()) else {
            panic!("admitted a sixth")
        };
        assert_eq!(retry_after, Duration::from_millis(200));
        tokio::time::advance(Duration::from_millis(199)).await;
        assert!(matches!(c.check(Instant::now()), Decision::Limited { .. }));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(matches!(
            c.check(Instant::now()),
            Decision::Admitted { remaining: 0, .. }
        ));
        // After a full window of silence, the whole burst is back.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(
            c.check(Instant::now()),
            Decision::Admitted { remaining: 4, .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn daily_quotas_recover_over_the_day() {
        let c = cell(2, Duration::from_secs(86_400));
        assert!(matches!(
            c.check(Instant::now()),
            Decision::Admitted { remaining: 1, .. }
        ));
        assert!(matches!(
            c.check(Instant::now()),
            Decision::Admitted { remaining: 0, .. }
        ));
        let Decision::Limited { retry_after } = c.check(Instant::now()) else {
            panic!()
        };
        assert_eq!(retry_after, Duration::from_secs(43_200));
    }
}
