//! TLS material, the listener's and upstreams' rustls configurations, and caller identity.

mod client;
mod identity;
mod material;
mod server;

pub use client::{upstream_config, ServerCerts};
pub use identity::{IdentityField, PeerIdentity};
pub use material::{cert_info, crl_info, load_certs, load_crls, load_key, CertInfo, CertKind};
pub use server::{client_verifier, server_config, server_config_with};
