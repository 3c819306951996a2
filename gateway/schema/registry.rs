//! The schema registry: every schema an operation names, compiled once per snapshot.
//!
//! Names resolve under `[gateway] schemas_dir`; `$ref`s between files there work (each schema's
//! base URI is its `file://` path); every other `$ref` — `http(s)://`, or a file outside the
//! directory — is refused when the snapshot is built, so validation never touches the network
//! and a config cannot read arbitrary files through a schema.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonschema::json::{Json, SerdeJson};
use jsonschema::{Retrieve, Uri, Validator};
use serde_json::Value;

use super::tape::Tape;

/// One compiled schema.
pub struct Schema {
    /// The name operations use, relative to the schemas directory.
    pub name: String,
    /// The file it was read from (canonical).
    pub file: PathBuf,
    pub validator: Validator,
    /// The same schema over [`super::tape`] documents: the fast path for bodies.
    pub fast: Validator<Tape>,
}

/// Compiles schemas by name, each once.
pub struct Registry {
    root: PathBuf,
    compiled: HashMap<String, Arc<Schema>>,
}

/// Resolves `$ref`s to files under the schemas directory, and nothing else.
struct LocalFiles {
    root: PathBuf,
}

// === impl Registry ===

impl Registry {
    /// The canonical schemas directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A registry over `dir`, which must exist.
    pub fn new(dir: &Path) -> Result<Registry, String> {
        let root = dir
            .canonicalize()
            .map_err(|e| format!("schemas directory {}: {e}", dir.display()))?;
        Ok(Registry {
            root,
            compiled: HashMap::new(),
        })
    }

    /// The compiled schema `name`, compiling it on first use. The error names the file and,
    /// for a schema that does not compile, the JSON pointer in it.
    pub fn get(&mut self, name: &str) -> Result<Arc<Schema>, String> {
        if let Some(schema) = self.compiled.get(name) {
            return Ok(schema.clone());
        }
        let file = self.root.join(name);
        let file = file
            .canonicalize()
            .map_err(|e| format!("schema `{name}`: {}: {e}", file.display()))?;
        if !file.starts_with(&self.root) {
            return Err(format!(
                "schema `{name}` is outside the schemas directory {}",
                self.root.display()
            ));
        }
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
        let validator = self.compile::<SerdeJson>(&file, &value)?;
        let fast = self.compile::<Tape>(&file, &value)?;
        let schema = Arc::new(Schema {
            name: name.to_owned(),
            file,
            validator,
            fast,
        });
        self.compiled.insert(name.to_owned(), schema.clone());
        Ok(schema)
    }

    /// `value` (read from `file`) compiled for instances in representation `F`; `$ref`s resolve
    /// under the schemas directory only.
    fn compile<F: Json>(&self, file: &Path, value: &Value) -> Result<Validator<F>, String> {
        jsonschema::options_for::<F>()
            .with_base_uri(file_uri(file))
            .with_retriever(LocalFiles {
                root: self.root.clone(),
            })
            .should_validate_formats(true)
            .build(value)
            .map_err(|e| {
                // A schema that breaks the meta-schema is the "instance" here: the instance
                // path is the pointer into the operator's file.
                let pointer = e.instance_path().as_str();
                let pointer = if pointer.is_empty() { "/" } else { pointer };
                format!("{}: at {pointer}: {e}", file.display())
            })
    }
}

fn file_uri(path: &Path) -> String {
    let path = path.to_string_lossy();
    format!(
        "file://{}",
        crate::percent::encode(&path, crate::percent::FILE_PATH)
    )
}

// === impl LocalFiles ===

impl Retrieve for LocalFiles {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        if uri.scheme().as_str() != "file" {
            return Err(format!("remote $ref `{uri}` refused: a schema may only refer to files in the schemas directory").into());
        }
        let path = uri
            .path()
            .as_str()
            .replace("%20", " ")
            .replace("%23", "#")
            .replace("%3F", "?")
            .replace("%25", "%");
        let file = Path::new(&path)
            .canonicalize()
            .map_err(|e| format!("$ref `{uri}`: {e}"))?;
        if !file.starts_with(&self.root) {
            return Err(format!("$ref `{uri}` refused: outside the schemas directory").into());
        }
        let text = std::fs::read_to_string(&file)?;
        Ok(serde_json::from_str(&text)?)
    }
}
