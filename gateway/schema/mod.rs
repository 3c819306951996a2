//! Interoperability schemas: the registry that compiles them, and validation of values.

mod check;
mod registry;

pub use check::{violations, Violation, MAX_VIOLATIONS};
pub use registry::{Registry, Schema};
