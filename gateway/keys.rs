//! The key material the configuration names, loaded once: the audit log's signing key
//! (`[audit] signing_key`) and its redaction keys (`[audit] redaction_key`). What the audit log
//! does with them lives in [`crate::audit`]; here are only the keys and their primitives, so
//! that the configuration can hold them without depending on the audit log.

use data_encoding::HEXLOWER;
use ring::signature::{Ed25519KeyPair, KeyPair};
use ring::{digest, hmac};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

pub fn sha256_hex(bytes: &[u8]) -> String {
    HEXLOWER.encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Signs tree heads with the key of `[audit] signing_key`.
pub struct Signer {
    key: Ed25519KeyPair,
}

/// The redaction keys: the first hashes what is written, all are tried by `audit find`.
pub struct Redactor {
    keys: Vec<Key>,
}

struct Key {
    hmac: hmac::Key,
    /// A short hash of the key that records name (never the key).
    id: String,
}

/// A redaction key file that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a redaction key must be 64 hex digits or at least 32 bytes")]
pub struct BadRedactionKey;

// === impl Redactor ===

impl Redactor {
    /// A key file holds 64 hex digits (as `pki init` writes it) or at least 32 raw bytes.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Redactor, BadRedactionKey> {
        Ok(Redactor {
            keys: vec![Key::from_file_bytes(bytes)?],
        })
    }

    /// The keys of `redactors`, in order: the first one's writing key writes; `None` for no
    /// keys at all.
    pub fn joined(redactors: Vec<Redactor>) -> Option<Redactor> {
        let keys: Vec<Key> = redactors.into_iter().flat_map(|r| r.keys).collect();
        (!keys.is_empty()).then_some(Redactor { keys })
    }

    /// `hmac-sha256:<hex>` of a value, with the writing key.
    pub fn redact(&self, value: &str) -> String {
        self.keys[0].redact(value)
    }

    /// The value as each key would have written it, for searching a log written over several
    /// keys.
    pub fn candidates(&self, value: &str) -> Vec<String> {
        self.keys.iter().map(|k| k.redact(value)).collect()
    }

    /// The id of the writing key, as records name it.
    pub fn key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// The ids of all keys, writing key first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }
}

// === impl Key ===

impl Key {
    fn from_file_bytes(bytes: &[u8]) -> Result<Key, BadRedactionKey> {
        let text = String::from_utf8_lossy(bytes);
        let trimmed = text.trim();
        let hex = (trimmed.len() == 64)
            .then(|| {
                data_encoding::HEXLOWER_PERMISSIVE
                    .decode(trimmed.as_bytes())
                    .ok()
            })
            .flatten();
        let key = if let Some(key) = hex {
            key
        } else if bytes.len() >= 32 {
            bytes.to_vec()
        } else {
            return Err(BadRedactionKey);
        };
        Ok(Key {
            hmac: hmac::Key::new(hmac::HMAC_SHA256, &key),
            id: key_id(&key),
        })
    }

    fn redact(&self, value: &str) -> String {
        format!(
            "hmac-sha256:{}",
            HEXLOWER.encode(hmac::sign(&self.hmac, value.as_bytes()).as_ref())
        )
    }
}

/// The first 8 bytes, in hex, of SHA-256 over `penghubung-redaction-key-id\n` and the key.
pub fn key_id(key: &[u8]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(b"penghubung-redaction-key-id\n");
    context.update(key);
    HEXLOWER.encode(&context.finish().as_ref()[..8])
}

// === impl Signer ===

impl Signer {
    /// Reads an Ed25519 PKCS#8 PEM key (as `penghubung pki init` writes it).
    pub fn from_pem_file(path: &std::path::Path) -> Result<Signer, String> {
        let key =
            PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e:?}", path.display()))?;
        let PrivateKeyDer::Pkcs8(der) = key else {
            return Err(format!("{}: not a PKCS#8 key", path.display()));
        };
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map_err(|e| format!("{}: not an Ed25519 key: {e}", path.display()))?;
        Ok(Signer { key })
    }

    pub fn sign(&self, message: &[u8]) -> String {
        HEXLOWER.encode(self.key.sign(message).as_ref())
    }

    /// The public key, 32 bytes as 64 hex digits: what auditors verify with.
    pub fn public_key_hex(&self) -> String {
        HEXLOWER.encode(self.key.public_key().as_ref())
    }
}
