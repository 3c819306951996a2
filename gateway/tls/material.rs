//! Loading TLS material from PEM files, with messages an operator can act on, and the facts
//! about each certificate that `check` and the certificate inventory report.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate};

/// What an operator needs to know about one certificate or CRL the gateway depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub kind: CertKind,
    /// Which configuration entry uses it (`tls.cert`, `services[0].upstream_ca`, `tls.crl[0]`).
    pub used_as: String,
    pub file: String,
    /// The certificate's subject; for a CRL, its issuer.
    pub subject: String,
    pub issuer: String,
    /// When it stops being usable, in seconds since the Unix epoch: a certificate's notAfter, a
    /// CRL's nextUpdate. `None` for a CRL without nextUpdate.
    pub not_after: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    Certificate,
    Crl,
}

/// Reads every certificate in a PEM file; an empty file is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| describe(path, e))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| describe(path, e))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    for cert in &certs {
        X509Certificate::from_der(cert)
            .map_err(|e| format!("{}: a certificate does not parse: {e}", path.display()))?;
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| describe(path, e))
}

/// Reads CRLs: PEM (`-----BEGIN X509 CRL-----`, several allowed) or a single DER file.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let pem = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| describe(path, e))?;
    if !pem.is_empty() {
        return Ok(pem);
    }
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    Err(format!("{} holds no CRL (PEM or DER)", path.display()))
}

/// Subject, issuer and expiry of a certificate that [`load_certs`] accepted.
pub fn cert_info(used_as: &str, file: &Path, cert: &CertificateDer<'_>) -> Option<CertInfo> {
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    Some(CertInfo {
        kind: CertKind::Certificate,
        used_as: used_as.to_owned(),
        file: file.display().to_string(),
        subject: parsed.subject().to_string(),
        issuer: parsed.issuer().to_string(),
        not_after: Some(parsed.validity().not_after.timestamp()),
    })
}

/// Issuer and nextUpdate of a CRL that [`load_crls`] accepted.
pub fn crl_info(
    used_as: &str,
    file: &Path,
    crl: &CertificateRevocationListDer<'_>,
) -> Option<CertInfo> {
    let (_, parsed) = CertificateRevocationList::from_der(crl).ok()?;
    let issuer = parsed.issuer().to_string();
    Some(CertInfo {
        kind: CertKind::Crl,
        used_as: used_as.to_owned(),
        file: file.display().to_string(),
        subject: format!("CRL of {issuer}"),
        issuer,
        not_after: parsed.next_update().map(|t| t.timestamp()),
    })
}

fn describe(path: &Path, err: rustls_pki_types::pem::Error) -> String {
    match err {
        rustls_pki_types::pem::Error::Io(e) => format!("cannot read {}: {e}", path.display()),
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("{} holds no PEM item of the expected kind", path.display())
        }
        other => format!("{} is not valid PEM: {other:?}", path.display()),
    }
}
