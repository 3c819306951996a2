//! The data owner's consent: an agreement's terms in one canonical form, a party's signature
//! over them, and its verification.
//!
//! The terms are the JSON object [`Terms`] serialised as RFC 8785 (JSON Canonicalization
//! Scheme). Every value is a string, a list of strings or `null`, so the scheme reduces to: keys
//! sorted, no whitespace, strings escaped as ECMAScript's `JSON.stringify` does — which is what
//! `serde_json` writes for a struct whose fields are declared in sorted order.
//!
//! A signature file (`*.sig`, JSON) carries the terms, their SHA-256, the signature time, the
//! signer's certificate chain and the signature over the *statement*: the canonical JSON of
//! `{"agreement", "format", "role", "signed_at", "terms_sha256"}`. ECDSA P-256 with SHA-256
//! (ASN.1 DER signature, as `openssl dgst -sha256 -sign` writes) and Ed25519 are accepted. The
//! signer's certificate must chain to a signer CA *at the signing time*, so that a signature
//! outlives the certificate that made it but never one made with an expired certificate.
//! Who the signer is (the service's owner, the consumer) is the configuration's question:
//! [`Verified::leaf`] is handed back for it.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The `format` of a signature file and of its statement.
pub const FORMAT: &str = "penghubung/agreement-signature/v1";

/// How far in the future a signing time may lie (clocks of two offices disagree).
const CLOCK_SKEW_SECS: i64 = 300;

/// What an agreement's parties sign. Fields are declared in RFC 8785 order: [`Terms::canonical`]
/// relies on it, and a test holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    /// `kesepakatan`, `sop` or `perintah_bupati`.
    pub basis: String,
    pub consumer: String,
    /// SHA-256 of the signed agreement document (the PKS), 64 lowercase hex.
    pub document_sha256: Option<String>,
    pub id: String,
    /// The operations covered, sorted; an agreement that omits `operations` covers (and signs)
    /// every operation the service declares.
    pub operations: Vec<String>,
    pub purpose: String,
    /// As written in the configuration (`"20/s"`), or none.
    pub rate: Option<String>,
    pub service: String,
    /// The SOP an agreement of basis `sop` follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sop: Option<String>,
    /// `YYYY-MM-DD`.
    pub valid_from: String,
    pub valid_until: String,
}

/// Which party signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The service's owner (wali data): its consent opens the data.
    Owner,
    /// The consumer: its acceptance of the purpose and duties.
    Consumer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "ecdsa-p256-sha256")]
    EcdsaP256Sha256,
    #[serde(rename = "ed25519")]
    Ed25519,
}

/// A signature file, as written by `penghubung agreement sign`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureFile {
    pub format: String,
    pub agreement: String,
    pub role: Role,
    /// RFC 3339 UTC, seconds: `2026-12-02T03:04:05Z`.
    pub signed_at: String,
    pub terms: Terms,
    /// SHA-256 of the canonical terms, 64 lowercase hex.
    pub terms_sha256: String,
    pub algorithm: Algorithm,
    /// Base64 (standard, padded) of the signature over the statement.
    pub signature: String,
    /// Base64 DER certificates, the signer's first, then any intermediates.
    pub certificates: Vec<String>,
}

/// What is signed: canonical JSON, fields in RFC 8785 order.
#[derive(Serialize)]
struct Statement<'a> {
    agreement: &'a str,
    format: &'a str,
    role: Role,
    signed_at: &'a str,
    terms_sha256: &'a str,
}

