//! A development PKI made with rcgen: a regency CA, the gateway's certificate, agencies' client
//! certificates, PD services' server certificates, and the audit keys. For `penghubung pki
//! init`, the demo and the tests; production certificates come from the regency CA or BSrE.

use data_encoding::HEXLOWER;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// A certificate authority that can issue the other certificates.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    name: String,
}

/// An issued certificate with its private key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub serial: SerialNumber,
}

// === impl Authority ===

impl Authority {
    /// A new self-signed CA, valid for ten years.
    pub fn new(common_name: &str) -> Result<Authority, rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name, Some("Penghubung development PKI"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.key_identifier_method = KeyIdMethod::Sha256;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Authority {
            issuer,
            name: common_name.to_owned(),
        })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn cert(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A server certificate for `names` (DNS names or IP addresses), also usable as a client
    /// certificate: the gateway presents its own to upstreams.
    pub fn issue_server(&self, common_name: &str, names: &[&str]) -> Result<Issued, rcgen::Error> {
        let mut params = leaf(common_name, 365);
        params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(params)
    }

    /// An agency's client certificate: `CN = common_name`, the same as a SAN DNS name so that
    /// either `identity.field = "subject.CN"` or `"san.dns"` identifies it.
    pub fn issue_client(
        &self,
        common_name: &str,
        organization: Option<&str>,
    ) -> Result<Issued, rcgen::Error> {
        let mut params = leaf(common_name, 365);
        params.distinguished_name = dn(common_name, organization);
        params.subject_alt_names = vec![san(common_name)?];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// An agency's client certificate as [`Authority::issue_client`] makes it, with an Ed25519
    /// key instead of ECDSA P-256: the other key an agreement may be signed with.
    pub fn issue_client_ed25519(&self, common_name: &str) -> Result<Issued, rcgen::Error> {
        let mut params = leaf(common_name, 365);
        params.distinguished_name = dn(common_name, None);
        params.subject_alt_names = vec![san(common_name)?];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_with(params, KeyPair::generate_for(&rcgen::PKCS_ED25519)?)
    }

    /// A client certificate with explicit validity, for testing expiry.
    pub fn issue_client_valid(
        &self,
        common_name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Issued, rcgen::Error> {
        let mut params = leaf(common_name, 1);
        params.not_before = not_before;
        params.not_after = not_after;
        params.subject_alt_names = vec![san(common_name)?];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A PEM CRL revoking the given serial numbers, valid for 30 days.
    pub fn crl_pem(&self, revoked: &[&SerialNumber]) -> Result<String, rcgen::Error> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: (*serial).clone(),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer)?.pem()
    }

    fn sign(&self, params: CertificateParams) -> Result<Issued, rcgen::Error> {
        self.sign_with(params, KeyPair::generate()?)
    }

    fn sign_with(
        &self,
        mut params: CertificateParams,
        key: KeyPair,
    ) -> Result<Issued, rcgen::Error> {
        let mut serial = [0u8; 16];
        random(&mut serial);
        serial[0] &= 0x7f;
        let serial = SerialNumber::from_slice(&serial);
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            serial,
        })
    }
}

/// An Ed25519 key (PKCS#8 PEM) for signing audit tree heads.
///
/// Written as PKCS#8 version 1 (RFC 5208: the 32-byte seed, no public key), which every
/// OpenSSL reads (`openssl pkey -in audit.key -pubout` prints the public key an auditor
/// verifies with); the version 2 documents ring and rcgen write (RFC 5958, with the public key)
/// are refused by OpenSSL 3.0. The gateway reads both.
pub fn ed25519_key_pem() -> Result<String, rcgen::Error> {
    /// `SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }`
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut seed = [0u8; 32];
    random(&mut seed);
    let mut der = V1_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    let body = data_encoding::BASE64.encode(&der);
    Ok(format!(
        "-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n"
    ))
}

/// 32 random bytes, hex encoded: the HMAC key for `audit_redact` values.
pub fn redaction_key() -> String {
    let mut key = [0u8; 32];
    random(&mut key);
    HEXLOWER.encode(&key) + "\n"
}

/// The files `pki init` writes, relative to its directory.
pub struct Layout;

impl Layout {
    pub const CA_CERT: &'static str = "ca.crt";
    pub const CA_KEY: &'static str = "ca.key";
    pub const GATEWAY_CERT: &'static str = "gateway.crt";
    pub const GATEWAY_KEY: &'static str = "gateway.key";
    pub const AUDIT_KEY: &'static str = "audit.key";
    pub const REDACTION_KEY: &'static str = "redaction.key";
}

/// Writes a development PKI into `dir`: CA, gateway certificate for `hosts`, one client
/// certificate per `(code, identity)` (`<code>.crt` / `<code>.key`, CN and SAN `identity`), the Ed25519
/// audit key and the redaction key. Returns the authority, to issue more certificates from, and
/// the files written.
pub fn init(
    dir: &Path,
    hosts: &[&str],
    agencies: &[(&str, &str)],
) -> io::Result<(Authority, Vec<PathBuf>)> {
    fs::create_dir_all(dir)?;
    let ca = Authority::new("Penghubung Development CA").map_err(io::Error::other)?;
    let mut written = Vec::new();
    let mut write = |name: &str, text: &str, secret: bool| -> io::Result<()> {
        let path = dir.join(name);
        write_file(&path, text, secret)?;
        written.push(path);
        Ok(())
    };
    write(Layout::CA_CERT, &ca.cert_pem(), false)?;
    write(Layout::CA_KEY, &ca.issuer_key_pem(), true)?;
    let gateway = ca
        .issue_server(hosts.first().copied().unwrap_or("localhost"), hosts)
        .map_err(io::Error::other)?;
    write(Layout::GATEWAY_CERT, &gateway.cert_pem, false)?;
    write(Layout::GATEWAY_KEY, &gateway.key_pem, true)?;
    for (code, identity) in agencies {
        let client = ca.issue_client(identity, None).map_err(io::Error::other)?;
        write(&format!("{code}.crt"), &client.cert_pem, false)?;
        write(&format!("{code}.key"), &client.key_pem, true)?;
    }
    write(
        Layout::AUDIT_KEY,
        &ed25519_key_pem().map_err(io::Error::other)?,
        true,
    )?;
    write(Layout::REDACTION_KEY, &redaction_key(), true)?;
    Ok((ca, written))
}

impl Authority {
    fn issuer_key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }
}

/// Writes a file; private keys are created readable by the owner only.
pub fn write_file(path: &Path, text: &str, secret: bool) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if secret {
            options.mode(0o600);
        }
        let mut file = options.open(path)?;
        file.write_all(text.as_bytes())
    }
    #[cfg(not(unix))]
    {
        let _ = secret;
        fs::write(path, text)
    }
}

fn leaf(common_name: &str, days: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(common_name, None);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
    params
}

fn dn(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

fn san(name: &str) -> Result<SanType, rcgen::Error> {
    Ok(match name.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.try_into()?),
    })
}

// Key generation already depends on the system RNG; if it fails nothing here can work.
#[allow(clippy::expect_used)]
fn random(buf: &mut [u8]) {
    SystemRandom::new()
        .fill(buf)
        .expect("the system random number generator failed");
}
