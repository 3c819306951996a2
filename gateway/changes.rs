//! Change control: what a configuration changed against the one before it, and the archive of
//! every configuration applied.
//!
//! The `start` and `reload` records of the audit log carry the file's SHA-256 and the policy
//! diff against the previous generation — agencies, peers, services, operations, agreements
//! and the other sections added, removed or changed, field by field, with the old and the new
//! value (the TOML holds no secret: `upstream_auth` secrets are refused in it). Each applied
//! file is kept read-only as `<data_dir>/config/<sha256>.toml`, where `penghubung audit config`
//! and the review report find it again; `<data_dir>/config/current` names the one in force.
//!
//! The diff reads the TOML as written, not the compiled snapshot: what an inspector compares is
//! what the operator wrote.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What kind of entry changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A table other than the lists below: `[gateway]`, `[tls]`, `[governance]`, ...
    Section,
    Agency,
    Peer,
    Service,
    /// An operation of a service; its id is `service/operation`.
    Operation,
    Agreement,
}

/// Added, removed, or changed in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Added,
    Removed,
    Changed,
}

/// One entry that differs between two configurations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub kind: Kind,
    pub id: String,
    pub change: Action,
    /// For `changed`: each field that differs. An added or removed entry is read whole in the
    /// archived file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

/// One field of a changed entry: its value before and after (absent: not set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

/// The lists of entries, the kind each holds and the key that names an entry.
const LISTS: [(&str, Kind, &str); 4] = [
    ("agencies", Kind::Agency, "code"),
    ("peers", Kind::Peer, "id"),
    ("services", Kind::Service, "id"),
    ("agreements", Kind::Agreement, "id"),
];

/// What `new` changes against `old` (`None`: nothing came before, so everything is added).
/// Both are configuration texts; a text that is not TOML is an error.
pub fn between(old: Option<&str>, new: &str) -> Result<Vec<Change>, toml::de::Error> {
    let old: toml::Table = match old {
        Some(text) => text.parse()?,
        None => toml::Table::new(),
    };
    let new: toml::Table = new.parse()?;
    let mut out = Vec::new();
    // Sections first, by name.
    let is_list = |key: &str| LISTS.iter().any(|(name, ..)| *name == key);
    for key in keys(&old, &new).into_iter().filter(|k| !is_list(k)) {
        entry(
            &mut out,
            Kind::Section,
            key,
            old.get(key),
            new.get(key),
            &[],
        );
    }
    for (name, kind, key) in LISTS {
        let (before, after) = (by_id(old.get(name), key), by_id(new.get(name), key));
        for id in ids(&before, &after) {
            let (was, is) = (find(&before, id), find(&after, id));
            let nested = if kind == Kind::Service {
                &["operations"][..]
            } else {
                &[]
            };
            entry(&mut out, kind, id, was, is, nested);
            if kind == Kind::Service {
                let before_ops = by_id(was.and_then(|s| s.get("operations")), "id");
                let after_ops = by_id(is.and_then(|s| s.get("operations")), "id");
                for op in ids(&before_ops, &after_ops) {
                    let (was_op, is_op) = (find(&before_ops, op), find(&after_ops, op));
                    // An operation comes and goes with its service: said once, by the service.
                    if was.is_some() && is.is_some() {
                        let id = format!("{id}/{op}");
                        entry(&mut out, Kind::Operation, &id, was_op, is_op, &[]);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Adds the change between `was` and `is` (either absent), ignoring the `skip` fields.
fn entry(
    out: &mut Vec<Change>,
    kind: Kind,
    id: &str,
    was: Option<&toml::Value>,
    is: Option<&toml::Value>,
    skip: &[&str],
) {
    let change = |change, fields| Change {
        kind,
        id: id.to_owned(),
        change,
        fields,
    };
    match (was, is) {
        (None, None) => {}
        (None, Some(_)) => out.push(change(Action::Added, Vec::new())),
        (Some(_), None) => out.push(change(Action::Removed, Vec::new())),
        (Some(was), Some(is)) => {
            let fields = match (was.as_table(), is.as_table()) {
                (Some(a), Some(b)) => keys(a, b)
                    .into_iter()
                    .filter(|k| !skip.contains(k))
                    .filter(|k| a.get(*k) != b.get(*k))
                    .map(|k| FieldChange {
                        field: k.to_owned(),
                        old: a.get(k).map(json),
                        new: b.get(k).map(json),
                    })
                    .collect(),
                _ if was != is => vec![FieldChange {
                    field: String::new(),
                    old: Some(json(was)),
                    new: Some(json(is)),
                }],
                _ => Vec::new(),
            };
            if !fields.is_empty() {
                out.push(change(Action::Changed, fields));
            }
        }
    }
}

/// The keys of `b` in order, then those only in `a`.
fn keys<'a>(a: &'a toml::Table, b: &'a toml::Table) -> Vec<&'a str> {
    let mut out: Vec<&str> = b.keys().map(String::as_str).collect();
    out.extend(a.keys().map(String::as_str).filter(|k| !b.contains_key(*k)));
    out
}

/// The entries of a list by their `key`, in order; entries without one are not policy.
fn by_id<'a>(list: Option<&'a toml::Value>, key: &str) -> Vec<(&'a str, &'a toml::Value)> {
    list.and_then(toml::Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| Some((e.get(key)?.as_str()?, e)))
                .collect()
        })
        .unwrap_or_default()
}

fn ids<'a>(a: &[(&'a str, &toml::Value)], b: &[(&'a str, &toml::Value)]) -> Vec<&'a str> {
    let mut out: Vec<&str> = b.iter().map(|(id, _)| *id).collect();
    let gone: Vec<&str> = a
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !out.contains(id))
        .collect();
    out.extend(gone);
    out
}

fn find<'a>(list: &[(&str, &'a toml::Value)], id: &str) -> Option<&'a toml::Value> {
    list.iter().find(|(i, _)| *i == id).map(|(_, v)| *v)
}

