//! The identity of one exchange: its `SPL-Exchange-Id` (an RFC 9562 UUIDv7, time-ordered so
//! audit segments sort naturally) and its W3C trace context.
//!
//! Ids must not be predictable: an exchange id names a receipt, and a trace id is passed to
//! owners. The random bits come from a CSPRNG (`rand`'s thread-local ChaCha12, seeded and
//! reseeded from the operating system), never from a generator whose output reveals its state.

use http::HeaderMap;
use rand::Rng;

/// Identifies one exchange in responses, logs, upstream requests and the audit record.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub id: String,
    pub trace: TraceContext,
    /// When it began (tokio's clock): its deadline (`request_timeout`) runs from here.
    pub begun: tokio::time::Instant,
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
        // 16 bytes for a trace id, 8 for the span id.
        let mut random = [0u8; 24];
        rand::rng().fill_bytes(&mut random);
        // `now_v7` keeps ids of one process in creation order, within a millisecond too
        // (RFC 9562 §6.2, method 1: a counter seeded randomly each millisecond).
        let id = uuid::Uuid::now_v7()
            .hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer())
            .to_owned();
        let trace = TraceContext::from_headers(headers, &random[..16], &random[16..]);
        Exchange {
            id,
            trace,
            begun: tokio::time::Instant::now(),
        }
    }
}

// === impl TraceContext ===

impl TraceContext {
    fn from_headers(headers: &HeaderMap, new_trace: &[u8], new_span: &[u8]) -> TraceContext {
        let span_id = data_encoding::HEXLOWER.encode(new_span);
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
                trace_id: data_encoding::HEXLOWER.encode(new_trace),
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
    fn ids_of_one_millisecond_keep_their_order() {
        let ids: Vec<String> = (0..10_000)
            .map(|_| Exchange::begin(&HeaderMap::new()).id)
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids, "ids are unique and in creation order");
    }

    /// The old generator (SplitMix64) handed its whole state out in every 64-bit word: from one
    /// id's random bits the next id could be computed. An id's last 32 bits are now drawn from a
    /// CSPRNG (the 42 before them are RFC 9562's counter, seeded randomly each millisecond):
    /// balanced, and consecutive values are not steps of one sequence.
    #[test]
    fn random_bits_are_not_a_function_of_the_previous_id() {
        let random = |id: &str| -> u32 { u32::from_str_radix(&id[28..], 16).unwrap() };
        let ids: Vec<u32> = (0..4096)
            .map(|_| random(&Exchange::begin(&HeaderMap::new()).id))
            .collect();
        let ones: u32 = ids.iter().map(|v| v.count_ones()).sum();
        let expected = 4096.0 * 16.0;
        assert!(
            (f64::from(ones) - expected).abs() < expected * 0.02,
            "{ones}"
        );
        let steps: std::collections::HashSet<u32> =
            ids.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        assert!(steps.len() > 4000, "{}", steps.len());
    }

    /// The attack on the old generator, run against the new one. SplitMix64's output function
    /// is invertible and its state advances by a constant: the 8 bytes in the middle of one
    /// exchange's new trace id gave its state, and so the random bytes of the next exchange id.
    /// This predictor matched every time on the old code; it must never match now.
    #[test]
    fn the_next_id_cannot_be_computed_from_a_trace_id() {
        const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
        fn unshift(z: u64, by: u32) -> u64 {
            let mut x = z;
            for _ in 0..(64 / by) {
                x = z ^ (x >> by);
            }
            x
        }
        fn inverse(a: u64) -> u64 {
            let mut x = a;
            for _ in 0..6 {
                x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
            }
            x
        }
        fn mix(mut z: u64) -> u64 {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn state_of(output: u64) -> u64 {
            let z = unshift(output, 31).wrapping_mul(inverse(0x94d0_49bb_1331_11eb));
            unshift(
                unshift(z, 27).wrapping_mul(inverse(0xbf58_476d_1ce4_e5b9)),
                30,
            )
        }
        assert_eq!(
            state_of(mix(12345)),
            12345,
            "the predictor inverts SplitMix64"
        );
        let mut matched = 0;
        for _ in 0..64 {
            let first = Exchange::begin(&HeaderMap::new());
            let next = Exchange::begin(&HeaderMap::new());
            let trace = data_encoding::HEXLOWER
                .decode(first.trace.trace_id.as_bytes())
                .unwrap();
            let output = u64::from_le_bytes(trace[6..14].try_into().unwrap());
            let predicted =
                mix(state_of(output).wrapping_add(GOLDEN.wrapping_mul(3))).to_le_bytes();
            let id = data_encoding::HEXLOWER
                .decode(next.id.replace('-', "").as_bytes())
                .unwrap();
            if id[9..14] == predicted[3..8] && id[7] == predicted[1] {
                matched += 1;
            }
        }
        assert_eq!(matched, 0, "exchange ids are predictable");
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