/// A signature that verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The signer's certificate: the configuration decides whose it is.
    pub leaf: CertificateDer<'static>,
    /// The signer's subject, as an inspector reads it.
    pub subject: String,
    /// SHA-256 of the signer's certificate, lowercase hex.
    pub fingerprint: String,
    pub signed_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error("is not a signature file: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("has format `{0}`; expected `{FORMAT}`")]
    Format(String),
    #[error("is the {found:?} signature; expected the {expected:?}'s")]
    Role { found: Role, expected: Role },
    #[error("signs agreement `{found}`, not `{expected}`")]
    Agreement { found: String, expected: String },
    #[error("terms_sha256 is not the SHA-256 of the terms it carries")]
    Digest,
    #[error("the signed terms differ from the configuration in {}", list(.0))]
    TermsChanged(Vec<Change>),
    #[error("carries no certificate")]
    NoCertificate,
    #[error("certificate {0} is not base64 DER")]
    Certificate(usize),
    #[error("signed_at `{0}` is not a UTC time like 2026-12-02T03:04:05Z")]
    Time(String),
    #[error("signed_at {0} lies in the future")]
    Future(String),
    #[error("the signer's certificate was not valid under a signer CA at {signed_at}: {source}")]
    Chain {
        signed_at: String,
        #[source]
        source: rustls::Error,
    },
    #[error("the signer's key is neither ECDSA P-256 nor Ed25519")]
    UnsupportedKey,
    #[error("algorithm {0:?} is not the one of the signer's key")]
    Algorithm(Algorithm),
    #[error("the signature does not verify with the signer's certificate")]
    Signature,
    #[error("the private key is not a PKCS#8 ECDSA P-256 or Ed25519 key (convert an `EC PRIVATE KEY` with `openssl pkcs8 -topk8 -nocrypt`)")]
    Key,
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("the certificate is valid from {not_before} until {not_after}, not at {at}: a signature made with it would be refused")]
    NotValidAt {
        not_before: String,
        not_after: String,
        at: String,
    },
    #[error("the certificate cannot be read")]
    Unparsable,
    #[error("cannot sign: {0}")]
    Crypto(String),
}

/// One term that differs between what was signed and what is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub field: &'static str,
    pub signed: String,
    pub configured: String,
}

// === impl Terms ===

impl Terms {
    /// RFC 8785 canonical JSON.
    pub fn canonical(&self) -> Vec<u8> {
        canonical(self)
    }

    /// SHA-256 of [`Terms::canonical`], lowercase hex.
    pub fn sha256(&self) -> String {
        crate::keys::sha256_hex(&self.canonical())
    }

    /// The terms that differ, field by field.
    pub fn changes(&self, configured: &Terms) -> Vec<Change> {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".to_owned());
        let pairs = [
            ("basis", self.basis.clone(), configured.basis.clone()),
            (
                "consumer",
                self.consumer.clone(),
                configured.consumer.clone(),
            ),
            (
                "document_sha256",
                show(&self.document_sha256),
                show(&configured.document_sha256),
            ),
            ("id", self.id.clone(), configured.id.clone()),
            (
                "operations",
                self.operations.join(", "),
                configured.operations.join(", "),
            ),
            ("purpose", self.purpose.clone(), configured.purpose.clone()),
            ("rate", show(&self.rate), show(&configured.rate)),
            ("service", self.service.clone(), configured.service.clone()),
            ("sop", show(&self.sop), show(&configured.sop)),
            (
                "valid_from",
                self.valid_from.clone(),
                configured.valid_from.clone(),
            ),
            (
                "valid_until",
                self.valid_until.clone(),
                configured.valid_until.clone(),
            ),
        ];
        pairs
            .into_iter()
            .filter(|(_, a, b)| a != b)
            .map(|(field, signed, configured)| Change {
                field,
                signed,
                configured,
            })
            .collect()
    }
}

// === impl SignatureFile ===

impl SignatureFile {
    pub fn parse(text: &str) -> Result<SignatureFile, ConsentError> {
        serde_json::from_str(text).map_err(ConsentError::Malformed)
    }

    /// Pretty JSON with a final newline, as `agreement sign` prints it.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    fn statement(&self) -> Vec<u8> {
        canonical(&Statement {
            agreement: &self.agreement,
            format: &self.format,
            role: self.role,
            signed_at: &self.signed_at,
            terms_sha256: &self.terms_sha256,
        })
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, ConsentError> {
        if self.certificates.is_empty() {
            return Err(ConsentError::NoCertificate);
        }
        self.certificates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                BASE64
                    .decode(c)
                    .map(CertificateDer::from)
                    .map_err(|_| ConsentError::Certificate(i))
            })
            .collect()
    }
}