/// A TOML value as JSON; dates and times as their TOML text.
fn json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::from(s.as_str()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::from(*b),
        toml::Value::Datetime(d) => Value::from(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.iter().map(|(k, v)| (k.clone(), json(v))).collect())
        }
    }
}

/// Why an archived configuration could not be given.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("no configuration `{digest}` is archived in {}", dir.display())]
    NotFound { digest: String, dir: PathBuf },
    #[error("`{digest}` names more than one archived configuration: {}", found.join(", "))]
    Ambiguous { digest: String, found: Vec<String> },
    #[error("`{digest}` is not a SHA-256 (hex, at least 8 digits)")]
    NotADigest { digest: String },
    #[error("{} does not hash to its name (sha256:{actual}): it was altered", file.display())]
    Altered { file: PathBuf, actual: String },
    #[error("configuration {digest} is not TOML: {source}")]
    NotToml {
        digest: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `<data_dir>/config`: every configuration applied, by the SHA-256 of its text.
#[derive(Debug, Clone)]
pub struct Archive {
    dir: PathBuf,
}

/// The file naming the configuration in force.
const CURRENT: &str = "current";

impl Archive {
    pub fn under(data_dir: &Path) -> Archive {
        Archive {
            dir: data_dir.join("config"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps `text` as `<digest>.toml`, read-only, unless it is already there.
    pub fn keep(&self, digest: &str, text: &str) -> Result<(), ArchiveError> {
        let path = self.dir.join(format!("{digest}.toml"));
        if path.exists() {
            return Ok(());
        }
        let io = |source| ArchiveError::Io {
            path: path.clone(),
            source,
        };
        crate::durable::replace(&path, text.as_bytes()).map_err(io)?;
        crate::durable::read_only(&path).map_err(io)
    }

    /// Names `digest` as the configuration in force.
    pub fn set_current(&self, digest: &str) -> Result<(), ArchiveError> {
        let path = self.dir.join(CURRENT);
        crate::durable::replace(&path, format!("{digest}\n").as_bytes())
            .map_err(|source| ArchiveError::Io { path, source })
    }

    /// The configuration in force when the gateway last stopped: its digest and text.
    pub fn current(&self) -> Result<Option<(String, String)>, ArchiveError> {
        let path = self.dir.join(CURRENT);
        match std::fs::read_to_string(&path) {
            Ok(digest) => self.read(digest.trim()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ArchiveError::Io { path, source }),
        }
    }

    /// The archived configuration whose SHA-256 is or starts with `digest` (at least 8 hex
    /// digits), checked against its name: its full digest and text.
    pub fn read(&self, digest: &str) -> Result<(String, String), ArchiveError> {
        let digest = digest.strip_prefix("sha256:").unwrap_or(digest);
        if digest.len() < 8 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ArchiveError::NotADigest {
                digest: digest.to_owned(),
            });
        }
        let wanted = digest.to_ascii_lowercase();
        let found: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|d| d.starts_with(&wanted))
            .collect();
        let full = match found.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(ArchiveError::NotFound {
                    digest: digest.to_owned(),
                    dir: self.dir.clone(),
                })
            }
            _ => {
                return Err(ArchiveError::Ambiguous {
                    digest: digest.to_owned(),
                    found,
                })
            }
        };
        let path = self.dir.join(format!("{full}.toml"));
        let text = std::fs::read_to_string(&path).map_err(|source| ArchiveError::Io {
            path: path.clone(),
            source,
        })?;
        let actual = crate::keys::sha256_hex(text.as_bytes());
        if actual != full {
            return Err(ArchiveError::Altered { file: path, actual });
        }
        Ok((full, text))
    }

    /// The digests archived, sorted.
    pub fn list(&self) -> Result<Vec<String>, ArchiveError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(ArchiveError::Io {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let digest = name.strip_suffix(".toml")?;
                (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| digest.to_owned())
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = r#"
[gateway]
id = "spl.test"
[governance]
owner_consent = "warn"
[[agencies]]
code = "dinkes"
clearance = "terbatas"
[[agencies]]
code = "bappeda"
[[services]]
id = "penduduk"
owner = "disdukcapil"
[[services.operations]]
id = "get"
method = "GET"
[[services.operations]]
id = "gone"
method = "GET"
[[agreements]]
id = "PKS-1"
valid_until = 2026-12-31
rate = "10/min"
"#;

    const NEW: &str = r#"
[gateway]
id = "spl.test"
[governance]
owner_consent = "required"
[[agencies]]
code = "bappeda"
[[agencies]]
code = "dinkes"
clearance = "rahasia"
[[peers]]
id = "prov"
[[services]]
id = "penduduk"
owner = "disdukcapil"
[[services.operations]]
id = "get"
method = "POST"
[[services.operations]]
id = "new"
method = "GET"
[[agreements]]
id = "PKS-1"
valid_until = 2027-06-30
"#;

    #[test]
    fn each_kind_of_change_is_named_field_by_field() {
        let changes = between(Some(OLD), NEW).unwrap();
        let said: Vec<String> = changes
            .iter()
            .map(|c| {
                let fields: Vec<String> = c
                    .fields
                    .iter()
                    .map(|f| format!("{}:{:?}->{:?}", f.field, f.old, f.new))
                    .collect();
                format!("{:?} {} {:?} {}", c.kind, c.id, c.change, fields.join(" "))
            })
            .collect();
        assert_eq!(
            said,
            [
                r#"Section governance Changed owner_consent:Some(String("warn"))->Some(String("required"))"#,
                r#"Agency dinkes Changed clearance:Some(String("terbatas"))->Some(String("rahasia"))"#,
                "Peer prov Added ",
                r#"Operation penduduk/get Changed method:Some(String("GET"))->Some(String("POST"))"#,
                "Operation penduduk/new Added ",
                "Operation penduduk/gone Removed ",
                r#"Agreement PKS-1 Changed valid_until:Some(String("2026-12-31"))->Some(String("2027-06-30")) rate:Some(String("10/min"))->None"#,
            ]
        );
    }

    #[test]
    fn moving_an_entry_is_no_change_and_the_first_start_adds_everything() {
        let reordered = OLD.replace(
            "[[agencies]]\ncode = \"dinkes\"\nclearance = \"terbatas\"\n[[agencies]]\ncode = \"bappeda\"\n",
            "[[agencies]]\ncode = \"bappeda\"\n[[agencies]]\ncode = \"dinkes\"\nclearance = \"terbatas\"\n",
        );
        assert_ne!(reordered, OLD);
        assert_eq!(between(Some(OLD), &reordered).unwrap(), Vec::new());
        let first = between(None, OLD).unwrap();
        assert!(first.iter().all(|c| c.change == Action::Added));
        let ids: Vec<&str> = first.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "gateway",
                "governance",
                "dinkes",
                "bappeda",
                "penduduk",
                "PKS-1"
            ]
        );
    }

    #[test]
    fn the_archive_keeps_each_text_read_only_and_finds_it_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::under(dir.path());
        assert!(archive.current().unwrap().is_none());
        let digest = crate::keys::sha256_hex(OLD.as_bytes());
        archive.keep(&digest, OLD).unwrap();
        archive.keep(&digest, OLD).unwrap();
        archive.set_current(&digest).unwrap();
        assert_eq!(
            archive.current().unwrap(),
            Some((digest.clone(), OLD.to_owned()))
        );
        assert_eq!(archive.read(&digest[..12]).unwrap().1, OLD);
        let file = archive.dir().join(format!("{digest}.toml"));
        assert!(std::fs::metadata(&file).unwrap().permissions().readonly());
        assert!(matches!(
            archive.read("0123"),
            Err(ArchiveError::NotADigest { .. })
        ));
        assert!(matches!(
            archive.read("00000000"),
            Err(ArchiveError::NotFound { .. })
        ));
        // Altered behind the gateway's back: refused, not shown.
        let mut permissions = std::fs::metadata(&file).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        permissions.set_readonly(false);
        std::fs::set_permissions(&file, permissions).unwrap();
        std::fs::write(&file, NEW).unwrap();
        assert!(matches!(
            archive.read(&digest),
            Err(ArchiveError::Altered { .. })
        ));
    }
}
