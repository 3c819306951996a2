//! Request-target normalisation: the only way a raw path becomes something the router sees.
//!
//! The contract is that routing, authorization and forwarding all act on the same canonical
//! path, so two spellings of one target (`/a/%62`, `/a//b/../b`) can never be routed one way
//! and interpreted by the upstream another. Getting this wrong lets a caller escape a service
//! prefix or reach an operation that was never declared. Ambiguous spellings that upstream
//! servers disagree on are refused rather than guessed: an encoded slash (`%2F`), a backslash
//! (raw or `%5C`), NUL and other control characters, invalid percent escapes or UTF-8, and dot
//! segments that climb above the root.

use std::fmt::Write as _;

use crate::percent::{self, Plus};

/// A normalised path: its decoded segments, without empty and dot segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    segments: Vec<String>,
}

/// Why a raw path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRejected {
    #[error("the request target is not an absolute path")]
    NotAbsolute,
    #[error("the path has an invalid percent escape")]
    BadEscape,
    #[error("the path is not valid UTF-8 once decoded")]
    NotUtf8,
    #[error("the path contains an encoded slash (%2F), which servers interpret differently")]
    EncodedSlash,
    #[error("the path contains a backslash, which servers interpret differently")]
    Backslash,
    #[error("the path contains a control character")]
    ControlCharacter,
    #[error("the path climbs above the root with `..`")]
    AboveRoot,
}

/// Decodes and normalises an origin-form path (the part of the request target before `?`).
pub fn normalize(raw: &str) -> Result<NormalPath, PathRejected> {
    let rest = raw.strip_prefix('/').ok_or(PathRejected::NotAbsolute)?;
    let mut segments: Vec<String> = Vec::new();
    for raw_segment in rest.split('/') {
        let segment = decode_segment(raw_segment)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(PathRejected::AboveRoot)?;
            }
            _ => segments.push(segment),
        }
    }
    Ok(NormalPath { segments })
}

fn decode_segment(raw: &str) -> Result<String, PathRejected> {
    if !raw.contains('%') {
        check_chars(raw)?;
        return Ok(raw.to_owned());
    }
    let bytes = percent::decode(raw, Plus::Literal).map_err(|_| PathRejected::BadEscape)?;
    let decoded = String::from_utf8(bytes).map_err(|_| PathRejected::NotUtf8)?;
    if decoded.contains('/') {
        return Err(PathRejected::EncodedSlash);
    }
    check_chars(&decoded)?;
    Ok(decoded)
}

fn check_chars(segment: &str) -> Result<(), PathRejected> {
    for c in segment.chars() {
        if c == '\\' {
            return Err(PathRejected::Backslash);
        }
        if c.is_control() {
            return Err(PathRejected::ControlCharacter);
        }
    }
    Ok(())
}

// === impl NormalPath ===

impl NormalPath {
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The canonical, percent-encoded form of the segments from `from` on, starting with `/`.
    /// This is what an upstream receives: exactly the path that was routed.
    pub fn encoded_from(&self, from: usize) -> String {
        let mut out = String::new();
        for segment in self.segments.iter().skip(from) {
            out.push('/');
            encode_segment(&mut out, segment);
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }
}

/// Appends `segment` percent-encoded as one path segment (every byte outside `pchar`).
pub fn encode_segment(out: &mut String, segment: &str) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{}", percent::encode(segment, percent::SEGMENT));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(raw: &str) -> Vec<String> {
        normalize(raw).unwrap().segments
    }

    #[test]
    fn removes_dot_and_empty_segments() {
        assert_eq!(segs("/a/b/c"), ["a", "b", "c"]);
        assert_eq!(segs("/a//b///c/"), ["a", "b", "c"]);
        assert_eq!(segs("/a/./b/../c"), ["a", "c"]);
        assert_eq!(segs("/a/%2e%2E/c"), ["c"]);
        assert_eq!(segs("/a/%2e/c"), ["a", "c"]);
        assert_eq!(segs("/"), Vec::<String>::new());
    }

    #[test]
    fn decodes_and_reencodes_canonically() {
        let p = normalize("/dukcapil/penduduk/%33%32%30%31").unwrap();
        assert_eq!(p.segments(), ["dukcapil", "penduduk", "3201"]);
        assert_eq!(p.encoded_from(2), "/3201");
        let p = normalize("/a/b%20c/%C3%A9").unwrap();
        assert_eq!(p.encoded_from(0), "/a/b%20c/%C3%A9");
        assert_eq!(normalize("/a").unwrap().encoded_from(1), "/");
    }

    #[test]
    fn refuses_ambiguous_spellings() {
        assert_eq!(normalize("a/b"), Err(PathRejected::NotAbsolute));
        assert_eq!(normalize("*"), Err(PathRejected::NotAbsolute));
        assert_eq!(normalize("/a%2fb"), Err(PathRejected::EncodedSlash));
        assert_eq!(normalize("/a%2Fb"), Err(PathRejected::EncodedSlash));
        assert_eq!(normalize("/a%5cb"), Err(PathRejected::Backslash));
        assert_eq!(normalize("/a\\b"), Err(PathRejected::Backslash));
        assert_eq!(normalize("/a%00"), Err(PathRejected::ControlCharacter));
        assert_eq!(normalize("/a%zz"), Err(PathRejected::BadEscape));
        assert_eq!(normalize("/a%2"), Err(PathRejected::BadEscape));
        // A sign or a space is not a hex digit: `%+5` is not 0x05.
        assert_eq!(normalize("/a%+5"), Err(PathRejected::BadEscape));
        assert_eq!(normalize("/a%-5"), Err(PathRejected::BadEscape));
        assert_eq!(normalize("/a% 5"), Err(PathRejected::BadEscape));
        assert_eq!(normalize("/a%ff"), Err(PathRejected::NotUtf8));
        assert_eq!(normalize("/.."), Err(PathRejected::AboveRoot));
        assert_eq!(normalize("/a/../../b"), Err(PathRejected::AboveRoot));
        assert_eq!(normalize("/%2e%2e/etc"), Err(PathRejected::AboveRoot));
    }
}
