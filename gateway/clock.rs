//! Wall-clock time for decisions that depend on the calendar: whether an agreement is in force
//! today, in the gateway's time zone. A handle, so tests can set the date and cross midnight
//! without waiting; rate limits use tokio's monotonic clock instead (see `quota`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Date, TimeZone};

#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

// === impl Clock ===

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands at `unix_millis` until told otherwise.
    pub fn manual(unix_millis: i64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(unix_millis))),
        }
    }

    /// Sets a manual clock; no effect on the system clock.
    pub fn set(&self, unix_millis: i64) {
        if let Some(m) = &self.manual {
            m.store(unix_millis, Ordering::Relaxed);
        }
    }

    /// Moves a manual clock forward; no effect on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(m) = &self.manual {
            m.fetch_add(
                i64::try_from(by.as_millis()).unwrap_or(i64::MAX),
                Ordering::Relaxed,
            );
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_millis(&self) -> i64 {
        match &self.manual {
            Some(m) => m.load(Ordering::Relaxed),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        }
    }

    /// Today's date in `zone`.
    pub fn today(&self, zone: TimeZone) -> Date {
        let local_seconds =
            self.now_millis().div_euclid(1000) + i64::from(zone.utc_offset_hours) * 3600;
        civil_from_days(local_seconds.div_euclid(86_400))
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm,
/// exact for every `i64` day a clock can produce here).
fn civil_from_days(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Date {
        year: u16::try_from(year).unwrap_or(0),
        month: month as u8,
        day: day as u8,
    }
}

/// Milliseconds since the epoch of midnight starting `date` in `zone`; for tests and tools.
pub fn midnight_millis(date: Date, zone: TimeZone) -> i64 {
    let (y, m, d) = (
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 - i64::from(zone.utc_offset_hours) * 3600) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: u16, month: u8, day: u8) -> Date {
        Date { year, month, day }
    }

    #[test]
    fn dates_round_trip_through_midnight() {
        for d in [
            date(1970, 1, 1),
            date(2024, 2, 29),
            date(2025, 12, 31),
            date(2100, 3, 1),
        ] {
            let clock = Clock::manual(midnight_millis(d, TimeZone::JAKARTA));
            assert_eq!(clock.today(TimeZone::JAKARTA), d);
            clock.advance(Duration::from_millis(86_400_000 - 1));
            assert_eq!(clock.today(TimeZone::JAKARTA), d, "last millisecond of {d}");
            clock.advance(Duration::from_millis(1));
            assert_ne!(clock.today(TimeZone::JAKARTA), d);
        }
    }

    #[test]
    fn the_day_depends_on_the_zone() {
        // 2025-12-31 17:30 UTC is already 2026-01-01 in Jakarta (UTC+7) and Jayapura (UTC+9).
        let utc = TimeZone::parse("UTC").unwrap();
        let clock =
            Clock::manual(midnight_millis(date(2025, 12, 31), utc) + 17 * 3_600_000 + 1_800_000);
        assert_eq!(clock.today(utc), date(2025, 12, 31));
        assert_eq!(clock.today(TimeZone::JAKARTA), date(2026, 1, 1));
        assert_eq!(
            clock.today(TimeZone::parse("Asia/Jayapura").unwrap()),
            date(2026, 1, 1)
        );
    }

    #[test]
    fn system_clock_is_today() {
        let today = Clock::system().today(TimeZone::parse("UTC").unwrap());
        assert!(today.year >= 2025);
    }
}
