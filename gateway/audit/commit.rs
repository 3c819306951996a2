//! Hiding commitments to bodies: what an audit record holds instead of a digest.
//!
//! A plain SHA-256 of a small, guessable body (`{"nik":"7208…"}`) gives the body away to anyone
//! who can enumerate the guesses. Each exchange therefore draws a fresh 32-byte random nonce,
//! and its record holds `HMAC-SHA256(key = nonce, message = body)` and the length. The nonce
//! is handed to the two parties only — the consumer in the response header
//! `SPL-Commitment-Nonce`, the data owner's service in the request header of the same name —
//! and never written to the log or any log line: either party can later prove what was
//! exchanged by revealing the body and the nonce; the operator, the auditor and anyone who
//! copies the log cannot test a guess.
//!
//! gRPC bodies commit to their messages: the bytes of each length-prefixed message,
//! concatenated, without the 5-byte prefixes (what a gRPC client sees).

use std::fmt;

use data_encoding::{BASE64URL_NOPAD, HEXLOWER};
use http::HeaderValue;
use rand::Rng;
use ring::hmac;

use super::BodyDigest;

/// The header that carries an exchange's nonce to the consumer and to the owner's service.
pub const SPL_COMMITMENT_NONCE: &str = "spl-commitment-nonce";

/// One exchange's secret: 32 random bytes, and the HMAC key made of them once for both of the
/// exchange's commitments (making it is two SHA-256 blocks).
#[derive(Clone)]
pub struct Nonce {
    bytes: [u8; 32],
    key: hmac::Key,
}

/// A nonce that is not 32 bytes in base64url.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a commitment nonce is 32 bytes in base64url (43 characters, no padding)")]
pub struct BadNonce;

// === impl Nonce ===

impl Nonce {
    /// A fresh nonce from the thread's CSPRNG.
    pub fn fresh() -> Nonce {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Nonce::from_bytes(bytes)
    }

    fn from_bytes(bytes: [u8; 32]) -> Nonce {
        Nonce {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            bytes,
        }
    }

    /// Base64url without padding, as the header carries it.
    pub fn encoded(&self) -> String {
        BASE64URL_NOPAD.encode(&self.bytes)
    }

    #[allow(clippy::expect_used)] // base64url's alphabet is visible ASCII
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.encoded()).expect("base64url is a valid header value")
    }

    /// The nonce as the header carried it (trailing `=` padding is tolerated).
    pub fn parse(text: &str) -> Result<Nonce, BadNonce> {
        let bytes = BASE64URL_NOPAD
            .decode(text.trim().trim_end_matches('=').as_bytes())
            .map_err(|_| BadNonce)?;
        Ok(Nonce::from_bytes(bytes.try_into().map_err(|_| BadNonce)?))
    }
}

/// Never printed: a nonce in a log line would undo the commitment.
impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Nonce(..)")
    }
}

/// Commits to a body as it passes, in pieces.
pub struct Committer {
    context: hmac::Context,
    length: u64,
    /// gRPC: where the reader is in the message framing.
    framing: Option<Framing>,
}

/// Position in a gRPC length-prefixed message stream.
struct Framing {
    /// Bytes of the 5-byte prefix read so far, and the prefix.
    prefix_read: usize,
    prefix: [u8; 5],
    /// Message bytes still due before the next prefix.
    remaining: u64,
}

// === impl Committer ===

impl Committer {
    /// A commitment to a plain body (`grpc = false`) or to the messages of a gRPC body.
    pub fn new(nonce: &Nonce, grpc: bool) -> Committer {
        Committer {
            context: hmac::Context::with_key(&nonce.key),
            length: 0,
            framing: grpc.then_some(Framing {
                prefix_read: 0,
                prefix: [0; 5],
                remaining: 0,
            }),
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        let Some(framing) = self.framing.as_mut() else {
            self.context.update(bytes);
            self.length += bytes.len() as u64;
            return;
        };
        while !bytes.is_empty() {
            if framing.remaining > 0 {
                let take = bytes
                    .len()
                    .min(usize::try_from(framing.remaining).unwrap_or(usize::MAX));
                self.context.update(&bytes[..take]);
                self.length += take as u64;
                framing.remaining -= take as u64;
                bytes = &bytes[take..];
                continue;
            }
            let take = bytes.len().min(5 - framing.prefix_read);
            framing.prefix[framing.prefix_read..framing.prefix_read + take]
                .copy_from_slice(&bytes[..take]);
            framing.prefix_read += take;
            bytes = &bytes[take..];
            if framing.prefix_read == 5 {
                let [_, a, b, c, d] = framing.prefix;
                framing.remaining = u64::from(u32::from_be_bytes([a, b, c, d]));
                framing.prefix_read = 0;
            }
        }
    }

    /// The commitment and the length of what it covers.
    pub fn finish(self) -> BodyDigest {
        BodyDigest {
            sha256: None,
            commitment: Some(HEXLOWER.encode(self.context.sign().as_ref())),
            length: self.length,
        }
    }
}

/// The commitment to a whole body.
pub fn commit(nonce: &Nonce, grpc: bool, body: &[u8]) -> BodyDigest {
    let mut committer = Committer::new(nonce, grpc);
    committer.update(body);
    committer.finish()
}

/// Whether a body is the one a record commits to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proven {
    /// It is (its length, in bytes).
    Same(u64),
    /// It is not, or the nonce is not the exchange's.
    Different,
    /// The record holds nothing of this body.
    NotRecorded,
}

