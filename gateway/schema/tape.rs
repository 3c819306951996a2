//! A JSON body read in place for validation: one flat array of slots over the body's bytes
//! (strings without escapes and object keys are borrowed, numbers parsed once), which
//! `jsonschema` validates through its custom-representation traits. It replaces building a
//! `serde_json::Value` — a `BTreeMap` and a `String` per key and string — for every request and
//! response body on the hot path.
//!
//! It accepts a document only when `serde_json` would, meaning the same: [`Document::parse`]
//! returns `None` for anything it does not read exactly as `serde_json::from_slice::<Value>`
//! does — malformed JSON, but also duplicate keys (where `serde_json` keeps the last), lone
//! surrogate escapes and nesting past 100 levels — and the caller then takes the `serde_json`
//! path ([`super::ijson`]), which decides and words the error: duplicate member names and lone
//! surrogates are refused there too (RFC 7493 I-JSON). The tests hold the two readers to the
//! same answers.

use std::borrow::Cow;
use std::collections::HashMap;

use jsonschema::json::{cmp, Array, Json, Node, NodeIdentity, Object};
use jsonschema::JsonType;
use serde_json::{Number, Value};

/// Deeper documents go to `serde_json` (whose own limit is 128).
const MAX_DEPTH: usize = 100;

/// Objects with more members than this get a hash index; smaller ones are scanned.
const SCANNED: usize = 16;

/// The representation `jsonschema` validates: a [`Document`]'s slots.
pub struct Tape;

/// A parsed body.
#[derive(Default)]
pub struct Document<'a> {
    text: &'a str,
    slots: Vec<Slot>,
    /// Strings that had escapes, decoded.
    unescaped: Vec<String>,
    numbers: Vec<Number>,
    /// For objects of more than [`SCANNED`] members (by slot): member name → value slot, so
    /// that a lookup in a large object is not a scan (a schema's `properties` looks up every
    /// name it declares).
    index: HashMap<usize, HashMap<String, usize>>,
}

/// One value. Containers are followed by their children (an object's as key, value, key,
/// value, ...); `end` is the index after the last descendant.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Null,
    Bool(bool),
    Number(u32),
    /// A string without escapes: `text[start..end]`.
    Str(u32, u32),
    /// A string with escapes: `unescaped[i]`.
    Escaped(u32),
    Array {
        len: u32,
        end: u32,
    },
    Object {
        len: u32,
        end: u32,
    },
}

/// A value in a document: which slot of which document.
#[derive(Clone, Copy)]
pub struct TapeNode<'a> {
    doc: &'a Document<'a>,
    at: usize,
}

/// An object's or array's children.
#[derive(Clone, Copy)]
pub struct Children<'a> {
    doc: &'a Document<'a>,
    at: usize,
    len: usize,
}

pub struct Members<'a> {
    doc: &'a Document<'a>,
    next: usize,
    left: usize,
}

pub struct Elements<'a> {
    doc: &'a Document<'a>,
    next: usize,
    left: usize,
}

// === impl Document ===

impl<'a> Document<'a> {
    /// Reads `bytes` as `serde_json` would, or returns `None` (see the module documentation).
    pub fn parse(bytes: &'a [u8]) -> Option<Document<'a>> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parser = Parser {
            bytes,
            i: 0,
            doc: Document {
                text,
                slots: Vec::with_capacity(bytes.len() / 4 + 1),
                unescaped: Vec::new(),
                numbers: Vec::new(),
                index: HashMap::new(),
            },
            keys: Vec::new(),
        };
        parser.value(0)?;
        parser.space();
        (parser.i == bytes.len()).then_some(parser.doc)
    }

