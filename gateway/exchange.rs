//! The identity of one exchange: its `SPL-Exchange-Id` (a UUIDv7, time-ordered so audit
//! segments sort naturally) and its W3C trace context.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use ring::rand::{SecureRandom, SystemRandom};

use crate::tls::hex;

/// Identifies one exchange in responses, logs, upstream requests and the audit record.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub id: String,
    pub trace: TraceContext,
}

/// W3C Trace Context (`traceparent`): the caller's trace if it sent a valid one, else a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: String,
    /// The span id the gateway uses for its hop; the upstream sees it as the parent.
    pub span_id: String,
    /// The caller's span (the parent in its `traceparent`), when it sent one.
    pub parent_span_id: Option<String>,
    pub flags: String,
    /// The caller's `tracestate`, forwarded only with a valid `traceparent`.
    pub state: Option<String>,
}

// === impl Exchange ===

impl Exchange {
    /// Starts an exchange for a request with these headers.
    pub fn begin(headers: &HeaderMap) -> Exchange {
        // 10 bytes for the UUID, 16 for a trace id, 8 for the span id.
        let mut random = [0u8; 34];
        fill_random(&mut random);
        let id = uuid_v7(now().as_millis() as u64, &random[..10]);
        let trace = TraceContext::from_headers(headers, &random[10..26], &random[26..34]);
        Exchange { id, trace }
    }
}

thread_local! {
    /// Per-thread generator state, seeded once from the system RNG. Exchange and trace ids need
    /// uniqueness, not secrecy (nothing is authorised by knowing one), and a `getrandom` system
    /// call per request was a measurable share of the proxy's cost (docs/performance.md).
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        // Without a system RNG, time and the thread's stack address still make threads and
        // processes distinct.
        let marker = 0u8;
        let nanos = now().as_nanos() as u64;
        return nanos ^ (std::ptr::addr_of!(marker) as u64).rotate_left(32);
    }
    u64::from_le_bytes(bytes)
}

/// SplitMix64 (Steele, Lea, Flood 2014): a full-period 64-bit generator with good statistical
/// quality, one add and three multiply-xorshifts per output.
fn fill_random(out: &mut [u8]) {
    RNG.with(|state| {
        for chunk in out.chunks_mut(8) {
            let mut z = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            state.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    });
}

fn now() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// RFC 9562 UUID version 7: 48 bits of Unix milliseconds, then random bits.
fn uuid_v7(millis: u64, random: &[u8]) -> String {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    b[6..16].copy_from_slice(random);
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

// === impl TraceContext ===

impl TraceContext {
    fn from_headers(headers: &HeaderMap, new_trace: &[u8], new_span: &[u8]) -> TraceContext {
        let span_id = hex(new_span);
        let incoming = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        match incoming {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                span_id,
                parent_span_id: Some(parent),
                flags,
                state: headers
                    .get("tracestate")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            },
            None => TraceContext {
                trace_id: hex(new_trace),
                span_id,
                parent_span_id: None,
                flags: "01".to_owned(),
                state: None,
            },
        }
    }

    /// The `traceparent` header for the upstream request.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

/// Accepts `00-<32 hex>-<16 hex>-<2 hex>` (and longer future versions, per the spec), with
/// non-zero ids; returns the trace id, the parent (caller's span) id and the flags.
fn parse_traceparent(value: &str) -> Option<(String, String, String)> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !lower_hex(trace, 32) || !lower_hex(parent, 16) || !lower_hex(flags, 2) {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((trace.to_owned(), parent.to_owned(), flags.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_ids_are_uuid_v7_and_distinct() {
        let a = Exchange::begin(&HeaderMap::new());
        let b = Exchange::begin(&HeaderMap::new());
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 36);
        assert_eq!(&a.id[14..15], "7");
        assert!(matches!(&a.id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a.trace.trace_id, b.trace.trace_id);
    }

    #[test]
    fn valid_traceparent_is_continued() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        h.insert("tracestate", "rojo=00f067aa0ba902b7".parse().unwrap());
        let t = Exchange::begin(&h).trace;
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert_eq!(t.state.as_deref(), Some("rojo=00f067aa0ba902b7"));
        assert!(t
            .traceparent()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    }

    #[test]
    fn invalid_traceparent_starts_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            let mut h = HeaderMap::new();
            h.insert("traceparent", bad.parse().unwrap());
            h.insert("tracestate", "a=b".parse().unwrap());
            let t = Exchange::begin(&h).trace;
            assert_ne!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert_eq!(t.state, None, "{bad}");
        }
    }
}
