//! Routing: normalise the request target, then find the service and operation.

mod normalize;
mod table;
mod template;

pub use normalize::{normalize, NormalPath, PathRejected};
pub use table::{Conflict, Matched, Miss, RouteTable};
pub use template::{Part, Template};