    /// The top-level value.
    pub fn root(&self) -> TapeNode<'_> {
        TapeNode { doc: self, at: 0 }
    }

    /// The index after the value at `at` and its descendants.
    fn after(&self, at: usize) -> usize {
        match self.slots[at] {
            Slot::Array { end, .. } | Slot::Object { end, .. } => end as usize,
            _ => at + 1,
        }
    }

    fn str_at(&self, at: usize) -> Option<&str> {
        match self.slots[at] {
            Slot::Str(start, end) => Some(&self.text[start as usize..end as usize]),
            Slot::Escaped(i) => Some(&self.unescaped[i as usize]),
            _ => None,
        }
    }

    /// The `serde_json::Value` of the value at `at` (for error messages and comparisons).
    fn value_at(&self, at: usize) -> Value {
        match self.slots[at] {
            Slot::Null => Value::Null,
            Slot::Bool(b) => Value::Bool(b),
            Slot::Number(i) => Value::Number(self.numbers[i as usize].clone()),
            Slot::Str(..) | Slot::Escaped(_) => {
                Value::String(self.str_at(at).unwrap_or_default().to_owned())
            }
            Slot::Array { len, .. } => {
                let mut items = Vec::with_capacity(len as usize);
                let mut next = at + 1;
                for _ in 0..len {
                    items.push(self.value_at(next));
                    next = self.after(next);
                }
                Value::Array(items)
            }
            Slot::Object { len, .. } => {
                let mut members = serde_json::Map::new();
                let mut next = at + 1;
                for _ in 0..len {
                    let name = self.str_at(next).unwrap_or_default().to_owned();
                    members.insert(name, self.value_at(next + 1));
                    next = self.after(next + 1);
                }
                Value::Object(members)
            }
        }
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    i: usize,
    doc: Document<'a>,
    /// Scratch: the key slots of the object being checked for duplicates.
    keys: Vec<usize>,
}