/// Signs `terms` as `role` with the certificate chain's key, at `at` (Unix seconds). Refuses a
/// certificate that is not valid at that time: the gateway would refuse the signature.
pub fn sign(
    terms: &Terms,
    role: Role,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'_>,
    at: i64,
) -> Result<SignatureFile, ConsentError> {
    let leaf = chain.first().ok_or(ConsentError::NoCertificate)?;
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|_| ConsentError::Unparsable)?;
    let validity = cert.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if at < not_before || at > not_after {
        return Err(ConsentError::NotValidAt {
            not_before: rfc3339(not_before),
            not_after: rfc3339(not_after),
            at: rfc3339(at),
        });
    }
    let algorithm = algorithm_of(&cert)?;
    let public = cert.public_key().subject_public_key.data.to_vec();
    let mut file = SignatureFile {
        format: FORMAT.to_owned(),
        agreement: terms.id.clone(),
        role,
        signed_at: rfc3339(at),
        terms: terms.clone(),
        terms_sha256: terms.sha256(),
        algorithm,
        signature: String::new(),
        certificates: chain.iter().map(|c| BASE64.encode(c)).collect(),
    };
    let PrivateKeyDer::Pkcs8(pkcs8) = key else {
        return Err(ConsentError::Key);
    };
    let statement = file.statement();
    let rng = SystemRandom::new();
    let signature = match algorithm {
        Algorithm::EcdsaP256Sha256 => {
            let pair = EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                pkcs8.secret_pkcs8_der(),
                &rng,
            )
            .map_err(|_| ConsentError::Key)?;
            if pair.public_key().as_ref() != public.as_slice() {
                return Err(ConsentError::KeyMismatch);
            }
            pair.sign(&rng, &statement)
                .map_err(|e| ConsentError::Crypto(e.to_string()))?
                .as_ref()
                .to_vec()
        }
        Algorithm::Ed25519 => {
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.secret_pkcs8_der())
                .map_err(|_| ConsentError::Key)?;
            if pair.public_key().as_ref() != public.as_slice() {
                return Err(ConsentError::KeyMismatch);
            }
            pair.sign(&statement).as_ref().to_vec()
        }
    };
    file.signature = BASE64.encode(signature);
    Ok(file)
}

/// Checks a signature file against the configured terms: the role, the terms, the chain to a
/// signer CA at the signing time (`verifier`), and the signature. `now` is Unix seconds.
pub fn verify(
    file: &SignatureFile,
    expected: &Terms,
    role: Role,
    verifier: &dyn ClientCertVerifier,
    now: i64,
) -> Result<Verified, ConsentError> {
    if file.format != FORMAT {
        return Err(ConsentError::Format(file.format.clone()));
    }
    if file.role != role {
        return Err(ConsentError::Role {
            found: file.role,
            expected: role,
        });
    }
    if file.agreement != expected.id {
        return Err(ConsentError::Agreement {
            found: file.agreement.clone(),
            expected: expected.id.clone(),
        });
    }
    if file.terms.sha256() != file.terms_sha256 {
        return Err(ConsentError::Digest);
    }
    let changes = file.terms.changes(expected);
    if !changes.is_empty() {
        return Err(ConsentError::TermsChanged(changes));
    }
    let signed_at =
        parse_rfc3339(&file.signed_at).ok_or_else(|| ConsentError::Time(file.signed_at.clone()))?;
    if signed_at > now + CLOCK_SKEW_SECS {
        return Err(ConsentError::Future(file.signed_at.clone()));
    }
    let chain = file.chain()?;
    let (leaf, intermediates) = chain.split_first().ok_or(ConsentError::NoCertificate)?;
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(signed_at).unwrap_or(0),
    ));
    verifier
        .verify_client_cert(leaf, intermediates, at)
        .map_err(|source| ConsentError::Chain {
            signed_at: file.signed_at.clone(),
            source,
        })?;
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|_| ConsentError::Unparsable)?;
    if algorithm_of(&cert)? != file.algorithm {
        return Err(ConsentError::Algorithm(file.algorithm));
    }
    let public = cert.public_key().subject_public_key.data.as_ref();
    let alg: &dyn signature::VerificationAlgorithm = match file.algorithm {
        Algorithm::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
        Algorithm::Ed25519 => &signature::ED25519,
    };
    let sig = BASE64
        .decode(&file.signature)
        .map_err(|_| ConsentError::Signature)?;
    UnparsedPublicKey::new(alg, public)
        .verify(&file.statement(), &sig)
        .map_err(|_| ConsentError::Signature)?;
    Ok(Verified {
        subject: cert.subject().to_string(),
        fingerprint: crate::keys::sha256_hex(leaf.as_ref()),
        leaf: leaf.clone().into_owned(),
        signed_at: file.signed_at.clone(),
    })
}

