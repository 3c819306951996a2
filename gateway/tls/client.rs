//! The client side: rustls configuration for connections to a service's upstreams. The
//! upstream must present a certificate from the service's `upstream_ca`; the gateway presents
//! its own certificate, so PD services can require mTLS from the gateway alone. ALPN is left to
//! the connector (`upstream::Pool`), which decides the protocol.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub fn upstream_config(
    upstream_roots: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for root in upstream_roots {
        roots
            .add(root)
            .map_err(|e| format!("the upstream CA is not usable as a trust anchor: {e}"))?;
    }
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no usable TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("the gateway certificate cannot be used as a client certificate: {e}"))
}
