//! `[identity]` and `[tls]`: the field that names a caller, the gateway's certificate, the
//! issuers of agency certificates and their CRLs.

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::*;

/// What `[tls]` gives the rest of validation, each `None` when refused.
pub(super) struct Tls {
    pub identity: Option<IdentityField>,
    /// The gateway's certificate chain and key, which upstream mTLS presents too.
    pub chain: Option<Vec<CertificateDer<'static>>>,
    pub key: Option<PrivateKeyDer<'static>>,
    pub client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
}

pub(super) fn tls(
    errors: &mut Errors,
    file: &FileConfig,
    resolve: &dyn Fn(&str) -> PathBuf,
    certificates: &mut Vec<CertInfo>,
) -> Tls {
    let identity = match &file.identity.field {
        None => Some(IdentityField::SubjectCn),
        Some(f) => errors.check(
            "identity.field",
            IdentityField::parse(f).ok_or_else(|| {
                format!(
                    "`{f}` is not a certificate field; use one of {}",
                    IdentityField::NAMES.join(", ")
                )
            }),
        ),
    };

    let t = &file.tls;
    let chain = errors.check("tls.cert", crate::tls::load_certs(&resolve(&t.cert)));
    if let Some(chain) = &chain {
        certificates.extend(crate::tls::cert_info(
            "tls.cert",
            &resolve(&t.cert),
            &chain[0],
        ));
    }
    let key = errors.check("tls.key", crate::tls::load_key(&resolve(&t.key)));
    if t.client_ca.is_empty() {
        errors.push(
            "tls.client_ca",
            "must list at least one issuer of agency certificates",
        );
    }
    let mut client_roots = Some(Vec::new());
    for (i, ca) in t.client_ca.iter().enumerate() {
        let path = format!("tls.client_ca[{i}]");
        match errors.check(&path, crate::tls::load_certs(&resolve(ca))) {
            Some(certs) => {
                certificates.extend(
                    certs
                        .iter()
                        .filter_map(|c| crate::tls::cert_info(&path, &resolve(ca), c)),
                );
                if let Some(roots) = &mut client_roots {
                    roots.extend(certs);
                }
            }
            None => client_roots = None,
        }
    }
    let mut crls = Some(Vec::new());
    for (i, crl) in t.crl.iter().enumerate() {
        let path = format!("tls.crl[{i}]");
        match errors.check(&path, crate::tls::load_crls(&resolve(crl))) {
            Some(list) => {
                certificates.extend(
                    list.iter()
                        .filter_map(|c| crate::tls::crl_info(&path, &resolve(crl), c)),
                );
                if let Some(all) = &mut crls {
                    all.extend(list);
                }
            }
            None => crls = None,
        }
    }
    let client_verifier = match (client_roots, crls) {
        (Some(roots), Some(crls)) if !roots.is_empty() => {
            errors.check("tls", crate::tls::client_verifier(roots, crls))
        }
        _ => None,
    };
    let server_tls = match (&chain, &key, &client_verifier) {
        (Some(chain), Some(key), Some(verifier)) => errors.check(
            "tls",
            crate::tls::server_config_with(chain.clone(), key.clone_key(), verifier.clone()),
        ),
        _ => None,
    };

    Tls {
        identity,
        chain,
        key,
        client_verifier,
        server_tls,
    }
}