fn algorithm_of(cert: &X509Certificate<'_>) -> Result<Algorithm, ConsentError> {
    const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
    const P256: &str = "1.2.840.10045.3.1.7";
    const ED25519: &str = "1.3.101.112";
    let spki = cert.public_key();
    match spki.algorithm.algorithm.to_id_string().as_str() {
        ED25519 => Ok(Algorithm::Ed25519),
        EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            match curve.as_deref() {
                Some(P256) => Ok(Algorithm::EcdsaP256Sha256),
                _ => Err(ConsentError::UnsupportedKey),
            }
        }
        _ => Err(ConsentError::UnsupportedKey),
    }
}

fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    // Only strings, lists, nulls and structs with sorted fields: nothing here can fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn list(changes: &[Change]) -> String {
    let mut text = String::new();
    for (i, c) in changes.iter().enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        let _ = write!(
            text,
            "`{}` (signed: {}; configured: {})",
            c.field, c.signed, c.configured
        );
    }
    text
}

/// Unix seconds → `2026-12-02T03:04:05Z`.
pub fn rfc3339(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix.to_string(),
    }
}

/// `2026-12-02T03:04:05Z` → Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let month = time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        month,
        u8::try_from(num(8..10)?).ok()?,
    )
    .ok()?;
    let at = date
        .with_hms(
            u8::try_from(num(11..13)?).ok()?,
            u8::try_from(num(14..16)?).ok()?,
            u8::try_from(num(17..19)?).ok()?,
        )
        .ok()?;
    Some(at.assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms() -> Terms {
        Terms {
            basis: "kesepakatan".into(),
            consumer: "dinkes".into(),
            document_sha256: None,
            id: "PKS-2025-014".into(),
            operations: vec!["get-penduduk".into()],
            purpose: "Verifikasi \"peserta\" JKN\n\u{1}é".into(),
            rate: Some("20/s".into()),
            service: "dukcapil-penduduk".into(),
            sop: None,
            valid_from: "2025-01-01".into(),
            valid_until: "2026-12-31".into(),
        }
    }

    #[test]
    fn terms_are_canonical_json_with_sorted_keys() {
        let text = String::from_utf8(terms().canonical()).unwrap();
        assert_eq!(
            text,
            r#"{"basis":"kesepakatan","consumer":"dinkes","document_sha256":null,"id":"PKS-2025-014","operations":["get-penduduk"],"purpose":"Verifikasi \"peserta\" JKN\n\u0001é","rate":"20/s","service":"dukcapil-penduduk","valid_from":"2025-01-01","valid_until":"2026-12-31"}"#
        );
        let with_sop = Terms {
            sop: Some("SOP-7".into()),
            ..terms()
        };
        let value: serde_json::Value = serde_json::from_slice(&with_sop.canonical()).unwrap();
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "fields must be declared in sorted order");
        assert!(keys.contains(&"sop".to_owned()));
    }

    #[test]
    fn times_round_trip_and_refuse_other_shapes() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        let t = 1_796_000_000;
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        for bad in [
            "2026-12-02 03:04:05Z",
            "2026-12-02T03:04:05+07:00",
            "2026-13-02T03:04:05Z",
            "2026-12-02T03:04:5xZ",
            "2026-12-02T03:04:05.000Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn changes_name_each_field() {
        let signed = terms();
        let mut configured = terms();
        configured.valid_until = "2027-12-31".into();
        configured.rate = None;
        let changes = signed.changes(&configured);
        let fields: Vec<_> = changes.iter().map(|c| c.field).collect();
        assert_eq!(fields, ["rate", "valid_until"]);
        let message = ConsentError::TermsChanged(changes).to_string();
        assert!(
            message.contains("`valid_until` (signed: 2026-12-31; configured: 2027-12-31)"),
            "{message}"
        );
    }
}
