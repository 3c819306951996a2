//! `upstream_auth`: credentials the gateway presents to a service's upstream beyond its client
//! certificate — an OAuth2 client-credentials token, or an API key. Secrets are read from a
//! file or an environment variable when the snapshot is built; a secret written into the TOML
//! is refused, and no error message ever contains one.

use http::header::{HeaderName, HeaderValue};
use http::Uri;

use super::error::Errors;
use super::file::UpstreamAuthEntry;

/// A secret value: shown as `***` by `Debug`, never logged.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub enum UpstreamAuth {
    /// RFC 6749 §4.4: a token from `token_url` (client authenticated with HTTP Basic), sent as
    /// `Authorization: Bearer`.
    OAuth2 {
        token_url: Uri,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
    },
    /// A fixed key in a header of the operator's choice.
    ApiKey { header: HeaderName, value: Secret },
}

/// Validates `entry` (at TOML path `at`), reading its secret. `resolve` makes a file path
/// relative to the configuration's directory.
pub fn upstream_auth(
    errors: &mut Errors,
    at: &str,
    entry: &UpstreamAuthEntry,
    allow_plaintext: bool,
    resolve: &dyn Fn(&str) -> std::path::PathBuf,
) -> Option<UpstreamAuth> {
    for (key, present) in [
        ("client_secret", entry.client_secret.is_some()),
        ("secret", entry.secret.is_some()),
    ] {
        if present {
            errors.push(
                format!("{at}.{key}"),
                format!(
                    "secrets are never written in the configuration: name a file (`{key}_file`) or an environment variable (`{key}_env`)"
                ),
            );
        }
    }
    match entry.kind.as_str() {
        "oauth2_client_credentials" => {
            let client_secret = secret(
                errors,
                at,
                "client_secret",
                (&entry.client_secret_file, &entry.client_secret_env),
                resolve,
            );
            let token_url = match &entry.token_url {
                None => {
                    errors.push(format!("{at}.token_url"), "is required: the token endpoint");
                    None
                }
                Some(text) => match text.parse::<Uri>() {
                    Ok(uri)
                        if uri.scheme_str() == Some("https")
                            || (uri.scheme_str() == Some("http") && allow_plaintext) =>
                    {
                        Some(uri)
                    }
                    Ok(_) => {
                        errors.push(
                            format!("{at}.token_url"),
                            format!("`{text}` must be an https URL (http only with allow_plaintext = true)"),
                        );
                        None
                    }
                    Err(e) => {
                        errors.push(
                            format!("{at}.token_url"),
                            format!("`{text}` is not a URL: {e}"),
                        );
                        None
                    }
                },
            };
            let client_id = entry.client_id.clone().filter(|id| !id.trim().is_empty());
            if client_id.is_none() {
                errors.push(format!("{at}.client_id"), "is required");
            }
            Some(UpstreamAuth::OAuth2 {
                token_url: token_url?,
                client_id: client_id?,
                client_secret: client_secret?,
                scope: entry.scope.clone(),
            })
        }
        "api_key" => {
            let value = secret(
                errors,
                at,
                "secret",
                (&entry.secret_file, &entry.secret_env),
                resolve,
            );
            let header = match &entry.header {
                None => {
                    errors.push(
                        format!("{at}.header"),
                        "is required: the header that carries the key",
                    );
                    None
                }
                Some(name) => match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(h) if h.as_str().starts_with("spl-") || h == http::header::HOST => {
                        errors.push(
                            format!("{at}.header"),
                            format!("`{name}` is the gateway's own header"),
                        );
                        None
                    }
                    Ok(h) => Some(h),
                    Err(_) => {
                        errors.push(
                            format!("{at}.header"),
                            format!("`{name}` is not a header name"),
                        );
                        None
                    }
                },
            };
            let value = value?;
            if HeaderValue::from_str(value.expose()).is_err() {
                errors.push(
                    format!("{at}.secret_file"),
                    "the secret is not a valid header value (visible ASCII)",
                );
                return None;
            }
            Some(UpstreamAuth::ApiKey {
                header: header?,
                value,
            })
        }
        other => {
            errors.push(
                format!("{at}.kind"),
                format!("`{other}` is not a credential kind; use \"oauth2_client_credentials\" or \"api_key\""),
            );
            None
        }
    }
}

/// A secret named by `<key>_file` or `<key>_env` (exactly one of them), not empty.
fn secret(
    errors: &mut Errors,
    at: &str,
    key: &str,
    (file, env): (&Option<String>, &Option<String>),
    resolve: &dyn Fn(&str) -> std::path::PathBuf,
) -> Option<Secret> {
    match (file, env) {
        (Some(file), None) => {
            let path = resolve(file);
            match std::fs::read_to_string(&path) {
                Ok(text) if !text.trim().is_empty() => Some(Secret(text.trim().to_owned())),
                Ok(_) => {
                    errors.push(
                        format!("{at}.{key}_file"),
                        format!("{} is empty", path.display()),
                    );
                    None
                }
                Err(e) => {
                    errors.push(
                        format!("{at}.{key}_file"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            }
        }
        (None, Some(var)) => match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => Some(Secret(value.trim().to_owned())),
            _ => {
                errors.push(
                    format!("{at}.{key}_env"),
                    format!("the environment variable `{var}` is not set (or empty)"),
                );
                None
            }
        },
        (Some(_), Some(_)) => {
            errors.push(
                format!("{at}.{key}_file"),
                format!("name the secret once: `{key}_file` or `{key}_env`, not both"),
            );
            None
        }
        (None, None) => {
            errors.push(
                format!("{at}.{key}_file"),
                format!("is required (or `{key}_env`): where the secret is"),
            );
            None
        }
    }
}
