//! Percent-encoding, one codec for the whole gateway (`percent-encoding` underneath): strict
//! decoding, and the encode sets the gateway writes with.
//!
//! `percent-encoding` decodes leniently — a `%` not followed by two hex digits stays as it is.
//! A gateway must not be lenient there: an upstream that reads `%+5` or `% 5` another way than
//! the gateway did would act on a value the gateway never checked. So every `%` must be
//! followed by two hex digits (no sign, no space), or the text is refused.

use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};

/// Everything but RFC 3986 `pchar` (unreserved, sub-delims, `:` and `@`): what a path segment
/// must encode. `%` is encoded too, so an encoded segment decodes to what was encoded.
pub const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// Free text in a header value (a purpose, a `grpc-message`): visible ASCII and space stay,
/// control characters and `%` are encoded, and non-ASCII as its UTF-8 bytes (RFC 8187 style,
/// as the gRPC spec asks of `grpc-message`).
pub const TEXT: &AsciiSet = &CONTROLS.add(b'%');

/// A file path in a `file://` URI: what would end or split the path.
pub const FILE_PATH: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'#').add(b'?');

/// A `%` not followed by two hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an invalid percent escape")]
pub struct BadEscape;

/// How `+` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plus {
    /// As itself (path segments).
    Literal,
    /// As a space (`application/x-www-form-urlencoded`, query strings).
    Space,
}

/// Decodes `text` to bytes, refusing any `%` not followed by exactly two hex digits.
pub fn decode(text: &str, plus: Plus) -> Result<Vec<u8>, BadEscape> {
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(offset) = memchr::memchr(b'%', &bytes[at..]) {
        let escape = at + offset;
        match bytes.get(escape + 1..escape + 3) {
            Some([hi, lo]) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => at = escape + 3,
            _ => return Err(BadEscape),
        }
    }
    Ok(match plus {
        Plus::Literal => percent_decode(bytes).collect(),
        Plus::Space if bytes.contains(&b'+') => {
            let spaced: Vec<u8> = bytes
                .iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect();
            percent_decode(&spaced).collect()
        }
        Plus::Space => percent_decode(bytes).collect(),
    })
}

/// Free text (a purpose, often Indonesian with punctuation; a `grpc-message`) as a header
/// value: header values must be visible ASCII, so other bytes and `%` itself are
/// percent-encoded as UTF-8 (as RFC 8187 and the gRPC spec do).
pub fn encode_text(text: &str) -> String {
    encode(text, TEXT).to_string()
}

/// `text` with every byte of `set` (and every non-ASCII byte) percent-encoded.
pub fn encode<'a>(text: &'a str, set: &'static AsciiSet) -> impl std::fmt::Display + 'a {
    utf8_percent_encode(text, set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_must_be_two_hex_digits() {
        for bad in ["%+5", "%-5", "% 5", "%5", "%", "a%zz", "%0x1", "%\u{e9}9"] {
            assert_eq!(decode(bad, Plus::Literal), Err(BadEscape), "{bad:?}");
            assert_eq!(decode(bad, Plus::Space), Err(BadEscape), "{bad:?}");
        }
        assert_eq!(decode("%41%6a", Plus::Literal).unwrap(), b"Aj");
        assert_eq!(decode("a+b%2B", Plus::Literal).unwrap(), b"a+b+");
        assert_eq!(decode("a+b%2B", Plus::Space).unwrap(), b"a b+");
    }

    #[test]
    fn segments_keep_pchar_and_encode_the_rest() {
        assert_eq!(
            encode("a b/c%d?é~!$&'()*+,;=:@", SEGMENT).to_string(),
            "a%20b%2Fc%25d%3F%C3%A9~!$&'()*+,;=:@"
        );
        assert_eq!(
            encode("Verifikasi 100% (JKN)\né", TEXT).to_string(),
            "Verifikasi 100%25 (JKN)%0A%C3%A9"
        );
    }
}
