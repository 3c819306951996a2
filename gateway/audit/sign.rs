//! Signed tree heads: the gateway's Ed25519 signature over the size and root of the Merkle tree
//! of every record before the head. The signed message is plain text, so an auditor's own
//! program can rebuild it byte for byte (docs/audit-format.md):
//!
//! ```text
//! penghubung-tree-head-v1\n<gateway id>\n<tree size>\n<root, 64 lowercase hex>\n<time>\n
//! ```

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use data_encoding::HEXLOWER;

/// Signs tree heads with the key of `[audit] signing_key`.
pub struct Signer {
    key: Ed25519KeyPair,
}

/// The exact bytes a tree-head signature covers.
pub fn tree_head_message(gateway: &str, size: u64, root_hex: &str, time: &str) -> Vec<u8> {
    format!("penghubung-tree-head-v1\n{gateway}\n{size}\n{root_hex}\n{time}\n").into_bytes()
}

/// Whether `signature_hex` is `public_key`'s signature over `message`.
pub fn verify_signature(public_key: &[u8], message: &[u8], signature_hex: &str) -> bool {
    let Some(signature) = unhex(signature_hex) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, &signature)
        .is_ok()
}

/// Hex (either case, surrounding whitespace ignored) to bytes; `None` for anything else — a
/// sign, an odd length, a non-hex digit.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.trim().as_bytes())
        .ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhex_takes_hex_digits_only() {
        assert_eq!(unhex(" 00fF\n"), Some(vec![0, 255]));
        // `u8::from_str_radix` read "+5" as 5.
        for bad in ["+5", "-5", "0", "0g", "+0ff", "0+5a"] {
            assert_eq!(unhex(bad), None, "{bad:?}");
        }
    }
}
