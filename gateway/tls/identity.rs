//! Who is calling: the value(s) of the configured certificate field, resolved to an agency
//! once per connection.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The certificate field that names a caller (`[identity] field`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityField {
    SubjectCn,
    SubjectO,
    SubjectOu,
    SanDns,
    SanUri,
}

/// The verified client certificate of a connection, reduced to what the pipeline needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Every value of the identity field in the certificate.
    pub names: Vec<String>,
    /// SHA-256 of the certificate's DER, lowercase hex (audit and pinning).
    pub fingerprint: String,
}

// === impl IdentityField ===

impl IdentityField {
    pub const NAMES: [&'static str; 5] = [
        "subject.CN",
        "subject.O",
        "subject.OU",
        "san.dns",
        "san.uri",
    ];

    pub fn parse(text: &str) -> Option<IdentityField> {
        Some(match text {
            "subject.CN" => IdentityField::SubjectCn,
            "subject.O" => IdentityField::SubjectO,
            "subject.OU" => IdentityField::SubjectOu,
            "san.dns" => IdentityField::SanDns,
            "san.uri" => IdentityField::SanUri,
            _ => return None,
        })
    }

    /// Extracts this field's values from a certificate the TLS layer already verified.
    pub fn extract(self, cert: &CertificateDer<'_>) -> PeerIdentity {
        let fingerprint = data_encoding::HEXLOWER
            .encode(ring::digest::digest(&ring::digest::SHA256, cert).as_ref());
        let names = match X509Certificate::from_der(cert) {
            Ok((_, parsed)) => self.values(&parsed),
            Err(_) => Vec::new(),
        };
        PeerIdentity { names, fingerprint }
    }

    fn values(self, cert: &X509Certificate<'_>) -> Vec<String> {
        let subject = cert.subject();
        let attrs: Vec<_> = match self {
            IdentityField::SubjectCn => subject.iter_common_name().collect(),
            IdentityField::SubjectO => subject.iter_organization().collect(),
            IdentityField::SubjectOu => subject.iter_organizational_unit().collect(),
            IdentityField::SanDns | IdentityField::SanUri => {
                let Ok(Some(san)) = cert.subject_alternative_name() else {
                    return Vec::new();
                };
                return san
                    .value
                    .general_names
                    .iter()
                    .filter_map(|name| match (self, name) {
                        (IdentityField::SanDns, GeneralName::DNSName(v)) => Some(v.to_string()),
                        (IdentityField::SanUri, GeneralName::URI(v)) => Some(v.to_string()),
                        _ => None,
                    })
                    .collect();
            }
        };
        attrs
            .into_iter()
            .filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Authority;

    #[test]
    fn extracts_each_configured_field() {
        let ca = Authority::new("Test CA").unwrap();
        let cert = ca
            .issue_client(
                "dinkes.parigimoutongkab.go.id",
                Some("Pemkab Parigi Moutong"),
            )
            .unwrap()
            .cert;
        let names = |f: IdentityField| f.extract(&cert).names;
        assert_eq!(
            names(IdentityField::SubjectCn),
            ["dinkes.parigimoutongkab.go.id"]
        );
        assert_eq!(names(IdentityField::SubjectO), ["Pemkab Parigi Moutong"]);
        assert!(names(IdentityField::SubjectOu).is_empty());
        assert_eq!(
            names(IdentityField::SanDns),
            ["dinkes.parigimoutongkab.go.id"]
        );
        assert!(names(IdentityField::SanUri).is_empty());
        let id = IdentityField::SubjectCn.extract(&cert);
        assert_eq!(id.fingerprint.len(), 64);
        for name in IdentityField::NAMES {
            assert!(IdentityField::parse(name).is_some());
        }
        assert_eq!(IdentityField::parse("subject.cn"), None);
    }
}
