//! Interoperability schemas: the registry that compiles them, and validation of values.

mod check;
pub mod ijson;
mod registry;
pub mod tape;

pub use check::{body_violations, violations, Violation, MAX_VIOLATIONS};
pub use ijson::NotJson;
pub use registry::{Registry, Schema};
