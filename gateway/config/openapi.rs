//! OpenAPI 3.1 documents generated from the configuration and the schemas, one per service, so
//! a PD developer can load what they may call into any OpenAPI tool. Built from the validated
//! snapshot when it is loaded (schemas are read once, then served from memory).
//!
//! The operations' schemas are bundled into `components.schemas`: each file becomes one
//! component, and every `$ref` — to another file, or inside a file — is rewritten to point at
//! the component, so the document stands alone.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::error::ConfigErrors;
use super::snapshot::{ParamIn, Service, Snapshot};

/// The documents of every service of `snapshot`, in service order; an error per service whose
/// document cannot be built (a schema file unreadable or outside the schemas directory).
pub fn documents(snapshot: &Snapshot) -> Result<Vec<bytes::Bytes>, ConfigErrors> {
    let dir = &snapshot.gateway.schemas_dir;
    let root = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    let mut documents = Vec::with_capacity(snapshot.services.len());
    let mut errors = Vec::new();
    for (i, service) in snapshot.services.iter().enumerate() {
        let ctx = Context {
            gateway_id: &snapshot.gateway.id,
            owner: snapshot
                .agencies
                .get(service.owner)
                .map_or("", |a| a.code.as_str()),
            schemas_root: &root,
        };
        match document(&ctx, service) {
            Ok(doc) => documents.push(bytes::Bytes::from(
                serde_json::to_vec_pretty(&doc).unwrap_or_default(),
            )),
            Err(e) => errors.push(super::ConfigError {
                path: format!("services[{i}]"),
                message: format!("cannot build its OpenAPI document: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(documents)
    } else {
        Err(ConfigErrors {
            file: snapshot.source.clone(),
            errors,
        })
    }
}

/// Everything the document needs besides the service.
pub struct Context<'a> {
    pub gateway_id: &'a str,
    pub owner: &'a str,
    /// The canonical schemas directory.
    pub schemas_root: &'a Path,
}

/// The OpenAPI 3.1 document for `service`.
pub fn document(ctx: &Context<'_>, service: &Service) -> Result<Value, String> {
    let mut bundler = Bundler {
        root: ctx.schemas_root,
        components: BTreeMap::new(),
        done: HashSet::new(),
    };
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for op in &service.operations {
        let mut parameters = Vec::new();
        for name in op.template.params() {
            let schema = match op
                .params
                .iter()
                .find(|p| p.name == name && p.location == ParamIn::Path)
            {
                Some(p) => bundler.reference(&p.schema.file)?,
                None => json!({"type": "string"}),
            };
            parameters
                .push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
        }
        for p in op.params.iter().filter(|p| p.location == ParamIn::Query) {
            parameters.push(json!({"name": p.name, "in": "query", "required": false, "schema": bundler.reference(&p.schema.file)?}));
        }
        parameters.push(json!({
            "name": "SPL-Agreement",
            "in": "header",
            "required": false,
            "description": "The agreement to call under, when several of yours are in force for this operation.",
            "schema": {"type": "string"}
        }));
        let mut operation = Map::new();
        operation.insert("operationId".into(), json!(op.id));
        operation.insert(
            "summary".into(),
            json!(format!("{} {}", op.method, op.path)),
        );
        operation.insert("parameters".into(), Value::Array(parameters));
        if let Some(schema) = &op.request_schema {
            operation.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": bundler.reference(&schema.file)?}}}),
            );
        }
        let success = match &op.response_schema {
            Some(schema) => json!({
                "description": "The data owner's response, checked against its schema.",
                "content": {"application/json": {"schema": bundler.reference(&schema.file)?}}
            }),
            None => json!({"description": "The data owner's response."}),
        };
        operation.insert(
            "responses".into(),
            json!({
                "200": success,
                "default": {
                    "description": "A refusal by the gateway or the service (RFC 9457).",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                }
            }),
        );
        paths.entry(op.path.clone()).or_default().insert(
            op.method.as_str().to_ascii_lowercase(),
            Value::Object(operation),
        );
    }
    let mut schemas: Map<String, Value> = bundler.components.into_iter().collect();
    schemas.insert("Problem".into(), problem_schema());
    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": format!("{} (via {})", service.id, ctx.gateway_id),
            "version": "1",
            "description": format!(
                "Service `{}` of `{}`, classification `{}`, published through the SPL gateway `{}`. \
                 Call it with your agency's client certificate; only the operations below exist, and \
                 a call is forwarded only under a data-sharing agreement in force (or to a `terbuka` service).",
                service.id, ctx.owner, service.classification.as_str(), ctx.gateway_id
            )
        },
        "servers": [{"url": service.prefix, "description": "This gateway"}],
        "security": [{"mtls": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"mtls": {"type": "mutualTLS", "description": "An agency client certificate issued by a CA the gateway trusts."}}
        }
    }))
}

struct Bundler<'a> {
    root: &'a Path,
    components: BTreeMap<String, Value>,
    done: HashSet<PathBuf>,
}

// === impl Bundler ===

impl Bundler<'_> {
    /// `{"$ref": "#/components/schemas/<file>"}`, adding the file (and what it refers to).
    fn reference(&mut self, file: &Path) -> Result<Value, String> {
        let key = self.add(file)?;
        Ok(json!({"$ref": format!("#/components/schemas/{key}")}))
    }

    fn add(&mut self, file: &Path) -> Result<String, String> {
        let key = self.key(file)?;
        if self.done.insert(file.to_path_buf()) {
            let text =
                std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let mut value: Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            if let Value::Object(map) = &mut value {
                map.remove("$schema");
                map.remove("$id");
            }
            self.rewrite(&mut value, file, &key)?;
            self.components.insert(key.clone(), value);
        }
        Ok(key)
    }

    /// Component names: the path under the schemas directory, with `/` as `.`.
    fn key(&self, file: &Path) -> Result<String, String> {
        let relative = file
            .strip_prefix(self.root)
            .map_err(|_| format!("{} is outside the schemas directory", file.display()))?;
        Ok(relative
            .to_string_lossy()
            .chars()
            .map(|c| match c {
                '/' | '\\' => '.',
                c if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') => c,
                _ => '_',
            })
            .collect())
    }

    fn rewrite(&mut self, value: &mut Value, file: &Path, key: &str) -> Result<(), String> {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref").cloned() {
                    let (target, fragment) = reference.split_once('#').unwrap_or((&reference, ""));
                    let component = if target.is_empty() {
                        key.to_owned()
                    } else {
                        let base = file.parent().unwrap_or(self.root);
                        let path = base
                            .join(target)
                            .canonicalize()
                            .map_err(|e| format!("{}: $ref {reference}: {e}", file.display()))?;
                        self.add(&path)?
                    };
                    map.insert(
                        "$ref".into(),
                        json!(format!("#/components/schemas/{component}{fragment}")),
                    );
                }
                for (name, child) in map.iter_mut() {
                    if name != "$ref" {
                        self.rewrite(child, file, key)?;
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.rewrite(item, file, key)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "required": ["type", "title", "status", "detail", "exchange_id"],
        "properties": {
            "type": {"type": "string", "description": "urn:penghubung:problem:<slug>"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "exchange_id": {"type": "string"},
            "violations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"pointer": {"type": "string"}, "keyword": {"type": "string"}, "message": {"type": "string"}}
                }
            }
        }
    })
}