/// Checks `body` against what a record holds of it: a commitment (format 2), under `nonce`; or
/// a SHA-256 (format 1), for which no nonce is needed.
pub fn prove(recorded: Option<&BodyDigest>, nonce: &Nonce, body: &[u8]) -> Proven {
    let Some(recorded) = recorded else {
        return Proven::NotRecorded;
    };
    let same = match (&recorded.commitment, &recorded.sha256) {
        (Some(commitment), _) => commit(nonce, false, body).commitment.as_ref() == Some(commitment),
        (None, Some(sha256)) => super::sha256_hex(body) == *sha256,
        (None, None) => return Proven::NotRecorded,
    };
    if same && recorded.length == body.len() as u64 {
        Proven::Same(recorded.length)
    } else {
        Proven::Different
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The construction: HMAC-SHA256 keyed with the nonce's 32 bytes. (That it matches an HMAC
    /// nobody here wrote is checked against `openssl dgst -mac HMAC` in tests/privacy.rs.)
    #[test]
    fn a_commitment_is_hmac_sha256_keyed_with_the_nonce() {
        let nonce = Nonce::from_bytes([7; 32]);
        let body = br#"{"nik":"7208014001900001"}"#;
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]), body);
        let got = commit(&nonce, false, body);
        assert_eq!(got.commitment.unwrap(), HEXLOWER.encode(expected.as_ref()));
        assert_eq!(got.length, body.len() as u64);
        assert_eq!(got.sha256, None);
    }

    #[test]
    fn pieces_commit_as_the_whole_and_nonces_differ() {
        let nonce = Nonce::fresh();
        let body = b"abcdefghijklmnopqrstuvwxyz";
        let mut pieces = Committer::new(&nonce, false);
        for chunk in body.chunks(3) {
            pieces.update(chunk);
        }
        assert_eq!(pieces.finish(), commit(&nonce, false, body));
        assert_ne!(
            commit(&Nonce::fresh(), false, body),
            commit(&nonce, false, body)
        );
    }

    /// Two gRPC messages, split anywhere: the commitment covers their bytes without prefixes.
    #[test]
    fn grpc_bodies_commit_to_their_messages() {
        let nonce = Nonce::fresh();
        let mut framed = vec![0, 0, 0, 0, 3];
        framed.extend_from_slice(b"abc");
        framed.extend_from_slice(&[0, 0, 0, 0, 0]);
        framed.extend_from_slice(&[0, 0, 0, 0, 2]);
        framed.extend_from_slice(b"de");
        let whole = commit(&nonce, false, b"abcde");
        for split in 0..framed.len() {
            let mut c = Committer::new(&nonce, true);
            c.update(&framed[..split]);
            c.update(&framed[split..]);
            assert_eq!(c.finish(), whole, "split at {split}");
        }
    }

    #[test]
    fn a_body_is_proven_with_its_nonce_only() {
        let nonce = Nonce::fresh();
        let body = br#"{"nik":"7208014001900001"}"#;
        let recorded = commit(&nonce, false, body);
        assert_eq!(prove(Some(&recorded), &nonce, body), Proven::Same(26));
        assert_eq!(
            prove(Some(&recorded), &nonce, br#"{"nik":"7208014001900002"}"#),
            Proven::Different
        );
        assert_eq!(
            prove(Some(&recorded), &Nonce::fresh(), body),
            Proven::Different
        );
        assert_eq!(prove(None, &nonce, body), Proven::NotRecorded);
        let old = BodyDigest {
            sha256: Some(super::super::sha256_hex(body)),
            commitment: None,
            length: 26,
        };
        assert_eq!(prove(Some(&old), &nonce, body), Proven::Same(26));
    }

    #[test]
    fn nonces_round_trip_through_the_header_and_bad_ones_are_refused() {
        let nonce = Nonce::fresh();
        let text = nonce.encoded();
        assert_eq!(text.len(), 43);
        assert_eq!(Nonce::parse(&text).unwrap().bytes, nonce.bytes);
        assert_eq!(
            Nonce::parse(&format!("{text}=")).unwrap().bytes,
            nonce.bytes
        );
        assert_eq!(Nonce::parse(&text[1..]).unwrap_err(), BadNonce);
        assert_eq!(Nonce::parse("not base64!").unwrap_err(), BadNonce);
        assert_eq!(format!("{nonce:?}"), "Nonce(..)");
    }
}
