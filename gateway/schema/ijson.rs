//! Reading a body as I-JSON (RFC 7493): JSON whose objects never repeat a member name and
//! whose strings are valid Unicode — the one reading of a body that the gateway and every
//! owner's parser share.
//!
//! A document with a duplicate member is read differently by different parsers: `serde_json`
//! keeps the last `nik`, many others the first. If the gateway validated one and forwarded the
//! bytes to an owner that reads the other, the check would be worth nothing
//! (`{"nik":"not-a-nik; DROP TABLE","nama":"A","nik":"7208020203850002"}` passed a schema
//! that the first `nik` breaks). So such a document is refused, whoever sent it. Lone
//! surrogate escapes (`"\ud800"`) cannot be read as Unicode by anyone and are refused by
//! `serde_json` itself. The in-place reader ([`super::tape`]) refuses both too, and hands the
//! document here for the words of the refusal.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body is not I-JSON.
#[derive(Debug, thiserror::Error)]
pub enum NotJson {
    /// Not JSON at all, or not valid Unicode (`serde_json`'s own words).
    #[error("{0}")]
    Syntax(#[source] serde_json::Error),
    /// An object names a member twice (RFC 7493 §2.3).
    #[error("member `{name}` appears twice in the object at `{}` (RFC 7493 I-JSON: member names must be unique)", if pointer.is_empty() { "/" } else { pointer })]
    DuplicateMember {
        /// JSON pointer to the object.
        pointer: String,
        name: String,
    },
}

/// Parses `bytes` as I-JSON into a `serde_json::Value`.
pub fn from_slice(bytes: &[u8]) -> Result<Value, NotJson> {
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let seed = Strict {
        duplicate: &duplicate,
        pointer: String::new(),
    };
    let parsed = seed
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, duplicate.into_inner()) {
        (_, Some((pointer, name))) => Err(NotJson::DuplicateMember { pointer, name }),
        (Ok(value), None) => Ok(value),
        (Err(e), None) => Err(NotJson::Syntax(e)),
    }
}

/// A value at `pointer`; the first duplicate member found is left in `duplicate`.
struct Strict<'a> {
    duplicate: &'a RefCell<Option<(String, String)>>,
    pointer: String,
}

impl<'a> Strict<'a> {
    fn child(&self, token: &str) -> Strict<'a> {
        let escaped = token.replace('~', "~0").replace('/', "~1");
        Strict {
            duplicate: self.duplicate,
            pointer: format!("{}/{escaped}", self.pointer),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child(&out.len().to_string()))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if out.contains_key(&name) {
                let found = (self.pointer.clone(), name);
                *self.duplicate.borrow_mut() = Some(found);
                return Err(de::Error::custom("duplicate member name"));
            }
            let value = map.next_value_seed(self.child(&name))?;
            out.insert(name, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::tape::Document;

    #[test]
    fn duplicate_members_are_refused_by_both_readers() {
        for (text, pointer, name) in [
            (
                r#"{"nik":"not-a-nik; DROP TABLE","nama":"A","nik":"7208020203850002"}"#,
                "",
                "nik",
            ),
            (r#"{"a":{"b":1,"b":1}}"#, "/a", "b"),
            (r#"[0,{"x/y":[{"k":1,"k":2}]}]"#, "/1/x~1y/0", "k"),
            (r#"{"\u006eik":1,"nik":2}"#, "", "nik"),
        ] {
            assert!(Document::parse(text.as_bytes()).is_none(), "{text}");
            match from_slice(text.as_bytes()) {
                Err(NotJson::DuplicateMember {
                    pointer: p,
                    name: n,
                }) => {
                    assert_eq!((p.as_str(), n.as_str()), (pointer, name), "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
            // serde_json alone keeps the last: the reading this module exists to refuse.
            assert!(serde_json::from_str::<Value>(text).is_ok());
        }
    }

    #[test]
    fn lone_surrogates_are_refused_by_both_readers() {
        for text in [
            r#"{"nama":"\ud800"}"#,
            r#"["\udc00"]"#,
            r#""\ud800\u0041""#,
            r#""\ud83d""#,
        ] {
            assert!(Document::parse(text.as_bytes()).is_none(), "{text}");
            assert!(
                matches!(from_slice(text.as_bytes()), Err(NotJson::Syntax(_))),
                "{text}"
            );
        }
        // A complete pair is one character, for both.
        let pair = r#"{"emoji":"\ud83d\ude00"}"#;
        assert!(Document::parse(pair.as_bytes()).is_some());
        assert_eq!(from_slice(pair.as_bytes()).unwrap()["emoji"], "\u{1f600}");
    }

    #[test]
    fn documents_read_the_same_as_serde_json_reads_them() {
        for text in [
            r#"{"a":[1,-2,3.5,1e3,true,false,null,"x\n"],"b":{"c":{}}}"#,
            "[]",
            "  0 ",
            r#""\u00e9""#,
            "18446744073709551615",
            "-9223372036854775808",
        ] {
            let expected: Value = serde_json::from_str(text).unwrap();
            assert_eq!(from_slice(text.as_bytes()).unwrap(), expected, "{text}");
        }
        for bad in ["", "{", "[1,]", "01", "1 2", "{\"a\":1}x", "NaN"] {
            assert!(
                matches!(from_slice(bad.as_bytes()), Err(NotJson::Syntax(_))),
                "{bad}"
            );
        }
    }
}