impl Parser<'_> {
    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.i) {
            self.i += 1;
        }
    }

    fn push(&mut self, slot: Slot) {
        self.doc.slots.push(slot);
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.space();
        match *self.bytes.get(self.i)? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => {
                let slot = self.string()?;
                self.push(slot);
                Some(())
            }
            b't' => self.literal(b"true", Slot::Bool(true)),
            b'f' => self.literal(b"false", Slot::Bool(false)),
            b'n' => self.literal(b"null", Slot::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], slot: Slot) -> Option<()> {
        if !self.bytes[self.i..].starts_with(word) {
            return None;
        }
        self.i += word.len();
        self.push(slot);
        Some(())
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        self.i += 1;
        let at = self.doc.slots.len();
        self.push(Slot::Null);
        let mut len = 0u32;
        self.space();
        if self.bytes.get(self.i) == Some(&b']') {
            self.i += 1;
        } else {
            loop {
                self.value(depth + 1)?;
                len += 1;
                self.space();
                match self.bytes.get(self.i)? {
                    b',' => self.i += 1,
                    b']' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        let end = u32::try_from(self.doc.slots.len()).ok()?;
        self.doc.slots[at] = Slot::Array { len, end };
        Some(())
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        self.i += 1;
        let at = self.doc.slots.len();
        self.push(Slot::Null);
        let mut len = 0u32;
        self.space();
        if self.bytes.get(self.i) == Some(&b'}') {
            self.i += 1;
        } else {
            loop {
                self.space();
                if self.bytes.get(self.i) != Some(&b'"') {
                    return None;
                }
                let key = self.string()?;
                self.push(key);
                self.space();
                if self.bytes.get(self.i) != Some(&b':') {
                    return None;
                }
                self.i += 1;
                self.value(depth + 1)?;
                len += 1;
                self.space();
                match self.bytes.get(self.i)? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        let end = u32::try_from(self.doc.slots.len()).ok()?;
        self.doc.slots[at] = Slot::Object { len, end };
        self.unique_keys(at, len as usize).then_some(())
    }

    /// Whether the object at `at` names each key once (`serde_json` would keep only the last);
    /// indexes it when it is large.
    fn unique_keys(&mut self, at: usize, len: usize) -> bool {
        let doc = &self.doc;
        let keys = &mut self.keys;
        keys.clear();
        let mut next = at + 1;
        for _ in 0..len {
            keys.push(next);
            next = doc.after(next + 1);
        }
        let name = |k: &usize| doc.str_at(*k).unwrap_or_default();
        if len <= SCANNED {
            return keys
                .iter()
                .enumerate()
                .all(|(i, key)| !keys[..i].iter().any(|k| name(k) == name(key)));
        }
        let mut index = HashMap::with_capacity(len);
        for k in keys.iter() {
            if index.insert(name(k).to_owned(), k + 1).is_some() {
                return false;
            }
        }
        self.doc.index.insert(at, index);
        true
    }

    /// A string at `self.i` (the opening quote).
    fn string(&mut self) -> Option<Slot> {
        let start = self.i + 1;
        let rest = &self.bytes[start..];
        let stop = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[..stop].iter().any(|&b| b < 0x20) {
            return None;
        }
        if rest[stop] == b'"' {
            self.i = start + stop + 1;
            return Some(Slot::Str(
                u32::try_from(start).ok()?,
                u32::try_from(start + stop).ok()?,
            ));
        }
        // Escapes: decode into a string of its own.
        let text = self.doc.text;
        let mut out = String::with_capacity(stop + 16);
        let mut i = start;
        loop {
            let rest = &self.bytes[i..];
            let stop = memchr::memchr2(b'"', b'\\', rest)?;
            if rest[..stop].iter().any(|&b| b < 0x20) {
                return None;
            }
            out.push_str(&text[i..i + stop]);
            i += stop;
            if self.bytes[i] == b'"' {
                self.i = i + 1;
                break;
            }
            let escape = *self.bytes.get(i + 1)?;
            i += 2;
            match escape {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let unit = self.hex4(i)?;
                    i += 4;
                    let c = match unit {
                        0xD800..=0xDBFF => {
                            // Only a complete surrogate pair is read here.
                            if self.bytes.get(i..i + 2)? != b"\\u" {
                                return None;
                            }
                            let low = self.hex4(i + 2)?;
                            if !(0xDC00..=0xDFFF).contains(&low) {
                                return None;
                            }
                            i += 6;
                            char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?
                        }
                        0xDC00..=0xDFFF => return None,
                        _ => char::from_u32(unit)?,
                    };
                    out.push(c);
                }
                _ => return None,
            }
        }
        self.doc.unescaped.push(out);
        Some(Slot::Escaped(
            u32::try_from(self.doc.unescaped.len() - 1).ok()?,
        ))
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.bytes.get(at..at + 4)?;
        digits
            .iter()
            .try_fold(0u32, |n, &d| Some(n * 16 + char::from(d).to_digit(16)?))
    }

    /// A number: plain integers of up to 19 digits are read here; every other form goes
    /// through `serde_json`'s own number parser, so that floats, negatives and `-0` mean what
    /// they mean to it (and what it refuses, such as `1e400`, is refused).
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        let digits = |p: &mut usize, bytes: &[u8]| {
            let from = *p;
            while bytes.get(*p).is_some_and(u8::is_ascii_digit) {
                *p += 1;
            }
            *p - from
        };
        let bytes = self.bytes;
        let mut p = start;
        let negative = bytes[p] == b'-';
        if negative {
            p += 1;
        }
        let int = digits(&mut p, bytes);
        if int == 0 || (int > 1 && bytes[p - int] == b'0') {
            return None;
        }
        let mut plain = !negative && int <= 19;
        if bytes.get(p) == Some(&b'.') {
            p += 1;
            if digits(&mut p, bytes) == 0 {
                return None;
            }
            plain = false;
        }
        if let Some(b'e' | b'E') = bytes.get(p) {
            p += 1;
            if let Some(b'+' | b'-') = bytes.get(p) {
                p += 1;
            }
            if digits(&mut p, bytes) == 0 {
                return None;
            }
            plain = false;
        }
        let literal = &self.doc.text[start..p];
        let number = if plain {
            Number::from(literal.parse::<u64>().ok()?)
        } else {
            serde_json::from_str::<Number>(literal).ok()?
        };
        self.i = p;
        self.doc.numbers.push(number);
        let index = u32::try_from(self.doc.numbers.len() - 1).ok()?;
        self.push(Slot::Number(index));
        Some(())
    }
}

// === impl Tape ===

impl Json for Tape {
    type Node<'a> = TapeNode<'a>;
    type PreparedKey = String;
    type StringBuffer = Document<'static>;

    /// A lookup scans small objects and hashes into large ones (like `serde_json`'s ordered map).
    const KEYS_PER_LOOKUP: usize = 2;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>(
        buffer: &mut Document<'static>,
        string: &str,
        f: impl FnOnce(TapeNode<'_>) -> T,
    ) -> T {
        buffer.slots.clear();
        buffer.slots.push(Slot::Escaped(0));
        match buffer.unescaped.first_mut() {
            Some(held) => {
                held.clear();
                held.push_str(string);
            }
            None => buffer.unescaped.push(string.to_owned()),
        }
        f(TapeNode { doc: buffer, at: 0 })
    }
}

impl<'a> Node<'a, Tape> for TapeNode<'a> {
    type Object = Children<'a>;
    type Array = Children<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<Children<'a>> {
        match self.doc.slots[self.at] {
            Slot::Object { len, .. } => Some(Children {
                doc: self.doc,
                at: self.at,
                len: len as usize,
            }),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<Children<'a>> {
        match self.doc.slots[self.at] {
            Slot::Array { len, .. } => Some(Children {
                doc: self.doc,
                at: self.at,
                len: len as usize,
            }),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        self.doc.str_at(self.at).map(Cow::Borrowed)
    }

    fn as_number(&self) -> Option<&'a Number> {
        match self.doc.slots[self.at] {
            Slot::Number(i) => Some(&self.doc.numbers[i as usize]),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.doc.slots[self.at] {
            Slot::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.doc.slots[self.at], Slot::Null)
    }

    fn json_type(&self) -> JsonType {
        match self.doc.slots[self.at] {
            Slot::Null => JsonType::Null,
            Slot::Bool(_) => JsonType::Boolean,
            Slot::Number(_) => JsonType::Number,
            Slot::Str(..) | Slot::Escaped(_) => JsonType::String,
            Slot::Array { .. } => JsonType::Array,
            Slot::Object { .. } => JsonType::Object,
        }
    }

    fn equals_value(&self, expected: &Value) -> bool {
        match (self.doc.str_at(self.at), expected) {
            (Some(string), Value::String(wanted)) => string == wanted,
            (Some(_), _) => false,
            (None, _) => cmp::equal(&self.doc.value_at(self.at), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(self.doc.value_at(self.at))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        let address = std::ptr::from_ref::<Document<'_>>(self.doc) as usize;
        Some(NodeIdentity::tagged(address, u32::try_from(self.at).ok()?))
    }
}

impl<'a> Object<'a, Tape> for Children<'a> {
    type Node = TapeNode<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, key: &String) -> Option<TapeNode<'a>> {
        if self.len > SCANNED {
            let at = *self.doc.index.get(&self.at)?.get(key.as_str())?;
            return Some(TapeNode { doc: self.doc, at });
        }
        self.members()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value)
    }

    fn members(&self) -> Members<'a> {
        Members {
            doc: self.doc,
            next: self.at + 1,
            left: self.len,
        }
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, TapeNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let key = self.next;
        let doc = self.doc;
        self.next = doc.after(key + 1);
        Some((
            doc.str_at(key).unwrap_or_default(),
            TapeNode { doc, at: key + 1 },
        ))
    }
}

