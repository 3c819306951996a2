//! Configuration errors: every problem found in a file, each with the TOML path that caused it.

use std::fmt;
use std::path::PathBuf;

/// One problem, located by its TOML path (`services[0].operations[1].path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// Everything wrong with one configuration file. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

/// Collects errors during validation, so that one run reports them all.
#[derive(Debug, Default)]
pub struct Errors {
    list: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

// === impl ConfigErrors ===

impl ConfigErrors {
    pub fn single(file: PathBuf, path: &str, message: impl Into<String>) -> ConfigErrors {
        ConfigErrors {
            file,
            errors: vec![ConfigError {
                path: path.to_owned(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{}: {n} error{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            if e.path.is_empty() {
                write!(f, "\n  - {}", e.message)?;
            } else {
                write!(f, "\n  - {}: {}", e.path, e.message)?;
            }
        }
        Ok(())
    }
}

// === impl Errors ===

impl Errors {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Something the file asks for that the gateway will not do, but that does not stop it:
    /// `check` and `serve` print it with the file and the TOML path.
    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Records the error of `result`, if any, and passes its value on.
    pub fn check<T>(&mut self, path: impl Into<String>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(message) => {
                self.push(path, message);
                None
            }
        }
    }

    /// The warnings, if there was no error.
    pub fn into_result(self, file: PathBuf) -> Result<Vec<ConfigError>, ConfigErrors> {
        if self.list.is_empty() {
            Ok(self.warnings)
        } else {
            Err(ConfigErrors {
                file,
                errors: self.list,
            })
        }
    }
}
