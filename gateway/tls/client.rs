//! The client side: rustls configuration for connections to a service's upstreams. The
//! upstream must present a certificate from the service's `upstream_ca`; the gateway presents
//! its own certificate, so PD services can require mTLS from the gateway alone. ALPN is left to
//! the connector (`upstream::Pool`), which decides the protocol. Each certificate an upstream
//! presents and the verifier accepts is noted in the service's [`ServerCerts`], for the
//! runtime's certificate inventory.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The upstream certificates verified since the runtime last took them: (certificate, the
/// server name asked for). At most [`ServerCerts::HELD`] distinct ones wait.
#[derive(Debug, Default)]
pub struct ServerCerts(Mutex<Vec<(CertificateDer<'static>, String)>>);

impl ServerCerts {
    const HELD: usize = 32;

    fn note(&self, cert: &CertificateDer<'_>, name: &ServerName<'_>) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() < Self::HELD && !held.iter().any(|(c, _)| c.as_ref() == cert.as_ref()) {
            held.push((cert.clone().into_owned(), name.to_str().into_owned()));
        }
    }

    /// The certificates noted since the last call.
    pub fn take(&self) -> Vec<(CertificateDer<'static>, String)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// WebPKI verification, then a note of the certificate it accepted.
#[derive(Debug)]
struct Noting {
    inner: Arc<WebPkiServerVerifier>,
    seen: Arc<ServerCerts>,
}

impl ServerCertVerifier for Noting {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.seen.note(end_entity, server_name);
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The configuration for a service's upstreams: their certificates must chain to
/// `upstream_roots`, and each one accepted is noted in `seen`.
pub fn upstream_config(
    upstream_roots: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    seen: Arc<ServerCerts>,
) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for root in upstream_roots {
        roots
            .add(root)
            .map_err(|e| format!("the upstream CA is not usable as a trust anchor: {e}"))?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("the upstream CA cannot verify certificates: {e}"))?;
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no usable TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Noting { inner, seen }))
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("the gateway certificate cannot be used as a client certificate: {e}"))
}
