//! Signed tree heads: the gateway's Ed25519 signature over the size and root of the Merkle tree
//! of every record before the head. The signed message is plain text, so an auditor's own
//! program can rebuild it byte for byte (docs/audit-format.md):
//!
//! ```text
//! penghubung-tree-head-v1\n<gateway id>\n<tree size>\n<root, 64 lowercase hex>\n<time>\n
//! ```

use ring::signature::{UnparsedPublicKey, ED25519};

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
