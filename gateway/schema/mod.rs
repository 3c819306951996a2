//! Interoperability schemas: the registry that compiles them, and validation of values.

mod check;
mod registry;
pub mod tape;

pub use check::{body_violations, violations, Violation, MAX_VIOLATIONS};
pub use registry::{Registry, Schema};
