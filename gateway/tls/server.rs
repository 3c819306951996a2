//! The server side: rustls configuration for the main listener. A client certificate is
//! required and verified against `tls.client_ca` (and `tls.crl`); a connection without one, or
//! with one from another issuer, or revoked, never reaches HTTP.

use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// The verifier of client certificates: chains to one of `client_roots`, not revoked by any
/// of `crls`. The listener uses it at the handshake; after a reload the pipeline asks the new
/// configuration's verifier again about connections already open.
pub fn client_verifier(
    client_roots: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for root in client_roots {
        roots
            .add(root)
            .map_err(|e| format!("a client CA is not usable as a trust anchor: {e}"))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .with_crls(crls)
        .build()
        .map_err(|e| format!("cannot build the client certificate verifier: {e}"))
}

/// Builds the listener's TLS configuration, offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<ServerConfig>, String> {
    server_config_with(chain, key, client_verifier(client_roots, crls)?)
}

/// The listener's TLS configuration around a client verifier built by [`client_verifier`].
pub fn server_config_with(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verifier: Arc<dyn ClientCertVerifier>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no usable TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not form a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