impl<'a> Array<'a, Tape> for Children<'a> {
    type Node = TapeNode<'a>;
    type ElementsIter = Elements<'a>;

    fn len(&self) -> usize {
        self.len
    }

    fn elements(&self) -> Elements<'a> {
        Elements {
            doc: self.doc,
            next: self.at + 1,
            left: self.len,
        }
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = TapeNode<'a>;

    fn next(&mut self) -> Option<TapeNode<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let at = self.next;
        self.next = self.doc.after(at);
        Some(TapeNode { doc: self.doc, at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts the two readers must agree on: `serde_json`'s verdict decides, and wherever the
    /// tape reads a document, it must be the value `serde_json` reads.
    const CORPUS: &[&str] = &[
        r#"{"status":"ok","items":[{"id":1,"name":"item-000001","ok":true}],"pad":"xx"}"#,
        " \t\r\n{ \"a\" : [ 1 , 2 ] , \"b\" : { } , \"c\" : [ ] } \n",
        "null",
        "true",
        "false",
        "0",
        "-0",
        "-0.0",
        "0.0",
        "1",
        "-1",
        "1.5",
        "-1.5e-3",
        "1E2",
        "1e+2",
        "2.5E-300",
        "1e400",
        "-1e400",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "-9223372036854775808",
        "-9223372036854775809",
        "1234567890123456789",
        "12345678901234567890",
        "123456789012345678901234567890",
        "0.1",
        "3.141592653589793238462643383279",
        "01",
        "-01",
        "1.",
        ".5",
        "-",
        "+1",
        "1e",
        "1e+",
        "0x10",
        "NaN",
        "Infinity",
        "--1",
        r#""plain""#,
        r#""""#,
        r#""esc\"aped\\ \/ \b\f\n\r\t""#,
        r#""\u00e9\u4e2d""#,
        r#"{"\u0061":1,"b":2}"#,
        r#""\ud83d\ude00""#,
        r#""\ud83d""#,
        r#""\ude00""#,
        r#""\ud83dx""#,
        r#""\ud83d\u0041""#,
        r#""\u12""#,
        r#""\x""#,
        "\"tab\there\"",
        "\"nl\nhere\"",
        r#""unterminated"#,
        "\"é中😀\"",
        r#"{"a":1,"b":{"a":2}}"#,
        r#"{"a":1,}"#,
        "[1,]",
        "[1 2]",
        r#"{"a" 1}"#,
        r#"{1:2}"#,
        "{",
        "[",
        "}",
        "]",
        "",
        " ",
        "1 2",
        "[] x",
        "\u{feff}{}",
        "tru",
        "nul",
        "falsey",
        r#"[{"x":[{"y":null}]}]"#,
        r#"{"k\"ey":"v"}"#,
    ];

    /// The tape reads `text` exactly as `serde_json` does, or (only where `may_refuse`) hands
    /// a document `serde_json` reads back to it.
    fn check(text: &str, may_refuse: bool) {
        let serde = serde_json::from_str::<Value>(text);
        match (Document::parse(text.as_bytes()), serde) {
            (Some(doc), Ok(value)) => {
                assert_eq!(doc.root().to_value().into_owned(), value, "{text:?}");
            }
            (Some(_), Err(e)) => panic!("the tape read {text:?}, which serde_json refuses: {e}"),
            (None, Ok(_)) => assert!(
                may_refuse,
                "the tape refused {text:?}, which serde_json reads"
            ),
            (None, Err(_)) => {}
        }
    }

    #[test]
    fn the_tape_reads_what_serde_json_reads() {
        for text in CORPUS {
            check(text, false);
        }
        // Duplicate keys: serde_json keeps the last; the tape hands them back.
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"\u0061":1,"a":2}"#,
            r#"[{"x":{"a":1,"a":1}}]"#,
        ] {
            check(text, true);
            assert!(Document::parse(text.as_bytes()).is_none(), "{text}");
        }
        // Nesting: deep enough for both, then too deep for the tape, then for both.
        check(&format!("{}1{}", "[".repeat(100), "]".repeat(100)), false);
        check(&format!("{}1{}", "[".repeat(101), "]".repeat(101)), true);
        check(&format!("{}1{}", "[".repeat(200), "]".repeat(200)), false);
        // Many keys, so that duplicates are found by hashing.
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        check(&format!("{{{}}}", many.join(",")), false);
        let duplicated = format!("{{{},\"k7\":0}}", many.join(","));
        check(&duplicated, true);
        assert!(Document::parse(duplicated.as_bytes()).is_none());
        // Not UTF-8.
        assert!(Document::parse(b"\"\xff\"").is_none());
    }

    #[test]
    fn members_are_found_in_small_and_large_objects() {
        for n in [3, SCANNED, SCANNED + 1, 200] {
            let members: Vec<String> = (0..n).map(|i| format!("\"k\\u0030{i}\":{i}")).collect();
            let text = format!("{{{}}}", members.join(","));
            let doc = Document::parse(text.as_bytes()).unwrap();
            let object = doc.root().as_object().unwrap();
            assert_eq!(Object::len(&object), n);
            for i in 0..n {
                let value = object.get(&format!("k0{i}")).unwrap();
                assert_eq!(
                    value.as_number().unwrap().as_u64(),
                    Some(i as u64),
                    "{n}: k0{i}"
                );
            }
            assert!(object.get(&"k0".to_owned()).is_none());
            assert!(object.get(&format!("k0{n}")).is_none());
            assert_eq!(object.members().count(), n);
        }
    }

    #[test]
    fn numbers_mean_what_they_mean_to_serde_json() {
        for text in [
            "0",
            "7",
            "-7",
            "-0",
            "1.0",
            "1e2",
            "18446744073709551615",
            "1e300",
        ] {
            let doc = Document::parse(text.as_bytes()).unwrap();
            let Value::Number(expected) = serde_json::from_str::<Value>(text).unwrap() else {
                unreachable!()
            };
            let got = doc.root().as_number().unwrap();
            assert_eq!(
                (got.as_u64(), got.as_i64(), got.as_f64().map(f64::to_bits)),
                (
                    expected.as_u64(),
                    expected.as_i64(),
                    expected.as_f64().map(f64::to_bits)
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn the_tape_keeps_the_validator_contract() {
        let text = jsonschema::json::conformance::document().to_string();
        let doc = Document::parse(text.as_bytes()).unwrap();
        jsonschema::json::conformance::assert_conformance::<Tape>(&doc.root());
    }
}
