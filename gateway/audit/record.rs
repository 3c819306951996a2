//! One audit record, and how records chain.
//!
//! A record is one JSON line. Its hash is SHA-256 over the line's exact bytes (without the
//! newline); each record's `prev` is the previous record's hash (64 zeros for the first), so
//! changing, removing, inserting or reordering any line breaks the chain from that line on.
//! Bodies are never recorded: only a hiding commitment to each (HMAC-SHA256 keyed with the
//! exchange's nonce, [`super::commit`]) and its length; records of format 1 held a SHA-256.

use serde::{Deserialize, Serialize};

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub prev: String,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub gateway: String,
    /// `exchange` or `admin`.
    pub kind: String,
    /// What happened: `forwarded`, a problem slug, or an administrative act (`start`, ...).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// gRPC calls: the `grpc-status` the caller got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The agreement's legal basis: `kesepakatan`, `sop` or `perintah_bupati`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_template: Option<String>,
    /// The normalised target with `audit_redact` values replaced by keyed hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The id of the redaction key that hashed the target's values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<BodyDigest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<BodyDigest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Administrative detail (a configuration digest, what a recovery truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `start` and `reload`: the SHA-256 of the configuration applied, archived as
    /// `<data_dir>/config/<sha256>.toml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_sha256: Option<String>,
    /// `start` and `reload`: what that configuration changed against the one before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<crate::changes::Change>>,
    /// Tree heads: how many records (lines) before this one the tree covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_size: Option<u64>,
    /// Tree heads: the Merkle root of those records, 64 hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Tree heads: Ed25519 signature over `tree_head_message`, 128 hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// What a record holds of a body: its commitment (format 2) or its SHA-256 (format 1, read
/// only), and its length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyDigest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// HMAC-SHA256 keyed with the exchange's nonce, 64 hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment: Option<String>,
    pub length: u64,
}

/// RFC 3339 UTC with milliseconds, from Unix milliseconds.
pub fn timestamp(unix_millis: i64) -> String {
    let seconds = unix_millis.div_euclid(1000);
    let millis = unix_millis.rem_euclid(1000);
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(seconds) else {
        return unix_millis.to_string();
    };
    let Some(year) = u16::try_from(t.year()).ok().filter(|y| *y <= 9999) else {
        return unix_millis.to_string();
    };
    // Written digit by digit: one per exchange, and `format!`'s padding costs more than the
    // rest of the record's fields together.
    let mut out = String::with_capacity(24);
    let mut digits = |value: u32, width: u32, then: char| {
        for place in (0..width).rev() {
            let digit = value / 10u32.pow(place) % 10;
            out.push(char::from(b'0' + digit as u8));
        }
        out.push(then);
    };
    digits(u32::from(year), 4, '-');
    digits(u32::from(u8::from(t.month())), 2, '-');
    digits(u32::from(t.day()), 2, 'T');
    digits(u32::from(t.hour()), 2, ':');
    digits(u32::from(t.minute()), 2, ':');
    digits(u32::from(t.second()), 2, '.');
    digits(millis as u32, 3, 'Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_millis() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_735_689_600_123), "2025-01-01T00:00:00.123Z");
        // As `format!` wrote them, over dates and times of every width.
        for millis in (0..4_102_444_800_000i64).step_by(409_999_991) {
            let t = time::OffsetDateTime::from_unix_timestamp(millis / 1000).unwrap();
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                millis % 1000
            );
            assert_eq!(timestamp(millis), expected);
        }
    }

    #[test]
    fn records_round_trip_and_omit_what_is_absent() {
        let r = Record {
            seq: 7,
            prev: GENESIS.into(),
            time: timestamp(0),
            gateway: "g".into(),
            kind: "admin".into(),
            outcome: "start".into(),
            ..Record::default()
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains("consumer"));
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
    }
}
