//! The human units the TOML contract uses: durations (`"5s"`, `"250ms"`), byte sizes
//! (`"256MiB"`) and rates (`"20/s"`, `"5000/day"`). Parsed during validation so that a bad value
//! is reported with its TOML path next to every other error, not as the first serde failure.

use std::time::Duration;

/// A request rate: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// Parses `"500ms"`, `"5s"`, `"2m"`, `"1h"`, `"1d"`; a bare number is refused because nobody
/// reading `timeout = "5"` can tell seconds from milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit; write e.g. \"5s\", \"250ms\", \"2m\""))?;
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let millis = match unit {
        "ms" => Some(value),
        "s" => value.checked_mul(1_000),
        "m" | "min" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        "d" => value.checked_mul(86_400_000),
        _ => {
            return Err(format!(
                "`{text}` has unknown unit `{unit}`; use ms, s, m, h or d"
            ))
        }
    }
    .ok_or_else(|| format!("`{text}` is too long a duration"))?;
    Ok(Duration::from_millis(millis))
}

/// Parses `"1048576"`, `"64KiB"`, `"1MiB"`, `"2GiB"` and the decimal `kB`/`MB`/`GB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "`{text}` is not a size; write e.g. \"1MiB\", \"64KiB\", \"256MiB\""
        ));
    }
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is too large a number"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "`{text}` has unknown unit `{other}`; use B, KiB, MiB, GiB, kB, MB or GB"
            ))
        }
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large a size"))
}

/// Parses `"20/s"`, `"600/min"`, `"1000/h"`, `"5000/day"`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let (count, unit) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not a rate; write e.g. \"20/s\" or \"5000/day\""))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number of requests"))?;
    if count == 0 {
        return Err(format!(
            "`{text}` allows no request at all; remove the agreement instead"
        ));
    }
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3_600),
        "d" | "day" => Duration::from_secs(86_400),
        other => {
            return Err(format!(
                "`{text}` has unknown period `{other}`; use s, min, h or day"
            ))
        }
    };
    Ok(Rate { count, per })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 sec")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2 GB"), Ok(2_000_000_000));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
    }

    #[test]
    fn rates() {
        assert_eq!(
            parse_rate("20/s"),
            Ok(Rate {
                count: 20,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(parse_rate("5000/day").map(|r| r.per.as_secs()), Ok(86_400));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("20").is_err());
        assert!(parse_rate("20/fortnight").is_err());
    }
}
