//! Forwarding to upstreams: pooled mTLS clients and header rewriting.

mod credentials;
mod headers;
mod pool;

pub use headers::{
    keep_only, to_caller, to_upstream, Forwarding, CLIENT_ADDRESS_HEADERS, SPL_AGREEMENT,
    SPL_BASIS, SPL_CLASSIFICATION, SPL_CONSUMER, SPL_EXCHANGE_ID, SPL_PURPOSE,
};
pub use pool::{Pool, UpstreamHealth, EJECT_FOR};
